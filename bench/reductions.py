"""Per-node times of the reduction kernels (global/adaptive average pooling, batch norm training forward and
backward, softmax, the losses) on ResNet-50-like shapes, in the given layouts.

    python bench/reductions.py [--runs 30] [--only batch_norm] [--layouts nChw16c,plain,nhwc] [--threads N]
                               [--stat median|min] [--json out.json]
    python bench/reductions.py --resnet50 6 [--threads N]   # the same ops inside a ResNet-50 b16 training step

Each case is a one-node graph compiled in grad mode (forward and backward nodes, reorders at the plain graph
edges) with an explicit layout (for a layout other than plain, a depthwise 1x1 convolution in front puts the op's
input in that layout: a graph input is plain); every run is timed per node by `sess.profile()` and the median over `--runs`
runs (after 3 warm-ups; --stat min: the fastest run) is printed in ms, for the reduction's own nodes only (reorders are left out). To
compare two builds, run this script under each in alternation and compare the medians.
"""
import argparse
import json
import sys

import numpy as np

from cnnnative import _core

rng = np.random.default_rng(0)


def _graph(op, shapes, attrs, dtypes=None, layout="plain"):
    g = _core.Graph()
    dtypes = dtypes or ["float32"] * len(shapes)
    ids = [g.add_input(f"in{i}", list(s), dt) for i, (s, dt) in enumerate(zip(shapes, dtypes))]
    first = ids[0]
    if layout != "plain" and len(shapes[0]) == 4:
        # a depthwise 1x1 convolution in front, so the op's input is in the session's layout (a graph input is plain)
        C = shapes[0][1]
        w = g.add_input("dw", [C, 1, 1, 1])
        first = g.add_node("conv2d", [first, w], {"groups": C}, "dw")[0]
    outs = g.add_node(op, [first] + ids[1:], attrs, "node")
    g.set_outputs(outs)
    return g, ids, outs


def case(op, shapes, attrs, wrt, dtypes=None, layout="plain", feeds=None, grad_of=(0,)):
    g, ids, outs = _graph(op, shapes, attrs, dtypes, layout)
    if wrt:
        s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=[outs[k] for k in grad_of],
                          wrt=[ids[i] for i in wrt], layout=layout)
    else:
        s = _core.Session(g, _core.ParamStore([]), "infer", layout=layout)
    feeds = feeds or [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
    if wrt:
        info = s.feeds
        feeds = feeds + [rng.standard_normal(f[1]).astype(np.float32) for f in info[len(feeds):]]
    elif len(s.feeds) > len(feeds):
        feeds = feeds + [rng.standard_normal(f[1]).astype(np.float32) for f in s.feeds[len(feeds):]]
    return s, feeds


def time_case(s, feeds, runs, stat="median"):
    for _ in range(3):
        s.run(feeds)
    s.reset_profile()
    per = {}
    for _ in range(runs):
        s.run(feeds)
        for r in s.profile():
            if r["op"] == "reorder" or r["op"].startswith("conv2d"):
                continue
            per.setdefault(r["op"], []).append(r["total_ms"] / max(r["calls"], 1))
        s.reset_profile()
    f = np.min if stat == "min" else np.median
    return {op: float(f(v)) for op, v in per.items()}


def cases(layouts, only):
    bn_attrs = {"training": 1, "track_running_stats": 0, "eps": 1e-5}
    out = []
    for lay in layouts:
        for shp in [(16, 2048, 7, 7), (16, 512, 7, 7)]:
            out.append((f"global_avg_pool {list(shp)} {lay}", lambda shp=shp, lay=lay: case(
                "global_avg_pool", [shp], {}, [0], layout=lay)))
        for shp in [(16, 256, 56, 56), (16, 64, 112, 112), (16, 1024, 14, 14), (16, 2048, 7, 7)]:
            C = shp[1]
            out.append((f"batch_norm train {list(shp)} {lay}", lambda shp=shp, C=C, lay=lay: case(
                "batch_norm", [shp, (C,), (C,), (C,), (C,)], bn_attrs, [0, 1, 2], layout=lay)))
        out.append((f"adaptive_avg_pool2d 7->3 [16,512,7,7] {lay}", lambda lay=lay: case(
            "adaptive_avg_pool2d", [(16, 512, 7, 7)], {"output": [3, 3]}, [0], layout=lay)))
        out.append((f"avg_pool2d 7x7 [16,2048,7,7] {lay}", lambda lay=lay: case(
            "avg_pool2d", [(16, 2048, 7, 7)], {"kernel": [7, 7]}, [0], layout=lay)))
        out.append((f"avg_pool2d 8x8 [16,2048,8,8] {lay}", lambda lay=lay: case(
            "avg_pool2d", [(16, 2048, 8, 8)], {"kernel": [8, 8]}, [0], layout=lay)))
    out.append(("softmax [16,1000]", lambda: case("softmax", [(16, 1000)], {}, [0])))
    out.append(("softmax [256,1000]", lambda: case("softmax", [(256, 1000)], {}, [0])))
    lab = lambda n: rng.integers(0, 1000, n).astype(np.int32)  # noqa: E731
    for n in (16, 256):
        out.append((f"softmax_cross_entropy [{n},1000]", lambda n=n: case(
            "softmax_cross_entropy", [(n, 1000), (n,)], {}, [0], dtypes=["float32", "int32"],
            feeds=[rng.standard_normal((n, 1000)).astype(np.float32), lab(n)])))
    for op in ("mse_loss", "bce_with_logits"):
        out.append((f"{op} [16,3,224,224]", lambda op=op: case(op, [(16, 3, 224, 224)] * 2, {}, [0])))
    return [(n, f) for n, f in out if not only or any(o in n for o in only.split(","))]


def resnet50_step(steps):
    """ResNet-50 b16 training: per-node minimum over `steps` steps, summed per reduction op; the median step."""
    import time

    import cnnnative as cn
    m = cn.models.get_model("resnet50", seed=0, num_classes=1000)
    shape = (16, 3, 224, 224)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 1000, 16).astype(np.int32)
    s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9))
    for _ in range(2):
        s.step(x, y)
    s.profile(reset=True)
    best, times = {}, []
    for _ in range(steps):
        t = time.perf_counter()
        s.step(x, y)
        times.append(time.perf_counter() - t)
        for r in s.profile(reset=True):
            k = (r["op"], r["name"])
            best[k] = min(best.get(k, 1e9), r["ms"])
    per_op = {}
    for (op, _), ms in best.items():
        if op.startswith(("batch_norm", "global_avg_pool", "softmax")):
            per_op[op] = per_op.get(op, 0.0) + ms
    per_op["step (median)"] = 1000 * float(np.median(times))
    return {"resnet50_train_b16": per_op}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", default="")
    ap.add_argument("--layouts", default="nChw16c,plain,nhwc")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="per-node statistic over the runs (min: least disturbed by other processes)")
    ap.add_argument("--resnet50", type=int, default=0, metavar="STEPS",
                    help="instead: a ResNet-50 b16 training step, per-node minimum over STEPS steps, summed per op")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.threads:
        _core.set_num_threads(a.threads)
    res = {}
    if a.resnet50:
        res = resnet50_step(a.resnet50)
        for name, t in res.items():
            print(name, "  ".join(f"{op} {ms:.1f}" for op, ms in sorted(t.items())))
    for name, make in ([] if a.resnet50 else cases(a.layouts.split(","), a.only)):
        s, feeds = make()
        t = time_case(s, feeds, a.runs, a.stat)
        res[name] = t
        print(f"{name:<48}" + "  ".join(f"{op} {ms:.3f}" for op, ms in sorted(t.items())), flush=True)
        del s
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
