"""SyncBatchNorm (nn.SyncBatchNorm, batch_norm sync=1) and the core's hooks that data-parallel training uses
(Session.set_allreduce, set_step_hook, grad_ready), without MPI: two sessions in two threads stand for two
processes, their allreduce a sum over both through a barrier. 2 sessions x batch B with SyncBatchNorm must train
as 1 session x batch 2B with BatchNorm2d, on the fast kernels and the reference ones; in one process
SyncBatchNorm is BatchNorm2d. The MPI runs are in test_distributed.py."""
import threading

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


class _Group:
    """allreduce over n threads: every thread's array summed in thread-index order, the same sum everywhere."""

    def __init__(self, n):
        self.n = n
        self.slots = [None] * n
        self.barrier = threading.Barrier(n, timeout=30)
        self.local = threading.local()
        self.calls = [0] * n

    def allreduce(self, view):
        i = self.local.index
        self.calls[i] += 1
        self.slots[i] = np.array(view, copy=True)
        self.barrier.wait()
        total = self.slots[0].copy()
        for k in range(1, self.n):
            total += self.slots[k]
        self.barrier.wait()
        view[:] = total


def _model(sync, seed=3):
    cn.manual_seed(seed)
    bn = nn.SyncBatchNorm if sync else nn.BatchNorm2d
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), bn(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), bn(16),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 3 * 3, 5))


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    # channels off zero: the statistics are combined about the global mean
    x = (rng.normal(size=(n, 3, 8, 8)) + np.array([0.0, 5.0, -3.0])[None, :, None, None]).astype(np.float32)
    return x, rng.integers(0, 5, n).astype(np.int32)


def _train_two(backend, steps, B, layout="auto"):
    """Two SyncBatchNorm sessions in two threads, batch B each, gradients averaged in the grad hook."""
    x, y = _data(2 * B * steps)
    group = _Group(2)
    models = [_model(True), _model(True)]
    losses = [[], []]
    errors = []

    def work(i):
        try:
            group.local.index = i
            m = models[i]
            opt = cn.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
            sess = m.compile((B, 3, 8, 8), mode="train", optimizer=opt, backend=backend, layout=layout)
            assert sess._s.collective_sizes == [9, 8, 17, 16, 33, 17]

            def grad_hook(g, loss):
                group.allreduce(g)
                g *= np.float32(0.5)
                buf = np.array([loss])
                group.allreduce(buf)
                return float(buf[0] / 2)

            sess._s.set_grad_hook(grad_hook)
            sess._s.set_allreduce(group.allreduce)
            for s in range(steps):
                lo = (2 * s + i) * B
                losses[i].append(sess.step(x[lo:lo + B], y[lo:lo + B]))
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return models, losses, group


def _train_one(backend, steps, B, sync=False):
    x, y = _data(2 * B * steps)
    m = _model(sync)
    opt = cn.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sess = m.compile((2 * B, 3, 8, 8), mode="train", optimizer=opt, backend=backend)
    losses = []
    for s in range(steps):
        # global batch s = the two shards side by side
        lo = 2 * s * B
        losses.append(sess.step(x[lo:lo + 2 * B], y[lo:lo + 2 * B]))
    return m, losses


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_two_sync_sessions_train_as_one_session_with_the_double_batch(backend):
    cn.set_num_threads(1)
    steps, B = 3, 4
    models, losses, group = _train_two(backend, steps, B)
    assert group.calls[0] == group.calls[1] == steps * (6 + 2)  # 6 statistics exchanges + the 2 of the grad hook
    one, ref_losses = _train_one(backend, steps, B)
    np.testing.assert_allclose(losses[0], ref_losses, rtol=1e-5)
    assert losses[0] == losses[1]
    for k, v in one.state_dict().items():
        for m in models:
            np.testing.assert_allclose(np.array(m.state_dict()[k]), np.array(v), rtol=1e-5, atol=2e-6, err_msg=k)
    # the running statistics agree on both "processes" without any broadcast
    for k in ("1.running_mean", "1.running_var", "4.running_var"):
        np.testing.assert_array_equal(np.array(models[0].state_dict()[k]), np.array(models[1].state_dict()[k]))


def test_sync_batchnorm_in_one_process_is_batchnorm():
    cn.set_num_threads(2)
    a, la = _train_one("cpu", 2, 4, sync=True)
    b, lb = _train_one("cpu", 2, 4, sync=False)
    assert la == lb
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(np.array(v), np.array(b.state_dict()[k]), err_msg=k)
    # inference and model files: plain batch normalization (no sync attribute in the graph)
    x, _ = _data(2)
    np.testing.assert_array_equal(a.eval().compile((2, 3, 8, 8))(x), b.eval().compile((2, 3, 8, 8))(x))


def test_convert_sync_batchnorm_keeps_parameters_and_statistics():
    m = _model(False)
    m.train()
    x, y = _data(8)
    m.compile((8, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1)).step(x, y)
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    out = nn.SyncBatchNorm.convert_sync_batchnorm(m)
    assert out is m and type(m[1]) is nn.SyncBatchNorm and type(m[4]) is nn.SyncBatchNorm
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(np.array(v), before[k], err_msg=k)
    assert int(m[1]._extra_state["num_batches_tracked"]) == 1
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(3, momentum=0.2).eval())
    assert type(single) is nn.SyncBatchNorm and single.momentum == 0.2 and not single.training
    with pytest.raises(ValueError, match="process_group"):
        nn.SyncBatchNorm(4, process_group=object())


def test_grad_ready_and_step_hook_follow_the_backward_pass():
    cn.set_num_threads(1)
    m = _model(False)
    sess = m.compile((4, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(m.parameters(), lr=0.1))
    ready = sess._s.grad_ready()
    names = [r[0] for r in ready]
    assert names == [k for k, _ in m.named_parameters()]
    offsets = [r[1] for r in ready]
    assert offsets == sorted(offsets) and all(a[1] + a[2] <= b[1] for a, b in zip(ready, ready[1:]))
    assert ready[-1][1] + ready[-1][2] <= sess._s.grad_view().size  # the store aligns each parameter
    nf, n = sess._s.num_forward_steps, len(sess._s.schedule())
    assert all(nf <= r[3] < n for r in ready)
    # the last layer's gradients are final before the first layer's
    steps = {name: step for name, _, _, step in ready}
    assert steps["7.weight"] < steps["3.weight"] < steps["0.weight"]
    seen = []
    x, y = _data(4)

    def on_step(s):  # every gradient grad_ready calls final at s is what the update will see
        seen.append((s, {k: sess._s.grad_view()[o:o + c].copy() for k, o, c, st in ready if st == s}))

    sess._s.set_step_hook(sorted({r[3] for r in ready}), on_step)
    final = {}

    def grad_hook(g, loss):
        final.update({k: g[o:o + c].copy() for k, o, c, _ in ready})
        return loss

    sess._s.set_grad_hook(grad_hook)
    sess.step(x, y)
    assert [s for s, _ in seen] == sorted({r[3] for r in ready})
    for _, grads in seen:
        for k, v in grads.items():
            np.testing.assert_array_equal(v, final[k], err_msg=k)
            assert np.abs(v).max() > 0
    with pytest.raises(cn.Error, match="not a backward step"):
        sess._s.set_step_hook([0], on_step)
    sess._s.set_step_hook([], None)
    sess.step(x, y)
    assert len(seen) == len({r[3] for r in ready})
