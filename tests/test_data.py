"""Tests for cnnnative.data: digits, IDX I/O, MNIST loaders, DataLoader."""

import gzip
import sys
import tracemalloc

import numpy as np
import pytest

from cnnnative import data


# ---------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return data.load_digits(size=28, test_fraction=0.2, seed=0,
                            return_stats=True)


def test_digits_shapes_dtypes(digits):
    x_tr, y_tr, x_te, y_te, _ = digits
    assert x_tr.ndim == 4 and x_tr.shape[1:] == (1, 28, 28)
    assert x_te.shape[1:] == (1, 28, 28)
    for x in (x_tr, x_te):
        assert x.dtype == np.float32 and x.flags.c_contiguous
    for y in (y_tr, y_te):
        assert y.dtype == np.int32 and y.ndim == 1 and y.flags.c_contiguous
    assert x_tr.shape[0] == y_tr.shape[0] and x_te.shape[0] == y_te.shape[0]
    assert x_tr.shape[0] + x_te.shape[0] == 1797


def test_digits_split_sizes_and_stratification(digits):
    _, y_tr, _, y_te, _ = digits
    n = y_tr.size + y_te.size
    assert y_te.size == 360  # ceil(0.2 * 1797)
    assert y_te.size / n >= 0.2
    full = np.bincount(np.concatenate([y_tr, y_te]), minlength=10)
    test = np.bincount(y_te, minlength=10)
    assert np.all(np.abs(test - full * 0.2) <= 1.5)
    assert set(np.unique(y_tr)) == set(range(10))


def test_digits_normalized_and_range(digits):
    x_tr, _, x_te, _, (mean, std) = digits
    assert abs(float(x_tr.mean(dtype=np.float64))) < 1e-4
    assert abs(float(x_tr.std(dtype=np.float64)) - 1.0) < 1e-4
    assert 0.0 < mean < 1.0 and std > 0
    for x in (x_tr, x_te):
        raw = x * std + mean
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_digits_split_is_partition():
    sk = pytest.importorskip("sklearn.datasets")
    x_tr, y_tr, x_te, y_te, (mean, std) = data.load_digits(
        size=8, seed=3, return_stats=True)
    got = np.concatenate([x_tr, x_te])[:, 0] * std + mean
    got = np.rint(got * 16).astype(np.int64).reshape(len(got), -1)
    got = np.concatenate([got, np.concatenate([y_tr, y_te])[:, None]], 1)
    b = sk.load_digits()
    ref = np.concatenate([b.images.reshape(len(b.images), -1).astype(np.int64),
                          b.target[:, None]], 1)
    sort = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(sort(got), sort(ref))


def test_digits_deterministic_and_seed_dependent():
    pytest.importorskip("sklearn")
    a = data.load_digits(size=16, seed=5)
    b = data.load_digits(size=16, seed=5)
    c = data.load_digits(size=16, seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], c[1])


def test_digits_test_fraction():
    pytest.importorskip("sklearn")
    _, y_tr, _, y_te = data.load_digits(size=8, test_fraction=0.5)
    assert y_te.size == 899 and y_tr.size == 898
    for bad in (0.0, 0.1, 0.19, 1.0, 1.5):
        with pytest.raises(ValueError):
            data.load_digits(test_fraction=bad)


def test_digits_missing_sklearn_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.load_digits()


def test_bilinear_constant_stays_constant():
    for out in (1, 5, 8, 28, 33):
        a = data._bilinear_matrix(out, 8)
        assert a.shape == (out, 8)
        np.testing.assert_allclose(a.sum(axis=1), 1.0)
    img = np.full((3, 8, 8), 0.37)
    up = data._upscale(img, 28)
    assert up.shape == (3, 28, 28)
    np.testing.assert_allclose(up, 0.37)
    np.testing.assert_allclose(data._bilinear_matrix(8, 8), np.eye(8))


def test_bilinear_is_separable_interpolation():
    rng = np.random.default_rng(0)
    img = rng.random((2, 8, 8))
    up = data._upscale(img, 28)
    assert up.min() >= img.min() - 1e-12 and up.max() <= img.max() + 1e-12
    # a horizontal ramp stays a monotone ramp
    ramp = np.tile(np.arange(8.0), (1, 8, 1))
    r = data._upscale(ramp, 28)[0]
    assert np.all(np.diff(r, axis=1) >= -1e-12)
    np.testing.assert_allclose(r, r[:1].repeat(28, 0))


# ---------------------------------------------------------------- IDX

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=(4, 3, 5), endpoint=True)
        arr = arr.astype(dtype)
    else:
        arr = rng.standard_normal((4, 3, 5)).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    data.write_idx(path, arr)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_mnist_magic_and_1d(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data.write_idx(tmp_path / "i", imgs)
    raw = (tmp_path / "i").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    lbl = np.array([3, 1, 4], dtype=np.uint8)
    data.write_idx(tmp_path / "l", lbl)
    assert (tmp_path / "l").read_bytes()[:4] == b"\x00\x00\x08\x01"
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "l")), lbl)


def test_write_idx_rejects_bad_dtype(tmp_path):
    with pytest.raises(ValueError, match="unsupported dtype"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(
        int(d).to_bytes(4, "big") for d in dims)


def test_idx_missing_file(tmp_path):
    path = tmp_path / "nope-idx3-ubyte"
    with pytest.raises(FileNotFoundError, match="nope-idx3-ubyte"):
        data.read_idx(path)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="bad magic") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_idx_unknown_type_code(tmp_path):
    path = tmp_path / "code"
    path.write_bytes(_header(0x0A, [2]) + b"ab")
    with pytest.raises(ValueError, match="type code"):
        data.read_idx(path)


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(path)


def test_idx_truncated_data(tmp_path):
    path = tmp_path / "trunc"
    path.write_bytes(_header(0x08, [2, 5]) + bytes(7))
    with pytest.raises(ValueError, match="expected 10 bytes, got 7") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_idx_truncated_data_gz(tmp_path):
    path = tmp_path / "trunc.gz"
    path.write_bytes(gzip.compress(_header(0x0C, [4]) + bytes(10)))
    with pytest.raises(ValueError, match="expected 16 bytes, got 10"):
        data.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_trailing_garbage(tmp_path, compress):
    blob = _header(0x08, [3]) + b"abc" + b"XY"
    path = tmp_path / ("trail.gz" if compress else "trail")
    path.write_bytes(gzip.compress(blob) if compress else blob)
    with pytest.raises(ValueError, match="trailing garbage: 2 extra bytes"):
        data.read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_huge_dims_does_not_allocate(tmp_path, compress):
    blob = _header(0x0E, [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF]) + bytes(8)
    path = tmp_path / ("huge.gz" if compress else "huge")
    path.write_bytes(gzip.compress(blob) if compress else blob)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as e:
            data.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value)
    assert peak < 8 * 2 ** 20


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    good = gzip.compress(_header(0x08, [100]) + bytes(range(100)))
    path.write_bytes(good[:12] + b"\xff" * 20)
    with pytest.raises(ValueError, match="bad.gz"):
        data.read_idx(path)


# ---------------------------------------------------------------- MNIST

def _fake_mnist(root, n_train=10, n_test=4, gz_train=False):
    rng = np.random.default_rng(2)
    sets = {}
    for kind, n, gz in (("train", n_train, gz_train), ("t10k", n_test, False)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, size=n).astype(np.uint8)
        ext = ".gz" if gz else ""
        data.write_idx(root / f"{kind}-images-idx3-ubyte{ext}", imgs)
        data.write_idx(root / f"{kind}-labels-idx1-ubyte{ext}", lbls)
        sets[kind] = (imgs, lbls)
    return sets


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    sets = _fake_mnist(tmp_path, gz_train=gz)
    for kind in ("train", "t10k"):
        x, y = data.load_mnist(tmp_path, kind)
        imgs, lbls = sets[kind]
        assert x.shape == (len(imgs), 1, 28, 28)
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert y.dtype == np.int32
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_allclose(x[:, 0], imgs / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, lbls)


def test_load_mnist_count_mismatch(tmp_path):
    _fake_mnist(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte",
                   np.zeros(9, dtype=np.uint8))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        data.load_mnist(tmp_path, "train")


def test_load_mnist_missing_and_bad_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path, "train")
    with pytest.raises(ValueError):
        data.load_mnist(tmp_path, "valid")


def test_load_mnist_dataset(tmp_path):
    sets = _fake_mnist(tmp_path)
    x_tr, y_tr, x_te, y_te, (mean, std) = data.load_mnist_dataset(
        tmp_path, seed=1, return_stats=True)
    assert x_tr.shape == (10, 1, 28, 28) and x_te.shape == (4, 1, 28, 28)
    assert abs(float(x_tr.mean(dtype=np.float64))) < 1e-5
    assert abs(float(x_tr.std(dtype=np.float64)) - 1.0) < 1e-4
    np.testing.assert_allclose(x_te[:, 0] * std + mean,
                               sets["t10k"][0] / 255.0, atol=1e-5)
    assert sorted(y_tr.tolist()) == sorted(sets["train"][1].tolist())
    again = data.load_mnist_dataset(tmp_path, seed=1)
    for u, v in zip((x_tr, y_tr, x_te, y_te), again):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------- DataLoader

def _xy(n=23):
    x = np.arange(n * 2 * 3, dtype=np.float64).reshape(n, 1, 2, 3)
    y = np.arange(n, dtype=np.int64)
    return x, y


def _epoch(loader):
    return [yb.copy() for _, yb in loader]


def test_loader_covers_each_sample_once():
    x, y = _xy()
    loader = data.DataLoader(x, y, batch_size=5, seed=0)
    assert len(loader) == 5
    for _ in range(3):
        seen = []
        sizes = []
        for xb, yb in loader:
            assert xb.dtype == np.float32 and xb.flags.c_contiguous
            assert yb.dtype == np.int32 and yb.flags.c_contiguous
            assert xb.shape[1:] == (1, 2, 3)
            np.testing.assert_array_equal(xb[:, 0, 0, 0], yb * 6)
            seen.extend(yb.tolist())
            sizes.append(len(yb))
        assert sorted(seen) == list(range(23))
        assert sizes == [5, 5, 5, 5, 3]


def test_loader_reproducible_and_varies_per_epoch():
    x, y = _xy()
    a = data.DataLoader(x, y, batch_size=4, seed=7)
    b = data.DataLoader(x, y, batch_size=4, seed=7)
    ea1, ea2 = _epoch(a), _epoch(a)
    eb1, eb2 = _epoch(b), _epoch(b)
    for u, v in zip(ea1 + ea2, eb1 + eb2):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(np.concatenate(ea1), np.concatenate(ea2))
    c = data.DataLoader(x, y, batch_size=4, seed=8)
    assert not np.array_equal(np.concatenate(_epoch(c)), np.concatenate(ea1))


def test_loader_no_shuffle_and_drop_last():
    x, y = _xy()
    loader = data.DataLoader(x, y, batch_size=5, shuffle=False, drop_last=True)
    assert len(loader) == 4
    batches = _epoch(loader)
    assert [len(b) for b in batches] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate(batches), np.arange(20))
    shuffled = data.DataLoader(x, y, batch_size=5, drop_last=True, seed=1)
    assert len(shuffled) == 4
    assert all(len(b) == 5 for b in _epoch(shuffled))
    exact = data.DataLoader(x[:20], y[:20], batch_size=5, drop_last=False)
    assert len(exact) == 4


def test_loader_validation():
    x, y = _xy()
    with pytest.raises(ValueError, match="23 samples but y has 22"):
        data.DataLoader(x, y[:-1], batch_size=4)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            data.DataLoader(x, y, batch_size=bad)


def test_synthetic_images_shapes_and_seed():
    a = data.synthetic_images(n=200, size=16, seed=1)
    b = data.synthetic_images(n=200, size=16, seed=1)
    x_tr, y_tr, x_te, y_te = a
    assert x_tr.shape[1:] == (3, 16, 16) and x_tr.dtype == np.float32 and y_tr.dtype == np.int32
    assert len(x_te) == 40 and len(x_tr) == 160
    assert set(np.unique(y_tr)) <= set(range(10))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # classes are separable: per-class mean gratings differ
    assert abs(float(x_tr.mean())) < 1e-3


def test_synthetic_shapes_masks():
    x, m = data.synthetic_shapes(n=16, size=32, seed=0)
    assert x.shape == m.shape == (16, 1, 32, 32) and x.dtype == m.dtype == np.float32
    assert set(np.unique(m)) <= {0.0, 1.0} and 0.02 < m.mean() < 0.8
    assert x[m == 1].mean() > x[m == 0].mean() + 0.4


# --------------------------------------------------------------------------
# DataLoader state (resume) and label ranges (the model size never comes from the labels)
# --------------------------------------------------------------------------

def _batches(loader):
    return [(xb.copy(), yb.copy()) for xb, yb in loader]


def test_loader_state_dict_resumes_the_batch_stream():
    import json
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    make = lambda: data.DataLoader(x, y, 4, seed=5, drop_last=True, transform=data.default_augment())  # noqa: E731
    a = make()
    _batches(a)
    state = json.loads(json.dumps(a.state_dict()))
    epoch2 = _batches(a)
    b = make()
    b.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(epoch2, _batches(b), strict=True):
        assert xa.tobytes() == xb.tobytes() and ya.tobytes() == yb.tobytes()


def test_loader_load_state_dict_validates_first():
    x = np.zeros((12, 1, 2, 2), np.float32)
    y = np.arange(12)
    a = data.DataLoader(x, y, 4, seed=1)
    st = a.state_dict()
    b = data.DataLoader(x, y, 4, seed=2)
    before = b.state_dict()
    with pytest.raises(ValueError, match="batch_size=4, this one has 3"):
        data.DataLoader(x, y, 3, seed=1).load_state_dict(st)
    with pytest.raises(ValueError, match="augment_rng"):
        b.load_state_dict(dict(st, augment_rng={"bit_generator": "MT19937", "state": 5}))
    with pytest.raises(ValueError, match="shuffle_rng"):
        b.load_state_dict(dict(st, shuffle_rng=None))
    assert b.state_dict() == before  # nothing half-loaded


@pytest.mark.parametrize("value", [10, 1_000_000, 2 ** 31 - 1, -1])
def test_read_idx_num_classes_names_file_index_and_value(tmp_path, value):
    labels = np.array([1, 2, 9, value, 3, value], np.int32)
    p = str(tmp_path / "train-labels-idx1-ubyte")
    data.write_idx(p, labels)
    with pytest.raises(ValueError) as ei:
        data.read_idx(p, num_classes=10)
    msg = str(ei.value)
    assert p in msg and f"label {value} at index 3" in msg and "[0, 10)" in msg
    np.testing.assert_array_equal(data.read_idx(p), labels)  # without num_classes: a plain reader
    with pytest.raises(ValueError, match="integers"):
        data.check_labels(np.zeros(3, np.float32), 10, "floats")


def test_load_mnist_dataset_num_classes(tmp_path):
    rng = np.random.default_rng(0)
    for kind, n in (("train", 20), ("t10k", 8)):
        data.write_idx(str(tmp_path / f"{kind}-images-idx3-ubyte"), rng.integers(0, 255, (n, 4, 4)).astype(np.uint8))
        y = rng.integers(0, 10, n).astype(np.int32)
        if kind == "t10k":
            y[5] = 10
        data.write_idx(str(tmp_path / f"{kind}-labels-idx1-ubyte"), y)
    with pytest.raises(ValueError) as ei:
        data.load_mnist_dataset(str(tmp_path), num_classes=10)
    assert "t10k-labels-idx1-ubyte" in str(ei.value) and "label 10 at index 5" in str(ei.value)
    x_tr, y_tr, x_te, y_te = data.load_mnist_dataset(str(tmp_path), num_classes=11)
    assert y_te[5] == 10 and len(x_tr) == 20
