"""The benchmark suite's plumbing (never its timings): the peak probes and one tiny workload end to end."""
import json
import subprocess
import sys

import cnnnative as cn
from cnnnative import _core


def test_peak_probes():
    gflops, lanes = _core.fma_peak_gflops(200_000)
    assert gflops > 0 and lanes in (1, 8, 16)
    b = _core.bf16_peak_gflops(200_000)
    assert (b > 0) == cn.has_bf16()


def test_suite_runs_one_workload(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnnnative.bench", "--workloads", "lenet5_infer_mb1", "--rounds", "1",
                        "--no-rss", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    row = res["rows"][0]
    assert row["workload"] == "lenet5_infer_mb1" and row["cnnnative"]["median_ms"] > 0
    assert "| lenet5_infer_mb1 | cnnnative |" in (tmp_path / "results.md").read_text()


def test_suite_rejects_unknown_workload(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnnnative.bench", "--workloads", "nosuch", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown workload" in r.stderr


def test_train_profile_script_lenet(tmp_path):
    """bench/train_profile.py: the per-node profile of a training step with its roofline line."""
    import os
    script = os.path.join(os.path.dirname(__file__), "..", "bench", "train_profile.py")
    r = subprocess.run([sys.executable, script, "--workloads", "lenet5_train_mb64", "--rounds", "1", "--top", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "### lenet5_train_mb64" in out and "| conv forward |" in out and "Largest 3 nodes" in out
    try:
        import torch  # noqa: F401
        assert "% of the peak over the whole step" in out
    except ImportError:
        pass
