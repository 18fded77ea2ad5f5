"""Hostile inputs to the command line and to the C++ example: small files whose headers declare huge images or
arrays (refused from the header, before any of the data is decompressed or allocated), and destinations that
cannot be written (one `error:` line, no traceback, nothing left behind). Each case runs the real program in a
subprocess, as a user would."""
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import cnnnative as cn
from cnnnative._tasks import ImageError, read_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_INPUT = "model lenet5 takes 1x28x28: grayscale 28x28"

# runs argv[1:] and reports the largest resident set of its children on stderr's last line (KiB on Linux): the
# peak memory of that one process, whatever other processes the test session ran before
_PEAK_RSS = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:])\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(r.returncode)\n")


def _cli(args, cwd, peak_rss=False, file_size_limit=None):
    """(exit status, stdout, stderr[, peak RSS in MiB]) of `python -m cnnnative ARGS`."""
    cmd = [sys.executable, "-m", "cnnnative", *args]
    if peak_rss:
        cmd = [sys.executable, "-c", _PEAK_RSS, *cmd]

    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120,
                       preexec_fn=limit if file_size_limit else None)
    if not peak_rss:
        return r.returncode, r.stdout, r.stderr
    err, _, rss = r.stderr.rstrip("\n").rpartition("\n")
    return r.returncode, r.stdout, err + "\n", int(rss) / (2**20 if sys.platform == "darwin" else 2**10)


def _one_error_line(err, text):
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A lenet5 checkpoint of `python -m cnnnative train` (one epoch on the bundled digits, about a second)."""
    pytest.importorskip("sklearn")
    d = tmp_path_factory.mktemp("ck")
    rc, _, err = _cli(["train", "lenet5", "--epochs", "1", "--no-progress", "--threads", "2", "--out", "ck.npz"], d)
    assert rc == 0, err
    return d / "ck.npz"


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(path, width, height, idat, declared_idat_length=None):
    """A grayscale 8-bit PNG declaring width x height, with `idat` as its (compressed) data."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = _chunk(b"IDAT", idat)
    if declared_idat_length is not None:
        data = struct.pack(">I", declared_idat_length) + data[4:]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + data + _chunk(b"IEND", b""))
    return path


# ---- predict: PNG ----

def test_png_declaring_a_huge_image_is_refused_before_it_is_decompressed(checkpoint, tmp_path):
    """A 62 KB PNG of 8000x8000 zero pixels (64 MB once decompressed; the reader's float copies made it 1.4 GB)
    is refused from its header: the process stays at the memory of a plain predict."""
    c = zlib.compressobj(9)
    row = bytes(8001)  # filter byte 0, then 8000 zero pixels
    idat = b"".join(c.compress(row) for _ in range(8000)) + c.flush()
    _png(tmp_path / "bomb.png", 8000, 8000, idat)
    assert os.path.getsize(tmp_path / "bomb.png") < 100_000
    rc, out, err, peak = _cli(["predict", str(checkpoint), "bomb.png"], tmp_path, peak_rss=True)
    assert rc == 1 and out == ""
    _one_error_line(err, f"bomb.png: image is 8000x8000 with 1 channel; {MODEL_INPUT}")
    assert peak < 300, f"predict used {peak:.0f} MiB to refuse an 8000x8000 PNG"


def test_png_data_inflating_past_its_declared_size_is_refused(checkpoint, tmp_path):
    """28x28 declared (what the model takes), 10 MB of data: decompression stops one byte past 28 x 29."""
    _png(tmp_path / "inflate.png", 28, 28, zlib.compress(bytes(10 << 20), 9))
    rc, out, err = _cli(["predict", str(checkpoint), "inflate.png"], tmp_path)
    assert rc == 1 and out == ""
    _one_error_line(err, "inflate.png: PNG data inflates past the 812 bytes its 28x28 header declares")


def test_png_readers_bounds_hold_without_a_model(tmp_path):
    """read_png alone: an image over MAX_IMAGE_VALUES is refused from its header (its data, not even valid zlib,
    is never decompressed), and chunk lengths past the end of the file are not allocated."""
    with pytest.raises(ImageError, match=r"declares 9000x9000 pixels with 1 channel, more than the"):
        read_png(str(_png(tmp_path / "big.png", 9000, 9000, b"not zlib")))
    with pytest.raises(ImageError, match=r"truncated PNG chunk b'IDAT'"):
        read_png(str(_png(tmp_path / "long.png", 28, 28, zlib.compress(bytes(812)), declared_idat_length=2**31 - 1)))
    seen = []

    def refuse(*declared):
        seen.append(declared)
        raise ImageError("refused")
    with pytest.raises(ImageError, match="refused"):  # the check comes first: its data is not valid zlib
        read_png(str(_png(tmp_path / "checked.png", 28, 28, b"not zlib")), check=refuse)
    assert seen == [(28, 28, 1)]


# ---- predict: NPY ----

def _npy(path, descr, shape, data_bytes=100):
    """A .npy file whose header declares `shape`, followed by only `data_bytes` bytes."""
    from numpy.lib import format as npf
    with open(path, "wb") as f:
        npf.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(bytes(data_bytes))
    return path


@pytest.mark.parametrize("descr, shape, text", [
    ("<f4", (1000000, 1000000), f"h.npy: array of shape (1000000, 1000000); {MODEL_INPUT}"),
    ("<f4", (10**9, 1, 28, 28), "h.npy: truncated .npy file: its header declares shape (1000000000, 1, 28, 28) of "
                                "float32 (3136000000000 bytes of data), the file holds 100"),
    ("|u1", (1000000, 1000000), f"h.npy: image is 1000000x1000000 with 1 channel; {MODEL_INPUT}"),
    ("<u2", (28, 28, 1000000), "h.npy: image is 28x28 with 1000000 channels; " + MODEL_INPUT),
    ("<f4", (3, 1, 28, 28), "h.npy: truncated .npy file: its header declares shape (3, 1, 28, 28) of float32 "
                            "(9408 bytes of data), the file holds 100"),
], ids=["float-2d-huge", "float-4d-huge-n", "uint8-huge", "uint16-huge-channels", "float-truncated"])
def test_npy_header_declaring_a_huge_or_missing_array_is_one_error(checkpoint, tmp_path, descr, shape, text):
    """The header's shape and dtype are checked against the model, and against the file's size, before the
    data is read: no MemoryError traceback, nothing allocated for the declared shape."""
    _npy(tmp_path / "h.npy", descr, shape)
    rc, out, err = _cli(["predict", str(checkpoint), "h.npy"], tmp_path)
    assert rc == 1 and out == ""
    _one_error_line(err, text)


# ---- convert: destinations that cannot be written ----

@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("cnn") / "m.cnn"
    cn.save(cn.models.lenet5(), str(path), (1, 1, 28, 28))
    return path


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if ".tmp." in n)


def test_convert_to_a_folder_or_below_a_file_is_one_error(cnn_file, tmp_path):
    shutil.copy(cnn_file, tmp_path / "m.cnn")
    (tmp_path / "d.onnx").mkdir()
    rc, out, err = _cli(["convert", "m.cnn", "d.onnx"], tmp_path)  # IsADirectoryError from the final rename
    assert rc == 1 and out == ""
    _one_error_line(err, "error: cannot write d.onnx: Is a directory")
    assert os.listdir(tmp_path / "d.onnx") == [] and _leftovers(tmp_path) == []
    rc, out, err = _cli(["convert", "m.cnn", "m.cnn/x.onnx"], tmp_path)  # a file where a folder must be
    assert rc == 1 and out == ""
    _one_error_line(err, f"error: cannot write m.cnn/x.onnx: {tmp_path / 'm.cnn'} is not a folder")
    assert sorted(os.listdir(tmp_path)) == ["d.onnx", "m.cnn"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="sets RLIMIT_FSIZE in the child")
def test_convert_past_the_file_size_limit_leaves_nothing_behind(cnn_file, tmp_path):
    """EFBIG (what a full disk gives, in a form a test can cause): one error line; the previous file intact; no
    temporary file; folders the conversion created removed again."""
    shutil.copy(cnn_file, tmp_path / "m.cnn")
    (tmp_path / "big.onnx").write_bytes(b"the previous file")
    for dst in ("big.onnx", os.path.join("new", "sub", "big.onnx")):
        rc, out, err = _cli(["convert", "m.cnn", dst], tmp_path, file_size_limit=20_000)
        assert rc == 1 and out == ""
        _one_error_line(err, f"error: cannot write {dst}: File too large")
    assert (tmp_path / "big.onnx").read_bytes() == b"the previous file"
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "m.cnn"]


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs /sys, where no file can be created")
def test_convert_to_an_unwritable_place_is_one_error(cnn_file, tmp_path):
    rc, out, err = _cli(["convert", str(cnn_file), "/sys/out.onnx"], tmp_path)
    assert rc == 1 and out == ""
    _one_error_line(err, "error: cannot write /sys/out.onnx: ")
    assert not os.path.exists("/sys/out.onnx")


# ---- the C++ example classify ----

@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and c++")
def test_classify_example_refuses_a_folder_as_image(tmp_path):
    """examples/cpp/classify, built out of tree against the installed package: an image argument that is a folder
    (or cannot be opened) is one `classify: image '...': ...` line and exit status 1, not an uncaught exception."""
    src = os.path.join(ROOT, "examples", "cpp")
    if not os.path.isfile(os.path.join(src, "classify.cpp")):
        pytest.skip("needs the source tree (examples/cpp)")
    cmake_dir = subprocess.run([sys.executable, "-m", "cnnnative", "--cmake-dir"], capture_output=True, text=True)
    if cmake_dir.returncode != 0:
        pytest.skip("the CMake package files are not installed with this build")
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", src, "-B", str(build), f"-Dcnnnative_DIR={cmake_dir.stdout.strip()}"],
                ["cmake", "--build", str(build), "--target", "classify"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cn.save(cn.models.lenet5(), str(tmp_path / "m.cnn"), (1, 1, 28, 28))
    (tmp_path / "dir").mkdir()
    exe = str(build / "classify")
    for image, text in (("dir", "classify: image 'dir': cannot read: "),
                        ("nope.pgm", "classify: image 'nope.pgm': cannot open: ")):
        r = subprocess.run([exe, "m.cnn", image], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stderr)
        assert r.stderr.startswith(text) and r.stderr.count("\n") == 1, r.stderr
    np.zeros((28, 28)).astype("<f4").tofile(tmp_path / "x.raw")
    r = subprocess.run([exe, "m.cnn", "x.raw"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("x.raw\t"), r.stderr
