"""Native small-channel convolutions (cpu/conv_small.cpp): float32, plain layout, stride 1, AVX-512; the forward
with at most 8 output channels, the data gradient with at most 8 input channels, the weight gradient with at most
4 input channels. Checked against the reference backend, oneDNN's kernels (CNNNATIVE_SMALL_CONV=0 turns the
native ones off), a float64 numpy convolution and double-precision finite differences; thread-count independence;
which nodes take them; a LeNet-5 training run and PyTorch's gradients."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core

pytestmark = pytest.mark.skipif(not cn.has_avx512(), reason="the native small-channel kernels need AVX-512")
NATIVE = "native small-channel"  # the data gradient from 16 images: "native small-channel batch-lanes"


def is_native(impl):
    return impl.startswith(NATIVE)


def np_conv(x, w, b, pad):
    """float64 reference: y[n,k,oh,ow] = b[k] + sum_c,i,j w[k,c,i,j] x[n,c,oh+i-ph,ow+j-pw] (stride 1)."""
    ph, pw = pad
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    K, C, KH, KW = w.shape
    OH, OW = x.shape[2] - KH + 1, x.shape[3] - KW + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (KH, KW), axis=(2, 3))[:, :, :OH, :OW]  # N C OH OW KH KW
    y = np.einsum("ncabij,kcij->nkab", cols, w.astype(np.float64))
    return y + (0 if b is None else b.astype(np.float64)[None, :, None, None])


def run_conv(x, w, b, pad, dy, backend="cpu", native=True, monkeypatch=None, layout="plain"):
    """One conv2d node in a grad session: (y, dx, dw[, db]) for the seed gradient dy."""
    if monkeypatch is not None:
        monkeypatch.setenv("CNNNATIVE_SMALL_CONV", "1" if native else "0")
    g = _core.Graph()
    xi, wi = g.add_input("x", list(x.shape)), g.add_input("w", list(w.shape))
    ins = [xi, wi]
    if b is not None:
        ins.append(g.add_input("b", list(b.shape)))
    y = g.add_node("conv2d", ins, {"padding": list(pad)}, "conv")[0]
    g.set_outputs([y])
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=[y], wrt=ins, layout=layout)
    s.run([x, w] + ([b] if b is not None else []) + [dy])
    outs = [s.fetch(i).copy() for i in range(1 + len(ins))]
    impls = {k["name"]: k["impl"] for k in s.kernels()} if backend == "cpu" else {}
    return outs, impls


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


CASES = [  # N, C, K, H, W, KH, KW, pad, bias
    (4, 1, 6, 28, 28, 5, 5, (2, 2), True),     # LeNet-5 conv1: two vectors a row, all three native
    (3, 6, 16, 14, 14, 5, 5, (0, 0), True),    # LeNet-5 conv2: the data gradient only (dx has 6 channels)
    (2, 3, 5, 13, 40, 3, 3, (1, 1), True),     # RGB, odd rows (a half band), 40 columns (two chunks, a tail of 8)
    (2, 2, 8, 9, 21, 3, 5, (1, 2), False),     # a 3x5 filter, 8 output channels (blocks of 6 + 2), no bias
    (1, 4, 3, 6, 8, 7, 7, (3, 3), True),       # one image (one chunk), 7x7 filter, the narrowest row
    (2, 16, 4, 12, 17, 3, 3, (0, 0), True),    # many input channels, few outputs (an output layer)
    (2, 2, 4, 9, 20, 3, 1, (1, 0), True),      # a 3x1 filter: one tap a row (no shifted vectors), 20 columns
    (2, 3, 4, 6, 18, 1, 1, (0, 0), False),     # 1x1: a single tap
]


def expected_native(N, C, K, H, W, KH, KW, pad):
    OW = W + 2 * pad[1] - KW + 1
    return {"conv": K <= 8 and OW >= 8, "conv/grad_data": C <= 8 and W >= 8, "conv/grad_weights": C <= 4 and OW >= 8}


@pytest.mark.parametrize("case", CASES)
def test_against_reference_onednn_and_numpy(case, monkeypatch):
    N, C, K, H, W, KH, KW, pad, bias = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, KH, KW)) * 0.2).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if bias else None
    OH, OW = H + 2 * pad[0] - KH + 1, W + 2 * pad[1] - KW + 1
    dy = rng.standard_normal((N, K, OH, OW)).astype(np.float32)
    nat, impls = run_conv(x, w, b, pad, dy, monkeypatch=monkeypatch)
    one, impls0 = run_conv(x, w, b, pad, dy, native=False, monkeypatch=monkeypatch)
    ref, _ = run_conv(x, w, b, pad, dy, backend="reference")
    want = expected_native(N, C, K, H, W, KH, KW, pad)
    for node, native in want.items():
        name = next(n for n in impls if n.startswith(node) and "@" not in n)
        assert is_native(impls[name]) == native, (node, impls[name])
        assert not is_native(impls0[name])
    # float64 numpy: y, and the gradients of sum(y * dy)
    y64 = np_conv(x, w, b, pad)
    ph, pw = pad
    # dx = full correlation of dy with the flipped filter, cropped by the padding
    wt = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    dx64 = np_conv(dy, wt, None, (KH - 1, KW - 1))[:, :, ph:ph + H, pw:pw + W]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))[:, :, :OH, :OW]
    dw64 = np.einsum("ncabij,nkab->kcij", cols, dy.astype(np.float64))
    want64 = [y64, dx64, dw64] + ([dy.astype(np.float64).sum((0, 2, 3))] if bias else [])
    for i, w64 in enumerate(want64):
        label = ["y", "dx", "dw", "db"][i]
        assert rel(nat[i], w64) < 2e-6, label
        assert rel(one[i], w64) < 2e-6, label
        assert rel(ref[i], w64) < 2e-6, label


@pytest.mark.parametrize("N,C,K,H,W,k,pad", [
    (64, 6, 16, 14, 14, 5, (0, 0)),   # LeNet-5 conv2: 4 full groups of 16 images
    (20, 3, 5, 11, 19, 3, (1, 1)),    # a second group of 4 images (masked lanes), positions not a multiple of 16
    (16, 1, 7, 9, 8, 5, (2, 2)),      # one group, a 1-channel dx
    (40, 2, 4, 8, 10, 3, (1, 1)),     # three groups: a pair of groups per call, then the last one alone
])
def test_batch_lanes_data_gradient_against_rows(N, C, K, H, W, k, pad, monkeypatch):
    """From 16 images the data gradient puts the batch in the vector lanes (no FMA on padding); the row kernel
    (CNNNATIVE_SMALL_CONV=rows) is the slow path it is checked against, both against float64."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, k, k)) * 0.2).astype(np.float32)
    OH, OW = H + 2 * pad[0] - k + 1, W + 2 * pad[1] - k + 1
    dy = rng.standard_normal((N, K, OH, OW)).astype(np.float32)
    (_, dx_l, _), impls = run_conv(x, w, None, pad, dy, monkeypatch=monkeypatch)
    monkeypatch.setenv("CNNNATIVE_SMALL_CONV", "rows")
    (_, dx_r, _), impls_r = run_conv(x, w, None, pad, dy)
    assert impls["conv/grad_data"] == NATIVE + " batch-lanes" and impls_r["conv/grad_data"] == NATIVE
    wt = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    dx64 = np_conv(dy, wt, None, (k - 1, k - 1))[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]
    assert rel(dx_l, dx64) < 2e-6 and rel(dx_r, dx64) < 2e-6
    np.testing.assert_allclose(dx_l, dx_r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [1, 2, 3])  # nhwc, nChw16c, nChw8c (core Layout values)
@pytest.mark.parametrize("N,C,K,H,W,k,pad", [
    (32, 6, 16, 14, 14, 5, (0, 0)),   # LeNet-5 conv2: 16 channels, one block of nChw16c (aliases nhwc)
    (20, 3, 21, 11, 19, 3, (1, 1)),   # 21 channels: blocks with padding channels, runs of 16 + 5 in nhwc
])
def test_batch_lanes_data_gradient_reads_dy_in_any_layout(layout, N, C, K, H, W, k, pad):
    """The batch-lanes kernel reads dy in the layout its producer left it in (a blocked pooling gradient in
    LeNet-5) instead of a reorder to plain: dy made by a reorder node to that layout gives dx bit for bit as plain dy
    does (the same sums in the same order), and no other reorder is inserted."""
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((K, C, k, k)) * 0.2).astype(np.float32)
    OH, OW = H + 2 * pad[0] - k + 1, W + 2 * pad[1] - k + 1
    dy = rng.standard_normal((N, K, OH, OW)).astype(np.float32)
    outs = []
    for lay in (0, layout):
        g = _core.Graph()
        di, wi = g.add_input("dy", list(dy.shape)), g.add_input("w", list(w.shape))
        r = g.add_node("reorder", [di], {"from": [0], "to": [lay]}, "dy_in_layout")[0]
        dx = g.add_node("conv2d_grad_data", [r, wi], {"padding": list(pad), "input_shape": [N, C, H, W]}, "gd")[0]
        g.set_outputs([dx])
        s = _core.Session(g, _core.ParamStore([]), "infer")
        s.run([dy, w])
        outs.append(s.fetch(0).copy())
        impls = {q["name"]: q["impl"] for q in s.kernels()}
        assert impls["gd"] == NATIVE + " batch-lanes", impls
        assert sorted(impls) == ["dy_in_layout", "gd"], impls  # dx is plain: no reorder before or after
    wt = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    dx64 = np_conv(dy, wt, None, (k - 1, k - 1))[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]
    assert rel(outs[1], dx64) < 2e-6
    np.testing.assert_array_equal(outs[1], outs[0])


def test_finite_differences_double_precision():
    """The native gradients of L = sum(y * r) against central differences of the float64 numpy forward."""
    rng = np.random.default_rng(3)
    N, C, K, H, W, pad = 2, 2, 3, 7, 10, (1, 2)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 5)) * 0.3).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    r = rng.standard_normal((N, K, H + 2 - 2, W + 4 - 4)).astype(np.float32)
    (y, dx, dw, db), impls = run_conv(x, w, b, pad, r)
    assert all(is_native(impls[n]) for n in ("conv", "conv/grad_data", "conv/grad_weights"))
    loss = lambda x_, w_, b_: float((np_conv(x_, w_, b_, pad) * r).sum())  # noqa: E731
    eps = 1e-6
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    for arr, grad, name in [(x64, dx, "x"), (w64, dw, "w"), (b64, db, "b")]:
        flat = arr.reshape(-1)
        for idx in rng.choice(flat.size, size=min(12, flat.size), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            lp = loss(x64, w64, b64)
            flat[idx] = old - eps
            lm = loss(x64, w64, b64)
            flat[idx] = old
            fd = (lp - lm) / (2 * eps)
            assert abs(grad.reshape(-1)[idx] - fd) <= 1e-4 * max(1.0, abs(fd)), (name, idx)


def test_thread_count_does_not_change_results(monkeypatch):
    """Each output of the forward and data gradient is summed by one thread; the weight gradient over fixed
    batch chunks: 1 and 2 threads give identical bits."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    dy = rng.standard_normal((16, 6, 28, 28)).astype(np.float32)
    old = cn.get_num_threads()
    try:
        cn.set_num_threads(1)
        one, _ = run_conv(x, w, b, (2, 2), dy)
        cn.set_num_threads(2)
        two, impls = run_conv(x, w, b, (2, 2), dy)
    finally:
        cn.set_num_threads(old)
    assert is_native(impls["conv/grad_weights"]) and impls["conv/grad_data"] == NATIVE + " batch-lanes"
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("kw", [{"stride": 2}, {"dilation": 2}, {"groups": 2}])
def test_other_convolutions_keep_onednn(kw):
    """Strided, dilated and grouped convolutions are outside the native kernels' range."""
    g = _core.Graph()
    C = 2
    xi = g.add_input("x", [2, C, 20, 20])
    wi = g.add_input("w", [4, C // kw.get("groups", 1), 3, 3])
    attrs = {"padding": [1, 1], **{k: ([v, v] if k != "groups" else v) for k, v in kw.items()}}
    y = g.add_node("conv2d", [xi, wi], attrs, "conv")[0]
    g.set_outputs([y])
    s = _core.Session(g, _core.ParamStore([]), "grad", backend="cpu", grad_of=[y], wrt=[xi, wi], layout="auto")
    assert not any(is_native(k["impl"]) for k in s.kernels())


class LeNet(cn.nn.Module):
    def __init__(self):
        super().__init__()
        nn = cn.nn
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.pool, self.relu = nn.MaxPool2d(2), nn.ReLU()
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.conv2(x)))
        return self.fc(x.flatten(1))


def test_lenet_training_matches_onednn_path(monkeypatch):
    """Five SGD steps of a LeNet-style net: native kernels (conv1 forward and weight gradient, conv2's data
    gradient) against oneDNN's; the same losses and weights to float32 rounding."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 32).astype(np.int64)
    runs = []
    for native in (True, False):
        monkeypatch.setenv("CNNNATIVE_SMALL_CONV", "1" if native else "0")
        cn.manual_seed(0)
        m = LeNet()
        s = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9))
        impls = {k["name"]: k["impl"] for k in s.kernels()}
        assert is_native(impls["conv1"]) == native
        assert is_native(impls["conv2/grad_data"]) == native
        losses = [float(s.step(x, y)) for _ in range(5)]
        runs.append((losses, m.state_dict()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for k in runs[1][1]:
        assert rel(runs[0][1][k], runs[1][1][k].astype(np.float64)) < 1e-4, k


def test_pytorch_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    w = (rng.standard_normal((6, 1, 5, 5)) * 0.2).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    dy = rng.standard_normal((8, 6, 28, 28)).astype(np.float32)
    (y, dx, dw, db), impls = run_conv(x, w, b, (2, 2), dy)
    assert is_native(impls["conv"])
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding=2)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
def test_fused_inference_batch_norm_and_activation(act, monkeypatch):
    """Inference folds conv -> BN -> activation into one fused_conv2d; with 5 output channels it runs natively
    (the BN folded into the packed filter and bias, the activation on store), against oneDNN and the reference."""
    nn = cn.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
            self.act = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.1), None: nn.Identity()}[act]

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    rng = np.random.default_rng(2)
    cn.manual_seed(0)
    m = Net()
    sd = m.state_dict()
    sd["bn.running_mean"] = rng.standard_normal(5).astype(np.float32)
    sd["bn.running_var"] = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    sd["bn.weight"] = rng.standard_normal(5).astype(np.float32)
    sd["bn.bias"] = rng.standard_normal(5).astype(np.float32)
    m.load_state_dict(sd)
    x = rng.standard_normal((4, 3, 12, 20)).astype(np.float32)
    outs = {}
    for native in ("1", "0"):
        monkeypatch.setenv("CNNNATIVE_SMALL_CONV", native)
        s = m.compile(x.shape)
        impls = {k["op"]: k["impl"] for k in s.kernels()}
        assert impls["fused_conv2d"].startswith(NATIVE) == (native == "1"), impls
        outs[native] = s.run(x)
    ref = m.compile(x.shape, backend="reference").run(x)
    if act == "relu":
        assert (ref == 0).any() and (outs["1"] >= 0).all()
    np.testing.assert_allclose(outs["1"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["1"], outs["0"], rtol=1e-5, atol=1e-5)


def test_lenet_inference_runs_conv1_natively(monkeypatch):
    """LeNet-5 inference: conv1 (+ ReLU moved before the pool) fused and native, outputs as oneDNN's."""
    x = np.random.default_rng(4).standard_normal((32, 1, 28, 28)).astype(np.float32)
    outs = {}
    for native in ("1", "0"):
        monkeypatch.setenv("CNNNATIVE_SMALL_CONV", native)
        s = cn.models.lenet5(seed=0).compile(x.shape)
        impls = {k["name"]: k["impl"] for k in s.kernels()}
        assert impls["conv1"].startswith(NATIVE) == (native == "1")
        outs[native] = s.run(x)
    np.testing.assert_allclose(outs["1"], outs["0"], rtol=1e-5, atol=1e-5)
