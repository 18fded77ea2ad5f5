"""Per-layer GFLOP/s and % of the measured peak for ResNet-50 (the performance issue's per-layer table).

    python bench/resnet50_layers.py [--mode infer|train] [--batch 16] [--dtype float32|bfloat16] [--runs 5]
                                    [--no-winograd]

Runs the compiled session `--runs` times after a warm-up, reads `sess.profile()` (per node: ms per call and
FLOPs) and prints a markdown table of every convolution node (forward; in training also grad_data and
grad_weights) with GFLOP/s and % of the peak measured by the FMA probe (float32) or the AVX512-BF16
dot-product probe (bfloat16), then the time-weighted totals. GFLOP/s count direct-convolution FLOPs; the
3x3 stride-1 layers run as Winograd F(4x4, 3x3) by default (fewer multiplies, so above 100 % of the peak);
--no-winograd times oneDNN's direct kernels for every layer.
"""
import argparse

import numpy as np

import cnnnative as cn
from cnnnative import _core


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["infer", "train"], default="infer")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--no-winograd", action="store_true")
    a = ap.parse_args()
    shape = (a.batch, 3, 224, 224)
    m = cn.models.get_model(a.model, seed=0, num_classes=1000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 1000, a.batch).astype(np.int32)
    if a.mode == "infer":
        s = m.compile(shape, dtype=a.dtype, winograd=not a.no_winograd)
        fn = lambda: s.run(x)  # noqa: E731
    else:
        s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), winograd=not a.no_winograd)
        fn = lambda: s.step(x, y)  # noqa: E731
    fn()
    s.profile(reset=True)
    if a.dtype == "bfloat16":
        peak = max(_core.bf16_peak_gflops(20_000_000) for _ in range(3))
        pname = "AVX512-BF16 dot-product peak"
    else:
        peak = max(_core.fma_peak_gflops(20_000_000)[0] for _ in range(3))
        pname = "FMA peak"
    for _ in range(a.runs):
        fn()
    rows = [r for r in s.profile() if r["gflops"] and "conv" in r["op"]]
    rows.sort(key=lambda r: r["name"])
    print(f"{a.model} {a.mode} batch {a.batch} {a.dtype}{' direct' if a.no_winograd else ''}, {cn.get_num_threads()} threads, "
          f"{a.runs} runs; measured {pname} {peak:.0f} GFLOP/s")
    print()
    print("| node | op | ms | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['op']} | {r['ms']:.2f} | {r['gflops']:.0f} | {r['gflops'] / peak * 100:.0f} |")
    print()
    total_ms = sum(r["ms"] for r in rows)
    total_gf = sum(r["gflops"] * r["ms"] for r in rows)  # GFLOP/s * ms = MFLOP
    all_ms = sum(r["ms"] * r["calls"] for r in s.profile()) / max(1, a.runs)
    n85 = sum(1 for r in rows if r["gflops"] >= 0.85 * peak)
    big, acc = [], 0.0  # the largest nodes holding 90 % of the convolution FLOPs
    for r in sorted(rows, key=lambda r: -r["gflops"] * r["ms"]):
        if acc >= 0.9 * total_gf:
            break
        big.append(r)
        acc += r["gflops"] * r["ms"]
    big85 = sum(1 for r in big if r["gflops"] >= 0.85 * peak)
    print(f"convolutions: {total_ms:.1f} ms of {all_ms:.1f} ms per run, time-weighted "
          f"{total_gf / total_ms:.0f} GFLOP/s = {total_gf / total_ms / peak * 100:.1f} % of peak; "
          f"{n85}/{len(rows)} nodes at >= 85 %; of the largest nodes holding 90 % of the FLOPs {big85}/{len(big)}")


if __name__ == "__main__":
    main()
