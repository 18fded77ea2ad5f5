"""conv_transpose2d and its backward ops: fast (oneDNN deconvolution) vs a numpy scatter reference and the naive
kernels, float64 gradients vs finite differences, on small grid-valued tensors (exact in float32); larger cases
without finite differences; forward and x/w/b gradients against torch's conv_transpose2d over a sweep of configs;
the grad rule's emitted ops; parameter gradients without allocation; shape errors naming node and shapes."""
import itertools

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def _pair(v, d):
    v = d if v is None else v
    return (v, v) if np.isscalar(v) else tuple(v)


def conv_transpose2d_ref(x, w, b=None, stride=None, padding=None, output_padding=None, dilation=None, groups=1):
    """Scatters each input pixel times the R x S kernel onto a canvas at rows h*sh + r*dh, then crops the padding."""
    (sh, sw), (ph, pw) = _pair(stride, 1), _pair(padding, 0)
    (oph, opw), (dh, dw) = _pair(output_padding, 0), _pair(dilation, 1)
    N, C, H, W = x.shape
    _, Kg, R, S = w.shape
    G = groups
    K, Cg = Kg * G, C // G
    OH = (H - 1) * sh - 2 * ph + dh * (R - 1) + oph + 1
    OW = (W - 1) * sw - 2 * pw + dw * (S - 1) + opw + 1
    canvas = np.zeros((N, G, Kg, ph + OH + (H - 1) * sh + dh * (R - 1) + 1, pw + OW + (W - 1) * sw + dw * (S - 1) + 1))
    xg, wg = x.reshape(N, G, Cg, H, W), w.reshape(G, Cg, Kg, R, S)
    for r in range(R):
        for s in range(S):
            canvas[..., r * dh:r * dh + sh * (H - 1) + 1:sh, s * dw:s * dw + sw * (W - 1) + 1:sw] += np.einsum(
                "ngchw,gck->ngkhw", xg, wg[..., r, s])
    y = canvas[..., ph:ph + OH, pw:pw + OW].reshape(N, K, OH, OW)
    return y if b is None else y + b.reshape(1, K, 1, 1)


def _grid(shape, rng):
    """Multiples of 1/4 in [-1, 1]: float32 sums of their products are exact (benchdnn's trick)."""
    return (rng.integers(-4, 5, size=shape) / 4).astype(np.float32)


KEYS = ("stride", "padding", "output_padding", "dilation", "groups")

CASES = {
    # name: (x shape, w shape [C, K/groups, R, S], bias, attrs); every tensor within a few hundred elements
    "stride1": ((2, 3, 4, 4), (3, 4, 3, 3), True, {}),
    "stride2_pad1_outpad1": ((1, 3, 4, 4), (3, 4, 3, 3), True, {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}),
    "unet_2x2_s2": ((2, 4, 3, 3), (4, 2, 2, 2), True, {"stride": [2, 2]}),
    "groups2": ((2, 4, 3, 3), (4, 3, 3, 3), True, {"groups": 2, "stride": [2, 2], "padding": [1, 1]}),
    "depthwise": ((1, 4, 3, 3), (4, 1, 3, 3), True, {"groups": 4, "stride": [2, 2], "output_padding": [1, 1]}),
    "dilation2": ((1, 2, 4, 4), (2, 3, 3, 3), True, {"dilation": [2, 2], "padding": [1, 1]}),
    "no_bias": ((2, 3, 4, 4), (3, 2, 3, 3), False, {"stride": [2, 2]}),
    "non_square": ((1, 2, 4, 3), (2, 3, 3, 2), True,
                   {"stride": [2, 1], "padding": [1, 0], "output_padding": [1, 0], "dilation": [1, 2]}),
    # output_padding >= stride (allowed below dilation): oneDNN refuses padding_r <= -stride, the reference kernel runs
    "outpad_ge_stride": ((1, 2, 3, 3), (2, 2, 3, 3), True, {"dilation": [2, 3], "output_padding": [1, 2]}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_transpose2d(name):
    xs, ws, bias, attrs = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    G = attrs.get("groups", 1)
    inputs = [_grid(xs, rng), _grid(ws, rng)] + ([_grid((ws[1] * G,), rng)] if bias else [])
    kw = {k: attrs[k] for k in KEYS if k in attrs}
    check_op("conv_transpose2d", inputs, attrs, numpy_ref=lambda x, w, b=None: [conv_transpose2d_ref(x, w, b, **kw)])


def test_scalar_attrs_mean_both_dims():
    rng = np.random.default_rng(3)
    x, w = _grid((1, 2, 4, 4), rng), _grid((2, 3, 3, 3), rng)
    y = run_forward("conv_transpose2d", [x, w], {"stride": 2, "padding": 1, "output_padding": 1})[0]
    assert y.shape == (1, 3, 8, 8)
    expected = conv_transpose2d_ref(x.astype(np.float64), w.astype(np.float64), stride=2, padding=1, output_padding=1)
    assert_close(y, expected, 1e-4, 1e-5, "scalar attrs")


@pytest.mark.parametrize("attrs", [{"stride": [2, 2], "padding": [1, 1]},
                                   {"groups": 4, "stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]},
                                   {"stride": [1, 1], "dilation": [2, 2], "output_padding": [1, 1]}])
def test_larger_fast_vs_reference(attrs):
    rng = np.random.default_rng(7)
    G = attrs.get("groups", 1)
    x, w, b = _grid((2, 16, 8, 8), rng), _grid((16, 32 // G, 4, 4), rng), _grid((32,), rng)
    fast = run_forward("conv_transpose2d", [x, w, b], attrs)[0]
    ref = run_forward("conv_transpose2d", [x, w, b], attrs, backend="reference")[0]
    assert_close(fast, ref, 1e-4, 1e-5, "conv_transpose2d forward: fast vs reference")
    dy = _grid(fast.shape, rng)
    fastg = run_backward("conv_transpose2d", [x, w, b], attrs, [dy], [0, 1, 2])
    refg = run_backward("conv_transpose2d", [x, w, b], attrs, [dy], [0, 1, 2], backend="reference")
    for name, f, r in zip(("dx", "dw", "db"), fastg, refg):
        assert_close(f, r, 1e-4, 1e-5, f"conv_transpose2d {name}: fast vs reference")


# (x shape, C -> K, kernel, stride, padding, output_padding, dilation, groups, bias)
TORCH_SWEEP = [
    ((2, 8, 5, 5), 4, (2, 2), 2, 0, 0, 1, 1, True),        # U-Net up-convolution
    ((2, 8, 5, 5), 6, (3, 3), 2, 1, 1, 1, 1, True),        # 2x upsampling with a 3x3 kernel
    ((1, 6, 4, 7), 9, (3, 2), (2, 3), (1, 0), (1, 2), (1, 2), 3, True),
    ((2, 4, 6, 6), 4, (4, 4), 2, 1, 0, 1, 4, False),      # depthwise, DCGAN-style 4x4 s2 p1
    ((1, 4, 5, 5), 8, (3, 3), 1, 2, 0, 2, 2, True),
    ((1, 3, 4, 4), 2, (3, 3), 1, 0, 1, 2, 1, True),        # output_padding >= stride: reference fallback
    ((3, 5, 3, 4), 7, (1, 1), 3, 0, 2, 1, 1, True),
    ((1, 16, 7, 7), 32, (5, 5), 3, 2, 2, 1, 1, True),
]


@pytest.mark.parametrize("case", TORCH_SWEEP)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    xs, K, (R, S), stride, padding, outpad, dilation, groups, bias = case
    rng = np.random.default_rng(TORCH_SWEEP.index(case))
    C = xs[1]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((C, K // groups, R, S)).astype(np.float32)
    b = rng.standard_normal((K,)).astype(np.float32)
    kw = dict(stride=stride, padding=padding, output_padding=outpad, dilation=dilation, groups=groups)
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb if bias else None, **kw)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    inputs = [x, w, b] if bias else [x, w]
    y = run_forward("conv_transpose2d", inputs, attrs)[0]
    scale = float(np.abs(ty.detach().numpy()).max())
    assert_close(y, ty.detach().numpy(), 1e-4, 1e-5 * scale, "forward vs torch")
    grads = run_backward("conv_transpose2d", inputs, attrs, [dy], list(range(len(inputs))))
    for name, g, t in zip(("dx", "dw", "db"), grads, (tx, tw, tb)):
        ref = t.grad.numpy()
        assert_close(g, ref, 1e-4, 1e-5 * float(np.abs(ref).max()), f"{name} vs torch")


@pytest.mark.parametrize("wrt, emitted", [("x", {"conv_transpose2d_grad_data"}), ("wb", {"conv_transpose2d_grad_weights"}),
                                          ("xwb", {"conv_transpose2d_grad_data", "conv_transpose2d_grad_weights"})])
def test_grad_rule_emits_only_what_is_needed(wrt, emitted):
    g = _core.Graph()
    ids = {"x": g.add_input("x", [1, 2, 3, 3]), "w": g.add_input("w", [2, 3, 3, 3]), "b": g.add_input("b", [3])}
    y = g.add_node("conv_transpose2d", [ids["x"], ids["w"], ids["b"]], {"stride": [2, 2]}, "up")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[ids[k] for k in wrt])
    assert {e.split()[0] for e in s.schedule()} - {"conv_transpose2d"} == emitted


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_param_grads_land_in_grad_block_without_allocating(backend):
    rng = np.random.default_rng(11)
    attrs = {"groups": 2, "stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}
    x, w, b = _grid((2, 4, 3, 3), rng), _grid((4, 3, 3, 3), rng), _grid((6,), rng)
    store = _core.ParamStore([("up.weight", [4, 3, 3, 3], True), ("up.bias", [6], True)])
    with cn.no_grad():
        store.array("up.weight")[...] = w
        store.array("up.bias")[...] = b
    g = _core.Graph()
    ids = [g.add_input("x", [2, 4, 3, 3]), g.add_param("up.weight", [4, 3, 3, 3]), g.add_param("up.bias", [6])]
    y = g.add_node("conv_transpose2d", ids, attrs, "up")
    g.set_outputs(y)
    s = _core.Session(g, store, "grad", backend=backend, grad_of=y)
    dy = _grid((2, 6, 6, 6), rng)
    s.run([x, dy])
    before = _core.allocation_count()
    s.run([x, dy])
    assert _core.allocation_count() == before
    names = [f[0] for f in s.fetches]
    dw, db = s.fetch(names.index("up.weight.grad")), s.fetch(names.index("up.bias.grad"))
    expected = run_backward("conv_transpose2d", [x, w, b], attrs, [dy], [1, 2], backend="reference", compute="float64")
    assert_close(dw, expected[0], 1e-4, 1e-5, "dw")
    assert_close(db, expected[1], 1e-4, 1e-5, "db")


def test_output_size_follows_pytorch_formula():
    for H, R, st, pd, op, dl in itertools.product([1, 4], [1, 3], [1, 2, 3], [0, 1], [0, 1, 2], [1, 2]):
        if op >= st and op >= dl:
            continue
        OH = (H - 1) * st - 2 * pd + dl * (R - 1) + op + 1
        if OH <= 0:
            continue
        g = _core.Graph()
        ids = [g.add_input("x", [1, 1, H, H]), g.add_input("w", [1, 1, R, R])]
        y = g.add_node("conv_transpose2d", ids, {"stride": st, "padding": pd, "output_padding": op, "dilation": dl}, "n")
        assert g.shape(y[0]) == [1, 1, OH, OH]


def _build(xs, ws, bs=None, attrs=None, name="decoder.up1"):
    g = _core.Graph()
    ids = [g.add_input("x", list(xs)), g.add_input("w", list(ws))]
    if bs is not None:
        ids.append(g.add_input("b", list(bs)))
    g.add_node("conv_transpose2d", ids, attrs or {}, name)


@pytest.mark.parametrize("xs, ws, bs, attrs, pattern", [
    ((1, 3, 5), (3, 4, 3, 3), None, {}, r"x must be 4-D \[N, C, H, W\], got \[1, 3, 5\]"),
    ((1, 3, 5, 5), (3, 4, 3), None, {}, r"w must be 4-D \[C, K/groups, R, S\], got \[3, 4, 3\]"),
    ((1, 3, 5, 5), (3, 1, 3, 3), None, {"groups": 2}, r"x \[1, 3, 5, 5\]: C = 3 is not divisible by groups = 2"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {},
     r"w expects \[C, K/groups, R, S\] with C = 3 \(x \[1, 3, 5, 5\]\), got \[4, 3, 3, 3\]"),
    ((1, 4, 5, 5), (4, 3, 3, 3), (3,), {"groups": 2},
     r"b expects \[K\] = \[6\] for w \[4, 3, 3, 3\] and groups = 2, got \[3\]"),
    ((1, 3, 5, 5), (3, 4, 3, 3), None, {"stride": [2, 2], "output_padding": [1, 2]},
     r"output_padding \[1, 2\] must be smaller than either stride \[2, 2\] or dilation \[1, 1\] in each dimension"),
    ((1, 3, 5, 5), (3, 4, 3, 3), None, {"output_padding": 1},
     r"output_padding \[1, 1\] must be smaller than either stride \[1, 1\] or dilation \[1, 1\]"),
    ((1, 3, 1, 5), (3, 4, 1, 3), None, {"padding": [1, 0]},
     r"output \[N, K, OH, OW\] = \[1, 4, -1, 7\] is empty: x \[1, 3, 1, 5\], w \[3, 4, 1, 3\], stride \[1, 1\], "
     r"padding \[1, 0\], output_padding \[0, 0\], dilation \[1, 1\]"),
    ((1, 3, 5, 5), (3, 4, 3, 3), None, {"stride": [0, 1]}, r"attribute 'stride' must be 1 or 2 integers >= 1, got \[0, 1\]"),
    ((1, 3, 5, 5), (3, 4, 3, 3), None, {"output_padding": [-1]},
     r"attribute 'output_padding' must be 1 or 2 integers >= 0, got \[-1\]"),
])
def test_shape_errors_name_node_and_shapes(xs, ws, bs, attrs, pattern):
    with pytest.raises(_core.Error, match=r"op 'conv_transpose2d' \(node 'decoder\.up1'\): " + pattern):
        _build(xs, ws, bs, attrs)


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    ids = [g.add_input("dy", [1, 4, 9, 9]), g.add_input("w", [3, 4, 3, 3])]
    with pytest.raises(_core.Error, match=r"op 'conv_transpose2d_grad_data' \(node 'up/grad_data'\): dy expects the forward "
                                          r"output shape \[1, 4, 11, 11\], got \[1, 4, 9, 9\]"):
        g.add_node("conv_transpose2d_grad_data", ids, {"stride": 2, "input_shape": [1, 3, 5, 5]}, "up/grad_data")
