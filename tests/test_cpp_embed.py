"""Embedding from C++: examples/cpp built with CMake against the installed package (find_package(cnnnative)
via `python -m cnnnative --cmake-dir`), then run: classify must print Python's predictions (class, softmax
probability, outputs) for the same model and images, errors must read as in Python, and 4 threads x 20 runs sharing
one model's weights (each thread its own session, then all threads one session) must match a single-threaded run
bit for bit. Skips without cmake or a C++ compiler, or without the CMake package."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnnnative as cn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "cpp")
CMAKE = shutil.which("cmake")
CXX = shutil.which("c++") or shutil.which("g++")


def _cmake_dir():
    r = subprocess.run([sys.executable, "-m", "cnnnative", "--cmake-dir"], capture_output=True, text=True, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


pytestmark = pytest.mark.skipif(CMAKE is None or CXX is None or not os.path.isdir(EXAMPLES),
                                reason="needs cmake, a C++ compiler and the source tree")


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    cmake_dir = _cmake_dir()
    if not cmake_dir:
        pytest.skip("the installed cnnnative has no CMake package (python -m cnnnative --cmake-dir failed)")
    assert os.path.isfile(os.path.join(cmake_dir, "cnnnative-config.cmake"))
    build = tmp_path_factory.mktemp("examples-build")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH",)}
    cfg = subprocess.run([CMAKE, "-S", EXAMPLES, "-B", str(build), f"-Dcnnnative_DIR={cmake_dir}",
                          f"-DCMAKE_CXX_COMPILER={CXX}"], capture_output=True, text=True, timeout=300, env=env)
    assert cfg.returncode == 0, cfg.stdout[-3000:] + cfg.stderr[-3000:]
    b = subprocess.run([CMAKE, "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    return {"classify": str(build / "classify"), "concurrent": str(build / "concurrent"), "env": env}


def _run(cmd, env):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _write_pgm(path, img):
    h, w = img.shape
    with open(path, "wb") as f:
        f.write(b"P5\n# written by test_cpp_embed\n%d %d\n255\n" % (w, h) + img.astype(np.uint8).tobytes())


def test_classify_matches_python(apps, tmp_path):
    exe, env = apps["classify"], apps["env"]
    model = cn.models.lenet5(seed=0)
    path = cn.save(model, tmp_path / "lenet5.cnn", (1, 1, 28, 28))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    files = []
    for i, img in enumerate(imgs):
        files.append(str(tmp_path / f"img{i}.pgm"))
        _write_pgm(files[-1], img)
    raw = rng.standard_normal((1, 28, 28)).astype("<f4")
    files.append(str(tmp_path / "x.raw"))
    raw.tofile(files[-1])

    r = _run([exe, str(path), *files], env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4
    # Python, same preprocessing (pixel / 255, raw floats as is), same batch
    x = np.concatenate([imgs[:, None].astype(np.float32) / np.float32(255), raw[None]])
    want = cn.load(path).compile((4, 1, 28, 28)).run(x)
    np.testing.assert_allclose(want, model.compile((4, 1, 28, 28)).run(x), rtol=1e-6, atol=1e-6)
    for line, f, y in zip(lines, files, want):
        name, cls, prob, logits = line.split("\t")
        got = np.array([float(v) for v in logits.split()], np.float32)
        assert name == f and int(cls) == int(np.argmax(y))
        np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
        e = np.exp(got.astype(np.float64) - got.max())  # the probability: softmax of the outputs, printed %.6f
        assert re.fullmatch(r"[01]\.\d{6}", prob) and abs(float(prob) - 1 / e.sum()) <= 5e-7


def test_classify_int8_model(apps, tmp_path):
    """A quantized model file (cn.quantize) runs its int8 kernels from C++ too: the same outputs as Python's."""
    exe, env = apps["classify"], apps["env"]
    rng = np.random.default_rng(1)
    calib = [rng.random((8, 1, 28, 28)).astype(np.float32) for _ in range(2)]
    path = cn.save(cn.quantize(cn.models.lenet5(seed=0), calib), tmp_path / "lenet5_int8.cnn")
    imgs = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    files = []
    for i, img in enumerate(imgs):
        files.append(str(tmp_path / f"img{i}.pgm"))
        _write_pgm(files[-1], img)
    r = _run([exe, str(path), *files], env)
    assert r.returncode == 0, r.stdout + r.stderr
    s = cn.load(path).compile((3, 1, 28, 28))
    assert sum(k["op"] == "qconv2d" for k in s.kernels()) == 1  # conv1 (6 channels) stays float32
    want = s.run(imgs[:, None].astype(np.float32) / np.float32(255))
    for line, y in zip(r.stdout.strip().splitlines(), want):
        got = np.array([float(v) for v in line.split("\t")[3].split()], np.float32)
        np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)


def test_cpp_errors_read_as_in_python(apps, tmp_path):
    exe, env = apps["classify"], apps["env"]
    data = cn.io.dumps(cn.models.lenet5(seed=0), (1, 1, 28, 28))
    bad = tmp_path / "cut.cnn"
    bad.write_bytes(data[:1000])
    with pytest.raises(cn.Error) as e:
        cn.load(bad)
    img = tmp_path / "a.pgm"
    _write_pgm(img, np.zeros((28, 28)))
    r = _run([exe, str(bad), str(img)], env)
    assert r.returncode == 1 and r.stderr.strip() == f"classify: {e.value}"
    good = tmp_path / "m.cnn"
    good.write_bytes(data)
    _write_pgm(img, np.zeros((20, 28)))
    r = _run([exe, str(good), str(img)], env)
    assert r.returncode == 1 and "28x20 grayscale, the model takes [1, 1, 28, 28]" in r.stderr


def test_cpp_cuda_device(apps, tmp_path):
    """InferenceSession(model, n, "cuda"): on a GPU the same predictions as Python's CPU session (TF32 allowed, so
    close, not equal); without one, one clear error, as Python's."""
    exe, env = apps["classify"], apps["env"]
    path = cn.save(cn.models.lenet5(seed=0), tmp_path / "m.cnn", (1, 1, 28, 28))
    img = tmp_path / "a.pgm"
    _write_pgm(img, np.arange(28 * 28).reshape(28, 28) % 251)
    r = _run([exe, "--device", "cuda", str(path), str(img)], env)
    if cn.cuda.is_available():
        assert r.returncode == 0, r.stderr
        cpu = _run([exe, str(path), str(img)], env)
        got = np.array([float(v) for v in r.stdout.split("\t")[3].split()], np.float32)
        want = np.array([float(v) for v in cpu.stdout.split("\t")[3].split()], np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
    else:
        why = cn.cuda.why_unavailable()
        assert r.returncode == 1 and "device='cuda'" in r.stderr, r.stderr
        if "built without" not in why:  # the plugin is there: the same reason as Python gives
            assert why in r.stderr
    r = _run([exe, "--device", "tpu", str(path), str(img)], env)
    assert r.returncode == 1 and 'device must be "cpu" or "cuda"' in r.stderr


def test_threads_share_weights_bit_identical(apps, tmp_path):
    exe, env = apps["concurrent"], apps["env"]
    from test_model_file import resbn
    for name, model, shape in [("lenet5", cn.models.lenet5(seed=0), (1, 1, 28, 28)),
                               ("resbn", resbn(), (1, 3, 12, 12))]:
        path = cn.save(model, tmp_path / f"{name}.cnn", shape)
        r = _run([exe, str(path), "4", "20", "3"], env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "80 results, 0 differ from the single-threaded run, 0 thread errors" in r.stdout
        assert "one shared session: 80 results, 0 differ from the single-threaded run" in r.stdout
        assert "set_num_threads(1) seen by another thread: yes" in r.stdout
        assert "weights shared: yes" in r.stdout
