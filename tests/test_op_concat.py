"""concat (oneDNN concat) and split (native copy): check_op against numpy for 1-4 inputs along axis 1 (the
DenseNet / Inception / U-Net case), axis 0 and axis -1; concat's backward is one split node; one value
concatenated twice gets the sum of its two gradient parts (autodiff's accumulation); a large split runs
the parallel path; errors name the node and each mismatching input's shape.
"""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core
from opcheck import assert_close, check_op, run_forward


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = {
    "two_axis1": ([(2, 3, 3, 2), (2, 2, 3, 2)], 1),
    "three_axis1_inception": ([(1, 2, 3, 3), (1, 1, 3, 3), (1, 3, 3, 3)], 1),
    "four_axis1_densenet": ([(2, 1, 2, 3), (2, 2, 2, 3), (2, 1, 2, 3), (2, 3, 2, 3)], 1),
    "axis0": ([(2, 3, 4), (1, 3, 4), (3, 3, 4)], 0),
    "axis_minus1": ([(2, 3, 2), (2, 3, 5)], -1),
    "axis_minus3_is_1": ([(2, 2, 3, 2), (2, 1, 3, 2)], -3),
    "rank2_features": ([(3, 4), (3, 2)], 1),
    "single_input": ([(2, 3, 2, 2)], 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_concat(name):
    shapes, axis = CASES[name]
    xs = [_normal(s, seed=i) for i, s in enumerate(shapes)]
    y = check_op("concat", xs, {"axis": axis}, numpy_ref=lambda *a: [np.concatenate(a, axis=axis)])[0]
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis))  # a copy is exact


def test_concat_default_axis_is_1():
    xs = [_normal((2, 2, 3), 0), _normal((2, 4, 3), 1)]
    (y,) = run_forward("concat", xs)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=1))


@pytest.mark.parametrize("axis,sizes", [(1, [3, 1, 2]), (0, [1, 2]), (-1, [2, 3]), (2, [4])])
def test_split(axis, sizes):
    x = _normal((3, 6, 4, 5), 7)
    cuts = np.cumsum(sizes)[:-1]
    expected = np.split(x, cuts, axis=axis)
    for backend in ("cpu", "reference"):
        outs = run_forward("split", [x], {"axis": axis, "sizes": sizes}, backend=backend)
        assert len(outs) == len(sizes)
        for k, (o, e) in enumerate(zip(outs, expected)):
            np.testing.assert_array_equal(o, e, err_msg=f"{backend} output {k}")


def test_split_large_runs_in_chunks():
    # 2 * 40 * 33 * 31 elements > the parallel threshold, and output 1 spans several copy chunks.
    x = _normal((2, 40, 33, 31), 8)
    sizes = [5, 30, 1, 4]
    outs = run_forward("split", [x], {"axis": 1, "sizes": sizes})
    for o, e in zip(outs, np.split(x, np.cumsum(sizes)[:-1], axis=1)):
        np.testing.assert_array_equal(o, e)
    outs = run_forward("split", [x], {"axis": -1, "sizes": [30, 1]})
    np.testing.assert_array_equal(outs[0], x[..., :30])
    np.testing.assert_array_equal(outs[1], x[..., 30:])


def _grad_session(build, in_shapes, backend="cpu"):
    g = _core.Graph()
    ids = [g.add_input(f"x{i}", list(s)) for i, s in enumerate(in_shapes)]
    y = build(g, ids)
    g.set_outputs([y])
    s = _core.Session(g, _core.ParamStore([]), "grad", backend=backend, grad_of=[y], wrt=ids)
    return g, s, y


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_backward_is_one_split(backend):
    shapes = [(2, 1, 3, 3), (2, 2, 3, 3), (2, 3, 3, 3)]
    _, s, _ = _grad_session(lambda g, ids: g.add_node("concat", ids, {}, "cat")[0], shapes, backend)
    sched = s.schedule()
    assert [op for op in sched if op.startswith("split")] == ["split cat/grad"], sched
    xs = [_normal(sh, i) for i, sh in enumerate(shapes)]
    dy = _normal((2, 6, 3, 3), 9)
    s.run(xs + [dy])
    parts = np.split(dy, [1, 3], axis=1)
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(s.fetch(1 + i), p)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_same_value_twice_sums_gradients(backend):
    shape = (2, 3, 2, 2)
    _, s, _ = _grad_session(lambda g, ids: g.add_node("concat", [ids[0], ids[0]], {"axis": 1}, "cat")[0], [shape], backend)
    assert any(op.startswith("add") for op in s.schedule()), s.schedule()
    x = _normal(shape, 1)
    dy = _normal((2, 6, 2, 2), 2)
    s.run([x, dy])
    np.testing.assert_array_equal(s.fetch(0), np.concatenate([x, x], axis=1))
    assert_close(s.fetch(1), dy[:, :3] + dy[:, 3:], 1e-6, 1e-7, f"{backend}: d(x) of concat([x, x])")


def test_value_used_twice_among_others():
    # concat([a, b, a], axis=-1): d(a) = dy[..., :2] + dy[..., 5:], d(b) = dy[..., 2:5]
    def build(g, ids):
        return g.add_node("concat", [ids[0], ids[1], ids[0]], {"axis": -1}, "cat")[0]
    _, s, _ = _grad_session(build, [(3, 2), (3, 3)])
    a, b, dy = _normal((3, 2), 3), _normal((3, 3), 4), _normal((3, 7), 5)
    s.run([a, b, dy])
    assert_close(s.fetch(1), dy[:, :2] + dy[:, 5:], 1e-6, 1e-7, "d(a)")
    np.testing.assert_array_equal(s.fetch(2), dy[:, 2:5])


def test_only_requested_inputs_get_gradients():
    # Only x1 is differentiated: split still produces every part, the unused ones are planned and ignored.
    g = _core.Graph()
    x0, x1 = g.add_input("x0", [2, 2]), g.add_input("x1", [2, 3])
    (y,) = g.add_node("concat", [x0, x1], {"axis": 1}, "cat")
    g.set_outputs([y])
    s = _core.Session(g, _core.ParamStore([]), "grad", grad_of=[y], wrt=[x1])
    dy = _normal((2, 5), 6)
    s.run([_normal((2, 2), 0), _normal((2, 3), 1), dy])
    np.testing.assert_array_equal(s.fetch(1), dy[:, 2:])


# ---- errors ----

def _concat(shapes, attrs=None):
    g = _core.Graph()
    ids = [g.add_input(f"x{i}", list(s)) for i, s in enumerate(shapes)]
    return g.add_node("concat", ids, attrs or {}, "block.cat")


def test_mismatch_names_each_bad_input():
    with pytest.raises(_core.Error, match=r"op 'concat' \(node 'block.cat'\): every input must match input 0 \[2, 3, 4, 4\] "
                                          r"except along axis 1, i.e. be \[2, \*, 4, 4\]; mismatching: "
                                          r"input 2 \[2, 5, 4, 3\], input 3 \[1, 1, 4, 4\]$"):
        _concat([(2, 3, 4, 4), (2, 1, 4, 4), (2, 5, 4, 3), (1, 1, 4, 4)])


def test_rank_mismatch():
    with pytest.raises(_core.Error, match=r"op 'concat' \(node 'block.cat'\).*mismatching: input 1 \[2, 3, 4\]$"):
        _concat([(2, 3, 4, 4), (2, 3, 4)])


def test_axis_out_of_range():
    with pytest.raises(_core.Error, match=r"op 'concat' \(node 'block.cat'\): axis 4 is out of range for rank-4 input \[2, 3, 4, 4\]"):
        _concat([(2, 3, 4, 4), (2, 3, 4, 4)], {"axis": 4})
    with pytest.raises(_core.Error, match=r"axis -3 is out of range for rank-2"):
        _concat([(2, 3), (2, 3)], {"axis": -3})


def test_no_inputs():
    g = _core.Graph()
    with pytest.raises(_core.Error, match=r"op 'concat' \(node 'cat'\): expects at least 1 input, got none"):
        g.add_node("concat", [], {}, "cat")


def test_non_float_input():
    g = _core.Graph()
    a = g.add_input("a", [2, 3])
    b = g.add_input("b", [2, 3], "int32")
    with pytest.raises(_core.Error, match=r"op 'concat' \(node 'cat'\): expects float inputs of one dtype, input 1 is int32"):
        g.add_node("concat", [a, b], {}, "cat")


def test_split_errors():
    g = _core.Graph()
    x = g.add_input("x", [2, 6, 3])
    with pytest.raises(_core.Error, match=r"op 'split' \(node 'sp'\): sizes \[2, 3\] sum to 5 but input \[2, 6, 3\] has 6 along axis 1"):
        g.add_node("split", [x], {"axis": 1, "sizes": [2, 3]}, "sp")
    with pytest.raises(_core.Error, match=r"op 'split' \(node 'sp'\): missing attribute 'sizes'"):
        g.add_node("split", [x], {"axis": 1}, "sp")
    with pytest.raises(_core.Error, match=r"sizes must be positive, got \[6, 0\]"):
        g.add_node("split", [x], {"axis": 1, "sizes": [6, 0]}, "sp")
    with pytest.raises(_core.Error, match=r"axis 3 is out of range for rank-3 input \[2, 6, 3\]"):
        g.add_node("split", [x], {"axis": 3, "sizes": [6]}, "sp")


def test_train_step_through_concat_and_mse_loss():
    # loss = mse(concat([w1, w2, w1], axis=1), t): w1's gradient is the sum of two split parts written into the
    # session's gradient block; one SGD step must match numpy, and later steps allocate nothing.
    g = _core.Graph()
    w1, w2 = g.add_param("w1", [2, 3]), g.add_param("w2", [2, 2])
    t = g.add_input("t", [2, 8])
    (y,) = g.add_node("concat", [w1, w2, w1], {"axis": 1}, "cat")
    (loss,) = g.add_node("mse_loss", [y, t], {}, "crit")
    store = _core.ParamStore([("w1", [2, 3], True), ("w2", [2, 2], True)])
    a1, a2 = store.array("w1"), store.array("w2")
    with cn.no_grad():
        a1[...] = _normal((2, 3), 1)
        a2[...] = _normal((2, 2), 2)
    target = _normal((2, 8), 3)
    v1, v2 = a1.astype(np.float64), a2.astype(np.float64)
    r = np.concatenate([v1, v2, v1], axis=1) - target
    want_loss = np.mean(r ** 2)
    dy = 2 * r / r.size
    lr = 0.5
    want1 = v1 - lr * (dy[:, :3] + dy[:, 5:])
    want2 = v2 - lr * dy[:, 3:5]
    s = _core.Session(g, store, "train", loss=loss, optim={"kind": "sgd", "lr": lr})
    s.run([target])
    assert s.loss == pytest.approx(want_loss, rel=1e-5)
    assert_close(a1, want1, 1e-5, 1e-6, "w1 after one step")
    assert_close(a2, want2, 1e-5, 1e-6, "w2 after one step")
    before = _core.allocation_count()
    for _ in range(3):
        s.run([target])
    assert _core.allocation_count() == before
