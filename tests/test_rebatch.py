"""A model saved (or exported) at one batch size, run at another: sizes traced at the saved batch follow the new one
where they are the batch, and what cannot follow it is refused by name, never run with the saved batch's constants
(cnn::rebatch, cpp/src/core/model.cpp). The models are written the way PyTorch users write them."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn
from cnnnative.graph import current


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _per_sample(model, saved_shape, batch, seed=1):
    """The loaded model at `batch` against the same model compiled directly at that batch, and sample by sample."""
    gm = cn.load(cn.io.dumps(model, saved_shape))
    x = _x((batch,) + tuple(saved_shape[1:]), seed)
    y = gm.compile(batch).run(x)
    direct = model.compile((batch,) + tuple(saved_shape[1:])).run(x)
    assert y.shape == direct.shape and y.shape[0] == batch
    np.testing.assert_array_equal(y, direct)
    one = model.compile((1,) + tuple(saved_shape[1:]))
    for i in range(batch):
        np.testing.assert_allclose(y[i:i + 1], one.run(x[i:i + 1]), rtol=1e-5, atol=1e-6)
    return y


class ViewNet(nn.Module):
    """The classic head: x.view(x.size(0), -1) before the classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = self.conv(x).relu()
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("saved", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_view_of_the_batch_follows_it(saved, batch):
    _per_sample(ViewNet(), (saved, 1, 8, 8), batch)


class CropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[:, 1:3, ::2, 1::3].flatten(1)


def test_a_slice_of_the_whole_batch_follows_it():
    # was: the saved batch's one sample, silently
    _per_sample(CropNet(), (1, 2, 8, 9), 3)


class GroupMean(nn.Module):
    """reshape(N, groups, -1).mean(2): the -1 must not absorb the batch (it mixed samples before)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.reshape(y.shape[0], 2, -1).mean(2)


def test_reshape_with_minus_one_does_not_absorb_the_batch():
    _per_sample(GroupMean(), (1, 1, 6, 6), 4)


class Unflatten(nn.Module):
    """The batch folded into the rows and back (matmul-style): [N*M, K] -> [N, M, K]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        n, m, k = x.shape
        return self.fc(x.reshape(n * m, k)).reshape(n, m, 5)


def test_the_batch_folded_into_rows_follows_it():
    _per_sample(Unflatten(), (2, 3, 6), 5)


def test_zoo_models_with_shuffles_and_heads_run_at_any_batch():
    for name, hw in (("shufflenet_v2_x1_0", 64), ("convnext_tiny", 32)):
        m = cn.models.get_model(name, seed=0)
        gm = cn.load(cn.io.dumps(m, (1, 3, hw, hw)))
        x = _x((2, 3, hw, hw), 3)
        np.testing.assert_array_equal(gm.compile(2).run(x), m.compile((2, 3, hw, hw)).run(x))


class SumsOverTheBatch(nn.Module):
    """A node sized from the traced batch that cannot follow it: sum_to the traced shape."""

    def forward(self, x):
        y = x * 2.0
        return current().op("sum_to", [y], {"shape": [int(d) for d in y.shape]}, name="to_traced")[0]


def test_a_node_that_cannot_follow_the_batch_is_refused_by_name():
    gm = cn.load(cn.io.dumps(SumsOverTheBatch(), (1, 5)))
    gm.compile(1)
    with pytest.raises(cn.Error, match=r"batch size 3: node 'to_traced' \('sum_to'\) does not follow the batch: "
                                       r"traced at batch 1 it gave \[1, 5\], at batch 3 it gives \[1, 5\] where the "
                                       r"first dimension should be 3"):
        gm.compile(3)


def test_a_fixed_size_that_is_not_the_batch_still_fails_with_the_ops_message():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(x.reshape(3, 8))  # 24 elements traced at batch 2: 3 rows, not the batch's

    gm = cn.load(cn.io.dumps(Fixed(), (2, 3, 4)))
    with pytest.raises(cn.Error, match=r"batch size 3: op 'reshape' .*cannot reshape \[3, 3, 4\]"):
        gm.compile((3, 3, 4))


def test_cpp_rebatch_binding_rewrites_and_checks():
    from cnnnative import _core
    gm = cn.load(cn.io.dumps(ViewNet(), (1, 1, 8, 8)))
    g = _core.rebatch(gm.graph, 6)
    ops = g.node_ops()
    assert any(o.startswith("reshape") for o in ops)
    with pytest.raises(cn.Error, match="the batch size must be >= 1"):
        _core.rebatch(gm.graph, 0)


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_exported_at_a_fixed_batch_runs_at_another(tmp_path, dynamo):
    """torch.onnx.export without dynamic axes writes the batch into Reshape constants ([1, 4, -1]); onnxruntime
    refuses other batches, we follow the batch (or refuse by name)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from cnnnative.onnx import import_model

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y.view(y.size(0), 4, -1).mean(2)

    torch.manual_seed(0)
    t = T().eval()
    x1 = torch.from_numpy(_x((1, 3, 8, 8)))
    f = str(tmp_path / "t.onnx")
    kw = dict(dynamo=True) if dynamo else dict(dynamo=False, opset_version=17)
    torch.onnx.export(t, (x1,), f, input_names=["x"], **kw)
    m = import_model(f)
    assert m.input_shape[0] == 1  # the file fixes the batch
    x = _x((3, 3, 8, 8), 5)
    with torch.inference_mode():
        ref = t(torch.from_numpy(x)).numpy()
    y = m.compile((3, 3, 8, 8)).run(x)
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_onnx_model_with_a_symbolic_batch_compiles_and_saves_by_batch_size(tmp_path):
    """input_shape (None, 1, 28, 28): compile(4), compile(), cn.save(om, p) and cn.save(om, p, 4) as for any model
    that declares its shape (they raised 'input_shape must be (N, C, ...) with positive int sizes')."""
    pytest.importorskip("onnx")
    from cnnnative.onnx import export_model, import_model
    m = cn.models.lenet5(seed=0)
    path = str(tmp_path / "l5.onnx")
    export_model(m, path, (1, 1, 28, 28))  # dynamic batch by default
    om = import_model(path)
    assert om.input_shape == (None, 1, 28, 28)
    x = _x((4, 1, 28, 28), 2)
    want = m.compile(4).run(x)
    np.testing.assert_allclose(om.compile(4).run(x), want, rtol=1e-5, atol=1e-6)
    assert om.compile().input_shape == (1, 1, 28, 28)
    assert cn.load(cn.save(om, tmp_path / "a.cnn", 4)).input_shape == (4, 1, 28, 28)
    assert cn.load(cn.save(om, tmp_path / "b.cnn")).input_shape == (1, 1, 28, 28)
