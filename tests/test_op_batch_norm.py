"""batch_norm / batch_norm_grad: check_op in training and eval mode on [N,C,H,W] and [N,C] (running stats
fed as inputs, so track_running_stats=0 there); the in-place running-stat update through a ParamStore;
in-place aliasing next to relu; shape errors; and agreement with torch.nn.functional.batch_norm.
"""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from opcheck import check_op

EPS = 1e-5


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = rng.standard_normal(shape) * 1.5 + 0.3
    gamma = rng.uniform(0.5, 1.5, C) * rng.choice([-1, 1], C)
    beta = rng.standard_normal(C)
    rm = rng.standard_normal(C) * 0.2
    rv = rng.uniform(0.5, 2.0, C)
    return [a.astype(np.float32) for a in (x, gamma, beta, rm, rv)]


def _bcast(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _np_train(x, gamma, beta, rm, rv):
    mean = x.mean(axis=_axes(x))
    var = x.var(axis=_axes(x))
    y = (x - _bcast(mean, x.ndim)) / np.sqrt(_bcast(var, x.ndim) + EPS) * _bcast(gamma, x.ndim) + _bcast(beta, x.ndim)
    return [y, mean, var]


def _np_eval(x, gamma, beta, rm, rv):
    return [(x - _bcast(rm, x.ndim)) / np.sqrt(_bcast(rv, x.ndim) + EPS) * _bcast(gamma, x.ndim) + _bcast(beta, x.ndim)]


@pytest.mark.parametrize("shape", [(3, 2, 3, 3), (6, 4)])
def test_batch_norm_training(shape):
    check_op("batch_norm", _inputs(shape), {"training": 1, "track_running_stats": 0, "eps": EPS},
             numpy_ref=_np_train, wrt=[0, 1, 2])


@pytest.mark.parametrize("shape", [(3, 2, 3, 3), (6, 4)])
def test_batch_norm_eval(shape):
    check_op("batch_norm", _inputs(shape, seed=1), {"training": 0, "eps": EPS}, numpy_ref=_np_eval, wrt=[0, 1, 2])


def _bn_graph(shape, attrs, names=("rm", "rv"), outputs=None):
    g = _core.Graph()
    C = shape[1]
    x = g.add_input("x", list(shape))
    gamma = g.add_input("gamma", [C])
    beta = g.add_input("beta", [C])
    rm = g.add_param(names[0], [C], trainable=False)
    rv = g.add_param(names[1], [C], trainable=False)
    outs = g.add_node("batch_norm", [x, gamma, beta, rm, rv], attrs, "bn")
    g.set_outputs(outs if outputs is None else [outs[k] for k in outputs])
    store = _core.ParamStore([(names[0], [C], False), (names[1], [C], False)])
    return g, store, (x, gamma, beta), outs


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_running_stats_update(backend):
    shape, mom = (4, 3, 2, 2), 0.3
    g, store, _, _ = _bn_graph(shape, {"training": 1, "momentum": mom, "eps": EPS})
    rm_np, rv_np = np.zeros(3), np.ones(3)
    with cn.no_grad():
        store.array("rm")[:] = rm_np
        store.array("rv")[:] = rv_np
    s = _core.Session(g, store, "infer", backend=backend)
    n = shape[0] * shape[2] * shape[3]
    for run in range(2):
        x, gamma, beta, _, _ = _inputs(shape, seed=10 + run)
        before = _core.allocation_count()
        s.run([x, gamma, beta])
        if run:
            assert _core.allocation_count() == before
        y, mean, var = _np_train(x.astype(np.float64), gamma, beta, None, None)
        rm_np = (1 - mom) * rm_np + mom * mean
        rv_np = (1 - mom) * rv_np + mom * var * n / (n - 1)
        np.testing.assert_allclose(store.array("rm"), rm_np, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store.array("rv"), rv_np, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.fetch(0), y, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.fetch(2), var, rtol=1e-4, atol=1e-5)


def test_no_update_without_tracking_or_in_eval():
    shape = (4, 3, 2, 2)
    for attrs in ({"training": 1, "track_running_stats": 0}, {"training": 0}):
        g, store, _, _ = _bn_graph(shape, attrs)
        with cn.no_grad():
            store.array("rv")[:] = 1
        x, gamma, beta, _, _ = _inputs(shape)
        _core.Session(g, store, "infer").run([x, gamma, beta])
        assert not store.array("rm").any() and (store.array("rv") == 1).all()


@pytest.mark.parametrize("training", [0, 1])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_in_place_after_relu(training, backend):
    shape = (2, 3, 4, 4)
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    gamma, beta, rm, rv = (g.add_input(n, [3]) for n in ("gamma", "beta", "rm", "rv"))
    h = g.add_node("relu", [x], {}, "act")[0]
    y = g.add_node("batch_norm", [h, gamma, beta, rm, rv], {"training": training, "track_running_stats": 0}, "bn")[0]
    g.set_outputs([y])
    s = _core.Session(g, _core.ParamStore([]), "infer", backend=backend)
    assert s.memory_report()["num_inplace"] >= 1
    xs, ga, be, m, v = _inputs(shape, seed=3)
    s.run([xs, ga, be, m, v])
    ref = (_np_train if training else _np_eval)(np.maximum(xs, 0).astype(np.float64), ga, be, m, v)[0]
    np.testing.assert_allclose(s.fetch(0), ref, rtol=1e-4, atol=1e-5)


def test_shape_errors_name_node():
    g = _core.Graph()
    x = g.add_input("x", [2, 3, 4, 4])
    c3 = g.add_input("c3", [3])
    c4 = g.add_input("c4", [4])
    with pytest.raises(_core.Error, match=r"op 'batch_norm' \(node 'layer1.bn'\).*beta must be \[3\].*\[2, 3, 4, 4\].*got \[4\]"):
        g.add_node("batch_norm", [x, c3, c4, c3, c3], {}, "layer1.bn")
    one = g.add_input("one", [1, 3, 1, 1])
    with pytest.raises(_core.Error, match=r"more than 1 value per channel.*\[1, 3, 1, 1\]"):
        g.add_node("batch_norm", [one, c3, c3, c3, c3], {"training": 1}, "bn")
    with pytest.raises(_core.Error, match=r"'momentum' must be a float"):
        g.add_node("batch_norm", [x, c3, c3, c3, c3], {"momentum": 1}, "bn")
    bad = g.add_input("bad", [2, 3, 4])
    with pytest.raises(_core.Error, match=r"x must be \[N, C, H, W\] or \[N, C\], got \[2, 3, 4\]"):
        g.add_node("batch_norm", [bad, c3, c3, c3, c3], {}, "bn")


def test_matches_torch():
    torch = pytest.importorskip("torch")
    shape, mom = (4, 3, 5, 5), 0.1
    rng = np.random.default_rng(7)
    x, gamma, beta, _, _ = _inputs(shape, seed=7)
    dy = rng.standard_normal(shape).astype(np.float32)
    g, store, (xi, gi, bi), outs = _bn_graph(shape, {"training": 1, "momentum": mom, "eps": EPS})
    with cn.no_grad():
        store.array("rv")[:] = 1
    s = _core.Session(g, store, "grad", grad_of=[outs[0]], wrt=[xi, gi, bi])
    s.run([x, gamma, beta, dy])

    tx, tg, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=mom, eps=EPS)
    ty.backward(torch.tensor(dy, dtype=torch.float64))

    np.testing.assert_allclose(s.fetch(0), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.fetch(1), tx.detach().mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.fetch(2), tx.detach().var(dim=(0, 2, 3), unbiased=False).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store.array("rm"), trm.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store.array("rv"), trv.numpy(), rtol=1e-4, atol=1e-5)
    for k, t in enumerate((tx, tg, tb)):
        np.testing.assert_allclose(s.fetch(3 + k), t.grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=f"grad {k}")


def _np_train_backward(dy, x, gamma):
    ax, nd = _axes(x), x.ndim
    xhat = (x - _bcast(x.mean(axis=ax), nd)) / np.sqrt(_bcast(x.var(axis=ax), nd) + EPS)
    dbeta, dgamma = dy.sum(axis=ax), (dy * xhat).sum(axis=ax)
    m = x.size / x.shape[1]
    dx = _bcast(gamma / np.sqrt(x.var(axis=ax) + EPS) / m, nd) * (m * dy - _bcast(dbeta, nd) - xhat * _bcast(dgamma, nd))
    return [dx, dgamma, dbeta]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_grad_in_place_before_relu(backend):
    shape = (3, 2, 4, 4)
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    gamma, beta, rm, rv = (g.add_input(n, [2]) for n in ("gamma", "beta", "rm", "rv"))
    y = g.add_node("batch_norm", [x, gamma, beta, rm, rv], {"training": 1, "track_running_stats": 0}, "bn")[0]
    z = g.add_node("relu", [y], {}, "act")[0]
    g.set_outputs([z])
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=[z], wrt=[x, gamma, beta])
    xs, ga, be, m, v = _inputs(shape, seed=5)
    dz = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    s.run([xs, ga, be, m, v, dz])
    assert s.memory_report()["num_inplace"] >= 2
    y64 = _np_train(xs.astype(np.float64), ga, be, m, v)[0]
    expected = _np_train_backward(dz * (y64 > 0), xs.astype(np.float64), ga.astype(np.float64))
    for k, e in enumerate(expected):
        np.testing.assert_allclose(s.fetch(1 + k), e, rtol=1e-3, atol=1e-4, err_msg=f"grad {k}")


@pytest.mark.parametrize("layout", ["plain", "nChw16c", "nChw8c", "nhwc"])
@pytest.mark.parametrize("shape", [(2, 3, 70, 70), (3, 20, 33, 17), (2, 70, 9, 9), (500, 7)])
@pytest.mark.parametrize("training", [1, 0])
def test_several_chunks_match_reference_in_every_layout(shape, layout, training):
    """Shapes whose channels span several statistics chunks (4096 floats in plain, 256 pixels otherwise), wide nhwc
    pixels (70 channels: the memory-accumulator path), odd channel counts (blocked padding), [N, C]: forward and
    backward against the float64 reference backend."""
    if len(shape) == 2 and layout != "plain":
        pytest.skip("[N, C] is plain only")
    arrays = _inputs(shape, seed=4)
    arrays[0] = (arrays[0] + 50).astype(np.float32)  # a mean far from 0
    attrs = {"training": training, "track_running_stats": 0, "eps": EPS}
    dy = np.random.default_rng(8).standard_normal(shape).astype(np.float32)

    def run(backend, compute, lay):
        g = _core.Graph()
        ids = [g.add_input(f"in{i}", list(a.shape)) for i, a in enumerate(arrays)]
        outs = g.add_node("batch_norm", ids, attrs, "bn")
        g.set_outputs(outs)
        s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, compute=compute, layout=lay,
                          grad_of=[outs[0]], wrt=ids[:3])
        dt = np.float64 if compute == "float64" else np.float32
        s.run([a.astype(dt) for a in arrays] + [dy.astype(dt)])
        return [s.fetch(i) for i in range(len(outs) + 3)]

    got = run("cpu", "float32", layout)
    want = run("reference", "float64", "plain")
    names = ["y", "mean", "var", "dx", "dgamma", "dbeta"] if training else ["y", "dx", "dgamma", "dbeta"]
    for name, a, b in zip(names, got, want):
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * scale, err_msg=f"{name} {layout}")
