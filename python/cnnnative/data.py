"""Datasets and batching for cnnnative.

Owns the scikit-learn digits loader, the IDX (MNIST / Fashion-MNIST) reader and
writer, the MNIST directory loaders, the shuffling mini-batch DataLoader and batch
augmentation (seeded, vectorized numpy over a whole (N, C, H, W) batch).
"""

import gzip
import math
import os
import zlib

import numpy as np

__all__ = [
    "load_digits",
    "read_idx",
    "write_idx",
    "load_mnist",
    "load_mnist_dataset",
    "check_labels",
    "DataLoader",
    "Compose",
    "RandomFlip",
    "RandomTranslate",
    "RandomRotation",
    "GaussianNoise",
    "BrightnessContrast",
    "GaussianBlur",
    "default_augment",
    "synthetic_images",
    "synthetic_shapes",
]

# IDX type code -> big-endian numpy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (numpy kind, itemsize) -> IDX type code, for the writer.
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_TYPES.items()}

# Deflate cannot expand data by more than ~1032x; anything beyond this is a lie.
_GZIP_MAX_RATIO = 1100
_CHUNK = 1 << 20


# --------------------------------------------------------------------------
# normalization / split helpers
# --------------------------------------------------------------------------

def _normalize(x_train, *others):
    """Normalize in place with the train mean/std; returns (mean, std)."""
    mean = float(x_train.mean(dtype=np.float64))
    std = float(x_train.std(dtype=np.float64))
    if not std > 1e-12:
        std = 1.0
    for arr in (x_train,) + others:
        arr -= np.float32(mean)
        arr /= np.float32(std)
    return mean, std


def _stratified_split(y, n_test, rng):
    """Seeded, per-class proportional split; returns (train_idx, test_idx)."""
    n = y.shape[0]
    perm = rng.permutation(n)
    yp = y[perm]
    order = np.argsort(yp, kind="stable")  # grouped by class, random within
    labels = yp[order]
    counts = np.bincount(labels)
    starts = np.cumsum(counts) - counts
    rank = np.arange(n) - starts[labels]
    frac = (rank + 0.5) / counts[labels]  # position inside its class, in (0,1)
    pick = np.lexsort((rng.permutation(n), frac))  # random tie-break
    chosen = perm[order[pick]]
    test_idx = rng.permutation(chosen[:n_test])
    train_idx = rng.permutation(chosen[n_test:])
    return train_idx, test_idx


# --------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------

def _bilinear_matrix(out_size, in_size):
    """(out_size, in_size) bilinear interpolation matrix, half-pixel centers."""
    pos = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    pos = np.clip(pos, 0.0, in_size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, in_size - 1)
    w = pos - lo
    rows = np.arange(out_size)
    a = np.zeros((out_size, in_size), dtype=np.float64)
    a[rows, lo] = 1.0 - w
    a[rows, hi] += w
    return a


def _upscale(images, size):
    """Bilinear resize of (N, h, w) images to (N, size, size): A @ img @ B.T."""
    a = _bilinear_matrix(size, images.shape[1])
    b = _bilinear_matrix(size, images.shape[2])
    return np.matmul(np.matmul(a, images), b.T)


def load_digits(size=28, test_fraction=0.2, seed=0, return_stats=False):
    """scikit-learn 8x8 digits, upscaled to size x size and train-normalized.

    Returns (x_train, y_train, x_test, y_test); with return_stats=True also
    the (mean, std) used for normalization as a fifth element.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    test_fraction = float(test_fraction)
    if not 0.2 <= test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in [0.2, 1), got {test_fraction} "
            "(at least 20% of the data is held out for testing)")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "cnnnative.data.load_digits needs scikit-learn for its bundled "
            "digits dataset: pip install scikit-learn") from exc

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int32)
    x = _upscale(images, int(size)).astype(np.float32)[:, None, :, :]

    n = y.shape[0]
    n_test = int(math.ceil(n * test_fraction - 1e-9))
    if n_test >= n:
        raise ValueError(
            f"test_fraction={test_fraction} leaves no training samples "
            f"out of {n}")
    rng = np.random.default_rng(seed)
    train_idx, test_idx = _stratified_split(y, n_test, rng)

    x_train = np.ascontiguousarray(x[train_idx])
    x_test = np.ascontiguousarray(x[test_idx])
    y_train = np.ascontiguousarray(y[train_idx])
    y_test = np.ascontiguousarray(y[test_idx])
    stats = _normalize(x_train, x_test)
    out = (x_train, y_train, x_test, y_test)
    return out + (stats,) if return_stats else out


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------

def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"{path}: truncated {what}: expected {n} bytes, got {len(data)}")
    return data


def _read_gz_payload(f, nbytes, path):
    """Read exactly nbytes from a gzip stream in bounded chunks."""
    buf = bytearray()
    while len(buf) < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) != nbytes:
        raise ValueError(
            f"{path}: truncated data: expected {nbytes} bytes, got {len(buf)}")
    extra = f.read(_CHUNK)
    if extra:
        more = len(extra)
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            more += len(chunk)
        raise ValueError(
            f"{path}: trailing garbage: {more} extra bytes after the "
            f"{nbytes} data bytes")
    return bytes(buf)


def check_labels(labels, num_classes, source):
    """Raises ValueError naming `source`, the first bad index and its value unless every label is an
    integer in [0, num_classes)."""
    labels = np.asarray(labels)
    if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
            or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: class labels must be integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        flat = int(np.argmax(bad.ravel()))
        idx = np.unravel_index(flat, labels.shape)
        where = idx[0] if labels.ndim == 1 else tuple(int(i) for i in idx)
        raise ValueError(
            f"{source}: label {int(labels[idx])} at index {where} is outside [0, {num_classes}) "
            f"({int(bad.sum())} labels out of range; the number of classes is {num_classes}, "
            "not taken from the labels)")


def read_idx(path, num_classes=None):
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    With num_classes, the file holds class labels: an integer array whose values must lie in
    [0, num_classes) (ValueError naming the file, the first bad index and its value).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"IDX file not found: {path}", path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    file_size = os.path.getsize(path)

    with open(path, "rb") as raw:
        is_gz = raw.read(2) == b"\x1f\x8b"
    if not is_gz:
        arr = _parse_idx_file(path, file_size)
    else:
        try:
            with gzip.open(path, "rb") as f:
                arr = _parse_idx(f, path, file_size, True)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
    if num_classes is not None:
        check_labels(arr, num_classes, path)
    return arr


def _parse_idx_file(path, file_size):
    with open(path, "rb") as f:
        return _parse_idx(f, path, file_size, False)


def _parse_idx(f, path, file_size, is_gz):
    magic = _read_exact(f, 4, path, "header")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"{path}: bad magic 0x{magic.hex()}: IDX files start with two "
            "zero bytes")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_TYPES:
        raise ValueError(
            f"{path}: unknown IDX type code 0x{code:02X} (magic 0x{magic.hex()})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    dtype = _IDX_TYPES[code]
    dims = tuple(int(d) for d in np.frombuffer(
        _read_exact(f, 4 * ndim, path, "dimension header"), dtype=">u4"))
    header_len = 4 + 4 * ndim
    count = math.prod(dims)
    nbytes = count * dtype.itemsize

    if is_gz:
        limit = file_size * _GZIP_MAX_RATIO
        if nbytes > limit:
            raise ValueError(
                f"{path}: header dims {dims} claim {nbytes} data bytes, more "
                f"than a {file_size}-byte gzip file can hold (corrupt header?)")
        data = np.frombuffer(_read_gz_payload(f, nbytes, path), dtype=dtype)
    else:
        available = file_size - header_len
        if nbytes > available:
            raise ValueError(
                f"{path}: truncated data or absurd header dims {dims}: "
                f"expected {nbytes} bytes, got {available}")
        if nbytes < available:
            raise ValueError(
                f"{path}: trailing garbage: {available - nbytes} extra bytes "
                f"after the {nbytes} data bytes")
        data = np.fromfile(f, dtype=dtype, count=count)
        if data.size != count:
            raise ValueError(
                f"{path}: truncated data: expected {nbytes} bytes, got "
                f"{data.size * dtype.itemsize}")
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def write_idx(path, array):
    """Write array as an IDX file; gzip-compressed when path ends in .gz."""
    path = os.fspath(path)
    arr = np.asarray(array)
    code = _IDX_CODES.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"write_idx: unsupported dtype {arr.dtype} (use uint8, int8, "
            "int16, int32, float32 or float64)")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"write_idx: ndim must be in 1..255, got {arr.ndim}")
    if any(d >= 2 ** 32 for d in arr.shape):
        raise ValueError(f"write_idx: dimension too large in {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(
        arr.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(arr, dtype=_IDX_TYPES[code]).tobytes()
    if path.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(
                fileobj=raw, mode="wb", mtime=0) as f:
            f.write(header)
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(header)
            f.write(payload)


# --------------------------------------------------------------------------
# MNIST-style directories
# --------------------------------------------------------------------------

def _find_idx(directory, name):
    for candidate in (name, name + ".gz"):
        full = os.path.join(directory, candidate)
        if os.path.isfile(full):
            return full
    raise FileNotFoundError(
        2, f"neither {name} nor {name}.gz found in {directory}",
        os.path.join(directory, name))


def load_mnist(path, kind="train", num_classes=None):
    """Load {kind}-images/labels from an MNIST-layout directory.

    Returns x float32 (N, 1, H, W) in [0, 1] and y int32 (N,). With num_classes, labels outside
    [0, num_classes) are a ValueError naming the labels file, the first bad index and its value.
    """
    if kind not in ("train", "t10k"):
        raise ValueError(f"kind must be 'train' or 't10k', got {kind!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(2, f"MNIST directory not found: {path}", path)
    img_path = _find_idx(path, f"{kind}-images-idx3-ubyte")
    lbl_path = _find_idx(path, f"{kind}-labels-idx1-ubyte")
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{img_path}: expected a 3-D uint8 image array, got "
            f"{images.ndim}-D {images.dtype}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{lbl_path}: expected a 1-D integer label array, got "
            f"{labels.ndim}-D {labels.dtype}")
    if num_classes is not None:
        check_labels(labels, num_classes, lbl_path)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"count mismatch: {img_path} has {images.shape[0]} images but "
            f"{lbl_path} has {labels.shape[0]} labels")
    x = images.astype(np.float32)[:, None, :, :]
    x *= np.float32(1.0 / 255.0)
    return np.ascontiguousarray(x), labels.astype(np.int32)


def load_mnist_dataset(path, seed=0, return_stats=False, num_classes=None):
    """Train and t10k splits, normalized with the train mean/std.

    The seed shuffles the order of the training set. Returns
    (x_train, y_train, x_test, y_test), plus (mean, std) if return_stats.
    num_classes: labels must lie in [0, num_classes) (ValueError naming the
    file, the first bad index and its value); None checks nothing.
    """
    x_train, y_train = load_mnist(path, "train", num_classes)
    x_test, y_test = load_mnist(path, "t10k", num_classes)
    perm = np.random.default_rng(seed).permutation(x_train.shape[0])
    x_train = np.ascontiguousarray(x_train[perm])
    y_train = np.ascontiguousarray(y_train[perm])
    stats = _normalize(x_train, x_test)
    out = (x_train, y_train, x_test, y_test)
    return out + (stats,) if return_stats else out


# --------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------

class DataLoader:
    """Mini-batch iterator; each iter() is one epoch with a fresh permutation.

    state_dict()/load_state_dict() save and restore the shuffle and augmentation generators
    (numpy bit-generator states) between epochs, so a resumed run draws the same batches.

    Sharding (data-parallel training, as torch's DistributedSampler): num_replicas=W, rank=r. Every rank holds
    the same seed, so all draw the same permutation each epoch; global batch k is the W x batch_size samples
    order[k*W*B:(k+1)*W*B] and rank r takes every W-th of them from the r-th (slice[r::W]): the ranks' shards
    of an epoch are disjoint and cover it, and together they form exactly the batches a single loader with
    batch_size W x B draws (the same seed gives the same global batches on any number of ranks). Equal shard
    sizes: with drop_last the samples beyond the last full global batch are dropped (len() is
    n // (W x B) on every rank); without, the epoch's order is padded by repeating its first samples to a multiple
    of W (torch's rule), so every rank has ceil(n / W) samples and the same number of batches. set_epoch(e)
    positions the shuffle at the start of epoch e (0-based), for a loop that does not iterate every epoch.
    The augmentation generator differs per rank (seeded with the rank, again at every epoch from the shuffle
    generator's position, so that a resume restores every rank's stream). state_dict() holds the global batch size,
    so a checkpoint resumes on any number of ranks with the same global batch."""

    def __init__(self, x, y, batch_size, shuffle=True, seed=0, drop_last=False, transform=None,
                 num_replicas=1, rank=0):
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y)
        if x.ndim < 1 or y.ndim < 1:
            raise ValueError("x and y must be arrays with a leading sample axis")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        if (isinstance(batch_size, bool)
                or not isinstance(batch_size, (int, np.integer))
                or batch_size < 1):
            raise ValueError(
                f"batch_size must be a positive integer, got {batch_size!r}")
        for name, v in (("num_replicas", num_replicas), ("rank", rank)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {v!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DataLoader: need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                             f"num_replicas={num_replicas}, rank={rank}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.seed = int(seed)
        self.x = x
        # class labels become int32; float targets (regression, masks) stay float32
        self.y = y.astype(np.float32 if y.dtype.kind == "f" else np.int32, copy=False)
        self.transform = transform
        self._aug_rng = np.random.default_rng([int(seed), 1] + ([self.rank] if self.num_replicas > 1 else []))
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def state_dict(self):
        """JSON-able state: the generators' bit_generator.state and the loader's settings."""
        return {"shuffle_rng": self._rng.bit_generator.state,
                "augment_rng": self._aug_rng.bit_generator.state,
                "num_samples": int(self.x.shape[0]), "batch_size": self.batch_size * self.num_replicas,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def _check_state_dict(self, state):
        if not isinstance(state, dict):
            raise ValueError("DataLoader.load_state_dict: expected a dict from state_dict()")
        for k, own in (("num_samples", int(self.x.shape[0])), ("batch_size", self.batch_size * self.num_replicas),
                       ("shuffle", self.shuffle), ("drop_last", self.drop_last)):
            if state.get(k) != own:
                raise ValueError(
                    f"DataLoader.load_state_dict: the state is of a loader with {k}={state.get(k)!r}, "
                    f"this one has {own!r}")
        gens = []
        for k, rng in (("shuffle_rng", self._rng), ("augment_rng", self._aug_rng)):
            st = state.get(k)
            fresh = type(rng.bit_generator)()
            try:
                fresh.state = st  # numpy validates the layout and values
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                raise ValueError(f"DataLoader.load_state_dict: invalid {k} state: {exc}") from None
            gens.append(fresh.state)
        return gens

    def load_state_dict(self, state):
        """Restores state_dict() (checked whole before anything changes)."""
        shuffle_st, aug_st = self._check_state_dict(state)
        self._rng.bit_generator.state = shuffle_st
        self._aug_rng.bit_generator.state = aug_st

    def set_epoch(self, epoch):
        """Positions the shuffle where it is at the start of epoch `epoch` (0-based) of a loader fresh from
        this seed: the next iter() draws that epoch's permutation (the same on every rank)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be an int >= 0, got {epoch!r}")
        rng = np.random.default_rng(self.seed)
        if self.shuffle:
            for _ in range(int(epoch)):
                rng.permutation(self.x.shape[0])
        self._rng = rng

    def __len__(self):
        n, bs, w = self.x.shape[0], self.batch_size, self.num_replicas
        if self.drop_last:
            return n // (bs * w)
        per_rank = -(-n // w)
        return -(-per_rank // bs)

    def _shard(self, order):
        """This rank's samples of an epoch's order, in the order its batches take them."""
        w, r = self.num_replicas, self.rank
        if w == 1:
            return order
        if self.drop_last:
            return order[:len(self) * self.batch_size * w][r::w]
        pad = -len(order) % w
        if pad:  # torch's rule: repeat the order from its start
            order = np.concatenate([order, np.resize(order, pad)])
        return order[r::w]

    def __iter__(self):
        n = self.x.shape[0]
        if self.num_replicas > 1:
            # each rank's augmentation stream restarts every epoch from the seed, the rank and the shuffle
            # generator's position (the same on every rank, and restored by load_state_dict): a run resumed from a
            # checkpoint (which holds rank 0's state only) augments as the uninterrupted run does on every rank
            pos = self._rng.bit_generator.state["state"]
            self._aug_rng = np.random.default_rng([self.seed, 1, self.rank, pos["state"], pos["inc"]])
        order = self._shard(self._rng.permutation(n) if self.shuffle else np.arange(n))
        bs = self.batch_size
        for b in range(len(self)):
            idx = order[b * bs:(b + 1) * bs]
            xb = self.x[idx]
            if self.transform is not None:
                xb = self.transform(xb, self._aug_rng)
            yield (np.ascontiguousarray(xb, dtype=np.float32),
                   np.ascontiguousarray(self.y[idx]))


# --------------------------------------------------------------------------
# synthetic tasks (no download): a 10-class image task and shape segmentation
# --------------------------------------------------------------------------

def synthetic_images(n=2000, size=32, channels=3, num_classes=10, test_fraction=0.2, noise=0.3, seed=0):
    """Class c = a sinusoidal grating at angle c*pi/num_classes with a random phase and frequency,
    tinted per class across channels, plus Gaussian noise. Returns normalized
    (x_train, y_train, x_test, y_test) like load_digits."""
    if not 0.2 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0.2, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    ang = y * np.pi / num_classes
    freq = rng.uniform(2.0, 4.0, n) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi, n)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    proj = np.cos(ang)[:, None, None] * xx[None] + np.sin(ang)[:, None, None] * yy[None]
    g = np.sin(freq[:, None, None] * proj + phase[:, None, None])
    tint = 0.6 + 0.4 * np.cos(2 * np.pi * (np.arange(channels)[None, :] / max(channels, 1)
                                           + y[:, None] / num_classes))
    x = tint[:, :, None, None] * g[:, None] + noise * rng.standard_normal((n, channels, size, size))
    x = x.astype(np.float32)
    tr, te = _stratified_split(y, int(math.ceil(n * test_fraction)), rng)
    xs = [np.ascontiguousarray(x[tr]), np.ascontiguousarray(x[te])]
    _normalize(*xs)
    return xs[0], y[tr], xs[1], y[te]


def synthetic_shapes(n=512, size=64, max_shapes=3, noise=0.3, seed=0):
    """Segmentation of circles and squares on noise: images (n, 1, size, size) float32 and binary
    masks (n, 1, size, size) float32 (1 inside any shape)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    masks = np.zeros((n, size, size), bool)
    for _ in range(max_shapes):
        present = rng.random(n) < 0.8
        cy, cx = rng.uniform(0.15, 0.85, (2, n)) * size
        r = rng.uniform(0.08, 0.2, n) * size
        circle = rng.random(n) < 0.5
        dy = yy[None] - cy[:, None, None]
        dx = xx[None] - cx[:, None, None]
        rr = r[:, None, None]
        inside = np.where(circle[:, None, None], dy ** 2 + dx ** 2 <= rr ** 2,
                          (np.abs(dy) <= rr) & (np.abs(dx) <= rr))
        masks |= inside & present[:, None, None]
    img = masks * rng.uniform(0.6, 1.0, (n, 1, 1)) + noise * rng.standard_normal((n, size, size))
    return img[:, None].astype(np.float32), masks[:, None].astype(np.float32)


# --------------------------------------------------------------------------
# augmentation: each transform maps a float (N, C, H, W) batch and a numpy
# Generator to a new batch of the same shape and dtype; parameters are drawn
# per sample, the work is whole-batch numpy.
# --------------------------------------------------------------------------

def _check_batch(x):
    if x.ndim != 4:
        raise ValueError(f"augmentation expects an (N, C, H, W) batch, got shape {x.shape}")
    return x


def _gather(x, src_y, src_x):
    """out[n, c, i, j] = x[n, c, src_y[n, i, j], src_x[n, i, j]], zero where the source is outside."""
    n, c, h, w = x.shape
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
    sy = np.clip(src_y, 0, h - 1)
    sx = np.clip(src_x, 0, w - 1)
    ni = np.arange(n)[:, None, None, None]
    ci = np.arange(c)[None, :, None, None]
    out = x[ni, ci, sy[:, None], sx[:, None]]
    return out * inside[:, None].astype(x.dtype)


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng):
        for t in self.transforms:
            x = t(x, rng)
        return x


class RandomFlip:
    """Mirrors each sample with probability p (horizontal: last axis; vertical: H axis)."""

    def __init__(self, p=0.5, vertical=False):
        self.p, self.axis = float(p), 2 if vertical else 3

    def __call__(self, x, rng):
        x = _check_batch(x).copy()
        m = rng.random(x.shape[0]) < self.p
        x[m] = np.flip(x[m], axis=self.axis)
        return x


class RandomTranslate:
    """Random crop of the zero-padded image = a shift of up to max_shift pixels in each direction."""

    def __init__(self, max_shift=2):
        self.max_shift = int(max_shift)

    def __call__(self, x, rng):
        n, _, h, w = _check_batch(x).shape
        s = self.max_shift
        dy = rng.integers(-s, s + 1, n)
        dx = rng.integers(-s, s + 1, n)
        yy = np.arange(h)[None, :, None] - dy[:, None, None]
        xx = np.arange(w)[None, None, :] - dx[:, None, None]
        return _gather(x, np.broadcast_to(yy, (n, h, w)), np.broadcast_to(xx, (n, h, w)))


class RandomRotation:
    """Rotates each sample by an angle drawn from [-degrees, degrees] (or [lo, hi] when a pair is
    given) about its centre; bilinear sampling, zero fill."""

    def __init__(self, degrees=10.0):
        lo, hi = (-float(degrees), float(degrees)) if np.isscalar(degrees) else map(float, degrees)
        self.range = (lo, hi)

    def __call__(self, x, rng):
        n, _, h, w = _check_batch(x).shape
        a = np.deg2rad(rng.uniform(*self.range, n))[:, None, None]
        cy, cx = (h - 1) / 2, (w - 1) / 2
        yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
        # inverse map: source = R(-a) @ destination
        sy = np.cos(a) * yy[None] - np.sin(a) * xx[None] + cy
        sx = np.sin(a) * yy[None] + np.cos(a) * xx[None] + cx
        y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
        fy, fx = (sy - y0)[:, None].astype(x.dtype), (sx - x0)[:, None].astype(x.dtype)
        out = (_gather(x, y0, x0) * (1 - fy) * (1 - fx) + _gather(x, y0, x0 + 1) * (1 - fy) * fx
               + _gather(x, y0 + 1, x0) * fy * (1 - fx) + _gather(x, y0 + 1, x0 + 1) * fy * fx)
        return out.astype(x.dtype, copy=False)


class GaussianNoise:
    """Adds N(0, std^2) noise."""

    def __init__(self, std=0.1):
        self.std = float(std)

    def __call__(self, x, rng):
        return (_check_batch(x) + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(self.std)).astype(x.dtype)


class BrightnessContrast:
    """Per sample: x' = (x - mean) * c + mean + b, c ~ U(1-contrast, 1+contrast), b ~ U(-brightness, brightness)."""

    def __init__(self, brightness=0.2, contrast=0.2):
        self.brightness, self.contrast = float(brightness), float(contrast)

    def __call__(self, x, rng):
        n = _check_batch(x).shape[0]
        c = rng.uniform(1 - self.contrast, 1 + self.contrast, n).astype(x.dtype)[:, None, None, None]
        b = rng.uniform(-self.brightness, self.brightness, n).astype(x.dtype)[:, None, None, None]
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return ((x - mean) * c + mean + b).astype(x.dtype, copy=False)


class GaussianBlur:
    """Separable Gaussian blur with a per-sample sigma ~ U(sigma_min, sigma_max), reflect-free zero padding."""

    def __init__(self, sigma=(0.1, 1.0), kernel_size=5):
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"GaussianBlur: kernel_size must be odd and positive, got {kernel_size}")
        self.sigma, self.k = (float(sigma[0]), float(sigma[1])), int(kernel_size)

    def __call__(self, x, rng):
        n, c, h, w = _check_batch(x).shape
        r = self.k // 2
        sig = rng.uniform(*self.sigma, n)
        t = np.arange(-r, r + 1)
        k = np.exp(-(t[None, :] ** 2) / (2 * sig[:, None] ** 2))
        k = (k / k.sum(1, keepdims=True)).astype(x.dtype)  # (n, K)
        p = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
        rows = sum(k[:, i, None, None, None] * p[:, :, i:i + h, :] for i in range(self.k))
        out = sum(k[:, i, None, None, None] * rows[:, :, :, i:i + w] for i in range(self.k))
        return out.astype(x.dtype, copy=False)


def default_augment(flip=False):
    """A light default for small images: shift by 2, rotate by 10 degrees, brightness/contrast 0.1
    (plus horizontal flips when the classes allow it, e.g. CIFAR but not digits)."""
    t = [RandomTranslate(2), RandomRotation(10), BrightnessContrast(0.1, 0.1)]
    if flip:
        t.insert(0, RandomFlip())
    return Compose(t)
