"""Demo: max pooling against average pooling, with the engine's pooling layers.

A pooling layer slides a window over each channel like a convolution, but with no weights: it keeps the
largest value under the window (max pooling) or their mean (average pooling). With stride 2 it halves the
height and width, so the next layers see a wider area for the same cost. Three settings are shown:

    2 x 2, stride 2               the usual halving (LeNet, VGG): each output summarises its own 2 x 2 block
    3 x 3, stride 2, padding 1    overlapping windows (ResNet's stem); the padding is -infinity for max pooling
                                  (never the maximum) and 0 for average pooling (counted in the mean, as in
                                  PyTorch's default count_include_pad=True)
    global                        one window over the whole image: one number per channel (the head of ResNet)

on two inputs: a small photo, where both look like a coarser picture (max a little brighter), and a feature
map - ReLU(Sobel x) of that photo, what a convolution layer hands to the pooling after it: thin bright lines
on black. Max pooling keeps each line at full strength (a detected feature stays detected, a little shifted);
average pooling dilutes it with the black around it. Each result is checked against `pool2d` below (the
definition, in numpy).

    python -m cnnnative demo pool [--out DIR] [--image PATH]
"""
from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import cnnnative as cn

from ._util import figure_class, load_image, run_engine, save_figure

# title, kernel size, stride, padding (kernel None: global pooling)
CONFIGS = [("2 x 2, stride 2", 2, 2, 0), ("3 x 3, stride 2, pad 1", 3, 2, 1), ("global", None, None, 0)]

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)


def pool2d(x: np.ndarray, kind: str, kernel=None, stride=None, padding: int = 0) -> np.ndarray:
    """What max_pool2d / avg_pool2d compute for one channel, written out in numpy; kernel None: global."""
    if kernel is None:
        kernel, stride = x.shape, 1                                   # one window: the whole image
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    fill = -np.inf if kind == "max" else 0.0                          # what the padding holds
    x = np.pad(np.asarray(x, np.float64), padding, constant_values=fill)
    windows = sliding_window_view(x, kernel)[::stride, ::stride]      # [H_out, W_out, kh, kw]
    return windows.max(axis=(2, 3)) if kind == "max" else windows.mean(axis=(2, 3))


def engine_pool(x: np.ndarray, kind: str, kernel=None, stride=None, padding: int = 0) -> np.ndarray:
    """The same with the engine's layers, compiled for this image and run."""
    if kernel is None:  # global: max over a window the size of the image; average to a 1 x 1 output
        layer = cn.nn.MaxPool2d(x.shape) if kind == "max" else cn.nn.AdaptiveAvgPool2d(1)
    elif kind == "max":
        layer = cn.nn.MaxPool2d(kernel, stride, padding=padding)
    else:
        layer = cn.nn.AvgPool2d(kernel, stride, padding=padding)
    return run_engine(layer, x)[0]


def feature_map(image: np.ndarray) -> np.ndarray:
    """ReLU(Sobel x) of the image: a 3 x 3 convolution and a ReLU, as a CNN's first layer computes them. No
    padding (2 pixels smaller than the image): zeros beside a bright border would make a false edge there."""
    conv = cn.nn.Conv2d(1, 1, 3, padding=0, bias=False)
    with cn.no_grad():
        conv.weight[0, 0] = SOBEL_X
    return run_engine(cn.nn.Sequential(conv, cn.nn.ReLU()), image)[0]


def _tiny_example() -> None:
    """Prints 2 x 2 max and average pooling of a 4 x 4 array: the whole idea in four numbers each."""
    x = np.array([[1, 3, 2, 0], [4, 6, 1, 1], [0, 2, 9, 5], [1, 1, 3, 7]], np.float32)
    mx, av = engine_pool(x, "max", 2, 2), engine_pool(x, "avg", 2, 2)
    print("  2 x 2 pooling, stride 2, of a 4 x 4 array: each output summarises one 2 x 2 block")
    for i in range(4):
        row = " ".join(f"{v:g}" for v in x[i])
        right = (f"max {' '.join(f'{v:g}' for v in mx[i // 2])}   avg {' '.join(f'{v:g}' for v in av[i // 2])}"
                 if i % 2 == 0 else "")
        print(f"    {row:<9} {right}".rstrip())


def run(out_dir, image=None) -> list[str]:
    """Draws pool.png in out_dir; returns [its path]. image: a picture to use instead of scikit-learn's
    china.jpg (made greyscale and at most 64 pixels a side)."""
    Figure = figure_class()
    photo, name = load_image(image, max_side=64, min_side=4)  # small, so that pooled pixels are visible
    rows = [(f"photo: {name}", photo), ("feature map: ReLU(Sobel x)", feature_map(photo))]
    print(f"pool demo: {name} ({photo.shape[0]} x {photo.shape[1]}) and its ReLU(Sobel x) feature map")
    _tiny_example()

    fig = Figure(figsize=(18, 5.0), layout="constrained")
    axes = fig.subplots(2, 1 + 2 * len(CONFIGS))
    for r, (label, x) in enumerate(rows):
        vmax = float(x.max()) or 1.0  # one grey scale per row: a darker output has smaller values
        axes[r, 0].imshow(x, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        axes[r, 0].set_title(f"input {x.shape[0]} x {x.shape[1]}", fontsize=11)
        axes[r, 0].set_ylabel(label, fontsize=11)
        peaks = []
        col = 1
        for title, k, s, p in CONFIGS:
            for kind in ("max", "avg"):
                y = engine_pool(x, kind, k, s, p)
                diff = float(np.abs(y - pool2d(x, kind, k, s, p)).max())
                if diff > 1e-5 * max(1.0, vmax):
                    raise AssertionError(f"{kind} pooling {title}: the engine differs from the numpy definition "
                                         f"by {diff}")
                what = f"global {kind}" if k is None else f"{kind} {title}"
                peaks.append(f"{what}: {float(y.max()):.2f}")
                ax = axes[r, col]
                ax.imshow(y, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest",
                          aspect="equal" if y.size > 1 else "auto")
                if y.size == 1:  # global pooling: one number, written on its pixel
                    ax.set_box_aspect(x.shape[0] / x.shape[1])  # the height of the other panels
                    v = float(y.ravel()[0])
                    ax.text(0, 0, f"{v:.3f}", ha="center", va="center", fontsize=14,
                            color="black" if v > vmax / 2 else "white")
                ax.set_title(f"{what}\n\u2192 {y.shape[0]} x {y.shape[1]}", fontsize=11)
                col += 1
        print(f"  {label}: largest value {vmax:.2f}; largest after pooling: " + "; ".join(peaks))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Max against average pooling (cnnnative's MaxPool2d, AvgPool2d, AdaptiveAvgPool2d); one grey "
                 "scale per row, so a darker output holds smaller values", fontsize=13)
    return [save_figure(fig, os.path.join(out_dir, "pool.png"))]
