"""One LeNet-5 SGD-momentum training step as whole batches on a fixed thread count, per node: by default the piece
that one worker of the b64 step computes in pieces (32 samples, one thread), which is what a kernel change to that
step moves.

    python bench/piece_profile.py [--batch 32] [--threads 1] [--steps 500] [--warmup 200] [--runs 1] [--top 30]

Per run: --warmup steps, then --steps steps timed together (ms per step) and `sess.profile()` over them (ms per
step per node, GFLOP/s where the node has a FLOP count). Compare builds by alternating runs of each; the machine's
noise between runs is several percent.
"""
import argparse
import time

import numpy as np

import cnnnative as cn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    cn.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    for run in range(args.runs):
        s = cn.models.lenet5(seed=0).compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9),
                                             batch_pieces=False)
        for _ in range(args.warmup):
            s.step(x, y)
        s.profile(reset=True)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            s.step(x, y)
        ms = (time.perf_counter() - t0) * 1000 / args.steps
        print(f"run {run + 1}: {ms:.3f} ms per step (batch {args.batch}, {args.threads} thread(s))")
        for r in sorted(s.profile(), key=lambda r: -r["ms"])[:args.top]:
            gf = f"{r['gflops']:.0f} GFLOP/s" if r["gflops"] else ""
            print(f"  {r['name']:<28} {r['op']:<28} {r['ms']:.4f} ms  {gf}")


if __name__ == "__main__":
    main()
