"""cnnnative.nn: modules of the reduce op family (re-exported by nn.py)."""
from __future__ import annotations

__all__: list = []
