"""linear (x [N, IN], w [OUT, IN], optional b [OUT]) -> x w^T + b, and its two backward ops."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from opcheck import check_op, run_backward


def _data(n=4, inf=5, out=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, inf)).astype(np.float32)
    w = rng.standard_normal((out, inf)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    return x, w, b


def test_linear_with_bias():
    x, w, b = _data()
    check_op("linear", [x, w, b], numpy_ref=lambda x, w, b: [x @ w.T + b])


def test_linear_without_bias():
    x, w, _ = _data(n=3, inf=7, out=4, seed=1)
    check_op("linear", [x, w], numpy_ref=lambda x, w: [x @ w.T])


def test_linear_batch_of_one():
    x, w, b = _data(n=1, inf=6, out=2, seed=2)
    check_op("linear", [x, w, b], numpy_ref=lambda x, w, b: [x @ w.T + b])


@pytest.mark.parametrize("wrt", [[0], [1], [2], [1, 2]])
def test_linear_partial_gradients(wrt):
    """Each backward op is emitted only when asked for; the results match numpy on both backends."""
    x, w, b = _data(seed=3)
    dy = np.random.default_rng(4).standard_normal((4, 3))
    expected = {0: dy @ w.astype(np.float64), 1: dy.T @ x.astype(np.float64), 2: dy.sum(0)}
    for backend in ("cpu", "reference"):
        got = run_backward("linear", [x, w, b], {}, [dy], wrt, backend=backend)
        for i, gi in zip(wrt, got):
            np.testing.assert_allclose(gi, expected[i], rtol=1e-4, atol=1e-5, err_msg=f"{backend} d(input {i})")


def test_linear_grad_schedule_only_needed_ops():
    g = _core.Graph()
    x = g.add_input("x", [2, 3])
    w = g.add_input("w", [4, 3])
    y = g.add_node("linear", [x, w], {}, "fc")
    g.set_outputs(y)
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=y, wrt=[x])
    ops = [e.split()[0] for e in s.schedule()]
    assert "linear_grad_data" in ops and "linear_grad_weights" not in ops


def test_linear_train_step_matches_numpy():
    """linear params + softmax_cross_entropy loss: one SGD step updates w and b by numpy's gradient."""
    x, w0, b0 = _data(n=6, inf=5, out=4, seed=5)
    labels = np.array([0, 3, 1, 2, 3, 0], np.int32)
    store = _core.ParamStore([("fc.weight", [4, 5], True), ("fc.bias", [4], True)])
    with cn.no_grad():
        store.array("fc.weight")[...] = w0
        store.array("fc.bias")[...] = b0
    g = _core.Graph()
    xi = g.add_input("x", [6, 5])
    li = g.add_input("labels", [6], "int32")
    wi = g.add_param("fc.weight", [4, 5])
    bi = g.add_param("fc.bias", [4])
    (y,) = g.add_node("linear", [xi, wi, bi], {}, "fc")
    (loss,) = g.add_node("softmax_cross_entropy", [y, li], {}, "loss")
    lr = 0.5
    s = _core.Session(g, store, "train", loss=loss, optim={"kind": "sgd", "lr": lr})
    s.run([x, labels])

    logits = x.astype(np.float64) @ w0.T + b0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref_loss = -np.log(p[np.arange(6), labels]).mean()
    dlogits = (p - np.eye(4)[labels]) / 6
    np.testing.assert_allclose(s.loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(store.array("fc.weight"), w0 - lr * dlogits.T @ x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store.array("fc.bias"), b0 - lr * dlogits.sum(0), rtol=1e-4, atol=1e-5)
    before = _core.allocation_count()
    s.run([x, labels])
    assert _core.allocation_count() == before
    assert s.loss < ref_loss


def _graph(shapes):
    g = _core.Graph()
    return g, [g.add_input(f"in{i}", s) for i, s in enumerate(shapes)]


def test_linear_in_features_mismatch_names_node_and_shapes():
    g, ids = _graph([[2, 5], [3, 4]])
    with pytest.raises(_core.Error, match=r"op 'linear' \(node 'head.fc'\).*\[2, 5\].*IN = 5.*\[3, 4\].*IN = 4"):
        g.add_node("linear", ids, {}, "head.fc")


def test_linear_bias_mismatch_names_shapes():
    g, ids = _graph([[2, 5], [3, 5], [4]])
    with pytest.raises(_core.Error, match=r"op 'linear' \(node 'fc'\): b must be \[3\] to match w \[3, 5\], got \[4\]"):
        g.add_node("linear", ids, {}, "fc")


def test_linear_rank_error():
    g, ids = _graph([[2, 3, 4], [5, 12]])
    with pytest.raises(_core.Error, match=r"op 'linear' \(node 'fc'\): x must be 2-D \[N, IN\], got \[2, 3, 4\]"):
        g.add_node("linear", ids, {}, "fc")
    g, ids = _graph([[2, 3], [5, 3, 1]])
    with pytest.raises(_core.Error, match=r"w must be 2-D \[OUT, IN\], got \[5, 3, 1\]"):
        g.add_node("linear", ids, {}, "fc")


def test_linear_input_count_error():
    g, ids = _graph([[2, 3]])
    with pytest.raises(_core.Error, match=r"op 'linear' \(node 'fc'\): expects \(x \[N, IN\], w \[OUT, IN\]\)"):
        g.add_node("linear", ids, {}, "fc")
