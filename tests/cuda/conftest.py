"""tests/cuda: the cuda backend against the CPU reference/cpu backends. Every test here is skipped when
cnnnative.cuda.is_available() is false (no GPU, driver, plugin or cuDNN/cuBLAS), except test_unavailable.py,
which runs everywhere (on a GPU machine it checks the available side of the same API).
The helpers the test files share are in cudacheck.py."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ (opcheck)

import cnnnative as cn  # noqa: E402

RUNS_EVERYWHERE = {"test_unavailable.py"}


def cuda_available() -> bool:
    mod = getattr(cn, "cuda", None)
    if mod is None:
        return False
    try:
        return bool(mod.is_available())
    except Exception:  # is_available() must never raise; test_unavailable.py checks that separately
        return False


def why_unavailable() -> str:
    mod = getattr(cn, "cuda", None)
    if mod is None:
        return "cnnnative.cuda does not exist in this build"
    try:
        return str(mod.why_unavailable())
    except Exception as e:  # noqa: BLE001
        return f"why_unavailable() raised {e!r}"


def pytest_collection_modifyitems(config, items):
    if cuda_available() or os.environ.get("CNNNATIVE_CUDA_TESTS_BACKEND", "cuda") != "cuda":
        return  # (CNNNATIVE_CUDA_TESTS_BACKEND=cpu: the tests' self-check on a CPU backend, see cudacheck.py)
    skip = pytest.mark.skip(reason=f"no usable CUDA device: {why_unavailable()}")
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        path = str(getattr(item, "path", getattr(item, "fspath", "")))
        if os.path.dirname(os.path.abspath(path)) == here and os.path.basename(path) not in RUNS_EVERYWHERE:
            item.add_marker(skip)
