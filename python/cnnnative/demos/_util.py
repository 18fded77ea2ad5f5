"""What the demos share and that is not their subject: reading a picture as a greyscale array, making it
smaller, running a module with the engine on one image, and saving a matplotlib figure as a PNG."""
from __future__ import annotations

import math
import os

import numpy as np

# scikit-learn ships two photographs (427 x 640 RGB JPEGs) with its datasets: no download needed
SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")


def figure_class():
    """matplotlib's Figure (drawn without pyplot: no window, no global state), or one clear error."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("the demos draw their pictures with matplotlib, which is not installed: "
                          "pip install matplotlib (or install cnnnative with the 'viz' extra)") from e
    return Figure


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Writes fig as a PNG of exactly figsize * dpi pixels, atomically (the file is whole or absent)."""
    from .._atomic import write_atomic
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def greyscale(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an H x W x 3 array: how bright each pixel looks to the eye."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def downscale(img: np.ndarray, max_side: int) -> np.ndarray:
    """The mean of each f x f block, for the smallest integer f that makes both sides <= max_side."""
    f = max(1, math.ceil(max(img.shape) / max_side))
    h, w = img.shape[0] // f, img.shape[1] // f
    return img[:h * f, :w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def _to_unit(a: np.ndarray, what: str) -> np.ndarray:
    """Pixel values as float32 in [0, 1]: 8-bit ones divided by 255, others as they are when already in
    [0, 1], otherwise stretched from [min, max] (16-bit pictures, arrays of any range)."""
    if a.dtype == np.uint8:
        return (a / 255.0).astype(np.float32)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: the image has values that are not finite (NaN or infinity)")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a.astype(np.float32)


def load_image(path=None, max_side: int = 320, min_side: int = 1) -> tuple[np.ndarray, str]:
    """(greyscale float32 image in [0, 1] with both sides <= max_side, a short name for titles and file
    names). path None: scikit-learn's china.jpg; one of SAMPLE_PHOTOS: that photo; anything else: a file,
    .npy (H x W, or H x W x 3/4 RGB(A)) or any picture Pillow reads (PNG, JPEG, PGM, ...)."""
    if path is None or path in SAMPLE_PHOTOS and not os.path.exists(path):
        name = path or SAMPLE_PHOTOS[0]
        try:
            from sklearn.datasets import load_sample_image
            rgb = load_sample_image(name)
        except ImportError as e:
            raise ImportError(f"reading scikit-learn's sample photo {name} needs scikit-learn and Pillow: "
                              f"pip install scikit-learn pillow ({e})") from e
        a, label = rgb, os.path.splitext(name)[0]
        what = f"scikit-learn's {name}"
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r}: no such file")
        label = os.path.splitext(os.path.basename(path))[0]
        what = f"image {path!r}"
        if path.lower().endswith(".npy"):
            try:
                a = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"image {path!r}: not a readable .npy array ({e})") from e
        else:
            try:
                from PIL import Image, UnidentifiedImageError
            except ImportError as e:
                raise ImportError(f"reading image {path!r} needs Pillow (pip install pillow), or give a .npy "
                                  "array") from e
            try:
                with Image.open(path) as im:
                    a = np.asarray(im if im.mode in ("L", "I;16", "I", "F") else im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"image {path!r}: not a picture Pillow can read ({e})") from e
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if not (a.ndim == 2 or a.ndim == 3 and a.shape[2] in (3, 4)) or a.size == 0 \
            or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{what}: expected a greyscale H x W or an RGB H x W x 3 picture, got an "
                         f"array of shape {a.shape} and type {a.dtype}")
    a = _to_unit(a, what)
    if a.ndim == 3:
        a = greyscale(a[..., :3])
    img = downscale(a, max_side).astype(np.float32)
    if min(img.shape) < min_side:
        raise ValueError(f"{what}: {img.shape[0]} x {img.shape[1]} pixels after downscaling to at most "
                         f"{max_side} per side; this demo needs at least {min_side} x {min_side}")
    return img, label


def run_engine(module, image: np.ndarray) -> np.ndarray:
    """Compiles `module` for one 1-channel image of this size and runs it: [C_out, H_out, W_out]."""
    x = np.ascontiguousarray(image, dtype=np.float32)[None, None]  # the batch of one: [1, 1, H, W]
    session = module.compile(x.shape)
    return session.run(x)[0]
