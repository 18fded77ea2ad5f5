"""Demo: what stride, padding and dilation do to a convolution, and the size of its output.

A convolution layer slides a k x k kernel over the image; at each position it multiplies the kernel with the
pixels under it and sums (strictly a cross-correlation: the kernel is not flipped, in cnnnative as in every
deep-learning framework). Three settings decide where the positions are:

    padding p    p rows/columns of zeros added on each side, so that the kernel can also sit over the border
    stride s     the step between positions: s = 2 computes every second output (about half the size)
    dilation d   gaps between the kernel's taps: a 3 x 3 kernel with d = 2 reads a 5 x 5 area

and the output size follows (the same for the width):

    H_out = floor((H + 2p - d(k - 1) - 1) / s) + 1

d(k - 1) + 1 is the span of the (dilated) kernel; H + 2p - span is how far it can move; every s-th step of
that, plus the first position, is an output. This demo convolves a 16 x 16 digit with a 3 x 3 blur in eight
settings, with the engine's conv2d, checks each result against `correlate2d` below (the definition, in numpy),
and draws the outputs at the same scale as the input, each titled with its size and the formula.

    python -m cnnnative demo conv [--out DIR] [--image PATH]
"""
from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import cnnnative as cn

from ._util import figure_class, load_image, run_engine, save_figure

# the kernel: a 3 x 3 box blur (each output is the mean of 9 pixels), so the outputs still look like the digit
KERNEL = np.full((3, 3), 1 / 9, np.float32)

# (stride, padding, dilation) of each panel
CASES = [(1, 0, 1), (1, 1, 1), (1, 2, 1),
         (2, 0, 1), (2, 1, 1), (1, 0, 2),
         (1, 2, 2), (2, 2, 2)]


def output_size(n: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The number of positions of a k-tap kernel along a side of n pixels."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def correlate2d(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> np.ndarray:
    """What conv2d computes for one channel, written out in numpy (float64)."""
    kh, kw = kernel.shape
    x = np.pad(np.asarray(image, np.float64), padding)             # zeros around the image
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1  # the area a dilated kernel reads
    windows = sliding_window_view(x, (span_h, span_w))              # every span_h x span_w patch: [H', W', ., .]
    windows = windows[::stride, ::stride, ::dilation, ::dilation]   # positions s apart; taps d apart
    return np.einsum("ijkl,kl->ij", windows, kernel)                 # multiply with the kernel and sum


def engine_conv(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> np.ndarray:
    """The same with the engine: a Conv2d layer (one input and one output channel, no bias) whose weight
    is the kernel, compiled for this image and run."""
    layer = cn.nn.Conv2d(1, 1, kernel.shape, stride=stride, padding=padding, dilation=dilation, bias=False)
    with cn.no_grad():  # parameters are written inside no_grad, as in PyTorch
        layer.weight[0, 0] = kernel  # weight: [out_channels, in_channels, kh, kw]
    return run_engine(layer, image)[0]


def digit(size: int = 16) -> np.ndarray:
    """A handwritten 2 from scikit-learn's digits (bundled), size x size, ink 1 on paper 0."""
    x, y, _, _, (mean, std) = cn.data.load_digits(size=size, return_stats=True)
    return x[np.flatnonzero(y == 2)[0], 0] * std + mean  # undo load_digits' normalization


def _formula(n: int, k: int, s: int, p: int, d: int) -> str:
    return (rf"$\lfloor({n} + 2\cdot{p} - {d}\cdot({k}-1) - 1)\,/\,{s}\rfloor + 1 = "
            rf"{output_size(n, k, s, p, d)}$")


def run(out_dir, image=None) -> list[str]:
    """Draws conv.png in out_dir; returns [its path]. image: a picture to use instead of the digit (made
    greyscale and at most 32 pixels a side)."""
    Figure = figure_class()
    if image is None:
        img, label = digit(), "a 16 x 16 digit"
    else:
        img, name = load_image(image, max_side=32, min_side=5)
        label = f"{name} ({img.shape[0]} x {img.shape[1]})"
    h, w = img.shape
    k = KERNEL.shape[0]

    outputs = []
    print(f"conv demo: {label}, 3 x 3 box blur; H_out = floor((H + 2p - d(k-1) - 1) / s) + 1")
    for s, p, d in CASES:
        y = engine_conv(img, KERNEL, s, p, d)
        expect = (output_size(h, k, s, p, d), output_size(w, k, s, p, d))
        if y.shape != expect:
            raise AssertionError(f"stride {s} padding {p} dilation {d}: the engine's output is {y.shape}, "
                                 f"the formula gives {expect}")
        diff = float(np.abs(y - correlate2d(img, KERNEL, s, p, d)).max())
        print(f"  stride {s} padding {p} dilation {d}: {y.shape[0]} x {y.shape[1]} "
              f"(max |engine - numpy definition| = {diff:.1e})")
        outputs.append(y)

    # every panel spans the same number of pixels (the largest output's), so sizes compare by eye
    m = max([h, w] + [max(y.shape) for y in outputs])
    fig = Figure(figsize=(10, 11.5), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.12)
    axes = fig.subplots(3, 3).ravel()

    def show(ax, a, title, xlabel=""):
        top, left = (m - a.shape[0]) / 2, (m - a.shape[1]) / 2  # centred in the panel
        ax.imshow(a, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
                  extent=(left - 0.5, left + a.shape[1] - 0.5, top + a.shape[0] - 0.5, top - 0.5))
        ax.set_xlim(-0.5, m - 0.5)
        ax.set_ylim(m - 0.5, -0.5)
        ax.set_facecolor("#c8d8f0")  # outside the image: light blue (black is a value, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel, fontsize=10)

    show(axes[0], img, f"input: {h} x {w}", f"kernel: 3 x 3 box blur (k = {k})")
    for ax, (s, p, d), y in zip(axes[1:], CASES, outputs):
        formula = _formula(h, k, s, p, d) if h == w else \
            f"H: {_formula(h, k, s, p, d)}\nW: {_formula(w, k, s, p, d)}"
        show(ax, y, f"stride {s}, padding {p}, dilation {d}\n→ {y.shape[0]} x {y.shape[1]}", formula)
    fig.suptitle(r"Output size $= \lfloor(H + 2p - d(k-1) - 1)\,/\,s\rfloor + 1$" + "\n"
                 f"{label} convolved by cnnnative's conv2d; all panels at the same scale "
                 "(blue: outside the output)", fontsize=12)
    return [save_figure(fig, os.path.join(out_dir, "conv.png"))]
