"""cnnnative: a native CNN engine (C++/oneDNN core, planned memory) with a PyTorch-like API."""
from __future__ import annotations

import os as _os


def _preload_dnnl() -> None:
    # The RPATH of _core reaches <prefix>/lib in a normal install; editable/in-place builds may not,
    # so load libdnnl.so.3 from the onednn-cpu-gomp wheel by path before importing _core.
    import ctypes
    import sys

    for base in {sys.prefix, sys.base_prefix, _os.path.dirname(_os.path.dirname(sys.executable))}:
        lib = _os.path.join(base, "lib", "libdnnl.so.3")
        if _os.path.exists(lib):
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
            return


try:
    from . import _core
except ImportError:  # pragma: no cover - only in editable/in-place layouts
    _preload_dnnl()
    from . import _core

from ._core import Error, allocation_count, get_num_threads, set_num_threads
from ._core import cpu_has_avx512_bf16 as has_bf16

__version__ = "0.1.0"
__all__ = ["Error", "allocation_count", "get_num_threads", "set_num_threads", "has_bf16"]

from . import data, models, nn, optim  # noqa: E402
from .nn import manual_seed  # noqa: E402
from .session import Session  # noqa: E402
from .train import load_checkpoint, save_checkpoint  # noqa: E402
from .io import GraphModule, load, save  # noqa: E402

__all__ += ["data", "models", "nn", "optim", "manual_seed", "Session", "load_checkpoint", "save_checkpoint",
            "GraphModule", "load", "save"]
