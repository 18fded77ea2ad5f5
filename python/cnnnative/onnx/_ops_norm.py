"""ONNX import/export of the norm op family (registered in _registry)."""
from __future__ import annotations
