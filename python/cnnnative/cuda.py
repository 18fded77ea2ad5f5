"""The cuda backend, seen from Python: whether it can run here, and what it runs on.

`model.compile(..., device="cuda")` runs a session on the GPU through the backend plugin libcnnnative_cuda.so (built
with the package when nvcc was found), cuDNN 9 and cuBLAS 13 from NVIDIA's wheels (`pip install '.[cuda]'`). On a
machine without a GPU, driver, plugin or library, that compile raises cn.Error saying which is missing, and
everything on the CPU works as before.
"""
from __future__ import annotations

import importlib.util
import os

from . import _core

__all__ = ["is_available", "why_unavailable", "info", "resolve_device"]

_NOT_BUILT = ("this cnnnative was built without its cuda backend (nvcc was not found when it was built): on a machine "
              "with the CUDA toolkit, reinstall with `pip install '.[cuda]'` (CNNNATIVE_CUDA=ON forces the build)")


def _wheel_lib_dirs() -> list:
    """The lib folders of NVIDIA's cuDNN and cuBLAS wheels installed in this environment (namespace package
    `nvidia`), for the plugin's loader (CNNNATIVE_NVIDIA_LIB_DIRS)."""
    dirs = []
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    for root in (list(spec.submodule_search_locations or []) if spec else []):
        for sub in ("cudnn", "cu13", "cublas"):
            d = os.path.join(root, sub, "lib")
            if os.path.isdir(d):
                dirs.append(d)
    return dirs


def _prepare() -> None:
    """Points the plugin's loader at the installed wheels (before the plugin loads them)."""
    dirs = _wheel_lib_dirs()
    if dirs:
        old = os.environ.get("CNNNATIVE_NVIDIA_LIB_DIRS", "")
        merged = [d for d in old.split(":") if d] + [d for d in dirs if d not in old.split(":")]
        os.environ["CNNNATIVE_NVIDIA_LIB_DIRS"] = ":".join(merged)


def _translate(e: Exception) -> Exception:
    msg = str(e)
    if "no plugin libcnnnative_cuda.so" in msg:
        return _core.Error(f"device='cuda': {_NOT_BUILT} ({msg})")
    return e


def _describe() -> dict:
    _prepare()
    try:
        text = _core.describe_backend("cuda")
    except _core.Error as e:
        raise _translate(e) from None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def info() -> dict:
    """The GPU and libraries the cuda backend uses: name, compute_capability, memory_bytes, multiprocessors,
    cuda_runtime, cuda_driver, libraries. Raises cn.Error saying what is missing when it cannot run here."""
    return _describe()


def why_unavailable():
    """None when the cuda backend can run here, else the reason (the message compile(device='cuda') raises)."""
    try:
        _describe()
        return None
    except _core.Error as e:
        return str(e)


def is_available() -> bool:
    """Whether compile(..., device='cuda') can run here (a GPU, its driver, the plugin, cuDNN and cuBLAS). Never
    raises."""
    return why_unavailable() is None


def resolve_device(device, backend) -> str:
    """The backend a compile runs on, from its device= ('cpu', 'cuda', 'cuda:0') and backend= arguments. For
    'cuda', checks that the backend can run here and raises cn.Error saying what is missing otherwise."""
    if device is None:
        if backend == "cuda":
            _describe()
        return backend
    dev = str(device).lower()
    if dev == "cpu":
        name = "cpu" if backend in (None, "cpu") else backend
    elif dev in ("cuda", "cuda:0", "gpu"):
        if backend not in (None, "cpu", "cuda"):
            raise ValueError(f"compile: device={device!r} and backend={backend!r} disagree")
        name = "cuda"
    elif dev.startswith("cuda:"):
        raise ValueError(f"compile: device={device!r}: only one GPU (cuda:0) is supported")
    else:
        raise ValueError(f"compile: device must be 'cpu' or 'cuda', got {device!r}")
    if name == "cuda":
        _describe()  # raises the clear error before anything is traced or allocated
    return name
