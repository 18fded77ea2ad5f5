"""max_pool2d, avg_pool2d, global_avg_pool: check_op against numpy references written here, output sizes
against PyTorch's formula, forward and backward against torch.nn.functional when torch is importable, and
shape errors. Max-pool inputs are distinct values (a scaled permutation) so finite differences never cross a tie.
"""
import itertools

import numpy as np
import pytest

from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def _distinct(shape, seed=0):
    n = int(np.prod(shape))
    return ((np.random.default_rng(seed).permutation(n) - n / 2) * 0.1).reshape(shape).astype(np.float32)


def _normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_out_size(n, k, s, p, d, ceil):
    """PyTorch's pooling_output_shape."""
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def np_max_pool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=0):
    (kh, kw), (ph, pw), (dh, dw) = _pair(kernel), _pair(padding), _pair(dilation)
    sh, sw = _pair(stride if stride is not None else kernel)
    N, C, H, W = x.shape
    oh, ow = torch_out_size(H, kh, sh, ph, dh, ceil_mode), torch_out_size(W, kw, sw, pw, dw, ceil_mode)
    big = np.full((N, C, H + 2 * ph + kh * dh + sh, W + 2 * pw + kw * dw + sw), -np.inf)
    big[:, :, ph:ph + H, pw:pw + W] = x
    y = np.empty((N, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = big[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
            y[:, :, i, j] = win.max(axis=(2, 3))
    return y


def np_avg_pool2d(x, kernel, stride=None, padding=0, ceil_mode=0, count_include_pad=1):
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
    sh, sw = _pair(stride if stride is not None else kernel)
    N, C, H, W = x.shape
    oh, ow = torch_out_size(H, kh, sh, ph, 1, ceil_mode), torch_out_size(W, kw, sw, pw, 1, ceil_mode)
    shape = (N, C, H + 2 * ph + kh + sh, W + 2 * pw + kw + sw)
    big, in_image, in_padded = np.zeros(shape), np.zeros(shape[2:]), np.zeros(shape[2:])
    big[:, :, ph:ph + H, pw:pw + W] = x
    in_image[ph:ph + H, pw:pw + W] = 1
    in_padded[:H + 2 * ph, :W + 2 * pw] = 1  # positions past the padded border (ceil_mode) never count
    count = in_padded if count_include_pad else in_image
    y = np.empty((N, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            y[:, :, i, j] = big[:, :, rows, cols].sum(axis=(2, 3)) / count[rows, cols].sum()
    return y


# ---- max_pool2d ----

MAX_CASES = {
    "2x2_s2": ((1, 2, 6, 6), dict(kernel=[2, 2], stride=[2, 2])),
    "resnet_stem_3x3_s2_p1": ((1, 2, 7, 7), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])),
    "ceil_odd": ((1, 2, 5, 5), dict(kernel=[2, 2], stride=[2, 2], ceil_mode=1)),
    "ceil_3x3_s2_p1": ((1, 2, 6, 6), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=1)),
    "dilation2": ((1, 2, 7, 7), dict(kernel=[3, 3], stride=[1, 1], dilation=[2, 2])),
    "dilation2_pad1_ceil": ((1, 1, 8, 8), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[2, 2], ceil_mode=1)),
    "non_square": ((1, 2, 7, 5), dict(kernel=[3, 2], stride=[2, 1], padding=[1, 0])),
    "int_attrs": ((2, 1, 5, 6), dict(kernel=3, stride=2, padding=1)),
}


@pytest.mark.parametrize("name", list(MAX_CASES))
def test_max_pool2d(name):
    shape, attrs = MAX_CASES[name]
    attrs = dict(attrs, training=1)
    check_op("max_pool2d", [_distinct(shape)], attrs,
             numpy_ref=lambda x: [np_max_pool2d(x, **{k: v for k, v in attrs.items() if k != "training"})])


def test_max_pool2d_outputs_and_workspace():
    x = _distinct((2, 3, 7, 7))
    attrs = dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])
    infer = run_forward("max_pool2d", [x], attrs)
    assert len(infer) == 1 and infer[0].shape == (2, 3, 4, 4)
    for backend in ("cpu", "reference"):
        y, ws = run_forward("max_pool2d", [x], dict(attrs, training=1), backend=backend)
        assert ws.dtype == np.int32 and ws.shape == (2, 3, 4, 4)
        assert_close(y, infer[0], 0, 0, f"{backend}: training output vs inference output")
    ref_ws = run_forward("max_pool2d", [x], dict(attrs, training=1), backend="reference")[1]
    planes = x.reshape(6, 49)
    np.testing.assert_array_equal(planes[np.arange(6)[:, None], ref_ws.reshape(6, 16)], infer[0].reshape(6, 16))


def test_max_pool2d_without_workspace_is_not_differentiable():
    g = _core.Graph()
    x = g.add_input("x", [1, 1, 4, 4])
    y = g.add_node("max_pool2d", [x], {"kernel": [2, 2]}, "pool")
    g.set_outputs(y)
    with pytest.raises(_core.Error, match=r"op 'max_pool2d' \(node 'pool'\).*training=1"):
        _core.Session(g, _core.ParamStore([]), "grad", grad_of=[y[0]], wrt=[x])


# ---- avg_pool2d ----

AVG_CASES = {
    "2x2_s2": ((1, 2, 6, 6), dict(kernel=[2, 2], stride=[2, 2])),
    "3x3_s2_p1": ((1, 2, 6, 6), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])),  # ceil truncates the last window
    "3x3_s2_p1_odd": ((1, 2, 7, 5), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1])),  # ceil adds no window
    "2x2_s2_p1_odd": ((1, 2, 5, 5), dict(kernel=[2, 2], stride=[2, 2], padding=[1, 1])),
    "non_square": ((1, 2, 7, 6), dict(kernel=[3, 2], stride=[2, 3], padding=[1, 1])),
}


@pytest.mark.parametrize("name", list(AVG_CASES))
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [1, 0])
def test_avg_pool2d(name, ceil_mode, count_include_pad):
    shape, attrs = AVG_CASES[name]
    attrs = dict(attrs, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    check_op("avg_pool2d", [_normal(shape)], attrs, numpy_ref=lambda x: [np_avg_pool2d(x, **attrs)])


def test_avg_pool2d_default_counts_padding():
    x = np.ones((1, 1, 4, 4), np.float32)
    y = run_forward("avg_pool2d", [x], dict(kernel=[3, 3], stride=[1, 1], padding=[1, 1]))[0]
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)


# Windows of 256+ elements run as native float64 sums (cpu/pool.cpp AvgNative) in every layout: padding, both
# divisors, ceil mode, overlapping windows.
BIG_AVG_CASES = {
    "16x16_s16": ((1, 3, 32, 48), dict(kernel=[16, 16])),
    "17x17_s5_p8": ((1, 2, 40, 37), dict(kernel=[17, 17], stride=[5, 5], padding=[8, 8])),
    "16x20_s7_p3": ((2, 2, 33, 41), dict(kernel=[16, 20], stride=[7, 9], padding=[3, 4])),
}


@pytest.mark.parametrize("name", list(BIG_AVG_CASES))
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [1, 0])
def test_avg_pool2d_large_windows(name, ceil_mode, count_include_pad):
    shape, attrs = BIG_AVG_CASES[name]
    attrs = dict(attrs, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    check_op("avg_pool2d", [_normal(shape)], attrs, numpy_ref=lambda x: [np_avg_pool2d(x, **attrs)], grad=False)


@pytest.mark.parametrize("layout", ["nChw16c", "nChw8c", "nhwc"])
@pytest.mark.parametrize("name", list(BIG_AVG_CASES))
def test_avg_pool2d_large_windows_in_layouts(name, layout):
    shape, attrs = BIG_AVG_CASES[name]
    x = _normal((shape[0], 20, *shape[2:]), 1)
    for cip in (0, 1):
        a = dict(attrs, count_include_pad=cip)
        g = _core.Graph()
        xi = g.add_input("x", list(x.shape))
        g.set_outputs(g.add_node("avg_pool2d", [xi], a, "pool"))
        s = _core.Session(g, _core.ParamStore([]), "infer", layout=layout)
        s.run([x])
        assert_close(s.fetch(0), np_avg_pool2d(x.astype(np.float64), **a), 1e-5, 1e-6, f"{layout} cip={cip}")


# ---- global_avg_pool ----

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7, 7), (2, 2, 1, 1),
                                   pytest.param((1, 1, 300, 301), marks=pytest.mark.slow)])  # ~20 s of differences
def test_global_avg_pool(shape):
    check_op("global_avg_pool", [_normal(shape)], numpy_ref=lambda x: [x.mean(axis=(2, 3), keepdims=True)])


# ---- output sizes ----

def test_output_sizes_match_pytorch_formula():
    checked = 0
    for n, k, s, d, ceil in itertools.product(range(1, 10), range(1, 6), range(1, 4), (1, 2), (0, 1)):
        for p in range(k // 2 + 1):
            o = torch_out_size(n, k, s, p, d, ceil)
            ops = ["max_pool2d"] + (["avg_pool2d"] if d == 1 else [])
            for op in ops:
                attrs = dict(kernel=[k, 2], stride=[s, 1], padding=[p, 0], ceil_mode=ceil)
                if op == "max_pool2d":
                    attrs["dilation"] = [d, 1]
                if o < 1:
                    with pytest.raises(_core.Error, match="does not fit"):
                        run_forward(op, [np.zeros((1, 1, n, 3), np.float32)], attrs)
                    continue
                y = run_forward(op, [np.zeros((1, 1, n, 3), np.float32)], attrs)[0]
                assert y.shape == (1, 1, o, 2), (op, n, k, s, p, d, ceil)
                checked += 1
    assert checked > 500


# ---- against PyTorch ----

def _torch_sweep(with_dilation):
    for H, k, s, ceil in itertools.product((4, 5, 6, 7), (2, 3), (1, 2, 3), (0, 1)):
        for p in range(k // 2 + 1):
            for d in ((1, 2) if with_dilation else (1,)):
                W = H + 1
                if min(torch_out_size(H, k, s, p, d, ceil), torch_out_size(W, k, s, p, d, ceil)) >= 1:
                    yield (1, 2, H, W), dict(kernel=[k, k], stride=[s, s], padding=[p, p], ceil_mode=ceil), d
    yield (2, 1, 9, 6), dict(kernel=[3, 2], stride=[2, 1], padding=[1, 1], ceil_mode=1), 1
    yield (1, 1, 8, 7), dict(kernel=[2, 3], stride=[3, 2], padding=[0, 1], ceil_mode=1), 1


def _compare_with_torch(op, x, attrs, torch_fn):
    import torch

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch_fn(xt)
    dy = np.random.default_rng(1).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    for backend in ("cpu", "reference"):
        where = f"{op} {attrs} {backend}"
        y = run_forward(op, [x], attrs, backend=backend)[0]
        assert_close(y, yt.detach().numpy(), 1e-4, 1e-5, where + " forward")
        dx = run_backward(op, [x], attrs, [dy], [0], backend=backend)[0]
        assert_close(dx, xt.grad.numpy(), 1e-3, 1e-4, where + " backward")


def test_max_pool2d_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape, attrs, d in _torch_sweep(with_dilation=True):
        a = dict(attrs, dilation=[d, d], training=1)
        fn = lambda t: F.max_pool2d(t, a["kernel"], a["stride"], a["padding"], a["dilation"], bool(a["ceil_mode"]))
        _compare_with_torch("max_pool2d", _distinct(shape, seed=3), a, fn)


def test_avg_pool2d_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape, attrs, _ in _torch_sweep(with_dilation=False):
        for cip in (1, 0):
            a = dict(attrs, count_include_pad=cip)
            fn = lambda t: F.avg_pool2d(t, a["kernel"], a["stride"], a["padding"], bool(a["ceil_mode"]), bool(cip))
            _compare_with_torch("avg_pool2d", _normal(shape, seed=4), a, fn)


def test_global_avg_pool_matches_torch():
    torch = pytest.importorskip("torch")
    x = _normal((2, 3, 5, 6), seed=5)
    _compare_with_torch("global_avg_pool", x, {}, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 1))


# ---- errors ----

def _add(op, shape, attrs):
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    return g.add_node(op, [x], attrs, "pool")


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_padding_more_than_half_kernel(op):
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'pool'\).*padding \[2, 1\].*half the kernel \[3, 3\]"):
        _add(op, (1, 1, 8, 8), dict(kernel=[3, 3], padding=[2, 1]))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_kernel_larger_than_padded_input(op):
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'pool'\): kernel \[6, 6\].*input \[1, 1, 3, 3\] padded by \[1, 1\]"):
        _add(op, (1, 1, 3, 3), dict(kernel=[6, 6], stride=[1, 1], padding=[1, 1]))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "global_avg_pool"])
def test_wrong_rank(op):
    attrs = {} if op == "global_avg_pool" else dict(kernel=[2, 2])
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'pool'\).*\[N, C, H, W\].*\[2, 3, 4\]"):
        _add(op, (2, 3, 4), attrs)


def test_bad_attributes():
    with pytest.raises(_core.Error, match="missing attribute 'kernel'"):
        _add("max_pool2d", (1, 1, 4, 4), {})
    with pytest.raises(_core.Error, match="stride must be positive"):
        _add("max_pool2d", (1, 1, 4, 4), dict(kernel=[2, 2], stride=[0, 1]))
    with pytest.raises(_core.Error, match="'ceil_mode' must be 0 or 1"):
        _add("avg_pool2d", (1, 1, 4, 4), dict(kernel=[2, 2], ceil_mode=2))
    with pytest.raises(_core.Error, match="takes no 'dilation'"):
        _add("avg_pool2d", (1, 1, 4, 4), dict(kernel=[2, 2], dilation=[2, 2]))
    with pytest.raises(_core.Error, match=r"'kernel' must be an int or \[h, w\]"):
        _add("max_pool2d", (1, 1, 4, 4), dict(kernel=[2, 2, 2]))
