"""ONNX import/export of the resize op family (registered in _registry)."""
from __future__ import annotations
