"""Per-node roofline of an inference workload, with the kernels of both engines side by side.

    python bench/roofline.py [--workload resnet50_infer_mb1] [--rounds 4] [--runs 15] [--target 0.8]

For each convolution and linear node of the workload (the benchmark suite's definition, same weights and input in
both engines) it prints:
- the node's work: MFLOP (direct-convolution count), the bytes it must move at least (its weights once, its input
  and output activations once), and the roofline bound max(FLOP / FMA peak, bytes / bandwidth), with the FMA peak
  (`_core.fma_peak_gflops`, the best of 5) and the streaming-read bandwidth of a buffer the size of the model's
  weights (`_core.read_bandwidth_gbs`) measured in the same process, on as many threads as the engines use. FLOPs
  are direct convolution's: a Winograd kernel multiplies less and can take less than the bound (over 100 %), so the
  floor is that of direct (im2col / GEMM-like) kernels;
- what cnnnative's three kernel families take on it (`sess.profile()` of three compiles, as bench/conv_oracle.py:
  the default, oneDNN's direct kernels in nChw16c only, oneDNN's nhwc brgconv), and what ONNX Runtime's kernel
  takes (its own profiler, `SessionOptions.enable_profiling`, on the model the suite exports; node names mapped to
  the PyTorch module names, torchvision's ResNet naming);
- the fastest of all four per node, and its share of the node's roofline bound;
- for the --cold N nodes with the most weights: each alone, with its weights in cache and after a buffer several
  times the weights was read (what the hardware delivers when a run streams the weights from memory; the roofline
  assumes loads that overlap the FMAs perfectly).

Then the sums: the roofline floor, each engine's nodes, and the per-node best over both engines' kernels, against
the target ratio times ORT's whole run (timed without the profiler, alternating with cnnnative's). Where even the
per-node best of both engines sums to more than the target, choosing among the kernels that exist on this CPU
cannot reach it; the share of the roofline the target needs says how far beyond today's kernels it lies.
Inference workloads with torchvision-style names (ResNets) only; ORT nodes whose names do not map are summed as
"unmatched". Prints markdown.
"""
import argparse
import collections
import json
import os
import re
import statistics
import time

import numpy as np

import cnnnative as cn
from cnnnative import _core
from cnnnative.bench.suite import _ONNX_FILES, _build, _engines, _spec, _time

CONFIGS = {"default": dict(winograd=True, layout="auto"), "direct": dict(winograd=False, layout="auto"),
           "nhwc": dict(winograd=False, layout="nhwc")}


def layer_shapes(twin, x):
    """{module name: (input shape, output shape, weight elements, MFLOP)} of the twin's Conv2d and Linear modules."""
    import torch
    out, hooks = {}, []
    for name, m in twin.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            def hook(mod, inp, outp, name=name):
                w = mod.weight
                if isinstance(mod, torch.nn.Conv2d):
                    k = w.shape[1] * w.shape[2] * w.shape[3]  # per output element: Cin/groups * kh * kw MACs
                else:
                    k = w.shape[1]
                out[name] = (tuple(inp[0].shape), tuple(outp.shape), w.numel(), 2 * outp.numel() * k / 1e6)
            hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        twin.eval()
        twin(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return out


def ort_node(name):
    """ORT profiler node name -> PyTorch module name, for torchvision ResNets exported by torch.onnx. Scopes are
    the modules' local names, a Sequential's child prefixed by the Sequential's ('/layer4/layer4.0/downsample/
    downsample.0/Conv'). The fused Conv(+BN)(+Add)+Relu node is named after its last output
    ('/layer4/layer4.0/relu_1/Relu_output_0_nchwc'): a block's relu, relu_1, relu_2 follow its conv1, conv2, conv3;
    the stem's relu follows conv1."""
    n = re.sub(r"_kernel_time$", "", name)
    n = re.sub(r"(_output_\d+)?(_nchwc)?$", "", n)
    scopes = [p for p in n.split("/") if p]
    if len(scopes) < 2:
        return None
    op, path, prev = scopes[-1], [], None
    for c in scopes[:-1]:
        path.append(c[len(prev) + 1:] if prev and c.startswith(prev + ".") else c)
        prev = c
    if op.startswith("Relu") and re.fullmatch(r"relu(_\d+)?", path[-1]):
        i = int(path[-1].split("_")[1]) if "_" in path[-1] else 0
        return ".".join(path[:-1] + [f"conv{i + 1}"])
    if op.startswith(("Conv", "Gemm", "MatMul")):
        return ".".join(path)
    return None


def ort_profile(path, x, threads, runs):
    """{node: ms per run} from ORT's profiler over `runs` runs (after 5 untimed; the median of each node's last
    `runs` calls), and ms per run of the nodes that do not map."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_profiling = True
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(5):
        s.run(None, {"x": x})
    for _ in range(runs):
        s.run(None, {"x": x})
    f = s.end_profiling()
    with open(f) as fh:
        events = json.load(fh)
    os.unlink(f)
    per = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["name"]].append(e["dur"] / 1e3)
    nodes, unmatched = collections.defaultdict(float), 0.0
    for name, durs in per.items():
        ms = statistics.median(durs[-runs:])
        key = ort_node(name)
        if key is None:
            unmatched += ms
        else:
            nodes[key] += ms
    return dict(nodes), unmatched


def cold_check(twin, shapes, names, flush_bytes, runs=30):
    """{node: (ms with its weights in cache, ms with them flushed)}: the node alone (a one-layer cnnnative model of
    the same geometry, default compile), timed back to back and after reading a buffer of `flush_bytes` before each
    run (the median of `runs`): what streaming the weights from memory adds to it."""
    import torch
    mods = dict(twin.named_modules())
    flush = np.ones(flush_bytes // 4, dtype=np.float32)
    out = {}
    for name in names:
        m = mods[name]
        if isinstance(m, torch.nn.Conv2d):
            layer = cn.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                 bias=m.bias is not None)
        else:
            layer = cn.nn.Linear(m.in_features, m.out_features)
        shape = shapes[name][0]
        sess = cn.nn.Sequential(layer).compile(shape, mode="infer")
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(5):
            sess.run(x)
        res = []
        for cold in (False, True):
            ts = []
            for _ in range(runs):
                if cold:
                    flush.sum()
                t0 = time.perf_counter()
                sess.run(x)
                ts.append((time.perf_counter() - t0) * 1e3)
            res.append(statistics.median(ts))
        out[name] = tuple(res)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="resnet50_infer_mb1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--target", type=float, default=0.8, help="the target ratio against ORT's whole run")
    ap.add_argument("--cold", type=int, default=4, metavar="N",
                    help="time the N nodes with the most weights alone, with their weights in cache and flushed")
    a = ap.parse_args(argv)
    _, _, _, _, mode, ckw = _spec(a.workload)
    if mode != "infer":
        raise SystemExit("roofline: inference workloads only")
    threads = cn.get_num_threads()
    engines, _, _, _, _ = _engines(a.workload, threads)
    if "onnxruntime" not in engines:
        raise SystemExit("roofline: needs PyTorch (the twin and its ONNX export) and onnxruntime")
    model, twin, x, _, _ = _build(a.workload)
    shapes = layer_shapes(twin, x)
    weight_bytes = sum(4 * v[2] for v in shapes.values())
    peak = max(_core.fma_peak_gflops(20_000_000)[0] for _ in range(5))
    bw = _core.read_bandwidth_gbs(max(weight_bytes, 64 << 20))
    flush_bytes = max(4 * weight_bytes, 256 << 20)  # several times the weights: past what the caches keep
    bw_mem = _core.read_bandwidth_gbs(flush_bytes, 3)

    # whole runs, alternating (medians)
    whole = _time({k: engines[k] for k in ("cnnnative", "onnxruntime")}, a.rounds, a.runs)
    cn_ms, ort_ms = (statistics.median(whole[k]) for k in ("cnnnative", "onnxruntime"))

    # cnnnative's three kernel families, per node (the best round)
    sess = {k: model.compile(x.shape, mode="infer", **v, **ckw) for k, v in CONFIGS.items()}
    node = {k: collections.defaultdict(list) for k in CONFIGS}
    other_cn = []
    for _ in range(a.rounds):
        for k, s in sess.items():
            for _ in range(5):
                s.run(x)
            s.profile(reset=True)
            for _ in range(a.runs):
                s.run(x)
            rest = 0.0
            for r in s.profile():
                if r["name"] in shapes:
                    node[k][r["name"]].append(r["ms"])
                elif k == "default":
                    rest += r["ms"] * r["calls"] / a.runs
            if k == "default":
                other_cn.append(rest)
    ort_nodes, ort_unmatched = ort_profile(_ONNX_FILES[a.workload], x, threads, a.runs * a.rounds)

    print(f"### {a.workload}: per-node roofline, cnnnative's kernels and ONNX Runtime's ({threads} threads)\n")
    print(f"FMA peak {peak:.0f} GFLOP/s and streaming-read bandwidth {bw:.0f} GB/s ({weight_bytes / 2**20:.0f} MiB of "
          f"weights; a {max(weight_bytes, 64 << 20) / 2**20:.0f} MiB buffer; {bw_mem:.0f} GB/s over "
          f"{flush_bytes / 2**20:.0f} MiB), measured in this process. Whole "
          f"runs (alternating, medians): cnnnative {cn_ms:.2f} ms, ONNX Runtime {ort_ms:.2f} ms, ratio "
          f"{cn_ms / ort_ms:.2f}; the target {a.target} is {a.target * ort_ms:.2f} ms.\n")
    print("| node | MFLOP | MB moved | bound | roofline ms | default | direct | nhwc | ORT | best | of roofline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tot = collections.Counter()
    for name, (ishape, oshape, wn, mflop) in shapes.items():
        mb = (4 * wn + 4 * int(np.prod(ishape)) + 4 * int(np.prod(oshape))) / 1e6
        t_c, t_m = mflop / peak, mb / bw
        roof = max(t_c, t_m)
        ours = {k: min(node[k][name]) if node[k].get(name) else float("nan") for k in CONFIGS}
        o = ort_nodes.get(name, float("nan"))
        cands = [v for v in list(ours.values()) + [o] if v == v]
        best = min(cands) if cands else float("nan")
        tot["flops"] += mflop
        tot["roof"] += roof
        tot["ours"] += ours["default"]
        tot["ours_best"] += min(v for v in ours.values() if v == v)
        tot["ort"] += o if o == o else 0.0
        tot["best"] += best
        tot["mem_bound"] += t_m > t_c
        print(f"| {name} | {mflop:.0f} | {mb:.1f} | {'memory' if t_m > t_c else 'compute'} | {roof:.3f} | "
              + " | ".join(f"{ours[k]:.3f}" for k in CONFIGS)
              + f" | {o:.3f} | {best:.3f} | {roof / best * 100:.0f} % |")
    other = statistics.median(other_cn)
    floor = tot["roof"] + other
    best_run = tot["best"] + min(other, ort_unmatched)
    print(f"\n{len(shapes)} convolution and linear nodes, {tot['flops']:,.0f} MFLOP; {tot['mem_bound']} of them bound "
          f"by memory at this bandwidth.\n")
    print("| sum over the nodes | ms | × ORT's whole run |")
    print("|---|---|---|")
    for label, v in (("roofline floor (every node at its bound)", tot["roof"]),
                     ("cnnnative, default compile", tot["ours"]),
                     ("cnnnative, the best of its three kernel families per node", tot["ours_best"]),
                     ("ONNX Runtime", tot["ort"]),
                     ("the best of all four per node", tot["best"])):
        print(f"| {label} | {v:.2f} | {v / ort_ms:.2f} |")
    print(f"\nOther nodes: cnnnative {other:.2f} ms (pooling, the rest), ONNX Runtime {ort_unmatched:.2f} ms (pooling, "
          f"layout reorders, the rest). With the lesser of the two, the per-node best of both engines makes a run of "
          f"{best_run:.2f} ms = {best_run / ort_ms:.2f}× ORT's; the roofline floor {floor:.2f} ms = "
          f"{floor / ort_ms:.2f}×. The target {a.target}× ({a.target * ort_ms:.2f} ms) needs the nodes at "
          f"{tot['roof'] / (a.target * ort_ms - other) * 100:.0f} % of their roofline bound on average (time-weighted); "
          f"the per-node best of both engines reaches {tot['roof'] / tot['best'] * 100:.0f} %.")
    if a.cold > 0:
        names = sorted(shapes, key=lambda n: -shapes[n][2])[:a.cold]
        cold = cold_check(twin, shapes, names, flush_bytes)
        print(f"\nThe {len(names)} nodes with the most weights, alone (a one-layer model of the same geometry), with "
              f"their weights in cache and after reading {flush_bytes / 2**20:.0f} MiB before each run:\n")
        print("| node | weights MiB | alone, in cache | alone, flushed | in the network (default) | roofline ms |")
        print("|---|---|---|---|---|---|")
        for n in names:
            ishape, oshape, wn, mflop = shapes[n]
            nd = min(node["default"][n]) if node["default"].get(n) else float("nan")
            roof = max(mflop / peak, (4 * wn + 4 * int(np.prod(ishape)) + 4 * int(np.prod(oshape))) / 1e6 / bw)
            print(f"| {n} | {4 * wn / 2**20:.1f} | {cold[n][0]:.3f} | {cold[n][1]:.3f} | {nd:.3f} | {roof:.3f} |")


if __name__ == "__main__":
    main()
