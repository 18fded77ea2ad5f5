"""Training memory and step time per recomputation mode, side by side in one process (modes alternate).

    python bench/recompute.py [--model resnet50] [--batch 16] [--size 224] [--rounds 3] [--cifar]

Prints, per mode ("none", "cheap", "segments"): arena, arena + persistent (parameters, gradients, optimizer
state), nodes recomputed, median step ms and the ratio to "none".
"""
import argparse
import statistics
import time

import numpy as np

import cnnnative as cn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--cifar", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="none,cheap,segments")
    a = ap.parse_args()
    kw = {"num_classes": a.classes}
    if a.cifar:
        kw["cifar"] = True
    shape = (a.batch, 3, a.size, a.size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, a.classes, a.batch).astype(np.int32)
    sessions = {}
    for mode in a.modes.split(","):
        m = cn.models.get_model(a.model, seed=0, **kw)
        s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), recompute=mode)
        s.step(x, y)
        sessions[mode] = s
    times = {k: [] for k in sessions}
    for _ in range(a.rounds):
        for k, s in sessions.items():
            time.sleep(0.02)
            t = time.perf_counter()
            s.step(x, y)
            times[k].append((time.perf_counter() - t) * 1e3)
    base = statistics.median(times[next(iter(times))])
    print(f"{a.model} batch {a.batch} {a.size}x{a.size}, {cn.get_num_threads()} threads")
    print("| recompute | arena MiB | arena + persistent MiB | nodes recomputed | step ms (median) | vs first |")
    print("|---|---|---|---|---|---|")
    for k, s in sessions.items():
        r = s.memory_report()
        med = statistics.median(times[k])
        print(f"| {k} | {r['arena_bytes'] / 2**20:.1f} | {(r['arena_bytes'] + r['persistent_bytes']) / 2**20:.1f} | "
              f"{r['num_recomputed']} | {med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
