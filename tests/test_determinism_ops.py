"""compile(deterministic=True): results independent of the thread count, for the ops of cpu/conv_direct.cpp and
cpu/conv_winograd.cpp (oneDNN and Winograd), conv_transpose2d.cpp, linear.cpp, lrn.cpp, concat.cpp, upsample.cpp,
eltwise.cpp and dropout.cpp.

Per op: one grad-mode session per thread count (compiled and run at 1, 2, 3 and 4 threads; counts above the
machine's cores still run, oversubscribed), forward output and every input gradient bitwise equal across the counts,
and close to deterministic=False (the same math, another summation order). Then sessions compiled at one count and
run at another, and end to end: a small network of these ops trained for a few steps at 1, 2 and 3 threads gives
bitwise equal weights."""
import os
import sys

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

# the audit's harness: one grad session per thread count, layout-following ops wrapped in identity convolutions
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from determinism import run_op  # noqa: E402

THREADS = (1, 2, 3, 4)


@pytest.fixture(autouse=True)
def restore_threads():
    n = cn.get_num_threads()
    yield
    cn.set_num_threads(n)


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _rel(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


def check_thread_independent(op, shapes, attrs, wrt=None, layout="nChw16c", tol=1e-4, threads=THREADS):
    arrays = _arrays(shapes)
    wrt = list(range(len(shapes))) if wrt is None else wrt
    names = ["y"] + [f"d in{i}" for i in wrt]
    ref = run_op(op, arrays, attrs, wrt, threads[0], True, layout)
    for t in threads[1:]:
        got = run_op(op, arrays, attrs, wrt, t, True, layout)
        for name, a, b in zip(names, got, ref):
            assert np.array_equal(a, b), f"{op} {name}: {t} threads differ from {threads[0]} (max rel {_rel(a, b):.2e})"
    # the same math as the default kernels (at the same thread count)
    off = run_op(op, arrays, attrs, wrt, threads[0], False, layout)
    for name, a, b in zip(names, ref, off):
        assert _rel(a, b) < tol, f"{op} {name}: deterministic vs default, max rel {_rel(a, b):.2e}"
    return ref


# ---- conv2d: oneDNN direct kernels over minibatch parts ----
CONV = {
    # name: (x, w, bias, attrs, layout)
    "lenet_conv1_pad2": ((16, 1, 28, 28), (6, 1, 5, 5), True, {"padding": [2, 2]}, "nChw16c"),
    "lenet_conv2_tail_part": ((13, 6, 14, 14), (16, 6, 5, 5), True, {}, "nChw16c"),  # parts of 9 + 4 images
    "stem_3x3": ((8, 3, 32, 32), (64, 3, 3, 3), False, {"padding": [1, 1]}, "nChw16c"),
    "strided_3x3": ((8, 64, 16, 16), (128, 64, 3, 3), False, {"padding": [1, 1], "stride": [2, 2]}, "nChw16c"),
    "1x1_stride2": ((8, 64, 16, 16), (128, 64, 1, 1), False, {"stride": [2, 2]}, "nChw16c"),
    "1x1_bias": ((8, 256, 8, 8), (64, 256, 1, 1), True, {}, "nChw16c"),
    "grouped_dilated": ((6, 32, 12, 12), (32, 8, 3, 3), True, {"padding": [2, 2], "dilation": [2, 2], "groups": 4},
                        "nChw16c"),
    "plain_layout": ((8, 16, 12, 12), (24, 16, 3, 3), True, {"padding": [1, 1]}, "plain"),
    "nhwc_layout": ((8, 16, 12, 12), (24, 16, 3, 3), True, {"padding": [1, 1], "stride": [2, 2]}, "nhwc"),
}


@pytest.mark.parametrize("case", sorted(CONV))
def test_conv2d_direct(case):
    x, w, bias, attrs, layout = CONV[case]
    shapes = [x, w] + ([(w[0],)] if bias else [])
    check_thread_independent("conv2d", shapes, attrs, layout=layout)


# ---- conv2d: Winograd F(4x4, 3x3) forward / backward-data and the three weight-gradient splits ----
pytestmark_wino = pytest.mark.skipif(not cn.has_avx512(), reason="the Winograd path needs AVX-512")
WINO = {
    # dw split 0 (private partial dU per fixed tile range), several partials and a tail chunk; forward in chunks
    "chunks_dw_partials": ((10, 64, 22, 22), (64, 64, 3, 3), True, {"padding": [1, 1]}),
    # dw split 1 (36 points of a shared dU per chunk; db by fixed row groups)
    "dw_points": ((4, 128, 16, 16), (256, 128, 3, 3), True, {"padding": [1, 1]}),
    # dw split 2 (output blocks over all tiles; db by fixed tile groups), forward "whole" (few tiles, wide)
    "whole_dw_blocks": ((8, 256, 8, 8), (256, 256, 3, 3), True, {"padding": [1, 1]}),
    "padding0_and_2": ((4, 64, 13, 11), (64, 64, 3, 3), False, {"padding": [0, 2]}),
}


@pytestmark_wino
@pytest.mark.parametrize("case", sorted(WINO))
def test_conv2d_winograd(case):
    x, w, bias, attrs = WINO[case]
    shapes = [x, w] + ([(w[0],)] if bias else [])
    check_thread_independent("conv2d", shapes, attrs)


@pytestmark_wino
@pytest.mark.slow
def test_conv2d_winograd_512_channels():
    check_thread_independent("conv2d", [(16, 512, 4, 4), (512, 512, 3, 3)], {"padding": [1, 1]}, wrt=[0, 1])


# ---- linear: output blocks of one-thread matmuls; db a column sum ----
LINEAR = {
    "fc_512_10": ((64, 512), 10, True),
    "lenet_fc1": ((64, 400), 120, True),
    "edge_blocks": ((300, 270), 260, True),  # rows and columns past one 256 block
    "no_bias": ((16, 96), 40, False),
}


@pytest.mark.parametrize("case", sorted(LINEAR))
def test_linear(case):
    x, out, bias = LINEAR[case]
    shapes = [x, (out, x[1])] + ([(out,)] if bias else [])
    check_thread_independent("linear", shapes, {}, layout="plain")


@pytest.mark.slow
def test_linear_4096():
    # oneDNN's inner product splits the reduction across threads here (forward differs at 1 and 2 threads)
    check_thread_independent("linear", [(64, 4096), (4096, 4096), (4096,)], {}, layout="plain")


# ---- conv_transpose2d ----
DECONV = {
    "unet_up_2x2_s2": ((8, 128, 8, 8), (128, 64, 2, 2), {"stride": [2, 2]}),
    "k3_s2_outpad": ((6, 32, 9, 9), (32, 16, 3, 3), {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}),
    "grouped": ((5, 16, 7, 7), (16, 4, 3, 3), {"groups": 2, "padding": [1, 1]}),
}


@pytest.mark.parametrize("case", sorted(DECONV))
def test_conv_transpose2d(case):
    x, w, attrs = DECONV[case]
    g = attrs.get("groups", 1)
    check_thread_independent("conv_transpose2d", [x, w, (w[1] * g,)], attrs)


# ---- the other ops of these files (elementwise or fixed-order per element already; checked all the same) ----
OTHER = {
    "lrn_odd": ("lrn", [(8, 32, 12, 12)], {"size": 5, "alpha": 1e-3, "beta": 0.75, "k": 2.0}),
    "lrn_even_native": ("lrn", [(8, 32, 12, 12)], {"size": 4, "alpha": 1e-3, "beta": 0.75, "k": 2.0}),
    "concat_split": ("concat", [(8, 64, 10, 10), (8, 24, 10, 10)], {"axis": 1}),
    "upsample": ("upsample_nearest2d", [(8, 32, 12, 12)], {"scale": [2, 3]}),
    "relu": ("relu", [(8, 64, 16, 16)], {}),
    "sigmoid": ("sigmoid", [(8, 64, 16, 16)], {}),
    "tanh": ("tanh", [(8, 64, 16, 16)], {}),
    "leaky_relu": ("leaky_relu", [(8, 64, 16, 16)], {"negative_slope": 0.1}),
    "add": ("add", [(8, 64, 16, 16), (8, 64, 16, 16)], {}),
    "dropout": ("dropout", [(16, 3000)], {"p": 0.3}),
    "dropout_blocked": ("dropout", [(8, 40, 9, 9)], {"p": 0.5}),
}


@pytest.mark.parametrize("case", sorted(OTHER))
def test_other_ops(case):
    op, shapes, attrs = OTHER[case]
    check_thread_independent(op, shapes, attrs, tol=1e-6)


# ---- a session compiled at one thread count and run at another ----
@pytest.mark.parametrize("compile_threads,run_threads", [(1, 3), (3, 1), (4, 2)])
@pytest.mark.parametrize("case", ["conv", "winograd", "linear", "deconv"])
def test_compiled_and_run_at_other_thread_counts(case, compile_threads, run_threads):
    if case == "winograd" and not cn.has_avx512():
        pytest.skip("needs AVX-512")
    op, shapes, attrs = {
        "conv": ("conv2d", [(9, 16, 14, 14), (32, 16, 5, 5), (32,)], {"padding": [2, 2]}),
        "winograd": ("conv2d", [(6, 64, 16, 16), (64, 64, 3, 3), (64,)], {"padding": [1, 1]}),
        "linear": ("linear", [(40, 300), (50, 300), (50,)], {}),
        "deconv": ("conv_transpose2d", [(8, 32, 8, 8), (32, 16, 2, 2), (16,)], {"stride": [2, 2]}),
    }[case]
    arrays = _arrays(shapes)
    wrt = list(range(len(shapes)))
    layout = "plain" if op == "linear" else "nChw16c"
    ref = run_op(op, arrays, attrs, wrt, 1, True, layout)
    got = run_op(op, arrays, attrs, wrt, compile_threads, True, layout, run_threads=run_threads)
    for a, b in zip(got, ref):
        assert np.array_equal(a, b)


def test_flag_default_and_global_switch():
    cn.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 4))
    assert not cn.are_deterministic_algorithms_enabled()
    assert not m.compile((2, 8), mode="train", optimizer=cn.optim.SGD(lr=0.1)).deterministic
    cn.use_deterministic_algorithms(True)
    try:
        assert m.compile((2, 8), mode="train", optimizer=cn.optim.SGD(lr=0.1)).deterministic
        assert not m.compile((2, 8), mode="train", optimizer=cn.optim.SGD(lr=0.1), deterministic=False).deterministic
    finally:
        cn.use_deterministic_algorithms(False)


# ---- end to end: a network of conv, linear, relu, max pool, dropout and concat, trained at 1, 2, 3 threads ----
class Net(nn.Module):
    """stem conv 3->64, a Winograd-sized 3x3 conv 64->64 beside a 1x1 conv 64->32 (concatenated), max pool, a
    strided conv, dropout, two linear layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.a = nn.Conv2d(64, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 32, 1)
        self.pool = nn.MaxPool2d(2)
        self.c = nn.Conv2d(96, 48, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc1 = nn.Linear(48 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        h = self.stem(x).relu()
        h = cn.functional.cat([self.a(h).relu(), self.b(h).relu()], 1)
        h = self.c(self.pool(h)).relu()
        h = self.drop(h.flatten(1))
        return self.fc2(self.fc1(h).relu())


def _train(threads, deterministic=True, steps=3, batch=12, **kw):
    cn.set_num_threads(threads)
    cn.manual_seed(0)
    m = Net()
    s = m.compile((batch, 3, 16, 16), mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9),
                  deterministic=deterministic, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    losses = [s.step(x, y) for _ in range(steps)]
    return losses, {k: v.copy() for k, v in m.state_dict().items()}


def test_training_bitwise_equal_across_thread_counts():
    ref_losses, ref = _train(1)
    for t in (2, 3):
        losses, sd = _train(t)
        assert losses == ref_losses, t
        for k in ref:
            assert np.array_equal(sd[k], ref[k]), f"{k}: {t} threads differ from 1 (max rel {_rel(sd[k], ref[k]):.2e})"
    off_losses, off = _train(2, deterministic=False)
    np.testing.assert_allclose(off_losses, ref_losses, rtol=1e-4)
    for k in ref:
        assert _rel(off[k], ref[k]) < 1e-3, k


def test_training_allocates_nothing_per_step():
    cn.set_num_threads(2)
    cn.manual_seed(0)
    m = Net()
    s = m.compile((8, 3, 16, 16), mode="train", optimizer=cn.optim.SGD(lr=0.05), deterministic=True)
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    y = np.arange(8, dtype=np.int32)
    s.step(x, y)
    before = cn.allocation_count()
    for _ in range(2):
        s.step(x, y)
    assert cn.allocation_count() == before


class InferNet(nn.Module):
    """Inference-time fusions: conv-BN-ReLU (fused_conv2d, direct), a residual conv-BN-add-ReLU at 64 channels
    (fused Winograd), a strided conv-BN-ReLU, global pooling, linear-ReLU (fused_linear), linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.a, self.bn1 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.down, self.bn2 = nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128)
        self.fc1, self.fc2 = nn.Linear(128, 64), nn.Linear(64, 10)

    def forward(self, x):
        h = self.bn0(self.stem(x)).relu()
        h = (self.bn1(self.a(h)) + h).relu()
        h = self.bn2(self.down(h)).relu()
        h = cn.functional.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc2(self.fc1(h).relu())


def test_inference_fused_kernels():
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    outs = {}
    for det, t in ((True, 1), (True, 2), (True, 3), (False, 2)):
        cn.set_num_threads(t)
        cn.manual_seed(0)
        m = InferNet()
        for bn in (m.bn0, m.bn1, m.bn2):  # non-trivial folded statistics
            with cn.no_grad():
                bn.running_mean[:] = np.linspace(-0.2, 0.2, bn.running_mean.size)
                bn.running_var[:] = np.linspace(0.5, 1.5, bn.running_var.size)
        s = m.compile(x.shape, mode="infer", deterministic=det)
        ops = [e.split()[0] for e in s._s.schedule()]
        assert ops.count("fused_conv2d") == 3 and "fused_linear" in ops, ops
        outs[det, t] = s.run(x).copy()
    for t in (2, 3):
        assert np.array_equal(outs[True, t], outs[True, 1]), t
    assert _rel(outs[True, 1], outs[False, 2]) < 1e-4


@pytest.mark.skipif(not cn.has_bf16(), reason="needs AVX512-BF16")
def test_bf16_mixed_precision_training():
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1, stride=2)
            self.fc = nn.Linear(64 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(self.c2(self.c1(x).relu()).relu().flatten(1))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 16).astype(np.int32)
    sds = {}
    for t in (1, 3):
        cn.set_num_threads(t)
        cn.manual_seed(0)
        m = Small()
        s = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.05), dtype="bfloat16", deterministic=True)
        for _ in range(3):
            s.step(x, y)
        sds[t] = {k: v.copy() for k, v in m.state_dict().items()}
    for k in sds[1]:
        assert np.array_equal(sds[1][k], sds[3][k]), k


@pytest.mark.slow
def test_training_plain_layout_and_no_winograd():
    ref_losses, ref = _train(1, layout="plain", winograd=False)
    losses, sd = _train(3, layout="plain", winograd=False)
    assert losses == ref_losses
    for k in ref:
        assert np.array_equal(sd[k], ref[k]), k
