"""bfloat16 inference (compile(dtype='bfloat16')): activations between bf16-capable kernels are stored and
computed in bf16 (f32 accumulation), inputs/outputs/weights stay float32. Checked against the float32 session
of the same model: relative error of bf16 rounding, top-1 agreement, every bf16 kernel path, fewer bytes."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import functional as F
from cnnnative import nn

pytestmark = pytest.mark.skipif(not cn.has_bf16(), reason="CPU without AVX512-BF16")


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


class AllOps(nn.Module):
    """Every op a bf16 session runs in bf16: conv with bias, BN, the eltwise ops, add, max/avg/global pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 24, 1, groups=8)
        self.mp = nn.MaxPool2d(2)
        self.ap = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        h = self.b1(self.c1(x)).relu()
        h = (self.b2(self.c2(h)) + h).sigmoid() + h.tanh()
        h = F.leaky_relu(self.c3(h), 0.1)
        h = self.ap(self.mp(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _trained_state(m, x):
    """Non-trivial BN statistics: a few training steps."""
    s = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01))
    y = np.arange(x.shape[0], dtype=np.int32) % 5
    for _ in range(3):
        s.step(x, y)


@pytest.mark.parametrize("optimize", [True, False])
def test_all_bf16_ops_close_to_float32(optimize):
    cn.manual_seed(0)
    m = AllOps()
    x = _x((4, 3, 16, 16))
    _trained_state(m, x)
    ref = m.compile(x.shape, optimize=optimize).run(x)
    s = m.compile(x.shape, optimize=optimize, dtype="bfloat16")
    out = s.run(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert _rel(out, ref) < 3e-2
    assert _rel(out, ref) > 0  # it really ran in bf16
    np.testing.assert_array_equal(s.run(x), out)  # deterministic


@pytest.mark.parametrize("name,kw,shape", [
    ("resnet18", {"num_classes": 10}, (2, 3, 64, 64)),
    ("resnet50", {"num_classes": 10}, (2, 3, 64, 64)),
    ("vgg11_bn", {"num_classes": 10}, (2, 3, 32, 32)),
    ("googlenet", {"num_classes": 10, "cifar": True}, (2, 3, 32, 32)),
    ("densenet121", {"num_classes": 10, "cifar": True}, (1, 3, 32, 32)),
    ("unet", {"depth": 2, "base": 8, "in_channels": 3}, (2, 3, 32, 32)),
])
def test_zoo_bf16_close_and_smaller(name, kw, shape):
    m = cn.models.get_model(name, seed=0, **kw) if name != "unet" else cn.models.unet(seed=0, **kw)
    x = _x(shape)
    s32, s16 = m.compile(shape), m.compile(shape, dtype="bfloat16")
    a, b = s32.run(x), s16.run(x)
    assert _rel(b, a) < 5e-2, name
    assert s16.memory_report()["arena_bytes"] < 0.75 * s32.memory_report()["arena_bytes"]
    if name != "unet":  # conv_transpose2d has no bf16 path: U-Net's decoder converts around it
        # one conversion: the pooled features to the float32 classifier
        assert sum(n.startswith("reorder") for n in s16.schedule()) == 1, s16.schedule()


def test_top1_agreement_on_trained_lenet():
    """The issue's accuracy bar: top-1 agreement with float32 >= 99 % on a fixed input set."""
    from cnnnative.data import load_digits
    from cnnnative.train import fit
    cn.manual_seed(0)
    m = cn.models.lenet5(seed=0)
    data = load_digits(seed=0)
    fit(m, data, epochs=3, batch_size=64, optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), progress=False,
        log=lambda *a: None)
    x = data[2][:256]
    a = m.compile(x.shape).run(x)
    b = m.compile(x.shape, dtype="bfloat16").run(x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99


def test_bf16_runs_allocate_nothing():
    m = cn.models.resnet18(seed=0, num_classes=10)
    s = m.compile((1, 3, 32, 32), dtype="bfloat16")
    x = _x((1, 3, 32, 32))
    s.run(x)
    before = cn.allocation_count()
    for _ in range(3):
        s.run(x)
    assert cn.allocation_count() == before


def test_bf16_errors():
    m = cn.models.lenet5(seed=0)
    with pytest.raises(ValueError, match="dtype must be"):
        m.compile((2, 1, 28, 28), dtype="float16")
    for layout in ("plain", "nhwc", "nChw8c"):  # oneDNN's bf16 kernels are nChw16c ones; no silent float32
        with pytest.raises(cn.Error, match="nChw16c"):
            m.compile((2, 1, 28, 28), dtype="bfloat16", layout=layout)
    with pytest.raises(cn.Error, match="cpu backend"):
        m.compile((2, 1, 28, 28), dtype="bfloat16", backend="reference")


# ---- mixed-precision training (bf16 activations and activation gradients, float32 master weights) ----

@pytest.mark.parametrize("name,kw,shape", [
    ("resnet18", {"num_classes": 10, "cifar": True}, (8, 3, 16, 16)),
    pytest.param("vgg11_bn", {"num_classes": 10}, (4, 3, 32, 32), marks=pytest.mark.slow),  # ~14 s
])
def test_mixed_precision_steps_track_float32(name, kw, shape):
    x = _x(shape)
    y = (np.arange(shape[0]) % 10).astype(np.int32)
    runs = {}
    sd0 = cn.models.get_model(name, seed=0, **kw).state_dict()
    for dt in ("float32", "bfloat16"):
        m = cn.models.get_model(name, seed=0, **kw)
        s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.002, momentum=0.9), dtype=dt)
        losses = [s.step(x, y) for _ in range(4)]
        runs[dt] = (losses, {k: v.copy() for k, v in m.state_dict().items()}, s)
    (l32, sd32, s32), (l16, sd16, s16) = runs["float32"], runs["bfloat16"]
    np.testing.assert_allclose(l16, l32, rtol=8e-2)
    assert l16[-1] < l16[0]
    # weights stay float32 and the bf16 run's updates point where the float32 run's do. bf16 rounding of the
    # activation gradients perturbs cancelling sums (BN biases, the stem) by up to ~40 % per tensor after one
    # step - PyTorch's CPU autocast(bfloat16) shows the same figures on CIFAR ResNet-18 - so the bar is global.
    keys = [k for k in sd32 if k.endswith(("weight", "bias"))]
    assert all(sd16[k].dtype == np.float32 for k in keys)
    upd = np.concatenate([(sd32[k] - sd0[k]).ravel() for k in keys])
    diff = np.concatenate([(sd16[k] - sd32[k]).ravel() for k in keys])
    assert np.linalg.norm(diff) < 0.5 * np.linalg.norm(upd), np.linalg.norm(diff) / np.linalg.norm(upd)
    assert any(not np.array_equal(sd16[k], sd32[k]) for k in sd32)  # it really ran in bf16
    assert s16.memory_report()["arena_bytes"] < 0.7 * s32.memory_report()["arena_bytes"]
    assert s16.memory_report()["grad_bytes"] == s32.memory_report()["grad_bytes"]


def test_mixed_precision_lenet_learns_digits():
    from cnnnative.data import load_digits
    from cnnnative.train import fit
    data = load_digits(seed=0)
    acc = {}
    for dt in ("float32", "bfloat16"):
        hist, sess = fit(cn.models.lenet5(seed=0), data, epochs=6, batch_size=64,
                         optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), progress=False, log=lambda *a: None, dtype=dt)
        assert sess.dtype == dt
        acc[dt] = hist[-1]["test_acc"]
    assert acc["bfloat16"] >= 0.9 and acc["bfloat16"] >= acc["float32"] - 0.03, acc


def test_mixed_precision_with_recompute_and_no_allocations():
    m = cn.models.resnet18(seed=0, num_classes=10, cifar=True)
    shape = (4, 3, 16, 16)
    x, y = _x(shape), np.arange(4, dtype=np.int32)
    ref = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), dtype="bfloat16")
    m2 = cn.models.resnet18(seed=0, num_classes=10, cifar=True)
    s = m2.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), dtype="bfloat16", recompute="segments")
    for _ in range(2):
        assert s.step(x, y) == pytest.approx(ref.step(x, y), rel=1e-6)
    before = cn.allocation_count()
    s.step(x, y)
    assert cn.allocation_count() == before


def test_mixed_precision_odd_channels_concat_and_pooling():
    """Padded bf16 blocks (6 and 12 channels) through BN, pooling, concat/split and upsample/deconv backward."""
    target = np.random.default_rng(1).random((2, 1, 16, 16)).astype(np.float32)
    x = _x((2, 3, 16, 16))
    losses = {}
    for dt in ("float32", "bfloat16"):
        m = cn.models.unet(in_channels=3, num_classes=1, depth=2, base=6, seed=0)
        s = m.compile(x.shape, mode="train", loss="mse", optimizer=cn.optim.Adam(lr=1e-3), dtype=dt)
        losses[dt] = [s.step(x, target) for _ in range(3)]
        if dt == "bfloat16":
            assert s.memory_report()["arena_bytes"] > 0
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2)
    cn.manual_seed(0)
    m = AllOps()
    x = _x((4, 3, 12, 12))
    y = np.arange(4, dtype=np.int32) % 5
    ref = [m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.0)).step(x, y) for _ in range(1)]
    got = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.0), dtype="bfloat16").step(x, y)
    np.testing.assert_allclose(got, ref[0], rtol=3e-2)
