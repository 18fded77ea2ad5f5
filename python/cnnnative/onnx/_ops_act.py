"""ONNX import/export of the act op family (registered in _registry)."""
from __future__ import annotations
