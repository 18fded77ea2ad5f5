"""Training memory and step time per recomputation mode, side by side in one process (modes alternate).

    python bench/recompute.py [--model resnet50] [--batch 16] [--size 224] [--rounds 3] [--cifar]
                              [--modes none,cheap,lean,segments] [--threads N]

Prints, per mode (the first is the yardstick; "default" is what compile does without recompute=, e.g. "lean";
"lean:<flops per byte>" sets lean's threshold): arena, arena + persistent (parameters, gradients, optimizer
state), nodes recomputed, median step ms and the ratio to the first, with the CPU model and the load average
before and after (the machine may be shared).
"""
import argparse
import os
import platform
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
    ap.add_argument("--modes", default="none,cheap,lean,segments")
    ap.add_argument("--threads", type=int, default=None, help="a fixed thread count (default: the automatic one)")
    a = ap.parse_args()
    if a.threads:
        cn.set_num_threads(a.threads)
    kw = {"num_classes": a.classes}
    if a.cifar:
        kw["cifar"] = True
    shape = (a.batch, 3, a.size, a.size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, a.classes, a.batch).astype(np.int32)
    sessions = {}
    load = os.getloadavg()
    for mode in a.modes.split(","):
        m = cn.models.get_model(a.model, seed=0, **kw)
        s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9),
                      recompute=None if mode == "default" else mode)
        s.step(x, y)
        sessions[mode] = s
    times = {k: [] for k in sessions}
    cpu_times = {k: [] for k in sessions}  # this process's CPU seconds: less disturbed by other processes' load
    for _ in range(a.rounds):
        for k, s in sessions.items():
            time.sleep(0.02)
            t, c = time.perf_counter(), time.process_time()
            s.step(x, y)
            times[k].append((time.perf_counter() - t) * 1e3)
            cpu_times[k].append((time.process_time() - c) * 1e3)
    base = statistics.median(times[next(iter(times))])
    cpu_base = statistics.median(cpu_times[next(iter(times))])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"{a.model} batch {a.batch} {a.size}x{a.size}, {cn.get_num_threads()} threads, {a.rounds} rounds, {cpu}, "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| recompute | arena MiB | arena + persistent MiB | nodes recomputed | step ms (median) | vs first | "
          "CPU ms per step (median) | vs first |")
    print("|---|---|---|---|---|---|---|---|")
    for k, s in sessions.items():
        r = s.memory_report()
        med = statistics.median(times[k])
        name = f"{k} ({r['recompute']})" if k == "default" else k
        print(f"| {name} | {r['arena_bytes'] / 2**20:.1f} | "
              f"{(r['arena_bytes'] + r['persistent_bytes']) / 2**20:.1f} | {r['num_recomputed']} | {med:.1f} | "
              f"{med / base:.2f} | {statistics.median(cpu_times[k]):.0f} | "
              f"{statistics.median(cpu_times[k]) / cpu_base:.2f} |")


if __name__ == "__main__":
    main()
