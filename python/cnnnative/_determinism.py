"""The process-wide default of compile(deterministic=...): cn.use_deterministic_algorithms(True) makes every
session compiled afterwards (without an explicit deterministic= argument) give training results that do not
depend on the thread count. See docs/ARCHITECTURE.md, "Determinism"."""
from __future__ import annotations

import threading

_lock = threading.Lock()
_enabled = False


def use_deterministic_algorithms(mode: bool) -> None:
    """As torch.use_deterministic_algorithms: True makes sessions compiled from now on (that do not pass
    deterministic= themselves) use reduction orders independent of the thread count."""
    global _enabled
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms expects a bool, got {type(mode).__name__}")
    with _lock:
        _enabled = mode


def are_deterministic_algorithms_enabled() -> bool:
    return _enabled


enabled = are_deterministic_algorithms_enabled
