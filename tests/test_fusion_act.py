"""Inference fusion of the activations of ops/activations.cpp (core/fuse.cpp's act 3): clip (ReLU6, hardtanh,
clamp with min <= max), hardsigmoid, hardswish, silu, gelu (erf and tanh), mish and elu fold into fused_conv2d /
fused_linear after conv2d / linear [-> batch_norm] [-> add]; softplus, erf and clip with min > max stay separate.
Fused outputs match optimize=False in plain and blocked layouts, the fused schedule has no separate activation,
the fused op's reference decomposition and cpu kernels match numpy, and the zoo's mobile networks still agree."""
import math

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn
from cnnnative import functional as F
from cnnnative.session import Session
from test_fusion import FeatureBatchNorm, randomize_bn

ACTS = {
    "relu6": (F.relu6, "clip"),
    "hardtanh": (lambda y: F.hardtanh(y, -0.5, 2.0), "clip"),
    "clamp_min": (lambda y: F.clamp(y, min=-0.25), "clip"),
    "hardsigmoid": (F.hardsigmoid, "hardsigmoid"),
    "hardswish": (F.hardswish, "hardswish"),
    "silu": (F.silu, "silu"),
    "gelu": (F.gelu, "gelu"),
    "gelu_tanh": (lambda y: F.gelu(y, approximate="tanh"), "gelu"),
    "mish": (F.mish, "mish"),
    "elu": (lambda y: F.elu(y, 0.7), "elu"),
}
NOT_FUSED = {
    "softplus": (F.softplus, "softplus"),
    "clamp_empty": (lambda y: F.clamp(y, min=1.0, max=0.5), "clip"),
}


class ConvAct(nn.Module):
    def __init__(self, act, bn=False, res=False, cin=16, cout=16, k=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.res, self.act = res, act

    def forward(self, x):
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        if self.res:
            y = y + x
        return self.act(y)


class LinearAct(nn.Module):
    def __init__(self, act, bn=False):
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.bn = FeatureBatchNorm(16, eps=1e-3) if bn else None
        self.act = act

    def forward(self, x):
        y = self.fc(x)
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)


def _x(shape, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _ops(s):
    return [k.split()[0] for k in s.schedule()]


def _net(kind, act, seed=0):
    nn.manual_seed(seed)
    if kind.startswith("linear"):
        net = LinearAct(act, bn=kind == "linear_bn")
        if net.bn is not None:
            rng = np.random.default_rng(seed + 100)
            net._ensure_store()
            with cn.no_grad():
                net.bn.weight[...] = rng.uniform(0.5, 1.5, 16)
                net.bn.bias[...] = rng.uniform(-0.5, 0.5, 16)
                net.bn.running_mean[...] = rng.uniform(-0.3, 0.3, 16)
                net.bn.running_var[...] = rng.uniform(0.5, 2.0, 16)
        return net, (4, 12)
    net = ConvAct(act, bn=kind != "conv", res=kind == "conv_bn_add")
    randomize_bn(net, seed)
    return net, (2, 16, 8, 8)


KINDS = ["conv", "conv_bn", "conv_bn_add", "linear", "linear_bn"]


@pytest.mark.parametrize("layout", ["plain", "nChw16c"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(ACTS))
def test_activation_fuses_and_matches_unfused(name, kind, layout):
    fn, op = ACTS[name]
    net, shape = _net(kind, fn)
    x = _x(shape)
    fused = Session(net, shape, layout=layout)
    plain = Session(net, shape, optimize=False, layout=layout)
    ops = _ops(fused)
    assert op not in ops, ops
    assert ops.count("fused_linear" if kind.startswith("linear") else "fused_conv2d") == 1, ops
    assert op in _ops(plain)
    np.testing.assert_allclose(fused.run(x), plain.run(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv_bn", "linear"])
@pytest.mark.parametrize("name", list(NOT_FUSED))
def test_activations_without_an_equal_eltwise_stay_separate(name, kind):
    fn, op = NOT_FUSED[name]
    net, shape = _net(kind, fn)
    x = _x(shape)
    fused = Session(net, shape)
    ops = _ops(fused)
    assert op in ops, ops
    np.testing.assert_allclose(fused.run(x), Session(net, shape, optimize=False).run(x), rtol=1e-4, atol=1e-5)


def test_winograd_sized_conv_with_other_activation_takes_the_direct_kernel():
    """A 3x3 64 -> 64 nChw16c conv that would run as fused Winograd: the output transform has only relu and
    leaky_relu, so with silu it runs direct (with silu as a post-op) and still matches."""
    nn.manual_seed(3)
    net = ConvAct(F.silu, bn=True, res=True, cin=64, cout=64)
    randomize_bn(net, 3)
    shape = (4, 64, 16, 16)
    x = _x(shape, scale=1.0)
    fused = Session(net, shape, layout="nChw16c")
    ks = [k for k in fused.kernels() if k["op"] == "fused_conv2d"]
    assert len(ks) == 1 and not ks[0]["impl"].startswith("winograd"), ks
    assert "silu" not in _ops(fused)
    np.testing.assert_allclose(fused.run(x), Session(net, shape, optimize=False, layout="nChw16c").run(x),
                               rtol=1e-4, atol=1e-4)


# act 3's kind numbers (ops/activations_math.hpp act::Kind), parameters, numpy formula
def _np_act(kind, y, a, b):
    erf = np.vectorize(math.erf)
    sig = 1 / (1 + np.exp(-y))
    return {
        0: lambda: np.minimum(np.maximum(y, a), b),
        1: lambda: np.clip(a * y + b, 0, 1),
        2: lambda: y * np.clip(y + 3, 0, 6) / 6,
        3: lambda: y * sig,
        4: lambda: 0.5 * y * (1 + erf(y / math.sqrt(2))),
        5: lambda: 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3))),
        6: lambda: y * np.tanh(np.log1p(np.exp(y))),
        7: lambda: np.where(y > 0, y, a * np.expm1(y)),
    }[kind]()


OTHER = [(0, 0.0, 6.0), (1, 0.2, 0.5), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 0, 0), (6, 0, 0), (7, 0.7, 0)]


def _graph(op, shapes, attrs):
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(s)) for i, s in enumerate(shapes)]
    g.set_outputs(g.add_node(op, ids, attrs, "f"))
    return g


@pytest.mark.parametrize("kind,a,b", OTHER)
def test_fused_conv_op_act3_reference_and_cpu_vs_numpy(kind, a, b):
    rng = np.random.default_rng(kind)
    N, C, K, H = 2, 5, 6, 5
    x, w = rng.standard_normal((N, C, H, H)), rng.standard_normal((K, C, 1, 1))
    bias, res = rng.standard_normal(K), rng.standard_normal((N, K, H, H))
    attrs = {"has_bias": 1, "sum": 1, "act": 3, "act_kind": kind, "act_a": a, "act_b": b}
    g = _graph("fused_conv2d", [x.shape, w.shape, bias.shape, res.shape], attrs)
    y = np.einsum("nchw,kc->nkhw", x, w[:, :, 0, 0]) + bias[None, :, None, None] + res
    expect = _np_act(kind, y, a, b)
    for backend, layout in (("reference", "plain"), ("cpu", "plain"), ("cpu", "nChw16c"), ("cpu", "nhwc")):
        s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, layout=layout)
        s.run([v.astype(np.float32) for v in (x, w, bias, res)])
        np.testing.assert_allclose(s.fetch(0), expect, rtol=1e-4, atol=1e-4, err_msg=f"{backend} {layout}")


@pytest.mark.parametrize("kind,a,b", OTHER)
def test_fused_linear_op_act3_reference_and_cpu_vs_numpy(kind, a, b):
    rng = np.random.default_rng(kind)
    x, w, bias = rng.standard_normal((3, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    attrs = {"has_bias": 1, "act": 3, "act_kind": kind, "act_a": a, "act_b": b}
    g = _graph("fused_linear", [x.shape, w.shape, bias.shape], attrs)
    expect = _np_act(kind, x @ w.T + bias, a, b)
    for backend in ("reference", "cpu"):
        for det in (False, True):
            s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, deterministic=det)
            s.run([v.astype(np.float32) for v in (x, w, bias)])
            np.testing.assert_allclose(s.fetch(0), expect, rtol=1e-5, atol=1e-5, err_msg=f"{backend} {det}")


def test_fused_op_rejects_an_activation_it_cannot_apply():
    with pytest.raises(cn.Error, match="act_kind"):
        _graph("fused_linear", [[3, 7], [4, 7]], {"act": 3, "act_kind": 8, "act_a": 1.0, "act_b": 20.0})
    with pytest.raises(cn.Error, match="act_kind"):
        _graph("fused_linear", [[3, 7], [4, 7]], {"act": 3, "act_kind": 0, "act_a": 1.0, "act_b": 0.0})
    with pytest.raises(cn.Error, match="'act' must be"):
        _graph("fused_linear", [[3, 7], [4, 7]], {"act": 4})


@pytest.mark.parametrize("model,act", [("mobilenet_v2", "clip"), ("mobilenet_v3_small", "hardswish"),
                                       ("efficientnet_b0", "silu")])
def test_zoo_mobile_networks_fuse_their_activations_and_match(model, act):
    net = cn.models.get_model(model, num_classes=10, seed=0)
    net.eval()
    shape = (2, 3, 64, 64)
    x = _x(shape, scale=1.0)
    fused = Session(net, shape)
    plain = Session(net, shape, optimize=False)
    ops, unfused = _ops(fused), _ops(plain)
    assert act in unfused
    assert act not in ops and "hardsigmoid" not in ops, ops
    np.testing.assert_allclose(fused.run(x), plain.run(x), rtol=1e-4, atol=1e-4)
