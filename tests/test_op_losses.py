"""mse_loss and bce_with_logits (mean reduction) -> loss [1]: check_op against numpy (both inputs
differentiated), PyTorch's F.mse_loss / F.binary_cross_entropy_with_logits for the loss and both gradients,
extreme logits, a loss that does not depend on the thread count, grad nodes only for requested inputs,
and shape errors that name the node.
"""
import numpy as np
import pytest

from cnnnative import _core
from opcheck import assert_close, check_op, run_backward, run_forward


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _np_mse(p, t):
    return [np.array([np.mean((p - t) ** 2)])]


def _np_bce(x, t):
    return [np.array([np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))])]


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2, 2)])
def test_mse_loss(shape):
    check_op("mse_loss", [_normal(shape, 0), _normal(shape, 1)], numpy_ref=_np_mse)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2, 2)])
def test_bce_with_logits(shape):
    x = _normal(shape, 2) * 3
    t = np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)
    check_op("bce_with_logits", [x, t], numpy_ref=_np_bce)


def test_bce_with_logits_hard_targets():
    x = _normal((4, 5), 4) * 4
    t = (np.random.default_rng(5).uniform(size=(4, 5)) > 0.5).astype(np.float32)
    check_op("bce_with_logits", [x, t], numpy_ref=_np_bce)


def _torch_case(op, fn, a, b):
    torch = pytest.importorskip("torch")
    ta = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    loss = fn(torch.nn.functional, ta, tb)
    dl = 0.7
    (loss * dl).backward()
    for backend in ("cpu", "reference"):
        (got,) = run_forward(op, [a, b], backend=backend)
        assert got.shape == (1,)
        np.testing.assert_allclose(got, [loss.item()], rtol=1e-5, atol=1e-7, err_msg=f"{op} {backend} loss")
        da, db = run_backward(op, [a, b], {}, [np.array([dl])], [0, 1], backend=backend)
        assert_close(da, ta.grad.numpy(), 1e-4, 1e-7, f"{op} {backend} d(input 0)")
        assert_close(db, tb.grad.numpy(), 1e-4, 1e-7, f"{op} {backend} d(input 1)")


def test_mse_loss_matches_torch():
    _torch_case("mse_loss", lambda F, p, t: F.mse_loss(p, t), _normal((4, 3, 5), 6), _normal((4, 3, 5), 7))


def test_bce_with_logits_matches_torch():
    x = _normal((4, 3, 5), 8) * 5
    t = np.random.default_rng(9).uniform(0, 1, (4, 3, 5)).astype(np.float32)
    _torch_case("bce_with_logits", lambda F, x, t: F.binary_cross_entropy_with_logits(x, t), x, t)


def test_large_losses_match_torch_and_are_thread_count_independent():
    # Above the parallel threshold and many chunks long: the fast loss equals float64 torch to float rounding,
    # and the chunked reduction gives the same bits with 1 thread and with several.
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shape = (8, 16, 40, 41)
    x, t = _normal(shape, 10) * 4, np.random.default_rng(11).uniform(0, 1, shape).astype(np.float32)
    want = {"mse_loss": F.mse_loss(torch.tensor(x, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)).item(),
            "bce_with_logits": F.binary_cross_entropy_with_logits(torch.tensor(x, dtype=torch.float64),
                                                                  torch.tensor(t, dtype=torch.float64)).item()}
    old = _core.get_num_threads()
    try:
        for op, w in want.items():
            got = {}
            for n in (1, 2, 3, 4):
                _core.set_num_threads(n)
                got[n] = run_forward(op, [x, t])[0]
            np.testing.assert_allclose(got[1], [w], rtol=2e-6, err_msg=op)
            for n in (2, 3, 4):
                np.testing.assert_array_equal(got[n], got[1], err_msg=f"{op}: {n} threads vs 1")
    finally:
        _core.set_num_threads(old)


def test_bce_extreme_logits_stay_finite():
    torch = pytest.importorskip("torch")
    x = np.array([[-100, 100, -100, 100, 0, 30, -30, 88.0]], np.float32)
    t = np.array([[0, 1, 1, 0, 0.5, 0, 1, 0.25]], np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(xt, tt)
    loss.backward()
    for backend in ("cpu", "reference"):
        (got,) = run_forward("bce_with_logits", [x, t], backend=backend)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, [loss.item()], rtol=1e-6, err_msg=backend)
        dx, dt = run_backward("bce_with_logits", [x, t], {}, [np.ones(1)], [0, 1], backend=backend)
        assert np.isfinite(dx).all() and np.isfinite(dt).all()
        assert_close(dx, xt.grad.numpy(), 1e-5, 1e-9, f"{backend} d(logits)")
        assert_close(dt, tt.grad.numpy(), 1e-6, 0, f"{backend} d(target)")


def test_mse_zero_when_equal():
    p = _normal((3, 5), 12)
    for backend in ("cpu", "reference"):
        (got,) = run_forward("mse_loss", [p, p.copy()], backend=backend)
        assert got[0] == 0.0


@pytest.mark.parametrize("op", ["mse_loss", "bce_with_logits"])
def test_grad_nodes_only_for_requested_inputs(op):
    g = _core.Graph()
    a, b = g.add_input("a", [2, 3]), g.add_input("b", [2, 3])
    (loss,) = g.add_node(op, [a, b], {}, "crit")
    g.set_outputs([loss])
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=[loss], wrt=[a])
    assert [x for x in s.schedule() if "_grad" in x] == [f"{op}_grad crit/grad"]
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=[loss], wrt=[a, b])
    assert [x for x in s.schedule() if "_grad" in x] == [f"{op}_grad crit/grad", f"{op}_grad crit/grad_target"]


# ---- errors ----

@pytest.mark.parametrize("op,names", [("mse_loss", ("pred", "target")), ("bce_with_logits", ("logits", "target"))])
def test_shape_mismatch(op, names):
    g = _core.Graph()
    a, b = g.add_input("a", [4, 3]), g.add_input("b", [4, 1])
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'crit'\): {names[1]} must have {names[0]}'s shape \[4, 3\], got \[4, 1\]"):
        g.add_node(op, [a, b], {}, "crit")
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'crit'\): expects \({names[0]}, {names[1]}\), got 1 inputs"):
        g.add_node(op, [a], {}, "crit")
    c = g.add_input("c", [4, 3], "int32")
    with pytest.raises(_core.Error, match=rf"op '{op}' \(node 'crit'\): .*float tensors of one dtype, got float32 and int32"):
        g.add_node(op, [a, c], {}, "crit")


def test_grad_op_errors():
    g = _core.Graph()
    dl, p, t = g.add_input("dl", [1]), g.add_input("p", [2, 3]), g.add_input("t", [3, 2])
    with pytest.raises(_core.Error, match=r"op 'mse_loss_grad' \(node 'gr'\): target must have pred's shape \[2, 3\], got \[3, 2\]"):
        g.add_node("mse_loss_grad", [dl, p, t], {}, "gr")
    with pytest.raises(_core.Error, match=r"op 'bce_with_logits_grad' \(node 'gr'\): attribute 'wrt' must be 0 \(logits\) or 1"):
        g.add_node("bce_with_logits_grad", [dl, p, p], {"wrt": 2}, "gr")
    with pytest.raises(_core.Error, match=r"expects \(dloss \[1\], pred, target\), got \[2, 3\] float32"):
        g.add_node("mse_loss_grad", [p, p, p], {}, "gr")
