"""Native max pooling in plain NCHW (cpp/src/cpu/max_pool.cpp, chosen by max_native in cpu/pool.cpp): sessions
compiled with layout="plain" run it for max_pool2d and max_pool2d_grad (impl "native 2x2" for the AVX-512 2x2
stride-2 loops, "native" for the generic ones), other layouts keep oneDNN's pooling. Checked here: y and the
workspace (flat argmax index h * W + w per plane) against a numpy reference with PyTorch's rules and against
torch.nn.functional.max_pool2d(return_indices=True), dx against float64 finite differences and PyTorch's
backward; ties (the first element of the window wins) and NaN (the window's last NaN wins, y is NaN); the fast
path bit-identical to the generic loops (CNNNATIVE_POOL_ISA=0, read when a kernel is created); dx independent
of the thread count."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn

# name: (x shape, kernel, stride, padding, ceil_mode)
CASES = {
    "2x2_s2_28": ((2, 3, 28, 28), 2, 2, 0, 0),
    "2x2_s2_15": ((2, 3, 15, 15), 2, 2, 0, 0),
    "2x2_s2_15_ceil": ((2, 3, 15, 15), 2, 2, 0, 1),
    "2x2_s2_odd_wide_ceil": ((1, 2, 5, 37), 2, 2, 0, 1),  # a row of more than 16 windows, a partial last one
    "2x2_s2_two_full": ((3, 1, 7, 65), 2, 2, 0, 0),  # rows of exactly 2 x 16 windows (no partial chunk), odd H and W
    "2x2_s2_16_ceil": ((2, 2, 5, 31), 2, 2, 0, 1),  # 16 windows a row, the last one's odd column past the image
    "3x3_s2_p1": ((2, 3, 15, 15), 3, 2, 1, 0),  # ResNet's stem pool
    "3x3_s2_p1_ceil": ((1, 2, 14, 70), 3, 2, 1, 1),
    "3x3_s1_p1": ((2, 2, 9, 9), 3, 1, 1, 0),  # overlapping windows: dx sums several dy
    "3x3_s1": ((1, 2, 7, 40), 3, 1, 0, 0),
    "5x5_s3_p2_ceil": ((1, 2, 11, 23), 5, 3, 2, 1),  # stride 3: the gather loads
    "17x17_s4_p8_ceil": ((1, 2, 20, 45), 17, 4, 8, 1),  # wider than the AVX-512 loops' table of border lanes
    "1x1": ((2, 3, 5, 5), 1, 1, 0, 0),
}


@pytest.fixture(autouse=True)
def _restore_threads():
    n = cn.get_num_threads()
    yield
    cn.set_num_threads(n)


def _attrs(k, s, p, ceil):
    return dict(kernel=[k, k], stride=[s, s], padding=[p, p], ceil_mode=ceil, training=1)


def _out_size(n, k, s, p, ceil):
    o = (n + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    return o - 1 if ceil and (o - 1) * s >= n + p else o


def np_max_pool(x, k, s, p, ceil):
    """y and flat argmax indices with PyTorch's rules: padding never chosen, the first maximum in row-major window
    order, or the last NaN of a window that holds one (`v > max || isnan(v)`)."""
    N, C, H, W = x.shape
    OH, OW = _out_size(H, k, s, p, ceil), _out_size(W, k, s, p, ceil)
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    for oh in range(OH):
        for ow in range(OW):
            hs, ws = oh * s - p, ow * s - p
            rows = [h for h in range(hs, hs + k) if 0 <= h < H]
            cols = [w for w in range(ws, ws + k) if 0 <= w < W]
            flat = np.array([h * W + w for h in rows for w in cols])
            win = x[:, :, rows][:, :, :, cols].reshape(N, C, -1)
            nan = np.isnan(win)
            last_nan = win.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
            first_max = np.argmax(np.where(nan, -np.inf, win) == np.nanmax(np.where(nan, -np.inf, win), axis=2,
                                                                            keepdims=True), axis=2)
            e = np.where(nan.any(axis=2), last_nan, first_max)
            idx[:, :, oh, ow] = flat[e]
            y[:, :, oh, ow] = np.take_along_axis(win, e[:, :, None], axis=2)[:, :, 0]
    return y, idx


def np_max_pool_grad(dy, idx, x_shape):
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), np.float64)
    for plane in range(N * C):
        np.add.at(dx[plane], idx.reshape(N * C, -1)[plane], dy.reshape(N * C, -1)[plane])
    return dx.reshape(x_shape)


def _graph(shape, attrs, special=False):
    """x -> max_pool2d; with special, x + a / b -> max_pool2d: session inputs must be finite, so NaN and +-inf are
    made in the graph (0/0, -1/0, 1/0 where wanted, 0/1 elsewhere)."""
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    feeds = [x]
    if special:
        a, b = g.add_input("a", list(shape)), g.add_input("b", list(shape))
        feeds += [a, b]
        q = g.add_node("binary_div", [a, b], {}, "nonfinite")[0]
        x_in = g.add_node("add", [x, q], {}, "x_special")[0]
    else:
        x_in = x
    outs = g.add_node("max_pool2d", [x_in], attrs, "pool")
    g.set_outputs(outs)
    return g, feeds, outs


def _impls(s):
    return {k["op"]: k["impl"] for k in s.kernels() if k["op"].startswith("max_pool2d")}


def _split(x):
    """x with non-finite values -> the finite x and the a, b of _graph."""
    a = np.where(np.isnan(x), 0.0, np.sign(np.nan_to_num(x, posinf=1.0, neginf=-1.0)) * np.isinf(x)).astype(np.float32)
    b = np.isfinite(x).astype(np.float32)
    return np.where(np.isfinite(x), x, 0.0).astype(np.float32), a, b


def run_native(x, dy, k, s, p, ceil):
    """(y, workspace, dx, {op: impl}) from plain-layout sessions: a forward with the workspace output, and a
    gradient session (the backward kernel reads the workspace its forward node wrote). x may hold NaN / +-inf."""
    attrs = _attrs(k, s, p, ceil)
    special = not np.isfinite(x).all()
    feeds = list(_split(x)) if special else [x]
    g, _, _ = _graph(x.shape, attrs, special)
    fwd = _core.Session(g, _core.ParamStore([]), "infer", layout="plain")
    fwd.run(feeds)
    y, ws = fwd.fetch(0), fwd.fetch(1)
    g, ids, outs = _graph(x.shape, attrs, special)
    grad = _core.Session(g, _core.ParamStore([]), "grad", grad_of=[outs[0]], wrt=[ids[0]], layout="plain")
    grad.run(feeds + [dy])
    impls = _impls(grad)
    assert impls["max_pool2d"] == _impls(fwd)["max_pool2d"]
    return y, ws, grad.fetch(2), impls


def _data(shape, k, s, p, ceil, seed=0):
    """Distinct values (no ties, so finite differences are exact) and a dy of y's shape."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    x = ((rng.permutation(n) - n / 2) * 0.01).reshape(shape).astype(np.float32)
    oshape = shape[:2] + (_out_size(shape[2], k, s, p, ceil), _out_size(shape[3], k, s, p, ceil))
    return x, rng.standard_normal(oshape).astype(np.float32)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_against_numpy_and_finite_differences(name):
    shape, k, s, p, ceil = CASES[name]
    x, dy = _data(shape, k, s, p, ceil)
    y, ws, dx, impls = run_native(x, dy, k, s, p, ceil)
    assert impls["max_pool2d"] in ("native", "native 2x2") and impls["max_pool2d_grad"] == impls["max_pool2d"]
    assert impls["max_pool2d"] == "native" or (k, s, p) == (2, 2, 0)
    ry, ridx = np_max_pool(x, k, s, p, ceil)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(ws, ridx)
    np.testing.assert_allclose(dx, np_max_pool_grad(dy.astype(np.float64), ridx, shape), rtol=1e-6, atol=1e-6)
    # central differences of sum(y * dy) in float64 at 40 elements (values are 0.01 apart: eps never crosses a tie)
    x64, dy64, eps = x.astype(np.float64), dy.astype(np.float64), 1e-4
    for i in np.random.default_rng(1).choice(x.size, 40, replace=False):
        plus, minus = x64.copy(), x64.copy()
        plus.reshape(-1)[i] += eps
        minus.reshape(-1)[i] -= eps
        fd = (np.sum(np_max_pool(plus, k, s, p, ceil)[0] * dy64) -
              np.sum(np_max_pool(minus, k, s, p, ceil)[0] * dy64)) / (2 * eps)
        assert abs(dx.reshape(-1)[i] - fd) <= 1e-5 * (1 + abs(fd)), (name, i, dx.reshape(-1)[i], fd)


def _torch(x, dy, k, s, p, ceil):
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt, it = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=bool(ceil), return_indices=True)
    yt.backward(torch.from_numpy(dy))
    return yt.detach().numpy(), it.numpy(), xt.grad.numpy()


def _isa(monkeypatch, isa):
    """isa "0": the portable loops (CNNNATIVE_POOL_ISA=0); None: whatever the CPU runs."""
    if isa is None:
        monkeypatch.delenv("CNNNATIVE_POOL_ISA", raising=False)
    else:
        monkeypatch.setenv("CNNNATIVE_POOL_ISA", isa)


@pytest.mark.parametrize("isa", [None, "0"])
@pytest.mark.parametrize("name", list(CASES))
def test_against_torch(name, isa, monkeypatch):
    _isa(monkeypatch, isa)
    shape, k, s, p, ceil = CASES[name]
    _, dy = _data(shape, k, s, p, ceil, seed=2)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)  # real-valued, ties unlikely
    ty, ti, tdx = _torch(x, dy, k, s, p, ceil)
    y, ws, dx, _ = run_native(x, dy, k, s, p, ceil)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(ws, ti)  # PyTorch's indices are the same flat h * W + w per plane
    np.testing.assert_allclose(dx, tdx, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("isa", [None, "0"])
@pytest.mark.parametrize("name", ["2x2_s2_15_ceil", "3x3_s2_p1", "3x3_s1_p1", "5x5_s3_p2_ceil"])
def test_ties_first_element_wins(name, isa, monkeypatch):
    """A constant input: every window picks its first element in the image (never padding), and the gradient goes
    there (summed where windows share it)."""
    _isa(monkeypatch, isa)
    shape, k, s, p, ceil = CASES[name]
    x = np.ones(shape, np.float32)
    _, dy = _data(shape, k, s, p, ceil)
    y, ws, dx, _ = run_native(x, dy, k, s, p, ceil)
    np.testing.assert_array_equal(y, np.ones_like(y))
    H, W = shape[2:]
    OH, OW = y.shape[2:]
    first = (np.maximum(np.arange(OH) * s - p, 0)[:, None] * W + np.maximum(np.arange(OW) * s - p, 0)[None, :])
    np.testing.assert_array_equal(ws, np.broadcast_to(first, ws.shape))
    np.testing.assert_allclose(dx, np_max_pool_grad(dy.astype(np.float64), ws, shape), rtol=1e-6, atol=1e-6)
    ty, ti, tdx = _torch(x, dy, k, s, p, ceil)
    np.testing.assert_array_equal(ws, ti)
    np.testing.assert_allclose(dx, tdx, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("isa", [None, "0"])
@pytest.mark.parametrize("name", ["2x2_s2_28", "2x2_s2_15_ceil", "3x3_s2_p1", "3x3_s1_p1"])
def test_nan_propagates(name, isa, monkeypatch):
    _isa(monkeypatch, isa)
    shape, k, s, p, ceil = CASES[name]
    x, dy = _data(shape, k, s, p, ceil)
    rng = np.random.default_rng(4)
    x.reshape(-1)[rng.choice(x.size, x.size // 7, replace=False)] = np.nan
    y, ws, dx, _ = run_native(x, dy, k, s, p, ceil)
    ry, ridx = np_max_pool(x, k, s, p, ceil)
    assert np.isnan(y).any() and not np.isnan(y).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ry))
    np.testing.assert_array_equal(y[~np.isnan(y)], ry[~np.isnan(ry)])
    np.testing.assert_array_equal(ws, ridx)
    ty, ti, tdx = _torch(x, dy, k, s, p, ceil)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))
    np.testing.assert_array_equal(ws, ti)
    np.testing.assert_allclose(dx, tdx, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["2x2_s2_28", "2x2_s2_15", "2x2_s2_15_ceil", "2x2_s2_odd_wide_ceil", "2x2_s2_two_full",
                                  "2x2_s2_16_ceil", "3x3_s2_p1", "3x3_s2_p1_ceil", "3x3_s1", "5x5_s3_p2_ceil",
                                  "17x17_s4_p8_ceil"])
def test_fast_path_bit_identical_to_generic_loops(name, monkeypatch):
    """The AVX-512 loops (the 2x2 fast path; the generic windows' vector loops) against the portable loops that
    CNNNATIVE_POOL_ISA=0 leaves, on ties, NaN and distinct values: the same bits for y, workspace and dx."""
    shape, k, s, p, ceil = CASES[name]
    x, dy = _data(shape, k, s, p, ceil)
    x = np.round(x * 10) / 10  # ties: runs of 10 equal values
    x.reshape(-1)[::23] = np.nan
    x.reshape(-1)[5::29] = -np.inf
    _isa(monkeypatch, None)
    fast = run_native(x, dy, k, s, p, ceil)
    if (k, s, p) == (2, 2, 0) and fast[3]["max_pool2d"] != "native 2x2":
        pytest.skip("no AVX-512F here: only the generic loops run")
    _isa(monkeypatch, "0")
    slow = run_native(x, dy, k, s, p, ceil)
    assert slow[3] == {"max_pool2d": "native", "max_pool2d_grad": "native"}
    for a, b in zip(fast[:3], slow[:3]):
        np.testing.assert_array_equal(_bits(a), _bits(b))


@pytest.mark.parametrize("name", ["2x2_s2_28", "3x3_s1_p1"])
def test_gradients_independent_of_thread_count(name):
    shape, k, s, p, ceil = CASES[name]
    shape = (4, 8) + shape[2:]  # 32 planes for the threads to share
    x, dy = _data(shape, k, s, p, ceil)
    x[:, :, ::2, ::2] = 0.0  # ties
    got = []
    for threads in (1, 2):
        cn.set_num_threads(threads)
        got.append(run_native(x, dy, k, s, p, ceil))
    for a, b in zip(got[0][:3], got[1][:3]):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def _lenet_like():
    cn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.Flatten(), nn.Linear(16 * 5 * 5, 10))


def test_plain_layout_sessions_run_native_pooling():
    """Training and inference sessions compiled with layout="plain" run the native kernels for every pooling node
    (the 2x2 one on the fast path where the CPU has AVX-512), blocked layouts keep oneDNN's; all agree."""
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    labels = np.arange(8) % 10
    model = _lenet_like()
    train = model.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1), layout="plain")
    pools = [kk for kk in train.kernels() if kk["op"].startswith("max_pool2d")]
    assert sorted(kk["op"] for kk in pools) == ["max_pool2d"] * 2 + ["max_pool2d_grad"] * 2
    impl = {kk["name"]: kk["impl"] for kk in pools}
    for kk in pools:
        assert set(kk["in_layouts"]) | set(kk["out_layouts"]) == {"plain"}, kk
    assert impl["2"] == impl["2/grad"] and impl["2"] in ("native", "native 2x2")  # 2x2/2: the fast path if AVX-512
    assert impl["5"] == impl["5/grad"] == "native"  # 3x3/2 padding 1 ceil_mode: the generic loops
    infer = model.compile(x.shape, layout="plain")
    # inference (no workspace): the 2x2 fast path natively; other windows keep oneDNN's inference kernel, which is
    # as fast or faster for them
    impl = {kk["name"]: kk["impl"] for kk in infer.kernels() if kk["op"] == "max_pool2d"}
    assert impl["2"] in ("native", "native 2x2") and impl["5"].startswith("onednn:pooling"), impl
    blocked = _lenet_like().compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1), layout="nChw16c")
    assert all(kk["impl"].startswith("onednn:pooling") for kk in blocked.kernels() if kk["op"].startswith("max_pool"))
    np.testing.assert_allclose(infer.run(x), _lenet_like().compile(x.shape, layout="nChw16c").run(x), rtol=1e-5,
                               atol=1e-5)
    for _ in range(3):  # the losses stay together: the same gradients reach the weights
        np.testing.assert_allclose(train.step(x, labels), blocked.step(x, labels), rtol=1e-5)


def test_dilation_keeps_onednn_in_plain_layout():
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9)).astype(np.float32)
    g, _, _ = _graph(x.shape, dict(kernel=[3, 3], dilation=[2, 2], training=1))
    s = _core.Session(g, _core.ParamStore([]), "infer", layout="plain")
    assert _impls(s)["max_pool2d"].startswith("onednn:pooling")
