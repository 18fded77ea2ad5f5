"""Training and grad sessions run relu -> max_pool2d as max_pool2d -> relu (core/fuse.hpp, swap_relu_maxpool):
the relu then works on the pooled tensor. The two orders must give the same values and gradients, including
windows whose maximum is <= 0 and windows with tied maxima; the swap must not happen where the relu output
has another reader or is fetched, and never in inference (which fuses the relu into the conv)."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core


def _lenet_steps(optimize, steps=3, layout="auto"):
    cn.manual_seed(0)
    m = cn.models.get_model("lenet5", seed=0, num_classes=10)
    s = m.compile((8, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9),
                  optimize=optimize, layout=layout)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    losses = [s.step(x, y) for _ in range(steps)]
    return losses, {k: v.copy() for k, v in m.state_dict().items()}, s


@pytest.mark.parametrize("layout", ["auto", "plain"])
def test_lenet_training_same_trajectory_and_pool_runs_first(layout):
    l0, sd0, s0 = _lenet_steps(False, layout=layout)
    l1, sd1, s1 = _lenet_steps(True, layout=layout)
    assert s0.memory_report()["num_relu_pool_swapped"] == 0
    assert s1.memory_report()["num_relu_pool_swapped"] == 2
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for k in sd0:
        np.testing.assert_allclose(sd1[k], sd0[k], rtol=1e-5, atol=1e-7, err_msg=k)
    ops = [e.split()[0] for e in s1.schedule()]
    first_pool = ops.index("max_pool2d")
    assert ops[first_pool + 1] == "relu", ops[:first_pool + 2]
    ops0 = [e.split()[0] for e in s0.schedule()]
    assert ops0[ops0.index("max_pool2d") - 1] == "relu"


def _graph(pool_attrs, extra_reader=False, fetch_relu=False):
    g = _core.Graph()
    x = g.add_input("x", [2, 3, 7, 7])
    r = g.add_node("relu", [x], {}, "relu")[0]
    attrs = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": 0,
             "training": 1}
    attrs.update(pool_attrs)
    p = g.add_node("max_pool2d", [r], attrs, "pool")
    outs = [p[0]]
    if extra_reader:
        outs.append(g.add_node("sigmoid", [r], {}, "other")[0])
    if fetch_relu:
        outs.append(r)
    g.set_outputs(outs)
    return g, x, outs


def _grads(pool_attrs, x, dys, optimize, compute="float32", backend="cpu", **kw):
    g, xi, outs = _graph(pool_attrs, **kw)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, compute=compute, grad_of=outs, wrt=[xi],
                      optimize=optimize)
    dt = np.float64 if compute == "float64" else np.float32
    s.run([x.astype(dt)] + [d.astype(dt) for d in dys])
    n = len(outs)
    return [s.fetch(i).copy() for i in range(n)], s.fetch(n).copy(), s.memory_report()["num_relu_pool_swapped"]


def _tricky_input(seed=0):
    """Windows that are all negative, all zero, tied positive maxima and ordinary ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    x[0, 0, :4, :4] = -np.abs(x[0, 0, :4, :4]) - 0.1  # maxima <= 0
    x[0, 1, :2, :2] = 0.0                               # all-zero window
    x[1, 0, :2, :2] = 0.5                               # four-way tie of a positive maximum
    x[1, 2, 2:4, 2:4] = [[0.3, 0.3], [-1.0, 0.3]]       # three-way tie
    return x


@pytest.mark.parametrize("pool_attrs", [
    {},
    {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]},
    {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": 1},
    {"kernel": [3, 3], "stride": [1, 1], "dilation": [2, 2]},
])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_swapped_values_and_gradients_equal_unswapped(pool_attrs, backend):
    x = _tricky_input()
    g, _, _ = _graph(pool_attrs)
    s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend)  # relu then pool, as built
    s.run([x])
    dy = np.random.default_rng(1).standard_normal(s.fetch(0).shape).astype(np.float32)
    (y0,), dx0, n0 = _grads(pool_attrs, x, [dy], False, backend=backend)
    (y1,), dx1, n1 = _grads(pool_attrs, x, [dy], True, backend=backend)
    assert (n0, n1) == (0, 1)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(dx1, dx0)
    np.testing.assert_array_equal(y0, s.fetch(0))
    # the gradient lands only where relu passes it: never inside an all-negative or all-zero window
    assert not dx1[0, 0, :4, :4].any() and not dx1[0, 1, :2, :2].any()


def test_swapped_gradient_matches_finite_differences_float64():
    pool_attrs = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 7))
    x[np.abs(x) < 0.05] += 0.2  # keep every element away from relu's kink for the central differences
    g, _, _ = _graph(pool_attrs)
    s = _core.Session(g, _core.ParamStore([]), "infer", backend="reference", compute="float64")
    s.run([x])
    dy = rng.standard_normal(s.fetch(0).shape)
    (_,), dx, n = _grads(pool_attrs, x, [dy], True, compute="float64", backend="reference")
    assert n == 1

    def f(xx):
        s.run([xx])
        return float(np.sum(s.fetch(0) * dy))

    eps = 1e-6
    num = np.zeros_like(x)
    flat, nflat = x.reshape(-1), num.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        hi = f(x)
        flat[j] = old - eps
        lo = f(x)
        flat[j] = old
        nflat[j] = (hi - lo) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kw", [{"extra_reader": True}, {"fetch_relu": True}])
def test_no_swap_when_relu_output_is_read_elsewhere_or_fetched(kw):
    x = _tricky_input()
    g, _, outs = _graph({}, **kw)
    s = _core.Session(g, _core.ParamStore([]), "infer")
    s.run([x])
    dys = [np.ones_like(s.fetch(i)) for i in range(len(outs))]
    _, _, n = _grads({}, x, dys, True, **kw)
    assert n == 0


def test_inference_keeps_relu_fused_into_the_conv():
    m = cn.models.get_model("lenet5", seed=0, num_classes=10)
    s = m.compile((4, 1, 28, 28))
    assert s.memory_report()["num_relu_pool_swapped"] == 0
    assert not any(e.split()[0] == "relu" for e in s.schedule())


def test_resnet_stem_and_vgg_swap_in_training():
    r = cn.models.get_model("resnet18", seed=0, num_classes=10, cifar=False)
    train = r.compile((2, 3, 64, 64), mode="train", optimizer=cn.optim.SGD(lr=0.01))
    assert train.memory_report()["num_relu_pool_swapped"] == 1
    v = cn.models.get_model("vgg11", seed=0, num_classes=10)
    train = v.compile((2, 3, 32, 32), mode="train", optimizer=cn.optim.SGD(lr=0.01))
    assert train.memory_report()["num_relu_pool_swapped"] == 5
