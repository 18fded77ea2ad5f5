"""The seed demos: what convolution and pooling do, shown with the engine's own layers on real pictures.

    python -m cnnnative demo filters   classic kernels (blur, sharpen, Sobel, Laplacian, emboss) on two photos
    python -m cnnnative demo conv      stride, padding and dilation, and the output size they give
    python -m cnnnative demo pool      max against average pooling, on a photo and on a feature map

Each writes PNG files (default folder demo_out/, --out DIR) and prints what it found; --image PATH uses your
picture (PNG, JPEG, PGM, ... or a .npy array) instead of the bundled ones. Each is a short script meant to be
read: filters.py, conv.py, pool.py in this folder. Needs matplotlib (pip install matplotlib). From Python:
cnnnative.demos.run("filters", "demo_out") returns the paths written.
"""
from __future__ import annotations

import os

from . import conv, filters, pool

# name -> run(out_dir, image=None) -> list of the files written
DEMOS = {"filters": filters.run, "conv": conv.run, "pool": pool.run}


def run(name: str, out_dir="demo_out", image=None) -> list[str]:
    """Runs demo `name` (a key of DEMOS), writing its pictures into out_dir; returns their paths."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; available: {', '.join(DEMOS)}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"output folder {os.fspath(out_dir)!r} is a file, not a folder")
    return DEMOS[name](out_dir, image=image)
