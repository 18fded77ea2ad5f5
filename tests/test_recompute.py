"""Recomputation (compile(..., mode='train', recompute=...)): the backward pass recomputes activations instead
of keeping them. Each mode must give the same training trajectory as recompute='none' (the recomputed nodes
are deterministic copies running the same kernels), plan less memory, and allocate nothing per step."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

MODES = ("none", "cheap", "lean", "segments")


def _data(shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    return x, rng.integers(0, classes, shape[0]).astype(np.int32)


def _train(build, shape, mode, steps=2, loss="cross_entropy", target=None, optimizer=None, **kw):
    m = build()
    opt = optimizer() if optimizer else cn.optim.SGD(lr=0.05, momentum=0.9)
    s = m.compile(shape, mode="train", optimizer=opt, loss=loss, recompute=mode, **kw)
    x, y = _data(shape, 10)
    if target is not None:
        y = target
    losses = [s.step(x, y) for _ in range(steps)]
    return losses, {k: v.copy() for k, v in m.state_dict().items()}, s.memory_report(), s


def _auto_choice(arenas):
    """recompute='auto': from 'none' on, a plan recomputing more wins when its arena is >= 1/16 smaller."""
    best = "none"
    for mode in ("cheap", "lean"):
        if arenas[mode] + arenas[best] // 16 <= arenas[best]:
            best = mode
    return best


def _check_same(build, shape, rtol=1e-5, recomputes=True, **kw):
    ref_l, ref_sd, ref_r, _ = _train(build, shape, "none", **kw)
    arenas = {"none": ref_r["arena_bytes"]}
    for mode in ("cheap", "lean", "segments", None):  # None: the default, 'auto' (none, cheap or lean)
        l, sd, r, s = _train(build, shape, mode, **kw)
        np.testing.assert_allclose(l, ref_l, rtol=rtol)
        assert sd.keys() == ref_sd.keys()
        for k in ref_sd:  # weights after the steps, and the BN running statistics
            np.testing.assert_allclose(sd[k], ref_sd[k], rtol=rtol, atol=1e-6, err_msg=f"{mode}: {k}")
        if recomputes is not None and (mode is not None or r["recompute"] != "none"):
            assert (r["num_recomputed"] > 0) == recomputes, mode
            assert any(n.endswith("/recompute") for n in s.schedule()) == recomputes
        arenas[mode] = r["arena_bytes"]
        if mode is None:
            assert r["recompute"] == _auto_choice(arenas), arenas
            assert arenas[None] == arenas[r["recompute"]]
        else:
            assert r["recompute"] == mode
    assert arenas["segments"] <= arenas["cheap"] <= arenas["none"], arenas
    return arenas


class ConvBnDrop(nn.Module):
    """conv-BN-ReLU chains, a residual add, max-pool and dropout (a random op, which must never be recomputed)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = self.b1(self.c1(x)).relu()
        h = (self.b2(self.c2(h)) + h).relu()
        h = self.drop(self.pool(h))
        return self.fc(h.flatten(1))


def _seeded(cls):
    cn.manual_seed(0)
    return cls()


def test_small_net_with_dropout_same_steps():
    _check_same(lambda: _seeded(ConvBnDrop), (4, 3, 8, 8), steps=3)


@pytest.mark.parametrize("name,shape,kw", [
    ("resnet18", (4, 3, 32, 32), dict(num_classes=10)),
    ("resnet50", (2, 3, 32, 32), dict(num_classes=10)),
    ("lenet5", (8, 1, 28, 28), dict()),
    pytest.param("vgg11_bn", (2, 3, 32, 32), dict(num_classes=10), marks=pytest.mark.slow),  # ~25 s
    ("googlenet", (2, 3, 32, 32), dict(num_classes=10, cifar=True)),
])
def test_zoo_models_same_steps(name, shape, kw):
    # LeNet (conv-pool-ReLU in training, no BN): the pooled pre-activation may be recomputed, which saves
    # nothing; only the trajectory and the arena bound are checked for it
    arenas = _check_same(lambda: cn.models.get_model(name, seed=0, **kw), shape,
                         recomputes=None if name == "lenet5" else True)
    if name != "lenet5":  # LeNet (conv-ReLU-pool, no BN) has nothing cheap to recompute
        assert arenas["segments"] < arenas["none"], arenas


def test_unet_mse_same_steps_and_adam():
    shape = (2, 1, 32, 32)
    target = np.random.default_rng(1).random((2, 1, 32, 32)).astype(np.float32)
    _check_same(lambda: cn.models.unet(depth=2, base=8, seed=0), shape, loss="mse", target=target,
                optimizer=lambda: cn.optim.Adam(lr=1e-3))


def test_plain_layout_same_steps():
    _check_same(lambda: cn.models.get_model("resnet18", seed=0, num_classes=10), (2, 3, 32, 32), layout="plain")


def test_segments_keep_block_outputs_resnet50_memory():
    """ResNet-50 at 224x224 (batch 2, compile only): 'segments' keeps little more than the block outputs."""
    reps = {}
    for mode in MODES:
        m = cn.models.resnet50(seed=0)
        s = m.compile((2, 3, 224, 224), mode="train", optimizer=cn.optim.SGD(lr=0.1, momentum=0.9), recompute=mode)
        reps[mode] = s.memory_report()
        assert reps[mode]["arena_bytes"] <= 1.01 * reps[mode]["lower_bound_bytes"]
    assert reps["cheap"]["arena_bytes"] < 0.9 * reps["none"]["arena_bytes"]
    # lean: the stem, the 1x1 convolutions from <= 160 channels and every other block output recomputed
    assert reps["lean"]["arena_bytes"] < 0.5 * reps["none"]["arena_bytes"]
    assert reps["segments"]["arena_bytes"] < 0.4 * reps["none"]["arena_bytes"]
    assert reps["segments"]["persistent_bytes"] == reps["none"]["persistent_bytes"]


def test_default_training_compile_is_lean():
    """The default training compile recomputes (recompute='auto'); an explicit 'none' opts out; inference and
    gradient-check sessions keep everything."""
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    sgd = cn.optim.SGD(lr=0.01)
    default = m.compile((2, 3, 32, 32), mode="train", optimizer=sgd).memory_report()
    none = m.compile((2, 3, 32, 32), mode="train", optimizer=sgd, recompute="none").memory_report()
    assert default["recompute"] == "lean" and default["num_recomputed"] > 0
    assert default["arena_bytes"] < 0.7 * none["arena_bytes"]
    assert none["recompute"] == "none" and none["num_recomputed"] == 0
    assert m.compile((2, 3, 32, 32)).memory_report()["num_recomputed"] == 0
    assert m.compile((2, 3, 32, 32), recompute="none").memory_report()["num_recomputed"] == 0


def test_auto_falls_back_to_cheap_where_lean_plans_more():
    """MobileNetV2: recomputing its depthwise stages one value at a time keeps more alive than 'cheap'; the
    default takes whichever plans the smaller arena."""
    m = cn.models.get_model("mobilenet_v2", seed=0, num_classes=10)
    arena = {}
    for mode in ("lean", "cheap", None):
        s = m.compile((2, 3, 64, 64), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute=mode)
        arena[mode] = s.memory_report()["arena_bytes"]
    assert arena["cheap"] < arena["lean"] and arena[None] == arena["cheap"]


def test_auto_recomputes_nothing_where_it_saves_nothing():
    """LeNet-5: 'cheap' and 'lean' plan the arena of 'none' and only cost time; the default keeps everything."""
    m = cn.models.lenet5(seed=0)
    r = {mode: m.compile(64, mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute=mode).memory_report()
         for mode in ("none", "cheap", "lean", None)}
    assert r["lean"]["arena_bytes"] + r["none"]["arena_bytes"] // 16 > r["none"]["arena_bytes"]
    assert r[None]["recompute"] == "none" and r[None]["num_recomputed"] == 0


def test_lean_threshold_trades_memory():
    """'lean:<flops per byte>': 0 recomputes no convolution; a higher threshold recomputes more of them."""
    m = cn.models.resnet50(seed=0)
    rep = {}
    for mode in ("cheap", "lean:0", "lean", "lean:128"):
        s = m.compile((2, 3, 224, 224), mode="train", optimizer=cn.optim.SGD(lr=0.1), recompute=mode)
        rep[mode] = s.memory_report()
        assert rep[mode]["recompute"] == mode
    a = {k: r["arena_bytes"] for k, r in rep.items()}
    assert a["lean:128"] < a["lean"] < a["lean:0"] < a["cheap"], a
    n = {k: r["num_recomputed"] for k, r in rep.items()}
    assert n["lean:128"] > n["lean"] > n["lean:0"] > n["cheap"], n


def _need(rep):
    return rep["arena_bytes"] + rep["persistent_bytes"]


def test_memory_budget_picks_least_recompute_that_fits():
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    shape = (4, 3, 32, 32)

    def compile_(**kw):
        return m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9), **kw).memory_report()

    none, cheap, seg = (compile_(recompute=r) for r in ("none", "cheap", "segments"))
    assert compile_(memory_budget=_need(none))["recompute"] == "none"
    assert compile_(memory_budget=_need(none) - 1)["recompute"] == "cheap"
    assert compile_(memory_budget=_need(cheap))["recompute"] == "cheap"
    r = compile_(memory_budget=_need(cheap) - 1)  # the first lean threshold (or segments) that fits
    assert r["recompute"] not in ("none", "cheap") and _need(r) <= _need(cheap) - 1
    assert r["recompute"] == compile_(recompute=r["recompute"])["recompute"]
    smallest = min(_need(compile_(recompute=q)) for q in ("lean:0", "lean:32", "lean:64", "lean", "lean:128",
                                                          "lean:192", "lean:256", "segments"))
    assert smallest <= _need(seg)
    assert _need(compile_(memory_budget=smallest)) == smallest
    with pytest.raises(cn.Error, match=f"cannot be met.*arena \\+ persistent bytes: {smallest}$"):
        compile_(memory_budget=smallest - 1)


def test_memory_budget_option_errors():
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    sgd = cn.optim.SGD(lr=0.01)
    with pytest.raises(ValueError, match="not both"):
        m.compile((2, 3, 32, 32), mode="train", optimizer=sgd, recompute="cheap", memory_budget=10**9)
    with pytest.raises(ValueError, match="mode='train' only"):
        m.compile((2, 3, 32, 32), memory_budget=10**9)
    for bad in (0, -5, 1.5e9, "1GB", True):
        with pytest.raises(ValueError, match="memory_budget must be"):
            m.compile((2, 3, 32, 32), mode="train", optimizer=sgd, memory_budget=bad)
    with pytest.raises(cn.Error, match=r"cannot be met: the smallest plan, recompute='[a-z:0-9]+', needs"):
        m.compile((2, 3, 32, 32), mode="train", optimizer=sgd, memory_budget=1000)


def test_recompute_steps_allocate_nothing():
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    s = m.compile((2, 3, 32, 32), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute="segments")
    x, y = _data((2, 3, 32, 32), 10)
    s.step(x, y)
    before = cn.allocation_count()
    for _ in range(3):
        s.step(x, y)
    assert cn.allocation_count() == before


def test_recompute_option_errors():
    m = cn.models.lenet5(seed=0)
    for bad in ("all", "lean:", "lean:x", "lean:-1", 3):
        with pytest.raises(ValueError, match="recompute must be"):
            m.compile((2, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute=bad)
    with pytest.raises(ValueError, match="mode='train' only"):
        m.compile((2, 1, 28, 28), recompute="segments")
    r = cn.models.get_model("resnet18", seed=0, num_classes=10)
    sgd = cn.optim.SGD(lr=0.01)
    assert r.compile((2, 3, 32, 32), mode="train", optimizer=sgd, recompute=True).memory_report()["num_recomputed"] > 0
    assert r.compile((2, 3, 32, 32), mode="train", optimizer=sgd, recompute=False).memory_report()["num_recomputed"] == 0


def test_non_finite_input_rejected_state_untouched_with_recompute():
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    s = m.compile((2, 3, 32, 32), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute="segments")
    before = {k: v.copy() for k, v in m.state_dict().items()}
    x, y = _data((2, 3, 32, 32), 10)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(cn.Error, match="non-finite"):
        s.step(x, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
