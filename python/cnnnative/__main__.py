"""Command line: python -m cnnnative train MODEL [options] | --cmake-dir | info."""
from __future__ import annotations

import argparse
import os
import sys
import time


# per task: default epochs, batch size, learning rate
_DEFAULTS = {"digits": (12, 32, 0.05), "synthetic": (4, 32, 0.02), "segment": (6, 16, 0.01), "denoise": (10, 32, 2e-3)}


def _task(model_name: str) -> str:
    if model_name in ("unet", "fcn_resnet50", "lraspp_mobilenet_v3_large"):
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


# CLI settings a resumed run must keep: not given on the command line -> the checkpoint's; given -> must match
_RESUME_KEYS = ("epochs", "batch_size", "lr", "samples", "optimizer", "weight_decay", "seed", "augment", "dtype",
                "num_classes")


def _settings(args, task) -> dict:
    """The effective values of the settings (defaults for those not given)."""
    d_epochs, d_bs, d_lr = _DEFAULTS[task]

    def pick(v, default):
        return default if v is None else v
    return {"model": args.model, "epochs": pick(args.epochs, d_epochs), "batch_size": pick(args.batch_size, d_bs),
            "lr": float(pick(args.lr, d_lr)), "samples": pick(args.samples, 2000),
            "optimizer": pick(args.optimizer, "sgd"), "weight_decay": float(pick(args.weight_decay, 5e-4)),
            "seed": pick(args.seed, 0), "augment": bool(args.augment),
            "dtype": pick(args.dtype, "float32"),
            "num_classes": pick(args.num_classes, 10) if task in ("digits", "synthetic") else None,
            "data": os.path.abspath(args.data) if args.data else None}


def _resume_settings(args, task, path):
    """(settings, checkpoint info) for --resume: the checkpoint's CLI settings, checked against those given."""
    from .train import checkpoint_info
    info = checkpoint_info(path)
    saved = (info.get("config") or {}).get("cli")
    if not isinstance(saved, dict) or not all(k in saved for k in ("model", "data") + _RESUME_KEYS):
        raise ValueError(f"checkpoint {path} was not written by 'python -m cnnnative train' (no CLI settings); "
                         "resume it from Python with cnnnative.train.fit(..., resume=path)")
    if saved["model"] != args.model:
        raise ValueError(f"checkpoint {path} is of model {saved['model']!r}, not {args.model!r}")
    given = _settings(args, task)
    diffs = []
    for k in _RESUME_KEYS:
        v = getattr(args, k)
        if v is None or (k == "augment" and not v):
            continue
        if given[k] != saved[k]:
            opt = "--" + k.replace("_", "-")
            if k == "epochs":
                diffs.append(f"{opt} {given[k]}: the checkpoint's run has {saved[k]} epochs and its cosine "
                             f"learning-rate schedule spans them (resume with the same --epochs, or leave it out)")
            else:
                diffs.append(f"{opt} {given[k]!r} (the checkpoint's run has {saved[k]!r})")
    if diffs:
        raise ValueError(f"cannot resume {path} with different settings: " + "; ".join(diffs))
    out = dict(saved)
    if args.data:  # the data may have moved; fit compares its fingerprint
        out["data"] = given["data"]
    return out, info


def _final_line(task, history, ds):
    import numpy as np
    if task in ("digits", "synthetic"):
        return f"test accuracy: {history[-1]['test_acc']:.4f}"
    if task == "segment":
        return f"test IoU: {history[-1]['IoU']:.4f}"
    noisy_mse = float(np.mean((ds[2] - ds[3]) ** 2))
    return (f"test MSE: {history[-1]['MSE']:.5f} (noisy input: {noisy_mse:.5f}, "
            f"{noisy_mse / history[-1]['MSE']:.1f}x lower)")


def _train(args) -> int:
    import numpy as np

    import cnnnative
    from . import data, models, optim
    from .train import fit, fit_dense, iou, noisy_digits

    if args.threads:
        cnnnative.set_num_threads(args.threads)
    task = _task(args.model)
    info = None
    if args.resume:
        cfg, info = _resume_settings(args, task, args.resume)
    else:
        cfg = _settings(args, task)
    epochs, bs, lr, seed = cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["seed"]
    if task == "digits" and cfg["data"]:
        ds = data.load_mnist_dataset(cfg["data"], seed=seed, num_classes=cfg["num_classes"])
        source = f"MNIST-format IDX files in {cfg['data']}"
    elif task == "digits":
        ds = data.load_digits(size=28, test_fraction=0.2, seed=seed)
        source = "scikit-learn digits (bundled), upscaled to 28x28"
    elif task == "synthetic":
        ds = data.synthetic_images(n=cfg["samples"], size=32, channels=3, num_classes=cfg["num_classes"], seed=seed)
        source = f"synthetic {cfg['num_classes']}-class gratings, 3x32x32"
    elif task == "segment":
        x, m = data.synthetic_shapes(n=cfg["samples"], size=64, seed=seed)
        k = len(x) // 5
        ds = (x[k:], m[k:], x[:k], m[:k])
        source = "synthetic circle/square segmentation, 1x64x64"
    else:
        ds = noisy_digits(size=28, seed=seed)
        source = "bundled digits in [0, 1] with Gaussian noise (sigma 0.4) -> clean"
    if task in ("digits", "synthetic"):
        # the number of classes is a setting (--num-classes), never read off the labels
        for name, y in (("training labels", ds[1]), ("test labels", ds[3])):
            data.check_labels(y, cfg["num_classes"], f"{source}: {name} (--num-classes {cfg['num_classes']})")
    if info is not None and info["epoch"] >= info["epochs"]:
        print(f"checkpoint {args.resume}: the run finished all {info['epochs']} epochs; nothing to do")
        print(_final_line(task, info["history"], ds))
        return 0
    if task in ("digits", "synthetic"):
        kw = {"num_classes": cfg["num_classes"]}
        if task == "synthetic":
            kw["cifar"] = True
        model = models.get_model(args.model, seed=seed, **kw)
    elif task == "segment":
        kw = {"depth": 3, "base": 16} if args.model == "unet" else {}
        model = models.get_model(args.model, in_channels=1, num_classes=1, seed=seed, **kw)
    else:
        model = models.get_model("conv_autoencoder", in_channels=1, base=16, seed=seed)
    print(f"model {args.model}: {model.num_parameters():,} parameters; data: {source}: "
          f"{len(ds[0])} train / {len(ds[2])} test; threads {cnnnative.get_num_threads()}", flush=True)
    if cfg["optimizer"] == "sgd" and task != "denoise":
        opt = optim.SGD(lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"])
    else:
        opt = optim.AdamW(lr=lr, weight_decay=cfg["weight_decay"])
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    out = args.out or args.resume or os.path.join("checkpoints", f"{args.model}.npz")
    common = dict(progress=not args.no_progress, log=lambda s: print(s, flush=True), recompute=args.recompute,
                  dtype=cfg["dtype"], checkpoint=out, resume=args.resume, config={"cli": cfg}, device=args.device)
    t0 = time.perf_counter()
    if task in ("digits", "synthetic"):
        transform = data.default_augment(flip=task == "synthetic") if cfg["augment"] else None
        history, sess = fit(model, ds, epochs, bs, opt, sched, seed=seed, transform=transform, **common)
    elif task == "segment":
        history, sess = fit_dense(model, *ds, epochs, bs, opt, "bce_with_logits", sched, seed=seed, metric=iou,
                                  metric_name="IoU", **common)
    else:
        history, sess = fit_dense(model, *ds, epochs, bs, opt, "mse", sched, seed=seed,
                                  metric=lambda p, t: float(np.mean((p - t) ** 2)), metric_name="MSE", **common)
    elapsed = time.perf_counter() - t0
    _report_memory(sess)
    print(f"training time: {elapsed:.1f} s")
    print(f"checkpoint saved to {os.path.abspath(out)}")
    print(_final_line(task, history, ds))
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


def _demo(args) -> int:
    import cnnnative
    from . import demos
    try:
        files = demos.run(args.name, args.out, image=args.image)
    except (ImportError, cnnnative.Error, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for f in files:
        print(f"wrote {f}")
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
    t.add_argument("--samples", type=int, default=None, help="size of a synthetic dataset (default 2000)")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="default: sgd")
    t.add_argument("--weight-decay", type=float, default=None, help="default: 5e-4")
    t.add_argument("--num-classes", type=int, default=None,
                   help="classes of a classification model (default 10); labels outside [0, N) are an error")
    t.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    t.add_argument("--data", default=None, help="lenet5: folder with MNIST/Fashion-MNIST IDX files "
                   "(default: bundled digits); other models train on synthetic or bundled data")
    t.add_argument("--seed", type=int, default=None, help="default: 0")
    t.add_argument("--out", default=None, help="checkpoint path, written at the end of every epoch "
                   "(default: checkpoints/MODEL.npz; with --resume: the resumed checkpoint)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run that wrote CHECKPOINT (settings not given are the checkpoint's; "
                   "settings given must match them)")
    t.add_argument("--augment", action="store_true", default=None,
                   help="random shift/rotation/brightness per batch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="bfloat16: mixed-precision training (float32 master weights; CPUs with AVX512-BF16)")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where to train: cpu (default) or cuda (an NVIDIA GPU; pip install '.[cuda]')")
    t.add_argument("--recompute", choices=["none", "cheap", "segments"], default="none",
                   help="recompute activations in the backward pass instead of keeping them (less memory)")
    c = sub.add_parser("convert", help="convert between .onnx and .cnn model files (needs the onnx package)")
    c.add_argument("src", help="input file (.onnx or .cnn)")
    c.add_argument("dst", help="output file (.cnn or .onnx)")
    c.add_argument("--input-shape", default=None,
                   help="N,C,H,W to trace with (default: the source's declared shape with batch 1); for an "
                   ".onnx source it also fixes the model's symbolic input dimensions, so that shape "
                   "subgraphs (Shape, Gather, Concat, ...) fold at import")
    d = sub.add_parser("demo", help="draw what convolution and pooling do (needs matplotlib)",
                       description="filters: classic kernels on photos; conv: stride, padding, dilation and the "
                       "output size; pool: max against average pooling. The code: python/cnnnative/demos/")
    d.add_argument("name", choices=["filters", "conv", "pool"], help="which demo")
    d.add_argument("--out", default="demo_out", help="folder for the PNG files (default: demo_out)")
    d.add_argument("--image", default=None, help="your picture (PNG, JPEG, PGM, ... or .npy) instead of the "
                   "bundled ones")
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
    if args.cmd == "demo":
        return _demo(args)
    if args.cmd != "train":
        p.print_help()
        return 2
    from . import models
    if args.model not in models.MODELS:
        p.error(f"unknown model {args.model!r}; available: {', '.join(sorted(models.MODELS))}")
    if args.num_classes is not None and _task(args.model) not in ("digits", "synthetic"):
        p.error(f"--num-classes applies to classification models, not {args.model}")
    for name in ("epochs", "batch_size", "threads", "samples", "num_classes"):
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
