"""A training run as pictures: `python -m cnnnative report CHECKPOINT` (and `train --plot`).

report(checkpoint, out_dir) rebuilds the model and its test data from a checkpoint written by
`python -m cnnnative train`, then draws with cnnnative.viz: the training curves (from the history file
beside the checkpoint), the first convolution's filters, feature maps of one test input, the task's
pictures (confusion matrix and augmentation gallery for classifiers, predicted masks beside the truth for
segmentation, noisy / denoised / clean triples for the autoencoder), the memory plan of inference and of a
training step with and without recompute, and the per-node profile of inference runs; then one
self-contained HTML file holding them all. Every picture is a PNG in out_dir, written atomically."""
from __future__ import annotations

import os

import numpy as np

from . import _tasks

PROFILE_RUNS = 5  # inference runs timed for the profile picture


def _pictures(model, cfg, ds, spec, out_dir, log, batch_eval):
    from . import data, viz
    from .train import predict
    task = _tasks.task_of(cfg["model"])
    x_tr, t_tr, x_te, t_te = ds
    name = cfg["model"]
    path = lambda stem: os.path.join(out_dir, f"{name}.{stem}.png")  # noqa: E731
    sections = []

    def add(title, fn, *a, **kw):
        p = fn(*a, **kw)
        log(f"wrote {p}")
        sections.append((title, p))

    if viz._conv_types() and any(isinstance(m, viz._conv_types()) for _, m in model.named_modules()):
        add("Filters of the first convolution", viz.filters, model, path("filters"))
        add("Feature maps of one test input (the engine's own inference session)", viz.feature_maps, model,
            x_te[0], path("feature_maps"))
    bs = min(batch_eval, len(x_te))
    # whole batches: under load a session may run its batch in pieces, which profile() does not time per node
    sess = model.compile((bs,) + tuple(x_te.shape[1:]), mode="infer", dtype=cfg.get("dtype", "float32"),
                         batch_pieces=False)
    out = predict(model, x_te, bs, sess)
    if task in ("digits", "synthetic"):
        acc = float(np.mean(out.argmax(1) == t_te))
        add(f"Confusion matrix on the {len(t_te)} test images (accuracy {acc:.4f})", viz.confusion_matrix,
            t_te, out, path("confusion"), num_classes=cfg["num_classes"])
        aug = data.default_augment(flip=task == "synthetic")
        add("Augmentations (--augment): the same training images under each transform", viz.augmentations,
            x_tr[:8], path("augmentations"), transforms=list(aug.transforms))
    elif task == "segment":
        add("Test images, ground truth and predicted masks", viz.masks, x_te, t_te, out, path("masks"), logits=True)
    else:
        add("Noisy input, the autoencoder's output, clean target", viz.denoise, x_te, out, t_te, path("denoise"))
    for _ in range(PROFILE_RUNS):
        sess.run(np.ascontiguousarray(x_te[:bs], np.float32))
    add(f"Where inference time goes (batch {bs}, {PROFILE_RUNS} runs)", viz.profile, sess, path("profile"))
    loss = {"digits": "cross_entropy", "synthetic": "cross_entropy", "segment": "bce_with_logits"}.get(task, "mse")
    add(f"The memory plan (batch {cfg['batch_size']}): inference, a training step, and a training step with "
        "recompute", viz.memory_plan, model, path("memory_plan"),
        input_shape=(cfg["batch_size"],) + tuple(x_tr.shape[1:]), loss=loss)
    return sections


def report(checkpoint, out_dir=None, threads=None, log=print) -> str:
    """Draws the pictures of a CLI checkpoint into out_dir (default: the checkpoint's folder) and writes
    MODEL.report.html there; returns its path."""
    import cnnnative
    from . import viz
    from .train import history_paths

    viz._matplotlib()  # a clear ImportError before any work
    if threads:
        cnnnative.set_num_threads(threads)
    cfg, info = _tasks.cli_settings(checkpoint)
    model = _tasks.build_model(cfg)
    cnnnative.load_checkpoint(model, checkpoint)
    out_dir = out_dir or os.path.dirname(os.path.abspath(checkpoint))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out-dir {out_dir} is a file, not a folder")
    os.makedirs(out_dir, exist_ok=True)
    ds, source, spec = _tasks.load_data(cfg)
    sections = [("Run", f"model {cfg['model']} ({model.num_parameters():,} parameters), trained "
                        f"{info['epoch']}/{info['epochs']} epochs on {source}\ncheckpoint {os.path.abspath(checkpoint)}")]
    hist_json = history_paths(checkpoint)[0]
    if os.path.exists(hist_json):
        p = plot_history(checkpoint, os.path.join(out_dir, f"{cfg['model']}.history.png"))
        log(f"wrote {p}")
        sections.append(("Training curves", p))
    else:
        sections.append(("Training curves", f"no history file ({hist_json}): checkpoints written before "
                                            "history files existed have none"))
    sections += _pictures(model, cfg, ds, spec, out_dir, log, 256 if cfg["batch_size"] < 256 else cfg["batch_size"])
    html = viz.html_report(sections, os.path.join(out_dir, f"{cfg['model']}.report.html"),
                           title=f"cnnnative report: {cfg['model']}")
    log(f"wrote {html}")
    return html


def plot_history(checkpoint, out=None) -> str:
    """The training curves of the history file beside a checkpoint (default out: CHECKPOINT.history.png)."""
    from . import viz
    from .train import history_paths
    hist_json = history_paths(checkpoint)[0]
    if not os.path.exists(hist_json):
        raise FileNotFoundError(f"no history file {hist_json} beside {checkpoint}")
    out = out or hist_json[:-len(".json")] + ".png"
    return viz.history(hist_json, out)
