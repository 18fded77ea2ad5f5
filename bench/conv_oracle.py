"""The best convolution kernel per layer, an upper bound on what choosing kernels per node could give.

    python bench/conv_oracle.py [--workload resnet50_infer_mb1] [--rounds 4] [--runs 15]

Compiles the workload (the benchmark suite's definition) three ways: the default (Winograd where it qualifies,
oneDNN's direct kernels in nChw16c elsewhere), oneDNN's direct kernels in nChw16c only (winograd=False), and
oneDNN's kernels in nhwc (brgconv). Times each (alternating rounds, best round), profiles every node, and sums,
per convolution node, the fastest of the three: what a per-node choice among today's kernels would reach, without
counting the reorders between layouts such a choice adds. Prints markdown.
"""
import argparse
import time

import cnnnative as cn
from cnnnative.bench.suite import _build, _spec

CONFIGS = {"default (Winograd, nChw16c direct)": dict(winograd=True, layout="auto"),
           "nChw16c direct only": dict(winograd=False, layout="auto"),
           "nhwc (brgconv)": dict(winograd=False, layout="nhwc")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="resnet50_infer_mb1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args(argv)
    _, _, _, _, mode, ckw = _spec(a.workload)
    if mode != "infer":
        raise SystemExit("conv_oracle: inference workloads only")
    model, _, x, _, _ = _build(a.workload)
    sess = {k: model.compile(x.shape, mode="infer", **v, **ckw) for k, v in CONFIGS.items()}
    total = {k: [] for k in CONFIGS}
    node = {k: {} for k in CONFIGS}
    for _ in range(a.rounds):
        for k, s in sess.items():
            for _ in range(5):
                s.run(x)
            s.profile(reset=True)
            t = time.perf_counter()
            for _ in range(a.runs):
                s.run(x)
            total[k].append((time.perf_counter() - t) / a.runs * 1e3)
            for r in s.profile():
                node[k].setdefault((r["name"], r["op"]), []).append(r["ms"])
    default = next(iter(CONFIGS))
    convs = [n for n in node[default] if n[1] in ("conv2d", "fused_conv2d")]
    best = {n: min(min(node[k].get(n, [float("inf")])) for k in CONFIGS) for n in convs}
    conv_default = sum(min(node[default][n]) for n in convs)
    other = sum(min(v) for n, v in node[default].items() if n not in convs)
    print(f"### {a.workload}: the best kernel per convolution ({cn.get_num_threads()} threads)\n")
    print("| compile | ms per run (best round) | convolutions, sum of nodes |")
    print("|---|---|---|")
    for k in CONFIGS:
        c = sum(min(node[k].get(n, [float("nan")])) for n in convs)
        print(f"| {k} | {min(total[k]):.2f} | {c:.2f} |")
    print(f"| best of the three per convolution | - | {sum(best.values()):.2f} |")
    print(f"\nOther nodes (default compile): {other:.2f} ms. Default convolutions {conv_default:.2f} ms; the per-node best "
          f"{sum(best.values()):.2f} ms; with the other nodes {sum(best.values()) + other:.2f} ms per run.")
    wins = {k: sum(1 for n in convs if min(node[k].get(n, [float('inf')])) == best[n]) for k in CONFIGS}
    print("Fastest per convolution: " + ", ".join(f"{k} {v}" for k, v in wins.items()) + f" (of {len(convs)}).")


if __name__ == "__main__":
    main()
