"""The shape op family: transpose, slice (+ slice_grad), pad_nd (+ pad_nd_grad) and matmul checked with
check_op (numpy forward, cpu vs reference kernels, float64 finite differences of the reference backward, cpu
backward vs reference) over ranks, steps, modes and broadcast batch shapes; the cpu kernels against the
reference on sizes that take the threaded paths; the functional API (permute, transpose, indexing with steps,
narrow, chunk, split, channel_shuffle, pad in reflect/replicate mode, matmul with 1-D operands) and the nn
modules against torch, forward and through one SGD training step; ONNX: export -> import -> compare
(cnnnative and onnxruntime), import of torch.onnx.export (TorchScript and dynamo) of a module using every op,
the ONNX forms of Split (attribute, input, num_outputs) and Slice (negative steps and indices); errors."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from cnnnative import nn
from cnnnative.nn import functional as F
from opcheck import assert_close, check_op, run_backward, run_forward


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- check_op ----

@pytest.mark.parametrize("shape,perm", [((3, 4), [1, 0]), ((2, 3, 4), [2, 0, 1]), ((2, 3, 4, 5), [0, 2, 3, 1]),
                                        ((2, 1, 3, 2, 2), [4, 3, 0, 2, 1]), ((1, 2, 1, 2, 3, 2), [5, 1, 3, 0, 4, 2])])
def test_transpose(shape, perm):
    check_op("transpose", [_x(*shape)], {"perm": perm}, numpy_ref=lambda x: [np.transpose(x, perm)])


def _slice_np(x, starts, steps, sizes):
    idx = []
    for st, sp, sz in zip(starts, steps, sizes):
        stop = st + sz * sp
        idx.append(slice(st, stop if stop >= 0 else None, sp))
    return x[tuple(idx)]


@pytest.mark.parametrize("shape,starts,steps,sizes", [
    ((7,), [1], [2], [3]),
    ((2, 6, 5), [0, 1, 0], [1, 2, 1], [2, 3, 5]),
    ((2, 3, 6, 7), [1, 0, 5, 1], [1, 1, -2, 3], [1, 3, 3, 2]),  # a negative step
    ((3, 4, 5), [2, 3, 4], [-1, -1, -1], [3, 4, 5]),             # a full flip
])
def test_slice(shape, starts, steps, sizes):
    attrs = {"starts": starts, "steps": steps, "sizes": sizes}
    check_op("slice", [_x(*shape)], attrs, numpy_ref=lambda x: [_slice_np(x, starts, steps, sizes)])


_NP_MODE = {0: "constant", 1: "reflect", 2: "edge"}


def _pad_np(x, pads, mode, value=0.0):
    r = x.ndim
    width = [(pads[d], pads[r + d]) for d in range(r)]
    if mode == 0:
        return np.pad(x, width, constant_values=value)
    return np.pad(x, width, mode=_NP_MODE[mode])


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("shape,pads", [((5,), [2, 3]), ((2, 3, 4), [0, 1, 2, 0, 2, 3]),
                                        ((1, 2, 4, 5), [0, 0, 3, 1, 0, 0, 2, 4]),
                                        ((1, 2, 3, 3, 4), [0, 0, 1, 2, 0, 0, 1, 2, 0, 3])])
def test_pad_nd(mode, shape, pads):
    value = 0.75 if mode == 0 else 0.0
    attrs = {"pads": pads, "mode": mode, "value": value}
    check_op("pad_nd", [_x(*shape)], attrs, numpy_ref=lambda x: [_pad_np(x, pads, mode, value)])


def _mm_np(a, b, ta=0, tb=0, sum_to=None):
    if ta:
        a = np.swapaxes(a, -1, -2)
    if tb:
        b = np.swapaxes(b, -1, -2)
    y = np.matmul(a, b)
    if sum_to and y.ndim < len(sum_to):
        y = y.reshape((1,) * (len(sum_to) - y.ndim) + y.shape)
    if sum_to:
        extra = y.ndim - len(sum_to)
        y = y.sum(axis=tuple(range(extra)))
        axes = tuple(d for d in range(y.ndim - 2) if sum_to[d] == 1 and y.shape[d] != 1)
        y = np.broadcast_to(y.sum(axis=axes, keepdims=True), sum_to)  # and repeated where the product has 1
    return y


@pytest.mark.parametrize("sa,sb,ta,tb", [
    ((3, 4), (4, 5), 0, 0), ((2, 3, 4), (2, 4, 5), 0, 0), ((2, 1, 3, 4), (5, 4, 2), 0, 0),
    ((3, 4), (2, 4, 5), 0, 0), ((2, 4, 3), (2, 4, 5), 1, 0), ((2, 3, 4), (1, 5, 4), 0, 1),
    ((1, 4, 3), (3, 5, 4), 1, 1), ((2, 2, 1, 2, 3, 2), (2, 1, 2, 2, 3), 0, 0),
])
def test_matmul(sa, sb, ta, tb):
    a, b = _x(*sa, seed=1), _x(*sb, seed=2)
    check_op("matmul", [a, b], {"trans_a": ta, "trans_b": tb}, numpy_ref=lambda a, b: [_mm_np(a, b, ta, tb)])


@pytest.mark.parametrize("sa,sb,sum_to", [((2, 3, 4), (2, 4, 5), [3, 5]), ((4, 1, 3, 4), (2, 4, 5), [1, 2, 3, 5]),
                                          ((2, 3, 3, 4), (3, 4, 2), [1, 3, 3, 2]), ((1, 3, 4), (4, 5), [2, 3, 5]),
                                          ((3, 4), (2, 4, 5), [3, 1, 3, 5])])
def test_matmul_sum_to(sa, sb, sum_to):
    """The reduced form the backward of a broadcast operand uses, checked on its own."""
    a, b = _x(*sa, seed=3), _x(*sb, seed=4)
    check_op("matmul", [a, b], {"sum_to": sum_to}, numpy_ref=lambda a, b: [_mm_np(a, b, sum_to=sum_to)])


# ---- the cpu kernels on the threaded paths, against the reference ----

@pytest.mark.parametrize("op,shape,attrs", [
    ("transpose", (4, 33, 17, 29), {"perm": [0, 3, 1, 2]}),
    ("slice", (4, 33, 40, 29), {"starts": [0, 1, 39, 0], "steps": [1, 2, -3, 1], "sizes": [4, 16, 13, 29]}),
    ("pad_nd", (3, 16, 30, 31), {"pads": [0, 0, 5, 7, 0, 0, 6, 9], "mode": 1}),
    ("pad_nd", (3, 16, 30, 31), {"pads": [0, 2, 5, 7, 0, 1, 6, 9], "mode": 2}),
    ("pad_nd", (3, 16, 30, 31), {"pads": [1, 0, 5, 7, 0, 1, 6, 9], "mode": 0, "value": -2.0}),
])
def test_cpu_against_reference_large(op, shape, attrs):
    """Data movement: values and gradients bit for bit (the gradients sum in the reference's order)."""
    x = _x(*shape, seed=5)
    y = run_forward(op, [x], attrs)[0]
    assert (y == run_forward(op, [x], attrs, backend="reference")[0]).all()
    dy = _x(*y.shape, seed=6)
    dx = run_backward(op, [x], attrs, [dy], [0])[0]
    assert (dx == run_backward(op, [x], attrs, [dy], [0], backend="reference")[0]).all()


@pytest.mark.parametrize("sa,sb,ta,tb", [((8, 64, 48), (8, 48, 80), 0, 0), ((4, 1, 40, 64), (3, 40, 50), 1, 0),
                                         ((2, 50, 70), (90, 70), 0, 1)])
def test_cpu_matmul_large(sa, sb, ta, tb):
    a, b = _x(*sa, seed=7), _x(*sb, seed=8)
    attrs = {"trans_a": ta, "trans_b": tb}
    y = run_forward("matmul", [a, b], attrs)[0]
    assert_close(y, _mm_np(a.astype(np.float64), b.astype(np.float64), ta, tb), 1e-4, 1e-4, "matmul vs numpy")
    dy = _x(*y.shape, seed=9)
    fast = run_backward("matmul", [a, b], attrs, [dy], [0, 1])
    ref = run_backward("matmul", [a, b], attrs, [dy], [0, 1], backend="reference", compute="float64")
    for f, r in zip(fast, ref):
        assert_close(f, r, 1e-4, 1e-3, "matmul backward vs reference")


def test_kernels_are_fast_and_strict():
    """strict=True: no node of the family (forward or backward) runs a reference kernel on the cpu."""
    g = _core.Graph()
    xi = g.add_input("x", [2, 3, 4, 5])
    t = g.add_node("transpose", [xi], {"perm": [0, 2, 1, 3]}, "t")[0]
    s = g.add_node("slice", [t], {"starts": [0, 0, 0, 0], "steps": [1, 2, 1, 1], "sizes": [2, 2, 3, 5]}, "s")[0]
    p = g.add_node("pad_nd", [s], {"pads": [0, 0, 1, 2, 0, 0, 1, 2], "mode": 1}, "p")[0]
    f = g.add_node("reshape", [p], {"shape": [2, 10, 9]}, "f")[0]
    m = g.add_node("matmul", [f, f], {"trans_a": 1}, "mm")
    g.set_outputs(m)
    sess = _core.Session(g, _core.ParamStore([]), "grad", grad_of=m, wrt=[xi], strict=True)
    impls = {}
    for k in sess.kernels():
        impls.setdefault(k["op"], set()).add(k["impl"])
    assert all(i.startswith("onednn:matmul") for i in impls["matmul"]), impls
    for op in ("transpose", "slice", "slice_grad", "pad_nd", "pad_nd_grad"):
        assert impls[op] == {"native"}, impls


@pytest.mark.parametrize("op,shapes,attrs,pattern", [
    ("transpose", [(2, 3)], {"perm": [0, 0]}, r"'perm' \[0, 0\] must be a permutation"),
    ("transpose", [(1, 1, 1, 1, 1, 1, 1)], {"perm": list(range(7))}, r"rank 1 to 6"),
    ("slice", [(4, 5)], {"starts": [0, 4], "steps": [1, 1], "sizes": [4, 2]}, r"axis 1 of x \[4, 5\]"),
    ("slice", [(4, 5)], {"starts": [0], "steps": [1], "sizes": [4]}, r"one value per axis"),
    ("pad_nd", [(2, 3)], {"pads": [0, 3, 0, 1], "mode": 1}, r"reflect padding of axis 1 by \(3, 1\) must be less"),
    ("pad_nd", [(2, 3)], {"pads": [0, 1], "mode": 0}, r"must hold 4 values"),
    ("pad_nd", [(2, 3)], {"pads": [0, 1, 0, 1], "mode": 5}, r"'mode' must be 0 \(constant\)"),
    ("matmul", [(2, 3), (4, 5)], {}, r"inner dimensions differ"),
    ("matmul", [(2, 3, 4), (3, 4, 5)], {}, r"do not broadcast"),
    ("matmul", [(3,), (3, 2)], {}, r"rank >= 2"),
])
def test_errors_name_node(op, shapes, attrs, pattern):
    g = _core.Graph()
    ins = [g.add_input(f"i{k}", list(s)) for k, s in enumerate(shapes)]
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'bad'\): .*{pattern}"):
        g.add_node(op, ins, attrs, "bad")


# ---- functional / nn against torch ----

class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


FN_CASES = {  # name: (input shape, cnnnative fn, torch fn)
    "permute": ((2, 3, 4, 5), lambda x: x.permute(0, 2, 3, 1), lambda t: t.permute(0, 2, 3, 1)),
    "transpose": ((2, 3, 4), lambda x: x.transpose(-1, 1), lambda t: t.transpose(-1, 1)),
    "F_permute": ((2, 3, 4), lambda x: F.permute(x, (2, 0, 1)), lambda t: t.permute(2, 0, 1)),
    "index_steps": ((2, 6, 7, 5), lambda x: x[:, ::2, 1::3, -3:], lambda t: t[:, ::2, 1::3, -3:]),
    "index_int": ((2, 6, 7), lambda x: x[1, ..., None, 2:], lambda t: t[1, ..., None, 2:]),
    "narrow": ((2, 6, 7), lambda x: x.narrow(2, -4, 3), lambda t: t.narrow(2, -4, 3)),
    "chunk": ((2, 7, 3), lambda x: F.cat(list(x.chunk(3, 1))[::-1], 1),
              lambda t: __import__("torch").cat(list(t.chunk(3, 1))[::-1], 1)),
    "split": ((2, 3, 9), lambda x: F.cat(list(x.split([2, 3, 4], -1))[::-1], -1),
              lambda t: __import__("torch").cat(list(t.split([2, 3, 4], -1))[::-1], -1)),
    "shuffle": ((2, 6, 3, 2), lambda x: F.channel_shuffle(x, 3),
                lambda t: __import__("torch").nn.functional.channel_shuffle(t, 3)),
    "reflect": ((2, 3, 5, 6), lambda x: F.pad_nd(x, (2, 1, 3, 4), mode="reflect"),
                lambda t: __import__("torch").nn.functional.pad(t, (2, 1, 3, 4), mode="reflect")),
    "replicate1d": ((2, 3, 5), lambda x: F.pad_nd(x, (4, 1), mode="replicate"),
                    lambda t: __import__("torch").nn.functional.pad(t, (4, 1), mode="replicate")),
    "constant_nd": ((2, 3, 5), lambda x: F.pad_nd(x, (1, -2, 0, 0, 1, 0), value=0.5),
                    lambda t: __import__("torch").nn.functional.pad(t, (1, -2, 0, 0, 1, 0), value=0.5)),
    "matmul_self": ((2, 3, 4), lambda x: x @ x.transpose(1, 2), lambda t: t @ t.transpose(1, 2)),
    "matmul_1d": ((2, 3, 4), lambda x: F.matmul(x, x[0, 0]), lambda t: t @ t[0, 0]),
    "matmul_1d_left": ((3, 4), lambda x: F.matmul(x[0], x.t()), lambda t: t[0] @ t.t()),
    "matmul_bcast": ((2, 3, 4), lambda x: F.matmul(x[:, None], x.permute(0, 2, 1)[:1]),
                     lambda t: t[:, None] @ t.permute(0, 2, 1)[:1]),
}


@pytest.mark.parametrize("case", list(FN_CASES))
def test_functional_against_torch(case):
    torch = pytest.importorskip("torch")
    shape, ours, theirs = FN_CASES[case]
    x = _x(*shape, seed=11)
    tx = torch.tensor(x)
    ref = theirs(tx).numpy()
    y = _Fn(ours).compile(x.shape).run(x)
    assert y.shape == ref.shape
    assert_close(y, ref, 1e-5, 1e-6, case)


@pytest.mark.parametrize("make", ["shuffle", "reflect2d", "replicate3d", "reflect1d", "permute"])
def test_modules_against_torch(make):
    torch = pytest.importorskip("torch")
    ours, theirs, shape = {
        "shuffle": (nn.ChannelShuffle(2), torch.nn.ChannelShuffle(2), (2, 4, 3, 3)),
        "reflect2d": (nn.ReflectionPad2d((1, 2, 0, 3)), torch.nn.ReflectionPad2d((1, 2, 0, 3)), (2, 3, 4, 5)),
        "replicate3d": (nn.ReplicationPad3d(1), torch.nn.ReplicationPad3d(1), (1, 2, 2, 3, 2)),
        "reflect1d": (nn.ReflectionPad1d(2), torch.nn.ReflectionPad1d(2), (2, 5)),
        "permute": (nn.Permute([0, 2, 3, 1]), lambda t: t.permute(0, 2, 3, 1), (2, 3, 4, 5)),
    }[make]
    x = _x(*shape, seed=12)
    y = ours.compile(x.shape).run(x)
    assert (y == theirs(torch.tensor(x)).numpy()).all()
    assert repr(ours)


class _Net(nn.Module):
    """Every op of the family on a trained path: conv -> shuffle -> reflect pad -> replicate pad -> chunk ->
    strided slices -> permute -> attention-style matmuls -> a linear head (z [N, 20, 4] flattened to 80)."""

    def __init__(self, torch_mod=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.shuffle = nn.ChannelShuffle(2)
        self.pad = nn.ReflectionPad2d((1, 1, 2, 0))
        self.fc = nn.Linear(80, 3)

    def forward(self, x):
        y = self.shuffle(self.conv(x))
        y = F.pad_nd(self.pad(y), (1, 0, 0, 1), mode="replicate")
        a, b = y.chunk(2, 1)                         # [N, 4, H', W'] each
        q = a[:, :, ::2, 1::2].flatten(2)            # [N, 4, L]
        k = b[:, :, 1::2, ::2].flatten(2)
        att = q.transpose(1, 2) @ k                  # [N, L, L], two activations
        z = att @ k.permute(0, 2, 1)                 # [N, L, 4]
        return self.fc(z.flatten(1))


def _torch_net(torch, ours):
    tnn, tF = torch.nn, torch.nn.functional

    class T(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(3, 8, 1)
            self.fc = tnn.Linear(80, 3)

        def forward(self, x):
            y = self.conv(x)  # channel shuffle as torchvision's ShuffleNetV2 writes it
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            y = tF.pad(tF.pad(y, (1, 1, 2, 0), mode="reflect"), (1, 0, 0, 1), mode="replicate")
            a, b = y.chunk(2, 1)
            q = a[:, :, ::2, 1::2].flatten(2)
            k = b[:, :, 1::2, ::2].flatten(2)
            att = q.transpose(1, 2) @ k
            z = att @ k.permute(0, 2, 1)
            return self.fc(z.flatten(1))

    t = T()
    with torch.no_grad():
        for name, p in t.named_parameters():
            p.copy_(torch.tensor(ours.state_dict()[name]))
    return t


def test_training_step_against_torch():
    torch = pytest.importorskip("torch")
    net = _Net()
    tnet = _torch_net(torch, net)
    x = _x(2, 3, 6, 5, seed=13)
    y = net.compile(x.shape).run(x)
    tx = torch.tensor(x)
    assert_close(y, tnet(tx).detach().numpy(), 1e-4, 1e-5, "eval")
    target = _x(*y.shape, seed=14)
    sess = net.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05), loss="mse")
    loss = sess.step(x, target)
    opt = torch.optim.SGD(tnet.parameters(), lr=0.05)
    tl = torch.nn.functional.mse_loss(tnet(tx), torch.tensor(target))
    tl.backward()
    opt.step()
    assert abs(loss - tl.item()) <= 1e-4 * abs(tl.item()) + 1e-6
    sd = net.state_dict()
    for name, p in tnet.named_parameters():
        assert_close(sd[name], p.detach().numpy(), 1e-4, 1e-5, f"{name} after one step")


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda x: x.permute(0, 1), ValueError, r"permute: dims \(0, 1\) must name each of the 4 dims"),
    (lambda x: x.transpose(0, 4), IndexError, r"transpose: dim1 4 out of range"),
    (lambda x: x[:, ::-1], ValueError, r"step must be greater than zero"),
    (lambda x: x[:, 5:], IndexError, r"selects nothing"),
    (lambda x: x[0, 0, 0, 0, 0], IndexError, r"too many indices"),
    (lambda x: x.chunk(0, 1), ValueError, r"chunks must be an int >= 1"),
    (lambda x: x.split([1, 1], 1), ValueError, r"sections \[1, 1\] must be >= 1 and sum to 3"),
    (lambda x: F.channel_shuffle(x, 2), ValueError, r"groups must be an int >= 1 dividing the 3 channels"),
    (lambda x: F.pad_nd(x, (5, 0), mode="reflect"), ValueError, r"reflect padding \(5, 0\) of dim 3"),
    (lambda x: F.pad_nd(x, (1, 1), mode="circular"), ValueError, r"'circular' is not supported"),
    (lambda x: F.pad_nd(x, (1, 1, 1)), ValueError, r"pairs"),
    (lambda x: x @ x, ValueError, r"inner dimensions differ"),
])
def test_functional_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _Fn(call).compile((2, 3, 4, 5))


# ---- ONNX ----

onnx = pytest.importorskip("onnx")  # noqa: E402


def _ort(proto, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def test_onnx_roundtrip():
    import cnnnative.onnx as cno
    net = _Net()
    x = _x(2, 3, 6, 5, seed=15)
    proto = cno.export_model(net, None, x.shape)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Transpose", "Slice", "Pad", "MatMul", "Split"} <= ops, ops
    ref = net.compile(x.shape).run(x)
    back = cno.import_model(proto)
    assert _rel(back.compile(x.shape).run(x), ref) < 1e-6
    assert _rel(_ort(proto, x), ref) < 1e-4


def test_onnx_export_negative_step_slice():
    """A backward slice down to index 0 exports with an end before the axis (ONNX's clamping)."""
    import cnnnative.onnx as cno
    from cnnnative import _fn_shape
    m = _Fn(lambda x: _fn_shape._slice(F.pad_nd(x, (2, 2), mode="replicate"), [0, 2, 3, 8], [1, -1, -3, -2],
                                        [1, 3, 2, 5]).permute(0, 3, 1, 2))
    x = _x(1, 3, 4, 5, seed=16)
    proto = cno.export_model(m, None, x.shape)
    assert {"Pad", "Slice", "Transpose"} <= {n.op_type for n in proto.graph.node}
    assert (_ort(proto, x) == m.compile(x.shape).run(x)).all()


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_import_torch_export(dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    import cnnnative.onnx as cno
    tnet = _torch_net(torch, _Net()).eval()
    x = _x(2, 3, 6, 5, seed=17)
    path = tmp_path / "m.onnx"
    torch.onnx.export(tnet, (torch.tensor(x),), str(path), dynamo=dynamo, opset_version=18 if dynamo else 17)
    proto = onnx.load(str(path))
    ours = cno.import_model(proto).compile(x.shape).run(x)
    assert _rel(ours, _ort(proto, x)) < 1e-4


def _model(nodes, inputs, outputs, inits=(), opset=17):
    h = onnx.helper
    tp = onnx.TensorProto.FLOAT
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, tp, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, tp, None) for n in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _i64(name, v):
    return onnx.numpy_helper.from_array(np.array(v, np.int64), name)


@pytest.mark.parametrize("form", ["attr11", "input13", "equal13", "num_outputs18"])
def test_import_split_forms(form):
    import cnnnative.onnx as cno
    h = onnx.helper
    opset = {"attr11": 11, "input13": 13, "equal13": 13, "num_outputs18": 18}[form]
    inits, ins, kw = [], ["x"], {}
    if form == "attr11":
        kw["split"] = [1, 4]
    elif form == "input13":
        inits.append(_i64("s", [3, 2]))
        ins.append("s")
    elif form == "num_outputs18":
        kw["num_outputs"] = 2  # 5 -> 3 + 2
    n_out = 2 if form != "equal13" else 1
    nodes = [h.make_node("Split", ins, [f"p{k}" for k in range(n_out)], axis=-1, **kw)]
    if form == "equal13":
        nodes = [h.make_node("Split", ins, ["p0", "p1", "p2", "p3", "p4"], axis=3)]
        nodes.append(h.make_node("Concat", ["p4", "p2", "p0", "p1", "p3"], ["y"], axis=3))
    else:
        nodes.append(h.make_node("Concat", ["p1", "p0"], ["y"], axis=3))
    proto = _model(nodes, [("x", [1, 2, 3, 5])], ["y"], inits, opset)
    x = _x(1, 2, 3, 5, seed=18)
    y = cno.import_model(proto).compile(x.shape).run(x)
    assert (y == _ort(proto, x)).all()


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([-1, 0], [-10 ** 12, 5], [3, 2], [-2, 2]),        # backwards to the start, clamped
    ([1, -4], [4, -1], [1, -1], [1, 1]),               # negative indices, step 1
    ([2 ** 62, 1], [-(2 ** 62), 2 ** 62], [2, 3], [-1, 3]),
])
def test_import_slice_steps(starts, ends, axes, steps):
    import cnnnative.onnx as cno
    h = onnx.helper
    inits = [_i64("st", starts), _i64("en", ends), _i64("ax", axes), _i64("sp", steps)]
    proto = _model([h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], [("x", [2, 3, 6, 7])], ["y"],
                   inits, 13)
    x = _x(2, 3, 6, 7, seed=19)
    y = cno.import_model(proto).compile(x.shape).run(x)
    assert (y == _ort(proto, x)).all()


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_import_pad_modes(mode):
    import cnnnative.onnx as cno
    h = onnx.helper
    proto = _model([h.make_node("Pad", ["x", "p"], ["y"], mode=mode)], [("x", [2, 3, 4, 5])], ["y"],
                   [_i64("p", [0, 1, 2, 3, 0, 0, 1, 4])], 13)
    x = _x(2, 3, 4, 5, seed=20)
    assert (cno.import_model(proto).compile(x.shape).run(x) == _ort(proto, x)).all()


@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((2, 3, 4), (4,)),
                                   ((4,), (2, 4, 3))])
def test_import_matmul_two_activations(sa, sb):
    """Both operands computed from the one model input: a Slice and a Reshape of it."""
    import cnnnative.onnx as cno
    h = onnx.helper
    na, nb = int(np.prod(sa)), int(np.prod(sb))
    inits = [_i64("a0", [0]), _i64("a1", [na]), _i64("b0", [na]), _i64("b1", [na + nb]), _i64("ax", [1]),
             _i64("sa", list(sa)), _i64("sb", list(sb))]
    nodes = [h.make_node("Slice", ["x", "a0", "a1", "ax"], ["fa"]),
             h.make_node("Slice", ["x", "b0", "b1", "ax"], ["fb"]),
             h.make_node("Reshape", ["fa", "sa"], ["A"]), h.make_node("Reshape", ["fb", "sb"], ["B"]),
             h.make_node("MatMul", ["A", "B"], ["y"])]
    proto = _model(nodes, [("x", [1, na + nb])], ["y"], inits, 13)
    x = _x(1, na + nb, seed=21)
    y = cno.import_model(proto).compile(x.shape).run(x)
    ref = _ort(proto, x)
    assert y.shape == ref.shape and _rel(y, ref) < 1e-5
