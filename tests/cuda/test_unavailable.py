"""device='cuda' on a machine where the cuda backend cannot run (no GPU, driver, plugin or cuDNN/cuBLAS): one clear
cn.Error naming what is missing, from every entry point, and everything on the CPU keeps working. Runs everywhere
(conftest.py does not skip this file): on a GPU machine the unavailable-side tests skip and the available side of
the same API is checked instead. Importing cnnnative and running CPU sessions never loads a CUDA library."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnnative as cn

# what a message must name: the GPU, its driver, the plugin (not built), or the libraries
MISSING = re.compile(r"(?i)\bgpu\b|driver|plugin|built without|cudnn|cublas|nvcc|cuda runtime|no cuda device|"
                     r"libcnnnative_cuda")
AVAILABLE = cn.cuda.is_available() if hasattr(cn, "cuda") else False
needs_no_gpu = pytest.mark.skipif(AVAILABLE, reason="the cuda backend can run here (a GPU is present)")
needs_gpu = pytest.mark.skipif(not AVAILABLE, reason="no usable CUDA device")


def test_the_cuda_module_exists_and_is_available_never_raises():
    assert hasattr(cn, "cuda"), "cnnnative.cuda is missing"
    a = cn.cuda.is_available()
    assert isinstance(a, bool)
    assert cn.cuda.is_available() is a  # stable, and no exception on a second call
    why = cn.cuda.why_unavailable()
    if a:
        assert why is None
    else:
        assert isinstance(why, str) and why.strip(), why


@needs_no_gpu
def test_why_unavailable_names_what_is_missing():
    why = cn.cuda.why_unavailable()
    assert MISSING.search(why), f"why_unavailable() does not say what is missing: {why!r}"


@needs_no_gpu
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_compile_on_cuda_raises_one_clear_error(mode):
    m = cn.models.lenet5(seed=0)
    kw = dict(optimizer=cn.optim.SGD(lr=0.1), loss="cross_entropy") if mode == "train" else {}
    with pytest.raises(cn.Error) as ei:
        m.compile((2, 1, 28, 28), mode=mode, device="cuda", **kw)
    msg = str(ei.value)
    assert MISSING.search(msg), f"compile(device='cuda') error does not say what is missing: {msg!r}"
    assert cn.cuda.why_unavailable() in msg or msg in cn.cuda.why_unavailable(), (msg, cn.cuda.why_unavailable())


@needs_no_gpu
def test_info_and_loaded_models_raise_too(tmp_path):
    with pytest.raises(cn.Error, match=MISSING):
        cn.cuda.info()
    path = str(tmp_path / "lenet.cnn")
    cn.save(cn.models.lenet5(seed=0), path, input_shape=(1, 1, 28, 28))
    gm = cn.load(path)
    with pytest.raises(cn.Error, match=MISSING):
        gm.compile(device="cuda")
    with pytest.raises(cn.Error, match=MISSING):  # backend='cuda' is the same request
        cn.models.lenet5().compile((1, 1, 28, 28), backend="cuda")


def test_bad_device_names_are_value_errors():
    m = cn.models.lenet5()
    for dev in ("tpu", "cuda:1"):
        with pytest.raises(ValueError):
            m.compile((1, 1, 28, 28), device=dev)


def test_cpu_still_works_after_a_failed_cuda_compile():
    m = cn.models.lenet5(seed=0)
    if not AVAILABLE:
        with pytest.raises(cn.Error):
            m.compile((4, 1, 28, 28), device="cuda")
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = np.arange(4, dtype=np.int32)
    out = m.compile(x.shape).run(x)
    assert out.shape == (4, 10) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, m.compile(x.shape, device="cpu").run(x))
    s = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9))
    losses = [s.step(x, y) for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    s.synchronize()  # a no-op on the CPU


def test_import_and_cpu_sessions_load_no_cuda_library():
    """The CPU package never needs CUDA: a fresh process that imports cnnnative and trains on the CPU has no CUDA
    runtime, cuDNN, cuBLAS or cuda plugin mapped (the plugin loads only on device='cuda' / cn.cuda.*)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps (Linux)")
    code = textwrap.dedent("""
        import numpy as np
        import cnnnative as cn
        m = cn.models.lenet5(seed=0)
        x = np.zeros((2, 1, 28, 28), np.float32)
        m.compile(x.shape).run(x)
        m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01)).step(x, np.zeros(2, np.int32))
        libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if "/" in l})
        bad = [l for l in libs if any(k in l for k in ("libcudart", "libcudnn", "libcublas", "libcnnnative_cuda",
                                                       "libcuda.so"))]
        print("BAD", bad)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BAD []" in r.stdout, r.stdout[-3000:]


@needs_no_gpu
def test_cli_train_on_cuda_says_what_is_missing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnnnative", "train", "resnet18", "--device", "cuda", "--epochs", "1",
                        "--samples", "32", "--batch-size", "8", "--no-progress", "--out", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert MISSING.search(r.stderr), r.stderr[-3000:]


@needs_gpu
def test_info_describes_the_gpu():
    info = cn.cuda.info()
    print("\n[cuda] info:", info)
    assert info.get("name"), info
    cc = str(info.get("compute_capability", ""))
    assert re.match(r"\d+\.?\d*", cc), info
    libs = str(info.get("libraries", ""))
    assert "cuDNN" in libs and "cuBLAS" in libs, info
