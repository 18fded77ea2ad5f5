"""ONNX import/export of the shape op family (registered in _registry)."""
from __future__ import annotations
