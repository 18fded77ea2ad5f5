"""int8 with zero points (asymmetric activations, ops/quant.cpp, cpu/quant.cpp, core/quantize.cpp,
onnx/_ops_quant.py): quantize / dequantize, qconv2d (padding, stride, groups, residual, ReLU, the intermediate
rounding), qlinear and the pools with non-zero zero points, each int8 kernel against its reference kernel and
the reference against numpy doing the same integer math; per-tensor weight grids kept exactly; models quantized
by onnxruntime's quantize_static with its defaults (QDQ and QOperator) against onnxruntime running them."""
import numpy as np
import pytest

import cnnnative as cn
import cnnnative.functional as F
from cnnnative import _core
from test_int8 import np_grouped_conv, qlinear_matmul_model

U8, S8 = 3, 5
_RANGE = {U8: (0, 255), S8: (-128, 127)}


def _session(build, feeds, backend, optimize=True):
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(a.shape), "float32") for i, a in enumerate(feeds)]
    g.set_outputs([build(g, ids)])
    return _core.Session(g, _core.ParamStore([]), "infer", backend=backend, optimize=optimize)


def _run(build, feeds, backend, optimize=True):
    s = _session(build, feeds, backend, optimize)
    return s.run_fetch([np.ascontiguousarray(a, np.float32) for a in feeds], 0)


def _q(g, v, scale, dt, zp):
    return g.add_node("quantize", [v], {"scale": scale, "dtype": dt, "zero_point": zp})[0]


def _dq(g, v, scale, zp):
    return g.add_node("dequantize", [v], {"scale": scale, "zero_point": zp})[0]


def _on_grid(rng, shape, scale, zp, dt):
    """Real values whose quantization is exactly a random int8 q (q - zp times the scale, exact in float32)."""
    lo, hi = _RANGE[dt]
    return ((rng.integers(lo, hi + 1, size=shape) - zp) * scale).astype(np.float32), lo, hi


def test_quantize_dequantize_with_zero_points_against_numpy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 6, 7)) * 3).astype(np.float32)
    s = np.float32(0.05)
    for dt, zp in ((U8, 37), (U8, 255), (S8, -20), (S8, 127)):
        lo, hi = _RANGE[dt]
        q = np.clip(np.rint(x.astype(np.float64) / s) + zp, lo, hi)
        want = ((q - zp) * s).astype(np.float32)
        for backend in ("cpu", "reference"):
            got = _run(lambda g, i: _dq(g, _q(g, i[0], 0.05, dt, zp), 0.05, zp), [x], backend)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * 0.05 * 255)
            qs = _session(lambda g, i: _q(g, i[0], 0.05, dt, zp), [x], backend)
            np.testing.assert_array_equal(qs.run_fetch([x], 0).astype(np.int64), q.astype(np.int64))


def _np_conv_int(xq, in_zp, wq, stride, pad, groups):
    """sum((xq - in_zp) * wq) over the taps inside x: int64 numpy (a padded tap is real 0)."""
    return np_grouped_conv(xq.astype(np.int64) - in_zp, wq.astype(np.int64), stride, pad, groups)


def _np_weights(w, grid=0.0):
    """quantize_weights (ops/quant.hpp) in numpy: a row on the grid keeps it, else max|w| / 127 in float32."""
    K = w.shape[0]
    rows = w.reshape(K, -1)
    wq, ws = np.zeros_like(rows, np.int64), np.zeros(K, np.float32)
    for k in range(K):
        q = rows[k].astype(np.float64) / grid if grid else None
        if grid and np.all(np.abs(q - np.rint(q)) <= 1e-3) and np.all((np.rint(q) >= -128) & (np.rint(q) <= 127)):
            ws[k], wq[k] = np.float32(grid), np.rint(q)
            continue
        m = np.float32(np.abs(rows[k]).max())
        ws[k] = m / np.float32(127) if m > 0 else np.float32(1)
        wq[k] = np.clip(np.rint(rows[k].astype(np.float64) / np.float64(ws[k])), -128, 127)
    return wq.reshape(w.shape), ws


def _requant(v, scale, zp, dt):
    lo, hi = _RANGE[dt]
    return np.clip(np.rint(v / scale) + zp, lo, hi)


CONV_CASES = [  # in (dtype, zp), out (dtype, zp; 0 = float32), residual zp, mid grid, act, geometry
    dict(xin=(U8, 200), out=(0, 0), res=None, mid=None, act=0, groups=1, stride=1, padding=2),
    dict(xin=(U8, 128), out=(U8, 17), res=None, mid=None, act=1, groups=1, stride=2, padding=1),
    dict(xin=(S8, -9), out=(S8, 5), res=(U8, 99), mid=None, act=0, groups=2, stride=1, padding=1),
    dict(xin=(U8, 255), out=(U8, 3), res=(S8, -7), mid=(U8, 120, 0.0437), act=1, groups=1, stride=1, padding=1),
    dict(xin=(U8, 64), out=(S8, -3), res=None, mid=(S8, 10, 0.0291), act=2, groups=4, stride=2, padding=3),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_qconv2d_with_zero_points_against_reference_and_numpy(case):
    rng = np.random.default_rng(1)
    N, C, H, W, K, R = 2, 8, 9, 9, 16, 3
    xs, rs, ys = 0.02, 0.03, 0.05
    (xt, xzp), (ot, ozp) = case["xin"], case["out"]
    x, _, _ = _on_grid(rng, (N, C, H, W), xs, xzp, xt)
    w = (rng.standard_normal((K, C // case["groups"], R, R)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    st, pad, G = case["stride"], case["padding"], case["groups"]
    OH = (H + 2 * pad - R) // st + 1
    attrs = {"stride": [st] * 2, "padding": [pad] * 2, "groups": G, "has_bias": 1, "sum": int(bool(case["res"])),
             "act": case["act"], "negative_slope": 0.1, "in_scale": xs, "in_zp": xzp, "out_dtype": ot}
    if ot:
        attrs.update(out_scale=ys, out_zp=ozp)
    feeds = [x, w, b]
    if case["res"]:
        rt, rzp = case["res"]
        res, _, _ = _on_grid(rng, (N, K, OH, OH), rs, rzp, rt)
        attrs.update(res_scale=rs, res_zp=rzp)
        feeds.append(res)
    if case["mid"]:
        mt, mzp, ms = case["mid"]
        attrs.update(mid_dtype=mt, mid_zp=mzp, mid_scale=ms)

    def build(g, i):
        ins = [_q(g, i[0], xs, xt, xzp), i[1], i[2]]
        if case["res"]:
            ins.append(_q(g, i[3], rs, case["res"][0], case["res"][1]))
        y = g.add_node("qconv2d", ins, attrs)[0]
        return _dq(g, y, ys, ozp) if ot else y

    s = _session(build, feeds, "cpu")
    impls = {k["op"]: k["impl"] for k in s.kernels()}
    assert "ref" not in impls["qconv2d"], impls  # oneDNN's jit int8 convolution takes the zero points
    cpu = s.run_fetch(feeds, 0)
    ref = _run(build, feeds, "reference")
    lsb = ys if ot else 0.0
    np.testing.assert_allclose(cpu, ref, rtol=1e-5, atol=lsb * 1.001 + 1e-5)
    if ot:
        assert np.mean(np.rint(cpu / ys) != np.rint(ref / ys)) < 0.01  # a tie rounded the other way, rarely

    # the same integer math in numpy
    xq = np.rint(x.astype(np.float64) / xs) + xzp
    wq, wsc = _np_weights(w)
    acc = _np_conv_int(xq, xzp, wq, st, pad, G)
    v = xs * wsc.astype(np.float64)[None, :, None, None] * acc + b.astype(np.float64)[None, :, None, None]
    if case["mid"]:
        v = ms * (_requant(v, ms, mzp, mt) - mzp)
    if case["res"]:
        v = v + rs * (np.rint(res.astype(np.float64) / rs))
    if case["act"] == 1:
        v = np.maximum(v, 0)
    elif case["act"] == 2:
        v = np.where(v > 0, v, 0.1 * v)
    want = ys * (_requant(v, ys, ozp, ot) - ozp) if ot else v
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=lsb * 1.001 + 1e-5)
    if ot:
        assert np.mean(np.rint(ref / ys) != np.rint(want / ys)) < 0.005


@pytest.mark.parametrize("xin,out", [((U8, 131), (U8, 77)), ((S8, -50), (S8, 12)), ((U8, 9), (0, 0))])
def test_qlinear_with_zero_points_against_reference_and_numpy(xin, out):
    rng = np.random.default_rng(2)
    (xt, xzp), (ot, ozp) = xin, out
    xs, ys = 0.03, 0.04
    x, _, _ = _on_grid(rng, (6, 40), xs, xzp, xt)
    w = (rng.standard_normal((24, 40)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(24) * 0.1).astype(np.float32)
    attrs = {"has_bias": 1, "in_scale": xs, "in_zp": xzp, "out_dtype": ot}
    if ot:
        attrs.update(out_scale=ys, out_zp=ozp)

    def build(g, i):
        y = g.add_node("qlinear", [_q(g, i[0], xs, xt, xzp), i[1], i[2]], attrs)[0]
        return _dq(g, y, ys, ozp) if ot else y
    s = _session(build, [x, w, b], "cpu")
    impl = [k["impl"] for k in s.kernels() if k["op"] == "qlinear"][0]
    assert "ref" not in impl, impl
    cpu, ref = s.run_fetch([x, w, b], 0), _run(build, [x, w, b], "reference")
    lsb = ys if ot else 0.0
    np.testing.assert_allclose(cpu, ref, rtol=1e-5, atol=lsb * 1.001 + 1e-5)
    xq = np.rint(x.astype(np.float64) / xs)  # q - zp
    wq, wsc = _np_weights(w)
    v = xs * wsc.astype(np.float64) * (xq.astype(np.int64) @ wq.T) + b
    want = ys * (_requant(v, ys, ozp, ot) - ozp) if ot else v
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=lsb * 1.001 + 1e-5)
    if ot:
        assert np.mean(np.rint(ref / ys) != np.rint(want / ys)) < 0.01


def test_pools_and_views_on_one_grid_run_int8_with_zero_points():
    """dequantize -> max pool / global average pool / flatten -> quantize on the same grid (scale and zero point)
    becomes the int8 op, with the float path's numbers; another zero point out keeps the float path."""
    rng = np.random.default_rng(3)
    s = 0.125  # a power of two: the float path's mean is exact too
    for dt, zp in ((U8, 100), (S8, -30)):
        x, _, _ = _on_grid(rng, (2, 16, 8, 8), s, zp, dt)

        def build(g, i, zp_out=zp):
            d = _dq(g, _q(g, i[0], s, dt, zp), s, zp)
            m = g.add_node("max_pool2d", [d], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]})[0]
            m = _dq(g, _q(g, m, s, dt, zp), s, zp)
            a = g.add_node("global_avg_pool", [m])[0]
            a = _dq(g, _q(g, a, s, dt, zp), s, zp)
            f = g.add_node("flatten", [a], {"start_dim": 1})[0]
            return _dq(g, _q(g, f, s, dt, zp_out), s, zp_out)
        sess = _session(build, [x], "cpu")
        ops = [k["op"] for k in sess.kernels()]
        assert "qmax_pool2d" in ops and "qglobal_avg_pool" in ops and "max_pool2d" not in ops, ops
        assert all("ref" not in k["impl"] for k in sess.kernels() if k["op"].startswith("q")), sess.kernels()
        want = _run(build, [x], "cpu", optimize=False)
        np.testing.assert_array_equal(sess.run_fetch([x], 0), want)
        np.testing.assert_array_equal(_run(build, [x], "reference"), want)
        other = _session(lambda g, i: build(g, i, zp_out=zp + 1), [x], "cpu")
        assert "flatten" in [k["op"] for k in other.kernels()]  # the view stays float: another zero point out
        np.testing.assert_array_equal(other.run_fetch([x], 0), _run(lambda g, i: build(g, i, zp + 1), [x], "cpu",
                                                                      optimize=False))


@pytest.mark.parametrize("relu_grid", ["same", "other"])
def test_int8_pass_keeps_the_rounding_between_a_conv_and_its_add(relu_grid):
    """conv -> quantize -> dequantize -> add(., dequantize(r)) -> quantize -> dequantize -> relu -> quantize (what
    onnxruntime writes): the int8 pass makes one qconv2d with the add as its sum post-op and the conv's grid as its
    mid rounding, and takes the ReLU too when it quantizes onto the add's grid (else the ReLU stays float); either
    way the session computes what the unfused graph does (weights on a per-channel grid, so the int8 kernel's
    requantization gives them back exactly)."""
    rng = np.random.default_rng(8)
    K = 16
    wq = rng.integers(-127, 128, (K, 16, 3, 3))
    wq[:, 0, 0, 0] = 127
    wsc = rng.uniform(0.002, 0.01, K).astype(np.float32)
    w = (wq * wsc[:, None, None, None].astype(np.float64)).astype(np.float32)
    b = (rng.standard_normal(K) * 0.05).astype(np.float32)
    xs, xz, s1, z1, rs, rz, s2, z2 = 0.0213, 117, 0.0371, -11, 0.0297, 9, 0.0443, -20
    s3, z3 = (s2, z2) if relu_grid == "same" else (0.0251, -128)
    x, _, _ = _on_grid(rng, (2, 16, 8, 8), xs, xz, U8)
    r, _, _ = _on_grid(rng, (2, K, 8, 8), rs, rz, S8)

    def build(g, i):
        c = g.add_node("conv2d", [_dq(g, _q(g, i[0], xs, U8, xz), xs, xz), i[1], i[2]], {"padding": [1, 1]})[0]
        c = _dq(g, _q(g, c, s1, S8, z1), s1, z1)
        a = g.add_node("add", [c, _dq(g, _q(g, i[3], rs, S8, rz), rs, rz)])[0]
        a = _dq(g, _q(g, a, s2, S8, z2), s2, z2)
        y = g.add_node("relu", [a])[0]
        return _dq(g, _q(g, y, s3, S8, z3), s3, z3)
    feeds = [x, w, b, r]
    sess = _session(build, feeds, "cpu")
    ks = sess.kernels()
    q = [k for k in ks if k["op"] == "qconv2d"]
    assert len(q) == 1 and "add" not in [k["op"] for k in ks], ks
    assert ("relu" in [k["op"] for k in ks]) == (relu_grid == "other"), ks
    got = sess.run_fetch(feeds, 0)
    want = _run(build, feeds, "cpu", optimize=False)
    d = np.rint(np.abs(got - want) / s3)
    assert d.max() <= 1 and np.mean(d != 0) <= 0.002, (d.max(), np.mean(d != 0))
    np.testing.assert_allclose(_run(build, feeds, "reference"), want, atol=s3 * 1.001)


def test_weight_scale_keeps_a_per_tensor_grid_exactly():
    """Weights on one int8 grid (per-tensor quantized): with weight_scale the int8 conv computes with exactly
    those integers; without it, per-channel requantization lands elsewhere. A row off the grid (or BN folded in)
    falls back to max / 127."""
    rng = np.random.default_rng(5)
    step = 0.0123
    wq_true = rng.integers(-127, 128, (16, 8, 3, 3))
    wq_true[3] = rng.integers(-20, 21, (8, 3, 3))  # rows far from the per-tensor maximum
    wq_true[5] = rng.integers(-50, 51, (8, 3, 3))
    w = (wq_true * np.float64(np.float32(step))).astype(np.float32)
    w[5, 0, 0, 0] += 0.003  # a row off the grid
    xs, xzp, ys, yzp = 0.02, 120, 0.05, 128
    x, _, _ = _on_grid(rng, (2, 8, 7, 7), xs, xzp, U8)

    def build(ws):
        def f(g, i):
            a = {"padding": [1, 1], "has_bias": 0, "in_scale": xs, "in_zp": xzp, "out_dtype": U8, "out_scale": ys,
                 "out_zp": yzp}
            if ws:
                a["weight_scale"] = float(np.float32(step))
            y = g.add_node("qconv2d", [_q(g, i[0], xs, U8, xzp), i[1]], a)[0]
            return _dq(g, y, ys, yzp)
        return f
    xq = np.rint(x.astype(np.float64) / xs) + xzp
    for use_grid in (True, False):
        wq, wsc = _np_weights(w, float(np.float32(step)) if use_grid else 0.0)
        if use_grid:
            keep = [k for k in range(16) if k != 5]
            np.testing.assert_array_equal(wq[keep], wq_true[keep])
            assert wsc[3] == np.float32(step) and wsc[5] != np.float32(step)
        else:
            assert not np.array_equal(wq[3], wq_true[3])
        acc = _np_conv_int(xq, xzp, wq, 1, 1, 1)
        want = ys * (_requant(xs * wsc.astype(np.float64)[None, :, None, None] * acc, ys, yzp, U8) - yzp)
        for backend in ("cpu", "reference"):
            got = _run(build(use_grid), [x, w], backend)
            assert np.mean(np.abs(got - want) > 1e-6) < 0.005 and np.abs(got - want).max() <= ys * 1.001


@pytest.mark.parametrize("node,attrs,msg", [
    ("quantize", {"scale": 0.1, "dtype": U8, "zero_point": 256},
     r"attribute 'zero_point' must be one integer in uint8's range \[0, 255\], got 256"),
    ("quantize", {"scale": 0.1, "dtype": S8, "zero_point": -129},
     r"attribute 'zero_point' must be one integer in int8's range \[-128, 127\], got -129"),
    ("quantize", {"scale": 0.1, "dtype": U8, "zero_point": 1.5},
     r"attribute 'zero_point' must be an integer, got the float 1.5"),
    ("quantize", {"scale": 0.1, "dtype": U8, "zero_point": [1, 2]},
     r"attribute 'zero_point' must be one integer in uint8's range \[0, 255\], got 2 values"),
])
def test_zero_point_out_of_range_or_wrong_type_is_one_error(node, attrs, msg):
    g = _core.Graph()
    i = g.add_input("x", [2, 3], "float32")
    with pytest.raises(Exception, match=msg):
        g.add_node(node, [i], attrs)


def test_dequantize_and_qconv2d_zero_points_checked():
    g = _core.Graph()
    i = g.add_input("x", [2, 3], "int8")
    with pytest.raises(Exception, match=r"dequantize.*'zero_point' must be one integer in int8's range.*got 200"):
        g.add_node("dequantize", [i], {"scale": 0.1, "zero_point": 200})
    g = _core.Graph()
    x = g.add_input("x", [1, 16, 4, 4], "uint8")
    w = g.add_input("w", [16, 16, 1, 1], "float32")
    with pytest.raises(Exception, match=r"qconv2d.*'in_zp' must be one integer in uint8's range.*got -1"):
        g.add_node("qconv2d", [x, w], {"in_scale": 0.1, "in_zp": -1, "out_dtype": 0})
    with pytest.raises(Exception, match=r"qconv2d.*'out_zp' needs a quantized output"):
        g.add_node("qconv2d", [x, w], {"in_scale": 0.1, "out_dtype": 0, "out_zp": 3})


# ---- models quantized by onnxruntime ----

class _Net(cn.nn.Module):
    """conv -> relu, conv + residual -> relu, max pool, conv -> relu, global average pool, flatten, gemm."""

    def __init__(self):
        super().__init__()
        self.c1 = cn.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = cn.nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = cn.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = cn.nn.Linear(32, 10)

    def forward(self, x):
        a = self.c1(x).relu()
        b = (self.c2(a) + a).relu()
        p = F.max_pool2d(b, 2)
        c = self.c3(p).relu()
        return self.fc(F.flatten(F.adaptive_avg_pool2d(c, 1), 1))


def _calib(rng, shape, n=4):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _quantize_with_ort(tmp_path, model, shape, calib, **kw):
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    import cnnnative.onnx as cox
    cox.export_model(model, tmp_path / "f.onnx", input_shape=shape, dynamic_batch=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": b} for b in calib])

        def get_next(self):
            return next(self.it, None)
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), **kw)
    return str(tmp_path / "q.onnx")


def _output_step(path):
    """The scale of the DequantizeLinear / QLinear op giving the model's output (its quantization step)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = m.graph.output[0].name
    for n in m.graph.node:
        if out in n.output and n.op_type == "DequantizeLinear":
            return float(inits[n.input[1]])
    raise AssertionError("the output is not a DequantizeLinear's")


def _compare_with_ort(path, shape, rng):
    ort = pytest.importorskip("onnxruntime")
    import cnnnative.onnx as cox
    s = cox.import_model(path).compile(shape)
    x = rng.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = s.run(x)
    step = _output_step(path)
    d = np.abs(got.astype(np.float64) - want) / step
    return s, np.rint(d).max(), np.mean(np.rint(d) != 0), d


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("act_type", ["default", "QUInt8"])
def test_onnxruntime_quantize_static_defaults_match_onnxruntime(tmp_path, monkeypatch, per_channel, act_type):
    """quantize_static with its defaults (QDQ, asymmetric activations with zero points: int8 in onnxruntime 1.2x+,
    uint8 before; int8 weights per tensor), with uint8 activations and with per_channel=True: the int8 session
    agrees with onnxruntime running the model to the output's quantization step: at most one step, on a tiny
    fraction of the elements (a tie rounded the other way)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnxruntime.quantization import QuantFormat, QuantType
    cn.manual_seed(0)
    rng = np.random.default_rng(0)
    shape = (8, 3, 16, 16)
    kw = {} if act_type == "default" else {"activation_type": QuantType.QUInt8}
    path = _quantize_with_ort(tmp_path, _Net(), shape, _calib(rng, shape), quant_format=QuantFormat.QDQ,
                              per_channel=per_channel, **kw)
    s, max_steps, frac, _ = _compare_with_ort(path, shape, rng)
    ks = s.kernels()
    ops = [k["op"] for k in ks]
    # the global average pool's input and output grids differ (onnxruntime calibrates both): it runs in float
    assert ops.count("qconv2d") == 3 and ops.count("qlinear") == 1 and "qmax_pool2d" in ops, ops
    assert "conv2d" not in ops and "fused_conv2d" not in ops and "add" not in ops and "relu" not in ops, ops
    assert all("ref" not in k["impl"] for k in ks if k["op"].startswith("q")), ks
    assert max_steps <= 1 and frac <= 0.01, (max_steps, frac)
    if not per_channel:  # the per-tensor weight grid is what makes it exact: requantized per channel, it is not
        from cnnnative.onnx import _ops_quant
        monkeypatch.setattr(_ops_quant, "weight_grid", lambda *a: None)
        _, _, frac_requantized, _ = _compare_with_ort(path, shape, np.random.default_rng(0))
        assert frac_requantized > max(frac, 0.05), (frac_requantized, frac)


def test_model_file_keeps_zero_points_and_weight_grids(tmp_path):
    """A .cnn file of an imported asymmetric QDQ model carries the zero points and the weight_scale grids: the
    loaded model runs bit for bit as the imported one."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import cnnnative.onnx as cox
    cn.manual_seed(3)
    rng = np.random.default_rng(3)
    shape = (4, 3, 16, 16)
    m = cox.import_model(_quantize_with_ort(tmp_path, _Net(), shape, _calib(rng, shape)))
    x = rng.standard_normal(shape).astype(np.float32)
    loaded = cn.load(cn.save(m, tmp_path / "asym.cnn", input_shape=shape))
    np.testing.assert_array_equal(loaded.compile(shape).run(x), m.compile(shape).run(x))


class _ConvNet(cn.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = cn.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = cn.nn.Conv2d(16, 32, 3, padding=1, stride=2)

    def forward(self, x):
        return F.max_pool2d(self.c2(self.c1(x).relu()).relu(), 2)


@pytest.mark.parametrize("act_type", ["default", "QUInt8"])
@pytest.mark.parametrize("net", ["convs", "residual"])
def test_onnxruntime_qoperator_with_zero_points_matches_onnxruntime(tmp_path, act_type, net):
    """QOperator format with onnxruntime's default asymmetric activations: QLinearConv with its zero points, a
    MaxPool over the int8 tensor, and (the residual net) onnxruntime's com.microsoft QLinearAdd,
    QLinearGlobalAveragePool and QGemm, expanded at import: agrees with onnxruntime."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnxruntime.quantization import QuantFormat, QuantType
    cn.manual_seed(1)
    rng = np.random.default_rng(1)
    shape = (8, 3, 16, 16)
    kw = {} if act_type == "default" else {"activation_type": QuantType.QUInt8}
    model = _ConvNet() if net == "convs" else _Net()
    path = _quantize_with_ort(tmp_path, model, shape, _calib(rng, shape), quant_format=QuantFormat.QOperator, **kw)
    kinds = [n.op_type for n in onnx.load(path).graph.node]
    assert kinds.count("QLinearConv") == (2 if net == "convs" else 3), kinds
    if net == "residual":
        assert {"QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= set(kinds), kinds
    s, max_steps, frac, _ = _compare_with_ort(path, shape, rng)
    ops = [k["op"] for k in s.kernels()]
    assert ops.count("qconv2d") == (2 if net == "convs" else 3) and "qmax_pool2d" in ops, ops
    if net == "residual":
        assert "qlinear" in ops and "add" not in ops, ops
    assert max_steps <= 1 and frac <= 0.01, (max_steps, frac)


def test_qlinearmatmul_with_zero_points_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import cnnnative.onnx as cox
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (64, 24)).astype(np.int8)
    c = {"xs": np.float32(0.05), "xz": np.uint8(131), "ws": np.float32(0.01), "wz": np.int8(0),
         "ys": np.float32(0.2), "yz": np.uint8(100)}
    qlinear_matmul_model(tmp_path / "mm.onnx", w, c, 8)
    x = (rng.standard_normal((8, 64)) * 2).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    s = cox.import_model(tmp_path / "mm.onnx").compile((8, 64))
    assert [k["op"] for k in s.kernels()].count("qlinear") == 1
    d = np.rint(np.abs(s.run(x) - want) / c["ys"])
    assert d.max() <= 1 and np.mean(d != 0) <= 0.01, (d.max(), np.mean(d != 0))


def test_onnx_zero_point_of_another_type_is_one_error(tmp_path):
    onnx = pytest.importorskip("onnx")
    import cnnnative.onnx as cox
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int32),
                                                                                               "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    p = tmp_path / "z32.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]), p)
    with pytest.raises(Exception, match=r"quantized type int32 \(uint8 and int8 only\)"):
        cox.import_model(p).compile((2, 4))


def test_onnx_export_writes_the_zero_point_and_imports_back(tmp_path):
    """The export writes each quantize / dequantize's zero point; the model imports back with the same
    activation grids, its weights float (weight_scale is dropped: the export writes float weights), so only the
    per-channel requantization of the per-tensor weights separates the two."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import cnnnative.onnx as cox
    from onnx import numpy_helper
    rng = np.random.default_rng(6)
    cn.manual_seed(2)
    shape = (4, 3, 16, 16)
    path = _quantize_with_ort(tmp_path, _Net(), shape, _calib(rng, shape))
    m = cox.import_model(path)
    cox.export_model(m, tmp_path / "back.onnx", input_shape=shape, dynamic_batch=False)

    def zero_points(p):
        g = onnx.load(p).graph
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        return sorted(int(inits[n.input[2]]) for n in g.node if n.op_type == "QuantizeLinear")
    assert zero_points(tmp_path / "back.onnx") == zero_points(path) and any(zero_points(path))
    x = rng.standard_normal(shape).astype(np.float32)
    back = cox.import_model(tmp_path / "back.onnx").compile(shape)
    assert [k["op"] for k in back.kernels()].count("qconv2d") == 3
    d = np.abs(back.run(x) - m.compile(shape).run(x)) / _output_step(path)
    assert d.max() <= 2  # measured: at most one step


@pytest.mark.parametrize("ints, match", [
    ({"dtype": [U8], "zero_point": [300]}, r"node 'x/quantize'.*'zero_point' must be one integer in uint8's range"),
    ({"dtype": [S8], "zero_point": [-129]}, r"node 'x/quantize'.*'zero_point' must be one integer in int8's range"),
])
def test_hostile_zero_point_in_a_model_file_is_one_error_naming_the_node(tmp_path, ints, match):
    """A .cnn file whose quantize node carries a zero point outside its type: refused while the graph is replayed."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_int8 import qdq_model_file
    with pytest.raises(cn.Error, match=match):
        cn.load(qdq_model_file(tmp_path, ints, 0.1))
