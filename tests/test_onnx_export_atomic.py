"""ONNX export writes atomically (cnnnative._atomic.write_atomic): cnnnative.onnx.export_model and
`python -m cnnnative convert x.cnn out.onnx` are run in a child process that is SIGKILLed while it writes
over an existing good file (mid-write: the child's file writes are wrapped so that the first one writes half
its bytes, syncs them and waits; or just before the rename); the old file must be intact and load, and the
next successful export must remove the killed writer's temporary file. An export that raises (an unsupported
op, a full disk simulated with RLIMIT_FSIZE) leaves no new file and the old one intact."""
import glob
import os
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnnative as cn

onnx = pytest.importorskip("onnx")
import cnnnative.onnx as cno  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="uses Linux's /proc")

# Run first in the child: wraps every file opened for writing at TARGET (or a temporary beside it) so that its
# first write writes half its bytes, flushes and fsyncs them, prints KILLME and sleeps; with HOOK=rename,
# os.replace/os.rename onto TARGET print KILLME and sleep instead. Works for any writer that goes through
# Python file objects (open, os.fdopen).
_CHILD_PRELUDE = textwrap.dedent("""
    import builtins, os, sys, time
    TARGET, HOOK = os.path.abspath(os.environ["KILL_TARGET"]), os.environ["KILL_HOOK"]

    def _ours(p):
        p = os.path.abspath(p)
        return p == TARGET or p.startswith(TARGET + ".tmp.")

    def _wait(where):
        print("KILLME", where, flush=True)
        time.sleep(120)
        os._exit(3)

    class _Slow:
        def __init__(self, f, path):
            self._f, self._path = f, path

        def write(self, b):
            b = memoryview(b).cast("B")
            self._f.write(b[:len(b) // 2])
            self._f.flush()
            os.fsync(self._f.fileno())
            _wait(self._path)

        def __getattr__(self, k):
            return getattr(self._f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self._f.__exit__(*a)

    if HOOK == "write":
        _open, _fdopen = builtins.open, os.fdopen

        def _open_hook(file, mode="r", *a, **k):
            f = _open(file, mode, *a, **k)
            if "w" in mode and isinstance(file, (str, bytes, os.PathLike)) and _ours(os.fsdecode(file)):
                return _Slow(f, os.fsdecode(file))
            return f

        def _fdopen_hook(fd, mode="r", *a, **k):
            f = _fdopen(fd, mode, *a, **k)
            if "w" in mode:
                p = os.readlink(f"/proc/self/fd/{fd}")
                if _ours(p):
                    return _Slow(f, p)
            return f
        builtins.open, os.fdopen = _open_hook, _fdopen_hook
    else:
        _replace, _rename = os.replace, os.rename

        def _hook(real):
            def h(src, dst, *a, **k):
                if _ours(os.fsdecode(dst)):
                    _wait(os.fsdecode(src))
                return real(src, dst, *a, **k)
            return h
        os.replace, os.rename = _hook(_replace), _hook(_rename)
""")

_EXPORT = _CHILD_PRELUDE + textwrap.dedent("""
    import cnnnative as cn, cnnnative.onnx as cno
    cno.export_model(cn.models.lenet5(seed=2), TARGET, (1, 1, 28, 28))
    print("DONE", flush=True)
""")

_CLI = _CHILD_PRELUDE + textwrap.dedent("""
    import runpy
    sys.argv = ["cnnnative", "convert", os.environ["SRC"], TARGET]
    runpy.run_module("cnnnative", run_name="__main__", alter_sys=True)
""")


def _x():
    return np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)


def _good_file(path):
    """A good export of LeNet-5 (seed 1) at path; returns its bytes and its outputs on _x()."""
    m = cn.models.lenet5(seed=1)
    cno.export_model(m, path, (1, 1, 28, 28))
    return path.read_bytes(), m.compile(_x().shape).run(_x())


def _kill_while_writing(code, target, hook, **env):
    """Runs `code` in a child, waits for its KILLME line, SIGKILLs it. Returns (child pid, path it was at)."""
    env = dict(os.environ, KILL_TARGET=str(target), KILL_HOOK=hook, **{k: str(v) for k, v in env.items()})
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = b""
        while not line.startswith(b"KILLME"):
            ready, _, _ = select.select([p.stdout], [], [], 120)
            assert ready, "the child did not reach the kill point in 120 s"
            line = p.stdout.readline()
            assert line, f"the child ended without reaching the kill point: {p.stderr.read().decode()[-2000:]}"
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL
        return p.pid, line.split(maxsplit=1)[1].decode().strip()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def _assert_intact(path, old_bytes, old_out):
    assert path.read_bytes() == old_bytes
    out = cno.import_model(path).compile(_x().shape).run(_x())
    np.testing.assert_array_equal(out, old_out)


@pytest.mark.parametrize("hook", ["write", "rename"])
def test_export_killed_while_writing_keeps_the_previous_file(tmp_path, hook):
    target = tmp_path / "model.onnx"
    old_bytes, old_out = _good_file(target)
    pid, where = _kill_while_writing(_EXPORT, target, hook)
    _assert_intact(target, old_bytes, old_out)
    # the killed writer's temporary file, beside the target, named <target>.tmp.<pid>.<n>
    stale = glob.glob(str(target) + ".tmp.*")
    assert stale == [where] and stale[0].startswith(f"{target}.tmp.{pid}.")
    if hook == "write":
        assert 0 < os.path.getsize(stale[0]) < len(old_bytes)  # half written
    # the next successful export replaces the file and removes the stale temporary
    m = cn.models.lenet5(seed=3)
    cno.export_model(m, target, (1, 1, 28, 28))
    assert glob.glob(str(target) + ".tmp.*") == []
    np.testing.assert_allclose(cno.import_model(target).compile(_x().shape).run(_x()),
                               m.compile(_x().shape).run(_x()), rtol=1e-5, atol=1e-6)


def test_cli_convert_killed_while_writing_keeps_the_previous_file(tmp_path):
    src = tmp_path / "new.cnn"
    cn.save(cn.models.lenet5(seed=5), str(src), (1, 1, 28, 28))
    target = tmp_path / "out.onnx"
    old_bytes, old_out = _good_file(target)
    pid, where = _kill_while_writing(_CLI, target, "write", SRC=src)
    _assert_intact(target, old_bytes, old_out)
    assert glob.glob(str(target) + ".tmp.*") == [where]
    r = subprocess.run([sys.executable, "-m", "cnnnative", "convert", str(src), str(target)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert glob.glob(str(target) + ".tmp.*") == []
    assert target.read_bytes() != old_bytes
    cno.import_model(target).compile(_x().shape)


def test_failed_export_leaves_no_file_and_the_old_one_intact(tmp_path):
    from cnnnative import nn

    class Adaptive(nn.Module):  # 5x5 -> 3x3 adaptive pooling has no ONNX equivalent
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(3)

        def forward(self, x):
            return self.pool(x)
    fresh = tmp_path / "fresh.onnx"
    with pytest.raises(cno.UnsupportedError):
        cno.export_model(Adaptive(), fresh, (1, 2, 5, 5))
    assert not fresh.exists()
    target = tmp_path / "model.onnx"
    old_bytes, old_out = _good_file(target)
    with pytest.raises(cno.UnsupportedError):
        cno.export_model(Adaptive(), target, (1, 2, 5, 5))
    _assert_intact(target, old_bytes, old_out)
    # a write that fails half way (a full disk: RLIMIT_FSIZE below the new file's size) in a child process
    code = textwrap.dedent(f"""
        import resource, signal
        import cnnnative as cn, cnnnative.onnx as cno
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(old_bytes) // 3}, resource.RLIM_INFINITY))
        try:
            cno.export_model(cn.models.lenet5(seed=4), {str(target)!r}, (1, 1, 28, 28))
        except OSError as e:
            print("FAILED", e.errno)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "FAILED 27" in r.stdout, (r.stdout, r.stderr[-2000:])  # 27: EFBIG
    _assert_intact(target, old_bytes, old_out)
    assert glob.glob(str(target) + ".tmp.*") == []  # the failed writer removed its temporary
