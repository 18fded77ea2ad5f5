"""Inference fusion (core/fuse.cpp, ops/conv_fused.cpp): conv2d [-> batch_norm(eval)] [-> add] [-> relu] and
linear [-> batch_norm(eval)] [-> relu] run as one fused node. Fused, unfused and reference-backend outputs must agree; the schedule
shrinks as expected; parameter updates are seen (nothing is frozen); no allocation per run."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn
from cnnnative import functional as F
from cnnnative.session import Session
from opcheck import run_forward


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-relu-conv3x3-BN (+ downsample conv1x1-BN) add relu."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = self.downsample(x) if "downsample" in self._modules else x
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


def resnet_stack(seed=0, num_classes=5):
    nn.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        BasicBlock(16, 16), BasicBlock(16, 32, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, num_classes))
    randomize_bn(net, seed)
    return net


def randomize_bn(net, seed):
    """Non-trivial BN parameters and running statistics, so a fused BN that ignored one would show."""
    rng = np.random.default_rng(seed + 100)
    net._ensure_store()
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with cn.no_grad():
                m.weight[...] = rng.uniform(0.5, 1.5, c)
                m.bias[...] = rng.uniform(-0.5, 0.5, c)
                m.running_mean[...] = rng.uniform(-0.3, 0.3, c)
                m.running_var[...] = rng.uniform(0.5, 2.0, c)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _three_ways(net, x, **kw):
    fused = Session(net, x.shape, optimize=True, **kw)
    plain = Session(net, x.shape, optimize=False, **kw)
    ref = Session(net, x.shape, backend="reference")
    return fused, plain, ref


@pytest.mark.parametrize("layout", ["auto", "plain"])
def test_resnet_block_fused_matches_unfused_and_reference(layout):
    net = resnet_stack()
    x = _x((4, 3, 12, 12))
    fused, unfused, ref = _three_ways(net, x, layout=layout)
    r = ref.run(x)
    np.testing.assert_allclose(fused.run(x), r, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(unfused.run(x), r, rtol=1e-4, atol=1e-4)


def test_resnet_schedule_shrinks_as_expected():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    ops = [s.split()[0] for s in Session(net, x.shape, layout="plain").schedule()]
    unfused = [s.split()[0] for s in Session(net, x.shape, optimize=False, layout="plain").schedule()]
    # stem conv-bn-relu; block 1: conv-bn-relu, conv-bn-add-relu; block 2: the same plus downsample conv-bn
    assert ops.count("fused_conv2d") == 6
    assert "conv2d" not in ops and "batch_norm" not in ops and "relu" not in ops and "add" not in ops
    assert ops == ["fused_conv2d"] * 3 + ["fused_conv2d", "fused_conv2d", "fused_conv2d",
                                          "global_avg_pool", "flatten", "linear"]
    assert unfused.count("conv2d") == 6 and unfused.count("batch_norm") == 6 and unfused.count("add") == 2
    assert len(unfused) - len(ops) == 6 + 2 + 5  # BNs, adds and relus absorbed


def test_fused_residual_runs_in_place():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    fused = Session(net, x.shape, layout="plain")
    # the residual of block 2 (the downsample path's output) dies at the fused conv2: y takes its buffer
    assert fused.memory_report()["num_inplace"] >= 1
    unfused = Session(net, x.shape, optimize=False, layout="plain")
    assert fused.memory_report()["arena_bytes"] <= unfused.memory_report()["arena_bytes"]


def test_lenet_fused_matches_unfused_and_reference():
    m = cn.models.lenet5(seed=1)
    x = _x((8, 1, 28, 28))
    fused, unfused, ref = _three_ways(m, x)
    ops = [s.split()[0] for s in fused.schedule()]
    assert ops.count("fused_conv2d") == 2 and ops.count("fused_linear") == 2 and "relu" not in ops
    r = ref.run(x)
    np.testing.assert_allclose(fused.run(x), r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(unfused.run(x), r, rtol=1e-4, atol=1e-5)


def test_parameter_updates_are_seen_by_the_fused_kernel():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    fused = Session(net, x.shape)
    before = fused.run(x)
    stem_bn = net[1]
    with cn.no_grad():
        stem_bn.running_var[...] *= 4.0
        stem_bn.weight[...] *= -1.0
        net[3].conv2.weight[...] *= 0.5
    after = fused.run(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, Session(net, x.shape, backend="reference").run(x), rtol=1e-4, atol=1e-4)


def test_training_and_optimize_false_do_not_fuse():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    train = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01))
    assert not any(s.startswith("fused_") for s in train.schedule())
    assert not any(s.startswith("fused_") for s in Session(net, x.shape, optimize=False).schedule())
    assert not any(s.startswith("fused_") for s in Session(net, x.shape, backend="reference").schedule())


def test_chain_with_a_second_consumer_is_not_fused_past_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x))  # y has two consumers: only conv -> bn fuses
            return y.relu() + y

    net = Net()
    randomize_bn(net, 3)
    x = _x((2, 3, 6, 6))
    s = Session(net, x.shape, layout="plain")
    assert [e.split()[0] for e in s.schedule()] == ["fused_conv2d", "relu", "add"]
    np.testing.assert_allclose(s.run(x), Session(net, x.shape, backend="reference").run(x), rtol=1e-4, atol=1e-5)


def test_residual_still_live_is_copied_not_overwritten():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)

        def forward(self, x):
            r = self.conv0(x)
            y = (self.bn1(self.conv1(r)) + r).relu()  # fused with r as the residual ...
            return y + r                               # ... while r is still needed here

    net = Net()
    randomize_bn(net, 4)
    x = _x((2, 3, 8, 8))
    for layout in ("plain", "auto", "nChw8c", "nhwc"):
        s = Session(net, x.shape, layout=layout)
        assert "fused_conv2d conv1" in s.schedule()
        np.testing.assert_allclose(s.run(x), Session(net, x.shape, backend="reference").run(x), rtol=1e-4, atol=1e-5)


def test_same_value_as_conv_input_and_residual():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(3, 4, 1)
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            h = self.conv0(x)
            return (self.bn(self.conv(h)) + h).relu()  # h is both the conv's source and the residual

    net = Net()
    randomize_bn(net, 5)
    x = _x((2, 3, 6, 6))
    s = Session(net, x.shape)
    np.testing.assert_allclose(s.run(x), Session(net, x.shape, backend="reference").run(x), rtol=1e-4, atol=1e-5)


def _fused_graph(op, shapes, attrs):
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(s)) for i, s in enumerate(shapes)]
    out = g.add_node(op, ids, attrs, "f")
    g.set_outputs(out)
    return g


@pytest.mark.parametrize("bias,bn,res,act", [(1, 1, 1, 1), (0, 1, 1, 2), (1, 0, 0, 1), (1, 1, 0, 0), (0, 0, 1, 0)])
def test_fused_conv_op_fast_vs_reference_composition(bias, bn, res, act):
    rng = np.random.default_rng(bias * 8 + bn * 4 + res * 2 + act)
    N, C, K, H = 2, 5, 6, 7
    arrays = [rng.standard_normal((N, C, H, H)), rng.standard_normal((K, C, 3, 3)) * 0.3]
    if bias:
        arrays.append(rng.standard_normal(K))
    if bn:
        arrays += [rng.uniform(0.5, 1.5, K), rng.uniform(-0.5, 0.5, K), rng.uniform(-0.3, 0.3, K), rng.uniform(0.5, 2, K)]
    if res:
        arrays.append(rng.standard_normal((N, K, H, H)))
    attrs = {"padding": [1, 1], "has_bias": bias, "bn": bn, "bn_eps": 1e-3, "sum": res, "act": act,
             "negative_slope": 0.2}
    g = _fused_graph("fused_conv2d", [a.shape for a in arrays], attrs)
    feeds = [a.astype(np.float32) for a in arrays]
    outs = {}
    for backend, layout in (("reference", "plain"), ("cpu", "plain"), ("cpu", "nChw16c"), ("cpu", "nChw8c"),
                            ("cpu", "nhwc")):
        s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend, layout=layout)
        s.run(feeds)
        outs[(backend, layout)] = s.fetch(0)
    # numpy: the same composition
    x, w = arrays[0], arrays[1]
    cols = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((N, K, H, H))
    for r in range(3):
        for s_ in range(3):
            y += np.einsum("nchw,kc->nkhw", cols[:, :, r:r + H, s_:s_ + H], w[:, :, r, s_])
    i = 2
    if bias:
        y += arrays[2][None, :, None, None]
        i = 3
    if bn:
        gm, bt, mu, var = arrays[i:i + 4]
        y = (y - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3) * gm[None, :, None, None] \
            + bt[None, :, None, None]
    if res:
        y = y + arrays[-1]
    if act == 1:
        y = np.maximum(y, 0)
    elif act == 2:
        y = np.where(y > 0, y, 0.2 * y)
    for k, v in outs.items():
        np.testing.assert_allclose(v, y, rtol=1e-4, atol=1e-4, err_msg=str(k))


def test_fused_linear_op_and_errors():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 7)), rng.standard_normal((4, 7)), rng.standard_normal(4)
    g = _fused_graph("fused_linear", [x.shape, w.shape, b.shape], {"has_bias": 1, "act": 2, "negative_slope": 0.1})
    expect = x @ w.T + b
    expect = np.where(expect > 0, expect, 0.1 * expect)
    for backend in ("reference", "cpu"):
        s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend)
        s.run([a.astype(np.float32) for a in (x, w, b)])
        np.testing.assert_allclose(s.fetch(0), expect, rtol=1e-5, atol=1e-5)
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", s) for i, s in enumerate([[2, 3, 5, 5], [4, 3, 3, 3], [4]])]
    with pytest.raises(cn.Error, match=r"op 'fused_conv2d' \(node 'f'\): expects 7 inputs for its attributes"):
        g.add_node("fused_conv2d", ids, {"has_bias": 1, "bn": 1}, "f")


class FeatureBatchNorm(nn.BatchNorm2d):
    """Batch norm over the features of an [N, C] tensor (what torch calls BatchNorm1d; cnnnative.nn has none,
    but the engine's batch_norm takes 2-D input: channels on axis 1)."""

    def forward(self, x):
        assert x.dim() == 2
        return super().forward(x)


class LinearBN(nn.Module):
    def __init__(self, bias=True, act=None, seed=0):
        super().__init__()
        nn.manual_seed(seed)
        self.fc = nn.Linear(6, 5, bias=bias)
        self.bn = FeatureBatchNorm(5, eps=1e-3)
        self.act = act

    def forward(self, x):
        y = self.bn(self.fc(x))
        return y.relu() if self.act == "relu" else F.leaky_relu(y, 0.2) if self.act == "leaky" else y


def linear_bn(bias=True, act=None, seed=0):
    net = LinearBN(bias, act, seed)
    rng = np.random.default_rng(seed + 100)
    net._ensure_store()
    with cn.no_grad():
        net.bn.weight[...] = rng.uniform(0.5, 1.5, 5) * np.array([1, -1, 1, 1, -1])
        net.bn.bias[...] = rng.uniform(-0.5, 0.5, 5)
        net.bn.running_mean[...] = rng.uniform(-0.3, 0.3, 5)
        net.bn.running_var[...] = rng.uniform(0.5, 2.0, 5)
    return net


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", [None, "relu", "leaky"])
def test_linear_batch_norm_fuses_and_matches_unfused_and_reference(bias, act):
    net = linear_bn(bias, act)
    x = _x((7, 6))
    fused, unfused, ref = _three_ways(net, x)
    assert fused.schedule() == ["fused_linear fc"]  # the batch_norm and the activation are absorbed
    ops = [e.split()[0] for e in unfused.schedule()]
    assert ops[:2] == ["linear", "batch_norm"] and len(ops) == 2 + (act is not None)
    r = ref.run(x)
    lin = x @ net.fc.weight.T + (net.fc.bias if bias else 0)
    assert not np.allclose(r, lin, atol=1e-2)  # the BN does something
    np.testing.assert_allclose(fused.run(x), r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unfused.run(x), r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kw", [{}, {"deterministic": True}, {"cache_weights": False}])
def test_fused_linear_bn_sees_parameter_updates(bias, kw):
    net = linear_bn(bias, "relu", seed=2)
    x = _x((4, 6), seed=2)
    fused = Session(net, x.shape, **kw)
    assert fused.schedule() == ["fused_linear fc"]
    before = fused.run(x)
    np.testing.assert_allclose(before, Session(net, x.shape, backend="reference").run(x), rtol=1e-5, atol=1e-5)
    for edit in ("bn", "fc"):
        with cn.no_grad():
            if edit == "bn":
                net.bn.running_var[...] *= 4.0
                net.bn.running_mean[...] += 0.5
                net.bn.weight[...] *= -1.0
                net.bn.bias[...] -= 0.25
            else:
                net.fc.weight[...] *= 0.5
                if bias:
                    net.fc.bias[...] += 1.0
        after = fused.run(x)
        assert not np.allclose(before, after), edit
        np.testing.assert_allclose(after, Session(net, x.shape, backend="reference").run(x), rtol=1e-5, atol=1e-5)
        before = after


def test_linear_batch_norm_with_a_second_consumer_or_kept_is_not_fused():
    class Net(LinearBN):
        def forward(self, x):
            h = self.fc(x)  # h is read twice: linear and batch_norm stay apart
            return self.bn(h).relu() + h

    net = linear_bn()
    net.__class__ = Net
    x = _x((3, 6))
    s = Session(net, x.shape)
    assert [e.split()[0] for e in s.schedule()] == ["linear", "batch_norm", "relu", "add"]
    np.testing.assert_allclose(s.run(x), Session(net, x.shape, backend="reference").run(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias,act", [(1, 0), (0, 1), (1, 2), (0, 0)])
def test_fused_linear_bn_op_fast_vs_reference(bias, act):
    rng = np.random.default_rng(bias * 4 + act)
    N, IN, OUT, eps = 3, 7, 4, 1e-3
    arrays = [rng.standard_normal((N, IN)), rng.standard_normal((OUT, IN))]
    if bias:
        arrays.append(rng.standard_normal(OUT))
    gm, bt, mu, var = rng.uniform(0.5, 1.5, OUT), rng.uniform(-0.5, 0.5, OUT), rng.uniform(-0.3, 0.3, OUT), \
        rng.uniform(0.5, 2, OUT)
    arrays += [gm, bt, mu, var]
    attrs = {"has_bias": bias, "bn": 1, "bn_eps": eps, "act": act, "negative_slope": 0.1}
    y = arrays[0] @ arrays[1].T + (arrays[2] if bias else 0)
    y = (y - mu) / np.sqrt(var + eps) * gm + bt
    y = np.maximum(y, 0) if act == 1 else np.where(y > 0, y, 0.1 * y) if act == 2 else y
    for backend, compute, tol in (("reference", "float64", 1e-12), ("reference", "float32", 1e-5),
                                  ("cpu", "float32", 1e-5)):
        out = run_forward("fused_linear", arrays, attrs, backend=backend, compute=compute)[0]
        np.testing.assert_allclose(out, y, rtol=tol, atol=tol, err_msg=f"{backend} {compute}")


def test_fused_linear_bn_shape_errors():
    def build(shapes, attrs):
        g = _core.Graph()
        ids = [g.add_input(f"in{i}", list(s)) for i, s in enumerate(shapes)]
        g.add_node("fused_linear", ids, attrs, "f")

    build([[2, 3], [4, 3], [4], [4], [4], [4], [4]], {"has_bias": 1, "bn": 1})  # well formed
    with pytest.raises(cn.Error, match=r"op 'fused_linear' \(node 'f'\): expects 6 inputs for its attributes"):
        build([[2, 3], [4, 3], [4]], {"bn": 1})
    with pytest.raises(cn.Error, match=r"batch-norm parameter 2 must be float \[4\]"):
        build([[2, 3], [4, 3], [4], [4], [5], [4]], {"bn": 1})
    with pytest.raises(cn.Error, match=r"has no residual input"):
        build([[2, 3], [4, 3], [2, 4]], {"sum": 1})


def test_fused_infer_run_allocates_nothing():
    net = resnet_stack()
    x = _x((2, 3, 12, 12))
    s = Session(net, x.shape)
    s.run(x)
    before = cn.allocation_count()
    for _ in range(3):
        s.run(x)
    assert cn.allocation_count() == before


def test_profile_names_the_fused_node():
    m = cn.models.lenet5(seed=0)
    s = Session(m, (4, 1, 28, 28))
    s.run(_x((4, 1, 28, 28)))
    rows = {r["name"]: r for r in s.profile()}
    assert rows["conv1"]["op"] == "fused_conv2d" and rows["conv1"]["gflops"] > 0
    assert rows["fc1"]["op"] == "fused_linear"
