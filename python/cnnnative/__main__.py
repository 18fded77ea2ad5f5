"""Command line: python -m cnnnative train MODEL [options] | --cmake-dir | info."""
from __future__ import annotations

import argparse
import os
import sys
import time


# per task: default epochs, batch size, learning rate
_DEFAULTS = {"digits": (12, 32, 0.05), "synthetic": (4, 32, 0.02), "segment": (6, 16, 0.01), "denoise": (10, 32, 2e-3)}


def _task(model_name: str) -> str:
    if model_name == "unet":
        return "segment"
    if model_name == "conv_autoencoder":
        return "denoise"
    return "digits" if model_name == "lenet5" else "synthetic"


def _report_memory(sess) -> None:
    rep = sess.memory_report()
    mib = 1 / 2**20
    print(f"memory plan (train step): arena {rep['arena_bytes'] * mib:.2f} MiB (lower bound "
          f"{rep['lower_bound_bytes'] * mib:.2f}, without reuse {rep['naive_bytes'] * mib:.2f}), "
          f"persistent {rep['persistent_bytes'] * mib:.2f} MiB")


def _train(args) -> int:
    import numpy as np

    import cnnnative
    from . import data, models, optim
    from .train import fit, fit_dense, iou, noisy_digits, save_checkpoint

    if args.threads:
        cnnnative.set_num_threads(args.threads)
    task = _task(args.model)
    d_epochs, d_bs, d_lr = _DEFAULTS[task]
    epochs = args.epochs or d_epochs
    bs = args.batch_size or d_bs
    lr = args.lr or d_lr
    if task == "digits" and args.data:
        ds = data.load_mnist_dataset(args.data, seed=args.seed)
        source = f"MNIST-format IDX files in {args.data}"
    elif task == "digits":
        ds = data.load_digits(size=28, test_fraction=0.2, seed=args.seed)
        source = "scikit-learn digits (bundled), upscaled to 28x28"
    elif task == "synthetic":
        ds = data.synthetic_images(n=args.samples, size=32, channels=3, seed=args.seed)
        source = "synthetic 10-class gratings, 3x32x32"
    elif task == "segment":
        x, m = data.synthetic_shapes(n=args.samples, size=64, seed=args.seed)
        k = len(x) // 5
        ds = (x[k:], m[k:], x[:k], m[:k])
        source = "synthetic circle/square segmentation, 1x64x64"
    else:
        ds = noisy_digits(size=28, seed=args.seed)
        source = "bundled digits in [0, 1] with Gaussian noise (sigma 0.4) -> clean"
    if task in ("digits", "synthetic"):
        num_classes = max(int(max(ds[1].max(), ds[3].max())) + 1, 10)
        kw = {"num_classes": num_classes}
        if task == "synthetic":
            kw["cifar"] = True
        model = models.get_model(args.model, seed=args.seed, **kw)
    elif task == "segment":
        model = models.get_model("unet", in_channels=1, num_classes=1, depth=3, base=16, seed=args.seed)
    else:
        model = models.get_model("conv_autoencoder", in_channels=1, base=16, seed=args.seed)
    print(f"model {args.model}: {model.num_parameters():,} parameters; data: {source}: "
          f"{len(ds[0])} train / {len(ds[2])} test; threads {cnnnative.get_num_threads()}")
    if args.optimizer == "sgd" and task != "denoise":
        opt = optim.SGD(lr=lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    else:
        opt = optim.AdamW(lr=lr, weight_decay=args.weight_decay)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    progress = not args.no_progress
    t0 = time.perf_counter()
    if task in ("digits", "synthetic"):
        transform = data.default_augment(flip=task == "synthetic") if args.augment else None
        history, sess = fit(model, ds, epochs, bs, opt, sched, seed=args.seed, progress=progress, transform=transform,
                            recompute=args.recompute, dtype=args.dtype)
        final = f"test accuracy: {history[-1]['test_acc']:.4f}"
    elif task == "segment":
        history, sess = fit_dense(model, *ds, epochs, bs, opt, "bce_with_logits", sched, seed=args.seed,
                                  progress=progress, metric=iou, metric_name="IoU", recompute=args.recompute, dtype=args.dtype)
        final = f"test IoU: {history[-1]['IoU']:.4f}"
    else:
        noisy_mse = float(np.mean((ds[2] - ds[3]) ** 2))
        history, sess = fit_dense(model, *ds, epochs, bs, opt, "mse", sched, seed=args.seed, progress=progress,
                                  metric=lambda p, t: float(np.mean((p - t) ** 2)), metric_name="MSE",
                                  recompute=args.recompute, dtype=args.dtype)
        final = (f"test MSE: {history[-1]['MSE']:.5f} (noisy input: {noisy_mse:.5f}, "
                 f"{noisy_mse / history[-1]['MSE']:.1f}x lower)")
    elapsed = time.perf_counter() - t0
    _report_memory(sess)
    out = args.out or os.path.join("checkpoints", f"{args.model}.npz")
    path = save_checkpoint(model, out)
    print(f"training time: {elapsed:.1f} s")
    print(f"checkpoint saved to {path}")
    print(final)
    return 0


def _convert(args, p) -> int:
    import cnnnative
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            p.error(f"--input-shape must be comma-separated integers, got {args.input_shape!r}")
    try:
        from . import onnx as cnx
        out = cnx.convert(args.src, args.dst, input_shape=shape)
    except ImportError as e:
        print(f"error: {e} (pip install 'cnnnative[onnx]')", file=sys.stderr)
        return 1
    except (cnnnative.Error, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnnative", description="cnnnative: a native CNN engine")
    p.add_argument("--cmake-dir", action="store_true", help="print the folder holding cnnnative's CMake files")
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("train", help="train a zoo model")
    t.add_argument("model", help="model name (e.g. lenet5)")
    t.add_argument("--epochs", type=int, default=None, help="default: 12 for lenet5, fewer for larger models")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--samples", type=int, default=2000, help="size of a synthetic dataset")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    t.add_argument("--data", default=None, help="lenet5: folder with MNIST/Fashion-MNIST IDX files "
                   "(default: bundled digits); other models train on synthetic or bundled data")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="checkpoint path (default: checkpoints/MODEL.npz)")
    t.add_argument("--augment", action="store_true", help="random shift/rotation/brightness per batch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: mixed-precision training (float32 master weights; CPUs with AVX512-BF16)")
    t.add_argument("--recompute", choices=["none", "cheap", "segments"], default="none",
                   help="recompute activations in the backward pass instead of keeping them (less memory)")
    c = sub.add_parser("convert", help="convert between .onnx and .cnn model files (needs the onnx package)")
    c.add_argument("src", help="input file (.onnx or .cnn)")
    c.add_argument("dst", help="output file (.cnn or .onnx)")
    c.add_argument("--input-shape", default=None,
                   help="N,C,H,W to trace with (default: the source's declared shape with batch 1)")
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
    if args.cmd == "convert":
        return _convert(args, p)
    if args.cmd != "train":
        p.print_help()
        return 2
    from . import models
    if args.model not in models.MODELS:
        p.error(f"unknown model {args.model!r}; available: {', '.join(sorted(models.MODELS))}")
    for name in ("epochs", "batch_size", "threads", "samples"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "threads" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    import cnnnative
    try:
        return _train(args)
    except (cnnnative.Error, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
