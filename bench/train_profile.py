"""Per-node profile of the float32 workloads whose ratio misses the performance issue's target: training steps
against PyTorch, and ResNet-50 b1 inference (latency) against ONNX Runtime.

    python bench/train_profile.py [--workloads lenet5_train_mb64,resnet18cifar_train_mb64,resnet50_train_mb16,
                                               resnet50_infer_mb1] [--rounds 3] [--top 10]

For each workload (the benchmark suite's definitions, `python -m cnnnative.bench`): times cnnnative's step (or run)
and the reference engine's side by side (alternating, medians; PyTorch's eager step for training, ONNX Runtime for
inference, PyTorch too where it runs), then runs `sess.profile()` over the same number of steps and prints markdown: the step's time by node group (conv forward / grad_data / grad_weights, linear,
batch norm, ReLU, add, pooling, reorders, optimizer) with GFLOP/s and % of the FMA peak measured in the same
process, the largest nodes, and the roofline line: the FLOPs of one step, the time they take at 100 % of the
peak, and the % of the peak a step at the target ratio would need. FLOPs are those of direct convolution
(what the model needs); the Winograd kernels do fewer multiplies, so their GFLOP/s can exceed the peak.
"""
import argparse
import collections
import statistics
import sys


import cnnnative as cn
from cnnnative import _core
from cnnnative.bench.suite import _build, _engines, _spec, _time, torch_train_step

# workload: (the engine the target ratio is against, the target)
TARGETS = {"lenet5_train_mb64": ("pytorch", 0.2), "resnet18cifar_train_mb64": ("pytorch", 0.5),
           "resnet50_train_mb16": ("pytorch", 0.45), "resnet50_infer_mb1": ("onnxruntime", 0.8)}
NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}
GROUPS = [  # (label, predicate on op name); first match wins
    ("conv forward", lambda op: op in ("conv2d", "fused_conv2d")),
    ("conv grad_data", lambda op: op == "conv2d_grad_data"),
    ("conv grad_weights", lambda op: op == "conv2d_grad_weights"),
    ("linear (fwd + grads)", lambda op: op.startswith("linear")),
    ("batch norm (fwd + grad)", lambda op: op.startswith("batch_norm")),
    ("relu (fwd + grad)", lambda op: op.startswith("relu")),
    ("add", lambda op: op == "add"),
    ("pooling (fwd + grad)", lambda op: "pool" in op),
    ("reorders", lambda op: op == "reorder"),
    ("optimizer update", lambda op: op == "optimizer_update"),
    ("other", lambda op: True),
]


def profile_workload(workload, rounds, top, peak):
    name, kw, chw, bs, mode, ckw = _spec(workload)
    if mode == "infer":  # the suite's engines: cnnnative, PyTorch, ONNX Runtime on the same weights and input
        engines, _, _, _, sess = _engines(workload, cn.get_num_threads())
        engines = {k: v for k, v in engines.items() if k in ("cnnnative", "pytorch", "onnxruntime")}
        step = engines["cnnnative"]
        unit = "run"
    else:
        model, twin, x, y, _ = _build(workload)
        sess = model.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), **ckw)
        step = lambda: sess.step(x, y)
        engines = {"cnnnative": step}
        if twin is not None:
            import torch
            torch.set_num_threads(cn.get_num_threads())
            engines["pytorch"] = torch_train_step(twin, x, y)
        unit = "step"
    reps = 50 if name == "lenet5" else 5 if mode == "infer" else 1
    times = _time(engines, rounds, reps)
    med = {k: statistics.median(v) for k, v in times.items()}

    sess.profile(reset=True)
    steps = rounds * reps
    for _ in range(steps):
        step()
    rows = sess.profile()
    # a step trained in pieces (compile's batch_pieces): the 'pieces/' rows are the first worker's piece on one
    # thread while the others ran theirs; counted with all workers' FLOPs, against the all-thread peak
    pieces = sess.batch_pieces if mode != "infer" else None
    workers = pieces[2] if pieces else 1
    for r in rows:
        if r["name"].startswith("pieces/") and r["gflops"]:
            r["gflops"] *= workers
    node_ms = sum(r["ms"] * r["calls"] for r in rows) / steps
    flops = sum((r["gflops"] or 0) * r["ms"] * 1e6 * r["calls"] for r in rows) / steps  # per step

    out = [f"### {workload}", ""]
    line = f"cnnnative {med['cnnnative']:.2f} ms per {unit}"
    against, target = TARGETS.get(workload, ("onnxruntime" if mode == "infer" else "pytorch", None))
    for k in ("pytorch", "onnxruntime"):
        if k in med:
            line += f", {NAMES[k]} {med[k]:.2f} ms: ratio {med['cnnnative'] / med[k]:.2f}"
    if target and against in med:
        ref = med[against]
        need = flops / (target * ref * 1e-3) / 1e9
        line += (f" (target {target} against {NAMES[against]}). One {unit} is {flops / 1e6:,.0f} MFLOP "
                 f"(convolutions and linear layers, direct-convolution count); at 100 % of the measured peak "
                 f"({peak:.0f} GFLOP/s) that alone takes {flops / (peak * 1e9) * 1e3:.2f} ms = "
                 f"{flops / (peak * 1e9) * 1e3 / ref:.2f}× {NAMES[against]}'s; the target ({target * ref:.2f} ms) "
                 f"needs {need:.0f} GFLOP/s = {need / peak * 100:.0f} % of the peak over the whole {unit}")
    out += [line + ".", "",
            f"Nodes sum to {node_ms:.2f} ms per {unit} (profiled over {steps} {unit}s)."
            + (f" The steps ran in pieces: {workers} workers of {pieces[0]} samples, one thread each; 'pieces/' "
               f"nodes are the first worker's times, their GFLOP/s count all {workers} pieces." if pieces else ""), "",
            f"| group | ms per {unit} | share | GFLOP/s | % of peak |", "|---|---|---|---|---|"]
    acc = collections.OrderedDict((g, [0.0, 0.0]) for g, _ in GROUPS)
    for r in rows:
        g = next(label for label, pred in GROUPS if pred(r["op"]))
        acc[g][0] += r["ms"] * r["calls"] / steps
        acc[g][1] += (r["gflops"] or 0) * r["ms"] * 1e6 * r["calls"] / steps
    for g, (ms, fl) in acc.items():
        if ms <= 0:
            continue
        gf = fl / (ms * 1e6) if fl else None
        out.append(f"| {g} | {ms:.3f} | {ms / node_ms * 100:.1f} % | {gf:.0f} | {gf / peak * 100:.0f} % |" if gf
                   else f"| {g} | {ms:.3f} | {ms / node_ms * 100:.1f} % | | |")
    out += ["", f"Largest {top} nodes:", "", "| node | op | ms | GFLOP/s | % of peak |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["ms"] * r["calls"])[:top]:
        gf = r["gflops"]
        out.append(f"| {r['name']} | {r['op']} | {r['ms'] * r['calls'] / steps:.3f} | "
                   + (f"{gf:.0f} | {gf / peak * 100:.0f} % |" if gf else " | |"))
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default=",".join(TARGETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args(argv)
    peak = max(_core.fma_peak_gflops(20_000_000)[0] for _ in range(3))
    print(f"float32, {cn.get_num_threads()} threads; measured FMA peak {peak:.0f} GFLOP/s\n")
    for w in a.workloads.split(","):
        print(profile_workload(w.strip(), a.rounds, a.top, peak))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
