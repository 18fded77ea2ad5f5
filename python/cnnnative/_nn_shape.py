"""cnnnative.nn: modules of the shape op family (re-exported by nn.py)."""
from __future__ import annotations

__all__: list = []
