"""adaptive_avg_pool2d: check_op against a numpy reference of PyTorch's windows, and forward + backward
against F.adaptive_avg_pool2d on both CPU paths (oneDNN pooling when H % OH == 0 and W % OW == 0, native
loops otherwise), including outputs larger than the input, 1x1 and 7x7; shape and attribute errors.
"""
import math

import numpy as np
import pytest

from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def _normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def np_adaptive_avg_pool2d(x, oh, ow):
    N, C, H, W = x.shape
    y = np.empty((N, C, oh, ow))
    for i in range(oh):
        h0, h1 = (i * H) // oh, math.ceil((i + 1) * H / oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, math.ceil((j + 1) * W / ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


# (x shape, output); the comment says which CPU path runs.
CASES = {
    "7x7_to_7x7": ((1, 2, 7, 7), [7, 7]),          # oneDNN, kernel 1
    "14x14_to_7x7": ((1, 1, 14, 14), [7, 7]),      # oneDNN, kernel 2
    "8x6_to_4x3": ((2, 2, 8, 6), [4, 3]),          # oneDNN, kernel 2x2
    "7x7_to_1x1": ((2, 3, 7, 7), [1, 1]),          # oneDNN, global
    "6x9_to_2x3": ((1, 2, 6, 9), [2, 3]),          # oneDNN, kernel 3x3
    "13x13_to_7x7": ((1, 1, 13, 13), [7, 7]),      # native, overlapping windows
    "3x3_to_5x5": ((1, 2, 3, 3), [5, 5]),          # native, output larger than input
    "5x7_to_3x2": ((2, 2, 5, 7), [3, 2]),          # native
    "4x5_to_2x3": ((1, 2, 4, 5), [2, 3]),          # native in W only
    "2x3_to_6x6": ((1, 1, 2, 3), [6, 6]),          # native, repeats every row and column
}


@pytest.mark.parametrize("name", list(CASES))
def test_adaptive_avg_pool2d(name):
    shape, out = CASES[name]
    check_op("adaptive_avg_pool2d", [_normal(shape)], {"output": out},
             numpy_ref=lambda x: [np_adaptive_avg_pool2d(x, *out)])


def test_int_output_means_square():
    x = _normal((1, 2, 5, 5), 1)
    (y,) = run_forward("adaptive_avg_pool2d", [x], {"output": 3})
    assert_close(y, np_adaptive_avg_pool2d(x.astype(np.float64), 3, 3), 1e-5, 1e-6, "output=3")


TORCH_CASES = [
    ((2, 3, 7, 7), (1, 1)), ((2, 3, 7, 7), (7, 7)), ((1, 4, 14, 14), (7, 7)), ((1, 4, 13, 13), (7, 7)),
    ((2, 2, 3, 3), (5, 5)), ((1, 3, 3, 5), (5, 3)), ((2, 2, 10, 6), (5, 4)), ((1, 2, 9, 11), (2, 3)),
    ((1, 1, 1, 1), (2, 3)), ((2, 8, 16, 12), (4, 4)),
]


@pytest.mark.parametrize("shape,out", TORCH_CASES)
def test_matches_torch(shape, out):
    torch = pytest.importorskip("torch")
    x = _normal(shape, 2)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, out)
    dy = np.random.default_rng(3).standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(dy))
    for backend in ("cpu", "reference"):
        (y,) = run_forward("adaptive_avg_pool2d", [x], {"output": list(out)}, backend=backend)
        assert_close(y, yt.detach().numpy(), 1e-5, 1e-6, f"{shape}->{out} {backend} forward")
        (dx,) = run_backward("adaptive_avg_pool2d", [x], {"output": list(out)}, [dy], [0], backend=backend)
        assert_close(dx, xt.grad.numpy(), 1e-5, 1e-6, f"{shape}->{out} {backend} backward")


def test_large_native_and_pooled_paths_agree_with_reference():
    # Enough planes for several threads on either CPU path.
    for shape, out in (((4, 16, 23, 19), [7, 7]), ((4, 16, 28, 21), [7, 7])):
        x = _normal(shape, 4)
        dy = np.random.default_rng(5).standard_normal((shape[0], shape[1], *out))
        fast = run_forward("adaptive_avg_pool2d", [x], {"output": out})[0]
        ref = run_forward("adaptive_avg_pool2d", [x], {"output": out}, backend="reference")[0]
        assert_close(fast, ref, 1e-5, 1e-6, f"{shape} forward")
        fdx = run_backward("adaptive_avg_pool2d", [x], {"output": out}, [dy], [0])[0]
        rdx = run_backward("adaptive_avg_pool2d", [x], {"output": out}, [dy], [0], backend="reference")[0]
        assert_close(fdx, rdx, 1e-5, 1e-6, f"{shape} backward")


@pytest.mark.parametrize("layout", ["plain", "nChw16c", "nChw8c", "nhwc"])
def test_large_windows_run_natively_in_every_layout(layout):
    # divisible 16x16 windows (native from 256 elements, float64 sums) and overlapping ones, every layout
    from cnnnative import _core as core
    for shape, out in (((2, 20, 64, 48), [4, 3]), ((1, 20, 50, 45), [3, 2])):
        x = _normal(shape, 6)
        g = core.Graph()
        xi = g.add_input("x", list(shape))
        g.set_outputs(g.add_node("adaptive_avg_pool2d", [xi], {"output": out}, "pool"))
        s = core.Session(g, core.ParamStore([]), "infer", layout=layout)
        s.run([x])
        assert_close(s.fetch(0), np_adaptive_avg_pool2d(x.astype(np.float64), *out), 1e-5, 1e-6, f"{shape} {layout}")
    check_op("adaptive_avg_pool2d", [_normal((1, 2, 32, 34), 7)], {"output": [2, 2]},
             numpy_ref=lambda x: [np_adaptive_avg_pool2d(x, 2, 2)], grad=False)


# ---- errors ----

def _add(shape, attrs, name="head.pool"):
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    return g.add_node("adaptive_avg_pool2d", [x], attrs, name)


def test_wrong_rank():
    with pytest.raises(_core.Error, match=r"op 'adaptive_avg_pool2d' \(node 'head.pool'\): expects x \[N, C, H, W\], got \[2, 3, 4\]"):
        _add((2, 3, 4), {"output": [1, 1]})


def test_bad_output_attr():
    with pytest.raises(_core.Error, match=r"\(node 'head.pool'\): attribute 'output' must be an int or \[oh, ow\], got \[\]"):
        _add((1, 1, 4, 4), {})
    with pytest.raises(_core.Error, match=r"attribute 'output' must be an int or \[oh, ow\], got \[1, 2, 3\]"):
        _add((1, 1, 4, 4), {"output": [1, 2, 3]})
    with pytest.raises(_core.Error, match=r"output size must be positive, got \[0, 2\]"):
        _add((1, 1, 4, 4), {"output": [0, 2]})


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    dy = g.add_input("dy", [1, 2, 3, 3])
    with pytest.raises(_core.Error, match=r"op 'adaptive_avg_pool2d_grad' \(node 'g'\): dy must be \[1, 2, 2, 2\] for "
                                          r"input_shape \[1, 2, 5, 5\], got \[1, 2, 3, 3\]"):
        g.add_node("adaptive_avg_pool2d_grad", [dy], {"output": [2, 2], "input_shape": [1, 2, 5, 5]}, "g")
    with pytest.raises(_core.Error, match=r"attribute 'input_shape' must be \[N, C, H, W\], got \[5, 5\]"):
        g.add_node("adaptive_avg_pool2d_grad", [dy], {"output": [3, 3], "input_shape": [5, 5]}, "g")
