"""One session used from several threads (serialized: every caller gets its own result, training never hangs),
separate sessions in parallel threads (the GIL is released during runs), and set_num_threads applying to the
whole process, worker threads included. The C++ side of the same rules: tests/test_cpp_embed.py (concurrent)."""
import threading
import time

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


def _join_all(threads, timeout=120):
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is still running (hang)"


def _inputs(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def test_one_inference_session_from_many_threads_gives_each_caller_its_own_output():
    model = cn.models.lenet5(seed=0)
    sess = model.compile((4, 1, 28, 28))
    xs = _inputs(6, (4, 1, 28, 28))
    want = [sess.run(x) for x in xs]
    errors, mismatches, calls = [], [], [0]
    lock = threading.Lock()

    def worker(k):
        try:
            for r in range(40):
                i = (k + r) % len(xs)
                y = sess.run(xs[i])
                with lock:
                    calls[0] += 1
                    if not np.array_equal(y, want[i]):
                        mismatches.append((k, r))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    _join_all(ts)
    assert not errors and not mismatches and calls[0] == 240


def test_one_training_session_from_two_threads_serializes_steps():
    model = cn.models.lenet5(seed=0)
    sess = model.compile((8, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    losses, errors = [], []

    def worker():
        try:
            for _ in range(15):
                losses.append(sess.step(x, y))
        except Exception as e:  # pragma: no cover
            errors.append(repr(e))

    ts = [threading.Thread(target=worker) for _ in range(2)]
    for t in ts:
        t.start()
    _join_all(ts)
    assert not errors
    assert sess.step_count == 30 and len(losses) == 30 and all(np.isfinite(losses))
    # serialized steps are the same 30 steps a single thread would take (same batch every time)
    ref_model = cn.models.lenet5(seed=0)
    ref = ref_model.compile((8, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9))
    ref_losses = [ref.step(x, y) for _ in range(30)]
    assert sorted(losses) == sorted(ref_losses)
    for (k, a), (_, b) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        assert np.array_equal(a, b), k


def test_runs_release_the_gil_and_separate_sessions_run_in_parallel_threads():
    # While one thread is inside a long run, Python code in another thread keeps running.
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    sess = model.compile((8, 3, 96, 96))
    x = np.ones((8, 3, 96, 96), np.float32)
    sess.run(x)
    started, done = threading.Event(), threading.Event()

    def long_run():
        started.set()
        for _ in range(3):
            sess.run(x)
        done.set()

    t = threading.Thread(target=long_run)
    t.start()
    started.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    t.join()
    assert ticks > 100, f"the main thread advanced only {ticks} times during three runs: the GIL was held"

    # Two sessions of two models, each in its own thread, give the results they give alone.
    m1, m2 = cn.models.lenet5(seed=1), cn.models.lenet5(seed=2)
    s1, s2 = m1.compile((4, 1, 28, 28)), m2.compile((4, 1, 28, 28))
    xs = _inputs(3, (4, 1, 28, 28), seed=3)
    want1, want2 = [s1.run(v) for v in xs], [s2.run(v) for v in xs]
    bad = []

    def use(s, want):
        for r in range(30):
            if not np.array_equal(s.run(xs[r % 3]), want[r % 3]):
                bad.append(r)

    ts = [threading.Thread(target=use, args=(s1, want1)), threading.Thread(target=use, args=(s2, want2))]
    for th in ts:
        th.start()
    _join_all(ts)
    assert not bad


def test_set_num_threads_applies_to_runs_from_other_threads():
    before = cn.get_num_threads()
    model = cn.models.lenet5(seed=0)
    sess = model.compile((2, 1, 28, 28))
    x = np.zeros((2, 1, 28, 28), np.float32)
    seen = {}
    try:
        for n in (1, 3):
            cn.set_num_threads(n)

            def worker():
                seen[n] = (cn.get_num_threads(), None)
                sess.run(x)
                seen[n] = (seen[n][0], sess.num_threads)

            t = threading.Thread(target=worker)
            t.start()
            _join_all([t])
            sess.run(x)
            assert sess.num_threads == n
        assert seen == {1: (1, 1), 3: (3, 3)}
    finally:
        cn.set_num_threads(before)


@pytest.mark.parametrize("n", [0, -1, 100000, 2**31 - 1])
def test_set_num_threads_refuses_absurd_counts(n):
    before = cn.get_num_threads()
    with pytest.raises(cn.Error, match="set_num_threads: n must be between 1 and"):
        cn.set_num_threads(n)
    assert cn.get_num_threads() == before


def test_cli_refuses_absurd_thread_count(capsys):
    from cnnnative.__main__ import main
    assert main(["train", "lenet5", "--threads", "100000", "--epochs", "1", "--no-progress"]) != 0
    assert "set_num_threads" in capsys.readouterr().err
