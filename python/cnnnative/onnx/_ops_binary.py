"""ONNX import/export of the binary op family (registered in _registry)."""
from __future__ import annotations
