"""conv2d and its backward ops: fast (oneDNN) vs a numpy reference and the naive kernels, float64 gradients vs
finite differences, on small grid-valued tensors (exact in float32); one larger case without finite
differences; the grad rule's emitted ops; parameter gradients; shape errors naming node and shapes."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def _pair(v, d):
    v = d if v is None else v
    return (v, v) if np.isscalar(v) else tuple(v)


def conv2d_ref(x, w, b=None, stride=None, padding=None, dilation=None, groups=1):
    """Sum over the R x S kernel taps of a strided window of the zero-padded input."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, 1), _pair(padding, 0), _pair(dilation, 1)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    G = groups
    OH = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).reshape(N, G, Cg, H + 2 * ph, W + 2 * pw)
    wg = w.reshape(G, K // G, Cg, R, S)
    y = np.zeros((N, G, K // G, OH, OW))
    for r in range(R):
        for s in range(S):
            win = xp[..., r * dh:r * dh + sh * (OH - 1) + 1:sh, s * dw:s * dw + sw * (OW - 1) + 1:sw]
            y += np.einsum("ngchw,gkc->ngkhw", win, wg[..., r, s])
    y = y.reshape(N, K, OH, OW)
    return y if b is None else y + b.reshape(1, K, 1, 1)


def _grid(shape, rng):
    """Multiples of 1/4 in [-1, 1]: float32 sums of their products are exact (benchdnn's trick)."""
    return (rng.integers(-4, 5, size=shape) / 4).astype(np.float32)


CASES = {
    # name: (x shape, w shape, bias, attrs); every tensor stays within a few hundred elements
    "3x3_pad1": ((2, 3, 5, 5), (4, 3, 3, 3), True, {"padding": [1, 1]}),
    "stride2": ((1, 3, 7, 7), (4, 3, 3, 3), True, {"stride": [2, 2], "padding": [1, 1]}),
    "dilation2": ((1, 2, 7, 7), (3, 2, 3, 3), True, {"dilation": [2, 2], "padding": [1, 1]}),
    "groups2": ((2, 4, 5, 5), (6, 2, 3, 3), True, {"groups": 2, "padding": [1, 1]}),
    "depthwise": ((2, 4, 5, 5), (4, 1, 3, 3), True, {"groups": 4, "padding": [1, 1]}),
    "no_bias": ((2, 3, 5, 5), (4, 3, 3, 3), False, {"padding": [1, 1]}),
    "1x1": ((2, 4, 4, 4), (5, 4, 1, 1), True, {}),
    "lenet_5x5_pad2": ((2, 1, 8, 8), (6, 1, 5, 5), True, {"padding": [2, 2]}),
    "non_square": ((1, 2, 7, 6), (3, 2, 3, 2), True, {"stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]}),
    "groups_stride_dilation_no_bias": ((1, 4, 8, 8), (4, 2, 2, 3), False,
                                       {"groups": 2, "stride": [2, 3], "padding": [0, 2], "dilation": [2, 1]}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv2d(name):
    xs, ws, bias, attrs = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    inputs = [_grid(xs, rng), _grid(ws, rng)] + ([_grid((ws[0],), rng)] if bias else [])
    kw = {k: attrs[k] for k in ("stride", "padding", "dilation", "groups") if k in attrs}
    check_op("conv2d", inputs, attrs, numpy_ref=lambda x, w, b=None: [conv2d_ref(x, w, b, **kw)])


def test_scalar_attrs_mean_both_dims():
    rng = np.random.default_rng(3)
    x, w = _grid((1, 2, 6, 6), rng), _grid((3, 2, 3, 3), rng)
    y = run_forward("conv2d", [x, w], {"stride": 2, "padding": 1})[0]
    assert_close(y, conv2d_ref(x.astype(np.float64), w.astype(np.float64), stride=2, padding=1), 1e-4, 1e-5, "scalar attrs")


@pytest.mark.parametrize("attrs", [{"padding": [1, 1]}, {"groups": 4, "stride": [2, 2], "padding": [1, 1]}])
def test_larger_fast_vs_reference(attrs):
    rng = np.random.default_rng(7)
    x, w, b = _grid((2, 16, 14, 14), rng), _grid((32, 16 // attrs.get("groups", 1), 3, 3), rng), _grid((32,), rng)
    fast = run_forward("conv2d", [x, w, b], attrs)[0]
    ref = run_forward("conv2d", [x, w, b], attrs, backend="reference")[0]
    assert_close(fast, ref, 1e-4, 1e-5, "conv2d forward: fast vs reference")
    dy = _grid(fast.shape, rng)
    fastg = run_backward("conv2d", [x, w, b], attrs, [dy], [0, 1, 2])
    refg = run_backward("conv2d", [x, w, b], attrs, [dy], [0, 1, 2], backend="reference")
    for name, f, r in zip(("dx", "dw", "db"), fastg, refg):
        assert_close(f, r, 1e-4, 1e-5, f"conv2d {name}: fast vs reference")


@pytest.mark.parametrize("wrt, emitted", [("x", {"conv2d_grad_data"}), ("wb", {"conv2d_grad_weights"}),
                                          ("xwb", {"conv2d_grad_data", "conv2d_grad_weights"})])
def test_grad_rule_emits_only_what_is_needed(wrt, emitted):
    g = _core.Graph()
    ids = {"x": g.add_input("x", [1, 2, 5, 5]), "w": g.add_input("w", [3, 2, 3, 3]), "b": g.add_input("b", [3])}
    y = g.add_node("conv2d", [ids["x"], ids["w"], ids["b"]], {"padding": [1, 1]}, "conv")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[ids[k] for k in wrt])
    assert {e.split()[0] for e in s.schedule()} - {"conv2d"} == emitted


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_param_grads_land_in_grad_block_without_allocating(backend):
    rng = np.random.default_rng(11)
    attrs = {"groups": 2, "stride": [2, 2], "padding": [1, 1]}
    x, w, b = _grid((2, 4, 6, 6), rng), _grid((6, 2, 3, 3), rng), _grid((6,), rng)
    store = _core.ParamStore([("conv.weight", [6, 2, 3, 3], True), ("conv.bias", [6], True)])
    with cn.no_grad():
        store.array("conv.weight")[...] = w
        store.array("conv.bias")[...] = b
    g = _core.Graph()
    ids = [g.add_input("x", [2, 4, 6, 6]), g.add_param("conv.weight", [6, 2, 3, 3]), g.add_param("conv.bias", [6])]
    y = g.add_node("conv2d", ids, attrs, "conv")
    g.set_outputs(y)
    s = _core.Session(g, store, "grad", backend=backend, grad_of=y)
    dy = _grid((2, 6, 3, 3), rng)
    s.run([x, dy])
    before = _core.allocation_count()
    s.run([x, dy])
    assert _core.allocation_count() == before
    names = [f[0] for f in s.fetches]
    dw, db = s.fetch(names.index("conv.weight.grad")), s.fetch(names.index("conv.bias.grad"))
    expected = run_backward("conv2d", [x, w, b], attrs, [dy], [1, 2], backend="reference", compute="float64")
    assert_close(dw, expected[0], 1e-4, 1e-5, "dw")
    assert_close(db, expected[1], 1e-4, 1e-5, "db")


def _build(xs, ws, bs=None, attrs=None, name="features.0"):
    g = _core.Graph()
    ids = [g.add_input("x", list(xs)), g.add_input("w", list(ws))]
    if bs is not None:
        ids.append(g.add_input("b", list(bs)))
    g.add_node("conv2d", ids, attrs or {}, name)


@pytest.mark.parametrize("xs, ws, bs, attrs, pattern", [
    ((1, 3, 5), (4, 3, 3, 3), None, {}, r"x must be 4-D \[N, C, H, W\], got \[1, 3, 5\]"),
    ((1, 3, 5, 5), (4, 3, 3), None, {}, r"w must be 4-D \[K, C/groups, R, S\], got \[4, 3, 3\]"),
    ((1, 3, 5, 5), (4, 1, 3, 3), None, {"groups": 2}, r"x \[1, 3, 5, 5\]: C = 3 is not divisible by groups = 2"),
    ((1, 4, 5, 5), (5, 2, 3, 3), None, {"groups": 2}, r"w \[5, 2, 3, 3\]: K = 5 is not divisible by groups = 2"),
    ((1, 3, 5, 5), (4, 2, 3, 3), None, {},
     r"w expects \[K, C/groups, R, S\] = \[4, 3, 3, 3\] for x \[1, 3, 5, 5\] and groups = 1, got \[4, 2, 3, 3\]"),
    ((1, 3, 5, 5), (4, 3, 3, 3), (5,), {}, r"b expects \[K\] = \[4\] for w \[4, 3, 3, 3\], got \[5\]"),
    ((1, 3, 2, 5), (4, 3, 5, 3), None, {"stride": [2, 1]},
     r"output \[N, K, OH, OW\] = \[1, 4, -1, 3\] is empty: x \[1, 3, 2, 5\], w \[4, 3, 5, 3\], stride \[2, 1\]"),
    ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": [0, 1]}, r"attribute 'stride' must be 1 or 2 integers >= 1, got \[0, 1\]"),
])
def test_shape_errors_name_node_and_shapes(xs, ws, bs, attrs, pattern):
    with pytest.raises(_core.Error, match=r"op 'conv2d' \(node 'features\.0'\): " + pattern):
        _build(xs, ws, bs, attrs)
