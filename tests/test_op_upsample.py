"""upsample_nearest2d and upsample_nearest2d_grad: check_op against numpy (np.repeat forward, block sums backward)
for square, non-square and unit scales; every output element's source index checked against PyTorch's nearest rule
(oneDNN rounds (o + 0.5)/s - 0.5, PyTorch floors o/s) on a larger input, fast vs reference; forward and gradient
against torch.nn.functional.interpolate; no allocation after the first run; attribute and shape errors."""
import numpy as np
import pytest

from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def upsample_ref(x, sh, sw):
    return x.repeat(sh, axis=2).repeat(sw, axis=3)


def upsample_grad_ref(dy, sh, sw):
    N, C, OH, OW = dy.shape
    return dy.reshape(N, C, OH // sh, sh, OW // sw, sw).sum(axis=(3, 5))


CASES = {  # name: (x shape, scale attr); dy stays within a few hundred elements
    "2x2": ((2, 3, 3, 4), [2, 2]),
    "3x3": ((1, 2, 3, 3), [3, 3]),
    "non_square": ((1, 2, 4, 3), [2, 3]),
    "rows_only": ((2, 2, 3, 3), [4, 1]),
    "identity": ((2, 3, 4, 4), [1, 1]),
    "scalar_scale": ((1, 3, 3, 3), 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_upsample(name):
    xs, scale = CASES[name]
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    x = np.random.default_rng(sum(map(ord, name))).standard_normal(xs).astype(np.float32)
    check_op("upsample_nearest2d", [x], {"scale": scale}, numpy_ref=lambda x: [upsample_ref(x, sh, sw)])


@pytest.mark.parametrize("scale", [[2, 2], [3, 5], [7, 1], [6, 4]])
def test_source_indices_and_block_sums(scale):
    """Distinct input values identify which input each output copied; the backward must sum each block exactly."""
    sh, sw = scale
    N, C, H, W = 2, 5, 13, 11
    x = np.arange(N * C * H * W, dtype=np.float32).reshape(N, C, H, W)
    y = run_forward("upsample_nearest2d", [x], {"scale": scale})[0]
    src = y.astype(np.int64)
    oh, ow = np.arange(H * sh), np.arange(W * sw)
    expected = x.astype(np.int64)[:, :, oh // sh][:, :, :, ow // sw]  # PyTorch: floor(o * (1/s)) = o // s
    assert (src == expected).all()
    assert (y == run_forward("upsample_nearest2d", [x], {"scale": scale}, backend="reference")[0]).all()
    dy = (np.random.default_rng(0).integers(-8, 9, size=y.shape) / 8).astype(np.float32)  # exact sums
    dx = run_backward("upsample_nearest2d", [x], {"scale": scale}, [dy], [0])[0]
    assert (dx == upsample_grad_ref(dy.astype(np.float64), sh, sw)).all()
    assert (dx == run_backward("upsample_nearest2d", [x], {"scale": scale}, [dy], [0], backend="reference")[0]).all()


@pytest.mark.parametrize("scale", [(2, 2), (3, 3), (2, 5), (4, 1), (5, 7)])
def test_against_torch(scale):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(scale[0] * 10 + scale[1])
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, scale_factor=scale, mode="nearest")
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(dy))
    y = run_forward("upsample_nearest2d", [x], {"scale": list(scale)})[0]
    assert y.shape == tuple(ty.shape)
    assert (y == ty.detach().numpy()).all()
    dx = run_backward("upsample_nearest2d", [x], {"scale": list(scale)}, [dy], [0])[0]
    assert_close(dx, tx.grad.numpy(), 1e-5, 1e-5, "dx vs torch")


def test_no_allocation_after_first_run():
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 5)).astype(np.float32)
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    y = g.add_node("upsample_nearest2d", [xi], {"scale": [2, 3]}, "up")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[xi])
    dy = np.ones((2, 3, 10, 15), np.float32)
    s.run([x, dy])
    before = _core.allocation_count()
    s.run([x, dy])
    assert _core.allocation_count() == before
    assert [e.split()[0] for e in s.schedule()] == ["upsample_nearest2d", "upsample_nearest2d_grad"]
    assert (s.fetch(1) == 6).all()


@pytest.mark.parametrize("xs, attrs, pattern", [
    ((2, 4, 5), {"scale": 2}, r"x must be 4-D \[N, C, H, W\], got \[2, 4, 5\]"),
    ((2, 4, 5, 5), {}, r"missing attribute 'scale' \(\[sh, sw\], integers >= 1\)"),
    ((2, 4, 5, 5), {"scale": [0, 2]}, r"attribute 'scale' must be 1 or 2 integers >= 1, got \[0, 2\]"),
    ((2, 4, 5, 5), {"scale": [2, 2, 2]}, r"attribute 'scale' must be 1 or 2 integers >= 1, got \[2, 2, 2\]"),
])
def test_errors_name_node(xs, attrs, pattern):
    g = _core.Graph()
    xi = g.add_input("x", list(xs))
    with pytest.raises(_core.Error, match=r"op 'upsample_nearest2d' \(node 'decoder\.up'\): " + pattern):
        g.add_node("upsample_nearest2d", [xi], attrs, "decoder.up")


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    dy = g.add_input("dy", [2, 4, 10, 9])
    with pytest.raises(_core.Error, match=r"op 'upsample_nearest2d_grad' \(node 'up/grad'\): dy expects \[2, 4, 10, 10\] "
                                          r"for input_shape \[2, 4, 5, 5\], got \[2, 4, 10, 9\]"):
        g.add_node("upsample_nearest2d_grad", [dy], {"scale": [2, 2], "input_shape": [2, 4, 5, 5]}, "up/grad")
