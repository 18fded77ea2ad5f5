"""The seed demos (issue 15): python -m cnnnative demo filters|conv|pool. The engine's convolution and pooling
in the demos against numpy references written here (independently of the demos' own), the output-size formula,
and the pictures: written, of the expected pixel size, not blank; bad input is one clear error."""
import contextlib
import io
import os
import struct
import sys

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from cnnnative import demos
from cnnnative.__main__ import main
from cnnnative.demos import conv, filters, pool


def _loop_correlate(x, k, stride, padding, dilation):
    """Cross-correlation by explicit loops: the kernel's top-left tap at every (i*stride, j*stride) of the
    padded image where the dilated kernel fits."""
    x = np.pad(x.astype(np.float64), padding)
    kh, kw = k.shape
    rows = []
    i = 0
    while i + dilation * (kh - 1) < x.shape[0]:
        row, j = [], 0
        while j + dilation * (kw - 1) < x.shape[1]:
            patch = x[i:i + dilation * (kh - 1) + 1:dilation, j:j + dilation * (kw - 1) + 1:dilation]
            row.append(float((patch * k).sum()))
            j += stride
        rows.append(row)
        i += stride
    return np.array(rows)


def _same_correlate(x, k):
    """'same'-size cross-correlation (zero padding k//2) through a sliding-window view."""
    r = k.shape[0] // 2
    win = sliding_window_view(np.pad(x.astype(np.float64), r), k.shape)
    return np.einsum("ijkl,kl->ij", win, k.astype(np.float64))


def _pool_reference(x, kind, k, s, p):
    x = np.pad(x.astype(np.float64), p, constant_values=-np.inf if kind == "max" else 0.0)
    win = sliding_window_view(x, (k, k))[::s, ::s]
    return win.max(axis=(2, 3)) if kind == "max" else win.sum(axis=(2, 3)) / (k * k)


def test_conv_output_size_formula():
    # floor((H + 2p - d(k-1) - 1)/s) + 1 for the 16 x 16 digit and 3 x 3 kernel of the demo, worked by hand
    assert [conv.output_size(16, 3, s, p, d) for s, p, d in conv.CASES] == [14, 16, 18, 7, 8, 12, 16, 8]
    assert conv.output_size(28, 5) == 24 and conv.output_size(28, 5, padding=2) == 28
    assert conv.output_size(7, 3, stride=2) == 3 and conv.output_size(8, 3, stride=2) == 3


@pytest.mark.parametrize("k", [3, 5])
def test_conv_engine_sizes_and_values_equal_numpy(k):
    rng = np.random.default_rng(k)
    img = rng.random((13, 18), dtype=np.float32)  # not square: height and width checked apart
    kernel = rng.standard_normal((k, k)).astype(np.float32)
    for s, p, d in conv.CASES + [(3, 1, 1), (2, 0, 3)]:
        y = conv.engine_conv(img, kernel, s, p, d)
        ref = _loop_correlate(img, kernel, s, p, d)
        assert y.shape == ref.shape == (conv.output_size(13, k, s, p, d), conv.output_size(18, k, s, p, d))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, err_msg=f"stride {s} padding {p} dilation {d}")
        np.testing.assert_allclose(conv.correlate2d(img, kernel, s, p, d), ref, rtol=1e-12, atol=1e-12)


def test_filters_engine_equals_numpy_on_the_photo():
    pytest.importorskip("PIL")  # scikit-learn reads its sample JPEGs with Pillow
    img, name = demos._util.load_image("china.jpg", max_side=320)
    assert name == "china" and img.shape == (213, 320) and 0 <= img.min() < img.max() <= 1
    out = filters.apply_filters(img)
    ks = filters.kernels()
    assert list(out) == [f[0] for f in filters.FILTERS] and ks["Gaussian blur 5x5"].shape == (5, 5)
    for name, k in ks.items():
        assert out[name].shape == img.shape, name
        np.testing.assert_allclose(out[name], _same_correlate(img, k), rtol=1e-5, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(out["identity"], img, atol=1e-6)
    # Sobel x is positive where the brightness rises to the right, Sobel y where it rises downwards
    ramp = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (12, 1))
    sx = filters.apply_filters(ramp)["Sobel x"][2:-2, 2:-2]
    np.testing.assert_allclose(sx, 8 / 19, rtol=1e-5)
    np.testing.assert_allclose(filters.apply_filters(ramp.T.copy())["Sobel y"][2:-2, 2:-2], 8 / 19, rtol=1e-5)


def test_pool_engine_equals_numpy():
    x = np.array([[1, 3, 2, 0], [4, 6, 1, 1], [0, 2, 9, 5], [1, 1, 3, 7]], np.float32)
    np.testing.assert_array_equal(pool.engine_pool(x, "max", 2, 2), [[6, 2], [2, 9]])
    np.testing.assert_array_equal(pool.engine_pool(x, "avg", 2, 2), [[3.5, 1], [1, 6]])
    rng = np.random.default_rng(0)
    fmap = np.maximum(rng.standard_normal((11, 14)), 0).astype(np.float32)  # a ReLU output, odd sizes
    for _, k, s, p in pool.CONFIGS:
        for kind in ("max", "avg"):
            y = pool.engine_pool(fmap, kind, k, s, p)
            if k is None:
                ref = np.array([[fmap.max() if kind == "max" else fmap.mean(dtype=np.float64)]])
            else:
                ref = _pool_reference(fmap, kind, k, s, p)
            assert y.shape == ref.shape, (kind, k)
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6, err_msg=f"{kind} {k} {s} {p}")
            np.testing.assert_allclose(pool.pool2d(fmap, kind, k, s, p), ref, rtol=1e-12, atol=1e-12)
    # the feature map the demo pools: ReLU(Sobel x) without padding, by the engine
    img = rng.random((9, 12), dtype=np.float32)
    np.testing.assert_allclose(pool.feature_map(img), np.maximum(_loop_correlate(img, pool.SOBEL_X, 1, 0, 1), 0),
                               rtol=1e-5, atol=1e-5)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])  # IHDR: width, height


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """All three demos run once through the command line: (out folder, {name: stdout})."""
    pytest.importorskip("matplotlib")
    d = tmp_path_factory.mktemp("demo_out")
    printed = {}
    for name in demos.DEMOS:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["demo", name, "--out", str(d)]) == 0
        printed[name] = buf.getvalue()
    return d, printed


@pytest.mark.parametrize("name,files,size", [
    ("filters", ["filters_china.png", "filters_flower.png"], (1700, 590)),
    ("conv", ["conv.png"], (1000, 1150)),
    ("pool", ["pool.png"], (1800, 500)),
])
def test_demo_pictures(demo_dir, name, files, size):
    import matplotlib.image
    d, printed = demo_dir
    for f in files:
        path = os.path.join(d, f)
        assert f"wrote {path}" in printed[name]
        assert _png_size(path) == size
        rgb = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(np.uint32)
        assert rgb.shape[:2] == size[::-1]
        # not blank: many colours, much of the picture away from the white background
        colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
        assert len(colours) > 200 and rgb.std() > 25, f
        assert (rgb.mean(axis=2) < 230).mean() > 0.3, f
    assert not [f for f in os.listdir(d) if ".tmp." in f]


def test_demo_printouts(demo_dir):
    _, printed = demo_dir
    assert "filters demo: china (213 x 320), 9 kernels in one Conv2d" in printed["filters"]
    assert "stride 2 padding 1 dilation 1: 8 x 8" in printed["conv"]
    assert "max 6 2   avg 3.5 1" in printed["pool"]


def test_demo_on_a_given_image(tmp_path):
    pytest.importorskip("matplotlib")
    yy, xx = np.mgrid[0:40, 0:60]
    np.save(tmp_path / "rings.npy", (np.sin(np.hypot(yy - 20, xx - 30) / 2) * 100).astype(np.float32))
    files = demos.run("conv", tmp_path / "out", image=str(tmp_path / "rings.npy"))
    assert files == [str(tmp_path / "out" / "conv.png")] and _png_size(files[0]) == (1000, 1150)


def test_demo_bad_input_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "pool", "--image", str(tmp_path / "nope.png"), "--out", str(out)]) == 1
    assert f"error: image '{tmp_path / 'nope.png'}': no such file" in capsys.readouterr().err
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 6, 7), np.float32))
    assert main(["demo", "filters", "--image", str(tmp_path / "cube.npy"), "--out", str(out)]) == 1
    assert "expected a greyscale H x W or an RGB H x W x 3 picture, got an array of shape (4, 5, 6, 7)" \
        in capsys.readouterr().err
    np.save(tmp_path / "tiny.npy", np.ones((3, 4), np.float32))
    assert main(["demo", "conv", "--image", str(tmp_path / "tiny.npy"), "--out", str(out)]) == 1
    assert "3 x 4 pixels after downscaling to at most 32 per side; this demo needs at least 5 x 5" \
        in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["demo", "conv", "--out", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not out.exists()  # nothing written by a failed demo
    with pytest.raises(SystemExit) as e:
        main(["demo", "blur"])
    assert e.value.code == 2 and "invalid choice: 'blur'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown demo 'blur'; available: filters, conv, pool"):
        demos.run("blur", tmp_path)


def test_demo_without_matplotlib_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert main(["demo", "pool", "--out", str(tmp_path / "out")]) == 1
    assert "matplotlib, which is not installed: pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
