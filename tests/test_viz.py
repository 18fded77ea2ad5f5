"""cnnnative.viz: every picture is a PNG of figsize * dpi pixels that is not blank, written atomically (nothing on
error); the arrays behind the feature maps and the confusion matrix are checked against direct numpy."""
import base64
import gc
import json
import os
import sys

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn, viz

pytest.importorskip("matplotlib")


def _png(path, figsize, dpi=100):
    """Decodes the PNG, checks its size and that it shows something: pixel spread and more than a few colours
    in the middle of the picture."""
    import matplotlib.image

    assert os.path.isfile(path) and path == os.path.abspath(path)
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (round(figsize[1] * dpi), round(figsize[0] * dpi)), img.shape
    rgb = img[..., :3]
    assert rgb.std() > 0.05
    h, w = rgb.shape[:2]
    mid = rgb[h // 5:h - h // 5, w // 5:w - w // 5].reshape(-1, 3)
    assert len(np.unique(np.round(mid * 255).astype(np.uint8), axis=0)) > 8
    return img


def _nothing_written(folder):
    assert os.listdir(folder) == []


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return cn.data.load_digits(size=28, test_fraction=0.2, seed=0)


def _tiny_rgb():
    cn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 5))


# ---- training history ----
def _history_dict():
    rng = np.random.default_rng(0)
    epochs = [{"epoch": e, "loss": 2.0 / e, "train_acc": 0.5 + 0.05 * e, "test_acc": 0.45 + 0.05 * e,
               "lr": 0.05 * (1 + np.cos(np.pi * (e - 1) / 4)) / 2, "images_per_s": 3000.0 + e, "seconds": 1.5}
              for e in range(1, 5)]
    steps = [{"step": i + 1, "epoch": i // 10 + 1, "loss": float(2 * np.exp(-i / 15) + 0.2 * rng.random())}
             for i in range(40)]
    for s in steps[:20]:
        s["loss_smooth"] = s["loss"]
    return {"model": "lenet5", "task": "classify", "metric": "test_acc", "epochs": epochs, "steps": steps,
            "an_unknown_key": [1, 2]}


def test_history_from_a_file_and_from_fit(tmp_path, digits):
    f = tmp_path / "lenet5.history.json"
    h = _history_dict()
    f.write_text(json.dumps(h))
    _png(viz.history(str(f), str(tmp_path / "h.png"), figsize=(8, 5), dpi=60), (8, 5), 60)
    for s in h["steps"]:  # some steps without loss_smooth: the smoothing is computed
        s.pop("loss_smooth", None)
    _png(viz.history(h, tmp_path / "h2.png", smooth_steps=False), (11, 7))
    seg = {"task": "segment", "metric": "IoU",
           "epochs": [{"epoch": e, "loss": 1 / e, "IoU": 0.5 + e / 10, "seconds": 2} for e in (1, 2, 3)]}
    _png(viz.history(seg, tmp_path / "seg.png"), (11, 7))
    # the list fit returns
    x_tr, y_tr, x_te, y_te = digits
    opt = cn.optim.SGD(lr=0.05, momentum=0.9)
    hist, _ = cn.train.fit(cn.models.lenet5(seed=0), (x_tr[:256], y_tr[:256], x_te[:64], y_te[:64]), 2, 32, opt,
                           progress=False, log=lambda s: None)
    _png(viz.history(hist, tmp_path / "fit.png", figsize=(9, 6)), (9, 6))


@pytest.mark.parametrize("content,msg", [
    ("{not json", "is not JSON"),
    ('{"state_dict": {}}', "not a training history"),
    ('{"epochs": [{"epoch": 1}]}', "lacks a number under 'epoch' or 'loss'"),
    ('{"epochs": [{"epoch": 1, "loss": 0.5, "lr": "fast"}]}', r"epochs\[0\]\['lr'\] is 'fast'"),
    ('{"epochs": [{"epoch": 1, "loss": 0.5}], "steps": [{"step": 1}]}', r"steps\[0\]"),
    ('{"epochs": [{"epoch": 1, "loss": 0.5}], "metric": "IoU"}', "metric 'IoU' appears in no epoch record"),
    ("[1, 2]", r"epochs\[0\] is a int"),
])
def test_history_rejects_other_files_and_writes_nothing(tmp_path, content, msg):
    f = tmp_path / "in" / "x.history.json"
    f.parent.mkdir()
    f.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=msg):
        viz.history(str(f), str(out / "h.png"))
    _nothing_written(out)


def test_a_failed_drawing_leaves_the_previous_picture(tmp_path):
    out = tmp_path / "h.png"
    viz.history(_history_dict(), out)
    before = out.read_bytes()
    with pytest.raises(ValueError):
        viz.history({"epochs": []}, out)
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["h.png"]
    with pytest.raises(ValueError, match="must name a .png file"):
        viz.history(_history_dict(), tmp_path / "h.jpg")


# ---- filters ----
def test_filters_of_the_first_conv_and_of_a_named_layer(tmp_path):
    m = cn.models.lenet5(seed=0)
    _png(viz.filters(m, tmp_path / "f.png", figsize=(5, 4)), (5, 4))
    _png(viz.filters(m, tmp_path / "f2.png", layer="conv2", max_filters=9, figsize=(5, 4), dpi=80), (5, 4), 80)
    _png(viz.filters(m, tmp_path / "f3.png", layer="conv2", channel=3, figsize=(5, 4)), (5, 4))
    _png(viz.filters(_tiny_rgb(), tmp_path / "rgb.png", figsize=(4, 4)), (4, 4))  # RGB tiles
    up = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2))
    _png(viz.filters(up, tmp_path / "t.png", figsize=(4, 4)), (4, 4))


def test_filters_errors_name_the_layers_and_write_nothing(tmp_path):
    m = cn.models.lenet5(seed=0)
    with pytest.raises(ValueError, match=r"no module 'conv3'; its convolution layers are: conv1, conv2"):
        viz.filters(m, tmp_path / "f.png", layer="conv3")
    with pytest.raises(ValueError, match=r"'fc1' is a Linear, not a convolution.*conv1, conv2"):
        viz.filters(m, tmp_path / "f.png", layer="fc1")
    with pytest.raises(ValueError, match="no Conv2d/ConvTranspose2d layer"):
        viz.filters(nn.Sequential(nn.Linear(3, 2)), tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"channel must be an input channel index in \[0, 6\)"):
        viz.filters(m, tmp_path / "f.png", layer="conv2", channel=6)
    _nothing_written(tmp_path)


# ---- feature maps ----
def _conv_ref(x, w, b, pad):
    """Direct cross-correlation: x [C, H, W], w [K, C, R, S] -> [K, H', W']."""
    x = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)))
    k, c, r, s = w.shape
    h, wd = x.shape[1] - r + 1, x.shape[2] - s + 1
    out = np.zeros((k, h, wd))
    for i in range(r):
        for j in range(s):
            out += np.einsum("kc,chw->khw", w[:, :, i, j], x[:, i:i + h, j:j + wd])
    return out + b[:, None, None]


def test_feature_map_arrays_are_the_layers_outputs(digits):
    m = cn.models.lenet5(seed=3)
    x = digits[2][7]  # [1, 28, 28]
    maps = viz.feature_map_arrays(m, x, ["conv1", "relu", "pool1", "conv2", "fc3"])
    assert list(maps) == ["conv1", "relu", "relu#2", "relu#3", "relu#4", "pool1", "conv2", "fc3"]
    conv1 = _conv_ref(x, np.asarray(m.conv1.weight), np.asarray(m.conv1.bias), 2)
    np.testing.assert_allclose(maps["conv1"], conv1, rtol=1e-4, atol=1e-4)
    assert (maps["conv1"] < 0).any()  # the conv output before its (fused) ReLU
    np.testing.assert_allclose(maps["relu"], np.maximum(conv1, 0), rtol=1e-4, atol=1e-4)
    pool = np.maximum(conv1, 0).reshape(6, 14, 2, 14, 2).max(axis=(2, 4))
    np.testing.assert_allclose(maps["pool1"], pool, rtol=1e-4, atol=1e-4)
    conv2 = _conv_ref(maps["pool1"], np.asarray(m.conv2.weight), np.asarray(m.conv2.bias), 0)
    np.testing.assert_allclose(maps["conv2"], conv2, rtol=1e-4, atol=1e-4)
    assert maps["relu#2"].shape == (16, 10, 10) and maps["relu#3"].shape == (120,)
    # the last layer is the model's output
    logits = m.compile((1, 1, 28, 28)).run(x[None])
    np.testing.assert_allclose(maps["fc3"], logits[0], rtol=1e-5, atol=1e-5)
    # the model is left as it was: no recording forward remains, it compiles and runs as before
    assert all("forward" not in mod.__dict__ for mod in m.modules())
    np.testing.assert_array_equal(m.compile((1, 1, 28, 28)).run(x[None]), logits)


def test_feature_maps_default_layers_and_batchnorm_in_eval(tmp_path):
    m = _tiny_rgb()
    x = np.random.default_rng(0).standard_normal((1, 3, 28, 28)).astype(np.float32)
    maps = viz.feature_map_arrays(m, x)
    assert list(maps) == ["0", "4"]  # every Conv2d
    with cn.no_grad():
        m[1].running_mean[:] = np.linspace(-1, 1, 8)
        m[1].running_var[:] = np.linspace(0.5, 2, 8)
    bn = viz.feature_map_arrays(m, x[0], "1")["1"]
    ref = (maps["0"] - np.asarray(m[1].running_mean)[:, None, None]) / np.sqrt(
        np.asarray(m[1].running_var)[:, None, None] + 1e-5)
    np.testing.assert_allclose(bn, ref * np.asarray(m[1].weight)[:, None, None]
                               + np.asarray(m[1].bias)[:, None, None], rtol=1e-4, atol=1e-4)
    _png(viz.feature_maps(m, x, tmp_path / "fm.png", max_channels=4, figsize=(6, 6)), (6, 6))
    p = viz.feature_maps(m, x, tmp_path / "fm2.png", layers=["2", "7"], figsize=(7, 5), dpi=50)
    _png(p, (7, 5), 50)


def test_feature_map_errors(tmp_path):
    m = cn.models.lenet5(seed=0)
    x = np.zeros((1, 28, 28), np.float32)
    with pytest.raises(ValueError, match=r"no module 'conv9'; its module paths are: conv1, pool1, conv2, pool2, "
                                         r"fc1, fc2, fc3, relu"):
        viz.feature_maps(m, x, tmp_path / "fm.png", layers=["conv1", "conv9"])
    with pytest.raises(ValueError, match=r"x must be one input \[C, H, W\] or \[1, C, H, W\], got shape \[2, 1"):
        viz.feature_maps(m, np.zeros((2, 1, 28, 28), np.float32), tmp_path / "fm.png")

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.spare = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(x)
    with pytest.raises(ValueError, match="module 'spare' is not called by the model's forward"):
        viz.feature_maps(Unused(), np.zeros((1, 8, 8), np.float32), tmp_path / "fm.png")
    _nothing_written(tmp_path)
    # a shape error while tracing names the layer, and the model keeps no recording forward
    with pytest.raises(ValueError, match="lenet5: expected input"):
        viz.feature_map_arrays(m, np.zeros((1, 32, 32), np.float32), ["conv1"])
    assert "forward" not in m.conv1.__dict__


# ---- memory plan and profile ----
def test_memory_plan_of_a_session_and_of_a_model(tmp_path):
    m = cn.models.lenet5(seed=0)
    s = m.compile((8, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1), recompute="segments")
    _png(viz.memory_plan(s, tmp_path / "s.png", figsize=(7, 5)), (7, 5))
    _png(viz.memory_plan(m, tmp_path / "m.png", input_shape=(8, 1, 28, 28), figsize=(16, 5), dpi=70), (16, 5), 70)
    _png(viz.memory_plan(m, tmp_path / "i.png", input_shape=(4, 1, 28, 28), modes="infer", figsize=(6, 5)), (6, 5))
    unet = cn.models.unet(in_channels=1, num_classes=1, depth=2, base=4, seed=0)  # dense output: mse
    _png(viz.memory_plan(unet, tmp_path / "u.png", input_shape=(2, 1, 16, 16), modes=("train", "cheap"),
                         figsize=(10, 5)), (10, 5))


def test_memory_plan_errors(tmp_path):
    m = cn.models.lenet5(seed=0)
    shapeless = cn.nn.Sequential(cn.nn.Linear(4, 2))  # declares no input shape: memory_plan needs one given
    with pytest.raises(ValueError, match=r"memory_plan: compile\(\): Sequential declares no input shape"):
        viz.memory_plan(shapeless, tmp_path / "m.png")
    with pytest.raises(TypeError, match=r"memory_plan: compile: input_shape must be a shape"):
        viz.memory_plan(m, tmp_path / "m.png", input_shape="8")
    with pytest.raises(ValueError, match="unknown mode 'recompute'; modes are infer, train, segments, cheap"):
        viz.memory_plan(m, tmp_path / "m.png", input_shape=(8, 1, 28, 28), modes=("infer", "recompute"))
    with pytest.raises(TypeError, match="expected a compiled cnnnative Session or a Module"):
        viz.memory_plan(object(), tmp_path / "m.png")
    _nothing_written(tmp_path)


def test_profile(tmp_path, digits):
    m = cn.models.lenet5(seed=0)
    s = m.compile((16, 1, 28, 28))
    with pytest.raises(ValueError, match="no timings yet: run it"):
        viz.profile(s, tmp_path / "p.png")
    _nothing_written(tmp_path)
    for _ in range(3):
        s.run(digits[0][:16])
    _png(viz.profile(s, tmp_path / "p.png", figsize=(9, 4)), (9, 4))
    _png(viz.profile(s.profile(), tmp_path / "p3.png", top=3, figsize=(8, 3)), (8, 3))


# ---- classification ----
def test_confusion_counts_by_hand():
    t = [0, 0, 1, 2, 2, 2, 1, 0]
    p = [0, 1, 1, 2, 0, 2, 1, 0]
    want = np.array([[2, 1, 0],
                     [0, 2, 0],
                     [1, 0, 2]])
    c = viz.confusion_counts(t, p, 3)
    np.testing.assert_array_equal(c, want)
    assert c.dtype == np.int64
    scores = np.eye(4, dtype=np.float32)[p][:, :4]  # [N, classes] scores: argmax
    np.testing.assert_array_equal(viz.confusion_counts(np.array(t, np.int32), scores, 4)[:3, :3], want)
    np.testing.assert_array_equal(viz.confusion_counts([], [], 2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"y_pred holds class 3, outside \[0, 3\)"):
        viz.confusion_counts(t, [3] * 8, 3)
    with pytest.raises(ValueError, match="y_true has 8 labels, y_pred 7"):
        viz.confusion_counts(t, p[:7], 3)
    with pytest.raises(ValueError, match="non-integer"):
        viz.confusion_counts([0.5], [0], 3)


def test_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 300)
    p = np.where(rng.random(300) < 0.7, t, rng.integers(0, 10, 300))
    _png(viz.confusion_matrix(t, p, tmp_path / "c.png", figsize=(6, 5)), (6, 5))
    _png(viz.confusion_matrix(t % 3, p % 3, tmp_path / "c3.png", labels=["cat", "dog", "bird"], figsize=(5, 4)),
         (5, 4))
    with pytest.raises(ValueError, match="2 labels given for num_classes=3"):
        viz.confusion_matrix(t % 3, p % 3, tmp_path / "x.png", num_classes=3, labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()


# ---- images ----
def test_augmentations(tmp_path, digits):
    x = digits[0][:5]
    _png(viz.augmentations(x, tmp_path / "a.png", n=4, figsize=(7, 6)), (7, 6))
    rgb = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    d = cn.data
    _png(viz.augmentations(rgb, tmp_path / "b.png", transforms=[d.GaussianNoise(0.2), d.GaussianBlur()], n=3,
                           figsize=(5, 5)), (5, 5))
    with pytest.raises(ValueError, match=r"x must be a batch \[N, C, H, W\] or one image"):
        viz.augmentations(np.zeros((16, 16)), tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_masks_and_denoise(tmp_path, digits):
    imgs, msk = cn.data.synthetic_shapes(n=6, size=32, seed=0)
    rng = np.random.default_rng(0)
    logits = (msk * 4 - 2 + rng.normal(0, 1, msk.shape)).astype(np.float32)
    _png(viz.masks(imgs, msk, logits, tmp_path / "m.png", n=3, figsize=(6, 5)), (6, 5))
    _png(viz.masks(imgs, msk[:, 0], 1 / (1 + np.exp(-logits)), tmp_path / "m2.png", figsize=(6, 9)), (6, 9))
    with pytest.raises(ValueError, match=r"masks: pred must be one mask per image"):
        viz.masks(imgs, msk, logits[:, :, :16], tmp_path / "bad.png")
    clean = np.clip(digits[2][:4] * 0.3 + 0.3, 0, 1)
    noisy = np.clip(clean + rng.normal(0, 0.3, clean.shape), 0, 1).astype(np.float32)
    _png(viz.denoise(noisy, 0.5 * (noisy + clean), clean, tmp_path / "d.png", figsize=(5, 6)), (5, 6))
    with pytest.raises(ValueError, match="must have the same shape"):
        viz.denoise(noisy, clean[:, :, :20], clean, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# ---- report ----
def test_html_report_embeds_every_picture_and_escapes_text(tmp_path):
    p1 = viz.history(_history_dict(), tmp_path / "h.png", figsize=(6, 4))
    p2 = viz.filters(cn.models.lenet5(seed=0), tmp_path / "f.png", figsize=(4, 3))
    out = viz.html_report([("History & <curves>", p1), ("Notes", "loss < 1 & <script>alert(1)</script>"),
                           ("Filters", tmp_path / "f.png")], tmp_path / "r" / "report.html", title="run <1>")
    doc = open(out, encoding="utf-8").read()
    uris = doc.split('src="data:image/png;base64,')[1:]
    assert len(uris) == 2
    assert [base64.b64decode(u.split('"')[0]) for u in uris] == [open(p, "rb").read() for p in (p1, p2)]
    assert "<script>" not in doc and "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "History &amp; &lt;curves&gt;" in doc and "<title>run &lt;1&gt;</title>" in doc
    assert "src=\"http" not in doc and "href=" not in doc  # nothing outside the file
    with pytest.raises(ValueError, match=r"section 'Gone': cannot read the picture .*missing.png"):
        viz.html_report([("History", p1), ("Gone", str(tmp_path / "missing.png"))], tmp_path / "r2.html")
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match="is not a PNG file"):
        viz.html_report([("Fake", str(tmp_path / "fake.png"))], tmp_path / "r2.html")
    assert not (tmp_path / "r2.html").exists()


def test_figures_are_released(tmp_path):
    from matplotlib.figure import Figure
    m = cn.models.lenet5(seed=0)

    def count():
        gc.collect()
        return sum(type(o) is Figure for o in gc.get_objects())  # type(): no attribute lookups on foreign objects
    viz.filters(m, tmp_path / "warm.png")
    before = count()
    for i in range(3):
        viz.filters(m, tmp_path / f"f{i}.png")
        viz.history(_history_dict(), tmp_path / f"h{i}.png")
    assert count() == before
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == []


def test_missing_matplotlib_is_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib \(or pip install '\.\[viz\]'"):
        viz.filters(cn.models.lenet5(seed=0), tmp_path / "f.png")
    _nothing_written(tmp_path)


@pytest.mark.slow
def test_readme_images_and_a_resnet18_memory_plan(tmp_path, digits):
    paths = viz.readme_images(str(tmp_path / "img"), epochs=2, log=lambda s: None)
    assert [os.path.basename(p) for p in paths] == ["lenet5_history.png", "lenet5_filters.png",
                                                   "resnet18_memory_plan.png"]
    for p, size in zip(paths, [(10, 6.4), (5, 3.6), (18, 5.2)]):
        _png(p, size, 90)
        assert os.path.getsize(p) < 200_000
