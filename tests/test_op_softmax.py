"""softmax over axis 1 of [N, K], and softmax_cross_entropy (logits, int32 labels) -> mean loss [1]."""
import numpy as np
import pytest

from cnnnative import _core
from opcheck import check_op, run_backward, run_forward


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ce(x, labels):
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    return np.array([np.mean(lse - x[np.arange(len(labels)), labels])])


def _logits(n, k, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


def test_softmax():
    check_op("softmax", [_logits(3, 5)], numpy_ref=lambda x: [_softmax(x)])


def test_softmax_explicit_axis():
    check_op("softmax", [_logits(2, 7, seed=1)], {"axis": 1}, numpy_ref=lambda x: [_softmax(x)])


def test_softmax_large_logits_stay_finite():
    x = (_logits(4, 6, seed=2) * 30 + 500).astype(np.float32)
    check_op("softmax", [x], numpy_ref=lambda x: [_softmax(x)], grad=False)


def test_softmax_rejects_other_axis_and_rank():
    g = _core.Graph()
    x = g.add_input("x", [2, 3])
    with pytest.raises(_core.Error, match=r"op 'softmax' \(node 'sm'\): axis must be 1 for x \[2, 3\], got 0"):
        g.add_node("softmax", [x], {"axis": 0}, "sm")
    x4 = g.add_input("x4", [2, 3, 4, 4])
    with pytest.raises(_core.Error, match=r"op 'softmax' \(node 'sm'\): x must be a 2-D float tensor \[N, K\], got \[2, 3, 4, 4\]"):
        g.add_node("softmax", [x4], {}, "sm")


def test_softmax_cross_entropy():
    x = _logits(4, 5, seed=3)
    labels = np.array([0, 4, 2, 2], np.int32)
    check_op("softmax_cross_entropy", [x, labels], wrt=[0], numpy_ref=lambda x, l: [_ce(x, l)])


def test_softmax_cross_entropy_large_logits_stable():
    x = _logits(3, 4, seed=4) * 50
    x[0, 1] = 1e4
    labels = np.array([1, 0, 3], np.int32)
    x = x.astype(np.float32)
    check_op("softmax_cross_entropy", [x, labels], wrt=[0], numpy_ref=lambda x, l: [_ce(x, l)], grad=False)
    dl = np.ones(1)
    for backend in ("cpu", "reference"):
        (g,) = run_backward("softmax_cross_entropy", [x, labels], {}, [dl], [0], backend=backend)
        assert np.isfinite(g).all()


def test_softmax_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    x = _logits(6, 10, seed=5)
    labels = np.array([9, 0, 3, 3, 7, 1], np.int32)
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(t, torch.tensor(labels, dtype=torch.long), reduction="mean")
    loss.backward()
    dl = np.array([1.0])
    for backend in ("cpu", "reference"):
        (got,) = run_forward("softmax_cross_entropy", [x, labels], backend=backend)
        np.testing.assert_allclose(got, [loss.item()], rtol=1e-5, err_msg=backend)
        (g,) = run_backward("softmax_cross_entropy", [x, labels], {}, [dl], [0], backend=backend)
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=backend)


def test_softmax_cross_entropy_grad_scales_with_dloss():
    x = _logits(3, 4, seed=6)
    labels = np.array([3, 1, 0], np.int32)
    p = _softmax(x.astype(np.float64))
    expected = (p - np.eye(4)[labels]) * 2.5 / 3
    for backend in ("cpu", "reference"):
        (g,) = run_backward("softmax_cross_entropy", [x, labels], {}, [np.array([2.5])], [0], backend=backend)
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7, err_msg=backend)


def _loss_graph(n, k):
    g = _core.Graph()
    x = g.add_input("logits", [n, k])
    l = g.add_input("labels", [n], "int32")
    (loss,) = g.add_node("softmax_cross_entropy", [x, l], {}, "loss")
    g.set_outputs([loss])
    return g, loss


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("bad,msg", [(12, r"label 12 at batch index 3 is out of range \[0, 10\)"),
                                     (-1, r"label -1 at batch index 3 is out of range \[0, 10\)")])
def test_softmax_cross_entropy_label_out_of_range(backend, bad, msg):
    g, _ = _loss_graph(5, 10)
    s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend)
    labels = np.array([0, 9, 4, bad, 2], np.int32)
    with pytest.raises(_core.Error, match=r"op 'softmax_cross_entropy' \(node 'loss'\): " + msg):
        s.run([_logits(5, 10), labels])
    s.run([_logits(5, 10), np.array([0, 9, 4, 1, 2], np.int32)])  # the session stays usable


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_softmax_cross_entropy_bad_label_in_grad_session(backend):
    g, loss = _loss_graph(2, 3)
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=[loss], wrt=[g.inputs[0]])
    with pytest.raises(_core.Error, match=r"label 3 at batch index 1 is out of range \[0, 3\)"):
        s.run([_logits(2, 3), np.array([0, 3], np.int32), np.ones(1, np.float32)])


def test_softmax_cross_entropy_shape_errors():
    g = _core.Graph()
    x = g.add_input("x", [4, 10])
    l5 = g.add_input("l5", [5], "int32")
    lf = g.add_input("lf", [4])
    with pytest.raises(_core.Error, match=r"op 'softmax_cross_entropy' \(node 'ce'\): labels must be int32 \[4\] to match logits \[4, 10\], got \[5\] int32"):
        g.add_node("softmax_cross_entropy", [x, l5], {}, "ce")
    with pytest.raises(_core.Error, match=r"labels must be int32 \[4\] .* got \[4\] float32"):
        g.add_node("softmax_cross_entropy", [x, lf], {}, "ce")


def test_softmax_in_place_inside_a_chain():
    """add -> softmax -> tanh: softmax runs in place on add's output, softmax_grad in place on its dy."""
    g = _core.Graph()
    x = g.add_input("x", [3, 6])
    (h,) = g.add_node("add", [x, x], {}, "twice")
    (p,) = g.add_node("softmax", [h], {}, "sm")
    (y,) = g.add_node("tanh", [p], {}, "t")
    g.set_outputs([y])
    xv = _logits(3, 6, seed=7)
    dy = _logits(3, 6, seed=8)
    res = {}
    for backend, compute in (("cpu", "float32"), ("reference", "float64")):
        s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, compute=compute, grad_of=[y], wrt=[x])
        assert s.memory_report()["num_inplace"] >= 2
        s.run([xv, dy])
        res[backend] = (s.fetch(0), s.fetch(1))
    np.testing.assert_allclose(res["cpu"][0], np.tanh(_softmax(2 * xv.astype(np.float64))), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res["cpu"][1], res["reference"][1], rtol=1e-4, atol=1e-6)
