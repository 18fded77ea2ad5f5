"""The act op family (ops/activations.cpp): clip, hardsigmoid, hardswish, silu, gelu (erf, tanh), mish, elu,
softplus, erf and prelu. Each op checked four ways (opcheck.check_op: cpu vs numpy, cpu vs reference, reference
float64 backward vs finite differences, cpu backward vs reference) over shapes and attributes; which kernel the cpu
backend picks; blocked layouts; the functional / nn API against torch in eval and through a training step; ONNX
export -> import round trips and imports of torch.onnx.export (TorchScript and dynamo) against onnxruntime; bad
arguments."""
import io
import math
import warnings

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from cnnnative import functional as F
from cnnnative import nn
from cnnnative.graph import current
from opcheck import assert_close, check_op, run_backward, run_forward

OPS = set(_core.op_names())
_erf = np.vectorize(math.erf)


def _x(shape, seed=0, scale=3.0, kinks=()):
    """Random values, kept 0.02 away from the points where an op's derivative jumps (finite differences)."""
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    for k in kinks:
        near = np.abs(x - k) < 0.02
        x[near] += 0.05
    return x.astype(np.float32)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x, beta=1.0, threshold=20.0):
    return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


def _clip_ref(lo, hi):
    def f(x):
        y = x if lo is None else np.maximum(x, lo)
        return [y if hi is None else np.minimum(y, hi)]
    return f


# ---- the ops, checked four ways ----

@pytest.mark.parametrize("lo,hi,shape", [(0.0, 6.0, (2, 3, 4, 5)), (-1.0, 1.0, (7,)), (-0.5, None, (3, 4)),
                                         (None, 0.3, (2, 3, 5)), (1.0, -1.0, (4, 5))])
def test_clip(lo, hi, shape):
    attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    check_op("clip", [_x(shape, kinks=[v for v in (lo, hi) if v is not None])], attrs, numpy_ref=_clip_ref(lo, hi))


@pytest.mark.parametrize("alpha,beta", [(1 / 6, 0.5), (0.2, 0.5), (0.5, 0.1)])
def test_hardsigmoid(alpha, beta):
    x = _x((2, 3, 4, 4), kinks=[-beta / alpha, (1 - beta) / alpha])
    check_op("hardsigmoid", [x], {"alpha": alpha, "beta": beta},
             numpy_ref=lambda x: [np.clip(alpha * x + beta, 0, 1)])


def test_hardswish():
    x = _x((2, 3, 5, 4), kinks=[-3, 3])
    check_op("hardswish", [x], numpy_ref=lambda x: [x * np.clip(x + 3, 0, 6) / 6])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (11,)])
def test_silu(shape):
    check_op("silu", [_x(shape)], numpy_ref=lambda x: [x * _sig(x)])


@pytest.mark.parametrize("approximate", [0, 1])
def test_gelu(approximate):
    def ref(x):
        if approximate:
            return [0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))]
        return [0.5 * x * (1 + _erf(x / math.sqrt(2)))]
    check_op("gelu", [_x((2, 3, 4, 5))], {"approximate": approximate}, numpy_ref=ref)


def test_mish():
    x = _x((2, 3, 4, 5), scale=4.0)
    x.reshape(-1)[:3] = [25.0, -30.0, 0.5]  # beyond softplus' threshold, far negative
    check_op("mish", [x], numpy_ref=lambda x: [x * np.tanh(_softplus(x))])


@pytest.mark.parametrize("alpha", [1.0, 0.3, 2.0])
def test_elu(alpha):
    check_op("elu", [_x((3, 4, 5), kinks=[0])], {"alpha": alpha},
             numpy_ref=lambda x: [np.where(x > 0, x, alpha * np.expm1(x))])


@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (2.0, 1.0), (0.5, 20.0), (1.0, 5.0)])
def test_softplus(beta, threshold):
    x = _x((2, 3, 4, 5), scale=6.0, kinks=[threshold / beta])
    x.reshape(-1)[:2] = [30.0, -40.0]
    check_op("softplus", [x], {"beta": beta, "threshold": threshold},
             numpy_ref=lambda x: [_softplus(x, beta, threshold)])


def test_softplus_keeps_relative_accuracy_far_below_zero():
    """softplus(x) = log1p(exp(x)) ~ exp(x) for x << 0: relative accuracy, not just absolute (mish's ONNX expansion
    multiplies it back up; oneDNN's soft_relu lost 1.3% at x = -10)."""
    x = np.linspace(-30, -5, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    y = run_forward("softplus", [x])[0]
    np.testing.assert_allclose(y, np.log1p(np.exp(x.astype(np.float64))), rtol=1e-5, atol=0)


def test_erf():
    check_op("erf", [_x((3, 4, 5), scale=1.5)], numpy_ref=lambda x: [_erf(x)])


@pytest.mark.parametrize("xshape,c", [((2, 3, 4, 5), 3), ((2, 3, 4, 5), 1), ((4, 6), 6), ((5,), 1),
                                      ((2, 4, 7), 4)])
def test_prelu(xshape, c):
    x = _x(xshape, kinks=[0])
    w = np.random.default_rng(1).uniform(-0.5, 0.5, c).astype(np.float32)

    def ref(x, w):
        wb = w.reshape([1, -1] + [1] * (x.ndim - 2)) if x.ndim >= 2 else w
        return [np.where(x > 0, x, wb * x)]
    check_op("prelu", [x, w], numpy_ref=ref)


ALL = [("clip", {"min": 0.0, "max": 6.0}), ("hardsigmoid", {}), ("hardswish", {}), ("silu", {}),
       ("gelu", {"approximate": 0}), ("gelu", {"approximate": 1}), ("mish", {}), ("elu", {"alpha": 0.7}),
       ("softplus", {}), ("softplus", {"beta": 2.0, "threshold": 3.0}), ("erf", {})]


def _session(op, shape, attrs, mode="grad"):
    g = _core.Graph()
    xi = g.add_input("x", list(shape))
    ins = [xi]
    if op == "prelu":
        ins.append(g.add_input("w", [shape[1]]))
    y = g.add_node(op, ins, attrs, "act")
    g.set_outputs(y)
    if mode == "infer":
        return _core.Session(g, _core.ParamStore([]), "infer", strict=True)
    return _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=ins, strict=True)


@pytest.mark.parametrize("op,attrs", ALL + [("prelu", {})])
def test_cpu_kernels(op, attrs):
    """oneDNN where its formula is the reference's, native loops otherwise; nothing allocated per run."""
    s = _session(op, (2, 3, 4, 4), attrs)
    impls = {k["op"]: k["impl"] for k in s.kernels()}
    native = op in ("erf", "softplus")
    fwd, bwd = impls[op], impls[op + "_grad"]
    if op == "prelu":
        assert fwd.startswith("onednn:prelu") and bwd.startswith("native"), (fwd, bwd)
    elif native:
        assert fwd.startswith("native") and bwd.startswith("native"), (fwd, bwd)
    else:
        assert fwd.startswith("onednn:eltwise") and bwd.startswith("onednn:eltwise"), (fwd, bwd)
    feeds = [_x((2, 3, 4, 4))] + ([np.full(3, 0.2, np.float32)] if op == "prelu" else []) + \
        [np.ones((2, 3, 4, 4), np.float32)]
    s.run(feeds)
    before = _core.allocation_count()
    s.run(feeds)
    assert _core.allocation_count() == before


def test_inplace_forward_keeps_backward_correct():
    """x -> conv-free chain hardswish(x) -> silu: the forward may write over its input; the backward still reads
    the right x (the compiler keeps x alive for *_grad)."""
    x = _x((2, 3, 4, 4), kinks=[-3, 3])
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    a = g.add_node("elu", [xi], {"alpha": 1.0}, "a")
    b = g.add_node("hardswish", a, {}, "b")
    c = g.add_node("silu", b, {}, "c")
    g.set_outputs(c)
    dy = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    got = []
    for backend in ("cpu", "reference"):
        s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=c, wrt=[xi])
        s.run([x, dy])
        got.append(s.fetch(1))
    assert_close(got[0], got[1], 1e-4, 1e-5, "chain gradient")


def test_large_tensors_parallel_paths():
    """Sizes past the native loops' OpenMP threshold, and a prelu_grad with many channels."""
    x = _x((4, 64, 16, 16))
    for op, attrs in (("erf", {}), ("softplus", {"beta": 2.0, "threshold": 3.0})):
        assert_close(run_forward(op, [x], attrs)[0], run_forward(op, [x], attrs, backend="reference")[0], 1e-5,
                     1e-6, op)
    w = np.random.default_rng(2).uniform(-1, 1, 64).astype(np.float32)
    dy = np.random.default_rng(4).standard_normal(x.shape)
    fast = run_backward("prelu", [x, w], {}, [dy], [0, 1])
    ref = run_backward("prelu", [x, w], {}, [dy], [0, 1], backend="reference", compute="float64")
    assert_close(fast[0], ref[0], 1e-5, 1e-6, "dx")
    assert_close(fast[1], ref[1], 1e-4, 1e-4, "dw")


def test_blocked_layouts_match_plain():
    """conv -> activation -> conv compiled with blocked layouts (the oneDNN eltwise ops follow their input's
    layout) equals the plain-layout compile, in inference and in a training step."""
    def build():
        cn.manual_seed(0)
        acts = [nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.GELU(), nn.GELU("tanh"), nn.Mish(),
                nn.ELU(0.5), nn.Softplus(), nn.Softplus(2.0, 4.0), nn.PReLU(16)]
        layers = [nn.Conv2d(3, 16, 3, padding=1)]
        for a in acts:
            layers += [a, nn.Conv2d(16, 16, 1)]
        layers += [nn.Conv2d(16, 5, 1), nn.PReLU(5), nn.Hardswish(), nn.Conv2d(5, 5, 1)]  # C padded in blocks
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(5 * 6 * 6, 5))
    x = _x((2, 3, 6, 6), scale=1.0)
    m = build()
    # optimize=False: the inference fusion (core/fuse.cpp) folds most of these activations into the convolutions
    unfused = m.compile(x.shape, optimize=False)
    blocked = {k["op"] for k in unfused.kernels() if k["in_layouts"][0] == "nChw16c"}
    assert {"clip", "hardswish", "hardsigmoid", "silu", "gelu", "mish", "elu", "prelu"} <= blocked  # softplus: native
    assert_close(unfused.run(x), m.compile(x.shape, layout="plain").run(x), 1e-4, 1e-5, "infer unfused")
    assert_close(m.compile(x.shape).run(x), m.compile(x.shape, layout="plain").run(x), 1e-4, 1e-5, "infer")
    a, b = build(), build()
    sa = a.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05))
    sb = b.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05), layout="plain")
    labels = np.array([1, 3], np.int32)
    for _ in range(2):
        la, lb = sa.step(x, labels), sb.step(x, labels)
        assert abs(la - lb) <= 1e-4 * max(1.0, abs(lb))
    for k, v in b.state_dict().items():
        assert_close(a.state_dict()[k], v, 1e-3, 1e-5, k)


# ---- errors ----

@pytest.mark.parametrize("op,ins,attrs,pattern", [
    ("gelu", [(2, 3)], {"approximate": 2}, r"approximate=2 must be 0 \(erf\) or 1 \(tanh\)"),
    ("softplus", [(2, 3)], {"beta": 0.0}, r"beta must not be 0"),
    ("elu", [(2, 3)], {"alpha": math.inf}, r"alpha=inf must be finite"),
    ("clip", [(2, 3)], {"min": math.nan}, r"min and max must not be NaN"),
    ("hardswish", [(2, 3), (2, 3)], {}, r"expects 1 input, got 2"),
    ("prelu", [(2, 3, 4), (4,)], {}, r"weight \[4\] must be \[1\] or \[3\]"),
    ("prelu", [(2, 3, 4), (3, 1)], {}, r"weight \[3, 1\] must be \[1\] or \[3\]"),
    ("silu_grad", [(2, 3), (3, 2)], {}, r"expects \(dy, x\) float tensors of one shape"),
    ("prelu_grad", [(2, 3), (2, 4), (3,)], {}, r"expects \(dy, x, weight\)"),
])
def test_op_errors_name_node(op, ins, attrs, pattern):
    g = _core.Graph()
    ids = [g.add_input(f"i{k}", list(s)) for k, s in enumerate(ins)]
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'blk.act'\): .*{pattern}"):
        g.add_node(op, ids, attrs, "blk.act")


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("fn,exc,pattern", [
    (lambda x: F.gelu(x, approximate="fast"), ValueError, r"gelu: approximate must be 'none' or 'tanh'"),
    (lambda x: F.hardtanh(x, 2.0, 1.0), ValueError, r"hardtanh: min_val \(2.0\) cannot be greater than max_val"),
    (lambda x: F.clamp(x), ValueError, r"clamp: at least one of 'min' or 'max' must not be None"),
    (lambda x: F.clamp(x, min="a"), TypeError, r"clamp: min must be a number, got str"),
    (lambda x: F.softplus(x, beta=0), ValueError, r"softplus: beta must not be 0"),
    (lambda x: F.elu(x, alpha=math.nan), ValueError, r"elu: alpha must be finite, got nan"),
    (lambda x: F.prelu(x, np.ones(3)), TypeError, r"prelu: weight must be a Tensor, got ndarray"),
    (lambda x: nn.PReLU(5)(x), ValueError, r"\(PReLU\): num_parameters=5 does not match the 3 channels"),
])
def test_functional_errors(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _Fn(fn).compile((2, 3, 4, 4))


def test_module_arguments_and_repr():
    with pytest.raises(ValueError, match="GELU: approximate must be"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="PReLU: num_parameters must be a positive int"):
        nn.PReLU(0)
    with pytest.raises(ValueError, match="Hardtanh: min_val"):
        nn.Hardtanh(1.0, 0.0)
    assert repr(nn.ReLU6()) == "ReLU6()" and repr(nn.SiLU(inplace=True)) == "SiLU(inplace=True)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.ELU(0.5)) == "ELU(alpha=0.5)" and repr(nn.Softplus(2, 10)) == "Softplus(beta=2, threshold=10)"
    assert repr(nn.Hardtanh(-2.0, 2.0)) == "Hardtanh(min_val=-2.0, max_val=2.0)"
    p = nn.PReLU(4, init=0.1)
    assert repr(p) == "PReLU(num_parameters=4)"
    assert p.state_dict()["weight"].shape == (4,) and np.allclose(p.state_dict()["weight"], 0.1)


# ---- the API against torch ----

def _pairs(torch):
    T = torch.nn
    return {
        "relu6": (nn.ReLU6(), T.ReLU6()),
        "hardtanh": (nn.Hardtanh(-0.5, 1.5), T.Hardtanh(-0.5, 1.5)),
        "clamp": (_Fn(lambda x: x.clamp(min=-0.3)), lambda t: t.clamp(min=-0.3)),
        "clip_max": (_Fn(lambda x: F.clip(x, max=0.7)), lambda t: torch.clip(t, max=0.7)),
        "hardsigmoid": (nn.Hardsigmoid(), T.Hardsigmoid()),
        "hardswish": (nn.Hardswish(), T.Hardswish()),
        "silu": (nn.SiLU(), T.SiLU()),
        "gelu": (nn.GELU(), T.GELU()),
        "gelu_tanh": (nn.GELU("tanh"), T.GELU("tanh")),
        "mish": (nn.Mish(), T.Mish()),
        "elu": (nn.ELU(0.6), T.ELU(0.6)),
        "softplus": (nn.Softplus(), T.Softplus()),
        "softplus_beta": (nn.Softplus(1.5, 2.0), T.Softplus(1.5, 2.0)),
        "erf": (_Fn(F.erf), torch.erf),
    }


@pytest.mark.parametrize("name", ["relu6", "hardtanh", "clamp", "clip_max", "hardsigmoid", "hardswish", "silu",
                                  "gelu", "gelu_tanh", "mish", "elu", "softplus", "softplus_beta", "erf"])
def test_against_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = _pairs(torch)[name]
    x = _x((2, 3, 5, 4), seed=7, kinks=[-3, 3, 0, -0.5, 1.5, -0.3, 0.7, 6])
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    s = ours.compile(x.shape)
    assert_close(s.run(x), ty.detach().numpy(), 1e-5, 1e-6, name)
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    # the gradient through the node the module emitted (the graph's only node)
    node_op, attrs = _emitted(ours, x.shape)
    dx = run_backward(node_op, [x], attrs, [dy], [0])[0]
    assert_close(dx, tx.grad.numpy(), 1e-5, 1e-6, f"{name} gradient")


def _emitted(module, shape):
    """(op, attrs) of the single node `module` emits (recorded while it is traced)."""
    captured = {}

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = module

        def forward(self, x):
            b = current()
            orig = b.op

            def op(o, inputs, attrs=None, name=None):
                captured["op"], captured["attrs"] = o, dict(attrs or {})
                return orig(o, inputs, attrs, name)
            b.op = op
            try:
                return self.m(x)
            finally:
                del b.op
    Spy().compile(shape)
    return captured["op"], captured["attrs"]


def _torch_copy(torch, ours, theirs):
    sd = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd)


@pytest.mark.parametrize("act", ["relu6", "hardswish", "hardsigmoid", "silu", "gelu", "mish", "elu", "softplus",
                                 "prelu_c", "prelu_1"])
def test_training_step_against_torch(act):
    """Conv -> activation -> Linear, one SGD step (cross entropy): loss and every weight as torch's, PReLU's
    weight included."""
    torch = pytest.importorskip("torch")
    T = torch.nn
    mk = {"relu6": (nn.ReLU6, T.ReLU6), "hardswish": (nn.Hardswish, T.Hardswish),
          "hardsigmoid": (nn.Hardsigmoid, T.Hardsigmoid), "silu": (nn.SiLU, T.SiLU), "gelu": (nn.GELU, T.GELU),
          "mish": (nn.Mish, T.Mish), "elu": (nn.ELU, T.ELU), "softplus": (nn.Softplus, T.Softplus),
          "prelu_c": (lambda: nn.PReLU(4), lambda: T.PReLU(4)), "prelu_1": (nn.PReLU, T.PReLU)}[act]
    ours = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), mk[0](), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    theirs = T.Sequential(T.Conv2d(3, 4, 3, padding=1), mk[1](), T.Flatten(), T.Linear(4 * 5 * 5, 3))
    _torch_copy(torch, ours, theirs)
    x = _x((2, 3, 5, 5), seed=3, scale=1.0)
    labels = np.array([0, 2], np.int32)
    s = ours.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.5))
    loss = s.step(x, labels)
    opt = torch.optim.SGD(theirs.parameters(), lr=0.5)
    tl = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(labels).long())
    tl.backward()
    opt.step()
    assert abs(loss - tl.item()) <= 1e-5 * max(1.0, abs(tl.item()))
    tsd = theirs.state_dict()
    for k, v in ours.state_dict().items():
        assert_close(v, tsd[k].detach().numpy(), 1e-4, 1e-6, k)


def test_prelu_module_learns_its_weight():
    """The PReLU weight is a parameter: it changes in training and round-trips through state_dict."""
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.PReLU(3, init=0.3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    before = np.array(m.state_dict()["1.weight"])
    s = m.compile((4, 2, 4, 4), mode="train", optimizer=cn.optim.SGD(lr=0.5))
    s.step(_x((4, 2, 4, 4), seed=5), np.array([0, 1, 0, 1], np.int32))
    after = np.array(m.state_dict()["1.weight"])
    assert not np.allclose(before, after)
    m2 = nn.Sequential(nn.Conv2d(2, 3, 1), nn.PReLU(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    m2.load_state_dict(m.state_dict())
    x = _x((1, 2, 4, 4))
    assert_close(m2.compile(x.shape).run(x), m.compile(x.shape).run(x), 0, 0, "reloaded")


# ---- ONNX ----

def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _ort(data, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _needs_mul_of_tensors():
    """silu, gelu and mish export (opset 17) as products of two activations: the binary family's Mul."""
    pytest.importorskip("onnx")
    import cnnnative.onnx as cno
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])])
    try:
        cno.import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    except cno.UnsupportedError:
        pytest.skip("Mul of two computed tensors is not importable in this build (the binary op family)")


class _Net(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act

    def forward(self, x):
        return self.act(self.conv(x))


ROUND = {
    "relu6": lambda: nn.ReLU6(), "hardtanh": lambda: nn.Hardtanh(-0.5, 0.5),
    "clamp_min": lambda: _Fn(lambda x: x.clamp(min=-0.2)), "clamp_max": lambda: _Fn(lambda x: x.clamp(max=0.4)),
    "hardsigmoid": lambda: nn.Hardsigmoid(), "hardswish": lambda: nn.Hardswish(), "elu": lambda: nn.ELU(0.7),
    "softplus": lambda: nn.Softplus(), "softplus_beta": lambda: nn.Softplus(2.0, 40.0), "erf": lambda: _Fn(F.erf),
    "prelu_c": lambda: nn.PReLU(4, 0.1), "prelu_1": lambda: nn.PReLU(),
    "silu": lambda: nn.SiLU(), "gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU("tanh"),
    "mish": lambda: nn.Mish(),
}
_PRODUCTS = {"silu", "gelu", "gelu_tanh", "mish", "softplus_beta"}


@pytest.mark.parametrize("name", list(ROUND))
def test_onnx_round_trip(name):
    """export (opset 17) -> onnxruntime and -> import, both equal to the cnnnative model."""
    onnx = pytest.importorskip("onnx")
    import cnnnative.onnx as cno
    if name in _PRODUCTS and name != "softplus_beta":
        _needs_mul_of_tensors()
    cn.manual_seed(1)
    m = _Net(ROUND[name]())
    if name == "prelu_c":
        m.act.load_state_dict({"weight": np.array([0.1, -0.2, 0.3, 0.05], np.float32)})
    x = _x((2, 3, 5, 5), seed=2, scale=1.0)
    proto = cno.export_model(m, None, x.shape)
    onnx.checker.check_model(proto, full_check=True)
    ref = m.compile(x.shape).run(x)
    assert _rel(_ort(proto.SerializeToString(), x), ref) < 1e-5, "onnxruntime"
    try:
        back = cno.import_model(proto)
    except cno.UnsupportedError as e:
        if name == "prelu_c" and "slope" in str(e):
            pytest.xfail("a per-channel PRelu slope needs the importer to hold it as a weight (_assign_params)")
        raise
    assert _rel(back.compile(x.shape).run(x), ref) < 1e-5, "imported"


def _torch_export(torch, model, x, dynamo):
    f = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            prog = torch.onnx.export(model, (torch.from_numpy(x),), dynamo=True, verbose=False)
            return prog.model_proto.SerializeToString()
        torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])
    return f.getvalue()


TORCH_ACTS = ["relu6", "hardtanh", "hardsigmoid", "hardswish", "elu", "softplus", "prelu_c", "prelu_1", "silu",
              "gelu", "gelu_tanh", "mish"]


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", TORCH_ACTS)
def test_import_torch_export(name, dynamo, fused_patterns):
    """torch.onnx.export of Conv -> activation, imported (GELU's Erf spelling and the thresholded softplus fused
    by _ops_act.fuse_patterns), equal to onnxruntime on the same file."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import cnnnative.onnx as cno
    T = torch.nn
    act = {"relu6": T.ReLU6(), "hardtanh": T.Hardtanh(-0.5, 0.5), "hardsigmoid": T.Hardsigmoid(),
           "hardswish": T.Hardswish(), "elu": T.ELU(0.7), "softplus": T.Softplus(), "prelu_c": T.PReLU(4, 0.1),
           "prelu_1": T.PReLU(), "silu": T.SiLU(), "gelu": T.GELU(), "gelu_tanh": T.GELU("tanh"),
           "mish": T.Mish()}[name]
    torch.manual_seed(0)
    if name == "prelu_c":
        with torch.no_grad():
            act.weight.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
    model = T.Sequential(T.Conv2d(3, 4, 3, padding=1), act)
    x = _x((2, 3, 5, 5), seed=4, scale=1.0)
    data = _torch_export(torch, model, x, dynamo)
    try:
        mod = cno.import_model(data)
    except cno.UnsupportedError as e:
        if "Mul" in str(e) or "Pow" in str(e):
            pytest.skip(f"needs another op family: {str(e)[:200]}")
        if name == "prelu_c" and "slope" in str(e):
            pytest.xfail("a per-channel PRelu slope needs the importer to hold it as a weight (_assign_params)")
        raise
    ref = _ort(data, x)
    assert _rel(mod.compile(x.shape).run(x), ref) <= 1e-4


@pytest.fixture
def fused_patterns(monkeypatch):
    """Import with _ops_act.fuse_patterns run before the rewrites (the importer's hook for it, see the report:
    `_ops_act.fuse_patterns(self)` before `_rewrite.canonicalize(self)` in Program.__init__)."""
    pytest.importorskip("onnx")
    from cnnnative.onnx import _ops_act, _rewrite
    if getattr(_rewrite.canonicalize, "_fuses_act", False):
        return
    orig = _rewrite.canonicalize

    def canonicalize(prog):
        _ops_act.fuse_patterns(prog)
        orig(prog)
    canonicalize._fuses_act = True
    monkeypatch.setattr(_rewrite, "canonicalize", canonicalize)


@pytest.mark.parametrize("case", ["gelu_ts", "gelu_half_first", "gelu_mul_rsqrt2", "softplus_where",
                                  "softplus_where_beta", "shared_intermediate"])
def test_fuse_patterns(case, fused_patterns):
    """The GELU-by-Erf and thresholded-softplus spellings become one gelu / softplus node, computing what
    onnxruntime computes; a pattern whose intermediate has another reader is left alone."""
    import cnnnative.onnx as cno
    from onnx import TensorProto, helper, numpy_helper
    c = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    nodes, inits = [], [c("sqrt2", math.sqrt(2)), c("rsqrt2", 1 / math.sqrt(2)), c("one", 1.0), c("half", 0.5),
                        c("thr", 20.0), c("beta", 1.5), c("thr_b", 2.0)]
    N = helper.make_node
    expect = None
    if case.startswith("gelu"):
        first = N("Mul", ["rsqrt2", "x"], ["a"]) if case == "gelu_mul_rsqrt2" else N("Div", ["x", "sqrt2"], ["a"])
        nodes = [first, N("Erf", ["a"], ["e"]), N("Add", ["one", "e"], ["p"])]
        if case == "gelu_half_first":
            nodes += [N("Mul", ["x", "half"], ["h"]), N("Mul", ["h", "p"], ["y"])]
        else:
            nodes += [N("Mul", ["x", "p"], ["m"]), N("Mul", ["m", "half"], ["y"])]
        expect = "gelu"
    elif case == "softplus_where":
        nodes = [N("Softplus", ["x"], ["s"]), N("Greater", ["x", "thr"], ["g"]), N("Where", ["g", "x", "s"], ["y"])]
        expect = "softplus"
    elif case == "softplus_where_beta":
        nodes = [N("Mul", ["x", "beta"], ["bx"]), N("Softplus", ["bx"], ["s"]), N("Div", ["s", "beta"], ["sp"]),
                 N("Greater", ["bx", "thr_b"], ["g"]), N("Where", ["g", "x", "sp"], ["y"])]
        expect = "softplus"
    else:  # the Erf output is also an output of the graph: no fusion (Mul of two tensors then decides)
        nodes = [N("Div", ["x", "sqrt2"], ["a"]), N("Erf", ["a"], ["e"]), N("Add", ["e", "one"], ["p"]),
                 N("Mul", ["x", "p"], ["m"]), N("Mul", ["m", "half"], ["y"])]
    shape = [2, 3, 4, 4]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if case == "shared_intermediate":
        outs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, shape))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outs, inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    x = _x(tuple(shape), seed=6, scale=3.0)
    x.reshape(-1)[:2] = [1.5, 30.0]  # at softplus' threshold with beta, far above it
    if expect is None:  # the intermediate e is also an output: nothing fused, both outputs as onnxruntime's
        from cnnnative.onnx import backend
        mod = cno.import_model(proto)
        assert "Gelu" not in [n.op for n in mod._program.nodes]
        got = backend.prepare(proto).run([x])
        import onnxruntime as ort
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for a, b in zip(got, want):
            assert _rel(np.asarray(a), b) < 1e-5
        return
    mod = cno.import_model(proto)
    ops = [k["op"] for k in mod.compile(x.shape, layout="plain").kernels()]
    assert ops == [expect], ops
    assert _rel(mod.compile(x.shape).run(x), _ort(proto.SerializeToString(), x)) < 1e-5
