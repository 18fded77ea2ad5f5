"""cnnnative.functional: the binary op family (re-exported by functional.py)."""
from __future__ import annotations

__all__: list = []
