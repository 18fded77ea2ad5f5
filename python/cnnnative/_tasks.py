"""What the command line knows about each task: which models belong to it, its defaults, its data, how to
build the model, the input it takes, and how image files (PGM/PPM, PNG, NPY) become that input.

Tasks: "digits" (lenet5: the bundled scikit-learn digits or MNIST-format IDX files), "synthetic" (the other
classifiers: synthetic 3x32x32 gratings), "segment" (unet, fcn_resnet50, lraspp_mobilenet_v3_large: synthetic
circles and squares, 1x64x64) and "denoise" (conv_autoencoder: the bundled digits with Gaussian noise)."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

SEGMENT_MODELS = ("unet", "fcn_resnet50", "lraspp_mobilenet_v3_large")

# per task: epochs, batch size, optimizer, learning rate per optimizer, synthetic data set size (None: the
# task trains on fixed data)
DEFAULTS = {
    "digits": {"epochs": 12, "batch_size": 32, "optimizer": "sgd", "lr": {"sgd": 0.05, "adamw": 2e-3},
               "samples": None},
    "synthetic": {"epochs": 4, "batch_size": 32, "optimizer": "sgd", "lr": {"sgd": 0.02, "adamw": 1e-3},
                  "samples": 2000},
    "segment": {"epochs": 6, "batch_size": 16, "optimizer": "sgd", "lr": {"sgd": 0.01, "adamw": 2e-3},
                "samples": 2000},
    "denoise": {"epochs": 10, "batch_size": 32, "optimizer": "adamw", "lr": {"sgd": 1.0, "adamw": 2e-3},
                "samples": None},
}
WEIGHT_DECAY, SEED, NUM_CLASSES = 5e-4, 0, 10

DESCRIPTIONS = {
    "digits": "bundled scikit-learn digits upscaled to 1x28x28 (or --data: MNIST-format IDX files)",
    "synthetic": "synthetic 10-class gratings, 3x32x32 (--samples images)",
    "segment": "synthetic circle/square masks, 1x64x64 (--samples images)",
    "denoise": "bundled digits in [0, 1] with Gaussian noise (sigma 0.4) -> clean, 1x28x28",
}


def task_of(model_name: str) -> str:
    if model_name in SEGMENT_MODELS:
        return "segment"
    if model_name == "conv_autoencoder":
        return "denoise"
    return "digits" if model_name == "lenet5" else "synthetic"


def defaults_table() -> str:
    """The per-task defaults as the help text shows them."""
    from . import models
    rows = [("task", "models", "epochs", "batch", "optimizer", "lr (sgd / adamw)", "samples")]
    for task, d in DEFAULTS.items():
        names = [m for m in sorted(models.MODELS) if task_of(m) == task]
        shown = ", ".join(names) if len(names) <= 3 else "every other model"
        rows.append((task, shown, str(d["epochs"]), str(d["batch_size"]), d["optimizer"],
                     f"{d['lr']['sgd']:g} / {d['lr']['adamw']:g}", str(d["samples"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def settings(args, task) -> dict:
    """The effective values of the training settings (the task's defaults for those not given)."""
    d = DEFAULTS[task]

    def pick(v, default):
        return default if v is None else v
    optimizer = pick(args.optimizer, d["optimizer"])
    return {"model": args.model, "epochs": pick(args.epochs, d["epochs"]),
            "batch_size": pick(args.batch_size, d["batch_size"]), "lr": float(pick(args.lr, d["lr"][optimizer])),
            "samples": pick(args.samples, d["samples"]), "optimizer": optimizer,
            "weight_decay": float(pick(args.weight_decay, WEIGHT_DECAY)), "seed": pick(args.seed, SEED),
            "augment": bool(args.augment), "dtype": pick(args.dtype, "float32"),
            "num_classes": pick(args.num_classes, NUM_CLASSES) if task in ("digits", "synthetic") else None,
            "data": os.path.abspath(args.data) if args.data else None}


# ------------------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------------------

def load_data(cfg):
    """(x_train, t_train, x_test, t_test), a description of the source, and the input spec (see
    input_spec) for the CLI settings cfg."""
    from . import data
    from .train import noisy_digits
    task, seed = task_of(cfg["model"]), cfg["seed"]
    digits_size = None
    if task == "digits" and cfg["data"]:
        *ds, stats = data.load_mnist_dataset(cfg["data"], seed=seed, num_classes=cfg["num_classes"],
                                             return_stats=True)
        source = f"MNIST-format IDX files in {cfg['data']}"
    elif task == "digits":
        *ds, stats = data.load_digits(size=28, test_fraction=0.2, seed=seed, return_stats=True)
        source = "scikit-learn digits (bundled), upscaled to 28x28"
        digits_size = [8, 8]
    elif task == "synthetic":
        ds = data.synthetic_images(n=cfg["samples"], size=32, channels=3, num_classes=cfg["num_classes"], seed=seed)
        source = f"synthetic {cfg['num_classes']}-class gratings, 3x32x32"
        stats = None
    elif task == "segment":
        x, m = data.synthetic_shapes(n=cfg["samples"], size=64, seed=seed)
        k = len(x) // 5
        ds = (x[k:], m[k:], x[:k], m[:k])
        source = "synthetic circle/square segmentation, 1x64x64"
        stats = (0.0, 1.0)
    else:
        ds = noisy_digits(size=28, seed=seed)
        source = "bundled digits in [0, 1] with Gaussian noise (sigma 0.4) -> clean"
        stats, digits_size = (0.0, 1.0), [8, 8]
    spec = {"shape": [int(s) for s in ds[0].shape[1:]], "images": stats is not None,
            "mean": None if stats is None else float(stats[0]), "std": None if stats is None else float(stats[1]),
            "source_size": digits_size}
    return tuple(ds), source, spec


def input_spec(cfg) -> dict:
    """What the model of the CLI settings cfg takes: {"shape": [C, H, W], "images": whether image files
    are accepted (pixels in [0, 1] then (x - mean) / std, as its training data), "mean", "std",
    "source_size": [h, w] of images that are upscaled bilinearly as the bundled 8x8 digits were, or None}.
    Recorded in the settings at training; for older checkpoints rebuilt from the data."""
    spec = cfg.get("input")
    if isinstance(spec, dict) and {"shape", "images", "mean", "std", "source_size"} <= set(spec):
        return spec
    return load_data(cfg)[2]


def build_model(cfg):
    from . import models
    task, name, seed = task_of(cfg["model"]), cfg["model"], cfg["seed"]
    if task in ("digits", "synthetic"):
        kw = {"num_classes": cfg["num_classes"]}
        if task == "synthetic":
            kw["cifar"] = True
        return models.get_model(name, seed=seed, **kw)
    if task == "segment":
        kw = {"depth": 3, "base": 16} if name == "unet" else {}
        return models.get_model(name, in_channels=1, num_classes=1, seed=seed, **kw)
    return models.get_model("conv_autoencoder", in_channels=1, base=16, seed=seed)


def build_optimizer(cfg):
    from . import optim
    if cfg["optimizer"] == "sgd":
        return optim.SGD(lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"])
    return optim.AdamW(lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def cli_settings(path) -> tuple:
    """(CLI settings, checkpoint info) of a checkpoint written by `python -m cnnnative train`; ValueError
    naming the file otherwise."""
    from .train import _Reader, checkpoint_info
    with _Reader(path) as r:
        if not r.has_training_state():
            raise ValueError(f"checkpoint {path} holds model weights only, without the settings of a 'python -m "
                             f"cnnnative train' run (which model, which data); load it from Python with "
                             f"cnnnative.load_checkpoint(model, path)")
    info = checkpoint_info(path)
    saved = (info.get("config") or {}).get("cli")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), str):
        raise ValueError(f"checkpoint {path} was not written by 'python -m cnnnative train' (no CLI settings); "
                         "load it from Python with cnnnative.load_checkpoint(model, path)")
    from . import models
    if saved["model"] not in models.MODELS:
        raise ValueError(f"checkpoint {path}: unknown model {saved['model']!r}")
    return saved, info


def describe_input(spec) -> str:
    c, h, w = spec["shape"]
    sizes = f"{h}x{w}" + (f" (or {spec['source_size'][0]}x{spec['source_size'][1]}, upscaled as the training "
                          f"digits were)" if spec["source_size"] else "")
    kind = "grayscale" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
    return f"{c}x{h}x{w}: {kind} {sizes}"


# ------------------------------------------------------------------------------------------------------
# image files
# ------------------------------------------------------------------------------------------------------

class ImageError(ValueError):
    """An input file that cannot be read or does not fit the model."""


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # the PNG spec's pairs
_PNG_KEPT = {b"IHDR": 13, b"PLTE": 768}  # chunks read whole, with their largest valid length
_PIECE = 1 << 20
# The most values (height x width x channels) the image readers decode: far beyond any input of the zoo's models,
# far below what would exhaust memory (the readers hold a few bytes of temporaries per value).
MAX_IMAGE_VALUES = 1 << 26


def _png_chunks(f, path):
    """Yields (kind, data) for each chunk of the PNG file f (positioned after the signature) up to IEND, checking
    every CRC. IHDR and PLTE come whole (after their CRC is checked); IDAT comes in pieces of at most 1 MiB, each
    yielded before the chunk's CRC is checked at its end; the other chunks are read in pieces for the CRC and come
    as (kind, None). Memory stays bounded whatever lengths the file declares."""
    while True:
        head = f.read(8)
        if not head:
            raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
        if len(head) < 8:
            raise ImageError(f"{path}: truncated PNG chunk header")
        n, kind = struct.unpack(">I4s", head)
        if n > 0x7FFFFFFF or n > _PNG_KEPT.get(kind, n):
            raise ImageError(f"{path}: PNG chunk {kind!r} declares an invalid length {n}")
        crc, left, parts = zlib.crc32(kind), n, []
        while left:
            piece = f.read(min(left, _PIECE))
            if not piece:
                raise ImageError(f"{path}: truncated PNG chunk {kind!r}")
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
            if kind == b"IDAT":
                yield kind, piece
            elif kind in _PNG_KEPT:
                parts.append(piece)
        tail = f.read(4)
        if len(tail) != 4:
            raise ImageError(f"{path}: truncated PNG chunk {kind!r}")
        if struct.unpack(">I", tail)[0] != crc:
            raise ImageError(f"{path}: PNG chunk {kind!r} fails its CRC check (damaged file)")
        if kind in _PNG_KEPT:
            yield kind, b"".join(parts)
        elif kind != b"IDAT":
            yield kind, None
        if kind == b"IEND":
            return


def _unfilter(raw, height, rowbytes, bpp, path):
    out = np.zeros((height, rowbytes), np.uint8)
    prev = np.zeros(rowbytes, np.int64)
    for y in range(height):
        ftype = raw[y * (rowbytes + 1)]
        line = np.frombuffer(raw, np.uint8, rowbytes, y * (rowbytes + 1) + 1).astype(np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: a running sum per byte position within a pixel
            pad = (-rowbytes) % bpp
            cur = np.concatenate([line, np.zeros(pad, np.int64)]).reshape(-1, bpp).cumsum(0).ravel()[:rowbytes] & 255
        elif ftype == 2:
            cur = (line + prev) & 255
        elif ftype in (3, 4):  # Average, Paeth: each byte depends on the one reconstructed before it
            cur = np.zeros(rowbytes, np.int64)
            for i in range(rowbytes):
                a = int(cur[i - bpp]) if i >= bpp else 0
                b = int(prev[i])
                if ftype == 3:
                    cur[i] = (line[i] + (a + b) // 2) & 255
                else:
                    c = int(prev[i - bpp]) if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                    cur[i] = (line[i] + pred) & 255
        else:
            raise ImageError(f"{path}: PNG row {y} has unknown filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def read_png(path, check=None) -> np.ndarray:
    """A PNG file as float32 (H, W, C) in [0, 1], C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); every
    bit depth and colour type of non-interlaced PNG (interlaced ones through matplotlib when installed).
    check(height, width, channels), when given, is called with what the IHDR chunk declares (channels: the C
    returned, 3 for a palette image) before any pixel data is decompressed, and raises to refuse the image.
    Images of more than MAX_IMAGE_VALUES values are refused, and the data is decompressed to at most the size
    the header declares: data inflating past it is refused."""
    with open(path, "rb") as f:
        if f.read(len(_PNG_SIG)) != _PNG_SIG:
            raise ImageError(f"{path}: not a PNG file (bad signature)")
        chunks = _png_chunks(f, path)
        kind, body = next(chunks)
        if kind != b"IHDR" or len(body) != 13:
            raise ImageError(f"{path}: bad PNG header (the first chunk must be a 13-byte IHDR, got {kind!r})")
        width, height, depth, ctype, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
        if (depth not in _PNG_DEPTHS.get(ctype, ()) or width == 0 or height == 0 or compression or filtering
                or interlace > 1):
            raise ImageError(f"{path}: unsupported PNG (colour type {ctype}, bit depth {depth}, {width}x{height}"
                             + (f", compression {compression}, filter {filtering}, interlace {interlace}"
                                if compression or filtering or interlace > 1 else "") + ")")
        channels = _PNG_CHANNELS[ctype]
        shown = 3 if ctype == 3 else channels
        if check is not None:
            check(height, width, shown)
        if height * width * shown > MAX_IMAGE_VALUES:
            raise ImageError(f"{path}: PNG declares {width}x{height} pixels with {shown} channel"
                             f"{'s' if shown != 1 else ''}, more than the {MAX_IMAGE_VALUES} values read")
        if interlace:
            try:
                import matplotlib.image as mpimg
            except ImportError:
                raise ImageError(f"{path}: interlaced PNG; save it without interlacing (or install matplotlib, "
                                 f"which reads it)") from None
            a = np.asarray(mpimg.imread(path), np.float32)
            return a[:, :, None] if a.ndim == 2 else a
        bits = channels * depth
        rowbytes = (width * bits + 7) // 8
        want = height * (rowbytes + 1)
        d = zlib.decompressobj()
        raw = bytearray()
        palette, seen_idat, damaged = None, False, None
        for kind, body in chunks:
            if kind == b"IHDR":
                raise ImageError(f"{path}: PNG with a second IHDR chunk")
            if kind == b"PLTE":
                if len(body) % 3 or not body:
                    raise ImageError(f"{path}: PNG palette of {len(body)} bytes (1 to 256 RGB triples)")
                palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
            elif kind == b"IDAT":
                seen_idat = True
                if damaged is not None or d.eof:  # data after the end of the stream is ignored
                    continue
                try:  # at most one byte past the declared size: short of it, the whole piece is consumed
                    raw += d.decompress(body, want + 1 - len(raw))
                except zlib.error as e:  # reported once every chunk's CRC is checked: damage shows as such
                    damaged = e
                if len(raw) > want:
                    raise ImageError(f"{path}: PNG data inflates past the {want} bytes its {width}x{height} header "
                                     f"declares (a damaged or hostile file)")
    if not seen_idat:
        raise ImageError(f"{path}: PNG without IDAT chunk")
    if damaged is not None:
        raise ImageError(f"{path}: damaged PNG data ({damaged})")
    if len(raw) != want:
        raise ImageError(f"{path}: PNG data holds {len(raw)} bytes, {width}x{height} needs {want}")
    raw = bytes(raw)
    rows = _unfilter(raw, height, rowbytes, max(1, bits // 8), path)
    if depth == 16:
        vals = rows.view(">u2").reshape(height, width, channels).astype(np.int64)
    elif depth == 8:
        vals = rows.reshape(height, width, channels).astype(np.int64)
    else:
        vals = np.unpackbits(rows, axis=1).reshape(height, -1, depth)[:, :width].astype(np.int64)
        vals = (vals << np.arange(depth - 1, -1, -1)).sum(-1)[:, :, None]
    if ctype == 3:
        if palette is None:
            raise ImageError(f"{path}: palette PNG without a PLTE chunk")
        if vals.max() >= len(palette):
            raise ImageError(f"{path}: palette index {vals.max()} beyond the {len(palette)} colours")
        return (palette[vals[:, :, 0]] / 255).astype(np.float32)
    return (vals / ((1 << depth) - 1)).astype(np.float32)


def write_png(path, image) -> str:
    """Writes a (H, W) array in [0, 1] as an 8-bit grayscale PNG, atomically."""
    from ._atomic import write_atomic
    a = np.clip(np.rint(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
    h, w = a.shape

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    blob = (_PNG_SIG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return write_atomic(path, lambda f: f.write(blob))


def read_pnm(path, check=None) -> np.ndarray:
    """A PGM (P2, P5) or PPM (P3, P6) file as float32 (H, W, C) in [0, 1] (value / maxval). check(height,
    width, channels), when given, is called with what the header declares before the pixels are parsed, and
    raises to refuse the image; images of more than MAX_IMAGE_VALUES values are refused."""
    with open(path, "rb") as f:
        blob = f.read()
    magic = blob[:2]
    if magic not in (b"P2", b"P5", b"P3", b"P6"):
        raise ImageError(f"{path}: not a PGM/PPM file (magic {magic!r}; P2, P5, P3 and P6 are read)")
    tokens, pos = [], 2
    while len(tokens) < 3:  # width, height, maxval; '#' starts a comment up to the end of its line
        while pos < len(blob) and blob[pos:pos + 1].isspace():
            pos += 1
        if blob[pos:pos + 1] == b"#":
            while pos < len(blob) and blob[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(blob) and not blob[pos:pos + 1].isspace() and blob[pos:pos + 1] != b"#":
            pos += 1
        if start == pos:
            raise ImageError(f"{path}: truncated header")
        tokens.append(blob[start:pos])
    try:
        width, height, maxval = (int(t) for t in tokens)
    except ValueError:
        raise ImageError(f"{path}: header values {[t.decode('latin-1') for t in tokens]} are not integers") from None
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise ImageError(f"{path}: invalid size {width}x{height} or maxval {maxval}")
    channels = 3 if magic in (b"P3", b"P6") else 1
    if check is not None:
        check(height, width, channels)
    count = width * height * channels
    if count > MAX_IMAGE_VALUES:
        raise ImageError(f"{path}: declares {width}x{height} pixels with {channels} channel"
                         f"{'s' if channels != 1 else ''}, more than the {MAX_IMAGE_VALUES} values read")
    if magic in (b"P5", b"P6"):
        pos += 1  # the single whitespace after maxval
        dt = np.dtype(">u2" if maxval > 255 else "u1")
        data = blob[pos:pos + count * dt.itemsize]
        if len(data) != count * dt.itemsize:
            raise ImageError(f"{path}: truncated pixel data ({len(data)} of {count * dt.itemsize} bytes)")
        vals = np.frombuffer(data, dt).astype(np.int64)
    else:
        tokens = blob[pos:].split(maxsplit=count)  # the values, then whatever follows them in one piece
        if len(tokens) > count:
            raise ImageError(f"{path}: more pixel values than {width}x{height}x{channels} = {count}")
        try:
            vals = np.array(tokens, np.int64)
        except ValueError:
            raise ImageError(f"{path}: pixel data holds a value that is not an integer") from None
        if vals.size != count:
            raise ImageError(f"{path}: {vals.size} pixel values, {width}x{height}x{channels} needs {count}")
    if count and vals.max() > maxval:
        raise ImageError(f"{path}: pixel value {vals.max()} exceeds maxval {maxval}")
    return (vals.reshape(height, width, channels) / maxval).astype(np.float32)


def read_npy(path, check=None) -> np.ndarray:
    """The array of a .npy file (format 1.0 or 2.0, no Python objects). check(shape, dtype), when given, is
    called with what the header declares before any data is read, and raises to refuse the file; a file shorter
    than its header declares is refused (nothing the size of the declared shape is allocated before)."""
    from numpy.lib import format as npf
    with open(path, "rb") as f:
        try:
            version = npf.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npf.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npf.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}; 1.0 and 2.0 are read")
        except (ValueError, OSError, EOFError) as e:
            raise ImageError(f"{path}: not a readable .npy file ({e})") from None
        if any(d < 0 for d in shape):
            raise ImageError(f"{path}: not a readable .npy file (its header declares shape {shape})")
        if dtype.hasobject:
            raise ImageError(f"{path}: holds Python objects (dtype {dtype}); a .npy of numbers is read")
        if check is not None:
            check(tuple(shape), dtype)
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        have = os.fstat(f.fileno()).st_size - f.tell()
        if have < nbytes:
            raise ImageError(f"{path}: truncated .npy file: its header declares shape {tuple(shape)} of {dtype} "
                             f"({nbytes} bytes of data), the file holds {max(have, 0)}")
        data = bytearray(nbytes)
        if f.readinto(data) != nbytes:
            raise ImageError(f"{path}: truncated .npy file (shorter than its header declares)")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def read_input(path, spec, model_name) -> np.ndarray:
    """The model inputs (N, C, H, W) float32 in one file: an image (PGM/PPM, PNG) or an 8/16-bit integer
    .npy of pixels is scaled to [0, 1], brought to the model's channels (an alpha channel must be opaque; a
    gray model takes colour images only when R = G = B), upscaled when it has the size of the training's
    source images and normalized as the training data was; a float .npy ((H, W), (C, H, W) or (N, C, H, W))
    is taken as model input as is (as cnnnative.data's loaders return it). ImageError names the file and the
    expected shape. The size (shape) a file declares in its header is checked before its data is read or
    decompressed: a small file declaring a huge image is refused without the memory for it."""
    c, h, w = spec["shape"]
    ext = os.path.splitext(path)[1].lower()
    want = f"model {model_name} takes {describe_input(spec)}"
    sizes = [(h, w)] + ([tuple(spec["source_size"])] if spec["source_size"] else [])
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    not_images = (f"{path}: model {model_name} was trained on synthetic data, not images; give .npy files of float "
                  f"model input of shape ({c}, {h}, {w}) (as cnnnative.data.synthetic_images returns it)")

    def fits(ih, iw, ic):
        """Refuses an image of ih x iw pixels and ic channels (an alpha channel counted) that cannot become
        the model's input, whatever its pixels."""
        ic = ic - 1 if ic in (2, 4) else ic  # the alpha channel must be opaque, then is dropped
        if (ih, iw) not in sizes or not (ic == c or (c == 1 and ic == 3)):
            raise ImageError(f"{path}: image is {ih}x{iw} with {ic} channel{'s' if ic != 1 else ''}; {want}")

    if ext == ".npy":
        def check_npy(shape, dtype):
            if dtype.kind == "f":
                n = shape[0] if len(shape) == 4 else 1
                core = shape[-3:] if len(shape) in (3, 4) else (1,) + shape if len(shape) == 2 and c == 1 else None
                if core != (c, h, w):
                    raise ImageError(f"{path}: array of shape {shape}; {want}: a float .npy holds model input of "
                                     f"shape ({c}, {h}, {w}) or (N, {c}, {h}, {w})")
                if n == 0:
                    raise ImageError(f"{path}: array of shape {shape} holds no samples")
                return
            if dtype not in (np.uint8, np.uint16) or len(shape) not in (2, 3):
                raise ImageError(f"{path}: array of shape {shape} and dtype {dtype}; a pixel .npy holds uint8 or "
                                 f"uint16 (H, W) or (H, W, C) (a float .npy holds model input)")
            if not spec["images"]:
                raise ImageError(not_images)
            fits(shape[0], shape[1], shape[2] if len(shape) == 3 else 1)

        a = read_npy(path, check_npy)
        if a.dtype.kind == "f":
            if a.ndim == 2:
                a = a[None]
            if a.ndim == 3:
                a = a[None]
            if not np.isfinite(a).all():
                raise ImageError(f"{path}: holds values that are not finite")
            return np.ascontiguousarray(a, np.float32)
        img = (a / np.iinfo(a.dtype).max).astype(np.float32)  # as the image readers: float64, then float32
        img = img[:, :, None] if img.ndim == 2 else img
    elif ext in (".png", ".pgm", ".ppm", ".pnm"):
        if not spec["images"]:
            raise ImageError(not_images)
        img = (read_png if ext == ".png" else read_pnm)(path, fits)
    else:
        raise ImageError(f"{path}: unknown file type {ext or '(none)'!r}; give .pgm/.ppm, .png or .npy files")
    ih, iw, ic = img.shape
    if ic in (2, 4):
        if not np.all(img[:, :, -1] >= 1.0):
            raise ImageError(f"{path}: has transparent pixels; {want} (save it without alpha)")
        img, ic = img[:, :, :-1], ic - 1
    if c == 1 and ic == 3:
        if not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise ImageError(f"{path}: a colour image ({ih}x{iw}, 3 channels); {want}")
        img, ic = img[:, :, :1], 1
    if ic != c or (ih, iw) not in sizes:
        raise ImageError(f"{path}: image is {ih}x{iw} with {ic} channel{'s' if ic != 1 else ''}; {want}")
    x = np.ascontiguousarray(img.transpose(2, 0, 1))
    if (ih, iw) != (h, w):
        from .data import _upscale
        x = _upscale(x.astype(np.float64), h).astype(np.float32)
    x = x[None].astype(np.float32)
    x -= np.float32(spec["mean"])
    x /= np.float32(spec["std"])
    return x
