"""lrn (local response normalization across channels) and lrn_grad: check_op against a numpy reference written
from PyTorch's definition (zero-pad the squares by size//2 channels before and (size-1)//2 after, average over
size), for odd sizes (oneDNN) and even sizes (native loops, where oneDNN's window differs), AlexNet's parameters,
windows wider than C; forward and input gradients against torch.nn.functional.local_response_norm; a larger case
fast vs reference; no allocation after the first run; attribute and shape errors."""
import numpy as np
import pytest

from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def lrn_ref(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """b_c = a_c (k + alpha/size * sum_{c' = c - size//2}^{c + (size-1)//2} a_c'^2)^-beta, zeros past the edges."""
    C = x.shape[1]
    sq = np.pad(x * x, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    win = sum(sq[:, i:i + C] for i in range(size))
    return x * (k + alpha / size * win) ** -beta


def _attrs(size, alpha=1e-4, beta=0.75, k=1.0):
    return {"size": size, "alpha": float(alpha), "beta": float(beta), "k": float(k)}


# name: (x shape, size, alpha, beta, k, input scale); x is normal * scale, within a few hundred elements
CASES = {
    "size1": ((2, 4, 3, 3), 1, 0.5, 0.75, 1.0, 1.0),
    "size2": ((2, 5, 3, 3), 2, 0.5, 0.75, 1.0, 1.0),
    "size3": ((2, 6, 3, 3), 3, 0.3, 0.6, 0.5, 1.0),
    "size4": ((2, 6, 3, 3), 4, 0.8, 0.75, 1.0, 1.0),
    "size5": ((1, 7, 4, 4), 5, 1.0, 1.2, 2.0, 1.0),
    "size6": ((1, 7, 4, 4), 6, 1.0, 0.5, 1.5, 1.0),
    "alexnet": ((1, 8, 4, 4), 5, 1e-4, 0.75, 2.0, 60.0),  # large inputs so alpha = 1e-4 has a visible effect
    "window_wider_than_C": ((2, 3, 3, 3), 7, 0.7, 0.75, 1.0, 1.0),
    "single_channel_even": ((2, 1, 4, 4), 4, 0.7, 0.75, 1.0, 1.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_lrn(name):
    xs, size, alpha, beta, k, scale = CASES[name]
    x = (np.random.default_rng(sum(map(ord, name))).standard_normal(xs) * scale).astype(np.float32)
    attrs = _attrs(size, alpha, beta, k)
    check_op("lrn", [x], attrs, numpy_ref=lambda x: [lrn_ref(x, size, alpha, beta, k)])


def test_alexnet_normalization_is_visible():
    """Guards the alexnet case above: the normalization must change the input by more than the test tolerances."""
    x = (np.random.default_rng(0).standard_normal((1, 8, 4, 4)) * 60).astype(np.float64)
    assert np.abs(lrn_ref(x, 5, 1e-4, 0.75, 2.0) - x * 2.0 ** -0.75).max() > 1.0


def test_default_attrs_are_pytorchs():
    x = (np.random.default_rng(1).standard_normal((1, 6, 3, 3)) * 50).astype(np.float32)
    y = run_forward("lrn", [x], {"size": 3})[0]
    assert_close(y, lrn_ref(x.astype(np.float64), 3), 1e-4, 1e-5, "defaults alpha=1e-4, beta=0.75, k=1")


@pytest.mark.parametrize("size", [3, 4, 5])
def test_larger_fast_vs_reference(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((4, 32, 9, 9)).astype(np.float32)
    attrs = _attrs(size, 0.9, 0.75, 1.0)
    fast = run_forward("lrn", [x], attrs)[0]
    ref = run_forward("lrn", [x], attrs, backend="reference")[0]
    assert_close(fast, ref, 1e-4, 1e-5, "lrn forward: fast vs reference")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    fastg = run_backward("lrn", [x], attrs, [dy], [0])[0]
    refg = run_backward("lrn", [x], attrs, [dy], [0], backend="reference")[0]
    assert_close(fastg, refg, 1e-4, 1e-5, "lrn dx: fast vs reference")


TORCH_SWEEP = [  # (x shape, size, alpha, beta, k, scale)
    ((2, 16, 6, 6), 5, 1e-4, 0.75, 2.0, 50.0),  # AlexNet
    ((2, 16, 6, 6), 5, 1e-4, 0.75, 1.0, 50.0),  # nn.LocalResponseNorm(5) defaults
    ((2, 10, 5, 7), 1, 0.5, 0.75, 1.0, 1.0),
    ((2, 10, 5, 7), 2, 0.5, 0.75, 1.0, 1.0),
    ((2, 10, 5, 7), 3, 2.0, 0.5, 0.5, 1.0),
    ((2, 10, 5, 7), 4, 1.0, 0.75, 1.0, 1.0),
    ((2, 10, 5, 7), 6, 1.0, 1.5, 3.0, 1.0),
    ((2, 10, 5, 7), 7, 0.1, 0.75, 1.0, 2.0),
    ((1, 3, 4, 4), 8, 1.0, 0.75, 1.0, 1.0),
]


@pytest.mark.parametrize("case", TORCH_SWEEP)
def test_against_torch(case):
    torch = pytest.importorskip("torch")
    xs, size, alpha, beta, k, scale = case
    rng = np.random.default_rng(TORCH_SWEEP.index(case))
    x = (rng.standard_normal(xs) * scale).astype(np.float32)
    dy = rng.standard_normal(xs).astype(np.float32)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, size, alpha=alpha, beta=beta, k=k)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    attrs = _attrs(size, alpha, beta, k)
    y = run_forward("lrn", [x], attrs)[0]
    assert_close(y, ty.detach().numpy(), 1e-4, 1e-5 * scale, "lrn forward vs torch")
    dx = run_backward("lrn", [x], attrs, [dy], [0])[0]
    ref = tx.grad.numpy()
    assert_close(dx, ref, 1e-4, 1e-5 * float(np.abs(ref).max()), "lrn dx vs torch")


@pytest.mark.parametrize("size", [4, 5])
def test_no_allocation_after_first_run(size):
    x = np.random.default_rng(2).standard_normal((2, 8, 5, 5)).astype(np.float32)
    g = _core.Graph()
    xi = g.add_input("x", list(x.shape))
    y = g.add_node("lrn", [xi], _attrs(size, 0.5), "norm1")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[xi])
    s.run([x, x])
    before = _core.allocation_count()
    s.run([x, x])
    assert _core.allocation_count() == before
    assert [e.split()[0] for e in s.schedule()] == ["lrn", "lrn_grad"]


@pytest.mark.parametrize("xs, attrs, pattern", [
    ((2, 4, 5), {"size": 3}, r"x must be 4-D \[N, C, H, W\], got \[2, 4, 5\]"),
    ((2, 4, 5, 5), {}, r"missing attribute 'size'"),
    ((2, 4, 5, 5), {"size": 0}, r"attribute 'size' must be one integer >= 1, got \[0\]"),
    ((2, 4, 5, 5), {"size": [3, 3]}, r"attribute 'size' must be one integer >= 1, got \[3, 3\]"),
    ((2, 4, 5, 5), {"size": 5, "k": 2}, r"attribute 'k' must be a float, got the integer list \[2\]"),
])
def test_errors_name_node(xs, attrs, pattern):
    g = _core.Graph()
    xi = g.add_input("x", list(xs))
    with pytest.raises(_core.Error, match=r"op 'lrn' \(node 'features\.norm1'\): " + pattern):
        g.add_node("lrn", [xi], attrs, "features.norm1")


def test_grad_op_checks_dy_shape():
    g = _core.Graph()
    ids = [g.add_input("dy", [2, 4, 5, 4]), g.add_input("x", [2, 4, 5, 5])]
    with pytest.raises(_core.Error, match=r"op 'lrn_grad' \(node 'n/grad'\): dy expects x's shape \[2, 4, 5, 5\] float32, "
                                          r"got \[2, 4, 5, 4\] float32"):
        g.add_node("lrn_grad", ids, {"size": 3}, "n/grad")
