"""The GPU benchmark: cnnnative's cuda backend against PyTorch (CUDA, cuDNN with cudnn.benchmark=True) on the same
GPU, in one process, with the same weights (the torch twins of cnnnative.bench.torch_models, loaded from the
cnnnative model's state_dict).

    python -m cnnnative.bench.cuda [--out FILE.json] [--quick] [--budget-s SECONDS] [--workloads a,b]

Workloads (issue 12's targets, ratio = cnnnative ms / PyTorch ms):
  resnet50_train_b64       training step (SGD momentum, cross entropy): cnnnative TF32 vs torch TF32 (NCHW) and vs
                           torch AMP bf16 channels-last (target <= 1.0 against the latter); cnnnative bfloat16 too
                           when the cuda backend supports it
  resnet50_infer_b64, _b1  inference: cnnnative TF32 vs torch TF32 and torch AMP bf16 channels-last (target <= 1.0)
  resnet18cifar_train_b256 CIFAR ResNet-18 training step: target <= 0.8 against torch TF32

Both sides take numpy in and give a number/array out per call, as cnnnative's API does: the torch step copies the
batch from host memory to the GPU and reads the loss back (.item()), inference copies the output back. Timing: a
warm-up, then blocks of `reps` calls, each block bracketed by a CUDA synchronization; the engines alternate block by
block; the figure is the median per-call time over the blocks (min and max beside it). Before timing, outputs (or
the first training step's loss) are compared between cnnnative and torch to make sure both compute the same model.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

# name: (model, model kwargs, input (C, H, W), batch, mode)
WORKLOADS = {
    "resnet50_train_b64": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 64, "train"),
    "resnet18cifar_train_b256": ("resnet18", {"num_classes": 10, "cifar": True}, (3, 32, 32), 256, "train"),
    "resnet50_infer_b64": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 64, "infer"),
    "resnet50_infer_b1": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 1, "infer"),
}  # in this order (the most important first: a time budget may cut the last ones)
# workload: (the torch engine the target compares with, the largest cnnnative/torch ratio that meets it)
TARGETS = {
    "resnet50_train_b64": ("torch_amp_bf16_cl", 1.0),
    "resnet50_infer_b64": ("torch_tf32", 1.0),
    "resnet50_infer_b1": ("torch_tf32", 1.0),
    "resnet18cifar_train_b256": ("torch_tf32", 0.8),
}
LR, MOMENTUM = 1e-3, 0.9
# "cuda"; "cpu" only for --dry-run, which checks this harness on a machine without a GPU (tiny shapes, no timing value)
DEV = "cuda"


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _setup_torch():
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    return torch


def _build(workload):
    """cnnnative model, torch twin on the GPU with the same weights, a batch (x, y)."""
    import cnnnative as cn
    import torch

    from .torch_models import build
    name, kw, chw, bs, mode = WORKLOADS[workload]
    model = cn.models.get_model(name, seed=0, **kw)
    twin = build(name, **kw)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    twin = twin.to(DEV)
    rng = np.random.default_rng(0)
    if DEV != "cuda":  # --dry-run: tiny shapes
        bs, chw = 2, (chw[0], min(chw[1], 64), min(chw[2], 64))
    x = rng.standard_normal((bs,) + chw).astype(np.float32)
    y = rng.integers(0, kw["num_classes"], bs).astype(np.int32)
    return model, twin, x, y, mode


def _torch_engines(torch, twin, x, y, mode):
    """{engine: callable} for torch TF32 (NCHW) and AMP bf16 channels-last, each on its own copy of the weights."""
    engines = {}
    for eng, amp in (("torch_tf32", False), ("torch_amp_bf16_cl", True)):
        net = copy.deepcopy(twin)
        fmt = torch.channels_last if amp else torch.contiguous_format
        net = net.to(memory_format=fmt)

        def ctx(amp=amp):
            return torch.autocast(DEV, dtype=torch.bfloat16) if amp else torch.autocast(DEV, enabled=False)

        if mode == "train":
            net.train()
            opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
            ty = torch.from_numpy(y).long().to(DEV)

            def step(net=net, opt=opt, ty=ty, fmt=fmt, ctx=ctx):
                tx = torch.from_numpy(x).to(DEV).contiguous(memory_format=fmt)
                opt.zero_grad(set_to_none=True)
                with ctx():
                    loss = torch.nn.functional.cross_entropy(net(tx), ty)
                loss.backward()
                opt.step()
                return loss.item()
            engines[eng] = step
        else:
            net.eval()

            def infer(net=net, fmt=fmt, ctx=ctx):
                with torch.inference_mode(), ctx():
                    out = net(torch.from_numpy(x).to(DEV).contiguous(memory_format=fmt))
                return out.float().cpu().numpy()
            engines[eng] = infer
    return engines


def _torch_sync(torch):
    return torch.cuda.synchronize if DEV == "cuda" else (lambda: None)


def _device_kw(**kw):
    return dict(device="cuda", **kw) if DEV == "cuda" else {}


def _time(torch, engines, syncs, blocks, reps, warmup):
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    _torch_sync(torch)()
    times = {k: [] for k in engines}
    for _ in range(blocks):
        for k, fn in engines.items():
            syncs[k]()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            syncs[k]()
            times[k].append((time.perf_counter() - t0) * 1e3 / reps)
    return times


def run_workload(workload, quick=False):
    import cnnnative as cn
    torch = _setup_torch()
    model, twin, x, y, mode = _build(workload)
    bs = x.shape[0]
    res = {"batch": bs, "mode": mode, "model": WORKLOADS[workload][0], "engines": {}, "notes": []}
    ours = {}
    t0 = time.perf_counter()
    if mode == "train":
        def make(dtype):
            m = copy.deepcopy(model) if dtype != "float32" else model
            return m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=LR, momentum=MOMENTUM), dtype=dtype,
                             **_device_kw(tf32=True))
        s32 = make("float32")
        res["compile_s"] = round(time.perf_counter() - t0, 2)
        torch_eng = _torch_engines(torch, twin, x, y, mode)
        # the same model: the first step's loss from the same weights (TF32 on both sides)
        l_ours, l_torch = s32.step(x, y), torch_eng["torch_tf32"]()
        res["check"] = {"first_step_loss_cnnnative": l_ours, "first_step_loss_torch_tf32": l_torch,
                        "rel_diff": abs(l_ours - l_torch) / max(abs(l_torch), 1e-12)}
        if not res["check"]["rel_diff"] <= 1e-2:
            res["notes"].append(f"first-step losses differ: cnnnative {l_ours:.5f} vs torch {l_torch:.5f}")
        ours["cnnnative_tf32"] = (lambda: s32.step(x, y), s32)
        try:
            sbf = make("bfloat16")
            ours["cnnnative_bf16"] = (lambda: sbf.step(x, y), sbf)
        except (cn.Error, ValueError) as e:
            res["notes"].append(f"cnnnative bfloat16 on cuda: not measured ({str(e)[:160]})")
    else:
        s32 = model.compile(x.shape, **_device_kw(tf32=True))
        res["compile_s"] = round(time.perf_counter() - t0, 2)
        torch_eng = _torch_engines(torch, twin, x, y, mode)
        out = s32.run(x)
        ref = torch_eng["torch_tf32"]()
        res["check"] = {"max_rel_err_vs_torch_tf32": _rel(out, ref),
                        "top1_agreement": float(np.mean(out.argmax(1) == ref.argmax(1)))}
        if not res["check"]["max_rel_err_vs_torch_tf32"] <= 2e-2:
            res["notes"].append(f"outputs differ from torch: rel err {res['check']['max_rel_err_vs_torch_tf32']:.2e}")
        ours["cnnnative_tf32"] = (lambda: s32.run(x), s32)
        try:
            sbf = model.compile(x.shape, dtype="bfloat16", **_device_kw())
            ours["cnnnative_bf16"] = (lambda: sbf.run(x), sbf)
        except (cn.Error, ValueError) as e:
            res["notes"].append(f"cnnnative bfloat16 on cuda: not measured ({str(e)[:160]})")
    engines = {k: fn for k, (fn, _) in ours.items()}
    engines.update(torch_eng)
    syncs = {k: s.synchronize for k, (_, s) in ours.items()}
    syncs.update({k: _torch_sync(torch) for k in torch_eng})
    big = mode == "train" or bs > 1
    blocks, reps = (3, 3 if big else 10) if quick else (7, 5 if big else 30)
    if DEV != "cuda":
        blocks, reps = 2, 1
    times = _time(torch, engines, syncs, blocks, reps, warmup=3 if big else 10)
    for k, ts in times.items():
        med = statistics.median(ts)
        res["engines"][k] = {"median_ms": round(med, 3), "min_ms": round(min(ts), 3), "max_ms": round(max(ts), 3),
                             "images_per_s": round(bs / med * 1e3, 1), "blocks": blocks, "reps": reps}
    base = res["engines"]["cnnnative_tf32"]["median_ms"]
    res["ratios"] = {f"cnnnative_tf32/{k}": round(base / v["median_ms"], 3)
                     for k, v in res["engines"].items() if k.startswith("torch")}
    if "cnnnative_bf16" in res["engines"]:
        b = res["engines"]["cnnnative_bf16"]["median_ms"]
        res["ratios"].update({f"cnnnative_bf16/{k}": round(b / v["median_ms"], 3)
                              for k, v in res["engines"].items() if k.startswith("torch")})
    vs, limit = TARGETS[workload]
    best = min(v["median_ms"] for k, v in res["engines"].items() if k.startswith("cnnnative"))
    ratio = best / res["engines"][vs]["median_ms"]
    res["target"] = {"vs": vs, "max_ratio": limit, "ratio": round(ratio, 3), "met": bool(ratio <= limit)}
    return res


def _table(results):
    lines = ["| workload | engine | median ms (min-max) | images/s | cnnnative_tf32 / this |",
             "| --- | --- | --- | --- | --- |"]
    for w, r in results.items():
        if "error" in r:
            lines.append(f"| {w} | error | {r['error'][:100]} | | |")
            continue
        base = r["engines"]["cnnnative_tf32"]["median_ms"]
        for k, e in r["engines"].items():
            ratio = "" if k == "cnnnative_tf32" else f"{base / e['median_ms']:.2f}x"
            lines.append(f"| {w} | {k} | {e['median_ms']:.2f} ({e['min_ms']:.2f}-{e['max_ms']:.2f}) | "
                         f"{e['images_per_s']:.0f} | {ratio} |")
        t = r["target"]
        lines.append(f"| {w} | target | best cnnnative / {t['vs']} = {t['ratio']:.2f} (<= {t['max_ratio']}) | | "
                     f"{'met' if t['met'] else 'NOT met'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnnative.bench.cuda", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the figures as JSON to this file (after each workload)")
    p.add_argument("--quick", action="store_true", help="fewer timing blocks and calls (a rough figure in ~1 min)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting workloads once this many seconds have passed (the rest are reported skipped)")
    p.add_argument("--workloads", default=None, help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    p.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)  # the harness on the CPU, tiny shapes
    args = p.parse_args(argv)
    global DEV
    DEV = "cpu" if args.dry_run else "cuda"
    names = list(WORKLOADS) if not args.workloads else [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workloads {unknown}; available: {', '.join(WORKLOADS)}")
    start = time.perf_counter()
    report = {"benchmark": "cnnnative.bench.cuda", "quick": args.quick, "host": platform.node(),
              "python": sys.version.split()[0], "workloads": {}}

    def write():
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(report, f, indent=1)
            os.replace(tmp, args.out)

    import cnnnative as cn
    report["cnnnative"] = cn.__version__
    if DEV == "cuda" and not cn.cuda.is_available():
        report["error"] = f"the cuda backend cannot run here: {cn.cuda.why_unavailable()}"
        print(report["error"], file=sys.stderr)
        write()
        return 2
    report["cuda"] = cn.cuda.info() if DEV == "cuda" else {"dry_run": "cpu"}
    try:
        torch = _setup_torch()
        if DEV == "cuda" and not torch.cuda.is_available():
            raise ImportError("torch sees no CUDA device")
    except ImportError as e:
        report["error"] = f"PyTorch with CUDA is needed for the comparison: {e}"
        print(report["error"], file=sys.stderr)
        write()
        return 2
    report["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version(),
                       "device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"}
    print(f"cnnnative {cn.__version__} cuda: {report['cuda'].get('name', '?')}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})", flush=True)
    write()
    for w in names:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            report["workloads"][w] = {"error": "skipped: out of the time budget"}
            continue
        t0 = time.perf_counter()
        print(f"{w} ...", flush=True)
        try:
            report["workloads"][w] = run_workload(w, quick=args.quick)
        except Exception as e:  # noqa: BLE001  (one workload's failure is reported, the others still run)
            report["workloads"][w] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        gc.collect()  # the workload's sessions and torch models are gone: give their GPU memory back
        if DEV == "cuda":
            torch.cuda.empty_cache()
        report["workloads"][w]["seconds"] = round(time.perf_counter() - t0, 1)
        r = report["workloads"][w]
        print(json.dumps({k: r[k] for k in ("engines", "ratios", "target", "check", "notes", "error") if k in r}),
              flush=True)
        write()
    report["seconds"] = round(time.perf_counter() - start, 1)
    write()
    print()
    print(_table(report["workloads"]))
    return 0 if all("error" not in r for r in report["workloads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
