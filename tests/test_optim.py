import math

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


def _linear_problem():
    m = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 2, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2], np.int32)
    return m, x, y


def _grads(m, x, y):
    """Gradient of the mean cross-entropy of Linear(6,3), by hand in float64."""
    w = m.state_dict()["1.weight"].astype(np.float64)
    b = m.state_dict()["1.bias"].astype(np.float64)
    xf = x.reshape(4, -1).astype(np.float64)
    z = xf @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), y] -= 1
    p /= 4
    return p.T @ xf, p.sum(0)


def test_sgd_nesterov_weight_decay_matches_numpy():
    m, x, y = _linear_problem()
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True,
                                                                    weight_decay=0.01))
    w = m.state_dict()["1.weight"].astype(np.float64).copy()
    buf = None
    for step in range(3):
        gw, _ = _grads(m, x, y)
        d = gw + 0.01 * w
        buf = d if buf is None else 0.9 * buf + d
        w = w - 0.1 * (d + 0.9 * buf)
        sess.step(x, y)
        np.testing.assert_allclose(m.state_dict()["1.weight"], w, rtol=1e-5, atol=1e-6)


def test_adamw_matches_numpy():
    m, x, y = _linear_problem()
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.AdamW(lr=0.01, weight_decay=0.1))
    b = m.state_dict()["1.bias"].astype(np.float64).copy()
    mm = np.zeros_like(b)
    vv = np.zeros_like(b)
    for t in range(1, 4):
        _, gb = _grads(m, x, y)
        b *= 1 - 0.01 * 0.1
        mm = 0.9 * mm + 0.1 * gb
        vv = 0.999 * vv + 0.001 * gb * gb
        b -= 0.01 / (1 - 0.9 ** t) * mm / (np.sqrt(vv) / math.sqrt(1 - 0.999 ** t) + 1e-8)
        sess.step(x, y)
        np.testing.assert_allclose(m.state_dict()["1.bias"], b, rtol=1e-5, atol=1e-6)


def test_schedules_drive_the_session_lr():
    m, x, y = _linear_problem()
    opt = cn.optim.SGD(lr=0.1)
    sess = m.compile(x.shape, mode="train", optimizer=opt)
    step = cn.optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(4):
        step.step()
        lrs.append(sess.lr)
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.025])
    opt2 = cn.optim.SGD(lr=1.0)
    cos = cn.optim.CosineAnnealingLR(opt2, T_max=4)
    vals = []
    for _ in range(4):
        cos.step()
        vals.append(opt2.lr)
    assert vals == pytest.approx([(1 + math.cos(math.pi * t / 4)) / 2 for t in range(1, 5)])


def test_lr_zero_freezes_parameters():
    m, x, y = _linear_problem()
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    sess.lr = 0.0
    before = m.state_dict()["1.weight"].copy()
    sess.step(x, y)
    np.testing.assert_array_equal(m.state_dict()["1.weight"], before)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="nesterov"):
        cn.optim.SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        cn.optim.Adam(lr=float("nan"))
    m, x, y = _linear_problem()
    sess = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    with pytest.raises(cn.Error, match="learning rate"):
        sess.lr = -1.0


@pytest.mark.parametrize("make", [lambda: cn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                  lambda: cn.optim.AdamW(lr=0.01, weight_decay=0.1),
                                  lambda: cn.optim.Adam(lr=0.01, amsgrad=True)])
def test_optimizer_state_dict_continues_bitwise(make):
    import json
    m, x, y = _linear_problem()
    opt = make()
    sess = m.compile(x.shape, mode="train", optimizer=opt)
    for _ in range(3):
        sess.step(x, y)
    sd = opt.state_dict()
    assert sd["step"] == 3 and sd["kind"] == opt.kind
    assert set(sd["state"]) == set(sess.optimizer_state()) and sd["state"]
    json.dumps({k: v for k, v in sd.items() if k != "state"})  # everything but the blocks is JSON-able
    m2, _, _ = _linear_problem()
    m2.load_state_dict(m.state_dict())
    opt2 = make()
    opt2.load_state_dict(sd)  # before compile: applied to the next training session
    sess2 = m2.compile(x.shape, mode="train", optimizer=opt2)
    assert sess2.step_count == 3
    for _ in range(2):
        sess.step(x, y)
        sess2.step(x, y)
    for k, v in m.state_dict().items():
        assert m2.state_dict()[k].tobytes() == v.tobytes(), k


def test_optimizer_load_state_dict_checks_before_changing_anything():
    m, x, y = _linear_problem()
    opt = cn.optim.SGD(lr=0.1, momentum=0.9)
    sess = m.compile(x.shape, mode="train", optimizer=opt)
    sess.step(x, y)
    sd = opt.state_dict()
    before = {k: v.copy() for k, v in sess.optimizer_state().items()}

    def unchanged():
        assert opt.lr == 0.1 and sess.lr == pytest.approx(0.1) and sess.step_count == 1
        for k, v in sess.optimizer_state().items():
            assert v.tobytes() == before[k].tobytes()
    with pytest.raises(ValueError, match="'adamw' optimizer"):
        opt.load_state_dict(dict(cn.optim.AdamW(lr=0.1).state_dict()))
    other = dict(sd, param_groups=[dict(sd["param_groups"][0], momentum=0.5, lr=0.3)])
    with pytest.raises(ValueError, match="momentum 0.5"):
        opt.load_state_dict(other)
    unchanged()
    bad = dict(sd, state={"momentum_buffer": np.full_like(sd["state"]["momentum_buffer"], np.nan)},
               param_groups=[dict(sd["param_groups"][0], lr=0.3)], step=9)
    with pytest.raises((ValueError, cn.Error)):
        opt.load_state_dict(bad)
    unchanged()
    with pytest.raises(ValueError, match="step"):
        opt.load_state_dict(dict(sd, step=-1))
    unchanged()
    good = dict(sd, param_groups=[dict(sd["param_groups"][0], lr=0.05)], step=5)
    opt.load_state_dict(good)
    assert opt.lr == 0.05 and sess.lr == pytest.approx(0.05) and sess.step_count == 5


@pytest.mark.parametrize("make", [lambda o: cn.optim.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
                                  lambda o: cn.optim.StepLR(o, step_size=2, gamma=0.3)])
def test_schedule_state_dict_round_trip(make):
    import json
    opt = cn.optim.SGD(lr=0.5)
    sched = make(opt)
    sched.step()
    sched.step()
    sd = json.loads(json.dumps(sched.state_dict()))
    assert sd["last_epoch"] == 2
    opt2 = cn.optim.SGD(lr=0.5)
    sched2 = make(opt2)
    sched2.load_state_dict(sd)
    assert opt2.lr == opt.lr
    for _ in range(3):
        sched.step()
        sched2.step()
        assert opt2.lr == opt.lr


def test_schedule_load_state_dict_refuses_bad_states():
    opt = cn.optim.SGD(lr=0.5)
    cos = cn.optim.CosineAnnealingLR(opt, T_max=4)
    with pytest.raises(ValueError, match="'StepLR' schedule"):
        cos.load_state_dict(cn.optim.StepLR(cn.optim.SGD(lr=0.1), 2).state_dict())
    sd = cos.state_dict()
    for bad in (dict(sd, last_epoch=-1), dict(sd, T_max=0), dict(sd, base_lr=float("nan")),
                {"type": "CosineAnnealingLR"}):
        with pytest.raises(ValueError):
            cos.load_state_dict(bad)
    assert cos.last_epoch == 0 and cos.T_max == 4 and opt.lr == 0.5


def test_cosine_schedule_follows_pytorch_past_t_max():
    """torch's CosineAnnealingLR climbs back after T_max (its closed form has no clamp); so does ours."""
    torch = pytest.importorskip("torch")
    opt = cn.optim.SGD(lr=0.1)
    cos = cn.optim.CosineAnnealingLR(opt, T_max=3, eta_min=0.001)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    tcos = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=3, eta_min=0.001)
    for _ in range(9):
        cos.step()
        topt.step()
        tcos.step()
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)


def test_a_bad_lr_changes_nothing():
    m, x, y = _linear_problem()
    opt = cn.optim.SGD(lr=0.1)
    sess = m.compile(x.shape, mode="train", optimizer=opt)
    for bad in (float("nan"), -1.0, float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="lr must be finite and >= 0"):
            opt.lr = bad
        assert opt.lr == 0.1 and opt.param_groups[0]["lr"] == 0.1 and sess.lr == 0.1
