"""Thread-count independence (compile(deterministic=...)): an audit of every cpu kernel and the cost of the mode.

    python bench/determinism.py audit [--batch 32] [--threads 1,2,3,4] [--only conv] [--mode both|off|on]
    python bench/determinism.py cost  [--rounds 7] [--threads 2] [--workloads lenet5,resnet18cifar] [--profile]

audit: for each op configuration (LeNet-5, CIFAR ResNet-18, U-Net layers, linear layers, the other ops) one
grad-mode session per thread count (compiled and run at that count, layout nChw16c as the training default),
forward output and every input gradient compared bitwise against the 1-thread session; prints, per output, the
thread counts whose result differs and the largest relative difference. Then the case of a session compiled at
one thread count and run at another. deterministic=False and True.

cost: training step time of LeNet-5 b64 and CIFAR ResNet-18 b64, deterministic off and on, alternating in one
process (A B B A rounds; medians and minima), and the relative step-time cost; --profile adds the time of the
conv / linear node groups in both modes.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import cnnnative as cn
from cnnnative import _core


# ---------------------------------------------------------------------------------------------------- audit
def _f(*shape):
    return ("f", shape)


def configs(B):
    """(name, op, input shapes, attrs, wrt): the layers of the models the issue names."""
    c = []
    conv = lambda name, x, w, bias=True, **a: c.append(  # noqa: E731
        (name, "conv2d", [_f(*x), _f(*w)] + ([_f(w[0])] if bias else []),
         {k: list(v) for k, v in a.items()}, [0, 1, 2] if bias else [0, 1]))
    conv("lenet.conv1 1->6 5x5 p2 28^2", (B, 1, 28, 28), (6, 1, 5, 5), padding=(2, 2))
    conv("lenet.conv2 6->16 5x5 14^2", (B, 6, 14, 14), (16, 6, 5, 5))
    conv("r18.stem 3->64 3x3 32^2", (B, 3, 32, 32), (64, 3, 3, 3), bias=False, padding=(1, 1))
    conv("r18.layer1 64 3x3 32^2 (wino)", (B, 64, 32, 32), (64, 64, 3, 3), bias=False, padding=(1, 1))
    conv("r18.layer2 64->128 3x3 s2", (B, 64, 32, 32), (128, 64, 3, 3), bias=False, padding=(1, 1), stride=(2, 2))
    conv("r18.layer2 1x1 s2 downsample", (B, 64, 32, 32), (128, 64, 1, 1), bias=False, stride=(2, 2))
    conv("r18.layer2 128 3x3 16^2 (wino)", (B, 128, 16, 16), (128, 128, 3, 3), bias=False, padding=(1, 1))
    conv("r18.layer3 128->256 3x3 s2", (B, 128, 16, 16), (256, 128, 3, 3), bias=False, padding=(1, 1), stride=(2, 2))
    conv("r18.layer3 256 3x3 8^2 (wino)", (B, 256, 8, 8), (256, 256, 3, 3), bias=False, padding=(1, 1))
    conv("r18.layer4 512 3x3 4^2 (wino)", (B, 512, 4, 4), (512, 512, 3, 3), bias=False, padding=(1, 1))
    conv("1x1 256->64 8^2 bias", (B, 256, 8, 8), (64, 256, 1, 1))
    conv("3x3 128->256 16^2 (wino, dw split 1)", (B, 128, 16, 16), (256, 128, 3, 3), bias=True, padding=(1, 1))
    lin = lambda name, n, i, o: c.append((name, "linear", [_f(n, i), _f(o, i), _f(o)], {}, [0, 1, 2]))  # noqa: E731
    lin("lenet.fc1 400->120", B * 2, 400, 120)
    lin("fc 512->10", B * 2, 512, 10)
    lin("fc 4096->4096", B * 2, 4096, 4096)
    c.append(("unet.up 128->64 k2 s2 16^2", "conv_transpose2d", [_f(B // 4, 128, 16, 16), _f(128, 64, 2, 2), _f(64)],
              {"stride": [2, 2]}, [0, 1, 2]))
    c.append(("deconv 32->16 k3 s2 p1 op1", "conv_transpose2d", [_f(B // 4, 32, 16, 16), _f(32, 16, 3, 3), _f(16)],
              {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, [0, 1, 2]))
    c.append(("lrn size 5", "lrn", [_f(B, 64, 16, 16)], {"size": 5, "alpha": 1e-3, "beta": 0.75, "k": 2.0}, [0]))
    c.append(("lrn size 4 (native)", "lrn", [_f(B, 64, 16, 16)], {"size": 4, "alpha": 1e-3, "beta": 0.75, "k": 2.0}, [0]))
    c.append(("concat 64+24 / split", "concat", [_f(B, 64, 16, 16), _f(B, 24, 16, 16)], {"axis": 1}, [0, 1]))
    c.append(("upsample x2", "upsample_nearest2d", [_f(B, 64, 16, 16)], {"scale": [2, 2]}, [0]))
    for op in ("relu", "sigmoid", "tanh", "leaky_relu"):
        c.append((op, op, [_f(B, 64, 16, 16)], {}, [0]))
    c.append(("add", "add", [_f(B, 64, 16, 16), _f(B, 64, 16, 16)], {}, [0, 1]))
    c.append(("dropout p0.5", "dropout", [_f(B, 4096)], {"p": 0.5}, [0]))
    # not in this change's files (batch norm, pooling, losses, softmax): audited for the table only
    c.append(("[bn] batch_norm train", "batch_norm", [_f(B, 64, 16, 16)] + [_f(64)] * 4,
              {"training": 1, "eps": 1e-5, "momentum": 0.1}, [0, 1, 2]))
    c.append(("[bn] batch_norm train 2x16x32^2 (U-Net)", "batch_norm", [_f(2, 16, 32, 32)] + [_f(16)] * 4,
              {"training": 1, "eps": 1e-5, "momentum": 0.1}, [0, 1, 2]))
    c.append(("[pool] max_pool2d 2x2", "max_pool2d", [_f(B, 64, 16, 16)], {"kernel": [2, 2], "stride": [2, 2],
                                                                            "training": 1}, [0]))
    c.append(("[pool] avg_pool2d 2x2", "avg_pool2d", [_f(B, 64, 16, 16)], {"kernel": [2, 2], "stride": [2, 2]}, [0]))
    c.append(("[pool] global_avg_pool", "global_avg_pool", [_f(B, 512, 4, 4)], {}, [0]))
    c.append(("[pool] adaptive_avg_pool2d 5->3", "adaptive_avg_pool2d", [_f(B, 64, 5, 5)], {"output": [3, 3]}, [0]))
    c.append(("[softmax] softmax", "softmax", [_f(B * 2, 1000)], {"axis": 1}, [0]))
    return c


def _arrays(shapes, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _, s in shapes:
        a = rng.standard_normal(s).astype(np.float32)
        if len(s) == 1:  # BN gamma / running var positive
            a = np.abs(a) + 0.5
        out.append(a)
    return out


LAYOUT_CAPABLE = ("conv2d", "conv_transpose2d", "linear")  # choose their activation layouts themselves


def run_op(op, arrays, attrs, wrt, threads, deterministic=True, layout="nChw16c", run_threads=None, seed=1):
    """Forward output and the gradients w.r.t. inputs `wrt` of one grad-mode session compiled at `threads`
    threads (run at `run_threads`, default the same). Ops that keep their input's layout (eltwise, pooling, BN,
    lrn, concat, upsample, dropout) would see plain graph inputs and run plain: each 4-D input goes through an
    identity 1x1 convolution first, and a 4-D output through another (exact both ways: y = x, dx = dy), so they
    run in the session's layout, forward and backward."""
    cn.set_num_threads(threads)
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(a.shape), "float32") for i, a in enumerate(arrays)]
    feeds = list(arrays)
    srcs = list(ids)
    if op not in LAYOUT_CAPABLE and layout != "plain":
        for i, a in enumerate(arrays):
            if a.ndim == 4:
                c = a.shape[1]
                eye = g.add_input(f"eye{i}", [c, c, 1, 1], "float32")
                feeds.append(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
                srcs[i] = g.add_node("conv2d", [ids[i], eye], {}, f"id{i}")[0]
    outs = g.add_node(op, srcs, attrs, "node")[:1]
    wrap = op not in LAYOUT_CAPABLE and layout != "plain"
    if wrap and len(g.shape(outs[0])) == 4:  # and dy reaches the op's backward in that layout too
        c = g.shape(outs[0])[1]
        eye = g.add_input("eye_out", [c, c, 1, 1], "float32")
        feeds.append(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))
        outs = g.add_node("conv2d", [outs[0], eye], {}, "id_out")
    g.set_outputs(outs)
    s = _core.Session(g, _core.ParamStore([]), "grad", layout=layout, grad_of=outs[:1], wrt=[ids[i] for i in wrt],
                      deterministic=deterministic)
    shape = g.shape(outs[0])
    dy = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    cn.set_num_threads(run_threads or threads)
    s.run(feeds + [dy])
    return [s.fetch(0)] + [s.fetch(1 + j) for j in range(len(wrt))]


def _rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def audit(args):
    threads = [int(t) for t in args.threads.split(",")]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.mode]
    print(f"audit: batch {args.batch}, threads {threads}, layout {args.layout}; cells: thread counts whose result "
          f"differs bitwise from {threads[0]} thread(s) [max rel diff], '=' all equal")
    rows = []
    for name, op, shapes, attrs, wrt in configs(args.batch):
        if args.only and not any(o in name or o == op for o in args.only.split(",")):
            continue
        arrays = _arrays(shapes, 0)
        labels = ["y"] + [f"d{'x w b'.split()[i] if op in ('conv2d', 'linear', 'conv_transpose2d') else 'in' + str(i)}"
                          for i in wrt]
        for det in modes:
            t0 = time.perf_counter()
            res = {t: run_op(op, arrays, attrs, wrt, t, det, args.layout) for t in threads}
            cells = []
            for k, lab in enumerate(labels):
                bad = [(t, _rel(res[t][k], res[threads[0]][k])) for t in threads[1:]
                       if not np.array_equal(res[t][k], res[threads[0]][k])]
                cells.append(f"{lab}: " + ("=" if not bad else ",".join(str(t) for t, _ in bad) +
                                          f" [{max(r for _, r in bad):.1e}]"))
            rows.append((name, det, cells))
            print(f"{name:40s} det={int(det)}  " + "  ".join(cells) + f"   ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
    if args.only:
        return
    print("\ncompiled at one thread count, run at another (vs compiled and run at the run count):")
    for name, op, shapes, attrs, wrt in configs(args.batch):
        if not any(k in name for k in ("layer1", "layer4", "fc 512", "lenet.conv2", "unet")):
            continue
        arrays = _arrays(shapes, 0)
        for det in modes:
            for ct, rt in ((1, 2), (2, 1), (4, 2)):
                ref = run_op(op, arrays, attrs, wrt, rt, det, args.layout)
                got = run_op(op, arrays, attrs, wrt, ct, det, args.layout, run_threads=rt)
                same = [np.array_equal(a, b) for a, b in zip(got, ref)]
                rel = max(_rel(a, b) for a, b in zip(got, ref))
                print(f"{name:40s} det={int(det)} compiled {ct} run {rt}: "
                      + ("bitwise equal" if all(same) else f"differs (max rel {rel:.1e})"), flush=True)


# ----------------------------------------------------------------------------------------------------- cost
def _workload(name, batch):
    cn.manual_seed(0)
    rng = np.random.default_rng(0)
    if name == "lenet5":
        m = cn.models.lenet5()
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    else:
        m = cn.models.resnet18(num_classes=10, cifar=True)
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    return m, x, y


GROUPS = [("conv fwd", ("conv2d", "fused_conv2d")), ("conv grad_data", ("conv2d_grad_data",)),
          ("conv grad_weights", ("conv2d_grad_weights",)),
          ("linear", ("linear", "linear_grad_data", "linear_grad_weights"))]


def cost(args):
    """Step time deterministic=False vs True, alternating A B B A per round (so neither is favoured by drift),
    median and minimum of the rounds; then a per-node profile of both (conv / linear groups, the fastest of
    2 x rounds profiled steps each)."""
    cn.set_num_threads(args.threads)
    print(f"cost: {args.threads} threads, batch {args.batch}, {args.rounds} rounds (A B B A); CPU: {_cpu_name()}")
    for wl in args.workloads.split(","):
        sess = {}
        for det in (False, True):
            m, x, y = _workload(wl, args.batch)
            sess[det] = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9),
                                  deterministic=det)
            sess[det].step(x, y)  # warm-up
        reps = 50 if wl == "lenet5" else 2
        times = {False: [], True: []}
        cpu = {False: [], True: []}  # process CPU time per step (all threads): the work, less sensitive to load

        def timed(det):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                sess[det].step(x, y)
            times[det].append((time.perf_counter() - t0) / reps * 1e3)
            cpu[det].append((time.process_time() - c0) / reps * 1e3)

        for _ in range(args.rounds):
            for det in (False, True, True, False):
                timed(det)
        med = {d: statistics.median(v) for d, v in times.items()}
        low = {d: min(v) for d, v in times.items()}
        # per round, (B + B) / (A + A) of the A B B A quadruple: robust to load that drifts between rounds
        paired = statistics.median((times[True][2 * i] + times[True][2 * i + 1]) /
                                   (times[False][2 * i] + times[False][2 * i + 1]) for i in range(args.rounds))
        print(f"{wl} b{args.batch}: deterministic=False median {med[False]:.2f} ms (min {low[False]:.2f}), "
              f"True median {med[True]:.2f} ms (min {low[True]:.2f}) per step: x{med[True] / med[False]:.3f} "
              f"by medians, x{low[True] / low[False]:.3f} by minima, x{paired:.3f} median of paired rounds; "
              f"CPU time per step median {statistics.median(cpu[False]):.2f} -> {statistics.median(cpu[True]):.2f} ms",
              flush=True)
        if not args.profile:
            continue
        # per step and node group, the smallest time over the profiled steps (alternating the two sessions)
        groups = {det: {g: float("inf") for g in [g for g, _ in GROUPS] + ["other", "total"]} for det in (False, True)}
        for det in (False, True):
            sess[det].profile(reset=True)
        for _ in range(args.rounds * 2):
            for det in (False, True):
                sess[det].step(x, y)
                acc = {g: 0.0 for g in groups[det]}
                for r in sess[det].profile(reset=True):
                    g = next((g for g, ops in GROUPS if r["op"] in ops), "other")
                    acc[g] += r["ms"] * r["calls"]
                    acc["total"] += r["ms"] * r["calls"]
                for g in acc:
                    groups[det][g] = min(groups[det][g], acc[g])
        print("  profile, fastest step per node group, ms: " + "; ".join(
            f"{g} {groups[False][g]:.2f} -> {groups[True][g]:.2f}" for g in groups[False]), flush=True)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {cn._core.get_num_threads()} threads"
    except OSError:
        pass
    return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audit")
    a.add_argument("--batch", type=int, default=32)
    a.add_argument("--threads", default="1,2,3,4")
    a.add_argument("--only", default="")
    a.add_argument("--mode", default="both", choices=["both", "off", "on"])
    a.add_argument("--layout", default="nChw16c")
    c = sub.add_parser("cost")
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--profile", action="store_true", help="also time the conv / linear node groups")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--batch", type=int, default=64)
    c.add_argument("--workloads", default="lenet5,resnet18cifar")
    args = p.parse_args(argv)
    (audit if args.cmd == "audit" else cost)(args)


if __name__ == "__main__":
    sys.exit(main())
