"""Training in pieces (compile's batch_pieces, docs/ARCHITECTURE.md "Training in pieces") against whole-batch steps
and PyTorch, side by side in one process (alternating rounds, medians):

    python bench/train_pieces.py [--batches 32,64,128] [--rounds 5]

LeNet-5 (the benchmark suite's lenet5_train_mb64 model and PyTorch twin, `python -m cnnnative.bench`) at each batch
size; three engines take turns: the
default session (pieces: one equal piece of the batch per thread, each on one thread), the same model compiled with
batch_pieces=False (every node split over all threads) and PyTorch's eager step on the same weights. Prints a
markdown table with the thread count and the CPU; timings mean something only on a machine nothing else loads.
"""
import argparse
import statistics

import numpy as np

import cnnnative as cn
from cnnnative.bench.suite import _build, _cpu_model, _time, torch_train_step


def bench(batch, rounds):
    model, twin, _, _, _ = _build("lenet5_train_mb64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    opt = lambda: cn.optim.SGD(lr=1e-3, momentum=0.9)  # noqa: E731
    pieces = model.compile(x.shape, mode="train", optimizer=opt())
    whole = model.compile(x.shape, mode="train", optimizer=opt(), batch_pieces=False)
    engines = {"pieces": lambda: pieces.step(x, y), "whole": lambda: whole.step(x, y)}
    if twin is not None:
        import torch
        torch.set_num_threads(cn.get_num_threads())
        engines["pytorch"] = torch_train_step(twin, x, y)
    times = _time(engines, rounds, 50, warmup=20)
    med = {k: statistics.median(v) for k, v in times.items()}
    split = pieces.batch_pieces
    row = (f"| LeNet-5 b{batch} | {split[0]} × {split[1]}" if split else f"| LeNet-5 b{batch} | whole (no pieces)") + \
        f" | {med['pieces']:.3f} | {med['whole']:.3f} | {med['whole'] / med['pieces']:.2f}x"
    if "pytorch" in med:
        row += f" | {med['pytorch']:.2f} | {med['pieces'] / med['pytorch']:.2f} | {med['whole'] / med['pytorch']:.2f} |"
    else:
        row += " | - | - | - |"
    return row


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="32,64,128")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"{_cpu_model()}, {cn.get_num_threads()} threads, float32, SGD with momentum; medians of {a.rounds} rounds "
          f"of 50 steps per engine, alternating\n")
    print("| model | pieces (samples × workers) | pieces ms | whole-batch ms | whole / pieces | PyTorch ms | "
          "pieces / PyTorch | whole / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for b in a.batches.split(","):
        print(bench(int(b), a.rounds), flush=True)


if __name__ == "__main__":
    main()
