"""Data-parallel training over MPI: images/s and scaling efficiency of 1 vs 2 processes (1 thread each), cnnnative
against PyTorch DDP (gloo).

    python bench/distributed.py [--steps 30] [--warmup 5] [--models lenet5,resnet18]
                                [--engines cnnnative,pytorch] [--bucket-mb 25] [--no-overlap-compare]
                                [--json out.json]

For each engine, model and process count N (1, 2), the script starts `mpirun -np N --oversubscribe` on itself
(--worker), 1 thread per process, the same per-rank batch (64 for LeNet-5, 32 for CIFAR ResNet-18), SGD with
momentum (lr 0.01, 0.9) and cross entropy on random data; every rank runs --warmup steps, then the timed steps
run between barriers and rank 0 reports.

* cnnnative: a distributed training session (cnnnative.distributed, MPI through mpi4py). Reported: global
  images/s, ms per step, the ms per step spent in the gradient allreduce (status word + buckets; measured inside
  the hook, so it includes waiting for the slower rank) and its share of the step. A second run per (model, N)
  with overlap=False (skip it with --no-overlap-compare) gives the second table: ms/step with and without
  overlap, the time the communication thread spent inside MPI ("exchange"), the time the step waited for it after
  the backward pass ("exposed") and the part of the exchange that ran during the backward pass ("overlapped").
  --bucket-mb sets the bucket size (25 MiB, the library's default, as DDP's).
* pytorch: the torch twins of the same models (cnnnative/bench/torch_models.py, torchvision's structure, the
  parity tests' models) under DistributedDataParallel with the gloo backend (default 25 MB buckets, allreduce
  overlapped with backward by DDP), torch.set_num_threads(1). The same mpirun starts the workers; each reads its
  rank and the world size from OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE and meets the others at
  MASTER_ADDR=127.0.0.1 on a free port the parent picks. DDP's communication cannot be timed from outside
  without changing it, so the script times it indirectly: --steps synchronised steps and --steps steps under
  ddp.no_sync() (no allreduce at all), in alternating blocks (up to 4 of each), and "exposed comm" = ms/step with sync -
  ms/step under no_sync: the communication DDP did NOT hide behind the backward pass, plus waiting for the slower
  rank (it can come out slightly negative from noise). Skipped with a message when torch is not installed.

Printed per (model, N): both engines side by side, the scaling efficiency of each, images/s(N) / (N x images/s(1)),
and the ratio of the times per step cnnnative / PyTorch (below 1: cnnnative is faster; the suite's convention).
--json writes every row (one per engine, model and N). Timings are only meaningful on a machine nothing else
loads: check `uptime` first.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

_BATCH = {"lenet5": 64, "resnet18": 32}
_KW = {"lenet5": {}, "resnet18": {"num_classes": 10, "cifar": True}}
_SHAPE = {"lenet5": (1, 28, 28), "resnet18": (3, 32, 32)}
ENGINES = ("cnnnative", "pytorch")
_HEADS = {"cnnnative": f"{'img/s':>9}{'ms/step':>9}{'allreduce':>10}{'share':>8}{'eff':>6}",
          "pytorch": f"{'img/s':>9}{'ms/step':>9}{'no_sync':>9}{'exposed':>9}{'share':>8}{'eff':>6}"}
_TITLES = {"cnnnative": "cnnnative (MPI)", "pytorch": "PyTorch DDP (gloo)"}


def _data(name, seed):
    b = _BATCH[name]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b,) + _SHAPE[name]).astype(np.float32)
    y = rng.integers(0, 10, b).astype(np.int32)
    return x, y


def _model(name):
    import cnnnative as cn
    if name == "lenet5":
        return cn.models.lenet5(seed=0), _SHAPE[name]
    return cn.models.resnet18(**_KW[name]), _SHAPE[name]


def worker(name, steps, warmup, overlap=True, bucket_mb=25.0):
    import cnnnative as cn
    from cnnnative import distributed as dist
    dist.init()
    cn.set_num_threads(1)
    model, shape = _model(name)
    b = _BATCH[name]
    opt = cn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sess = dist.DistributedSession(model, (b,) + shape, optimizer=opt, overlap=overlap,
                                   bucket_bytes=int(bucket_mb * (1 << 20)))
    x, y = _data(name, dist.rank())
    for _ in range(warmup):
        sess.step(x, y)
    dist.barrier()
    c0 = sess._dist.comm_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        sess.step(x, y)
    dist.barrier()
    dt = time.perf_counter() - t0
    c = {k: (v - c0[k]) / steps * 1e3 for k, v in sess._dist.comm_stats().items()}
    if dist.rank() == 0:
        w = dist.world_size()
        h = sess._dist
        print(json.dumps({"engine": "cnnnative", "model": name, "processes": w, "images_per_s": steps * b * w / dt,
                          "ms_per_step": dt / steps * 1e3, "allreduce_ms_per_step": c["exposed"],
                          "allreduce_share": c["exposed"] / (dt / steps * 1e3), "overlap": h.overlap,
                          "buckets": len(h.buckets), "exchange_ms": c["exchange"], "overlapped_ms": c["overlapped"],
                          "gradient_mb": sess._s.memory_report()["grad_bytes"] / 1e6}), flush=True)


def torch_worker(name, steps, warmup):
    """One rank of the PyTorch DDP (gloo) run, started by mpirun: rank and world size from Open MPI's environment,
    rendezvous at MASTER_ADDR:MASTER_PORT (set by the parent)."""
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cnnnative.bench import torch_models as tw
    rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    tdist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    torch.manual_seed(0)
    ddp = DDP(tw.build(name, **_KW[name]))  # broadcasts rank 0's parameters and buffers; bucket_cap_mb=25
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    x, y = _data(name, rank)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()
    b = _BATCH[name]

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(ddp(tx), ty).backward()
        opt.step()

    def block(n, sync):
        tdist.barrier()
        t0 = time.perf_counter()
        if sync:
            for _ in range(n):
                step()
        else:
            with ddp.no_sync():
                for _ in range(n):
                    step()
        tdist.barrier()
        return time.perf_counter() - t0

    for _ in range(warmup):
        step()
    with ddp.no_sync():
        step()
    # blocks of sync and no_sync steps alternate (up to 4 of each), so a change in the machine's load hits both
    k = max(1, min(4, steps))
    t_sync = t_nosync = 0.0
    for i in range(k):
        n = steps * (i + 1) // k - steps * i // k
        t_sync += block(n, True)
        t_nosync += block(n, False)
    if rank == 0:
        ms, ms_nosync = t_sync / steps * 1e3, t_nosync / steps * 1e3
        print(json.dumps({"engine": "pytorch", "model": name, "processes": world,
                          "images_per_s": steps * b * world / t_sync, "ms_per_step": ms,
                          "no_sync_ms_per_step": ms_nosync, "exposed_comm_ms_per_step": ms - ms_nosync,
                          "exposed_comm_share": (ms - ms_nosync) / ms,
                          "gradient_mb": sum(p.numel() * p.element_size() for p in ddp.parameters()) / 1e6,
                          "torch": torch.__version__}), flush=True)
    tdist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fmt(r, engine):
    """The cells of one engine's row (blank cells when the engine did not run)."""
    if r is None:
        return " " * len(_HEADS[engine])
    if engine == "cnnnative":
        return (f"{r['images_per_s']:>9.0f}{r['ms_per_step']:>9.2f}{r['allreduce_ms_per_step']:>10.2f}"
                f"{r['allreduce_share']:>8.1%}{r['efficiency']:>6.2f}")
    return (f"{r['images_per_s']:>9.0f}{r['ms_per_step']:>9.2f}{r['no_sync_ms_per_step']:>9.2f}"
            f"{r['exposed_comm_ms_per_step']:>9.2f}{r['exposed_comm_share']:>8.1%}{r['efficiency']:>6.2f}")


def print_table(rows, engines):
    both = all(e in engines for e in ENGINES)
    print(f"{'':<16}" + " | ".join(f"{_TITLES[e]:<{len(_HEADS[e])}}" for e in engines)
          + (" | cnnnative/PyTorch" if both else ""))
    print(f"{'model':<10}{'procs':>6}" + " | ".join(_HEADS[e] for e in engines) + (" | time per step" if both else ""))
    by = {(r["engine"], r["model"], r["processes"]): r for r in rows}
    for model, n in dict.fromkeys((r["model"], r["processes"]) for r in rows):
        cells = [_fmt(by.get((e, model, n)), e) for e in engines]
        line = f"{model:<10}{n:>6}" + " | ".join(cells)
        if both and ("cnnnative", model, n) in by and ("pytorch", model, n) in by:
            line += f" | {by['cnnnative', model, n]['ms_per_step'] / by['pytorch', model, n]['ms_per_step']:>13.2f}"
        print(line)
    print("img/s: global images/s; ms/step: per training step; eff: img/s(N) / (N x img/s(1)) of the same engine")
    if "cnnnative" in engines:
        print("cnnnative allreduce: ms/step the step waited for the exchange after its backward pass (the "
              "gradient hook, incl. waiting for the slower rank), share = of the step")
    if "pytorch" in engines:
        print("PyTorch no_sync: ms/step under ddp.no_sync() (no allreduce); exposed = ms/step - no_sync: the "
              "communication DDP did not hide behind backward (noise can make it negative)")
    if both:
        print("cnnnative/PyTorch: ratio of ms/step, below 1 = cnnnative faster")


def print_overlap(rows, plain):
    """cnnnative with and without overlap of the exchange with the backward pass, per (model, processes)."""
    by = {(r["model"], r["processes"]): r for r in rows if r["engine"] == "cnnnative"}
    print()
    print(f"{'model':<10}{'procs':>6}{'buckets':>8}{'ms/step':>9}{'no overlap':>11}{'exchange':>9}{'exposed':>9}"
          f"{'overlapped':>11}")
    for p in plain:
        r = by.get((p["model"], p["processes"]))
        if r is None:
            continue
        print(f"{r['model']:<10}{r['processes']:>6}{r['buckets']:>8}{r['ms_per_step']:>9.2f}{p['ms_per_step']:>11.2f}"
              f"{r['exchange_ms']:>9.2f}{r['allreduce_ms_per_step']:>9.2f}{r['overlapped_ms']:>11.2f}")
    print("ms/step: with overlap (the default), no overlap: the same run with overlap=False; exchange: ms/step the "
          "communication thread spent inside MPI; exposed: ms/step the step waited after its backward pass; "
          "overlapped: exchange time that ran while the backward pass did (exchange - waiting)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="lenet5,resnet18")
    ap.add_argument("--engines", default="cnnnative,pytorch",
                    help="comma-separated: cnnnative, pytorch (PyTorch DDP with gloo; skipped without torch)")
    ap.add_argument("--bucket-mb", type=float, default=25.0,
                    help="cnnnative's gradient bucket size in MiB (cnnnative.distributed.BUCKET_BYTES: 25)")
    ap.add_argument("--no-overlap-compare", action="store_true",
                    help="skip the second cnnnative run per model and process count with overlap=False")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-engine", default="cnnnative", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        if a.worker_engine == "pytorch":
            return torch_worker(a.worker, a.steps, a.warmup)
        return worker(a.worker, a.steps, a.warmup, a.worker_engine != "cnnnative-no-overlap", a.bucket_mb)
    engines = [e for e in a.engines.split(",") if e]
    for e in engines:
        if e not in ENGINES:
            sys.exit(f"unknown engine {e!r} ({', '.join(ENGINES)})")
    models = a.models.split(",")
    for name in models:
        if name not in _BATCH:
            sys.exit(f"unknown model {name!r} (lenet5, resnet18)")
    if "pytorch" in engines and importlib.util.find_spec("torch") is None:
        print("torch is not installed: skipping the PyTorch DDP (gloo) comparison", flush=True)
        engines.remove("pytorch")
    if not engines:
        sys.exit("no engine left to run")
    engines = [e for e in ENGINES if e in engines]
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo's rendezvous and traffic over loopback
    rows, plain = [], []
    runs = list(engines)
    if "cnnnative" in engines and not a.no_overlap_compare:
        runs.append("cnnnative-no-overlap")
    for name in models:
        for n in (1, 2):
            for e in runs:
                env["MASTER_PORT"] = str(_free_port())
                r = subprocess.run([mpirun if os.path.exists(mpirun) else "mpirun", "-np", str(n), "--oversubscribe",
                                    "-x", "MASTER_ADDR", "-x", "MASTER_PORT", "-x", "GLOO_SOCKET_IFNAME",
                                    sys.executable, __file__, "--worker", name, "--worker-engine", e,
                                    "--steps", str(a.steps), "--warmup", str(a.warmup), "--bucket-mb",
                                    str(a.bucket_mb)],
                                   capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    sys.exit(f"{e}: {name} on {n} processes failed:\n{r.stdout}{r.stderr}")
                (plain if e == "cnnnative-no-overlap" else rows).append(json.loads(r.stdout.strip().splitlines()[-1]))
    one = {(r["engine"], r["model"]): r["images_per_s"] for r in rows if r["processes"] == 1}
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["processes"] * one[r["engine"], r["model"]])
    print_table(rows, engines)
    if plain:
        print_overlap(rows, plain)
        for r in plain:
            r["engine"] = "cnnnative-no-overlap"
        rows += plain
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
