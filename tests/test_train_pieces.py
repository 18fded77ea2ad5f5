"""Training in pieces (compile's batch_pieces; core/session.cpp, TrainPieces): a small model that treats samples
independently up to a mean loss runs each step's forward and backward passes as one equal piece of the batch per
thread, on workers compiled for one thread, and averages the pieces' gradients before the session's update.
Checked against whole-batch steps (CNNNATIVE_TRAIN_PIECES=0 and batch_pieces=False), PyTorch-style user models,
every loss, failures (a label out of range, a non-finite loss) that must report what a whole-batch step reports,
the models and settings that must not take pieces, threads, and what profile() and memory_report() say."""
import threading

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


@pytest.fixture(autouse=True)
def two_threads():
    info = cn.threads_info()
    cn.set_num_threads(2)
    yield
    cn.set_num_threads("auto" if info["mode"] == "auto" else info["max"])


class Net(nn.Module):
    """A user's small CNN, the PyTorch way: conv -> relu -> pool twice, flatten, two linear layers."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 84)
        self.fc2 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.conv1(x)))
        x = self.pool(nn.functional.relu(self.conv2(x)))
        x = x.flatten(1)
        return self.fc2(nn.functional.relu(self.fc1(x)))


def data(n, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def train(model_fn, x, y, steps, pieces, loss=None, opt=None, **kw):
    """(model, session, losses) after `steps` steps, in pieces or whole batches."""
    cn.manual_seed(0)
    m = model_fn()
    opt = opt or cn.optim.SGD(lr=0.05, momentum=0.9)
    sess = m.compile(x.shape, mode="train", optimizer=opt, loss=loss, batch_pieces=pieces, **kw)
    losses = [sess.step(x, y) for _ in range(steps)]
    return m, sess, losses


def assert_close_params(a, b, rtol=2e-4, atol=2e-6):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=rtol, atol=atol, err_msg=k)


def test_pieces_match_whole_batch_steps():
    x, y = data(64)
    mp, sp, lp = train(Net, x, y, 6, True)
    mw, sw, lw = train(Net, x, y, 6, False)
    assert sp.batch_pieces == (32, 2, 2) and sw.batch_pieces is None
    np.testing.assert_allclose(lp, lw, rtol=1e-5)
    assert lp[-1] < lp[0]
    assert_close_params(mp, mw)
    np.testing.assert_allclose(sp.output(), sw.output(), rtol=1e-4, atol=1e-5)  # the whole batch's logits, in order


def test_pieces_are_deterministic_and_env_turns_them_off(monkeypatch):
    x, y = data(32)
    a, sa, la = train(Net, x, y, 4, True)
    b, _, lb = train(Net, x, y, 4, True)
    assert la == lb
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert sa.batch_pieces == (16, 2, 2)
    monkeypatch.setenv("CNNNATIVE_TRAIN_PIECES", "0")
    _, s, _ = train(Net, x, y, 1, True)
    assert s.batch_pieces is None


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_pieces_for_every_mean_loss(loss):
    x, _ = data(32)
    t = np.random.default_rng(1).random((32, 10)).astype(np.float32)
    mp, sp, lp = train(Net, x, t, 4, True, loss=loss)
    mw, _, lw = train(Net, x, t, 4, False, loss=loss)
    assert sp.batch_pieces == (16, 2, 2)
    np.testing.assert_allclose(lp, lw, rtol=1e-5)
    assert_close_params(mp, mw)


def test_pieces_with_adam_and_weight_decay_and_lenet5():
    x, y = data(64)
    mk = lambda: cn.models.lenet5()  # noqa: E731
    opt = lambda: cn.optim.AdamW(lr=1e-3, weight_decay=0.01)  # noqa: E731
    mp, sp, lp = train(mk, x, y, 5, True, opt=opt())
    mw, _, lw = train(mk, x, y, 5, False, opt=opt())
    assert sp.batch_pieces == (32, 2, 2)
    np.testing.assert_allclose(lp, lw, rtol=1e-5)
    assert_close_params(mp, mw, rtol=1e-3, atol=1e-6)  # Adam divides by sqrt(v): small gradients amplify rounding


def test_pieces_gradients_match_pytorch():
    torch = pytest.importorskip("torch")
    x, y = data(32)
    m, sess, _ = train(Net, x, y, 0, True, opt=cn.optim.SGD(lr=0.0))
    sd = m.state_dict()
    tn = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                             torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                             torch.nn.Linear(400, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10)).double()
    names = {"conv1": 0, "conv2": 3, "fc1": 7, "fc2": 9}
    with torch.no_grad():
        for k, i in names.items():
            tn[i].weight.copy_(torch.from_numpy(np.array(sd[k + ".weight"])))
            tn[i].bias.copy_(torch.from_numpy(np.array(sd[k + ".bias"])))
    out = tn(torch.from_numpy(x).double())
    ref = torch.nn.functional.cross_entropy(out, torch.from_numpy(y).long())
    ref.backward()
    seen = {}

    def hook(grads, loss):  # the averaged gradient block the update is about to use
        seen["g"], seen["loss"] = grads.copy(), loss
        return loss

    sess._s.set_grad_hook(hook)
    loss = sess.step(x, y)
    assert sess.batch_pieces == (16, 2, 2)
    assert abs(loss - ref.item()) < 1e-5 * abs(ref.item()) and seen["loss"] == loss
    layout = {name: (off, n) for name, off, n, _ in sess._s.grad_ready()}
    for k, i in names.items():
        for part, tp in (("weight", tn[i].weight), ("bias", tn[i].bias)):
            off, n = layout[f"{k}.{part}"]
            got = seen["g"][off:off + n].reshape(tuple(tp.shape))
            want = tp.grad.numpy()
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-7, f"{k}.{part}"


@pytest.mark.parametrize("case", ["batchnorm", "dropout", "odd_batch", "small_piece", "deterministic", "one_thread",
                                  "off"])
def test_models_and_settings_that_keep_whole_batches(case):
    x, y = data(64)
    kw = {}
    model = Net
    if case == "batchnorm":
        model = lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),  # noqa: E731
                                      nn.Linear(4 * 26 * 26, 10))
    elif case == "dropout":
        model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Dropout(0.5), nn.Linear(32, 10))  # noqa
    elif case == "odd_batch":
        x, y = x[:63], y[:63]
    elif case == "small_piece":  # 7 samples a thread: not worth a worker
        x, y = x[:14], y[:14]
    elif case == "deterministic":
        kw["deterministic"] = True
    elif case == "one_thread":
        cn.set_num_threads(1)
    _, sess, losses = train(model, x, y, 2, case != "off", **kw)
    assert sess.batch_pieces is None
    assert np.isfinite(losses).all()
    assert sess.memory_report()["pieces_bytes"] == 0


def test_a_label_out_of_range_fails_as_a_whole_batch_step_and_loses_nothing():
    x, y = data(32)
    m, sess, _ = train(Net, x, y, 2, True)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    bad = y.copy()
    bad[21] = 12  # in the second piece
    with pytest.raises(cn.Error, match=r"out of range") as e:
        sess.step(x, bad)
    _, whole, _ = train(Net, x, y, 0, False)
    with pytest.raises(cn.Error) as e_whole:
        whole.step(x, bad)
    assert str(e.value) == str(e_whole.value)  # the whole batch's index, not the piece's
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    sess.step(x, y)  # and the pieces still run
    assert sess.batch_pieces == (16, 2, 2)


def test_a_non_finite_loss_is_reported_and_nothing_is_updated():
    x, y = data(32)
    m, sess, _ = train(Net, x, y, 1, True)
    with cn.no_grad():
        m.fc2.bias[3] = np.inf
    before = {k: v.copy() for k, v in m.state_dict().items()}
    with pytest.raises(cn.Error, match="non-finite loss"):
        sess.step(x, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(cn.Error, match="non-finite value"):
        sess.step(np.full_like(x, np.nan), y)


def test_profile_and_memory_report_show_the_pieces():
    x, y = data(32)
    _, sess, _ = train(Net, x, y, 3, True)
    rep = sess.memory_report()
    assert rep["pieces_bytes"] > rep["arena_bytes"] // 2
    rows = sess.profile()
    pieces = [r for r in rows if r["name"].startswith("pieces/")]
    assert pieces and all(r["calls"] == 3 for r in pieces)
    assert {r["op"] for r in pieces} >= {"conv2d", "conv2d_grad_weights", "linear", "max_pool2d"}
    conv1 = [r for r in pieces if r["name"] == "pieces/conv1"][0]
    assert conv1["gflops"] > 0
    assert [r for r in rows if r["op"] == "pieces_mean"][0]["calls"] == 3
    assert [r for r in rows if r["op"] == "optimizer_update"][0]["calls"] == 3
    sess.profile(reset=True)
    assert all(r["calls"] == 0 for r in sess.profile())


def test_two_sessions_train_in_pieces_from_two_threads():
    x, y = data(32)
    ref, _, ref_losses = train(Net, x, y, 5, True)
    results = {}

    def work(i):
        try:
            results[i] = train(Net, x, y, 5, True)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    th = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for i in range(2):
        assert not isinstance(results[i], Exception), results[i]
        m, s, losses = results[i]
        assert losses == ref_losses and s.batch_pieces == (16, 2, 2)
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(v, ref.state_dict()[k])


def test_steps_after_the_first_allocate_nothing():
    x, y = data(32)
    _, sess, _ = train(Net, x, y, 2, True)
    before = cn.allocation_count()
    for _ in range(3):
        sess.step(x, y)
    assert cn.allocation_count() == before and sess.batch_pieces == (16, 2, 2)


def test_a_memory_budget_holds_for_the_session_and_its_pieces():
    x, y = data(32)
    _, free, _ = train(Net, x, y, 1, True)
    r = free.memory_report()
    held = r["arena_bytes"] + 4 * r["param_bytes"] + r["scratch_bytes"] + r["prepared_bytes"]  # what compile counts
    assert free.batch_pieces == (16, 2, 2) and r["pieces_bytes"] > 0
    _, tight, _ = train(Net, x, y, 2, True, max_arena_bytes=held + 4096)
    assert tight.batch_pieces is None and tight.memory_report()["pieces_bytes"] == 0
    _, roomy, _ = train(Net, x, y, 2, True, max_arena_bytes=held + r["pieces_bytes"] + (1 << 20))
    assert roomy.batch_pieces == (16, 2, 2)
