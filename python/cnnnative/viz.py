"""cnnnative.viz: pictures of a model and its runs, drawn with matplotlib (the optional `viz` extra).

Every drawing function writes one PNG atomically (cnnnative._atomic.write_atomic: a temporary file beside the
target, renamed over it) and returns its absolute path; bad input raises one error before anything is
written. Figures are plain matplotlib Figures on the Agg canvas: pyplot's global state (its backend, its list
of open figures) is never touched, so nothing is left open and a notebook's backend stays as it was.

  history(hist, out)                         training curves of a *.history.json file or fit()'s history list
  filters(model, out, layer=None)            the weights of a convolution, one tile per output channel
  feature_maps(model, x, out, layers=None)   the activations of chosen layers for one input (engine sessions)
  feature_map_arrays(model, x, layers)       the same activations as numpy arrays
  memory_plan(sess_or_model, out, ...)       every planned buffer over schedule steps and arena offsets
  profile(sess, out)                         per-node time of a session as bars
  confusion_matrix(y_true, y_pred, out)      and confusion_counts(y_true, y_pred, num_classes)
  augmentations(x, out)                      the same images under each augmentation of cnnnative.data
  masks(images, truth, pred, out)            segmentation: image / ground truth / prediction / errors
  denoise(noisy, denoised, clean, out)       autoencoder triples
  html_report(sections, out)                 one self-contained HTML file (PNGs embedded as data URIs)
  readme_images(out_dir)                     regenerates the pictures under docs/img

All functions take figsize= (inches) and dpi= keywords; the PNG is exactly figsize * dpi pixels.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os

import numpy as np

from ._atomic import write_atomic

__all__ = ["history", "filters", "feature_maps", "feature_map_arrays", "memory_plan", "profile", "confusion_matrix",
           "confusion_counts", "augmentations", "masks", "denoise", "html_report", "readme_images"]

_DPI = 100
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_KIND_COLORS = {"activation": "#4c72b0", "recomputed": "#dd8452", "gradient": "#c44e52", "workspace": "#8c8c8c"}
_MIB = 1.0 / 2 ** 20


# ------------------------------------------------------------------------------------------------------
# figure plumbing
# ------------------------------------------------------------------------------------------------------

def _matplotlib():
    """(Figure, FigureCanvasAgg), imported on first use: matplotlib is an optional dependency."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("cnnnative.viz draws with matplotlib, which is not installed: pip install matplotlib "
                          "(or pip install '.[viz]' from the cnnnative repository)") from e
    return Figure, FigureCanvasAgg


def _figure(figsize, dpi):
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=tuple(float(v) for v in figsize), dpi=float(dpi), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _out_path(out, what) -> str:
    """The PNG path to write, checked before any work (a PNG written under another extension would mislead)."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{what}: out must be a file path (str or os.PathLike), got {type(out).__name__}")
    path = os.fspath(out)
    if not path.lower().endswith(".png"):
        raise ValueError(f"{what}: out must name a .png file (the pictures are PNG), got {path!r}")
    return path


def _check_size(figsize, dpi, what):
    if figsize is not None:
        if len(figsize) != 2 or not all(isinstance(v, (int, float)) and 0 < v <= 100 for v in figsize):
            raise ValueError(f"{what}: figsize must be (width, height) in inches, each in (0, 100], got {figsize!r}")
    if not isinstance(dpi, (int, float)) or isinstance(dpi, bool) or not 10 <= dpi <= 600:
        raise ValueError(f"{what}: dpi must be a number in [10, 600], got {dpi!r}")


def _save(fig, path) -> str:
    """Writes the figure as PNG atomically; the figure is cleared (its artists freed) whatever happens."""
    try:
        return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi))
    finally:
        fig.clear()


def _mosaic(tiles, cols, pad=1, fill=np.nan):
    """tiles [n, h, w] or [n, h, w, 3] laid out row-major in a grid of `cols` columns, `pad` pixels apart."""
    n, h, w = tiles.shape[:3]
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad) + tiles.shape[3:], fill, np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = tiles[i]
    return grid


def _cmap(name, bad="white"):
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _show_image(ax, img, vmin=None, vmax=None, cmap="gray"):
    """One image [C, H, W] or [H, W]: RGB when C == 3 (scaled by vmin..vmax), else its first channel."""
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[0] == 3:
        lo = float(img.min()) if vmin is None else vmin
        hi = float(img.max()) if vmax is None else vmax
        rgb = np.clip((img - lo) / ((hi - lo) or 1.0), 0, 1).transpose(1, 2, 0)
        ax.imshow(rgb, interpolation="nearest")
    else:
        ax.imshow(img[0] if img.ndim == 3 else img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _list_paths(paths, limit=60) -> str:
    paths = list(paths)
    s = ", ".join(paths[:limit])
    return s + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# ------------------------------------------------------------------------------------------------------
# training history
# ------------------------------------------------------------------------------------------------------

_METRIC_KEYS = ("train_acc", "test_acc", "IoU", "MSE")


def _load_history(hist) -> dict:
    """The history as {'model', 'task', 'metric', 'epochs', 'steps'}, checked; ValueError naming what is wrong."""
    src = "history"
    if isinstance(hist, (str, os.PathLike)):
        path = os.fspath(hist)
        with open(path, "rb") as f:
            raw = f.read()
        src = f"history file {path}"
        try:
            hist = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{src} is not JSON ({e}); expected a cnnnative training history "
                             "(*.history.json)") from None
    fmt = ("a list of per-epoch records (what cnnnative.train.fit returns) or a dict {'epochs': [...], "
           "'steps': [...], 'model', 'task', 'metric'}")
    if hasattr(hist, "to_dict"):  # what cnnnative.train.fit returns: epochs and steps
        hist = hist.to_dict()
    if isinstance(hist, (list, tuple)):
        hist = {"epochs": list(hist)}
    if not isinstance(hist, dict):
        raise ValueError(f"{src} is not a training history: expected {fmt}, got {type(hist).__name__}")
    epochs = hist.get("epochs")
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"{src} is not a training history: no 'epochs' list of records (expected {fmt})")
    for i, r in enumerate(epochs):
        if not isinstance(r, dict):
            raise ValueError(f"{src}: epochs[{i}] is a {type(r).__name__}, expected a dict of numbers")
        if not (_number(r.get("epoch")) and _number(r.get("loss"))):
            raise ValueError(f"{src}: epochs[{i}] lacks a number under 'epoch' or 'loss' (keys: {sorted(r)})")
        bad = [k for k in ("lr", "images_per_s", "seconds") + _METRIC_KEYS if k in r and not _number(r[k])]
        if bad:
            raise ValueError(f"{src}: epochs[{i}][{bad[0]!r}] is {r[bad[0]]!r}, expected a number")
    steps = hist.get("steps") or []
    if not isinstance(steps, list):
        raise ValueError(f"{src}: 'steps' must be a list of per-step records, got {type(steps).__name__}")
    for i, r in enumerate(steps):
        if not isinstance(r, dict) or not (_number(r.get("step")) and _number(r.get("loss"))):
            raise ValueError(f"{src}: steps[{i}] must be a dict with numbers under 'step' and 'loss', got {r!r}")
        for k in ("epoch", "loss_smooth"):
            if k in r and not _number(r[k]):
                raise ValueError(f"{src}: steps[{i}][{k!r}] is {r[k]!r}, expected a number")
    metric = hist.get("metric")
    if metric is not None and not any(metric in r for r in epochs):
        raise ValueError(f"{src}: metric {metric!r} appears in no epoch record")
    return {"model": str(hist.get("model") or ""), "task": str(hist.get("task") or ""), "metric": metric,
            "epochs": epochs, "steps": steps}


def _ema(values, beta=0.9):
    """Exponential moving average with bias correction (as the training loop's loss_smooth)."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def _step_positions(steps, n_epochs):
    """x positions (in epochs) of the per-step records: step k of m within epoch e sits at e - 1 + k/m."""
    if all("epoch" in r for r in steps):
        counts = {}
        for r in steps:
            counts[r["epoch"]] = counts.get(r["epoch"], 0) + 1
        seen, xs = {}, []
        for r in steps:
            e = r["epoch"]
            seen[e] = seen.get(e, 0) + 1
            xs.append(e - 1 + seen[e] / counts[e])
        return np.array(xs, float)
    s = np.array([r["step"] for r in steps], float)
    return s * n_epochs / max(s.max(), 1.0)


def _empty_panel(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.45")
    ax.set_xticks([])
    ax.set_yticks([])


def history(hist, out, smooth_steps=True, figsize=(11, 7), dpi=_DPI) -> str:
    """Training curves: loss (per-step raw and smoothed when the history has steps, one marker per epoch), the
    metric(s) (accuracy in %, IoU, MSE), the learning rate and the throughput per epoch. `hist`: a path to a
    *.history.json file, a dict of that format, or the list of per-epoch dicts that cnnnative.train.fit returns.
    Returns the PNG's path."""
    path = _out_path(out, "history")
    _check_size(figsize, dpi, "history")
    h = _load_history(hist)
    ep = h["epochs"]
    ex = np.array([r["epoch"] for r in ep], float)
    fig = _figure(figsize, dpi)
    axs = fig.subplots(2, 2, squeeze=False)
    (ax_loss, ax_metric), (ax_lr, ax_speed) = axs

    # loss
    steps = h["steps"]
    losses = [r["loss"] for r in ep]
    if steps:
        sx = _step_positions(steps, len(ep))
        raw = np.array([r["loss"] for r in steps], float)
        ax_loss.plot(sx, raw, color="#4c72b0", alpha=0.25 if smooth_steps else 0.8, lw=0.8, label="per step")
        if smooth_steps:
            sm = (np.array([r["loss_smooth"] for r in steps], float) if all("loss_smooth" in r for r in steps)
                  else _ema(raw))
            ax_loss.plot(sx, sm, color="#4c72b0", lw=1.8, label="per step, smoothed")
        losses = losses + list(raw)
    ax_loss.plot(ex, [r["loss"] for r in ep], "o-", color="#c44e52", lw=1.2, ms=4, label="epoch mean")
    pos = [v for v in losses if v > 0 and math.isfinite(v)]
    if pos and len(pos) == len(losses) and max(pos) / min(pos) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)

    # metric(s)
    present = [k for k in _METRIC_KEYS if any(k in r for r in ep)]
    if h["metric"] and h["metric"] not in present:
        present.append(h["metric"])
    if present:
        acc = [k for k in present if k.endswith("_acc")]
        for k in present:
            pts = [(r["epoch"], r[k]) for r in ep if k in r]
            x, y = zip(*pts)
            y = np.array(y, float) * (100 if k in acc else 1)
            ax_metric.plot(x, y, "o-", ms=4, label=k.replace("_", " "))
        main = h["metric"] if h["metric"] in present else present[-1]
        vals = [(r[main], r["epoch"]) for r in ep if main in r]
        best = min(vals) if main == "MSE" else max(vals)
        scale = 100 if main.endswith("_acc") else 1
        unit = "%" if scale == 100 else ""
        ax_metric.plot([best[1]], [best[0] * scale], "*", color="black", ms=9, zorder=3)
        ax_metric.annotate(f"best {best[0] * scale:.4g}{unit} (epoch {best[1]:g})", (best[1], best[0] * scale),
                           textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
        if main == "MSE" and all(v > 0 for v, _ in vals):
            ax_metric.set_yscale("log")
        ax_metric.set_title("accuracy (%)" if acc and len(acc) == len(present) else ", ".join(present))
        ax_metric.set_xlabel("epoch")
        ax_metric.legend(fontsize=8)
        ax_metric.grid(alpha=0.3)
    else:
        _empty_panel(ax_metric, "no metric in this history")

    # learning rate
    lr = [(r["epoch"], r["lr"]) for r in ep if "lr" in r]
    if lr:
        x, y = zip(*lr)
        ax_lr.plot(x, y, "o-", color="#55a868", ms=4)
        ax_lr.set_title("learning rate")
        ax_lr.set_xlabel("epoch")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax_lr.grid(alpha=0.3)
    else:
        _empty_panel(ax_lr, "no learning rate in this history")

    # throughput
    ips = [(r["epoch"], r["images_per_s"]) for r in ep if "images_per_s" in r]
    if ips:
        x, y = zip(*ips)
        ax_speed.bar(x, y, color="#8172b3", width=0.7)
        ax_speed.set_title(f"training images/s (mean {np.mean(y):,.0f})")
        ax_speed.set_xlabel("epoch")
        ax_speed.grid(alpha=0.3, axis="y")
    else:
        _empty_panel(ax_speed, "no throughput in this history")
    for ax in (ax_loss, ax_metric, ax_lr, ax_speed):
        if ax.has_data():
            ax.set_xlim(0 if steps else ex.min() - 0.5, ex.max() + 0.5)
    title = " - ".join(v for v in (h["model"], h["task"]) if v) or "training history"
    fig.suptitle(f"{title}: {len(ep)} epoch{'s' if len(ep) != 1 else ''}")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# weights and activations
# ------------------------------------------------------------------------------------------------------

def _conv_types():
    from . import nn
    return (nn.Conv2d, nn.ConvTranspose2d)


def _modules(model, what) -> dict:
    if not hasattr(model, "named_modules"):
        raise TypeError(f"{what}: expected a cnnnative.nn.Module, got {type(model).__name__}")
    return {p: m for p, m in model.named_modules() if p}


def _conv_weight(m) -> np.ndarray:
    """The weight as [out_channels, in_channels/groups, R, S] (ConvTranspose2d stores [in, out/groups, R, S])."""
    from . import nn
    w = np.asarray(m.weight, np.float32)
    if isinstance(m, nn.ConvTranspose2d):
        g = m.groups
        cin, cog, r, s = w.shape
        w = w.reshape(g, cin // g, cog, r, s).transpose(0, 2, 1, 3, 4).reshape(g * cog, cin // g, r, s)
    return w


def filters(model, out, layer=None, max_filters=64, channel=None, figsize=None, dpi=_DPI) -> str:
    """The weights of a convolution as a grid, one tile per output channel (at most max_filters): RGB when the
    layer reads 3 channels, else the mean over its input channels (or input channel `channel`) on a diverging
    colormap. Each tile is scaled symmetrically around 0 by its own largest magnitude. layer: a module path
    ("conv1", "layer1.0.conv1"); default the first Conv2d. Returns the PNG's path."""
    path = _out_path(out, "filters")
    _check_size(figsize, dpi, "filters")
    mods = _modules(model, "filters")
    convs = [p for p, m in mods.items() if isinstance(m, _conv_types())]
    if layer is None:
        if not convs:
            raise ValueError(f"filters: the model has no Conv2d/ConvTranspose2d layer (its modules: "
                             f"{_list_paths(mods) or 'none'})")
        layer = convs[0]
    elif layer not in mods:
        raise ValueError(f"filters: the model has no module {layer!r}; its convolution layers are: "
                         f"{_list_paths(convs) or 'none'}")
    elif not isinstance(mods[layer], _conv_types()):
        raise ValueError(f"filters: module {layer!r} is a {type(mods[layer]).__name__}, not a convolution; the "
                         f"convolution layers are: {_list_paths(convs) or 'none'}")
    if not isinstance(max_filters, int) or isinstance(max_filters, bool) or max_filters < 1:
        raise ValueError(f"filters: max_filters must be a positive int, got {max_filters!r}")
    w = _conv_weight(mods[layer])
    k, c = w.shape[:2]
    if channel is not None and not (isinstance(channel, int) and 0 <= channel < c):
        raise ValueError(f"filters: channel must be an input channel index in [0, {c}) of {layer!r}, "
                         f"got {channel!r}")
    n = min(k, max_filters)
    w = w[:n]
    rgb = c == 3 and channel is None
    if rgb:
        m = np.abs(w).reshape(n, -1).max(1)[:, None, None, None]
        tiles = (w / (2 * np.where(m > 0, m, 1)) + 0.5).transpose(0, 2, 3, 1)
    else:
        t = w.mean(1) if channel is None else w[:, channel]
        m = np.abs(t).reshape(n, -1).max(1)[:, None, None]
        tiles = t / np.where(m > 0, m, 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    if figsize is None:
        figsize = (max(4.0, 1.0 * cols + 1.2), max(3.0, 1.0 * rows + 1.0))
    fig = _figure(figsize, dpi)
    ax = fig.subplots()
    grid = _mosaic(tiles, cols, fill=1.0 if rgb else np.nan)
    if rgb:
        ax.imshow(grid, interpolation="nearest")
    else:
        im = ax.imshow(grid, cmap=_cmap("RdBu_r"), vmin=-1, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7, label="weight / max |weight| of the tile")
    ax.set_xticks([])
    ax.set_yticks([])
    how = "RGB" if rgb else ("mean over input channels" if channel is None and c > 1 else
                             f"input channel {channel if channel is not None else 0}")
    ax.set_title(f"{layer}: {n} of {k} filters, {c}x{w.shape[2]}x{w.shape[3]} ({how})", fontsize=10)
    return _save(fig, path)


def _one_input(x, what) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{what}: x must be one input [C, H, W] or [1, C, H, W], got shape {list(x.shape)}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{what}: x must hold numbers, got dtype {x.dtype}")
    return np.ascontiguousarray(x, np.float32)


def _default_layers(mods, what, limit=6) -> list:
    from . import nn
    convs = [p for p, m in mods.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{what}: the model has no Conv2d layer; name the layers (module paths: "
                         f"{_list_paths(mods) or 'none'})")
    return convs[:limit]


def feature_map_arrays(model, x, layers=None) -> dict:
    """The outputs of the given layers (module paths; default every Conv2d, at most 6) for ONE input x
    ([C, H, W] or [1, C, H, W]), computed by an inference session of the engine whose outputs are those layers'
    outputs (the model is traced with its forward(); BatchNorm/dropout in eval behaviour). Returns
    {path: array without the batch dimension} in the order given; a module called more than once by forward()
    (a shared ReLU) gives one entry per call: path, then path#2, path#3, ..."""
    from . import _core
    from .graph import GraphBuilder, Tensor

    x = _one_input(x, "feature_map_arrays")
    mods = _modules(model, "feature_map_arrays")
    if layers is None:
        layers = _default_layers(mods, "feature_map_arrays")
    elif isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("feature_map_arrays: layers is empty; give module paths or None for the convolutions")
    unknown = [p for p in layers if p not in mods]
    if unknown:
        raise ValueError(f"feature_map_arrays: the model has no module {unknown[0]!r}; its module paths are: "
                         f"{_list_paths(mods)}")
    # each chosen module's forward is wrapped (an instance attribute, removed afterwards) to record its outputs
    taps = {p: [] for p in layers}
    patched = []
    store = model._ensure_store()
    try:
        for p in layers:
            m = mods[p]
            if "forward" in m.__dict__:
                raise ValueError(f"feature_map_arrays: module {p!r} has an instance attribute 'forward'; cannot "
                                 "record its output")
            orig = m.forward

            def recording(*args, _orig=orig, _taps=taps[p]):
                y = _orig(*args)
                _taps.append(y)
                return y
            object.__setattr__(m, "forward", recording)
            patched.append(m)
        model._name_tensors()
        b = GraphBuilder(False)
        with b, model._training_as(False):  # self.training in forward() is False, as in compile()
            xin = b.input("x", x.shape)
            model(xin)
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)
    names, vids = [], []
    for p in layers:
        if not taps[p]:
            raise ValueError(f"feature_map_arrays: module {p!r} is not called by the model's forward(), so it "
                             "has no output")
        for i, t in enumerate(taps[p]):
            if not isinstance(t, Tensor):
                raise ValueError(f"feature_map_arrays: module {p!r} returns a {type(t).__name__}, not one tensor")
            names.append(p if i == 0 else f"{p}#{i + 1}")
            vids.append(t.vid)
    b.graph.set_outputs(list(dict.fromkeys(vids)))
    index = {v: i for i, v in enumerate(dict.fromkeys(vids))}
    sess = _core.Session(b.graph, store, "infer")
    sess.run([x])
    return {n: np.array(sess.fetch(index[v]))[0] for n, v in zip(names, vids)}


def feature_maps(model, x, out, layers=None, max_channels=16, figsize=None, dpi=_DPI) -> str:
    """The activations of the given layers (default every Conv2d, at most 6) for ONE input x, as one grid per
    layer (at most max_channels channels, each scaled to its own min..max), under the input. Computed by
    feature_map_arrays (an engine session). Returns the PNG's path."""
    path = _out_path(out, "feature_maps")
    _check_size(figsize, dpi, "feature_maps")
    if not isinstance(max_channels, int) or isinstance(max_channels, bool) or max_channels < 1:
        raise ValueError(f"feature_maps: max_channels must be a positive int, got {max_channels!r}")
    x = _one_input(x, "feature_maps")
    maps = feature_map_arrays(model, x, layers)
    cols = min(8, max_channels)
    rows = []
    for name, a in maps.items():
        if a.ndim == 3:
            n = min(a.shape[0], max_channels)
            t = a[:n]
            lo = t.reshape(n, -1).min(1)[:, None, None]
            hi = t.reshape(n, -1).max(1)[:, None, None]
            grid = _mosaic((t - lo) / np.where(hi > lo, hi - lo, 1), min(cols, n))
            label = f"{name}: {list(a.shape)}, channels 0-{n - 1} of {a.shape[0]}"
        else:
            v = a.reshape(-1)
            lo, hi = float(v.min()), float(v.max())
            width = min(32, v.size)
            pad = np.full(math.ceil(v.size / width) * width, np.nan, np.float32)
            pad[:v.size] = (v - lo) / ((hi - lo) or 1.0)
            grid = pad.reshape(-1, width)
            label = f"{name}: {list(a.shape)} (row-major, {width} per row)"
        rows.append((label, grid))
    if figsize is None:
        height = 0.6 + sum(min(3.2, max(0.9, 8.0 * g.shape[0] / g.shape[1])) + 0.35 for _, g in rows) + 1.6
        figsize = (8.5, min(height, 40.0))
    fig = _figure(figsize, dpi)
    ratios = [1.4] + [max(0.6, min(3.2, 8.0 * g.shape[0] / g.shape[1])) for _, g in rows]
    axs = fig.subplots(len(rows) + 1, 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)[:, 0]
    _show_image(axs[0], x[0])
    axs[0].set_title(f"input {list(x.shape[1:])}", fontsize=9)
    cmap = _cmap("viridis")
    for ax, (label, grid) in zip(axs[1:], rows):
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=9)
    fig.suptitle("feature maps (each channel scaled to its own min..max)", fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# memory plan and profile
# ------------------------------------------------------------------------------------------------------

_PLAN_MODES = {"infer": ("infer", "none"), "train": ("train", "none"), "segments": ("train", "segments"),
               "cheap": ("train", "cheap")}


def _plan_of(sess, label):
    for attr in ("memory_plan", "memory_report", "schedule", "num_forward_steps"):
        if not hasattr(sess, attr):
            raise TypeError(f"memory_plan: expected a compiled cnnnative Session or a Module, got "
                            f"{type(sess).__name__} (no {attr})")
    plan, rep = sess.memory_plan(), sess.memory_report()
    return {"label": label, "plan": plan, "report": rep, "forward": int(sess.num_forward_steps),
            "steps": len(sess.schedule())}


def _session_label(sess, plan) -> str:
    mode = {"infer": "inference", "train": "training step"}.get(getattr(sess, "mode", ""), "session")
    rc = ", recomputing" if any(b["kind"] == "recomputed" for b in plan) else ""
    shape = getattr(sess, "input_shape", None)
    return f"{mode}{rc}" + (f" {list(shape)}" if shape else "")


def memory_plan(sess_or_model, out, input_shape=None, modes=("infer", "train", "segments", "cheap"), loss=None,
                title=None, figsize=None, dpi=_DPI) -> str:
    """The memory plan: every arena buffer as a rectangle (x: the schedule steps it is live on, y: its offset in
    the arena, MiB), coloured by kind (activation, recomputed, gradient); the kernel workspaces in a band above
    the arena (they share one scratch block); the arena's size and the planner's lower bound (most bytes live
    at one step) as horizontal lines; the start of the backward pass as a vertical line.

    sess_or_model: a compiled Session (one panel), or a Module with input_shape: one panel per mode, side by
    side on the same y scale, of 'infer', 'train', 'segments' (train with recompute='segments'), 'cheap'
    (recompute='cheap'). loss (training panels): default 'cross_entropy' for [N, classes] outputs, else 'mse'.
    title: default the model's class name. Returns the PNG's path."""
    path = _out_path(out, "memory_plan")
    _check_size(figsize, dpi, "memory_plan")
    if hasattr(sess_or_model, "named_modules"):
        from .session import resolve_input_shape
        try:  # as compile() takes it: a shape, a batch size, or None for the shape the model declares
            input_shape = resolve_input_shape(sess_or_model, input_shape)
        except (TypeError, ValueError) as e:
            raise type(e)(f"memory_plan: {e}") from None
        if isinstance(modes, str):
            modes = (modes,)
        bad = [m for m in modes if m not in _PLAN_MODES]
        if bad or not modes:
            raise ValueError(f"memory_plan: unknown mode {bad[0] if bad else None!r}; modes are "
                             f"{', '.join(_PLAN_MODES)}")
        from .optim import SGD
        panels = []
        for name in modes:
            mode, rc = _PLAN_MODES[name]
            kw = {}
            if mode == "train":
                if loss is None:
                    _, _, y = sess_or_model.trace(tuple(input_shape), training=True)
                    loss = "cross_entropy" if len(y.shape) == 2 else "mse"
                kw = {"optimizer": SGD(lr=0.01), "loss": loss, "recompute": rc}
            s = sess_or_model.compile(tuple(input_shape), mode=mode, **kw)
            label = "inference" if mode == "infer" else "training step" + (f", recompute='{rc}'" if rc != "none"
                                                                            else "")
            panels.append(_plan_of(s, f"{label} {list(input_shape)}"))
            del s
        title = title or f"{type(sess_or_model).__name__}: memory plans"
    else:
        if input_shape is not None:
            raise ValueError("memory_plan: input_shape applies to a model; a session has its own")
        panels = [_plan_of(sess_or_model, "")]
        panels[0]["label"] = _session_label(sess_or_model, panels[0]["plan"])
        title = title or "memory plan"
    tops = []
    for p in panels:
        work = [b for b in p["plan"] if b["kind"] == "workspace"]
        p["scratch"] = max((b["bytes"] for b in work), default=0) * _MIB
        p["arena"] = p["report"]["arena_bytes"] * _MIB
        tops.append((p["arena"], p["scratch"]))
    peak = max(a for a, _ in tops) or 1.0
    gap = 0.05 * peak
    ymax = max(a + gap + s for a, s in tops) * 1.06 or 1.0
    if figsize is None:
        figsize = (min(5.2 * len(panels) + 0.6, 24), 5.2)
    fig = _figure(figsize, dpi)
    axs = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, p in zip(axs, panels):
        rep = p["report"]
        arena, lower = p["arena"], rep["lower_bound_bytes"] * _MIB
        by_kind = {}
        for b in p["plan"]:
            by_kind.setdefault(b["kind"], []).append(b)
        for kind, blocks in by_kind.items():
            base = 0.0 if kind != "workspace" else arena + gap
            ax.bar([b["first"] for b in blocks], [b["bytes"] * _MIB for b in blocks],
                   width=[b["last"] - b["first"] + 1 for b in blocks],
                   bottom=[base + b["offset"] * _MIB for b in blocks], align="edge",
                   color=_KIND_COLORS.get(kind, "#937860"), edgecolor="white", linewidth=0.4,
                   label=f"{kind} ({len(blocks)})")
        ax.axhline(arena, color="black", lw=1.0)
        ax.axhline(lower, color="#c44e52", lw=1.0, ls="--")
        if p["scratch"]:
            ax.text(0.5, arena + gap + p["scratch"], f"workspace (scratch, {p['scratch']:.2f} MiB)",
                    fontsize=7, va="bottom", color="0.3")
        if p["forward"] < p["steps"]:
            ax.axvline(p["forward"], color="0.3", lw=1.0, ls=":")
            ax.text(p["forward"], ymax * 0.99, " backward", fontsize=8, va="top", color="0.3")
        ax.set_xlim(0, p["steps"] + 1)
        ax.set_ylim(0, ymax)
        ax.set_xlabel("schedule step")
        ax.set_title(f"{p['label']}\narena {arena:.2f} MiB, lower bound {lower:.2f} MiB, "
                     f"without reuse {rep['naive_bytes'] * _MIB:.2f}", fontsize=9)
        ax.grid(alpha=0.2, axis="y")
    axs[0].set_ylabel("arena offset (MiB)")
    _plan_legend(fig, panels)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _plan_legend(fig, panels):
    """One legend for all panels, under them: the kinds present, the arena line and the lower bound line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    kinds = list(dict.fromkeys(b["kind"] for p in panels for b in p["plan"]))
    kinds.sort(key=lambda k: list(_KIND_COLORS).index(k) if k in _KIND_COLORS else len(_KIND_COLORS))
    handles = [Patch(color=_KIND_COLORS.get(k, "#937860"), label=k + (" (scratch block)" if k == "workspace" else ""))
               for k in kinds]
    handles += [Line2D([], [], color="black", lw=1.0, label="arena size"),
                Line2D([], [], color="#c44e52", lw=1.0, ls="--", label="lower bound (most bytes live at one step)"),
                Line2D([], [], color="0.3", lw=1.0, ls=":", label="backward pass starts")]
    try:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    except ValueError:  # matplotlib < 3.7: no 'outside' placement
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


_OP_COLORS = (("conv", "#4c72b0"), ("linear", "#55a868"), ("matmul", "#55a868"), ("pool", "#dd8452"),
              ("norm", "#8172b3"), ("optimizer", "#c44e52"), ("sgd", "#c44e52"), ("adam", "#c44e52"))


def profile(sess, out, top=20, figsize=None, dpi=_DPI) -> str:
    """sess.profile() (op, name, calls, ms per call, GFLOP/s, share) as horizontal bars of each node's share of
    the time, the slowest on top (at most `top`), after the caller ran the session a few times. sess may also
    be the list of rows sess.profile() returned. Returns the PNG's path."""
    path = _out_path(out, "profile")
    _check_size(figsize, dpi, "profile")
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"profile: top must be a positive int, got {top!r}")
    rows = sess.profile() if hasattr(sess, "profile") else sess
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) and {"op", "name", "calls", "ms", "share"}
                                                      <= set(r) for r in rows):
        raise TypeError(f"profile: expected a Session or the rows of Session.profile(), got {type(sess).__name__}")
    rows = sorted((r for r in rows if r["calls"] > 0), key=lambda r: -r["share"])
    if not rows:
        if getattr(sess, "batch_pieces", None) is not None:
            raise ValueError("profile: the session ran its batches in pieces (auto threads on a busy machine), "
                             "which profile() does not time per node; compile it with batch_pieces=False (or a fixed "
                             "thread count) to profile it")
        raise ValueError("profile: the session has no timings yet: run it (sess.run / sess.step) a few times "
                         "before drawing its profile")
    shown = rows[:top]
    total_ms = sum(r["ms"] * r["calls"] for r in rows) / max(r["calls"] for r in rows)
    if figsize is None:
        figsize = (10, 1.4 + 0.32 * len(shown))
    fig = _figure(figsize, dpi)
    ax = fig.subplots()
    y = np.arange(len(shown))
    colors = []
    for r in shown:
        op = r["op"].lower()
        colors.append(next((c for k, c in _OP_COLORS if k in op), "#937860"))
    share = [100 * r["share"] for r in shown]
    ax.barh(y, share, color=colors)
    ax.set_yticks(y, [f"{r['name'][:32]}  ({r['op']})" for r in shown], fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(shown):
        g = f", {r['gflops']:.1f} GFLOP/s" if r.get("gflops") else ""
        ax.text(share[i], i, f" {r['ms']:.3f} ms x{r['calls']}{g}", va="center", fontsize=7)
    ax.set_xlim(0, max(share) * 1.45)
    ax.set_xlabel("share of the session's time (%)")
    more = f", {len(rows) - len(shown)} more nodes not shown" if len(rows) > len(shown) else ""
    ax.set_title(f"profile: {len(rows)} nodes, about {total_ms:.2f} ms per run{more}", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------------------

def _labels(a, what, num_classes=None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2 and num_classes is not None and what == "y_pred":
        if a.shape[1] != num_classes:
            raise ValueError(f"confusion: y_pred scores have {a.shape[1]} columns, expected num_classes="
                             f"{num_classes}")
        return np.argmax(a, axis=1).astype(np.int64)
    if a.ndim != 1:
        raise ValueError(f"confusion: {what} must be a 1-D array of class indices"
                         + (" (or [N, classes] scores)" if what == "y_pred" else "") + f", got shape {list(a.shape)}")
    if a.dtype.kind == "f" and a.size and not np.all(np.floor(a) == a):
        raise ValueError(f"confusion: {what} holds non-integer values (e.g. {a[np.floor(a) != a][0]!r})")
    if a.dtype.kind not in "iuf" and a.size:
        raise ValueError(f"confusion: {what} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def confusion_counts(y_true, y_pred, num_classes) -> np.ndarray:
    """[num_classes, num_classes] int64 counts: row = true class, column = predicted class. y_pred: class
    indices [N] or scores [N, num_classes] (argmax taken)."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"confusion: num_classes must be a positive int, got {num_classes!r}")
    k = int(num_classes)
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred", k)
    if t.shape != p.shape:
        raise ValueError(f"confusion: y_true has {t.size} labels, y_pred {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= k):
            v = a[(a < 0) | (a >= k)][0]
            raise ValueError(f"confusion: {name} holds class {v}, outside [0, {k})")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def confusion_matrix(y_true, y_pred, out, num_classes=None, labels=None, figsize=None, dpi=_DPI) -> str:
    """The confusion matrix: colour = fraction of each true class (row), text = counts. num_classes: default
    len(labels), else the largest class seen + 1. Returns the PNG's path."""
    path = _out_path(out, "confusion_matrix")
    _check_size(figsize, dpi, "confusion_matrix")
    if labels is not None:
        labels = [str(v) for v in labels]
        if num_classes is None:
            num_classes = len(labels)
        elif len(labels) != num_classes:
            raise ValueError(f"confusion_matrix: {len(labels)} labels given for num_classes={num_classes}")
    if num_classes is None and np.ndim(y_pred) == 2:  # [N, classes] scores: their columns are the classes
        num_classes = int(np.shape(y_pred)[1])
    if num_classes is None:
        t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
        if not t.size:
            raise ValueError("confusion_matrix: no labels (y_true is empty) and no num_classes")
        num_classes = int(max(t.max(), p.max() if p.size else 0)) + 1
    c = confusion_counts(y_true, y_pred, num_classes)
    k = c.shape[0]
    if c.sum() == 0:
        raise ValueError("confusion_matrix: y_true is empty: nothing to count")
    labels = labels or [str(i) for i in range(k)]
    frac = c / np.maximum(c.sum(1, keepdims=True), 1)
    if figsize is None:
        side = min(3.0 + 0.45 * k, 20.0)
        figsize = (side + 1.2, side)
    fig = _figure(figsize, dpi)
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if c[i, j]:
                    ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=max(5, 10 - k // 5),
                            color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), labels, rotation=45 if max(len(s) for s in labels) > 3 else 0, fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"accuracy {100 * np.trace(c) / c.sum():.2f}% ({c.sum()} samples)", fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# images: augmentations, segmentation masks, denoising
# ------------------------------------------------------------------------------------------------------

def _batch(a, what, n=None) -> np.ndarray:
    """[N, C, H, W] float32 from [N, C, H, W] or [N, H, W] (one channel)."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] < 1:
        raise ValueError(f"{what} must be a batch [N, C, H, W] or [N, H, W], got shape {list(a.shape)}")
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{what} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float32)
    return a[:n] if n else a


def _check_n(n, what):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what}: n must be a positive int, got {n!r}")


def _transform_name(t) -> str:
    name = type(t).__name__
    settings = [f"{v:g}" if isinstance(v, float) else str(v) for k, v in sorted(vars(t).items())
                if isinstance(v, (int, float, tuple)) and not isinstance(v, bool)] if hasattr(t, "__dict__") else []
    return name + (f"\n({', '.join(settings)})" if settings else "")


def augmentations(x, out, transforms=None, n=8, seed=0, figsize=None, dpi=_DPI) -> str:
    """The same n images (rows) under each augmentation (columns): the original, then each transform alone,
    then all of them composed. x: a batch [N, C, H, W] (the first n) or one image [C, H, W] (drawn n times, to
    show the randomness). transforms: a cnnnative.data.Compose, a list of transforms (callables t(batch, rng)),
    or None for cnnnative.data.default_augment() (with flips for 3-channel images). Each column draws from
    numpy.random.default_rng(seed). Returns the PNG's path."""
    from . import data

    path = _out_path(out, "augmentations")
    _check_size(figsize, dpi, "augmentations")
    _check_n(n, "augmentations")
    x = np.asarray(x)
    if x.ndim == 3:
        x = np.repeat(x[None], n, axis=0)
    if x.ndim != 4:
        raise ValueError(f"augmentations: x must be a batch [N, C, H, W] or one image [C, H, W], got shape "
                         f"{list(x.shape)}")
    x = np.ascontiguousarray(x[:n], np.float32)
    if transforms is None:
        transforms = data.default_augment(flip=x.shape[1] == 3)
    ts = list(transforms.transforms) if isinstance(transforms, data.Compose) else (
        list(transforms) if isinstance(transforms, (list, tuple)) else [transforms])
    if not ts or not all(callable(t) for t in ts):
        raise ValueError("augmentations: transforms must be callables t(batch, rng) (cnnnative.data transforms)")
    cols = [("original", x)]
    for t in ts:
        y = np.asarray(t(x.copy(), np.random.default_rng(seed)))
        if y.shape != x.shape:
            raise ValueError(f"augmentations: {type(t).__name__} returned shape {list(y.shape)} for a batch "
                             f"{list(x.shape)}")
        cols.append((_transform_name(t), y))
    if len(ts) > 1:
        cols.append(("all composed", np.asarray(data.Compose(ts)(x.copy(), np.random.default_rng(seed)))))
    rows = x.shape[0]
    if figsize is None:
        figsize = (1.3 * len(cols) + 0.4, 1.3 * rows + 0.9)
    fig = _figure(figsize, dpi)
    axs = fig.subplots(rows, len(cols), squeeze=False)
    for i in range(rows):
        lo, hi = float(x[i].min()), float(x[i].max())  # one scale per row: brightness changes stay visible
        for j, (name, batch) in enumerate(cols):
            _show_image(axs[i, j], batch[i], lo, hi)
            if i == 0:
                axs[i, j].set_title(name, fontsize=7)
    fig.suptitle(f"augmentations ({rows} images, seed {seed})", fontsize=10)
    return _save(fig, path)


def masks(images, truth, pred, out, n=8, logits=None, figsize=None, dpi=_DPI) -> str:
    """Segmentation results, one row per image: the image, the ground-truth mask, the predicted mask and the
    errors (green: both, red: predicted only, blue: missed), with the IoU of each row. pred: probabilities
    (threshold 0.5) or logits (threshold 0); logits=None tells them apart by their range. Returns the PNG's
    path."""
    path = _out_path(out, "masks")
    _check_size(figsize, dpi, "masks")
    _check_n(n, "masks")
    img = _batch(images, "masks: images", n)
    t = _batch(truth, "masks: truth", n)
    p = _batch(pred, "masks: pred", n)
    for name, a in (("truth", t), ("pred", p)):
        if a.shape[1] != 1 or a.shape[2:] != img.shape[2:] or a.shape[0] != img.shape[0]:
            raise ValueError(f"masks: {name} must be one mask per image [N, 1, H, W] or [N, H, W] matching images "
                             f"{list(img.shape)}, got {list(a.shape)}")
    if logits is None:
        logits = bool(p.min() < 0 or p.max() > 1)
    pm = p[:, 0] > (0.0 if logits else 0.5)
    tm = t[:, 0] > 0.5
    rows = img.shape[0]
    if figsize is None:
        figsize = (6.2, 1.45 * rows + 0.8)
    fig = _figure(figsize, dpi)
    axs = fig.subplots(rows, 4, squeeze=False)
    titles = ("image", "ground truth", "prediction (" + ("logits > 0" if logits else "prob > 0.5") + ")", "errors")
    for i in range(rows):
        _show_image(axs[i, 0], img[i])
        _show_image(axs[i, 1], tm[i].astype(np.float32), 0, 1)
        _show_image(axs[i, 2], pm[i].astype(np.float32), 0, 1)
        err = np.zeros(tm[i].shape + (3,), np.float32)
        err[tm[i] & pm[i]] = (0.33, 0.66, 0.41)
        err[~tm[i] & pm[i]] = (0.77, 0.31, 0.32)
        err[tm[i] & ~pm[i]] = (0.30, 0.45, 0.69)
        axs[i, 3].imshow(err, interpolation="nearest")
        axs[i, 3].set_xticks([])
        axs[i, 3].set_yticks([])
        union = np.logical_or(tm[i], pm[i]).sum()
        iou = np.logical_and(tm[i], pm[i]).sum() / union if union else 1.0
        axs[i, 3].set_ylabel(f"IoU {iou:.3f}", fontsize=7, rotation=0, ha="left", va="center")
        axs[i, 3].yaxis.set_label_position("right")
    for j, s in enumerate(titles):
        axs[0, j].set_title(s, fontsize=8)
    union = np.logical_or(tm, pm).sum()
    total = np.logical_and(tm, pm).sum() / union if union else 1.0
    fig.suptitle(f"segmentation: IoU {total:.3f} over these {rows} images", fontsize=10)
    return _save(fig, path)


def denoise(noisy, denoised, clean, out, n=8, figsize=None, dpi=_DPI) -> str:
    """Denoising results, one row per image: the noisy input, the model's output and the clean target, with
    each row's MSE to the clean image (input and output). Returns the PNG's path."""
    path = _out_path(out, "denoise")
    _check_size(figsize, dpi, "denoise")
    _check_n(n, "denoise")
    a = _batch(noisy, "denoise: noisy", n)
    b = _batch(denoised, "denoise: denoised", n)
    c = _batch(clean, "denoise: clean", n)
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"denoise: noisy {list(a.shape)}, denoised {list(b.shape)} and clean {list(c.shape)} must "
                         "have the same shape")
    rows = a.shape[0]
    if figsize is None:
        figsize = (4.8, 1.45 * rows + 0.8)
    fig = _figure(figsize, dpi)
    axs = fig.subplots(rows, 3, squeeze=False)
    for i in range(rows):
        lo, hi = float(c[i].min()), float(c[i].max())
        for j, im in enumerate((a[i], b[i], c[i])):
            _show_image(axs[i, j], im, lo, hi if hi > lo else lo + 1)
        axs[i, 0].set_xlabel(f"MSE {np.mean((a[i] - c[i]) ** 2):.4f}", fontsize=7)
        axs[i, 1].set_xlabel(f"MSE {np.mean((b[i] - c[i]) ** 2):.4f}", fontsize=7)
    for j, s in enumerate(("noisy input", "denoised", "clean")):
        axs[0, j].set_title(s, fontsize=8)
    fig.suptitle(f"denoising: MSE {np.mean((a - c) ** 2):.4f} -> {np.mean((b - c) ** 2):.4f}", fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------------
# HTML report and the README's pictures
# ------------------------------------------------------------------------------------------------------

def _is_image_path(item) -> bool:
    return isinstance(item, os.PathLike) or (isinstance(item, str) and item.lower().endswith(".png")
                                             and "\n" not in item)


def html_report(sections, out, title="cnnnative report") -> str:
    """One self-contained HTML file: a heading per section, then its picture (a PNG path, embedded as a base64
    data URI) or its text (HTML-escaped, pre-formatted). sections: a list of (heading, png_path_or_text). All
    PNGs are read and checked before the file is written. Returns the HTML file's path."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"html_report: out must be a file path, got {type(out).__name__}")
    path = os.fspath(out)
    if not path.lower().endswith((".html", ".htm")):
        raise ValueError(f"html_report: out must name a .html file, got {path!r}")
    if isinstance(sections, (str, bytes)) or not hasattr(sections, "__iter__"):
        raise TypeError("html_report: sections must be a list of (heading, png_path_or_text)")
    parts = []
    for i, sec in enumerate(sections):
        if not isinstance(sec, (tuple, list)) or len(sec) != 2:
            raise ValueError(f"html_report: sections[{i}] must be a (heading, png_path_or_text) pair, got {sec!r}")
        heading, item = sec
        heading = str(heading)
        if _is_image_path(item):
            p = os.fspath(item)
            try:
                with open(p, "rb") as f:
                    blob = f.read()
            except OSError as e:
                raise ValueError(f"html_report: section {heading!r}: cannot read the picture {p}: "
                                 f"{e.strerror or e}") from None
            if not blob.startswith(_PNG_MAGIC):
                raise ValueError(f"html_report: section {heading!r}: {p} is not a PNG file")
            body = (f'<img src="data:image/png;base64,{base64.b64encode(blob).decode("ascii")}" '
                    f'alt="{html.escape(heading)}">')
        elif isinstance(item, str):
            body = f"<pre>{html.escape(item)}</pre>"
        else:
            raise TypeError(f"html_report: section {heading!r}: expected a .png path or text, got "
                            f"{type(item).__name__}")
        parts.append(f"<section>\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>")
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           f"<title>{html.escape(str(title))}</title>\n<style>\n"
           "body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }\n"
           "img { max-width: 100%; height: auto; border: 1px solid #ddd; }\n"
           "pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }\n"
           "section { margin-bottom: 2em; }\n</style>\n</head>\n<body>\n"
           f"<h1>{html.escape(str(title))}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n")
    return write_atomic(path, lambda f: f.write(doc.encode("utf-8")))


def readme_images(out_dir="docs/img", epochs=8, seed=0, memory_model="resnet18", threads=1, dpi=90, log=print) -> list:
    """Regenerates the README's pictures in out_dir: lenet5_history.png (LeNet-5 trained with
    cnnnative.train.fit on the bundled digits: loss, accuracy, learning rate, throughput), lenet5_filters.png
    (its first convolution after training) and <memory_model>_memory_plan.png (the memory plan of a CIFAR
    ResNet-18 at batch 32, or of LeNet-5 at batch 64 with memory_model='lenet5': inference, training and both
    recomputation modes). threads: the training threads (one by default: its throughput panel stays steady on a
    busy machine; None: as set). Returns the paths. From the repository root:
    python -c "from cnnnative import viz; viz.readme_images()"."""
    import cnnnative
    from . import data, models, optim
    from .train import fit

    if memory_model not in ("resnet18", "lenet5"):
        raise ValueError(f"readme_images: memory_model must be 'resnet18' or 'lenet5', got {memory_model!r}")
    _matplotlib()
    ds = data.load_digits(size=28, test_fraction=0.2, seed=seed)
    model = models.lenet5(seed=seed)
    opt = optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = optim.CosineAnnealingLR(opt, epochs)
    before = cnnnative.get_num_threads()
    if threads is not None:
        cnnnative.set_num_threads(int(threads))
    try:
        hist, _ = fit(model, ds, epochs, 32, opt, sched, seed=seed, progress=False, log=log, model_name="lenet5")
    finally:
        cnnnative.set_num_threads(before)
    h = hist.to_dict()  # per-epoch records with the learning rate, and the per-step losses
    paths = [history(h, os.path.join(out_dir, "lenet5_history.png"), figsize=(10, 6.4), dpi=dpi),
             filters(model, os.path.join(out_dir, "lenet5_filters.png"), figsize=(5, 3.6), dpi=dpi)]
    if memory_model == "resnet18":
        m, shape = models.resnet18(num_classes=10, cifar=True, seed=seed), (32, 3, 32, 32)
    else:
        m, shape = models.lenet5(seed=seed), (64, 1, 28, 28)
    name = "CIFAR ResNet-18" if memory_model == "resnet18" else "LeNet-5"
    paths.append(memory_plan(m, os.path.join(out_dir, f"{memory_model}_memory_plan.png"), input_shape=shape,
                             title=f"{name}, batch {shape[0]}: the memory plan of inference and of a training step",
                             figsize=(18, 5.2), dpi=dpi))
    return paths
