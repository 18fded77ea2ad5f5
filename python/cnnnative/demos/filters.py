"""Demo: the classic image filters, each one a convolution kernel, applied with the engine's conv2d.

Long before CNNs learned their kernels, image processing wrote them by hand. Each output pixel is the sum of
the pixels around it weighted by the kernel (placed with its centre on that pixel):

    identity     only the centre: the image unchanged
    box blur     the mean of the 3 x 3 neighbourhood
    Gaussian     a weighted mean, heavier in the middle: a smoother blur (3 x 3, and 5 x 5 for a stronger one)
    sharpen      5 x the pixel minus its 4 neighbours: the image plus its deviation from the local mean
    Sobel x / y  right minus left (bottom minus top), smoothed across: horizontal (vertical) change of brightness,
                 positive from dark to bright, negative from bright to dark; 0 where the image is flat
    Laplacian    the 4 neighbours minus 4 x the pixel: where the brightness curves (edges, fine texture)
    emboss       bottom-right minus top-left, plus the pixel: the picture as if lit from the side

A convolution layer with n output channels is n such filters: here all nine are the weight of ONE
cn.nn.Conv2d(1, 9, 5, padding=2) (the 3 x 3 kernels sit in the middle of a 5 x 5 of zeros, which changes
nothing), run once on a greyscale photo. The result is checked against conv.correlate2d, the definition in
numpy. The Sobel gradient magnitude sqrt(gx^2 + gy^2) combines the two Sobel outputs into an edge map.

    python -m cnnnative demo filters [--out DIR] [--image PATH]
"""
from __future__ import annotations

import os

import numpy as np

import cnnnative as cn

from ._util import SAMPLE_PHOTOS, figure_class, load_image, run_engine, save_figure
from .conv import correlate2d

# name, scale, kernel (integers; the kernel is scale * these), how to show the output:
# "image" for kernels that sum to 1 (grey levels 0..1), "signed" for those that sum to 0 (mid-grey = 0)
FILTERS = [
    ("identity", 1, [[0, 0, 0], [0, 1, 0], [0, 0, 0]], "image"),
    ("box blur", 1 / 9, [[1, 1, 1], [1, 1, 1], [1, 1, 1]], "image"),
    ("Gaussian blur 3x3", 1 / 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]], "image"),
    ("Gaussian blur 5x5", 1 / 256, np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]), "image"),
    ("sharpen", 1, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "image"),
    ("Sobel x", 1, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "signed"),
    ("Sobel y", 1, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "signed"),
    ("Laplacian", 1, [[0, 1, 0], [1, -4, 1], [0, 1, 0]], "signed"),
    ("emboss", 1, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], "image"),
]


def kernels() -> dict:
    """name -> the kernel as a float32 array."""
    return {name: (scale * np.asarray(k, np.float64)).astype(np.float32) for name, scale, k, _ in FILTERS}


def apply_filters(image: np.ndarray) -> dict:
    """name -> the image filtered by that kernel, all from one Conv2d layer run by the engine; the output has
    the image's size (padding 2 for the 5 x 5 window)."""
    ks = kernels()
    layer = cn.nn.Conv2d(1, len(ks), kernel_size=5, padding=2, bias=False)  # weight: [9, 1, 5, 5]
    with cn.no_grad():
        layer.weight[...] = 0
        for i, k in enumerate(ks.values()):
            r = (5 - k.shape[0]) // 2
            layer.weight[i, 0, r:r + k.shape[0], r:r + k.shape[1]] = k  # a 3 x 3 kernel: centred in the 5 x 5
    out = run_engine(layer, image)  # [9, H, W]: output channel i = the image filtered by kernel i
    return dict(zip(ks, out))


def _kernel_text(scale, k) -> str:
    rows = "\n".join(" ".join(f"{int(v):>2d}" for v in row) for row in np.asarray(k))
    return rows if scale == 1 else f"1/{round(1 / scale)} x\n{rows}"


def run(out_dir, image=None) -> list[str]:
    """Draws filters_<photo>.png in out_dir for scikit-learn's two sample photos (or for `image`); returns the
    paths written."""
    Figure = figure_class()
    written = []
    for photo in SAMPLE_PHOTOS if image is None else [image]:
        img, name = load_image(photo, max_side=320, min_side=5)  # greyscale in [0, 1], 213 x 320 for the samples
        out = apply_filters(img)
        diff = max(float(np.abs(out[n] - correlate2d(img, k, padding=k.shape[0] // 2)).max())
                   for n, k in kernels().items())
        print(f"filters demo: {name} ({img.shape[0]} x {img.shape[1]}), {len(out)} kernels in one Conv2d; "
              f"max |engine - numpy definition| = {diff:.1e}")
        # the gradient magnitude: how strongly the brightness changes, whatever the direction
        out["Sobel magnitude"] = np.sqrt(out["Sobel x"] ** 2 + out["Sobel y"] ** 2)

        # the grey scale of the edge maps: Sobel x, y and the magnitude share one (so that they compare), up to
        # the 99.5th percentile (a few extreme pixels would wash out the rest)
        edge = float(np.percentile(np.abs([out["Sobel x"], out["Sobel y"]]), 99.5)) or 1.0
        fig = Figure(figsize=(17, 5.9), layout="constrained")
        panels = FILTERS + [("Sobel magnitude", 1, None, "magnitude")]
        for ax, (n, scale, k, kind) in zip(fig.subplots(2, 5).ravel(), panels):
            y, note = out[n], ""
            if kind == "image":
                vmin, vmax = 0, 1
            elif kind == "magnitude":
                vmin, vmax = 0, edge
            else:
                m = edge if n.startswith("Sobel") else float(np.percentile(np.abs(y), 99.5)) or 1.0
                vmin, vmax, note = -m, m, " (grey = 0)"
            ax.imshow(y, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(n + note, fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
            # the kernel in the corner of its output
            text = "sqrt(Sobel x² + Sobel y²)" if k is None else _kernel_text(scale, k)
            ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", family="monospace",
                    fontsize=7 if k is not None and len(k) == 5 else 8,
                    bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))
        source = f"scikit-learn's {name} photo" if image is None else name
        fig.suptitle(f"Classic kernels on {source} ({img.shape[0]} x {img.shape[1]}, greyscale), all nine as the "
                     "weight of one cn.nn.Conv2d(1, 9, 5, padding=2), run by cnnnative", fontsize=13)
        written.append(save_figure(fig, os.path.join(out_dir, f"filters_{name}.png")))
    return written
