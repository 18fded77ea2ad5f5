"""Reductions that grow with the input stay exact to float rounding at any size, and their bits do not depend on
the thread count.

A float accumulator stops growing at 2^24: AdaptiveAvgPool2d(1) over an 8192x8192 map of ones used to give 0.25,
batch-norm statistics over 2^24 values of 1e4 + noise were off by 10 % (mean) and 1e6x (variance), softmax over
2^24 classes by ~1e-5 and its cross-entropy by 2e-3, the float reference kernels of the losses by 20 % at 2^26
elements. Each reduction here (global/average/adaptive pooling, batch-norm statistics and backward sums, the loss
means, softmax / cross-entropy / softmax_grad row sums) is compared with float64 numpy (and torch where installed),
on the cpu backend in every layout it runs in and on the reference backend; then the same op at 1, 2, 3 and 4
threads bit for bit (4 oversubscribes the 2-core CI machine, which still runs it). Each test takes a few seconds;
the 16384^2 variants are marked slow.
"""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core

LAYOUTS = ["plain", "nChw16c", "nChw8c", "nhwc"]
THREADS = (1, 2, 3, 4)
F32_ULP = 2.0 ** -23


def _dt(a):
    return "int32" if a.dtype == np.int32 else "float32"


def _session(op, arrays, attrs=None, layout="plain", backend="cpu", wrt=(), grad_of=(0,), dys=None):
    """One `op` node fed by graph inputs; in a layout other than plain an identity depthwise 1x1 convolution sits in
    front of input 0, so the op runs in that layout (a graph input is plain). Returns the op's outputs, then the
    gradients of sum <out_k, dys_k> (k in grad_of) w.r.t. the inputs in wrt when given."""
    g = _core.Graph()
    ids = [g.add_input(f"in{i}", list(a.shape), _dt(a)) for i, a in enumerate(arrays)]
    first, extra = ids[0], []
    if layout != "plain":
        C = arrays[0].shape[1]
        w = g.add_input("w", [C, 1, 1, 1])
        first = g.add_node("conv2d", [first, w], {"groups": C}, "identity")[0]
        extra = [np.ones((C, 1, 1, 1), np.float32)]
    outs = g.add_node(op, [first] + ids[1:], attrs or {}, "node")
    g.set_outputs(outs)
    store = _core.ParamStore([])
    if wrt:
        s = _core.Session(g, store, "grad", backend=backend, layout=layout, grad_of=[outs[k] for k in grad_of],
                          wrt=[ids[i] for i in wrt])
        s.run(list(arrays) + extra + [np.asarray(d, np.float32) for d in dys])
        return [s.fetch(i) for i in range(len(outs) + len(wrt))]
    s = _core.Session(g, store, "infer", backend=backend, layout=layout)
    s.run(list(arrays) + extra)
    return [s.fetch(i) for i in range(len(outs))]


def _at_threads(fn):
    """fn() at each thread count; asserts every result is bitwise equal to the 1-thread one."""
    old = _core.get_num_threads()
    try:
        res = {}
        for n in THREADS:
            _core.set_num_threads(n)
            res[n] = fn()
        for n in THREADS[1:]:
            for k, (a, b) in enumerate(zip(res[n], res[1])):
                np.testing.assert_array_equal(a, b, err_msg=f"result {k}: {n} threads vs 1")
        return res[1]
    finally:
        _core.set_num_threads(old)


def _uniform(shape, seed=0, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _close(got, want, rtol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert err.max() <= rtol, f"{what}: max relative error {err.max():.3g} > {rtol:.3g}"


# ---- pooling ----

def test_global_avg_pool_of_8192_squared_ones_is_one():
    x = np.ones((1, 1, 8192, 8192), np.float32)
    for backend in ("cpu", "reference"):
        assert _session("global_avg_pool", [x], backend=backend)[0].ravel().tolist() == [1.0], backend
    # the module: AdaptiveAvgPool2d(1)
    assert cn.nn.AdaptiveAvgPool2d(1).compile(x.shape).run(x).ravel().tolist() == [1.0]
    torch = pytest.importorskip("torch")
    assert torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 1).item() == 1.0


@pytest.mark.slow
def test_global_avg_pool_of_16384_squared_ones_is_one():
    x = np.ones((1, 1, 16384, 16384), np.float32)
    assert _session("global_avg_pool", [x])[0].ravel().tolist() == [1.0]
    assert _session("global_avg_pool", [x], backend="reference")[0].ravel().tolist() == [1.0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_global_avg_pool_large_maps_in_every_layout(layout):
    # 2^20 pixels per channel: float accumulation was off by ~1e-5; float64 sums give the float64 mean rounded
    x = _uniform((1, 18, 1024, 1024), seed=1)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    got = _session("global_avg_pool", [x], layout=layout)[0]
    _close(got, want, F32_ULP, f"global_avg_pool {layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pooling_is_thread_count_independent(layout):
    x = _uniform((2, 18, 300, 300), seed=4)
    _at_threads(lambda: _session("global_avg_pool", [x], layout=layout, wrt=[0], dys=[np.ones((2, 18, 1, 1))]))
    _at_threads(lambda: _session("avg_pool2d", [x], {"kernel": [100, 100]}, layout=layout))
    _at_threads(lambda: _session("adaptive_avg_pool2d", [x], {"output": [7, 7]}, layout=layout))


@pytest.mark.skipif(not cn.has_bf16(), reason="CPU without AVX512-BF16")
def test_global_avg_pool_bf16_large_map():
    # bf16 session (nChw16c bf16 activations) over 2^24 + 2^18 pixels of ones: a float sum stops at 2^24 (0.984)
    m = cn.nn.Sequential(cn.nn.Conv2d(1, 16, 1, bias=False), cn.nn.AdaptiveAvgPool2d(1))
    with cn.no_grad():
        m[0].weight[...] = 1
    x = np.ones((1, 1, 4160, 4096), np.float32)
    y = m.compile(x.shape, dtype="bfloat16").run(x)
    assert np.all(y == 1.0), y.ravel()


def test_avg_pool2d_huge_kernel():
    x = np.ones((1, 1, 8192, 8192), np.float32)
    for backend in ("cpu", "reference"):
        assert _session("avg_pool2d", [x], {"kernel": [8192, 8192]}, backend=backend)[0].ravel().tolist() == [1.0]
    x = _uniform((1, 1, 2048, 2048), seed=2)
    want = x.astype(np.float64).reshape(1, 1, 2, 1024, 2, 1024).mean(axis=(3, 5))
    for layout in LAYOUTS:
        got = _session("avg_pool2d", [x], {"kernel": [1024, 1024]}, layout=layout)[0]
        _close(got, want, F32_ULP, f"avg_pool2d 1024x1024 {layout}")
    got = _session("avg_pool2d", [x], {"kernel": [1024, 1024]}, backend="reference")[0]
    _close(got, want, F32_ULP, "avg_pool2d 1024x1024 reference")
    torch = pytest.importorskip("torch")  # float64: torch's float32 pooling sums in float (2e-5 off here)
    t = torch.nn.functional.avg_pool2d(torch.from_numpy(x).double(), 1024).numpy()
    _close(got, t, F32_ULP, "avg_pool2d vs torch float64")


def _np_adaptive(x, oh, ow):
    N, C, H, W = x.shape
    y = np.empty((N, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = i * H // oh, -(-(i + 1) * H // oh)
            w0, w1 = j * W // ow, -(-(j + 1) * W // ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))
    return y


@pytest.mark.parametrize("out", [2, 3])  # divisible windows (were oneDNN pooling) and overlapping ones (native)
def test_adaptive_avg_pool2d_large_windows(out):
    x = _uniform((1, 1, 2000, 2000), seed=3)
    want = _np_adaptive(x, out, out)
    for layout in LAYOUTS:
        got = _session("adaptive_avg_pool2d", [x], {"output": [out, out]}, layout=layout)[0]
        _close(got, want, F32_ULP, f"adaptive_avg_pool2d {out} {layout}")
    got = _session("adaptive_avg_pool2d", [x], {"output": [out, out]}, backend="reference")[0]
    _close(got, want, F32_ULP, f"adaptive_avg_pool2d {out} reference")
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).double(), out).numpy()
    _close(got, t, F32_ULP, "adaptive_avg_pool2d vs torch float64")


# ---- batch norm ----

BN_TRAIN = {"training": 1, "track_running_stats": 1, "momentum": 0.1, "eps": 1e-5}


def _bn_arrays(shape, mean, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (mean + rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    return [x, gamma, beta, np.zeros(C, np.float32), np.ones(C, np.float32)]


def _bn_check(arrays, dy, outs, what):
    """outs = y, save_mean, save_var, dx, dgamma, dbeta from the op; checked against float64 numpy. x-hat is defined
    with the saved (float) statistics, as the op normalizes with them."""
    x, gamma, beta = arrays[:3]
    axes = (0,) + tuple(range(2, x.ndim))
    bc = (1, -1) + (1,) * (x.ndim - 2)
    y, mean, var, dx, dgamma, dbeta = outs
    x64 = x.astype(np.float64)
    m64 = x64.mean(axis=axes)
    v64 = ((x64 - m64.reshape(bc)) ** 2).mean(axis=axes)
    _close(mean, m64, F32_ULP, f"{what}: batch mean")
    _close(var, v64, 2 * F32_ULP, f"{what}: batch variance")
    inv = 1 / np.sqrt(var.astype(np.float64) + 1e-5)
    xhat = (x64 - mean.astype(np.float64).reshape(bc)) * inv.reshape(bc)
    np.testing.assert_allclose(y, xhat * gamma.reshape(bc) + beta.reshape(bc), rtol=0, atol=1e-5 + 4 * F32_ULP * np.abs(m64).max(),
                               err_msg=f"{what}: y")
    dy64 = dy.astype(np.float64)
    want_dbeta, want_dgamma = dy64.sum(axis=axes), (dy64 * xhat).sum(axis=axes)
    scale = np.sqrt(dy64.size / len(want_dbeta))  # |sum| of random terms
    np.testing.assert_allclose(dbeta, want_dbeta, rtol=0, atol=1e-6 * scale, err_msg=f"{what}: dbeta")
    np.testing.assert_allclose(dgamma, want_dgamma, rtol=0, atol=1e-6 * scale, err_msg=f"{what}: dgamma")
    m = dy64.size / len(want_dbeta)
    want_dx = (gamma.reshape(bc) * inv.reshape(bc)) * (dy64 - (want_dbeta.reshape(bc) + xhat * want_dgamma.reshape(bc)) / m)
    np.testing.assert_allclose(dx, want_dx, rtol=0, atol=1e-5, err_msg=f"{what}: dx")


@pytest.mark.parametrize("shape", [(16, 2, 256, 256), pytest.param((64, 2, 512, 512), marks=pytest.mark.slow)])
def test_batch_norm_statistics_of_many_values_with_large_mean(shape):
    # 2^20 (2^24) values per channel around 1e4: float sums lost the mean at 1e-2 (1e-1) and the variance entirely
    arrays = _bn_arrays(shape, 1e4)
    dy = np.random.default_rng(5).standard_normal(arrays[0].shape, dtype=np.float32)
    rm, rv = arrays[3].copy(), arrays[4].copy()
    outs = _session("batch_norm", arrays, BN_TRAIN, wrt=[0, 1, 2], dys=[dy])
    _bn_check(arrays, dy, outs, f"plain {list(shape)}")
    # running statistics were updated in place from the float64 statistics (unbiased variance)
    x64 = arrays[0].astype(np.float64)
    m64, v64 = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    n = x64.size / 2
    _close(arrays[3], 0.9 * rm + 0.1 * m64, F32_ULP, "running_mean")
    _close(arrays[4], 0.9 * rv + 0.1 * v64 * n / (n - 1), F32_ULP, "running_var")
    ref = _session("batch_norm", arrays, dict(BN_TRAIN, track_running_stats=0), backend="reference")
    _close(ref[1], m64, F32_ULP, "reference mean")
    _close(ref[2], v64, 2 * F32_ULP, "reference variance")


@pytest.mark.parametrize("layout", ["nChw16c", "nChw8c", "nhwc"])
def test_batch_norm_large_mean_in_blocked_and_nhwc_layouts(layout):
    arrays = _bn_arrays((16, 18, 64, 64), 1e4, seed=1)
    dy = np.random.default_rng(6).standard_normal(arrays[0].shape, dtype=np.float32)
    outs = _session("batch_norm", arrays, dict(BN_TRAIN, track_running_stats=0), layout=layout, wrt=[0, 1, 2], dys=[dy])
    _bn_check(arrays, dy, outs, layout)


def test_batch_norm_matches_torch_on_large_mean():
    torch = pytest.importorskip("torch")
    arrays = _bn_arrays((8, 4, 256, 256), 1e3, seed=2)
    y, mean, var = _session("batch_norm", arrays, dict(BN_TRAIN, track_running_stats=0))
    x64 = torch.from_numpy(arrays[0]).double()
    tm, tv = x64.mean(dim=(0, 2, 3)).numpy(), x64.var(dim=(0, 2, 3), unbiased=False).numpy()
    _close(mean, tm, F32_ULP, "mean vs torch float64")
    _close(var, tv, 2 * F32_ULP, "var vs torch float64")
    ty = torch.nn.functional.batch_norm(torch.from_numpy(arrays[0]), None, None, torch.from_numpy(arrays[1]),
                                        torch.from_numpy(arrays[2]), training=True, eps=1e-5).numpy()
    np.testing.assert_allclose(y, ty, rtol=0, atol=2e-3)  # float32 torch normalizes with its float mean too


@pytest.mark.parametrize("shape", [(6, 20, 9, 9), (2, 3, 70, 70), (3, 24, 40, 40), (300, 20), (128, 2, 4, 4)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_norm_is_thread_count_independent(shape, layout):
    # oneDNN's batch norm changed its bits between 1, 2 and 3 threads in nChw16c and nhwc
    if len(shape) == 2 and layout != "plain":
        pytest.skip("[N, C] is plain only")
    arrays = _bn_arrays(shape, 3.0, seed=3)
    dy = np.random.default_rng(7).standard_normal(shape, dtype=np.float32)
    attrs = dict(BN_TRAIN, track_running_stats=0)
    _at_threads(lambda: _session("batch_norm", arrays, attrs, layout=layout, wrt=[0, 1, 2], dys=[dy]))
    ev = {"training": 0, "eps": 1e-5}
    _at_threads(lambda: _session("batch_norm", arrays, ev, layout=layout, wrt=[0, 1, 2], dys=[dy]))


@pytest.mark.slow
def test_batch_norm_2_26_values_per_channel():
    arrays = _bn_arrays((256, 1, 512, 512), 1e4, seed=4)
    y, mean, var = _session("batch_norm", arrays, dict(BN_TRAIN, track_running_stats=0))
    x64 = arrays[0].astype(np.float64)
    _close(mean, [x64.mean()], F32_ULP, "mean")
    _close(var, [x64.var()], 2 * F32_ULP, "variance")


# ---- losses ----

def _chunked(f, *arrays, chunk=1 << 22):
    n = arrays[0].size
    return sum(float(f(*[a.reshape(-1)[i:i + chunk].astype(np.float64) for a in arrays]).sum())
               for i in range(0, n, chunk)) / n


@pytest.mark.parametrize("op,n", [("mse_loss", 1 << 26), ("bce_with_logits", 1 << 24),
                                  pytest.param("bce_with_logits", 1 << 26, marks=pytest.mark.slow)])
def test_loss_means_over_many_elements(op, n):
    rng = np.random.default_rng(8)
    a = rng.standard_normal(n, dtype=np.float32) * 2 + 0.5
    b = rng.random(n, dtype=np.float32)
    if op == "mse_loss":
        want = _chunked(lambda p, t: (p - t) ** 2, a, b)
    else:
        want = _chunked(lambda x, t: np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))), a, b)
    for backend in ("cpu", "reference"):
        got = _session(op, [a, b], backend=backend)[0]
        _close(got, [want], 2 * F32_ULP, f"{op} {backend}")
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fn = F.mse_loss if op == "mse_loss" else F.binary_cross_entropy_with_logits
    _close(got, [fn(torch.from_numpy(a).double(), torch.from_numpy(b).double()).item()], 2 * F32_ULP, f"{op} vs torch float64")


@pytest.mark.parametrize("op", ["mse_loss", "bce_with_logits"])
def test_loss_means_are_thread_count_independent(op):
    rng = np.random.default_rng(9)
    a = rng.standard_normal((4, 1 << 18), dtype=np.float32)
    b = rng.uniform(0, 1, (4, 1 << 18)).astype(np.float32)
    _at_threads(lambda: _session(op, [a, b], wrt=[0, 1], dys=[np.ones(1, np.float32)]))


# ---- softmax and cross-entropy ----

def _np_softmax_rows(x):
    """float64 softmax of rows, from the float32 differences x - max (what any float kernel exponentiates)."""
    d = (x - x.max(axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    e = np.exp(d)
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_over_a_2_24_axis():
    x = np.random.default_rng(10).standard_normal((1, 1 << 24), dtype=np.float32) * 2
    want = _np_softmax_rows(x)
    got = _session("softmax", [x])[0]
    _close(got, want, 4 * F32_ULP, "softmax cpu")  # exp and two roundings; float sums were off by ~1e-5
    got = _session("softmax", [x], backend="reference")[0]
    _close(got, want, 4 * F32_ULP, "softmax reference")


def test_softmax_grad_over_a_2_24_axis():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 1 << 24), dtype=np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32) + 1
    y, dx = _session("softmax", [x], wrt=[0], dys=[dy])
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    want = y64 * (dy64 - (dy64 * y64).sum())  # in terms of the op's own y: only the dot product is checked
    np.testing.assert_allclose(dx, want, rtol=0, atol=8 * F32_ULP * np.abs(y64 * dy64).max() + 1e-12)


def _np_ce(x, labels):
    x64 = x.astype(np.float64)
    m = x64.max(axis=1)
    lse = m + np.log(np.exp(x64 - m[:, None]).sum(axis=1))
    return float(np.mean(lse - x64[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("K", [1 << 22, pytest.param(1 << 24, marks=pytest.mark.slow)])
def test_cross_entropy_over_many_classes(K):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, K), dtype=np.float32) * 3
    labels = np.array([5, 123456], np.int32)
    want = _np_ce(x, labels)
    for backend in ("cpu", "reference"):
        loss, dx = _session("softmax_cross_entropy", [x, labels], backend=backend, wrt=[0], dys=[np.ones(1, np.float32)])
        _close(loss, [want], 2 * F32_ULP, f"loss {backend}")
        p = _np_softmax_rows(x) / 2
        p[np.arange(2), labels] -= 0.5
        np.testing.assert_allclose(dx, p, rtol=0, atol=8 * F32_ULP * np.abs(p).max(), err_msg=f"dlogits {backend}")
    torch = pytest.importorskip("torch")  # float64: torch's float32 cross-entropy is itself 1e-4 off at 2^24 classes
    t = torch.nn.functional.cross_entropy(torch.from_numpy(x).double(), torch.from_numpy(labels).long()).item()
    _close(loss, [t], 2 * F32_ULP, "vs torch float64")


def test_cross_entropy_mean_over_2_22_rows():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1 << 22, 4), dtype=np.float32)
    labels = rng.integers(0, 4, 1 << 22).astype(np.int32)
    want = _np_ce(x, labels)
    for backend in ("cpu", "reference"):
        _close(_session("softmax_cross_entropy", [x, labels], backend=backend)[0], [want], 2 * F32_ULP, backend)


def test_softmax_rows_are_thread_count_independent():
    # rows of several chunks (chunk-parallel) and many short rows (row-parallel)
    rng = np.random.default_rng(14)
    for shape in [(3, 3 * 4096 + 5), (1, 1 << 20), (500, 100)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        labels = rng.integers(0, shape[1], shape[0]).astype(np.int32)
        _at_threads(lambda: _session("softmax", [x], wrt=[0], dys=[dy]))
        _at_threads(lambda: _session("softmax_cross_entropy", [x, labels], wrt=[0], dys=[np.ones(1, np.float32)]))
