"""cnnnative: a native CNN engine (C++/oneDNN core, planned memory) with a PyTorch-like API."""
from __future__ import annotations

import numbers

import os as _os

# GNU OpenMP spins 300000 rounds (~0.1-0.3 ms) in every barrier before it sleeps. One oneDNN primitive is one
# parallel region split statically over the threads, so when another process takes a core the spinning threads
# burn the time slices the descheduled one needs: ResNet-50 batch 1 on 2 busy cores went from ~130 ms to
# 270-440 ms. A short spin keeps the back-to-back regions of one run hot and yields quickly otherwise. Read by
# libgomp when it loads (with _core below); an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"


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
    from . import _core  # noqa: F401

from ._core import Error, allocation_count, get_num_threads  # noqa: E402
from ._core import cpu_has_avx512 as has_avx512  # noqa: E402
from ._core import cpu_has_avx512_bf16 as has_bf16  # noqa: E402


def set_num_threads(n) -> None:
    """The OpenMP threads of every later compile and run, from any thread of the process.

    An int fixes the count (runs with the same seed and count are bitwise reproducible). "auto", the default when
    neither this nor OMP_NUM_THREADS set one, follows the machine's load: a run uses the CPUs that other processes
    leave free, between 1 and get_num_threads(); a session switches to kernels for a new count once that count has
    held for ~0.5 s, and while the count is below get_num_threads() it times a few runs at get_num_threads() now and
    then and keeps whichever ran faster (session.num_threads says what a run used; see threads_info())."""
    if isinstance(n, str):
        if n != "auto":
            raise Error(f"set_num_threads: n must be a thread count or 'auto', got {n!r}")
        _core.set_num_threads_auto()
    elif isinstance(n, bool) or not isinstance(n, numbers.Integral):  # True is not 1 thread, nor 2.0 two
        raise Error(f"set_num_threads: n must be a thread count (int) or 'auto', got {type(n).__name__} {n!r}")
    else:
        _core.set_num_threads(int(n))


def threads_info() -> dict:
    """How runs choose their thread count: {"mode": "auto" | "fixed" | "environment" (OMP_NUM_THREADS), "max": the
    most threads a run uses (get_num_threads()), "current": the count a run started now would use, "cpus": the CPUs
    this process may run on, "load": auto mode's estimate of other processes' runnable threads on them (smoothed;
    -1 where /proc is missing and the count stays at max; 0 outside auto mode)}."""
    return _core.threads_info()


__version__ = "0.1.0"
__all__ = ["Error", "allocation_count", "get_num_threads", "set_num_threads", "threads_info", "has_avx512", "has_bf16"]

from . import cuda, data, models, nn, optim  # noqa: E402
from .nn import manual_seed  # noqa: E402
from ._params import no_grad  # noqa: E402
from .session import Session  # noqa: E402
from .train import load_checkpoint, save_checkpoint  # noqa: E402
from .io import GraphModule, load, save  # noqa: E402
from .quantize import quantize  # noqa: E402
from ._determinism import are_deterministic_algorithms_enabled, use_deterministic_algorithms  # noqa: E402

__all__ += ["cuda", "data", "models", "nn", "optim", "manual_seed", "no_grad", "Session", "load_checkpoint", "save_checkpoint",
            "GraphModule", "load", "save", "quantize", "use_deterministic_algorithms",
            "are_deterministic_algorithms_enabled"]
