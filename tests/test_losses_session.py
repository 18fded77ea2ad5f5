"""Session losses 'mse' and 'bce_with_logits' (float32 targets of the output's shape, fed by step(x, target))
next to 'cross_entropy' (int32 labels): values and updates against torch (skipped without it), target
checks, and the errors for losses a model cannot take."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import functional as F
from cnnnative import nn


def _net(out_channels=2):
    nn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, out_channels, 1))


def _data(seed=0, n=4):
    """x [n, 1, 6, 6] and a learnable target in [0, 1] of the net's output shape [n, 2, 6, 6]."""
    x = np.random.default_rng(seed).standard_normal((n, 1, 6, 6)).astype(np.float32)
    return x, np.concatenate([x > 0, 1 / (1 + np.exp(-2 * x))], axis=1).astype(np.float32)


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_loss_matches_torch_and_trains(loss):
    torch = pytest.importorskip("torch")
    ours = _net()
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1))
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    sess = ours.compile((4, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.1, momentum=0.5), loss=loss)
    assert sess.target_shape == (4, 2, 6, 6) and sess.num_classes is None
    topt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5)
    tfn = {"mse": torch.nn.functional.mse_loss,
           "bce_with_logits": torch.nn.functional.binary_cross_entropy_with_logits}[loss]
    losses = []
    for i in range(8):
        x, t = _data(i % 3)
        losses.append(sess.step(x, t))
        topt.zero_grad()
        tl = tfn(ref(torch.from_numpy(x)), torch.from_numpy(t))
        tl.backward()
        topt.step()
        assert abs(losses[-1] - tl.item()) <= 1e-4 * abs(tl.item()), (i, losses[-1], tl.item())
    assert losses[6] < 0.99 * losses[0]  # the same batch (seed 0) at steps 0 and 6
    sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        b = sd[k].numpy()
        assert np.max(np.abs(np.asarray(v) - b)) <= 1e-3 * np.max(np.abs(b)), k


def test_losses_without_torch():
    """Loss values against numpy (the first step's loss is computed before the update)."""
    for loss in ("mse", "bce_with_logits"):
        m = _net()
        x, t = _data()
        sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.0), loss=loss)
        got = sess.step(x, t)
        y = sess.output()  # this step's forward output (lr 0: nothing moved)
        assert y.shape == t.shape
        if loss == "mse":
            want = np.mean((y.astype(np.float64) - t) ** 2)
        else:
            z = y.astype(np.float64)
            want = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
        assert abs(got - want) <= 1e-5 * abs(want), (loss, got, want)


def test_target_shape_and_dtype_are_checked():
    m = _net()
    sess = m.compile((4, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.01), loss="mse")
    x, t = _data()
    with pytest.raises(cn.Error, match=r"input 'target': expected shape \[4, 2, 6, 6\].*got \[4, 2, 6\]"):
        sess.step(x, t[..., 0])
    with pytest.raises(cn.Error, match=r"input 'target': expected dtype float32"):
        sess.step(x, t.astype(np.complex64))
    sess.step(x, t.astype(np.float64))  # converted once, as inputs are
    with pytest.raises(ValueError, match=r"unknown loss 'l1' \(supported: cross_entropy, mse, bce_with_logits\)"):
        m.compile((4, 1, 6, 6), mode="train", loss="l1")
    with pytest.raises(ValueError, match=r"cross_entropy needs \[N, classes\] logits, the model gives \[4, 2, 6, 6\]"):
        m.compile((4, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.01), loss="cross_entropy")


def test_non_finite_target_updates_no_parameter():
    m = _net()
    sess = m.compile((4, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.1), loss="mse")
    x, t = _data()
    t[0, 0, 0, 0] = np.inf
    before = {k: np.array(v) for k, v in m.named_parameters()}
    with pytest.raises(cn.Error, match=r"input 'target' has a non-finite value \(inf\) at \[0, 0, 0, 0\]"):
        sess.step(x, t)
    # the documented guarantee covers parameters; BN running statistics are updated by the forward pass
    for k, v in m.named_parameters():
        np.testing.assert_array_equal(v, before[k])


def test_functional_losses_check_shapes_and_reduction():
    class Net(nn.Module):
        def __init__(self, fn, **kw):
            super().__init__()
            self.fn, self.kw = fn, kw

        def forward(self, x):
            return self.fn(x, x.flatten(1), **self.kw)

    for fn in (F.mse_loss, F.binary_cross_entropy_with_logits):
        with pytest.raises(ValueError, match=r"input \[2, 3, 4\] and target \[2, 12\] must have one shape"):
            Net(fn).compile((2, 3, 4))
        with pytest.raises(ValueError, match="only reduction='mean' is supported, got 'sum'"):
            Net(fn, reduction="sum").compile((2, 3, 4))


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_nan_input_is_refused_before_anything_runs(mode):
    """ReLU maps NaN to 0, so a NaN image would give a finite loss while poisoning BN statistics: refused."""
    m = cn.models.get_model("resnet18", seed=0, num_classes=10)
    sess = m.compile((2, 3, 32, 32), mode=mode, **({"optimizer": cn.optim.SGD(lr=0.01)} if mode == "train" else {}))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(cn.Error, match=r"input 'x' has a non-finite value \(nan\) at \[1, 2, 3, 4\]"):
        sess.step(x, np.zeros(2, np.int32)) if mode == "train" else sess.run(x)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    x[1, 2, 3, 4] = 0.0
    (sess.step(x, np.zeros(2, np.int32)) if mode == "train" else sess.run(x))
