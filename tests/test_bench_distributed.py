"""bench/distributed.py's plumbing (never its timings): both engines on LeNet-5 for a couple of steps, the JSON rows
and the side-by-side table; without torch the PyTorch DDP comparison is skipped with a message. The runs need
mpi4py and mpirun (skipped without them, as tests/test_distributed.py)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "bench", "distributed.py")


def _need_mpi():
    pytest.importorskip("mpi4py")
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if not (os.path.exists(here) or shutil.which("mpirun")):
        pytest.skip("mpirun missing (pip install '.[mpi]')")


@pytest.mark.slow  # four mpirun jobs and two more for cnnnative without overlap: ~30 s
def test_both_engines_side_by_side(tmp_path):
    _need_mpi()
    pytest.importorskip("torch")
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, SCRIPT, "--models", "lenet5", "--steps", "2", "--warmup", "1",
                        "--engines", "pytorch,cnnnative", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())
    assert sorted((x["engine"], x["processes"]) for x in rows) == [
        ("cnnnative", 1), ("cnnnative", 2), ("cnnnative-no-overlap", 1), ("cnnnative-no-overlap", 2),
        ("pytorch", 1), ("pytorch", 2)]
    for x in rows:
        assert x["images_per_s"] > 0 and x["ms_per_step"] > 0 and x["gradient_mb"] > 0
        if x["processes"] == 1 and x["engine"] != "cnnnative-no-overlap":
            assert x["efficiency"] == 1.0
    cn = next(x for x in rows if x["engine"] == "cnnnative")
    assert {"allreduce_ms_per_step", "overlapped_ms", "allreduce_share"} <= set(cn)
    pt = next(x for x in rows if x["engine"] == "pytorch")
    assert {"no_sync_ms_per_step", "exposed_comm_ms_per_step"} <= set(pt)
    assert pt["gradient_mb"] == pytest.approx(cn["gradient_mb"], rel=0.01)  # the same model (gradient bytes)
    assert "PyTorch DDP (gloo)" in r.stdout and "cnnnative/PyTorch" in r.stdout
    two = next(x for x in rows if x["engine"] == "cnnnative" and x["processes"] == 2)
    assert two["overlap"] is True and two["buckets"] == 1 and two["exchange_ms"] > 0
    assert not next(x for x in rows if x["engine"] == "cnnnative-no-overlap" and x["processes"] == 2)["overlap"]
    assert "overlapped" in r.stdout and "no overlap" in r.stdout


def test_without_torch_the_comparison_is_skipped():
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = [{SCRIPT!r}, '--engines', 'pytorch']; runpy.run_path({SCRIPT!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "torch is not installed: skipping the PyTorch DDP (gloo) comparison" in r.stdout
    assert "no engine left to run" in r.stderr


def test_unknown_engine_is_refused():
    r = subprocess.run([sys.executable, SCRIPT, "--engines", "tf"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown engine 'tf'" in r.stderr
