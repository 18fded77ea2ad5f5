"""The backend seam (cpp/src/core/backend.hpp) and the compile pipeline's verifier, from outside the core:

- a toy backend "ref2" (cpp/tests/toy_backend.cpp) is built as its own shared library against the backend
  interface, loaded into a fresh process and used by compile(backend="ref2") with no edit to any core file. Its
  memory is not host-accessible, so the session copies inputs in and fetches out and mirrors the parameters;
  results must equal the reference backend's, in inference and in training;
- the graph verifier reports each kind of damage a faulty pass could do (cpp/tests/test_verify.cpp)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import cnnnative

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CXX = shutil.which("g++") or shutil.which("c++")
LIBDIR = os.path.join(os.path.dirname(cnnnative._core.__file__), "lib")
pytestmark = pytest.mark.skipif(
    CXX is None or not os.path.isdir(os.path.join(ROOT, "cpp", "tests"))
    or not os.path.exists(os.path.join(LIBDIR, "libcnnnative.so")),
    reason="needs a C++ compiler, the source tree and the installed libcnnnative")


def _build(tmp_path, src, name, shared):
    out = str(tmp_path / name)
    cmd = [CXX, "-std=c++17", "-O1", "-fPIC", *(["-shared"] if shared else []),
           "-I", os.path.join(ROOT, "cpp", "src"), "-I", os.path.join(ROOT, "cpp", "include"),
           os.path.join(ROOT, "cpp", "tests", src), "-o", out, "-L", LIBDIR, "-lcnnnative", f"-Wl,-rpath,{LIBDIR}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_graph_verifier(tmp_path):
    exe = _build(tmp_path, "test_verify.cpp", "test_verify", shared=False)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_a_backend_in_its_own_library_runs_inference_and_training(tmp_path):
    lib = _build(tmp_path, "toy_backend.cpp", "libtoy_ref2.so", shared=True)
    code = textwrap.dedent(f"""
        import ctypes, warnings
        import numpy as np
        import cnnnative as cn
        assert "ref2" not in cn._core.backend_names()
        toy = ctypes.CDLL({lib!r}, mode=ctypes.RTLD_GLOBAL)
        toy.toy_counter.restype = ctypes.c_long
        assert "ref2" in cn._core.backend_names(), cn._core.backend_names()
        x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
        y = np.arange(4, dtype=np.int32) % 10

        def model():
            return cn.models.lenet5(seed=3)

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ref2 claims no fast kernels: no fallback warning
            s2 = model().compile(x.shape, backend="ref2")
        assert {{k["impl"] for k in s2.kernels()}} == {{"ref2"}}, s2.kernels()
        assert {{k for k in s2.kernels()[0]["in_layouts"]}} == {{"plain"}}
        runs0, cin0, cout0 = toy.toy_counter(4), toy.toy_counter(2), toy.toy_counter(3)
        out2 = s2.run(x)
        assert toy.toy_counter(4) > runs0 and toy.toy_counter(2) > cin0 and toy.toy_counter(3) > cout0
        ref = model().compile(x.shape, backend="reference").run(x)
        np.testing.assert_allclose(out2, ref, rtol=1e-6, atol=1e-6)

        # training: parameters live in the backend's memory and come back to the store after each step
        a, b = model(), model()
        opt = dict(lr=0.05, momentum=0.9)
        ta = a.compile(x.shape, mode="train", optimizer=cn.optim.SGD(**opt), backend="ref2")
        tb = b.compile(x.shape, mode="train", optimizer=cn.optim.SGD(**opt), backend="reference")
        for _ in range(3):
            la, lb = ta.step(x, y), tb.step(x, y)
            assert abs(la - lb) <= 1e-5 * max(1.0, abs(lb)), (la, lb)
        # optimizer state comes out of (and goes back into) the backend's memory through its copies
        cout = toy.toy_counter(3)
        st_a, st_b = ta.optimizer_state(), tb.optimizer_state()
        assert toy.toy_counter(3) > cout and set(st_a) == set(st_b) == {{"momentum_buffer"}}
        np.testing.assert_allclose(st_a["momentum_buffer"], st_b["momentum_buffer"], rtol=1e-5, atol=1e-6)
        cin = toy.toy_counter(2)
        ta.load_optimizer_state(st_a)
        assert toy.toy_counter(2) > cin
        sa, sb = a.state_dict(), b.state_dict()
        for k in sb:
            np.testing.assert_allclose(np.asarray(sa[k]), np.asarray(sb[k]), rtol=1e-5, atol=1e-6, err_msg=k)
        # an inference session on ref2 sees the trained weights (its mirrors follow the store's version)
        np.testing.assert_allclose(a.compile(x.shape, backend="ref2").run(x),
                                   b.compile(x.shape, backend="reference").run(x), rtol=1e-5, atol=1e-5)
        # a backend with fast kernels but none for relu: the fallback is reported, strict refuses it
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f = model().compile(x.shape, backend="ref2fast", optimize=False)
        msgs = [str(m.message) for m in w]
        assert len(msgs) == 1 and "ref2fast backend has no kernel for" in msgs[0] and "relu" in msgs[0], msgs
        assert sorted({{k["impl"] for k in f.kernels()}}) == ["ref2", "reference"]
        assert all(k["op"] == "relu" for k in f.kernels() if k["impl"] == "reference")
        np.testing.assert_allclose(f.run(x), ref, rtol=1e-6, atol=1e-6)
        try:
            model().compile(x.shape, backend="ref2fast", optimize=False, strict=True)
            raise AssertionError("strict compiled")
        except cn.Error as e:
            assert "strict" in str(e) and "relu" in str(e), e
        # memory the host cannot address: a missing kernel is an error, not a silent host loop on device pointers
        try:
            model().compile(x.shape, backend="ref2partial", optimize=False)
            raise AssertionError("compiled without a relu kernel")
        except cn.Error as e:
            assert "relu" in str(e) and "cannot address" in str(e), e
        allocs = toy.toy_counter(0)
        del s2, ta
        import gc; gc.collect()
        assert toy.toy_counter(1) > 0  # the backend's own deleter released its buffers
        print("ok", allocs)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_recorded_runs_replay_like_eager_runs(tmp_path):
    """The session's CUDA-graph logic, on the CPU: "ref2graph" records kernel runs on its stream instead of running
    them (as a stream capture does) and replays them with the current seed and step. Training with dropout and
    batch norm, a step refused in the middle, and inference after a weight edit must equal the reference backend,
    with two recordings per training session (forward, backward) and replays on every later step."""
    lib = _build(tmp_path, "toy_backend.cpp", "libtoy_ref2.so", shared=True)
    code = textwrap.dedent(f"""
        import ctypes
        import numpy as np
        import cnnnative as cn
        from cnnnative import nn
        toy = ctypes.CDLL({lib!r}, mode=ctypes.RTLD_GLOBAL)
        toy.toy_counter.restype = ctypes.c_long
        captures, replays = (lambda: toy.toy_counter(5)), (lambda: toy.toy_counter(6))
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((4, 1, 12, 12)).astype(np.float32) for _ in range(6)]
        ys = [rng.integers(0, 5, 4).astype(np.int32) for _ in range(6)]

        def model():
            cn.manual_seed(7)
            return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Dropout(0.3), nn.Linear(100, 5))

        a, b = model(), model()
        kw = dict(mode="train", seed=3)
        ta = a.compile((4, 1, 12, 12), optimizer=cn.optim.Adam(lr=0.01), backend="ref2graph", **kw)
        tb = b.compile((4, 1, 12, 12), optimizer=cn.optim.Adam(lr=0.01), backend="reference", **kw)
        c0 = captures()
        for i in range(6):
            if i == 3:  # a label out of range: refused while replaying; nothing is updated on either backend
                bad = ys[i].copy(); bad[1] = 9
                for t in (ta, tb):
                    try:
                        t.step(xs[i], bad)
                        raise AssertionError("a bad label was accepted")
                    except cn.Error as e:
                        assert "label 9" in str(e), e
            la, lb = ta.step(xs[i], ys[i]), tb.step(xs[i], ys[i])
            assert abs(la - lb) <= 1e-6 * max(1.0, abs(lb)), (i, la, lb)
        assert captures() - c0 == 2, captures() - c0  # forward and backward, recorded once on step 2
        assert replays() >= 2 * 5, replays()
        sa, sb = a.state_dict(), b.state_dict()
        for k in sb:
            np.testing.assert_allclose(np.asarray(sa[k]), np.asarray(sb[k]), rtol=1e-6, atol=1e-7, err_msg=k)

        # inference: recorded on the second run, recorded again after the weights changed
        ia = a.compile((4, 1, 12, 12), backend="ref2graph")
        ib = b.compile((4, 1, 12, 12), backend="reference")
        c0 = captures()
        for i in range(3):
            np.testing.assert_allclose(ia.run(xs[i]), ib.run(xs[i]), rtol=1e-6, atol=1e-6)
        assert captures() - c0 == 1
        for m in (a, b):
            with cn.no_grad():
                m[6].weight[...] *= 0.5
        np.testing.assert_allclose(ia.run(xs[0]), ib.run(xs[0]), rtol=1e-6, atol=1e-6)
        assert captures() - c0 == 2
        # cuda_graphs=False: no stream, no recording
        c0 = captures()
        e = a.compile((4, 1, 12, 12), backend="ref2graph", cuda_graphs=False)
        for i in range(3):
            np.testing.assert_allclose(e.run(xs[i]), ib.run(xs[i]), rtol=1e-6, atol=1e-6)
        assert captures() == c0
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_unknown_backend_names_the_registered_ones():
    import numpy as np
    m = cnnnative.models.lenet5()
    with pytest.raises(cnnnative.Error, match=r"unknown backend .gpu0. \(registered: cpu, (cuda, )?reference"):
        m.compile((1, 1, 28, 28), backend="gpu0")
    del np
