"""Per-node profile of the float32 training steps whose PyTorch ratio misses the performance issue's target.

    python bench/train_profile.py [--workloads lenet5_train_mb64,resnet18cifar_train_mb64,resnet50_train_mb16]
                                  [--rounds 3] [--top 10]

For each workload (the benchmark suite's definitions, `python -m cnnnative.bench`): times cnnnative's step and
PyTorch's eager step side by side (alternating, medians), then runs `sess.profile()` over the same number of
steps and prints markdown: the step's time by node group (conv forward / grad_data / grad_weights, linear,
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
from cnnnative.bench.suite import _build, _spec, _time, torch_train_step

TARGETS = {"lenet5_train_mb64": 0.2, "resnet18cifar_train_mb64": 0.5, "resnet50_train_mb16": 0.45}
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
    model, twin, x, y, _ = _build(workload)
    sess = model.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), **ckw)
    engines = {"cnnnative": lambda: sess.step(x, y)}
    if twin is not None:
        import torch
        torch.set_num_threads(cn.get_num_threads())
        engines["pytorch"] = torch_train_step(twin, x, y)
    reps = 50 if name == "lenet5" else 1
    times = _time(engines, rounds, reps)
    med = {k: statistics.median(v) for k, v in times.items()}

    sess.profile(reset=True)
    steps = rounds * reps
    for _ in range(steps):
        sess.step(x, y)
    rows = sess.profile()
    node_ms = sum(r["ms"] * r["calls"] for r in rows) / steps
    flops = sum((r["gflops"] or 0) * r["ms"] * 1e6 * r["calls"] for r in rows) / steps  # per step

    out = [f"### {workload}", ""]
    line = f"cnnnative {med['cnnnative']:.2f} ms per step"
    target = TARGETS.get(workload)
    if "pytorch" in med:
        ratio = med["cnnnative"] / med["pytorch"]
        line += f", PyTorch {med['pytorch']:.2f} ms: ratio {ratio:.2f}"
        if target:
            need = flops / (target * med["pytorch"] * 1e-3) / 1e9
            line += (f" (target {target}). One step is {flops / 1e6:,.0f} MFLOP (convolutions and linear layers); "
                     f"at 100 % of the measured peak ({peak:.0f} GFLOP/s) that alone takes "
                     f"{flops / (peak * 1e9) * 1e3:.2f} ms = {flops / (peak * 1e9) * 1e3 / med['pytorch']:.2f}× "
                     f"PyTorch's step; the target ({target * med['pytorch']:.2f} ms) needs "
                     f"{need:.0f} GFLOP/s = {need / peak * 100:.0f} % of the peak over the whole step")
    out += [line + ".", "",
            f"Nodes sum to {node_ms:.2f} ms per step (profiled over {steps} steps).", "",
            "| group | ms per step | share | GFLOP/s | % of peak |", "|---|---|---|---|---|"]
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
    print(f"float32 training, {cn.get_num_threads()} threads; measured FMA peak {peak:.0f} GFLOP/s\n")
    for w in a.workloads.split(","):
        print(profile_workload(w.strip(), a.rounds, a.top, peak))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
