"""Command line: python -m cnnnative train MODEL [options] | --cmake-dir | info."""
from __future__ import annotations

import argparse
import os
import sys
import time


def _train(args) -> int:
    import numpy as np

    import cnnnative
    from . import data, models, optim
    from .train import fit, save_checkpoint

    if args.threads:
        cnnnative.set_num_threads(args.threads)
    if args.data:
        ds = data.load_mnist_dataset(args.data, seed=args.seed)
        source = f"MNIST-format IDX files in {args.data}"
    else:
        ds = data.load_digits(size=28, test_fraction=0.2, seed=args.seed)
        source = "scikit-learn digits (bundled), upscaled to 28x28"
    x_tr, y_tr, x_te, y_te = ds
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = models.get_model(args.model, num_classes=max(num_classes, 10), seed=args.seed)
    print(f"model {args.model}: {model.num_parameters():,} parameters; data: {source}: "
          f"{len(x_tr)} train / {len(x_te)} test; threads {cnnnative.get_num_threads()}")
    if args.optimizer == "sgd":
        opt = optim.SGD(lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    else:
        opt = optim.AdamW(lr=args.lr, weight_decay=args.weight_decay)
    sched = optim.CosineAnnealingLR(opt, T_max=args.epochs)
    t0 = time.perf_counter()
    transform = data.default_augment(flip=False) if args.augment else None
    history, sess = fit(model, ds, args.epochs, args.batch_size, opt, sched, seed=args.seed,
                        progress=not args.no_progress, transform=transform)
    elapsed = time.perf_counter() - t0
    rep = sess.memory_report()
    mib = 1 / 2**20
    print(f"memory plan (train step): arena {rep['arena_bytes'] * mib:.2f} MiB (lower bound "
          f"{rep['lower_bound_bytes'] * mib:.2f}, without reuse {rep['naive_bytes'] * mib:.2f}), "
          f"persistent {rep['persistent_bytes'] * mib:.2f} MiB")
    out = args.out or os.path.join("checkpoints", f"{args.model}.npz")
    path = save_checkpoint(model, out)
    print(f"training time: {elapsed:.1f} s")
    print(f"checkpoint saved to {path}")
    print(f"test accuracy: {history[-1]['test_acc']:.4f}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnnative", description="cnnnative: a native CNN engine")
    p.add_argument("--cmake-dir", action="store_true", help="print the folder holding cnnnative's CMake files")
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("train", help="train a zoo model")
    t.add_argument("model", help="model name (e.g. lenet5)")
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    t.add_argument("--data", default=None, help="folder with MNIST/Fashion-MNIST IDX files (default: bundled digits)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="checkpoint path (default: checkpoints/MODEL.npz)")
    t.add_argument("--augment", action="store_true", help="random shift/rotation/brightness per batch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.cmake_dir:
        import cnnnative
        for base in cnnnative.__path__:
            d = os.path.join(base, "share", "cmake", "cnnnative")
            if os.path.isdir(d):
                print(d)
                return 0
        print("error: the CMake package files are not installed with this build", file=sys.stderr)
        return 1
    if args.cmd != "train":
        p.print_help()
        return 2
    from . import models
    if args.model not in models.MODELS:
        p.error(f"unknown model {args.model!r}; available: {', '.join(sorted(models.MODELS))}")
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < (0 if name == "threads" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    import cnnnative
    try:
        return _train(args)
    except (cnnnative.Error, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
