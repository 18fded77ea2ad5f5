"""LeNet-5 benchmark: cnnnative vs PyTorch (when installed) in one run, as ratios.

    python bench/lenet5.py [--threads 2] [--reps 200]

Workloads (benchdnn-style names): lenet5_train_mb64 (one SGD-momentum step), lenet5_infer_mb1,
lenet5_infer_mb256. Runs alternate between engines; medians of --reps timed runs after warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def _timeit(fn, reps, warmup=10):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import cnnnative as cn
    cn.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    rng = np.random.default_rng(0)
    results = []

    # ---- training step, batch 64 ----
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    m = cn.models.lenet5(seed=0)
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
    engines = {"cnnnative": lambda: sess.step(x, y)}
    if torch is not None:
        from cnnnative.bench.torch_models import build
        tm = build("lenet5")
        topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

        def tstep():
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            topt.step()
        engines["pytorch"] = tstep
    results.append(("lenet5_train_mb64", engines, sess.memory_report()))

    # ---- inference ----
    for bs in (1, 256):
        xi = rng.standard_normal((bs, 1, 28, 28)).astype(np.float32)
        s = m.compile(xi.shape)
        e = {"cnnnative": (lambda s=s, xi=xi: s.run(xi))}
        if torch is not None:
            tm.eval()
            txi = torch.from_numpy(xi)

            def tinf(txi=txi):
                with torch.inference_mode():
                    tm(txi)
            e["pytorch"] = tinf
        results.append((f"lenet5_infer_mb{bs}", e, s.memory_report()))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}, "
          f"float32, cnnnative {cn.__version__}" + (f", torch {torch.__version__}" if torch else ", torch absent"))
    print()
    print("| workload | cnnnative ms (min-max) | pytorch ms (min-max) | ratio cnnnative/pytorch |")
    print("|---|---|---|---|")
    out = []
    for name, engines, rep in results:
        times = {k: [] for k in engines}
        rounds = 5
        for _ in range(rounds):  # alternate engines so machine noise hits both
            for k, fn in engines.items():
                times[k] += _timeit(fn, max(args.reps // rounds, 1), warmup=5)
        med = {k: statistics.median(v) for k, v in times.items()}
        cell = {k: f"{med[k]:.3f} ({min(v):.3f}-{max(v):.3f})" for k, v in times.items()}
        ratio = f"{med['cnnnative'] / med['pytorch']:.2f}" if "pytorch" in med else "n/a"
        print(f"| {name} | {cell['cnnnative']} | {cell.get('pytorch', 'n/a')} | {ratio} |")
        out.append({"workload": name, "median_ms": med, "arena_bytes": rep["arena_bytes"],
                    "persistent_bytes": rep["persistent_bytes"]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
