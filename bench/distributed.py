"""Data-parallel training over MPI: images/s and scaling efficiency of 1 vs 2 processes (1 thread each).

    python bench/distributed.py [--steps 30] [--warmup 5] [--models lenet5,resnet18] [--json out.json]

For each model and process count N (1, 2), the script starts `mpirun -np N --oversubscribe` on itself (--worker):
every rank compiles a distributed training session (per-rank batch: 64 for LeNet-5, 32 for CIFAR ResNet-18; SGD
with momentum), runs --warmup steps, then times --steps steps between barriers. Reported per (model, N): global
images/s, milliseconds per step, the seconds per step spent in the gradient allreduce (status word + buckets;
measured inside the hook, so it includes waiting for the slower rank) and its share of the step, and the
scaling efficiency images/s(N) / (N x images/s(1)). The allreduce runs after the backward pass (no overlap is
implemented), so "overlapped" is 0 by construction. A PyTorch DDP (gloo) comparison is not implemented.
Timings are only meaningful on a machine nothing else loads: check `uptime` first.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_BATCH = {"lenet5": 64, "resnet18": 32}


def _model(name):
    import cnnnative as cn
    if name == "lenet5":
        return cn.models.lenet5(seed=0), (1, 28, 28)
    return cn.models.resnet18(num_classes=10, cifar=True), (3, 32, 32)


def worker(name, steps, warmup):
    import cnnnative as cn
    from cnnnative import distributed as dist
    dist.init()
    cn.set_num_threads(1)
    model, shape = _model(name)
    b = _BATCH[name]
    opt = cn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sess = dist.DistributedSession(model, (b,) + shape, optimizer=opt)
    rng = np.random.default_rng(dist.rank())
    x = rng.normal(size=(b,) + shape).astype(np.float32)
    y = rng.integers(0, 10, b).astype(np.int32)
    for _ in range(warmup):
        sess.step(x, y)
    dist.barrier()
    comm0 = sess._dist.comm_seconds
    t0 = time.perf_counter()
    for _ in range(steps):
        sess.step(x, y)
    dist.barrier()
    dt = time.perf_counter() - t0
    comm = sess._dist.comm_seconds - comm0
    if dist.rank() == 0:
        w = dist.world_size()
        print(json.dumps({"model": name, "processes": w, "images_per_s": steps * b * w / dt,
                          "ms_per_step": dt / steps * 1e3, "allreduce_ms_per_step": comm / steps * 1e3,
                          "allreduce_share": comm / dt, "overlapped_ms": 0.0,
                          "gradient_mb": sess._s.memory_report()["grad_bytes"] / 1e6}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="lenet5,resnet18")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.steps, a.warmup)
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    rows = []
    for name in a.models.split(","):
        if name not in _BATCH:
            sys.exit(f"unknown model {name!r} (lenet5, resnet18)")
        for n in (1, 2):
            r = subprocess.run([mpirun if os.path.exists(mpirun) else "mpirun", "-np", str(n), "--oversubscribe",
                                sys.executable, __file__, "--worker", name, "--steps", str(a.steps), "--warmup",
                                str(a.warmup)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.exit(f"{name} on {n} processes failed:\n{r.stdout}{r.stderr}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    one = {r["model"]: r["images_per_s"] for r in rows if r["processes"] == 1}
    print(f"{'model':<10}{'procs':>6}{'img/s':>10}{'ms/step':>10}{'allreduce ms':>14}{'share':>8}{'efficiency':>12}")
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["processes"] * one[r["model"]])
        print(f"{r['model']:<10}{r['processes']:>6}{r['images_per_s']:>10.0f}{r['ms_per_step']:>10.2f}"
              f"{r['allreduce_ms_per_step']:>14.2f}{r['allreduce_share']:>8.1%}{r['efficiency']:>12.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
