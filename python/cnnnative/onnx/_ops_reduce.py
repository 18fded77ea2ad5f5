"""ONNX import/export of the reduce op family (registered in _registry)."""
from __future__ import annotations
