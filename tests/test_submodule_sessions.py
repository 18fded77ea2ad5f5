"""Sessions of a submodule (torchvision's `model.features`) or of a Sequential slice holding the same module objects
share the model's parameters, as sessions of one model do: compiling one never breaks the other's sessions, a
training step of either is seen by the other's inference sessions, and a real change of a module, parameter or
buffer still makes the sessions compiled before it refuse to run."""
import copy

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

SHAPE = (2, 1, 8, 8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Linear(144, 3)

    def forward(self, x):
        return self.classifier(self.features(x))


def _net():
    cn.manual_seed(0)
    return Net()


def _batch(seed=0):
    rs = np.random.RandomState(seed)
    return rs.rand(*SHAPE).astype(np.float32), rs.randint(0, 3, SHAPE[0]).astype(np.int32)


def _fresh(module):
    """What a session of `module` gives when compiled now from a copy of its current weights (own memory)."""
    return copy.deepcopy(module).compile(SHAPE)


def test_features_session_beside_a_training_session():
    m = _net()
    x, y = _batch()
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    infer = m.compile(SHAPE)
    train.step(x, y)
    feat = m.features.compile(SHAPE)  # a feature extractor on the model's weights
    np.testing.assert_allclose(feat.run(x), _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)
    before = feat.run(x).copy()
    for _ in range(3):
        train.step(x, y)  # the model keeps training (no "structure changed")
    after = feat.run(x)
    assert not np.allclose(before, after)  # the feature session sees the steps (weights and BN running stats)
    np.testing.assert_allclose(after, _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(infer.run(x), _fresh(m).run(x), rtol=1e-6, atol=1e-6)


def test_recompiling_the_model_keeps_the_features_session():
    m = _net()
    x, y = _batch()
    feat_of = m.compile(SHAPE)  # the model compiled first: its store holds every array
    feat = m.features.compile(SHAPE)
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1))
    train.step(x, y)
    np.testing.assert_allclose(feat.run(x), _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feat_of.run(x), _fresh(m).run(x), rtol=1e-6, atol=1e-6)


def test_arrays_stay_the_models_when_a_submodule_compiles():
    m = _net()
    m.compile(SHAPE)
    w = m.features[0].weight  # taken after the model's compile: the model's memory
    sd = m.state_dict()
    feat = m.features.compile(SHAPE)
    assert m.features[0].weight is w  # not moved into a store of the submodule's own
    assert np.shares_memory(m.features.state_dict()["0.weight"], sd["features.0.weight"])
    with cn.no_grad():
        w[...] = 0  # still writeable in the edit context: not retired
    x, _ = _batch()
    np.testing.assert_allclose(feat.run(x), _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)
    assert np.abs(m.compile(SHAPE).run(x) - _fresh(m).run(x)).max() < 1e-6


def test_training_the_submodule_updates_the_models_sessions():
    m = _net()
    x, _ = _batch()
    infer = m.compile(SHAPE)
    before = infer.run(x).copy()
    target = np.zeros((2, 144), np.float32)
    feat_train = m.features.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.features.parameters(), lr=0.5),
                                    loss="mse")
    classifier_before = np.array(m.classifier.weight)
    feat_train.step(x, target)
    out = infer.run(x)  # compiled before the submodule's session: still runs, with the trained features
    assert not np.allclose(before, out)
    np.testing.assert_allclose(out, _fresh(m).run(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m.classifier.weight, classifier_before)  # no gradient, no weight decay: unchanged


def test_sequential_slice_shares_the_models_weights():
    cn.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    x, y = _batch()
    full = m.compile(SHAPE)
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.5))
    head_off = m[:3]
    part = head_off.compile(SHAPE)
    before = part.run(x).copy()
    train.step(x, y)
    after = part.run(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _fresh(head_off).run(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(full.run(x), _fresh(m).run(x), rtol=1e-6, atol=1e-6)
    assert np.shares_memory(head_off.state_dict()["0.weight"], m.state_dict()["0.weight"])


def test_replacing_a_module_still_stops_both_models_sessions():
    m = _net()
    x, y = _batch()
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1))
    feat = m.features.compile(SHAPE)
    m.features[0] = nn.Conv2d(1, 4, 3)  # a real change of the structure
    with pytest.raises(cn.Error, match=r"structure changed \(module 'features\.0' replaced"):
        train.step(x, y)
    with pytest.raises(cn.Error, match=r"structure changed \(module '0' replaced"):
        feat.run(x)
    # compiled again, both run on the new weights and share them again
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1))
    feat = m.features.compile(SHAPE)
    train.step(x, y)
    np.testing.assert_allclose(feat.run(x), _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)


def test_replacing_a_parameter_of_another_shape_still_stops_the_sessions():
    m = _net()
    x, _ = _batch()
    infer = m.compile(SHAPE)
    feat = m.features.compile(SHAPE)
    m.classifier.bias = nn.Parameter(np.zeros(3, np.float32))  # same shape: written into the store
    np.testing.assert_allclose(infer.run(x), _fresh(m).run(x), rtol=1e-6, atol=1e-6)
    m.features[1].running_mean = np.ones(5, np.float32)  # another shape: replaced
    with pytest.raises(cn.Error, match=r"buffer 'features\.1\.running_mean' replaced"):
        infer.run(x)
    with pytest.raises(cn.Error, match=r"buffer '1\.running_mean' replaced"):
        feat.run(x)


def test_submodule_compiled_first_says_its_arrays_moved():
    """The submodule compiled before the model has a store of its own; the model's first compile needs one store
    for all its arrays and moves them: the submodule's old session says so (not "replaced"); compiled again, the
    submodule shares the model's store."""
    m = _net()
    x, y = _batch()
    feat = m.features.compile(SHAPE)
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(cn.Error) as e:
        feat.run(x)
    msg = str(e.value)
    assert "parameter '0.weight' moved, parameter '0.bias' moved" in msg and "replaced" not in msg
    assert "a model holding these modules was compiled since and moved them into its parameter store" in msg
    feat = m.features.compile(SHAPE)
    train.step(x, y)
    np.testing.assert_allclose(feat.run(x), _fresh(m.features).run(x), rtol=1e-6, atol=1e-6)
    train.step(x, y)  # the model's session is unaffected by the submodule's compile


def test_saving_a_submodule_of_a_compiled_model_writes_it_alone():
    """cn.save(model.features) after the model compiled: the file holds the features' tensors by their own names
    (not the model's store with the classifier), and the model's sessions keep running."""
    m = _net()
    x, y = _batch()
    train = m.compile(SHAPE, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    train.step(x, y)
    g = cn.load(cn.io.dumps(m.features, SHAPE))
    assert sorted(g.state_dict()) == sorted(k for k in m.features.state_dict())
    np.testing.assert_array_equal(g.compile(SHAPE).run(x), _fresh(m.features).run(x))
    train.step(x, y)  # still runs
    assert sorted(cn.load(cn.io.dumps(m, SHAPE)).state_dict()) == sorted(m.state_dict())
