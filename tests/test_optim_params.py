"""An optimizer over some of a model's parameters (PyTorch fine-tuning: torch.optim.SGD(model.fc.parameters())):
those are updated, the others stay exactly as they are; parameter groups without options of their own are the same
thing, with options of their own they are refused, as is an empty list (Session::set_frozen,
python/cnnnative/optim.py)."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


def _net(seed=0):
    cn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("make", [
    lambda m: cn.optim.SGD(m[3].parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda m: cn.optim.Adam(m[3].parameters(), lr=1e-2, weight_decay=1e-3),
    lambda m: cn.optim.AdamW([{"params": m[3].parameters()}], lr=1e-2),
])
def test_only_the_given_parameters_change(make):
    m = _net()
    conv_w, conv_b = np.array(m[0].weight), np.array(m[0].bias)
    fc_w = np.array(m[3].weight)
    opt = make(m)
    s = m.compile((8, 1, 8, 8), mode="train", optimizer=opt)
    x, y = _data()
    for _ in range(3):
        s.step(x, y)
    np.testing.assert_array_equal(m[0].weight, conv_w)  # weight decay and momentum left it alone too
    np.testing.assert_array_equal(m[0].bias, conv_b)
    assert not np.array_equal(m[3].weight, fc_w)
    assert sorted(s._s.frozen) == ["0.bias", "0.weight"]


def test_every_parameter_by_default_and_with_all_of_them():
    x, y = _data()
    outs = []
    for make in (lambda m: cn.optim.SGD(lr=0.1), lambda m: cn.optim.SGD(m.parameters(), lr=0.1),
                 lambda m: cn.optim.SGD([{"params": m[0].parameters()}, {"params": m[3].parameters(), "lr": 0.1}],
                                        lr=0.1)):
        m = _net()
        s = m.compile((8, 1, 8, 8), mode="train", optimizer=make(m))
        for _ in range(2):
            s.step(x, y)
        assert s._s.frozen == []
        outs.append(np.array(m[0].weight))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_head_fine_tuning_matches_pytorch():
    torch = pytest.importorskip("torch")
    m = _net(3)
    t = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.state_dict().items()})
    s = m.compile((8, 1, 8, 8), mode="train", optimizer=cn.optim.SGD(m[3].parameters(), lr=0.05, momentum=0.9))
    topt = torch.optim.SGD(t[3].parameters(), lr=0.05, momentum=0.9)
    x, y = _data()
    for _ in range(4):
        s.step(x, y)
        topt.zero_grad()
        torch.nn.functional.cross_entropy(t(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
        topt.step()
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_the_frozen_set_is_kept_by_a_resumed_optimizer_state():
    m = _net()
    opt = cn.optim.SGD(m[3].parameters(), lr=0.1, momentum=0.9)
    s = m.compile((8, 1, 8, 8), mode="train", optimizer=opt)
    x, y = _data()
    s.step(x, y)
    sd = opt.state_dict()
    conv_w = np.array(m[0].weight)
    opt2 = cn.optim.SGD(m[3].parameters(), lr=0.1, momentum=0.9)
    s2 = m.compile((8, 1, 8, 8), mode="train", optimizer=opt2)
    opt2.load_state_dict(sd)
    s2.step(x, y)
    np.testing.assert_array_equal(m[0].weight, conv_w)


def test_refusals():
    m = _net()
    with pytest.raises(ValueError, match="empty parameter list"):
        cn.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match=r"parameter group 0 sets its own lr=0.0; cnnnative applies one set"):
        cn.optim.SGD([{"params": m[0].parameters(), "lr": 0.0}, {"params": m[3].parameters()}], lr=0.1)
    with pytest.raises(ValueError, match=r"parameter group 1 has unknown options \['betas'\]"):
        cn.optim.SGD([{"params": m[0].parameters()}, {"params": m[3].parameters(), "betas": (0.9, 0.99)}], lr=0.1)
    with pytest.raises(TypeError, match="got one array"):
        cn.optim.SGD(m[0].weight, lr=0.1)
    other = _net(1)
    with pytest.raises(ValueError, match=r"parameter 0 of the optimizer \(shape \[3, 144\]\) is not a parameter"):
        m.compile((8, 1, 8, 8), mode="train", optimizer=cn.optim.SGD([other[3].weight], lr=0.1))


def test_core_set_frozen_checks_names_and_mode():
    m = _net()
    s = m.compile((8, 1, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    with pytest.raises(cn.Error, match="'nope' is not a trainable parameter"):
        s._s.set_frozen(["nope"])
    s._s.set_frozen(["3.weight"])
    assert s._s.frozen == ["3.weight"]
    s._s.set_frozen([])
    assert s._s.frozen == []
    inf = m.compile((8, 1, 8, 8))
    with pytest.raises(cn.Error, match="only a training session"):
        inf._s.set_frozen([])
