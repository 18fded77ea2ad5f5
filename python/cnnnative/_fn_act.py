"""cnnnative.functional: the act op family (re-exported by functional.py)."""
from __future__ import annotations

__all__: list = []
