"""`self.training` inside a user's forward() follows compile(mode=...), as in PyTorch: while a model is traced for
a mode every module's training flag is that mode (train for mode='train', eval for inference), and afterwards each
module's flag is what it was before (model.train() / model.eval() are not changed by compiling)."""
import numpy as np
import pytest

import cnnnative as cn
import cnnnative.functional as F
from cnnnative import nn


class Head(nn.Module):
    """A classifier head written the PyTorch way: dropout that follows self.training, probabilities at inference."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.dropout(x, 0.5, training=self.training)
        y = self.fc(x)
        if not self.training:
            y = F.softmax(y, dim=1)
        return y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.head = Head()
        self.seen = []  # the flags forward() saw, per trace

    def forward(self, x):
        self.seen.append((self.training, self.head.training, self.head.fc.training))
        return self.head(self.flatten(x))


def _data():
    rs = np.random.RandomState(0)
    return rs.rand(4, 1, 4, 4).astype(np.float32), np.zeros((4, 4), np.float32)


def _ops(sess):
    return {k["op"] for k in sess.kernels()}


def test_inference_compile_of_a_fresh_model_traces_in_eval_mode():
    cn.manual_seed(0)
    m = Net()
    assert m.training  # a new module is in training mode, as in torch
    x, _ = _data()
    out = m.compile((4, 1, 4, 4)).run(x)
    assert m.seen == [(False, False, False)]
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)  # the `if not self.training` softmax branch ran
    assert "dropout" not in _ops(m.compile((4, 1, 4, 4)))
    # compiling did not change the model's own flags
    assert m.training and m.head.training and m.head.fc.training


def test_train_compile_after_eval_traces_in_training_mode():
    cn.manual_seed(0)
    m = Net()
    x, t = _data()
    m.eval()  # e.g. after an evaluation pass
    train = m.compile((4, 1, 4, 4), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.0), loss="mse")
    assert m.seen == [(True, True, True)]
    ops = _ops(train)
    assert "dropout" in ops and "softmax" not in ops  # F.dropout(..., training=self.training) kept, eval branch not
    losses = {train.step(x, t) for _ in range(5)}
    assert len(losses) > 1  # lr=0: only dropout makes the steps differ
    assert not m.training and not m.head.training and not m.head.fc.training


def test_each_module_gets_back_its_own_flag():
    cn.manual_seed(0)
    m = Net()
    m.head.eval()  # mixed flags: the model training, its head frozen in eval mode
    x, t = _data()
    m.compile((4, 1, 4, 4), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1), loss="mse")
    m.compile((4, 1, 4, 4))
    assert m.seen == [(True, True, True), (False, False, False)]
    assert m.training and not m.head.training and not m.head.fc.training


def test_builtin_layers_and_user_code_agree_in_both_modes():
    """nn.Dropout (reads the compile mode) and F.dropout(training=self.training) in the same model: both on in
    training, both off in inference, whatever model.train()/eval() said last."""

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = self.drop(x.flatten(1))
            return self.fc(F.dropout(x, 0.25, training=self.training))

    cn.manual_seed(0)
    m = Both()
    x, t = _data()
    for flag in (True, False):
        m.train(flag)
        infer = m.compile((4, 1, 4, 4))
        assert "dropout" not in _ops(infer)
        train = m.compile((4, 1, 4, 4), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.0), loss="mse")
        assert sum(k["op"] == "dropout" for k in train.kernels()) == 2
        assert m.training is flag


def test_flags_restored_when_forward_raises():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            if self.training:
                raise ValueError("no training for this one")
            return self.fc(x.flatten(1))

    m = Picky().eval()
    with pytest.raises(ValueError, match="no training"):
        m.compile((4, 1, 4, 4), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1), loss="mse")
    assert not m.training and not m.fc.training
    assert m.compile((4, 1, 4, 4)).run(_data()[0]).shape == (4, 4)
    m.train()
    assert m.compile((4, 1, 4, 4)).run(_data()[0]).shape == (4, 4)
    assert m.training and m.fc.training


def test_onnx_export_traces_with_training_false():
    """The ONNX exporter traces in eval mode: an `if not self.training` branch is in the file, whatever the flag."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cnnnative.onnx import export_model

    class Soft(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x)
            return y if self.training else F.softmax(y, dim=1)

    m = Soft()
    m.train()  # the flag the user left: the export must still take the eval branch
    proto = export_model(m, None, (2, 4))
    assert m.training
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    out = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
