"""The CLI after training: evaluate CHECKPOINT, predict CHECKPOINT FILES..., export CHECKPOINT OUT.cnn|.onnx,
each checked against the model the checkpoint holds (loaded from Python)."""
import os
import re

import numpy as np
import pytest

import cnnnative as cn
from cnnnative._tasks import read_png, write_png
from cli_util import keep_threads, run_cli  # noqa: F401 (keep_threads: an autouse fixture)

pytest.importorskip("sklearn")


_run = run_cli


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """A lenet5 trained for 2 epochs on the bundled digits: (checkpoint, training output, model)."""
    d = tmp_path_factory.mktemp("lenet")
    n = cn.get_num_threads()
    rc, out, err = _run(["train", "lenet5", "--epochs", "2", "--no-progress", "--threads", "1", "--out",
                         str(d / "ck.npz")])
    cn.set_num_threads(n)
    assert rc == 0, err
    model = cn.load_checkpoint(cn.models.lenet5(), str(d / "ck.npz"))
    return d / "ck.npz", out, model


def _probs(model, x):
    y = cn.train.predict(model, x).astype(np.float64)
    z = np.exp(y - y.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


# ---- evaluate ----

def test_evaluate_reproduces_the_training_metric(lenet):
    ck, train_out, model = lenet
    rc, out, err = _run(["evaluate", str(ck), "--threads", "1"])
    assert rc == 0, err
    lines = out.splitlines()
    acc_line = [line for line in lines if line.startswith("test accuracy: ")][0]
    assert acc_line.startswith(train_out.strip().splitlines()[-1])  # the training's final line, same digits
    x_tr, y_tr, x_te, y_te = cn.data.load_digits(size=28, seed=0)
    logits = cn.train.predict(model, x_te).astype(np.float64)
    pred = logits.argmax(1)
    assert acc_line == f"test accuracy: {np.mean(pred == y_te):.4f} ({int(np.sum(pred == y_te))}/{len(y_te)})"
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert f"test loss (cross-entropy): {-logp[np.arange(len(y_te)), y_te].mean():.4f}" in lines
    for c in range(10):
        right, total = int(np.sum((pred == c) & (y_te == c))), int(np.sum(y_te == c))
        assert f"  class {c}: {right / total:.4f} ({right}/{total})" in lines
    assert any(line.startswith("most confused: ") for line in lines)
    rc, out7, _ = _run(["evaluate", str(ck), "--batch-size", "7"])
    assert rc == 0 and acc_line in out7.splitlines()


def test_evaluate_on_other_idx_data_uses_the_models_normalization(lenet, tmp_path):
    ck, _, model = lenet
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 40).astype(np.uint8)
    x = (rng.random((40, 28, 28)) * 255).astype(np.uint8)
    cn.data.write_idx(str(tmp_path / "t10k-images-idx3-ubyte"), x)
    cn.data.write_idx(str(tmp_path / "t10k-labels-idx1-ubyte"), y)
    rc, out, err = _run(["evaluate", str(ck), "--data", str(tmp_path)])
    assert rc == 0, err
    assert f"MNIST-format IDX files in {tmp_path} (t10k split): 40 test images" in out
    *_, (mean, std) = cn.data.load_digits(size=28, seed=0, return_stats=True)
    xs = (x[:, None].astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    acc = np.mean(cn.train.predict(model, xs).argmax(1) == y)
    assert f"test accuracy: {acc:.4f}" in out


def test_evaluate_dense_models(tmp_path):
    rc, out, err = _run(["train", "unet", "--samples", "24", "--batch-size", "8", "--epochs", "1", "--no-progress",
                         "--threads", "1", "--out", str(tmp_path / "u.npz")])
    assert rc == 0, err
    rc, ev, err = _run(["evaluate", str(tmp_path / "u.npz")])
    assert rc == 0, err
    assert out.strip().splitlines()[-1] in ev.splitlines() and "test loss (BCE with logits): " in ev
    rc, _, err = _run(["evaluate", str(tmp_path / "u.npz"), "--data", str(tmp_path)])
    assert rc == 2 and "--data applies to lenet5 checkpoints" in err


def test_commands_refuse_checkpoints_not_written_by_the_cli(tmp_path):
    w = cn.save_checkpoint(cn.models.lenet5(), str(tmp_path / "w.npz"))
    m = cn.models.lenet5()
    x, y = np.zeros((8, 1, 28, 28), np.float32), np.arange(8) % 10
    api = str(tmp_path / "api.npz")
    cn.train.fit(m, (x, y, x, y), 1, 8, cn.optim.SGD(lr=0.1), progress=False, log=lambda s: None, checkpoint=api)
    for ck, msg in ((w, "holds model weights only"), (api, "was not written by 'python -m cnnnative train'")):
        for cmd in (["evaluate", ck], ["predict", ck, ck], ["export", ck, str(tmp_path / "m.cnn")]):
            rc, _, err = _run(cmd)
            assert rc == 1 and msg in err, (cmd, err)
    assert sorted(os.listdir(tmp_path)) == ["api.npz", "w.npz"]


# ---- predict ----

def _digit(k):
    from sklearn.datasets import load_digits
    b = load_digits()
    return b.images[k].astype(np.uint8), int(b.target[k])


def _pgm(path, img, maxval, binary=True):
    h, w = img.shape
    if binary:
        path.write_bytes(f"P5\n# a digit\n{w} {h}\n{maxval}\n".encode() + img.astype(np.uint8).tobytes())
    else:
        path.write_text(f"P2\n{w} {h}\n# comment\n{maxval}\n" + "\n".join(" ".join(map(str, r)) for r in img) + "\n")
    return str(path)


def _line(out, name):
    return [line for line in out.splitlines() if line.startswith(name + ": ")][0]


def _parse(line):
    return [(int(c), float(p)) for c, p in re.findall(r"(\d+) \(([\d.]+)\)", line.split(": ", 1)[1])]


def test_predict_digit_files_as_the_model_saw_its_training_data(lenet, tmp_path):
    """An 8x8 digit (values 0..16, as scikit-learn ships it) in a PGM is upscaled and normalized exactly as
    the training data was: the printed probabilities are the model's on that training row."""
    ck, _, model = lenet
    img, label = _digit(11)
    files = [_pgm(tmp_path / "a.pgm", img, 16), _pgm(tmp_path / "b.pgm", img, 16, binary=False)]
    rc, out, err = _run(["predict", str(ck), *files, "--top", "3"])
    assert rc == 0, err
    x_tr, y_tr, x_te, y_te = cn.data.load_digits(size=28, seed=0)
    xs, ys = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])
    # the row of the training data that is this digit (upscaled, normalized; found by value)
    *_, (mean, std) = cn.data.load_digits(size=28, seed=0, return_stats=True)
    from cnnnative.data import _upscale
    mine = (_upscale(img[None] / 16.0, 28).astype(np.float32) - np.float32(mean)) / np.float32(std)
    row = int(np.argmin(np.abs(xs[:, 0] - mine).max((1, 2))))
    assert np.abs(xs[row, 0] - mine).max() < 1e-6 and ys[row] == label
    p = _probs(model, xs[row:row + 1])[0]
    want = [(int(c), round(float(p[c]), 4)) for c in np.argsort(-p, kind="stable")[:3]]
    for f in files:
        assert _parse(_line(out, f)) == want


def test_predict_reads_png_pgm_and_npy_alike(lenet, tmp_path):
    ck, _, model = lenet
    img8, _ = _digit(20)
    from cnnnative.data import _upscale
    img = np.clip(np.rint(_upscale(img8[None] / 16.0, 28)[0] * 255), 0, 255).astype(np.uint8)  # 28x28 pixels
    write_png(tmp_path / "g.png", img / 255)
    _pgm(tmp_path / "g.pgm", img, 255)
    np.save(tmp_path / "g.npy", img)  # uint8: pixels
    rgb = np.repeat(img[:, :, None], 3, 2)
    PIL = pytest.importorskip("PIL.Image")
    PIL.fromarray(rgb).save(tmp_path / "rgb.png")  # gray saved as RGB: R = G = B
    *_, (mean, std) = cn.data.load_digits(size=28, seed=0, return_stats=True)
    x = (img[None, None].astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    np.save(tmp_path / "x.npy", np.concatenate([x, x]))  # float: model input, two samples
    files = [str(tmp_path / n) for n in ("g.png", "g.pgm", "g.npy", "rgb.png", "x.npy")]
    rc, out, err = _run(["predict", str(ck), *files])
    assert rc == 0, err
    p = _probs(model, x)[0]
    want = f"{int(p.argmax())} ({p.max():.4f})"
    for f in files[:4] + [files[4] + "[0]", files[4] + "[1]"]:
        assert _line(out, f) == f"{f}: {want}"


def test_png_reader_matches_pillow(tmp_path):
    """Every colour type and bit depth (and Pillow's per-row filter choice) decodes as Pillow decodes it."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    smooth = (np.add.outer(np.arange(37), np.arange(29)) * 3 % 256).astype(np.uint8)  # filters other than None
    cases = {
        "L": Image.fromarray(smooth), "LA": Image.fromarray(np.dstack([smooth, 255 - smooth]), "LA"),
        "RGB": Image.fromarray(np.dstack([smooth, smooth // 2, 255 - smooth])),
        "RGBA": Image.fromarray(rng.integers(0, 256, (13, 11, 4), dtype=np.uint8)),
        "I;16": Image.fromarray(rng.integers(0, 65536, (9, 7), dtype=np.uint16)),
        "1": Image.fromarray(rng.random((10, 13)) > 0.5),
        "P": Image.fromarray(np.dstack([smooth, smooth, 255 - smooth])).convert("P"),
    }
    for mode, im in cases.items():
        path = tmp_path / f"{mode.replace(';', '')}.png"
        im.save(path)
        got = read_png(str(path))
        ref = np.asarray(Image.open(path).convert("RGBA" if mode in ("RGBA", "P") else
                                                  "LA" if mode == "LA" else "RGB" if mode == "RGB" else
                                                  "I" if mode == "I;16" else "L")).astype(np.float64)
        scale = 65535 if mode == "I;16" else 255
        ref = ref.reshape(ref.shape[0], ref.shape[1], -1) / scale
        if mode == "P":
            ref = ref[:, :, :3]
        np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=mode)


def test_interlaced_png_is_read_through_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    import struct
    import zlib
    img = (np.add.outer(np.arange(13), 2 * np.arange(10)) * 7 % 256).astype(np.uint8)
    raw = b""
    for xs, ys, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):  # Adam7's seven passes, each row with filter type 0
        sub = img[ys::dy, xs::dx]
        if sub.size:
            raw += b"".join(b"\x00" + r.tobytes() for r in sub)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    (tmp_path / "i.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 13, 8, 0, 0, 0, 1))
                                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    np.testing.assert_allclose(read_png(str(tmp_path / "i.png"))[:, :, 0], img / 255, atol=1e-6)


@pytest.mark.parametrize("make, msg", [
    (lambda p: write_png(p / "big.png", np.zeros((32, 32))), "big.png: image is 32x32 with 1 channel; model lenet5 "
                                                              "takes 1x28x28: grayscale 28x28 (or 8x8"),
    (lambda p: np.save(p / "c.npy", np.dstack([np.zeros((28, 28), np.uint8), np.full((28, 28), 9, np.uint8),
                                               np.zeros((28, 28), np.uint8)])),
     "c.npy: a colour image (28x28, 3 channels); model lenet5 takes 1x28x28"),
    (lambda p: np.save(p / "f.npy", np.zeros((3, 28, 28), np.float32)),
     "f.npy: array of shape (3, 28, 28); model lenet5 takes 1x28x28"),
    (lambda p: (p / "t.pgm").write_bytes(b"P5\n28 28\n255\n" + bytes(100)), "t.pgm: truncated pixel data"),
    (lambda p: (p / "x.jpg").write_bytes(b"\xff\xd8"), "x.jpg: unknown file type '.jpg'"),
    (lambda p: (p / "d.png").write_bytes(open(write_png(p / "ok.png", np.zeros((28, 28))), "rb").read()[:-20]
                                         + bytes(20)), "d.png: PNG chunk b'IDAT' fails its CRC check"),
])
def test_predict_names_the_file_and_the_expected_shape(lenet, tmp_path, make, msg):
    ck, _, _ = lenet
    good = tmp_path / "good.pgm"
    _pgm(good, _digit(0)[0], 16)
    make(tmp_path)
    bad = sorted(set(os.listdir(tmp_path)) - {"good.pgm", "ok.png"})[0]
    rc, out, err = _run(["predict", str(ck), str(good), str(tmp_path / bad)])
    assert rc == 1 and msg in err and "Traceback" not in err, err
    assert out == ""  # nothing predicted: every file is checked first


def test_predict_option_errors(lenet, tmp_path):
    ck, _, _ = lenet
    f = _pgm(tmp_path / "a.pgm", _digit(0)[0], 16)
    for args, msg in ((["--top", "11"], "--top 11: the model has 10 classes"), (["--top", "0"], "--top must be"),
                      (["--out-dir", str(tmp_path)], "--out-dir is where segmentation masks")):
        rc, _, err = _run(["predict", str(ck), f, *args])
        assert rc == 2 and msg in err, err


def test_predict_writes_masks_and_denoised_images(tmp_path):
    for model, extra in (("unet", ["--samples", "24", "--batch-size", "8"]), ("conv_autoencoder", [])):
        rc, _, err = _run(["train", model, "--epochs", "1", "--no-progress", "--threads", "1", *extra, "--out",
                           str(tmp_path / f"{model}.npz")])
        assert rc == 0, err
    shapes, _ = cn.data.synthetic_shapes(n=2, size=64, seed=9)
    np.save(tmp_path / "s.npy", shapes)  # two float samples: model input as is
    write_png(tmp_path / "s1.png", np.clip(shapes[1, 0], 0, 1))
    out_dir = tmp_path / "out"
    rc, out, err = _run(["predict", str(tmp_path / "unet.npz"), str(tmp_path / "s.npy"), str(tmp_path / "s1.png"),
                         "--out-dir", str(out_dir)])
    assert rc == 0, err
    unet = cn.models.unet(in_channels=1, num_classes=1, depth=3, base=16)
    cn.load_checkpoint(unet, str(tmp_path / "unet.npz"))
    prob = 1 / (1 + np.exp(-cn.train.predict(unet, shapes)[:, 0].astype(np.float64)))
    for i in range(2):
        np.testing.assert_allclose(np.load(out_dir / f"s.{i}.mask.npy"), prob[i], atol=1e-5)
        assert np.array_equal(read_png(str(out_dir / f"s.{i}.mask.png"))[:, :, 0], (prob[i] > 0.5).astype(np.float32))
        assert f"s.npy[{i}]: mask ({np.mean(prob[i] > 0.5):.1%} foreground) -> {out_dir / f's.{i}.mask.png'}" in out
    assert (out_dir / "s1.mask.png").exists() and (out_dir / "s1.mask.npy").exists()
    rc, _, err = _run(["predict", str(tmp_path / "unet.npz"), str(tmp_path / "s1.png"), "--top", "2"])
    assert rc == 2 and "--top applies to classifiers" in err
    # two inputs with one output name: refused before anything is written
    np.save(tmp_path / "s1.npy", shapes[0])
    rc, _, err = _run(["predict", str(tmp_path / "unet.npz"), str(tmp_path / "s1.png"), str(tmp_path / "s1.npy")])
    assert rc == 1 and "would both write" in err and not (tmp_path / "s1.mask.png").exists()

    img8, _ = _digit(3)
    _pgm(tmp_path / "d.pgm", img8, 16)  # next to the input (no --out-dir)
    rc, out, err = _run(["predict", str(tmp_path / "conv_autoencoder.npz"), str(tmp_path / "d.pgm")])
    assert rc == 0, err
    ae = cn.load_checkpoint(cn.models.conv_autoencoder(in_channels=1, base=16), str(tmp_path / "conv_autoencoder.npz"))
    from cnnnative.data import _upscale
    x = _upscale(img8[None] / 16.0, 28).astype(np.float32)[None]
    want = np.clip(cn.train.predict(ae, x)[0, 0], 0, 1)
    np.testing.assert_allclose(np.load(tmp_path / "d.denoised.npy"), want, atol=1e-6)
    np.testing.assert_allclose(read_png(str(tmp_path / "d.denoised.png"))[:, :, 0], want, atol=0.5 / 255 + 1e-6)
    assert f"d.pgm: denoised -> {tmp_path / 'd.denoised.png'}, {tmp_path / 'd.denoised.npy'}" in out


# ---- export ----

def test_export_cnn_runs_like_the_checkpoint(lenet, tmp_path):
    ck, _, model = lenet
    x = cn.data.load_digits(size=28, seed=0)[2][:5]
    rc, out, err = _run(["export", str(ck), str(tmp_path / "m.cnn")])
    assert rc == 0, err
    assert f"wrote {tmp_path / 'm.cnn'}: input [1, 1, 28, 28]" in out and "pixels scaled to [0, 1], then (x - " in out
    loaded = cn.load(str(tmp_path / "m.cnn"))
    assert loaded.input_shape == (1, 1, 28, 28)
    np.testing.assert_allclose(cn.train.predict(loaded, x), cn.train.predict(model, x), rtol=1e-5, atol=1e-5)
    rc, _, err = _run(["export", str(ck), str(tmp_path / "m4.cnn"), "--batch-size", "4"])
    assert rc == 0, err
    assert cn.load(str(tmp_path / "m4.cnn")).input_shape == (4, 1, 28, 28)


def test_export_onnx_runs_in_onnxruntime(lenet, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ck, _, model = lenet
    x = cn.data.load_digits(size=28, seed=0)[2][:3]
    want = cn.train.predict(model, x)
    for args, batch in (([], 1), (["--batch-size", "3"], 3), (["--dynamic-batch"], "N")):
        path = tmp_path / f"m{batch}.onnx"
        rc, out, err = _run(["export", str(ck), str(path), *args])
        assert rc == 0, err
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        dim = s.get_inputs()[0].shape[0]
        assert dim == batch, (args, dim)
        got = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(3)]) \
            if batch == 1 else s.run(None, {s.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_option_errors(lenet, tmp_path):
    ck, _, _ = lenet
    for args, msg in (([str(tmp_path / "m.pt")], "must end in .cnn or .onnx"),
                      ([str(tmp_path / "m.cnn"), "--dynamic-batch"], "--dynamic-batch applies to .onnx files"),
                      ([str(tmp_path / "m.cnn"), "--batch-size", "0"], "--batch-size must be positive")):
        rc, _, err = _run(["export", str(ck), *args])
        assert rc == 2 and msg in err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("ctype,depth", [(2, 4), (6, 1), (4, 2), (3, 16), (0, 3), (5, 8)])
def test_png_colour_type_and_bit_depth_the_spec_forbids_are_one_error(tmp_path, ctype, depth):
    import struct
    import zlib

    from cnnnative._tasks import ImageError

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, depth, ctype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 80)) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=f"colour type {ctype}, bit depth {depth}"):
        read_png(str(path))
