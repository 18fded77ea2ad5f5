"""Every op on the cuda backend against the CPU reference backend (the naive kernels that define the ops), float32
with TF32 off: forward outputs (float ones: a workspace output such as max-pool's indices is each backend's own
format, as the cpu backend's already differs from the reference's; dropout masks are compared separately and must be
equal), then a grad session's input gradients, which run the ops' backward ops (conv2d_grad_data,
max_pool2d_grad, ...) on the cuda backend. Each session runs three times, so the CUDA-graph replay is compared too.
Fused ops (fused_conv2d, fused_linear) are formed by the compile pipeline and checked on small chains."""
import numpy as np
import pytest

from cnnnative import _core
import cnnnative as cn
from cudacheck import BACKEND, assert_close, backward, check_op_cuda, forward, session, sync


def _n(shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _away(shape, seed=0):
    x = _n(shape, seed)
    x[np.abs(x) < 0.05] += 0.1  # off the kink of relu / leaky_relu
    return x


def _distinct(shape, seed=0):
    """Values without ties (max-pool gradients go to one element; a tie may pick either)."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n).reshape(shape) / n - 0.5).astype(np.float32)


def _labels(n, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).astype(np.int32)


def _bn_inputs(shape, seed=0):
    c = shape[1]
    rng = np.random.default_rng(seed)
    return [_n(shape, seed), (0.5 + rng.random(c)).astype(np.float32), _n((c,), seed + 1, 0.2),
            _n((c,), seed + 2, 0.2), (0.5 + rng.random(c)).astype(np.float32)]


# id: (op, inputs, attrs, wrt (None: every float input), grad_outputs (None: forward only))
CASES = {
    "relu": ("relu", [_away((2, 3, 5, 4))], {}, None, (0,)),
    "relu_large": ("relu", [_away((3, 64, 33, 17), 1)], {}, None, (0,)),
    "sigmoid": ("sigmoid", [_n((3, 4, 5))], {}, None, (0,)),
    "tanh": ("tanh", [_n((3, 4, 5))], {}, None, (0,)),
    "leaky_relu": ("leaky_relu", [_away((2, 3, 4))], {"negative_slope": 0.2}, None, (0,)),
    "leaky_relu_neg": ("leaky_relu", [_away((2, 3, 4))], {"negative_slope": -0.5}, None, (0,)),
    "add": ("add", [_n((2, 3, 4)), _n((2, 3, 4), 1)], {}, None, (0,)),
    "reshape": ("reshape", [_n((2, 3, 4))], {"shape": [2, -1]}, None, (0,)),
    "flatten": ("flatten", [_n((2, 3, 2, 2))], {"start_dim": 1, "end_dim": -1}, None, (0,)),
    "conv2d_3x3": ("conv2d", [_n((2, 3, 9, 9)), _n((8, 3, 3, 3), 1), _n((8,), 2)], {"padding": [1, 1]}, None, (0,)),
    "conv2d_stride2_nobias": ("conv2d", [_n((2, 4, 9, 8)), _n((6, 4, 3, 3), 1)],
                              {"stride": [2, 2], "padding": [1, 1]}, None, (0,)),
    "conv2d_groups_dilation": ("conv2d", [_n((1, 4, 8, 8)), _n((4, 2, 2, 3), 1)],
                               {"groups": 2, "stride": [2, 3], "padding": [0, 2], "dilation": [2, 1]}, None, (0,)),
    "conv2d_depthwise": ("conv2d", [_n((2, 8, 7, 7)), _n((8, 1, 3, 3), 1), _n((8,), 2)],
                         {"groups": 8, "padding": [1, 1]}, None, (0,)),
    "conv2d_1x1": ("conv2d", [_n((2, 16, 6, 6)), _n((32, 16, 1, 1), 1), _n((32,), 2)], {}, None, (0,)),
    "conv2d_7x7_s2": ("conv2d", [_n((2, 3, 32, 32)), _n((16, 3, 7, 7), 1)],
                      {"stride": [2, 2], "padding": [3, 3]}, None, (0,)),
    "conv2d_wide": ("conv2d", [_n((4, 64, 14, 14)), _n((64, 64, 3, 3), 1, 0.05), _n((64,), 2)],
                    {"padding": [1, 1]}, None, (0,)),
    "conv_transpose2d": ("conv_transpose2d", [_n((2, 4, 5, 5)), _n((4, 3, 2, 2), 1), _n((3,), 2)],
                         {"stride": [2, 2]}, None, (0,)),
    "conv_transpose2d_pad_outpad": ("conv_transpose2d", [_n((1, 4, 5, 5)), _n((4, 6, 3, 3), 1)],
                                    {"stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, None, (0,)),
    "conv_transpose2d_groups": ("conv_transpose2d", [_n((1, 4, 4, 4)), _n((4, 2, 3, 3), 1), _n((4,), 2)],
                                {"groups": 2, "dilation": [2, 1], "padding": [1, 0]}, None, (0,)),
    "linear": ("linear", [_n((5, 7)), _n((3, 7), 1), _n((3,), 2)], {}, None, (0,)),
    "linear_nobias": ("linear", [_n((4, 6)), _n((9, 6), 1)], {}, None, (0,)),
    "linear_large": ("linear", [_n((64, 512)), _n((100, 512), 1, 0.05), _n((100,), 2)], {}, None, (0,)),
    "max_pool2d_infer": ("max_pool2d", [_distinct((2, 3, 8, 8))], {"kernel": [2, 2]}, None, None),
    "max_pool2d": ("max_pool2d", [_distinct((2, 3, 8, 8))], {"kernel": [2, 2], "training": 1}, None, (0,)),
    "max_pool2d_train": ("max_pool2d", [_distinct((2, 3, 9, 9))],
                         {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "training": 1}, None, (0,)),
    "max_pool2d_ceil": ("max_pool2d", [_distinct((1, 2, 7, 7))],
                        {"kernel": [2, 2], "stride": [2, 2], "ceil_mode": 1, "training": 1}, None, (0,)),
    "max_pool2d_dilation": ("max_pool2d", [_distinct((1, 2, 9, 9))], {"kernel": [2, 2], "dilation": [2, 2], "training": 1},
                            None, (0,)),
    "avg_pool2d": ("avg_pool2d", [_n((2, 3, 8, 8))], {"kernel": [2, 2]}, None, (0,)),
    "avg_pool2d_pad_include": ("avg_pool2d", [_n((2, 3, 7, 7))],
                               {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}, None, (0,)),
    "avg_pool2d_pad_exclude": ("avg_pool2d", [_n((2, 3, 7, 7))],
                               {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "count_include_pad": 0},
                               None, (0,)),
    "avg_pool2d_ceil": ("avg_pool2d", [_n((1, 2, 7, 7))], {"kernel": [2, 2], "ceil_mode": 1}, None, (0,)),
    "global_avg_pool": ("global_avg_pool", [_n((2, 5, 7, 6))], {}, None, (0,)),
    "adaptive_avg_pool2d": ("adaptive_avg_pool2d", [_n((2, 3, 7, 9))], {"output": [3, 4]}, None, (0,)),
    "adaptive_avg_pool2d_up": ("adaptive_avg_pool2d", [_n((1, 2, 2, 3))], {"output": [5, 4]}, None, (0,)),
    "batch_norm_train": ("batch_norm", _bn_inputs((4, 3, 5, 5)), {"training": 1, "track_running_stats": 0,
                                                                  "eps": 1e-5}, [0, 1, 2], (0,)),
    "batch_norm_train_2d": ("batch_norm", _bn_inputs((8, 6)), {"training": 1, "track_running_stats": 0, "eps": 1e-5},
                            [0, 1, 2], (0,)),
    "batch_norm_eval": ("batch_norm", _bn_inputs((3, 4, 5, 5), 1), {"training": 0, "eps": 1e-5}, [0, 1, 2], (0,)),
    "lrn": ("lrn", [_n((2, 7, 5, 5))], {"size": 5, "alpha": 1e-2, "beta": 0.75, "k": 2.0}, None, (0,)),
    "lrn_size3": ("lrn", [_n((2, 4, 3, 3))], {"size": 3}, None, (0,)),
    "softmax": ("softmax", [_n((3, 5), 0, 3.0)], {}, None, (0,)),
    "softmax_axis1": ("softmax", [_n((2, 7), 1, 3.0)], {"axis": 1}, None, (0,)),
    "reduce_mean": ("reduce_mean", [_n((2, 3, 4, 5), 0)], {"axes": [2, 3], "keepdim": 1}, None, (0,)),
    "reduce_mean_channels": ("reduce_mean", [_n((2, 3, 4, 5), 1)], {"axes": [1], "keepdim": 0}, None, (0,)),
    "reduce_sum": ("reduce_sum", [_n((2, 3, 4, 5), 2)], {"axes": [0, 2], "keepdim": 0}, None, (0,)),
    "reduce_max": ("reduce_max", [_n((2, 3, 4, 5), 3)], {"axes": [1, 3], "keepdim": 1}, None, (0,)),
    "softmax_axis": ("softmax_axis", [_n((2, 4, 3, 3), 0, 3.0)], {"axis": 1}, None, (0,)),
    "log_softmax": ("log_softmax", [_n((2, 3, 7), 1, 3.0)], {"axis": -1}, None, (0,)),
    "softmax_cross_entropy": ("softmax_cross_entropy", [_n((6, 10), 0, 3.0), _labels(6, 10)], {}, [0], (0,)),
    "mse_loss": ("mse_loss", [_n((3, 4, 5)), _n((3, 4, 5), 1)], {}, None, (0,)),
    "bce_with_logits": ("bce_with_logits", [_n((4, 6), 0, 3.0), np.random.default_rng(1).random((4, 6))
                                            .astype(np.float32)], {}, None, (0,)),
    "concat_axis1": ("concat", [_n((2, 3, 4, 4)), _n((2, 5, 4, 4), 1), _n((2, 1, 4, 4), 2)], {"axis": 1}, None,
                     (0,)),
    "concat_axis_last": ("concat", [_n((2, 3, 4)), _n((2, 3, 2), 1)], {"axis": -1}, None, (0,)),
    "concat_axis0": ("concat", [_n((2, 3)), _n((1, 3), 1)], {"axis": 0}, None, (0,)),
    "split": ("split", [_n((2, 9, 3, 3))], {"axis": 1, "sizes": [2, 3, 4]}, None, None),
    "split_last": ("split", [_n((3, 31))], {"axis": -1, "sizes": [30, 1]}, None, None),  # split has no grad rule
    "upsample_nearest2d": ("upsample_nearest2d", [_n((2, 3, 4, 5))], {"scale": [2, 3]}, None, (0,)),
    "resize2d_bilinear_scale": ("resize2d", [_n((2, 3, 5, 4))], {"size": [9, 7], "rh": 1 / 1.7, "rw": 0.6}, None,
                                (0,)),
    "resize2d_bilinear_down": ("resize2d", [_n((2, 3, 9, 8))], {"size": [4, 3]}, None, (0,)),
    "resize2d_align_corners": ("resize2d", [_n((2, 3, 5, 4))], {"size": [8, 1], "coord": 2}, None, (0,)),
    "resize2d_nearest": ("resize2d", [_n((2, 3, 5, 4))], {"size": [7, 9], "mode": 0, "coord": 0}, None, (0,)),
    "resize2d_nearest_exact_down": ("resize2d", [_n((2, 3, 9, 8))],
                                    {"size": [4, 5], "mode": 0, "coord": 1, "nearest": 2}, None, (0,)),
    "resize2d_large": ("resize2d", [_n((2, 21, 28, 28))], {"size": [224, 224]}, None, (0,)),
    "pad": ("pad", [_n((2, 3, 4, 5))], {"pads": [1, 2, 0, 1], "value": 0.5}, None, (0,)),
    "pad_zero": ("pad", [_n((1, 2, 3, 3))], {"pads": [2, 0, 1, 0]}, None, (0,)),
    "transpose": ("transpose", [_n((2, 3, 4, 5))], {"perm": [0, 2, 3, 1]}, None, (0,)),
    "slice": ("slice", [_n((2, 6, 7))], {"starts": [0, 1, 6], "steps": [1, 2, -3], "sizes": [2, 3, 3]}, None, (0,)),
    "pad_nd_reflect": ("pad_nd", [_n((2, 3, 4, 5))], {"pads": [0, 1, 2, 3, 0, 0, 1, 4], "mode": 1}, None, (0,)),
    "pad_nd_edge": ("pad_nd", [_n((2, 3, 5))], {"pads": [0, 0, 3, 1, 2, 0], "mode": 2}, None, (0,)),
    "matmul": ("matmul", [_n((2, 1, 3, 4)), _n((3, 4, 5), 1)], {}, None, (0,)),
    "matmul_trans": ("matmul", [_n((2, 4, 3)), _n((5, 4), 1)], {"trans_a": 1, "trans_b": 1}, None, (0,)),
    # issue 13's op families
    "binary_add": ("binary_add", [_n((2, 3, 4, 5)), _n((1, 3, 1, 1), 1)], {}, None, (0,)),
    "binary_sub": ("binary_sub", [_n((3, 1, 5)), _n((2, 3, 4, 5), 1)], {}, None, (0,)),
    "binary_mul": ("binary_mul", [_n((2, 3, 4, 5)), _n((2, 3, 1, 1), 1)], {}, None, (0,)),
    "binary_div": ("binary_div", [_n((2, 3, 4, 5)), _away((3, 1, 1), 1)], {}, None, (0,)),
    "binary_scalar": ("binary_scalar", [_n((2, 3, 4))], {"kind": 5, "value": 2.0}, None, None),
    "binary_scalar_mul": ("binary_scalar", [_n((2, 3, 4))], {"kind": 3, "value": 0.5}, None, (0,)),
    "sum_to": ("sum_to", [_n((2, 3, 4, 5))], {"shape": [1, 3, 1, 1], "scale": 0.5}, None, (0,)),
    "clip": ("clip", [_away((2, 3, 4, 5))], {"min": -0.5, "max": 0.7}, None, (0,)),
    "hardsigmoid": ("hardsigmoid", [_n((2, 3, 4), 0, 4.0)], {}, None, (0,)),
    "hardswish": ("hardswish", [_n((2, 3, 4), 0, 4.0)], {}, None, (0,)),
    "silu": ("silu", [_n((2, 3, 4))], {}, None, (0,)),
    "gelu": ("gelu", [_n((2, 3, 4))], {}, None, (0,)),
    "gelu_tanh": ("gelu", [_n((2, 3, 4))], {"approximate": 1}, None, (0,)),
    "mish": ("mish", [_n((2, 3, 4))], {}, None, (0,)),
    "elu": ("elu", [_n((2, 3, 4))], {"alpha": 0.7}, None, (0,)),
    "softplus": ("softplus", [_n((2, 3, 4))], {"beta": 2.0, "threshold": 1.0}, None, (0,)),
    "erf": ("erf", [_n((2, 3, 4))], {}, None, (0,)),
    "prelu": ("prelu", [_away((2, 3, 4, 5)), _n((3,), 1)], {}, None, (0,)),
    "prelu_shared": ("prelu", [_away((2, 3, 4)), _n((1,), 1)], {}, None, (0,)),
    "layer_norm": ("layer_norm", [_n((2, 3, 4, 5)), _n((5,), 1), _n((5,), 2)], {"axis": 3, "num_axes": 1}, None,
                   (0,)),
    "layer_norm_channels": ("layer_norm", [_n((2, 6, 3, 3)), _n((6,), 1), _n((6,), 2)], {"axis": 1, "num_axes": 1},
                            None, (0,)),
    "group_norm": ("group_norm", [_n((2, 4, 3, 3)), _n((4,), 1), _n((4,), 2)], {"groups": 2}, None, (0,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_forward_backward_vs_reference(name):
    op, inputs, attrs, wrt, grad_outputs = CASES[name]
    check_op_cuda(op, inputs, attrs, wrt=wrt, grad_outputs=grad_outputs or (0,), grad=grad_outputs is not None)


def test_every_forward_op_is_covered():
    """The table names every op that has a grad rule or is a plain forward op (grad ops run in the grad sessions,
    fused ops and reorder come from the compile pipeline and are checked below / not used by the cuda backend)."""
    covered = {c[0] for c in CASES.values()} | {"dropout", "fill"}
    derived = {n for n in _core.op_names() if n.endswith("_grad") or n.endswith(("_grad_data", "_grad_weights"))}
    rest = set(_core.op_names()) - derived - covered - {"fused_conv2d", "fused_linear", "reorder"}
    assert not rest, f"ops without a cuda test: {sorted(rest)}"


def test_fill():
    g = _core.Graph()
    g.set_outputs(g.add_node("fill", [], {"shape": [3, 4], "value": 1.5}, "f"))
    s = _core.Session(g, _core.ParamStore([]), "infer", backend=BACKEND, tf32=False)
    for _ in range(3):
        s.run([])
        np.testing.assert_array_equal(np.array(s.fetch(0)), np.full((3, 4), 1.5, np.float32))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_masks_equal_the_reference_per_step(p):
    """The counter-based mask (seed, step, index) is the same on every backend; later runs (graph replays) must
    pick up the new step from the device-side run info, not replay step 0's mask."""
    x = _n((3, 7, 11))
    cuda = forward("dropout", [x], {"p": p}, backend=BACKEND, runs=3, seed=7)
    s, _, _ = session("dropout", [x], {"p": p}, "reference", seed=7)
    masks = []
    for r in range(3):
        s.run([x])
        y_ref, m_ref = np.array(s.fetch(0)), np.array(s.fetch(1))
        y, m = cuda[r]
        assert m.dtype == np.uint8 and m.shape == x.shape
        np.testing.assert_array_equal(m, m_ref, err_msg=f"mask of run {r}")
        assert_close(y, y_ref, f"dropout output run {r}", rtol=1e-6, atol=0)
        masks.append(m)
    assert (masks[0] != masks[1]).any() and (masks[1] != masks[2]).any(), "the mask did not change per step"


def test_dropout_backward_uses_the_mask():
    x = _n((4, 50), 3)
    dy = _n((4, 50), 4)
    p = 0.3
    for r, (outs, (dx,)) in enumerate(backward("dropout", [x], {"p": p}, [dy], [0], backend=BACKEND, runs=3,
                                               seed=5)):
        y, m = outs
        assert_close(dx, dy * m / (1 - p), f"dropout dx run {r}", rtol=1e-6, atol=1e-7)


def test_dropout_grad_op():
    dy = _n((3, 40))
    mask = (np.random.default_rng(2).random((3, 40)) < 0.75).astype(np.uint8)
    check_op_cuda("dropout_grad", [dy, mask], {"p": 0.25}, grad=False)


def test_batch_norm_running_statistics():
    """Training-mode BN with running statistics as parameters: the statistics the cuda session writes back to the
    store after each run equal the reference's (momentum update with the unbiased variance)."""
    shape, C = (6, 3, 4, 4), 3
    results = {}
    for backend in ("reference", BACKEND):
        g = _core.Graph()
        x = g.add_input("x", list(shape))
        gamma, beta = g.add_input("gamma", [C]), g.add_input("beta", [C])
        rm, rv = g.add_param("rm", [C], trainable=False), g.add_param("rv", [C], trainable=False)
        outs = g.add_node("batch_norm", [x, gamma, beta, rm, rv], {"training": 1, "momentum": 0.1}, "bn")
        g.set_outputs([outs[0]])
        store = _core.ParamStore([("rm", [C], False), ("rv", [C], False)])
        with cn.no_grad():
            store.array("rm")[...] = 0.1
            store.array("rv")[...] = 2.0
        s = _core.Session(g, store, "grad", backend=backend, tf32=False, grad_of=[outs[0]], wrt=[x, gamma, beta])
        res = []
        for step in range(3):
            xs = _n(shape, step)
            s.run([xs, np.ones(C, np.float32), np.zeros(C, np.float32), _n(shape, 10 + step)])
            sync(s)
            res.append((np.array(s.fetch(0)), np.array(store.array("rm")), np.array(store.array("rv"))))
        results[backend] = res
    for step, (a, b) in enumerate(zip(results[BACKEND], results["reference"])):
        for what, u, v in zip(("y", "running_mean", "running_var"), a, b):
            assert_close(u, v, f"batch_norm {what} after step {step}")


def _chain_graph(kind, act="relu", act_attrs=None):
    """Small chains the fusion pass turns into fused_conv2d / fused_linear (conv + BN + add + act,
    linear + act; act relu or one of the activations fused as act 3), with parameters so that BN folds in
    inference."""
    rng = np.random.default_rng(0)
    if kind == "conv":
        params = {"w": rng.standard_normal((6, 3, 3, 3)) * 0.3, "b": rng.standard_normal(6) * 0.1,
                  "g": 0.5 + rng.random(6), "be": rng.standard_normal(6) * 0.1,
                  "rm": rng.standard_normal(6) * 0.1, "rv": 0.5 + rng.random(6)}
        store = _core.ParamStore([(k, list(v.shape), k not in ("rm", "rv")) for k, v in params.items()])
        with cn.no_grad():
            for k, v in params.items():
                store.array(k)[...] = v
        g = _core.Graph()
        x = g.add_input("x", [2, 3, 8, 8])
        skip = g.add_input("skip", [2, 6, 8, 8])
        p = {k: g.add_param(k, list(v.shape), trainable=k not in ("rm", "rv")) for k, v in params.items()}
        (y,) = g.add_node("conv2d", [x, p["w"], p["b"]], {"padding": [1, 1]}, "conv")
        y = g.add_node("batch_norm", [y, p["g"], p["be"], p["rm"], p["rv"]], {"training": 0}, "bn")[0]
        (y,) = g.add_node("add", [y, skip], {}, "sum")
        (y,) = g.add_node(act, [y], act_attrs or {}, "act")
        g.set_outputs([y])
        feeds = [_n((2, 3, 8, 8), 1), _n((2, 6, 8, 8), 2)]
    else:
        params = {"w": rng.standard_normal((5, 12)) * 0.3, "b": rng.standard_normal(5) * 0.1}
        store = _core.ParamStore([(k, list(v.shape), True) for k, v in params.items()])
        with cn.no_grad():
            for k, v in params.items():
                store.array(k)[...] = v
        g = _core.Graph()
        x = g.add_input("x", [4, 12])
        (y,) = g.add_node("linear", [x, g.add_param("w", [5, 12]), g.add_param("b", [5])], {}, "fc")
        (y,) = g.add_node(act, [y], act_attrs or {}, "act")
        g.set_outputs([y])
        feeds = [_n((4, 12), 1)]
    return g, store, feeds


CHAIN_ACTS = [("relu", {}), ("clip", {"min": 0.0, "max": 6.0}), ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}),
              ("hardswish", {}), ("silu", {}), ("gelu", {}), ("gelu", {"approximate": 1}), ("mish", {}),
              ("elu", {"alpha": 0.7})]


@pytest.mark.parametrize("act,act_attrs", CHAIN_ACTS)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fused_chains(kind, act, act_attrs):
    outs = {}
    for backend in ("reference", BACKEND):
        g, store, feeds = _chain_graph(kind, act, act_attrs)
        s = _core.Session(g, store, "infer", backend=backend, tf32=False)
        runs = []
        for _ in range(3 if backend == BACKEND else 1):
            s.run(feeds)
            sync(s)
            runs.append(np.array(s.fetch(0)))
        outs[backend] = runs
        if backend == BACKEND:
            print(f"\n[cuda] {kind} chain kernels: {s.schedule()}")
            assert not any(k.split()[0] == act for k in s.schedule()), s.schedule()
    for r, y in enumerate(outs[BACKEND]):
        assert_close(y, outs["reference"][0], f"{kind} {act} chain run {r}")


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(64, 256, 28, 28), (8, 3, 224, 224)])
def test_large_conv_vs_cpu(shape):
    """Realistic sizes against the cpu backend (oneDNN; the reference kernel would take minutes)."""
    x = _n(shape, 0, 0.5)
    w = _n((64, shape[1], 3, 3), 1, 0.05)
    attrs = {"padding": [1, 1], "stride": [2, 2]}
    cpu = forward("conv2d", [x, w], attrs, backend="cpu")[0][0]
    got = forward("conv2d", [x, w], attrs, backend=BACKEND, runs=2)
    for r, (y,) in enumerate(got):
        assert_close(y, cpu, f"conv2d {shape} run {r}")
    dy = _n(cpu.shape, 2)
    (_, g_cpu), = backward("conv2d", [x, w], attrs, [dy], [0, 1], backend="cpu")
    (_, g_cuda), = backward("conv2d", [x, w], attrs, [dy], [0, 1], backend=BACKEND)
    for name, a, b in zip(("dx", "dw"), g_cuda, g_cpu):
        assert_close(a, b, f"conv2d {shape} {name}", atol=1e-4)
