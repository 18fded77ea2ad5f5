import numpy as np
import pytest

from opcheck import check_op


def _away_from_zero(shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    x[np.abs(x) < 0.05] += 0.1  # keep finite differences off the kink
    return x.astype(np.float32)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5, 4)])
def test_relu(shape):
    check_op("relu", [_away_from_zero(shape)], numpy_ref=lambda x: [np.maximum(x, 0)])


def test_sigmoid():
    check_op("sigmoid", [_away_from_zero((3, 4, 5))], numpy_ref=lambda x: [1 / (1 + np.exp(-x))])


def test_tanh():
    check_op("tanh", [_away_from_zero((3, 4, 5))], numpy_ref=lambda x: [np.tanh(x)])


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
def test_leaky_relu(slope):
    check_op("leaky_relu", [_away_from_zero((2, 3, 4))], {"negative_slope": slope},
             numpy_ref=lambda x: [np.where(x > 0, x, slope * x)])


def test_add():
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(2))
    check_op("add", [a, b], numpy_ref=lambda a, b: [a + b])


def test_reshape():
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    check_op("reshape", [x], {"shape": [2, -1]}, numpy_ref=lambda x: [x.reshape(2, -1)])


def test_add_shape_mismatch_names_node():
    from cnnnative import _core
    g = _core.Graph()
    a = g.add_input("a", [2, 3])
    b = g.add_input("b", [3, 2])
    with pytest.raises(_core.Error, match=r"op 'add' \(node 'block.add'\).*\[2, 3\].*\[3, 2\]"):
        g.add_node("add", [a, b], {}, "block.add")


@pytest.mark.parametrize("start,end", [(1, -1), (0, -1), (1, 2), (2, 3)])
def test_flatten(start, end):
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 2)).astype(np.float32)

    def ref(x):
        s = list(x.shape)
        e = end % 4
        return [x.reshape(s[:start] + [-1] + s[e + 1:])]
    check_op("flatten", [x], {"start_dim": start, "end_dim": end}, numpy_ref=ref)
