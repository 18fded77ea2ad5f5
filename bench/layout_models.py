"""Reorder counts and timings of the concat / deconvolution heavy models (DenseNet-121, GoogLeNet, U-Net)
under the default (blocked) layout and layout="plain".

  python bench/layout_models.py                       # reorder counts, profile share of reorders, ms
  python bench/layout_models.py --workloads unet_train_b16 --rounds 5
  python bench/layout_models.py --compare /path/to/other/pkg   # alternate this build and another one
                                                               # (a directory holding a cnnnative package)

Timings alternate between the variants (processes for --compare, sessions otherwise) round by round and
report the median and the minimum wall ms and the median process CPU ms per run / step. On a loaded shared
machine run with OMP_NUM_THREADS=1 and compare the CPU ms (contention barely moves one thread's CPU time, while
it dominates wall time); compare ratios taken in one run."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# name: (model, kwargs, (C, H, W), batch, mode)
WORKLOADS = {
    "densenet121_infer_b16": ("densenet121", {}, (3, 224, 224), 16, "infer"),
    "googlenet_infer_b16": ("googlenet", {}, (3, 224, 224), 16, "infer"),
    "unet_infer_b16": ("unet", {}, (1, 64, 64), 16, "infer"),
    "unet128_infer_b16": ("unet", {}, (1, 128, 128), 16, "infer"),
    "unet_train_b16": ("unet", {}, (1, 64, 64), 16, "train"),
    "densenet121_train_b8": ("densenet121", {}, (3, 112, 112), 8, "train"),
}


def _session(workload, layout):
    import cnnnative as cn
    from cnnnative.session import Session

    name, kw, chw, bs, mode = WORKLOADS[workload]
    model = cn.models.get_model(name, seed=0, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((bs,) + chw).astype(np.float32)
    if mode == "infer":
        s = Session(model, x.shape, layout=layout)
        return s, (lambda: s.run(x))
    s = Session(model, x.shape, mode="train", loss="mse", optimizer=cn.optim.SGD(lr=1e-3), layout=layout)
    y = rng.standard_normal(s.output_shape).astype(np.float32)
    return s, (lambda: s.step(x, y))


def reorders(sess):
    return [e.split()[1] for e in sess.schedule() if e.startswith("reorder ")]


def _child(workload, layout, reps):
    s, fn = _session(workload, layout)
    fn()
    ts, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    prof = s.profile()
    tot = sum(r["ms"] * r["calls"] for r in prof) or 1.0
    rs = sum(r["ms"] * r["calls"] for r in prof if r["op"] == "reorder")
    print(json.dumps({"ms": ts, "cpu_ms": cpu, "reorders": len(reorders(s)), "reorder_share": rs / tot}))


def _run_child(pkg, workload, layout, reps):
    env = dict(os.environ)
    if pkg:
        env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--child", workload, layout, str(reps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compare", help="directory holding another cnnnative package (the 'before' build)")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.child[0], a.child[1], int(a.child[2]))
        return 0
    variants = [("this", None, "auto"), ("this", None, "plain")]
    if a.compare:
        variants = [("before", a.compare, "auto"), ("after", None, "auto")]
    for w in a.workloads:
        res = {v: {"ms": [], "cpu_ms": []} for v in variants}
        for _ in range(a.rounds):
            for v in variants:
                r = _run_child(v[1], w, v[2], a.reps)
                res[v]["ms"] += r["ms"]
                res[v]["cpu_ms"] += r["cpu_ms"]
                res[v].update(reorders=r["reorders"], reorder_share=r["reorder_share"])
        base = statistics.median(res[variants[0]]["ms"])
        base_min = min(res[variants[0]]["ms"])
        base_cpu = statistics.median(res[variants[0]]["cpu_ms"])
        for v in variants:
            m, lo, c = statistics.median(res[v]["ms"]), min(res[v]["ms"]), statistics.median(res[v]["cpu_ms"])
            print(f"{w:<24} {v[0]:<7} layout={v[2]:<6} reorders={res[v]['reorders']:<4} "
                  f"reorder share={res[v]['reorder_share']:6.1%}  median {m:9.1f} ms (ratio {m / base:5.3f})  "
                  f"min {lo:9.1f} ms (ratio {lo / base_min:5.3f})  cpu {c:9.1f} ms (ratio {c / base_cpu:5.3f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
