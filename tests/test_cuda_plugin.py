"""The cuda backend plugin, checked where it is built (CI machines have nvcc, no GPU): it loads without a GPU, has its
own kernel for every op, and says clearly why it cannot run here. tests/cuda/ runs the kernels on a GPU."""
import os
import shutil

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core


def _plugin_expected() -> bool:
    """The build makes the plugin when it finds nvcc of CUDA 13 (unless CNNNATIVE_CUDA=OFF)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None or os.environ.get("CNNNATIVE_CUDA", "AUTO").upper() in ("OFF", "0", "FALSE", "NO"):
        return False
    import subprocess
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    return "release 13." in out


def _plugin_built() -> bool:
    try:
        _core.backend_kernels("cuda")
        return True
    except cn.Error as e:
        assert "no plugin libcnnnative_cuda.so" in str(e), e
        return False


def test_plugin_built_when_nvcc_is_present():
    """A build break of the cuda module must not pass silently on a machine with nvcc."""
    if not _plugin_expected():
        pytest.skip("no nvcc on this machine (or CNNNATIVE_CUDA=OFF): the plugin is not built")
    assert _plugin_built(), "nvcc is on PATH but libcnnnative_cuda.so was not built"


def test_every_op_has_a_cuda_kernel():
    if not _plugin_built():
        pytest.skip("the cuda plugin is not built here")
    # the int8 ops exist only where the int8 pass made them, which it does on backends that have them (cpu)
    cpu_int8 = {"qconv2d", "qlinear", "qmax_pool2d", "qglobal_avg_pool"}
    assert sorted(set(_core.op_names()) - set(_core.backend_kernels("cuda")) - cpu_int8) == []


def test_unavailable_is_one_clear_error_and_the_cpu_still_works():
    if cn.cuda.is_available():
        pytest.skip("a GPU is available here")
    why = cn.cuda.why_unavailable()
    assert why and why.startswith("device='cuda': ")
    assert any(s in why for s in ("no NVIDIA driver", "no CUDA GPU", "driver is too old", "built without", "not found"))
    m = cn.models.get_model("lenet5")
    with pytest.raises(cn.Error, match="device='cuda'"):
        m.compile((2, 1, 28, 28), device="cuda")
    with pytest.raises(cn.Error, match="device='cuda'"):
        m.compile((2, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1), device="cuda")
    with pytest.raises(cn.Error, match="device='cuda'"):
        cn.cuda.info()
    s = m.compile((2, 1, 28, 28))
    assert s.run(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert s.device == "cpu"


@pytest.mark.parametrize("device, backend, msg", [("tpu", "cpu", "device must be"), ("cuda:1", "cpu", "only one GPU"),
                                                  ("cuda", "reference", "disagree")])
def test_bad_device_arguments(device, backend, msg):
    m = cn.models.get_model("lenet5")
    with pytest.raises(ValueError, match=msg):
        m.compile((2, 1, 28, 28), device=device, backend=backend)
