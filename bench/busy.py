"""The thread count on a busy machine: 1 thread, all threads (fixed) and auto mode, quiet and with CPU-bound load.

    python bench/busy.py [--rounds 3] [--seconds 3] [--load 1] [--imagenet] [--json out.json]

On a shared machine a CPU-bound process from someone else takes a core; a run split statically over every core
then waits for the thread the kernel descheduled at each parallel region (docs/ARCHITECTURE.md, "Threads"). This
script starts and stops the load itself (--load CPU-bound `while True: pass` processes) and times, in alternating
blocks (quiet, busy, quiet, ...; the three settings in a rotating order inside each block):

  lenet5_train_b64    one SGD-momentum training step of LeNet-5, batch 64
  lenet5_infer_b256   LeNet-5 inference, batch 256
  resnet18_infer_b16  ResNet-18 inference, batch 16 (CIFAR-sized 32x32 input; --imagenet: 224x224)

(--workloads picks some, --settings the thread settings: e.g. --settings 1,2 for fixed counts only.)

    python bench/busy.py --ramp [--seconds 5] [--workloads ...]

--ramp measures how fast auto mode follows a load that starts and stops while a session runs: per workload one
auto-mode session runs back to back through three phases of --seconds each, quiet, busy (the load starts as the
phase begins) and quiet again (it stops), and the script prints per phase the seconds until the last change of
thread count, the runs per count, and the mean ms per run in the phase's first second and in the rest.

Each setting has its own session, compiled for it; every timing follows a second of warm-up runs (what auto mode
needs to settle, and what any training run longer than a second gives it). Reported: the mean milliseconds per run
over the blocks (the mean, not the median: descheduling stalls are the point), and the thread counts auto mode ran
with. Timings are only meaningful on a machine nothing else loads: check `uptime` first.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def _load(n):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(n)]


def _stop(procs):
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _time(fn, sess, seconds, warmup_s=1.0):
    """Mean ms per call over `seconds` after `warmup_s` of calls, and the thread counts the timed calls used."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        fn()
    times, threads = [], collections.Counter()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        threads[sess.num_threads] += 1
    return statistics.fmean(times), threads


def _ramp(cn, sessions, workloads, args):
    """Auto mode through quiet -> busy -> quiet phases of one run each (see the module's docstring)."""
    import os
    cn.set_num_threads("auto")
    print("| workload | phase | s to the last change of count | runs per count | ms, first second | ms, rest |")
    print("|---|---|---|---|---|---|")
    rows = []
    for w in workloads:
        sess, call = sessions[w, "auto"]
        end = time.perf_counter() + 2.0  # the session settles on the quiet machine's count first
        while time.perf_counter() < end:
            call()
        procs = []
        try:
            for phase in ("quiet", "busy", "quiet after"):
                if phase == "busy":
                    procs = _load(args.load)
                elif procs:
                    _stop(procs)
                    procs = []
                t0 = time.perf_counter()
                log = []  # (seconds since the phase began, ms, threads)
                while time.perf_counter() - t0 < args.seconds:
                    a = time.perf_counter()
                    call()
                    b = time.perf_counter()
                    log.append((b - t0, (b - a) * 1e3, sess.num_threads))
                last = max((t for (t, _, n), (_, _, m) in zip(log[1:], log) if n != m), default=0.0)
                counts = dict(sorted(collections.Counter(n for _, _, n in log).items()))
                first = [m for t, m, _ in log if t <= 1.0]
                rest = [m for t, m, _ in log if t > 1.0]
                f = f"{statistics.fmean(first):.2f}" if first else "-"
                r = f"{statistics.fmean(rest):.2f}" if rest else "-"
                print(f"| {w} | {phase} | {last:.2f} | {counts} | {f} | {r} |", flush=True)
                rows.append({"workload": w, "phase": phase, "last_change_s": last, "runs": counts,
                             "first_s_ms": statistics.fmean(first) if first else None,
                             "rest_ms": statistics.fmean(rest) if rest else None})
        finally:
            _stop(procs)
    print(f"\nphases of {args.seconds:g} s; busy: {args.load} CPU-bound process(es); load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"ramp": rows, "seconds": args.seconds, "load_processes": args.load}, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="quiet/busy block pairs")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per setting and workload in a block")
    ap.add_argument("--load", type=int, default=1, help="CPU-bound background processes in a busy block")
    ap.add_argument("--imagenet", action="store_true", help="ResNet-18 at 224x224 instead of 32x32")
    ap.add_argument("--workloads", default="lenet5_train_b64,resnet18_infer_b16",
                    help="comma-separated: lenet5_train_b64, lenet5_infer_b256, resnet18_infer_b16")
    ap.add_argument("--settings", default=None, help="comma-separated thread settings (counts or 'auto'; "
                    "default: 1, all CPUs, auto)")
    ap.add_argument("--ramp", action="store_true", help="load starting and stopping mid-run (see above)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import cnnnative as cn
    info = cn.threads_info()
    if info["mode"] != "auto":
        sys.exit(f"busy.py compares auto mode with fixed counts: unset OMP_NUM_THREADS (mode is {info['mode']})")
    top = info["max"]
    if args.settings:
        settings = {}
        for v in args.settings.split(","):
            n = v if v == "auto" else int(v)
            settings[v if v == "auto" else f"{n} thread{'s' if n > 1 else ''}"] = n
    else:
        settings = {"1 thread": 1, f"{top} threads": top, "auto": "auto"}
    known = ("lenet5_train_b64", "lenet5_infer_b256", "resnet18_infer_b16")
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in known:
            ap.error(f"unknown workload {w!r}; known: {', '.join(known)}")

    rng = np.random.default_rng(0)
    x_l = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y_l = rng.integers(0, 10, 64).astype(np.int32)
    side = 224 if args.imagenet else 32
    x_r = rng.standard_normal((16, 3, side, side)).astype(np.float32)
    x_i = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    if args.ramp:
        settings = {"auto": "auto"}
    sessions = {}  # (workload, setting) -> (session, call)
    for name, n in settings.items():
        cn.set_num_threads(n)
        m = cn.models.lenet5(seed=0)
        s = m.compile(x_l.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
        sessions["lenet5_train_b64", name] = (s, lambda s=s: s.step(x_l, y_l))
        s = cn.models.lenet5(seed=0).compile(x_i.shape)
        sessions["lenet5_infer_b256", name] = (s, lambda s=s: s.run(x_i))
        r = cn.models.resnet18(num_classes=1000 if args.imagenet else 10, cifar=not args.imagenet, seed=0)
        s = r.compile(x_r.shape)
        sessions["resnet18_infer_b16", name] = (s, lambda s=s: s.run(x_r))

    if args.ramp:
        return _ramp(cn, sessions, workloads, args)
    ms = collections.defaultdict(list)  # (workload, condition, setting) -> per-block means
    auto_threads = collections.defaultdict(collections.Counter)  # (workload, condition) -> count -> runs
    names = list(settings)
    for rnd in range(args.rounds):
        for condition in ("quiet", "busy"):
            procs = _load(args.load) if condition == "busy" else []
            try:
                time.sleep(1.0)  # the load starts (or the last one's processes are gone)
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for w in workloads:
                    for name in order:
                        cn.set_num_threads(settings[name])
                        sess, call = sessions[w, name]
                        mean, threads = _time(call, sess, args.seconds)
                        ms[w, condition, name].append(mean)
                        if name == "auto":
                            auto_threads[w, condition].update(threads)
                        print(f"round {rnd + 1} {condition:5s} {w:20s} {name:10s} {mean:9.2f} ms"
                              f"  threads {dict(sorted(threads.items()))}", flush=True)
            finally:
                _stop(procs)

    load = f"{args.load} CPU-bound process{'es' if args.load > 1 else ''}"
    import os
    spin = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    print(f"\nmean ms per run over {args.rounds} blocks of {args.seconds:g} s; busy: {load}; "
          f"{info['cpus']} CPUs; ResNet-18 at {side}x{side}; {spin or 'libgomp default wait policy'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"| workload | machine | {' | '.join(names)} | auto / best fixed | auto's threads (runs) |")
    print("|---|---|" + "---|" * (len(names) + 2))
    rows = []
    for w in workloads:
        for condition in ("quiet", "busy"):
            means = {name: statistics.fmean(ms[w, condition, name]) for name in names}
            best = min((means[n] for n in names if n != "auto"), default=means.get("auto", 1.0))
            used = dict(sorted(auto_threads[w, condition].items()))
            auto = f"{means['auto'] / best:.2f}x" if "auto" in means else "-"
            print(f"| {w} | {condition} | " + " | ".join(f"{means[n]:.2f}" for n in names) + f" | {auto} | {used} |")
            rows.append({"workload": w, "machine": condition, "ms": means, "auto_threads": used})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": info["cpus"], "load_processes": args.load, "seconds": args.seconds,
                       "rounds": args.rounds, "resnet_side": side, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
