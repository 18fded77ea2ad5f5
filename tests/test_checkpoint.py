"""Checkpoints load all-or-nothing: every tensor is checked (names, shapes, float dtype, finite in float32)
before any is written, each member's size is bounded before it is decompressed, pickle is never run, and
every refusal is a ValueError naming the file and tensor. The model stays bitwise unchanged after each."""
import io
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

import cnnnative as cn
from cnnnative.train import load_checkpoint, save_checkpoint


def _model():
    return cn.models.lenet5(seed=3)


def _snapshot(m):
    return {k: np.array(v, copy=True) for k, v in m.state_dict().items()}


def _assert_unchanged(m, snap):
    sd = m.state_dict()
    assert list(sd) == list(snap)
    for k, v in snap.items():
        assert sd[k].dtype == v.dtype and sd[k].tobytes() == v.tobytes(), k


def _write_npz(path, arrays, allow_pickle=False):
    """An .npz as np.savez writes it, from {name: array} (any dtype)."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in arrays.items():
            with zf.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=allow_pickle)
    return str(path)


def _weights(seed=0):
    return {k: np.array(v) for k, v in cn.models.lenet5(seed=seed).state_dict().items()}


def _refused(m, path, *match):
    snap = _snapshot(m)
    with pytest.raises(ValueError) as ei:
        load_checkpoint(m, path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for s in match:
        assert s in msg, msg
    _assert_unchanged(m, snap)
    return msg


def test_nan_in_last_tensor_writes_nothing(tmp_path):
    w = _weights(0)
    last = list(w)[-1]
    w[last] = w[last].copy()
    w[last][-1] = np.nan
    m = _model()
    _refused(m, _write_npz(tmp_path / "nan.npz", w), repr(last), "nan", "not finite")


def test_float64_overflowing_float32_is_refused(tmp_path):
    w = _weights(0)
    w["fc1.weight"] = w["fc1.weight"].astype(np.float64)
    w["fc1.weight"][3, 5] = 1e39
    m = _model()
    _refused(m, _write_npz(tmp_path / "big.npz", w), "'fc1.weight'", "1e+39", "(3, 5)", "overflows float32")


def test_finite_float64_and_float16_load_as_float32(tmp_path):
    w = _weights(1)
    w["fc1.weight"] = w["fc1.weight"].astype(np.float64)
    w["fc2.bias"] = w["fc2.bias"].astype(np.float16)
    m = load_checkpoint(_model(), _write_npz(tmp_path / "ok.npz", w))
    sd = m.state_dict()
    assert sd["fc1.weight"].dtype == np.float32
    np.testing.assert_array_equal(sd["fc1.weight"], w["fc1.weight"].astype(np.float32))
    np.testing.assert_array_equal(sd["fc2.bias"], w["fc2.bias"].astype(np.float32))


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool", "datetime64[s]", "timedelta64[s]",
                                   "complex64", "U3", "S3"])
def test_non_float_dtypes_are_refused(tmp_path, dtype):
    w = _weights(0)
    w["conv2.bias"] = np.zeros(w["conv2.bias"].shape, dtype)
    m = _model()
    _refused(m, _write_npz(tmp_path / "t.npz", w), "'conv2.bias'", str(np.dtype(dtype)))


class _Evil:
    """Unpickling this creates a folder: proof that pickle ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    w = _weights(0)
    marker = str(tmp_path / "pickle-ran")
    arr = np.empty(w["conv2.bias"].shape, object)
    arr[:] = [_Evil(marker)] * arr.size
    w["conv2.bias"] = arr
    path = _write_npz(tmp_path / "evil.npz", w, allow_pickle=True)
    m = _model()
    _refused(m, path, "'conv2.bias'", "object")
    assert not os.path.exists(marker)


def test_names_and_shapes_are_checked(tmp_path):
    m = _model()
    w = _weights(0)
    w["fc3.weight"] = np.zeros((5, 84), np.float32)
    _refused(m, _write_npz(tmp_path / "shape.npz", w), "'fc3.weight'", "(5, 84)", "(10, 84)")
    w = _weights(0)
    del w["fc3.bias"]
    w["extra"] = np.zeros(3, np.float32)
    _refused(m, _write_npz(tmp_path / "names.npz", w), "missing tensors: fc3.bias", "unexpected tensors: extra")
    # strict=False: the matching tensors load, the others are left alone
    load_checkpoint(m, str(tmp_path / "names.npz"), strict=False)
    np.testing.assert_array_equal(m.state_dict()["fc1.weight"], w["fc1.weight"])


def _npy(arr, shape=None):
    """.npy bytes of arr, optionally with a header that declares another shape."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    b = buf.getvalue()
    if shape is not None:
        hlen = struct.unpack("<H", b[8:10])[0]
        header = b[10:10 + hlen].decode("latin1").replace(str(arr.shape), str(shape))
        header = header.rstrip("\n").ljust(hlen - 1) + "\n"
        b = b[:10] + header.encode("latin1") + b[10 + hlen:]
    return b


def _npy_header(shape):
    """The .npy header of a float32 array of `shape`, without data (the array is never allocated)."""
    return _npy(np.zeros(1, np.float32), shape=shape)[:-4]


def _raw_zip(path, members):
    """Writes a zip by hand from (name, data, crc, uncompressed_size, method), so sizes may lie."""
    out, central = bytearray(), bytearray()
    for name, data, crc, usize, method in members:
        n = name.encode()
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), usize, len(n), 0)
        out += n + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                               usize, len(n), 0, 0, 0, 0, 0, off) + n
    cd_off = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), cd_off, 0)
    with open(path, "wb") as f:
        f.write(out)
    return str(path)


def _stored(name, data):
    return (name, data, zlib.crc32(data), len(data), 0)


def _zeros_bomb(prefix: bytes, mib: int):
    """A raw-deflate stream of prefix + mib MiB of zeros, made in milliseconds (full flushes make every MiB
    compress to the same bytes), with its CRC and size."""
    z = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    mid = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(z) + c.flush(zlib.Z_FULL_FLUSH) == mid
    last = c.compress(z) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(z, crc)
    return first + mid * (mib - 1) + last, crc, len(prefix) + (mib << 20)


def _members_but(name, w=None):
    w = w if w is not None else _weights(0)
    return [_stored(k + ".npy", _npy(v)) for k, v in w.items() if k != name]


def test_header_shape_is_checked_before_reading_data(tmp_path):
    # the zip says 600 bytes; the .npy header claims 2**40 floats: refused on the header, nothing allocated
    w = _weights(0)
    members = _members_but("conv1.weight", w) + [
        _stored("conv1.weight.npy", _npy(w["conv1.weight"], shape=(1 << 40,)))]
    _refused(_model(), _raw_zip(tmp_path / "hdr.npz", members), "'conv1.weight'", "(1099511627776,)")


def test_declared_size_is_bounded_before_decompressing(tmp_path):
    # an honest 64 MiB member where 600 bytes are expected: refused on the zip directory alone
    data, crc, usize = _zeros_bomb(_npy_header((16 << 20,)), 64)
    members = _members_but("conv1.weight") + [("conv1.weight.npy", data, crc, usize, 8)]
    _refused(_model(), _raw_zip(tmp_path / "big.npz", members), "'conv1.weight'", "refused before decompressing")


def test_decompression_stops_at_the_declared_size(tmp_path):
    # the directory declares conv1.weight's 700 bytes, the deflate stream goes on for 64 MiB of zeros: only
    # the declared bytes are ever inflated (zipfile stops there; they carry the right CRC, so they load)
    import tracemalloc
    w = _weights(0)
    good = _npy(w["conv1.weight"])
    data, _, _ = _zeros_bomb(good, 64)
    members = _members_but("conv1.weight", w) + [("conv1.weight.npy", data, zlib.crc32(good), len(good), 8)]
    path = _raw_zip(tmp_path / "lie.npz", members)
    m = _model()
    tracemalloc.start()
    try:
        load_checkpoint(m, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    np.testing.assert_array_equal(m.state_dict()["conv1.weight"], w["conv1.weight"])


def test_duplicate_and_foreign_members_are_refused(tmp_path):
    w = _weights(0)
    members = [_stored(k + ".npy", _npy(v)) for k, v in w.items()]
    _refused(_model(), _raw_zip(tmp_path / "dup.npz", members + [members[0]]), "appears twice")
    _refused(_model(), _raw_zip(tmp_path / "txt.npz", members + [_stored("notes.txt", b"hi")]), "'notes.txt'")


def test_not_a_zip_and_missing_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    _refused(_model(), str(bad), "not a readable .npz")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(_model(), str(tmp_path / "missing.npz"))


def test_corrupt_data_crc_is_refused(tmp_path):
    w = _weights(0)
    raw = bytearray(open(_write_npz(tmp_path / "ok.npz", w), "rb").read())
    good = _npy(w["fc1.weight"])
    at = bytes(raw).index(good) + len(good) - 7  # a byte inside fc1.weight's data
    raw[at] ^= 0x40
    (tmp_path / "crc.npz").write_bytes(bytes(raw))
    _refused(_model(), str(tmp_path / "crc.npz"), "'fc1.weight'")


def test_old_weights_only_checkpoints_still_load(tmp_path):
    src = cn.models.lenet5(seed=7)
    path = tmp_path / "old.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in src.state_dict().items()})  # the format before resume
    m = load_checkpoint(_model(), str(path))
    for k, v in src.state_dict().items():
        assert m.state_dict()[k].tobytes() == v.tobytes()


def _bn_net():
    return cn.nn.Sequential(cn.nn.Conv2d(1, 4, 3), cn.nn.BatchNorm2d(4))


def test_batchnorm_counter_round_trips_and_is_checked(tmp_path):
    src = _bn_net()
    key = "1.num_batches_tracked"
    src.state_dict()[key][...] = 42
    path = save_checkpoint(src, str(tmp_path / "bn.npz"))
    dst = _bn_net()
    load_checkpoint(dst, path)
    assert dst.state_dict()[key].shape == () and int(dst.state_dict()[key]) == 42
    w = {k: np.array(v) for k, v in src.state_dict().items()}
    w[key] = np.array(-1, np.int64)
    snap = _snapshot(dst)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        load_checkpoint(dst, _write_npz(tmp_path / "neg.npz", w))
    _assert_unchanged(dst, snap)
    w[key] = np.array(3.0)
    with pytest.raises(ValueError, match="integer"):
        load_checkpoint(dst, _write_npz(tmp_path / "float.npz", w))
    _assert_unchanged(dst, snap)


_BOMB_CHILD = textwrap.dedent("""
    import resource, sys
    import cnnnative as cn
    m = cn.models.lenet5(seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        cn.load_checkpoint(m, sys.argv[1])
        outcome = "loaded"
    except ValueError as e:
        outcome = "refused"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(outcome, (after - before) // 1024)
""")


def test_zip_bomb_is_refused_in_bounded_memory(tmp_path):
    """A ~1 MB checkpoint whose conv1.weight inflates to 1 GiB (zip directory and .npy header both honest
    about it): refused before decompressing, the peak RSS grows by a few MiB (main grew by 1 GiB)."""
    data, crc, usize = _zeros_bomb(_npy_header((1 << 28,)), 1024)
    members = _members_but("conv1.weight") + [("conv1.weight.npy", data, crc, usize, 8)]
    path = _raw_zip(tmp_path / "bomb.npz", members)
    assert os.path.getsize(path) < 2 << 20
    r = subprocess.run([sys.executable, "-c", _BOMB_CHILD, path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    outcome, grew_mib = r.stdout.split()
    assert outcome == "refused"
    assert int(grew_mib) < 64, f"peak RSS grew by {grew_mib} MiB"
