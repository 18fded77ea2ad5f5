import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)


def test_train_step_allocates_nothing_after_warmup():
    m = cn.models.lenet5(seed=0)
    sess = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
    x, y = _batch()
    sess.step(x, y)
    before = cn.allocation_count()
    for _ in range(10):
        sess.step(x, y)
    assert cn.allocation_count() == before


def test_infer_run_allocates_nothing_after_warmup():
    m = cn.models.lenet5(seed=0)
    sess = m.compile((4, 1, 28, 28))
    x, _ = _batch(4)
    sess.run(x)
    before = cn.allocation_count()
    for _ in range(5):
        sess.run(x)
    assert cn.allocation_count() == before


def test_same_seed_same_losses():
    def losses():
        m = cn.models.lenet5(seed=7)
        sess = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.Adam(lr=1e-3))
        out = []
        for i in range(20):
            x, y = _batch(seed=i)
            out.append(sess.step(x, y))
        return out
    a, b = losses(), losses()
    assert a == b
    assert a[-1] != a[0]


def test_training_and_inference_sessions_share_parameters():
    m = cn.models.lenet5(seed=0)
    infer = m.compile((16, 1, 28, 28))
    train = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    x, y = _batch()
    before = infer.run(x)
    train.step(x, y)
    after = infer.run(x)
    assert not np.allclose(before, after)


def test_memory_report_and_reuse():
    m = cn.models.lenet5(seed=0)
    sess = m.compile((64, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1, momentum=0.9))
    r = sess.memory_report()
    assert r["lower_bound_bytes"] <= r["arena_bytes"] < r["naive_bytes"]
    assert r["param_bytes"] >= 61706 * 4
    assert r["grad_bytes"] == r["param_bytes"]
    assert r["optimizer_state_bytes"] == r["param_bytes"]
    off = m.compile((64, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1), plan_memory=False)
    assert off.memory_report()["arena_bytes"] == off.memory_report()["naive_bytes"]


def test_planned_and_unplanned_sessions_agree():
    x, y = _batch()
    outs = []
    for plan in (True, False):
        m = cn.models.lenet5(seed=0)
        s = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1), plan_memory=plan)
        outs.append([s.step(x, y) for _ in range(3)])
    assert outs[0] == outs[1]


def test_fast_backend_matches_reference_backend():
    x, y = _batch()
    res = []
    for backend in ("cpu", "reference"):
        m = cn.models.lenet5(seed=0)
        s = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9), backend=backend)
        res.append([s.step(x, y) for _ in range(3)] + [m.state_dict()["conv1.weight"].copy()])
    np.testing.assert_allclose(res[0][:3], res[1][:3], rtol=1e-4)
    np.testing.assert_allclose(res[0][3], res[1][3], rtol=1e-3, atol=1e-5)


def test_wrong_input_shape_and_dtype():
    sess = cn.models.lenet5().compile((4, 1, 28, 28))
    with pytest.raises(cn.Error, match=r"input 'x': expected shape \[4, 1, 28, 28\].*got \[3, 1, 28, 28\]"):
        sess.run(np.zeros((3, 1, 28, 28), np.float32))
    with pytest.raises(cn.Error, match="expected dtype float32"):
        sess.run(np.zeros((4, 1, 28, 28), dtype=np.complex64))
    with pytest.raises(cn.Error, match="numpy array"):
        sess.run("not an array")
    # float64 and non-contiguous inputs are converted once, with the same result
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28))
    a = sess.run(x)
    b = sess.run(np.asfortranarray(x.astype(np.float32)))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_label_out_of_range_leaves_parameters_untouched():
    m = cn.models.lenet5(seed=0)
    sess = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    x, y = _batch()
    y[3] = 12
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(cn.Error, match=r"label 12 .* out of range \[0, 10\)"):
        sess.step(x, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    y[3] = 1
    sess.step(x, y)  # the session still works


def test_non_finite_loss_is_reported_and_nothing_updated():
    m = cn.models.lenet5(seed=0)
    sess = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    x, y = _batch()
    with cn.no_grad():
        m.fc3.bias[0] = np.inf  # an inf logit makes the loss nan
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(cn.Error, match=r"non-finite loss \((nan|inf)\) at step 0; parameters and running statistics were not updated"):
        sess.step(x, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_model_cannot_take_input_fails_at_compile():
    with pytest.raises(ValueError, match=r"lenet5: expected input \[N, C, 28, 28\], got \[1, 3, 224, 224\]"):
        cn.models.lenet5().compile((1, 3, 224, 224))
    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 4, 5))
    with pytest.raises(cn.Error, match=r"node '2'"):
        net.compile((1, 1, 8, 8))


def test_residual_module_traces_and_trains():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.bn(self.conv(x)) + x)

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    sess = net.compile((8, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    losses = [sess.step(x, y) for _ in range(30)]
    assert losses[-1] < losses[0] * 0.5
    assert any("add" in s for s in sess.schedule())
    sd = net.state_dict()
    assert sd["1.bn.running_mean"].any() and sd["1.bn.num_batches_tracked"] == 30


def test_profile_reports_every_node_and_flops():
    m = cn.models.lenet5(seed=0)
    # whole-batch steps: steps trained in pieces add their workers' rows (tests/test_train_pieces.py)
    sess = m.compile((16, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01), batch_pieces=False)
    x, y = _batch()
    for _ in range(3):
        sess.step(x, y)
    prof = sess.profile()
    assert len(prof) == len(sess.schedule()) + 1  # + optimizer update
    assert all(r["calls"] == 3 for r in prof)
    conv1 = [r for r in prof if r["name"] == "conv1"][0]
    assert conv1["op"] == "conv2d" and conv1["gflops"] > 0
    # 2 * N*K*OH*OW * C*R*S for conv1: 16*6*28*28 outputs, 25 MACs each
    rows = sess._s.profile()
    assert [r for r in rows if r["name"] == "conv1"][0]["flops"] == 2 * 16 * 6 * 28 * 28 * 25
    assert abs(sum(r["share"] for r in prof) - 1) < 1e-9
    sess.profile(reset=True)
    assert all(r["calls"] == 0 for r in sess.profile())


def test_failed_step_leaves_batchnorm_running_stats_untouched():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    sess = net.compile((8, 1, 6, 6), mode="train", optimizer=cn.optim.SGD(lr=0.1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    sess.step(x, y)
    before = {k: v.copy() for k, v in net.state_dict().items()}
    bad = y.copy()
    bad[0] = 7
    with pytest.raises(cn.Error, match="out of range"):
        sess.step(x, bad)
    with cn.no_grad():
        net[5].bias[0] = np.inf
    with pytest.raises(cn.Error, match="non-finite loss"):
        sess.step(x, y)
    with cn.no_grad():
        net[5].bias[0] = before["5.bias"][0]
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
