"""Command line: python -m cnnnative (or the `cnnnative` script)
    train MODEL [options]            train a zoo model; checkpoint + history files written every epoch
    evaluate CHECKPOINT              loss and metric of a trained model on its test data (or --data)
    predict CHECKPOINT FILES...      classes (or masks / denoised images) of PGM, PNG or NPY files
    export CHECKPOINT OUT.cnn|.onnx  the trained model as a .cnn or .onnx model file
    convert SRC DST                  .onnx <-> .cnn
    --version | --cmake-dir"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time

from . import _tasks
from ._tasks import DEFAULTS, task_of


def _report_memory(sess) -> None:
    rep = sess.memory_report()
    mib = 1 / 2**20
    print(f"memory plan (train step): arena {rep['arena_bytes'] * mib:.2f} MiB (lower bound "
          f"{rep['lower_bound_bytes'] * mib:.2f}, without reuse {rep['naive_bytes'] * mib:.2f}), "
          f"persistent {rep['persistent_bytes'] * mib:.2f} MiB")


# CLI settings a resumed run must keep: not given on the command line -> the checkpoint's; given -> must match
_RESUME_KEYS = ("epochs", "batch_size", "lr", "samples", "optimizer", "weight_decay", "seed", "augment", "dtype",
                "num_classes")


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
    kind = ((info.get("settings") or {}).get("optimizer") or {}).get("kind")
    if kind in ("sgd", "adamw") and kind != saved["optimizer"]:
        # conv_autoencoder trained with AdamW whatever --optimizer said before the option was honoured
        saved = dict(saved, optimizer=kind)
    given = _tasks.settings(args, task)
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


def _noisy_mse(ds) -> float:
    import numpy as np
    return float(np.mean((ds[2] - ds[3]) ** 2))


def _final_line(task, history, ds):
    if task in ("digits", "synthetic"):
        return f"test accuracy: {history[-1]['test_acc']:.4f}"
    if task == "segment":
        return f"test IoU: {history[-1]['IoU']:.4f}"
    noisy_mse = _noisy_mse(ds)
    return (f"test MSE: {history[-1]['MSE']:.5f} (noisy input: {noisy_mse:.5f}, "
            f"{noisy_mse / history[-1]['MSE']:.1f}x lower)")


def _threads_text() -> str:
    import cnnnative
    info = cnnnative.threads_info()
    return f"auto (up to {info['max']})" if info["mode"] == "auto" else str(info["max"])


def _train(args) -> int:
    import numpy as np

    import cnnnative
    from . import data, optim
    from .train import fit, fit_dense, history_paths, iou

    if args.threads:
        cnnnative.set_num_threads(args.threads)
    world = 1
    if args.distributed:  # under mpirun: every rank runs this; only rank 0 prints (errors print on every rank)
        from . import distributed
        distributed.init()
        world = distributed.world_size()
        if distributed.rank() != 0:
            sys.stdout = open(os.devnull, "w")
    task = task_of(args.model)
    info = None
    if args.resume:
        cfg, info = _resume_settings(args, task, args.resume)
    else:
        cfg = _tasks.settings(args, task)
    epochs, bs, seed = cfg["epochs"], cfg["batch_size"], cfg["seed"]
    if bs % world:
        raise ValueError(f"--distributed: the batch size {bs} is the global batch, split over the {world} processes: "
                         f"it must be a multiple of {world}")
    bs //= world  # per process
    ds, source, cfg["input"] = _tasks.load_data(cfg)
    if task in ("digits", "synthetic"):
        # the number of classes is a setting (--num-classes), never read off the labels
        for name, y in (("training labels", ds[1]), ("test labels", ds[3])):
            data.check_labels(y, cfg["num_classes"], f"{source}: {name} (--num-classes {cfg['num_classes']})")
    if info is not None and info["epoch"] >= info["epochs"]:
        print(f"checkpoint {args.resume}: the run finished all {info['epochs']} epochs; nothing to do")
        print(_final_line(task, info["history"], ds))
        return 0
    model = _tasks.build_model(cfg)
    if args.sync_bn:  # the whole job's batch statistics (nn.SyncBatchNorm); state_dict keys unchanged
        from .nn import SyncBatchNorm
        SyncBatchNorm.convert_sync_batchnorm(model)
    print(f"model {args.model}: {model.num_parameters():,} parameters; data: {source}: "
          f"{len(ds[0])} train / {len(ds[2])} test; threads {_threads_text()}"
          + (f"; {world} processes x batch {bs} = global batch {bs * world}" if args.distributed else "")
          + ("; BatchNorm statistics over the global batch (SyncBatchNorm)" if args.sync_bn else ""), flush=True)
    opt = _tasks.build_optimizer(cfg)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    out = args.out or args.resume or os.path.join("checkpoints", f"{args.model}.npz")
    common = dict(progress=not args.no_progress, log=lambda s: print(s, flush=True), recompute=args.recompute,
                  dtype=cfg["dtype"], checkpoint=out, resume=args.resume, config={"cli": cfg}, device=args.device,
                  history_file=out, model_name=args.model, distributed=args.distributed)
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
    print("history: " + ", ".join(os.path.abspath(p) for p in history_paths(out)))
    print(_final_line(task, history, ds))
    if args.plot and (not args.distributed or distributed.rank() == 0):  # rank 0 wrote the history
        from .report import plot_history
        print(f"wrote {os.path.abspath(plot_history(out))}")
    return 0


# ------------------------------------------------------------------------------------------------------
# evaluate / predict / export
# ------------------------------------------------------------------------------------------------------

def _load_trained(path, threads):
    """(cli settings, checkpoint info, model with the checkpoint's weights)."""
    import cnnnative
    if threads:
        cnnnative.set_num_threads(threads)
    cfg, info = _tasks.cli_settings(path)
    model = _tasks.build_model(cfg)
    cnnnative.load_checkpoint(model, path)
    return cfg, info, model


def _header(path, cfg, info, model):
    return (f"model {cfg['model']} from {path} (epoch {info['epoch']}/{info['epochs']}, "
            f"{model.num_parameters():,} parameters)")


def _eval_data(args, cfg, parser):
    """(x_test, targets, description, noisy baseline MSE or None) for evaluate."""
    import numpy as np

    from . import data
    task = task_of(cfg["model"])
    if args.data is None:
        ds, source, _ = _tasks.load_data(cfg)
        return ds[2], ds[3], source, _noisy_mse(ds) if task == "denoise" else None
    if task != "digits":
        parser.error(f"--data applies to lenet5 checkpoints (MNIST-format IDX files); {cfg['model']} is "
                     f"evaluated on its own test data: {_tasks.DESCRIPTIONS[task]}")
    spec = _tasks.input_spec(cfg)
    x, y = data.load_mnist(args.data, "t10k", cfg["num_classes"])
    if list(x.shape[1:]) != spec["shape"]:
        raise ValueError(f"{args.data}: t10k images are {'x'.join(map(str, x.shape[1:]))}; model {cfg['model']} "
                         f"takes {_tasks.describe_input(spec)}")
    x -= np.float32(spec["mean"])  # normalized as the model's training data
    x /= np.float32(spec["std"])
    return x, y, f"MNIST-format IDX files in {os.path.abspath(args.data)} (t10k split)", None


def _evaluate(args, parser) -> int:
    import numpy as np

    from .train import iou, predict
    cfg, info, model = _load_trained(args.checkpoint, args.threads)
    task = task_of(cfg["model"])
    x, t, source, noisy = _eval_data(args, cfg, parser)
    n = len(x)
    default_bs = 256 if task in ("digits", "synthetic") else cfg["batch_size"]  # as the training evaluated
    bs = min(args.batch_size or default_bs, n)
    sess = model.compile((bs,) + tuple(x.shape[1:]), mode="infer", dtype=cfg.get("dtype", "float32"))
    out = predict(model, x, bs, sess).astype(np.float64)
    print(_header(args.checkpoint, cfg, info, model))
    print(f"data: {source}: {n} test {'images' if task != 'synthetic' else 'samples'}")
    if task in ("digits", "synthetic"):
        z = out - out.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        print(f"test loss (cross-entropy): {-logp[np.arange(n), t].mean():.4f}")
        pred = out.argmax(1)
        ok = pred == t
        print(f"test accuracy: {ok.mean():.4f} ({int(ok.sum())}/{n})")
        k = cfg["num_classes"]
        counts = np.zeros((k, k), np.int64)
        np.add.at(counts, (t, pred), 1)
        per = [(c, counts[c, c], counts[c].sum()) for c in range(k)]
        shown = per if k <= 20 else sorted((p for p in per if p[2]), key=lambda p: p[1] / p[2])[:10]
        print("per-class accuracy" + (" (the 10 lowest)" if k > 20 else "") + ":")
        for c, right, total in shown:
            print(f"  class {c}: " + (f"{right / total:.4f} ({right}/{total})" if total else "no test samples"))
        off = counts.copy()
        np.fill_diagonal(off, 0)
        pairs = [(int(off[i, j]), i, j) for i, j in zip(*np.nonzero(off))]
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        if pairs:
            print("most confused: " + ", ".join(f"{i} as {j} ({c}x)" for c, i, j in pairs[:5]))
        else:
            print("most confused: none (no test image misclassified)")
    elif task == "segment":
        bce = np.maximum(out, 0) - out * t + np.log1p(np.exp(-np.abs(out)))
        print(f"test loss (BCE with logits): {bce.mean():.4f}")
        print(f"test IoU: {iou(out, t):.4f}")
    else:
        mse = float(np.mean((out - t) ** 2))
        print(f"test loss (MSE): {mse:.5f}")
        print(f"test MSE: {mse:.5f} (noisy input: {noisy:.5f}, {noisy / mse:.1f}x lower)")
    return 0


def _output_paths(path, out_dir, suffix, index, count):
    folder = out_dir if out_dir is not None else os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0] + (f".{index}" if count > 1 else "")
    base = os.path.join(folder, f"{stem}.{suffix}")
    return base + ".png", base + ".npy"


def _predict(args, parser) -> int:
    import numpy as np

    from ._atomic import write_atomic
    from .train import predict
    cfg, info, model = _load_trained(args.checkpoint, args.threads)
    task = task_of(cfg["model"])
    classify = task in ("digits", "synthetic")
    if classify and args.out_dir is not None:
        parser.error(f"--out-dir is where segmentation masks and denoised images go; {cfg['model']} is a "
                     f"classifier (its predictions are printed)")
    if not classify and args.top is not None:
        parser.error(f"--top applies to classifiers; {cfg['model']} outputs a "
                     f"{'mask' if task == 'segment' else 'denoised image'} per input")
    top = args.top or 1
    if classify and top > cfg["num_classes"]:
        parser.error(f"--top {top}: the model has {cfg['num_classes']} classes")
    spec = _tasks.input_spec(cfg)
    inputs, names = [], []
    for path in args.images:  # every file is read and checked before anything runs or is written
        x = _tasks.read_input(path, spec, cfg["model"])
        inputs.append(x)
        names += [(path, i, len(x)) for i in range(len(x))]
    x = np.concatenate(inputs)
    if not classify:  # two inputs must not write the same output file
        suffix = "mask" if task == "segment" else "denoised"
        seen = {}
        for path, i, count in names:
            png = os.path.abspath(_output_paths(path, args.out_dir, suffix, i, count)[0])
            if png in seen:
                raise ValueError(f"{seen[png]} and {path} would both write {png}; rename one of them, or predict "
                                 f"them separately with different --out-dir")
            seen[png] = path
    bs = min(args.batch_size or 64, len(x))
    sess = model.compile((bs,) + tuple(x.shape[1:]), mode="infer", dtype=cfg.get("dtype", "float32"))
    out = predict(model, x, bs, sess).astype(np.float64)
    for (path, i, count), y in zip(names, out):
        name = path if count == 1 else f"{path}[{i}]"
        if classify:
            z = np.exp(y - y.max())
            p = z / z.sum()
            order = np.argsort(-p, kind="stable")[:top]
            print(f"{name}: " + ", ".join(f"{int(c)} ({p[c]:.4f})" for c in order))
            continue
        if task == "segment":
            img = 1 / (1 + np.exp(-y[0]))
            png, npy = _output_paths(path, args.out_dir, "mask", i, count)
            what = f"mask ({np.mean(img > 0.5):.1%} foreground)"
            picture = (img > 0.5).astype(np.float64)
        else:
            img = np.clip(y[0], 0, 1)
            png, npy = _output_paths(path, args.out_dir, "denoised", i, count)
            what = "denoised"
            picture = img
        _tasks.write_png(png, picture)
        arr = img.astype(np.float32)
        write_atomic(npy, lambda f, a=arr: np.save(f, a, allow_pickle=False))
        print(f"{name}: {what} -> {png}, {npy}")
    return 0


def _export(args, parser) -> int:
    import cnnnative
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".cnn", ".onnx"):
        parser.error(f"the output file must end in .cnn or .onnx, got {args.out!r}")
    if ext == ".cnn" and args.dynamic_batch:
        parser.error("--dynamic-batch applies to .onnx files; a .cnn model compiles for any batch size")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be positive")
    cfg, info, model = _load_trained(args.checkpoint, 0)
    spec = _tasks.input_spec(cfg)
    shape = (args.batch_size or 1,) + tuple(spec["shape"])
    if ext == ".cnn":
        path = os.path.abspath(cnnnative.save(model, args.out, shape))
        batch = "any batch size"
    else:
        try:
            from . import onnx as cnx
            proto = cnx.export_model(model, args.out, shape, dynamic_batch=args.dynamic_batch)
        except ImportError as e:
            print(f"error: {e}", file=sys.stderr)  # it says how to install onnx
            return 1
        path = os.path.abspath(args.out)
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        batch = "any batch size N" if dim.dim_param else f"batch {dim.dim_value}"
        if args.dynamic_batch and not dim.dim_param:
            print(f"note: {cfg['model']}'s graph depends on its batch size; the ONNX model takes batch "
                  f"{dim.dim_value} only")
    print(_header(args.checkpoint, cfg, info, model))
    print(f"wrote {path}: input {list(shape)} ({batch})")
    if spec["images"]:
        mean, std = spec["mean"], spec["std"]
        norm = "as is" if (mean, std) == (0.0, 1.0) else f"then (x - {mean:.6g}) / {std:.6g}"
        print(f"input: {_tasks.describe_input(spec)}; pixels scaled to [0, 1], {norm}")
    else:
        print(f"input: {_tasks.describe_input(spec)}, normalized as cnnnative.data.synthetic_images returns it")
    return 0


def _missing_folders(path) -> list:
    """The folders above `path` that do not exist yet, the deepest first."""
    out = []
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(d):
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return out


def _os_error_line(e, src, dst) -> str:
    """One line for an OSError of convert: the file it concerns (SRC, DST or a folder on the way to DST) and
    what went wrong, without the temporary file's name."""
    from . import _atomic
    what = e.strerror or str(e) or type(e).__name__
    dst_abs = os.path.abspath(dst)
    if e.filename is not None:
        name = os.path.abspath(os.fsdecode(e.filename))
        if name == dst_abs or name.startswith(dst_abs + ".tmp."):
            return f"cannot write {dst}: {what}"
        if dst_abs.startswith(name.rstrip(os.sep) + os.sep):  # a folder on the way to DST (SRC itself, maybe)
            if os.path.lexists(name) and not os.path.isdir(name):
                return f"cannot write {dst}: {name} is not a folder"
            return f"cannot write {dst}: cannot create the folder {name}: {what}"
        if name == os.path.abspath(src):
            return f"cannot read {src}: {what}"
        return f"{name}: {what}"
    tb = e.__traceback__
    while tb is not None:  # no file named (a full disk, a file size limit): raised while writing DST?
        if tb.tb_frame.f_code.co_filename == _atomic.__file__:
            return f"cannot write {dst}: {what}"
        tb = tb.tb_next
    return f"converting {src} to {dst}: {what}"


def _convert(args, p) -> int:
    import cnnnative
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            p.error(f"--input-shape must be comma-separated integers, got {args.input_shape!r}")
    created = _missing_folders(args.dst)  # removed again (when still empty) if the conversion fails
    try:
        from . import onnx as cnx
        out = cnx.convert(args.src, args.dst, input_shape=shape)
    except BaseException as e:
        for d in created:
            try:
                os.rmdir(d)
            except OSError:
                break
        if isinstance(e, ImportError):
            print(f"error: {e}", file=sys.stderr)  # it says how to install onnx
            return 1
        if isinstance(e, OSError):  # the destination unwritable, a full disk, ...: atomic writes leave nothing
            print(f"error: {_os_error_line(e, args.src, args.dst)}", file=sys.stderr)
            return 1
        if isinstance(e, (cnnnative.Error, ValueError, RuntimeError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    print(f"wrote {out}")
    return 0


def _report(args, parser) -> int:
    from .report import report
    report(args.checkpoint, args.out_dir, args.threads)
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


# ------------------------------------------------------------------------------------------------------
# the parser
# ------------------------------------------------------------------------------------------------------

def _version() -> str:
    """The installed distribution's version; the package's own where it is not installed (a source tree on
    PYTHONPATH)."""
    from importlib import metadata
    try:
        return metadata.version("cnnnative")
    except metadata.PackageNotFoundError:
        import cnnnative
        return cnnnative.__version__


def _prog() -> str:
    """'cnnnative' when run as the console script, 'python -m cnnnative' otherwise."""
    base = os.path.basename(sys.argv[0] if sys.argv else "")
    return base if base and not base.endswith(".py") and base not in ("-c", "-m") else "python -m cnnnative"


def _para(text) -> str:
    return textwrap.fill(text, 100)


def _models_epilog() -> str:
    from . import models
    lines = ["models, by task (what each trains on):"]
    for task in DEFAULTS:
        names = ", ".join(m for m in sorted(models.MODELS) if task_of(m) == task)
        lines.append(textwrap.fill(f"{task}: {names}", 100, initial_indent="  ", subsequent_indent="    "))
        lines.append(f"    data: {_tasks.DESCRIPTIONS[task]}")
    lines += ["", "defaults per task (for the options that say 'per task'; samples '-': the task's data is fixed):",
              _tasks.defaults_table()]
    return "\n".join(lines)


def _parser(prog):
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=prog, description="cnnnative: a native CNN engine", formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"cnnnative {_version()}")
    p.add_argument("--cmake-dir", action="store_true", help="print the folder holding cnnnative's CMake files")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    subs = {}

    t = subs["train"] = sub.add_parser(
        "train", help="train a zoo model", formatter_class=fmt, epilog=_models_epilog(),
        description=_para("Trains MODEL; a checkpoint (CHECKPOINT.npz) and its history (CHECKPOINT.history.json and "
                    ".csv: per-epoch loss, metric, learning rate, images/s; per-step loss) are written at the end "
                    "of every epoch."))
    t.add_argument("model", metavar="MODEL", help="model name (listed below)")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: per task)")
    t.add_argument("--batch-size", type=int, default=None, help="batch size (default: per task)")
    t.add_argument("--lr", type=float, default=None,
                   help="initial learning rate of the cosine schedule (default: per task and optimizer)")
    t.add_argument("--samples", type=int, default=None,
                   help="size of the synthetic data set of the synthetic and segment tasks (default: 2000)")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help="sgd (momentum 0.9, Nesterov) or adamw (default: per task: adamw for conv_autoencoder, "
                        "else sgd)")
    t.add_argument("--weight-decay", type=float, default=None, help=f"default: {_tasks.WEIGHT_DECAY:g}")
    t.add_argument("--num-classes", type=int, default=None,
                   help=f"classes of a classification model (default: {_tasks.NUM_CLASSES}); labels outside [0, N) "
                        "are an error")
    t.add_argument("--threads", type=int, default=0, help="threads (default: 0, all cores)")
    t.add_argument("--data", default=None, help="lenet5 only: a folder with MNIST/Fashion-MNIST IDX files "
                   "(default: the bundled digits)")
    t.add_argument("--seed", type=int, default=None, help=f"default: {_tasks.SEED}")
    t.add_argument("--out", default=None, help="checkpoint path, written at the end of every epoch "
                   "(default: checkpoints/MODEL.npz; with --resume: the resumed checkpoint)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run that wrote CHECKPOINT (settings not given are the checkpoint's; "
                   "settings given must match them) (default: a new run)")
    t.add_argument("--augment", action="store_true", default=None,
                   help="classifiers only: random shift/rotation/brightness per batch (plus flips for the "
                        "synthetic task) (default: off)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar per epoch)")
    t.add_argument("--plot", action="store_true", help="draw the training curves into CHECKPOINT.history.png at "
                   "the end (needs matplotlib; 'report CHECKPOINT' draws everything; default: off)")
    t.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="bfloat16: mixed-precision training (float32 master weights; CPUs with AVX512-BF16) "
                        "(default: float32)")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where to train: cpu or cuda (an NVIDIA GPU; pip install '.[cuda]') (default: cpu)")
    t.add_argument("--recompute", choices=["auto", "none", "cheap", "lean", "segments"], default="auto",
                   help="recompute activations in the backward pass instead of keeping them (less memory); "
                        "auto = the smallest plan of none/cheap/lean, lean for the ResNets (default: auto)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: run under 'mpirun -np N' (pip install '.[mpi]'); "
                        "--batch-size is the global batch, split over the N processes; rank 0 prints and writes "
                        "the checkpoint (default: off)")
    t.add_argument("--sync-bn", action="store_true",
                   help="with --distributed: BatchNorm layers normalize with the whole global batch's statistics "
                        "(SyncBatchNorm; N processes x batch B then train as 1 process x batch N*B) instead of "
                        "each process's own (default: off)")

    e = subs["evaluate"] = sub.add_parser(
        "evaluate", help="loss and metric of a trained checkpoint on its test data",
        description=_para("Rebuilds the model and its task's test data from the checkpoint's settings and prints the "
                    "loss and the metric: accuracy with per-class accuracy and the most confused classes for "
                    "classifiers, IoU for segmentation, MSE for the denoising autoencoder."))
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'train'")
    e.add_argument("--data", default=None, help="lenet5 only: a folder with MNIST-format IDX files; its t10k "
                   "split is evaluated (default: the checkpoint's own test data)")
    e.add_argument("--batch-size", type=int, default=None,
                   help="evaluation batch size (default: as the training evaluated: 256 for classifiers, the "
                        "training batch size otherwise)")
    e.add_argument("--threads", type=int, default=0, help="threads (default: 0, all cores)")

    r = subs["predict"] = sub.add_parser(
        "predict", help="predict the class (mask, denoised image) of image files",
        description=_para("Runs a trained checkpoint on image files: PGM/PPM (P2, P5, P3, P6), PNG, or NPY (uint8/uint16 "
                    "pixels, or float arrays taken as model input as is). Images are scaled to [0, 1], upscaled "
                    "when they have the size of the training's source images (8x8 digits) and normalized as the "
                    "training data was. Classifiers print 'FILE: CLASS (PROBABILITY)' per image; segmentation "
                    "models write FILE.mask.png/.npy, the denoising autoencoder FILE.denoised.png/.npy."))
    r.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'train'")
    r.add_argument("images", metavar="FILE", nargs="+", help=".pgm, .ppm, .png or .npy files")
    r.add_argument("--top", type=int, default=None, help="classifiers: print the K most probable classes "
                   "(default: 1)")
    r.add_argument("--out-dir", default=None, help="segmentation/denoising: folder for the output files "
                   "(default: next to each input file)")
    r.add_argument("--batch-size", type=int, default=None, help="inference batch size (default: 64)")
    r.add_argument("--threads", type=int, default=0, help="threads (default: 0, all cores)")

    rp = subs["report"] = sub.add_parser(
        "report", help="draw a checkpoint's run: curves, filters, feature maps, memory plan, ... (needs matplotlib)",
        description=_para("Draws the training curves, the first convolution's filters, feature maps of one test "
                    "input, the confusion matrix and augmentations (classifiers), predicted masks (segmentation) "
                    "or noisy/denoised/clean triples (autoencoder), the per-node profile and the memory plan of "
                    "inference and of a training step with and without recompute, as PNG files and one "
                    "self-contained MODEL.report.html."))
    rp.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'train'")
    rp.add_argument("--out-dir", default=None, help="folder for the pictures (default: the checkpoint's folder)")
    rp.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")

    x = subs["export"] = sub.add_parser(
        "export", help="write a checkpoint's model as a .cnn or .onnx file",
        description=_para("Writes the trained model as a .cnn model file (cnnnative.load, the C++ API) or as ONNX "
                    "(opset 17; needs the onnx package), atomically; prints the input it takes and its "
                    "normalization."))
    x.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by 'train'")
    x.add_argument("out", metavar="OUT", help="OUT.cnn or OUT.onnx")
    x.add_argument("--batch-size", type=int, default=None, help="batch size of the model's input (default: 1)")
    x.add_argument("--dynamic-batch", action="store_true",
                   help=".onnx only: a symbolic batch dimension N (default: the fixed --batch-size)")

    c = subs["convert"] = sub.add_parser("convert", help="convert between .onnx and .cnn model files (needs the "
                                                        "onnx package)")
    c.add_argument("src", help="input file (.onnx or .cnn)")
    c.add_argument("dst", help="output file (.cnn or .onnx)")
    c.add_argument("--input-shape", default=None,
                   help="N,C,H,W to trace with (default: the source's declared shape with batch 1); for an "
                   ".onnx source it also fixes the model's symbolic input dimensions, so that shape "
                   "subgraphs (Shape, Gather, Concat, ...) fold at import")
    d = subs["demo"] = sub.add_parser("demo", help="draw what convolution and pooling do (needs matplotlib)",
                       description="filters: classic kernels on photos; conv: stride, padding, dilation and the "
                       "output size; pool: max against average pooling. The code: python/cnnnative/demos/")
    d.add_argument("name", choices=["filters", "conv", "pool"], help="which demo")
    d.add_argument("--out", default="demo_out", help="folder for the PNG files (default: demo_out)")
    d.add_argument("--image", default=None, help="your picture (PNG, JPEG, PGM, ... or .npy) instead of the "
                   "bundled ones")
    return p, subs


def _check_train_options(args, t) -> None:
    """Every option that does not apply to the model is an error, never silently ignored."""
    from . import models
    if args.model not in models.MODELS:
        t.error(f"unknown model {args.model!r}; available: {', '.join(sorted(models.MODELS))}")
    task = task_of(args.model)
    if args.num_classes is not None and task not in ("digits", "synthetic"):
        t.error(f"--num-classes applies to classification models, not {args.model}")
    if args.data is not None and task != "digits":
        t.error(f"--data applies to lenet5 (MNIST-format IDX files); {args.model} trains on "
                f"{_tasks.DESCRIPTIONS[task]}")
    if args.samples is not None and DEFAULTS[task]["samples"] is None:
        t.error(f"--samples sets the size of a synthetic data set; {args.model} trains on "
                f"{_tasks.DESCRIPTIONS[task]}")
    if args.augment and task not in ("digits", "synthetic"):
        t.error(f"--augment applies to classification models; {args.model}'s targets are images "
                f"({'masks' if task == 'segment' else 'clean digits'}) that would have to move with the input")
    for name in ("epochs", "batch_size", "threads", "samples", "num_classes"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "threads" else 1):
            t.error(f"--{name.replace('_', '-')} must be positive")
    if args.lr is not None and not args.lr > 0:
        t.error(f"--lr must be positive, got {args.lr}")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        t.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.sync_bn and not args.distributed:
        t.error("--sync-bn synchronizes BatchNorm statistics across the processes of --distributed training")


def main(argv=None) -> int:
    """Runs the command line argv (default: sys.argv[1:], with the program name taken from sys.argv[0]);
    returns the exit status."""
    p, subs = _parser(_prog() if argv is None else "python -m cnnnative")
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
        return _convert(args, subs["convert"])
    if args.cmd is None:
        p.print_help()
        return 2
    sp = subs[args.cmd]
    for name in ("batch_size", "top", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < (0 if name == "threads" else 1):
            sp.error(f"--{name.replace('_', '-')} must be positive")
    if args.cmd == "train":
        _check_train_options(args, sp)
    run = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "demo": _demo,
           "report": _report}[args.cmd]
    import cnnnative
    from . import distributed
    try:
        return run(args) if args.cmd in ("train", "demo") else run(args, sp)
    except (cnnnative.Error, ValueError, OSError, ImportError, distributed.DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)  # ImportError: an optional package missing
        if distributed.world_size() > 1:  # the other ranks may be waiting for this one: end the job
            distributed.abort(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
