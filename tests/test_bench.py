"""The benchmark suite's plumbing (never its timings): the peak probes and one tiny workload end to end."""
import json
import subprocess
import sys

import pytest

import cnnnative as cn
from cnnnative import _core


def test_peak_probes():
    gflops, lanes = _core.fma_peak_gflops(200_000)
    assert gflops > 0 and lanes in (1, 8, 16)
    b = _core.bf16_peak_gflops(200_000)
    assert (b > 0) == cn.has_bf16()


def test_read_bandwidth_probe():
    gbs = _core.read_bandwidth_gbs(4 << 20, 2)
    assert 0 < gbs < 1e5
    with pytest.raises(ValueError, match="reps must be >= 1"):
        _core.read_bandwidth_gbs(1 << 20, 0)


def _bench_module(name):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_roofline_maps_ort_profiler_names_to_modules():
    """bench/roofline.py: ONNX Runtime's fused nodes (named after their last output) to torchvision module names."""
    node = _bench_module("roofline").ort_node
    assert node("/layer4/layer4.0/relu_1/Relu_output_0_nchwc_kernel_time") == "layer4.0.conv2"
    assert node("/layer1/layer1.2/relu_2/Relu_output_0_nchwc_kernel_time") == "layer1.2.conv3"
    assert node("/layer1/layer1.0/relu/Relu_output_0_kernel_time") == "layer1.0.conv1"
    assert node("/layer4/layer4.0/downsample/downsample.0/Conv_output_0_nchwc_kernel_time") == \
        "layer4.0.downsample.0"
    assert node("/relu/Relu_output_0_nchwc_kernel_time") == "conv1"
    assert node("/fc/Gemm_kernel_time") == "fc"
    assert node("/maxpool/MaxPool_kernel_time") is None
    assert node("ReorderInput_kernel_time") is None


@pytest.mark.slow
def test_roofline_script_resnet18():
    """bench/roofline.py end to end: every convolution and the linear layer with both engines' times."""
    import os
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    script = os.path.join(os.path.dirname(__file__), "..", "bench", "roofline.py")
    r = subprocess.run([sys.executable, script, "--workload", "resnet18_infer_mb16", "--rounds", "1", "--runs", "1",
                        "--cold", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    roof = r.stdout.split("| alone, flushed |")[0]
    rows = [ln for ln in roof.splitlines() if ln.startswith(("| conv1 |", "| layer", "| fc |"))]
    assert len(rows) == 21  # ResNet-18: 20 convolutions and fc
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == 11 and "nan" not in cells, ln  # every node timed by all four, ORT's name mapped
    assert "| the best of all four per node |" in r.stdout and "roofline bound on average" in r.stdout
    cold = r.stdout.split("| alone, flushed |")[1].splitlines()[2]  # the node with the most weights: layer4's 3x3
    assert cold.startswith("| layer4.") and "nan" not in cold, cold


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


def test_piece_profile_script(tmp_path):
    """bench/piece_profile.py: one worker's piece of the LeNet-5 step, per node."""
    import os
    script = os.path.join(os.path.dirname(__file__), "..", "bench", "piece_profile.py")
    r = subprocess.run([sys.executable, script, "--steps", "5", "--warmup", "2", "--runs", "2", "--top", "40"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "run 1: " in out and "run 2: " in out and "ms per step (batch 32, 1 thread(s))" in out
    for node in ("conv1 ", "conv2/grad_data ", "pool1/grad ", "sgd "):
        assert "  " + node in out, node


def _started_load_pids(parent, n, timeout=10.0):
    """_load_pids once n of them show: a child just forked still shows its parent's command line until it execs."""
    import time
    end = time.monotonic() + timeout
    while True:
        pids = _load_pids(parent)
        if len(pids) >= n or time.monotonic() > end:
            return pids
        time.sleep(0.01)


def _load_pids(parent):
    """Pids of the suite's CPU-bound load processes started by process `parent` (their last argument)."""
    import os
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and len(argv) >= 4 and argv[-3] == b"-c" and b"while True" in argv[-2] \
                and argv[-1] == str(parent).encode():
            pids.append(int(d))
    return pids


def test_background_load_starts_stops_and_stops_on_errors():
    import os

    from cnnnative.bench.suite import BackgroundLoad
    load = BackgroundLoad(2)
    assert not load.running and load.pids() == []
    try:
        load.start()
        pids = load.pids()
        assert len(pids) == 2 and sorted(_started_load_pids(os.getpid(), 2)) == sorted(pids)
        load.start()  # already running: the same processes
        assert load.pids() == pids
    finally:
        load.stop()
    assert not load.running and _load_pids(os.getpid()) == []
    load.stop()  # stopping twice is harmless
    try:
        with BackgroundLoad(1) as load:
            load.start()
            assert len(_started_load_pids(os.getpid(), 1)) == 1
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert _load_pids(os.getpid()) == []
    with BackgroundLoad(0) as load:  # no load: nothing starts
        load.start()
        assert not load.running
    import pytest
    with pytest.raises(ValueError):
        BackgroundLoad(-1)


def test_background_load_dies_with_a_killed_parent():
    """A benchmark killed by SIGKILL (no finally, no atexit) leaves no core spinning."""
    import os
    import signal
    import time
    code = ("import time\nfrom cnnnative.bench.suite import BackgroundLoad\n"
            "l = BackgroundLoad(1)\nl.start()\nprint(l.pids()[0], flush=True)\ntime.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(p.stdout.readline())
        assert _started_load_pids(p.pid, 1) == [pid]  # (it may not show yet: a CI run saw none here once)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 30
        while _load_pids(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _load_pids(p.pid) == []
    finally:
        p.kill()
        p.wait()


def test_suite_compares_quiet_and_busy_and_stops_its_load(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "cnnnative.bench", "--workloads", "lenet5_infer_mb1", "--rounds", "2",
                          "--no-rss", "--background-load", "1", "--compare-quiet", "--settle", "0",
                          "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert _load_pids(p.pid) == []
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["background_load"] == 1 and res["conditions"] == ["quiet", "busy"] and res["cpu_model"]
    assert [(r["workload"], r["machine"]) for r in res["rows"]] == [("lenet5_infer_mb1", "quiet"),
                                                                    ("lenet5_infer_mb1", "busy")]
    for r in res["rows"]:
        # every timed cnnnative run is counted under the thread count it used; two blocks, each with a load average
        assert sum(r["cnnnative_threads"].values()) == r["reps"] and len(r["load_average"]) == 2
        assert r["cnnnative"]["mean_ms"] > 0
        for k in ("pytorch", "onnxruntime"):  # ratios of medians and of means (throughput), side by side
            if k in r:
                assert r[f"ratio_vs_{k}"] == r["cnnnative"]["median_ms"] / r[k]["median_ms"]
                assert r[f"mean_ratio_vs_{k}"] == r["cnnnative"]["mean_ms"] / r[k]["mean_ms"]
    md = (tmp_path / "results.md").read_text()
    assert "| lenet5_infer_mb1 (busy) | cnnnative |" in md and "busy = 1 CPU-bound process" in md
    assert ("| workload | quiet: cnnnative / PyTorch, median (mean) | busy: cnnnative / PyTorch, median (mean) |"
            in md or "torch absent" in md)


def test_suite_refuses_compare_quiet_without_load_and_bad_counts(tmp_path):
    for extra, msg in ((["--compare-quiet"], "give --background-load N"),
                       (["--background-load", "-1"], "--background-load takes a count"),
                       (["--threads", "0"], "a thread count >= 1 or 'auto'")):
        r = subprocess.run([sys.executable, "-m", "cnnnative.bench", "--workloads", "lenet5_infer_mb1",
                            "--out", str(tmp_path), *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and msg in r.stderr, (extra, r.stderr)


def test_busy_script_ramp_phases_and_no_load_left(tmp_path):
    """bench/busy.py --ramp: one auto-mode session through quiet, busy and quiet phases; the load it starts mid-run
    is gone when it ends."""
    import os
    script = os.path.join(os.path.dirname(__file__), "..", "bench", "busy.py")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = tmp_path / "ramp.json"
    loops_before = _busy_loops()
    p = subprocess.Popen([sys.executable, script, "--ramp", "--seconds", "0.5", "--workloads", "lenet5_infer_b256",
                          "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    rows = json.loads(out.read_text())["ramp"]
    assert [(r["workload"], r["phase"]) for r in rows] == [("lenet5_infer_b256", ph)
                                                          for ph in ("quiet", "busy", "quiet after")]
    top = cn.threads_info()["max"]
    for r in rows:
        assert sum(r["runs"].values()) > 0 and {int(k) for k in r["runs"]} <= set(range(1, top + 1))
        assert r["first_s_ms"] > 0
    assert "| lenet5_infer_b256 | busy |" in stdout
    assert _busy_loops() - loops_before == set()  # the script's load processes are gone (orphans would remain)


def _busy_loops():
    """Pids of live `python -c 'while True: pass'` processes (bench/busy.py's load)."""
    import os
    pids = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if state != "Z" and b"while True: pass" in argv:
            pids.add(int(d))
    return pids
