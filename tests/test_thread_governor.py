"""The thread count follows the machine's load when nobody fixed one (core/threads.hpp, docs/ARCHITECTURE.md
"Threads"): auto mode is the default, a fixed count or OMP_NUM_THREADS turns it off; with CPU-bound processes taking
the CPUs an auto-mode session drops to 1 thread and returns to the maximum when they stop. A session holds kernels
for at most two counts (oneDNN fixes a primitive's threads when it creates it): a switch creates them once
(allocating), a switch back is free, and results across switches are those of a session created for that count."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cnnnative as cn


@pytest.fixture
def auto_mode():
    """Auto mode for one test (conftest.py fixes the suite's count); the count as it was afterwards."""
    info = cn.threads_info()
    cn.set_num_threads("auto")
    yield
    cn.set_num_threads("auto" if info["mode"] == "auto" else info["max"])


@pytest.fixture
def fixed_count():
    n = cn.get_num_threads()
    yield
    cn.set_num_threads(n)


def _child(code, **env):
    e = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                       env=e)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_auto_mode_is_the_default_and_a_fixed_count_or_omp_num_threads_turns_it_off():
    out = _child("""
        import cnnnative as cn
        i = cn.threads_info()
        print(i["mode"], i["max"] == cn.get_num_threads(), 1 <= i["current"] <= i["max"], i["load"] >= 0)
        cn.set_num_threads(1)
        i = cn.threads_info()
        print(i["mode"], i["max"], i["current"], i["load"])
        cn.set_num_threads("auto")
        print(cn.threads_info()["mode"])
        try:
            cn.set_num_threads("fast")
        except cn.Error as e:
            print(e)
    """)
    assert out.splitlines() == ["auto True True True", "fixed 1 1 0.0", "auto",
                                "set_num_threads: n must be a thread count or 'auto', got 'fast'"]
    out = _child("""
        import cnnnative as cn
        i = cn.threads_info()
        print(i["mode"], i["max"], i["current"], cn.get_num_threads())
        cn.set_num_threads("auto")  # explicitly asked for: auto even with OMP_NUM_THREADS
        print(cn.threads_info()["mode"])
    """, OMP_NUM_THREADS="1")
    assert out.splitlines() == ["environment 1 1 1", "auto"]


def _data(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_a_session_switches_kernels_when_the_fixed_count_changes_and_keeps_three_sets(fixed_count):
    cn.set_num_threads(2)
    model = cn.models.lenet5(seed=0)
    sess = model.compile((8, 1, 28, 28))
    x = _data((8, 1, 28, 28))
    y2 = sess.run(x).copy()
    assert sess.num_threads == 2
    counts = []
    for n in (1, 1, 2, 2, 1, 3, 3, 2, 1, 4, 1, 3):
        cn.set_num_threads(n)
        before = cn.allocation_count()
        y = sess.run(x).copy()
        counts.append(cn.allocation_count() - before)
        assert sess.num_threads == n
        cn.set_num_threads(n)
        fresh = cn.models.lenet5(seed=0).compile((8, 1, 28, 28))
        np.testing.assert_allclose(y, fresh.run(x), rtol=1e-5, atol=1e-6, err_msg=f"{n} threads")
    np.testing.assert_allclose(sess.run(x), sess.run(x))
    # the kernels for 1 thread are created once (the second set) and reused; 2 is the session's own set; 3 gets the
    # third set, and going back to 2 or 1 creates nothing; 4 replaces the set used longest ago (3's), and 3 then
    # replaces 4's (1's was used since)
    assert counts[0] > 0 and counts[1] == counts[2] == counts[3] == counts[4] == 0, counts
    assert counts[5] > 0 and counts[6] == counts[7] == counts[8] == 0, counts
    assert counts[9] > 0 and counts[10] == 0 and counts[11] > 0, counts
    np.testing.assert_allclose(y, y2, rtol=1e-5, atol=1e-6)


def test_training_keeps_training_through_switches(fixed_count):
    # Deterministic kernels: a step's result does not depend on the thread count, so a session that changes count
    # between steps trains bitwise like one that never does.
    shape = (8, 1, 28, 28)
    x, t = _data(shape, 1), np.random.default_rng(2).integers(0, 10, 8).astype(np.int32)

    def train(counts, deterministic):
        cn.set_num_threads(counts[0])
        model = cn.models.lenet5(seed=0)
        sess = model.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9),
                             deterministic=deterministic, seed=0)
        losses = []
        for n in counts:
            cn.set_num_threads(n)
            losses.append(sess.step(x, t))
            assert sess.num_threads == n
        return np.array(losses), model.state_dict()

    switching = [2, 2, 1, 1, 2, 1, 3, 2]
    la, wa = train(switching, True)
    lb, wb = train([1] * len(switching), True)
    assert np.array_equal(la, lb)
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    assert la[-1] < la[0]  # it trains
    # default (fast) kernels: the same training up to rounding
    lc, wc = train(switching, None)
    np.testing.assert_allclose(lc, lb, rtol=1e-4)
    for k in wa:
        np.testing.assert_allclose(wc[k], wb[k], rtol=1e-3, atol=1e-5, err_msg=k)


def _play(path, running):
    """A /proc/loadavg with `running` runnable threads on the machine (CNNNATIVE_LOADAVG_FILE reads it instead)."""
    path.write_text(f"0.50 0.40 0.30 {running}/400 4242\n")


@pytest.fixture
def played_load(auto_mode, tmp_path, monkeypatch):
    """Auto mode reading a played /proc/loadavg, which makes a test independent of what else runs on the machine:
    play(n) says n runnable threads; it starts at 1 (this one). Returns (play, file)."""
    if cn.threads_info()["max"] < 2:
        pytest.skip("auto mode has nothing to reduce with 1 thread at most")
    f = tmp_path / "loadavg"
    _play(f, 1)
    monkeypatch.setenv("CNNNATIVE_LOADAVG_FILE", str(f))
    return (lambda running: _play(f, running)), f


def test_auto_mode_follows_a_played_load_and_switches_kernels_once_it_holds(played_load, tmp_path, monkeypatch):
    # 1 runnable thread (this one), then two per CPU of the machine, then 1 again, then no file at all.
    top = cn.threads_info()["max"]
    _, f = played_load
    shape = (16, 1, 28, 28)
    x = _data(shape)
    t = np.random.default_rng(2).integers(0, 10, 16).astype(np.int32)
    model = cn.models.lenet5(seed=0)
    sess = model.compile(shape, batch_pieces=False)  # kernel sets only: batch pieces have their own test
    trainer = cn.models.lenet5(seed=0).compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9),
                                               deterministic=True)
    losses, log = [], []
    step = lambda: (losses.append(trainer.step(x, t)), log.append(trainer.num_threads))

    def until(count, seconds=20):
        end, runs = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            before, n = cn.allocation_count(), (sess.num_threads, sess.batch_pieces)
            sess.run(x)
            runs += 1
            if cn.allocation_count() != before:  # a switch of the count, or between whole batches and pieces
                assert (sess.num_threads, sess.batch_pieces) != n, "a run allocated without switching its thread count"
            step()
            # the governor's count, and both sessions on it (under load a session may also probe the top count)
            if sess.num_threads == count and trainer.num_threads == count and cn.threads_info()["current"] == count:
                return runs
        raise AssertionError(f"not at {count} threads after {seconds} s: {cn.threads_info()}, session at "
                             f"{sess.num_threads}, training session at {trainer.num_threads}")

    until(top)
    assert cn.threads_info()["current"] == top and cn.threads_info()["load"] < 0.5
    _play(f, 1 + 2 * os.cpu_count())
    runs = until(1)
    assert runs >= 3  # a load has to hold before kernels are rebuilt for it
    assert cn.threads_info()["current"] == 1
    cn.set_num_threads(1)
    ref1 = cn.models.lenet5(seed=0).compile(shape)
    cn.set_num_threads("auto")
    np.testing.assert_allclose(sess.run(x), ref1.run(x), rtol=1e-5, atol=1e-6)
    # back to the top count: both kernel sets exist by now, so the switch back allocates nothing
    _play(f, 1)
    before = cn.allocation_count()
    until(top)
    assert cn.allocation_count() == before
    # a fixed count is never changed by the load
    _play(f, 1 + 2 * os.cpu_count())
    cn.set_num_threads(top)
    for _ in range(30):
        sess.run(x)
        step()
        assert sess.num_threads == trainer.num_threads == top
    # no load file (no /proc): no sample, no reduction
    cn.set_num_threads("auto")
    until(1)
    monkeypatch.setenv("CNNNATIVE_LOADAVG_FILE", str(tmp_path / "missing"))
    until(top)
    assert cn.threads_info()["load"] == -1
    # the training session trained through every switch as it does on one thread (deterministic kernels)
    assert 1 in log and top in log
    cn.set_num_threads(1)
    ref = cn.models.lenet5(seed=0).compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.05, momentum=0.9),
                                           deterministic=True)
    assert np.array_equal(np.array(losses), np.array([ref.step(x, t) for _ in losses]))


def test_auto_mode_under_load_probes_the_top_count_on_its_own_runs(played_load):
    # With the governor settled on 1 thread, a session times a few runs at the top count (a probe) and keeps the
    # faster; which one wins depends on the machine, so this checks the protocol: only the two counts, a probe of at
    # least 4 runs (the first untimed), kernels created once per count, results those of a session made for the
    # count, and no probes with a fixed count. (Whole batches: batch pieces, the top count's other form for an
    # inference batch, have their own test below.)
    top = cn.threads_info()["max"]
    play, _ = played_load
    shape = (16, 1, 28, 28)
    x = _data(shape)
    sess = cn.models.lenet5(seed=0).compile(shape, batch_pieces=False)
    log = []
    # no trials yet: a run at the top count may also be a trial's (the governor's smoothed load from earlier tests),
    # whose next probe could already be another option
    assert _run_until(sess, x, lambda: sess.num_threads == top and sess.auto_choice is None and
                      cn.threads_info()["current"] == top, 20, log)
    play(1 + 2 * os.cpu_count())
    log.clear()
    allocs = []

    def probed():
        # the first 1-thread run, then a run at the top count after it, then back to 1 or staying at top for 4+
        if 1 not in log:
            return False
        after = log[log.index(1):]
        if top not in after:
            return False
        probe = after[after.index(top):]
        return len(probe) >= 5 or (len(probe) >= 4 and probe[-1] == 1)

    end = time.monotonic() + 30
    while time.monotonic() < end and not probed():
        before = cn.allocation_count()
        sess.run(x)
        allocs.append(cn.allocation_count() - before)
        log.append(sess.num_threads)
    assert probed(), f"no probe of {top} threads within 30 s: {log[-40:]}"
    assert set(log) <= {1, top}, set(log)
    first = log.index(1)
    after = log[first:]
    probe = after[after.index(top):]
    run_len = next((i for i, n in enumerate(probe) if n != top), len(probe))
    assert run_len >= 4, probe  # the probe's first run is not timed: at least 1 + 3 runs
    # the session ran at the top count before the load and at 1 thread from `first` on: it holds kernels for both,
    # so probing and coming back create nothing
    assert sum(allocs[first + 1:]) == 0, allocs
    cn.set_num_threads(sess.num_threads)
    ref = cn.models.lenet5(seed=0).compile(shape)
    cn.set_num_threads("auto")
    np.testing.assert_allclose(sess.run(x), ref.run(x), rtol=1e-5, atol=1e-6)
    # a fixed count ends the trials: every run at that count while the played load stays
    cn.set_num_threads(1)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        sess.run(x)
        assert sess.num_threads == 1


def _busy_loop():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)


def _run_until(sess, x, done, seconds, log):
    """Runs sess until done() (True) or `seconds` pass (False); checks every run allocates nothing except a switch
    (of the thread count, or between whole batches and batch pieces)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        before, n = cn.allocation_count(), (sess.num_threads, sess.batch_pieces)
        sess.run(x)
        if cn.allocation_count() != before:
            assert (sess.num_threads, sess.batch_pieces) != n, "a run allocated without switching its thread count"
        log.append(sess.num_threads)
        if done():
            return True
    return False


def test_auto_mode_drops_to_one_thread_while_cpu_bound_processes_run_and_returns_after(auto_mode):
    MAX = cn.threads_info()["max"]
    if not 2 <= MAX <= 16:
        pytest.skip(f"needs 2-16 threads at most (this process may use {MAX}): one CPU-bound process per CPU")
    model = cn.models.lenet5(seed=0)
    x = _data((16, 1, 28, 28))
    sess = model.compile((16, 1, 28, 28))
    log = []
    if not _run_until(sess, x, lambda: sess.num_threads == MAX, 3, log):
        pytest.skip(f"the machine is busy already (load {cn.threads_info()['load']:.1f} on {MAX} CPUs): auto mode "
                    f"stays below {MAX} threads before this test adds any load")
    busy = [_busy_loop() for _ in range(MAX)]
    try:
        # a fixed count is never changed by the load
        cn.set_num_threads(MAX)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            sess.run(x)
            assert sess.num_threads == MAX
        ref = cn.models.lenet5(seed=0).compile((16, 1, 28, 28))
        cn.set_num_threads("auto")
        assert _run_until(sess, x, lambda: sess.num_threads == 1, 30, log), \
            f"still {sess.num_threads} threads with {MAX} CPU-bound processes on {MAX} CPUs: {cn.threads_info()}"
        y1 = sess.run(x).copy()
        cn.set_num_threads(1)
        ref1 = cn.models.lenet5(seed=0).compile((16, 1, 28, 28))
        cn.set_num_threads("auto")
        np.testing.assert_allclose(y1, ref1.run(x), rtol=1e-5, atol=1e-6)
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
    if not _run_until(sess, x, lambda: sess.num_threads == MAX, 60, log):
        info = cn.threads_info()
        assert info["load"] >= 0.4, f"still {sess.num_threads} threads after the CPU-bound processes stopped: {info}"
        pytest.skip(f"the machine stayed busy after this test's load stopped (load {info['load']:.1f})")
    np.testing.assert_allclose(sess.run(x), ref.run(x), rtol=1e-5, atol=1e-6)
    # every switch happened after the count had held for a while: no flapping from run to run
    switches = sum(a != b for a, b in zip(log, log[1:]))
    assert switches <= 4, switches


def _expected_piece(batch, workers):
    """The piece size the session picks: the smallest divisor of the batch giving at most 4 pieces per worker."""
    return next(p for p in range(1, batch + 1) if batch % p == 0 and batch // p <= 4 * workers)


def _lenet_b32_under_played_load(played_load):
    """(top count, play, x, a LeNet-5 b32 inference session in auto mode, the whole batch's output)."""
    top = cn.threads_info()["max"]
    play, _ = played_load
    shape = (32, 1, 28, 28)
    x = _data(shape)
    sess = cn.models.lenet5(seed=0).compile(shape)
    ref = cn.models.lenet5(seed=0).compile(shape, batch_pieces=False).run(x).copy()
    return top, play, x, sess, ref


def test_under_load_an_inference_batch_runs_in_pieces_that_free_workers_take(played_load):
    # The top count's probe under load runs an inference batch as pieces over single-threaded workers: the results
    # are the whole batch's (to float rounding), the workers are made once (no pieced run after the first allocates),
    # and the pieces are what batch_pieces says.
    # Threads from here on are this session's: its workers are made at its first run in pieces, which may come while
    # the governor's smoothed load from earlier tests has not yet gone (a snapshot taken later missed them in CI).
    tasks_before = set(os.listdir("/proc/self/task"))
    top, play, x, sess, ref = _lenet_b32_under_played_load(played_load)
    # no load (once the governor's smoothed load from earlier tests has gone): whole batches on every thread
    assert _run_until(sess, x, lambda: sess.num_threads == top and sess.batch_pieces is None and
                      sess.auto_choice is None and cn.threads_info()["current"] == top, 20, [])
    for _ in range(5):
        sess.run(x)
        assert sess.batch_pieces is None
    np.testing.assert_allclose(sess.run(x), ref, rtol=1e-5, atol=1e-6)
    play(1 + 2 * os.cpu_count())
    # and a real CPU-bound process, so that a worker is now and then descheduled holding a piece: the caller then runs
    # that piece itself, and whichever finishes first delivers it (the results must not care)
    busy = _busy_loop()
    try:
        runs = []  # (threads, pieces, allocations)
        end = time.monotonic() + 30
        while time.monotonic() < end and sum(r[1] is not None for r in runs) < 200:
            before = cn.allocation_count()
            y = sess.run(x)
            runs.append((sess.num_threads, sess.batch_pieces, cn.allocation_count() - before))
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    finally:
        busy.kill()
        busy.wait()
    pieced = [r for r in runs if r[1] is not None]
    assert len(pieced) >= 8, f"fewer than 8 runs in pieces within 30 s: {runs[-30:]}"
    p = _expected_piece(32, top)
    assert {r[1] for r in pieced} == {(p, 32 // p, top)}
    first = runs.index(pieced[0])
    # before the governor settles on 1 thread, whole batches at the top count; from then on the trials' options: the
    # pieces (the first choice), whole batches on the governor's count, on the top count or on one thread more
    assert all(r[0] == top for r in pieced) and all(r[0] in (1, top, top + 1) for r in runs[first:] if r[1] is None)
    assert sum(r[2] for r in runs[first + 1:] if r[1] is not None) == 0, runs  # (a 1-thread probe makes its set)
    # with one worker per CPU the process may use, each worker is pinned to its own CPU (none otherwise)
    allowed = os.sched_getaffinity(0)
    pinned = []
    for t in set(os.listdir("/proc/self/task")) - tasks_before:
        try:
            cpus = os.sched_getaffinity(int(t))
        except OSError:  # a thread that ended since
            continue
        if len(cpus) == 1 and len(allowed) > 1:
            pinned.append(next(iter(cpus)))
    assert sorted(pinned) == (sorted(allowed) if len(allowed) == top else []), (pinned, allowed, top)
    # a fixed count ends the trials, and with them the pieces
    cn.set_num_threads(top)
    for _ in range(20):
        sess.run(x)
        assert sess.batch_pieces is None and sess.num_threads == top


class _SoftmaxOverBatch(cn.nn.Module):
    """Each output depends on every sample of the batch (softmax along dim 0): its batch must never be split."""

    def __init__(self):
        super().__init__()
        self.conv = cn.nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return cn.functional.softmax(self.conv(x).flatten(1), dim=0)


def test_under_load_the_trials_time_pieces_whole_batches_and_the_governors_count(played_load):
    # Four options once the governor settled on fewer threads: the batch in pieces (the first choice), the whole
    # batch on the top count (every kernel split over all threads), on one thread more than the top count (under one
    # CPU-bound process the fastest for ResNet-18 b16 in bench/busy.py) and on the governor's count. Each is timed on
    # the session's own runs; which wins is the machine's business, so this checks that all four run and give the
    # whole batch's results.
    top, play, x, sess, ref = _lenet_b32_under_played_load(played_load)
    assert _run_until(sess, x, lambda: sess.num_threads == top and sess.auto_choice is None and
                      cn.threads_info()["current"] == top, 20, [])
    play(1 + 2 * os.cpu_count())
    seen = set()  # from the first run in pieces on (before it, whole batches on the top count until the count holds)
    end = time.monotonic() + 40
    while time.monotonic() < end and len(seen) < 4:
        y = sess.run(x)
        if seen or sess.batch_pieces is not None:
            seen.add((sess.num_threads, sess.batch_pieces is not None))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert seen == {(top, True), (top, False), (top + 1, False), (1, False)}, seen


class _WideHead(cn.nn.Module):
    """A convolution and a linear layer with weights of twice one core's L2 cache: each piece would stream them."""

    def __init__(self, l2_bytes):
        super().__init__()
        self.conv = cn.nn.Conv2d(1, 8, 3)
        self.fc = cn.nn.Linear(8 * 26 * 26, 2 * l2_bytes // (4 * 8 * 26 * 26) + 1)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_under_load_the_first_choice_is_pieces_for_small_weights_and_one_thread_more_for_large(played_load):
    # The trials' first choice: the pieces where the weights fit one core's L2 cache (LeNet-5), whole batches on
    # one thread more than the top count where they do not (each single-threaded piece would stream them from memory
    # again, and a static split over the top count runs at the speed of the thread sharing a core); the trials may
    # change it later, so this looks at the first choice only. A session that cannot run pieces starts with the
    # governor's count.
    top, play, x, small, _ = _lenet_b32_under_played_load(played_load)
    l2 = os.sysconf("SC_LEVEL2_CACHE_SIZE") if "SC_LEVEL2_CACHE_SIZE" in os.sysconf_names else 0
    big = _WideHead(l2 if l2 > 0 else 1 << 20).compile(x.shape)
    whole = cn.models.lenet5(seed=0).compile(x.shape, batch_pieces=False)
    sessions = {"small": small, "big": big, "whole": whole}
    for s in sessions.values():  # no load (once the governor's smoothed load from earlier tests has gone): no trials
        assert _run_until(s, x, lambda: s.auto_choice is None and cn.threads_info()["current"] == top, 20, [])
    play(1 + 2 * os.cpu_count())
    first = {}
    end = time.monotonic() + 30
    while time.monotonic() < end and len(first) < len(sessions):
        for k, s in sessions.items():
            s.run(x)
            if k not in first and s.auto_choice is not None:
                first[k] = s.auto_choice
    assert first == {"small": "pieces", "big": "more", "whole": "fewer"}, first
    cn.set_num_threads(top)  # a fixed count ends the trials
    for s in sessions.values():
        s.run(x)
        assert s.auto_choice is None


def test_probes_wait_until_the_runs_since_paid_fifty_times_their_cost(played_load):
    # A probe costs 1 + 3 runs of another option; it waits until the session ran 1 / 0.02 times that (at the
    # choice's time per run) since the trials began or the last probe ended, so that probes take at most ~2 % of a
    # session's time however slow its runs (ResNet-18 b16 lost 6 % to them in its first seconds under load). Here:
    # LeNet-5 b32 in whole batches (first choice: the governor's 1 thread; the probe: the top count).
    top = cn.threads_info()["max"]
    play, _ = played_load
    x = _data((32, 1, 28, 28))
    s = cn.models.lenet5(seed=0).compile(x.shape, batch_pieces=False)
    assert _run_until(s, x, lambda: s.auto_choice is None and cn.threads_info()["current"] == top, 20, [])
    play(1 + 2 * os.cpu_count())
    began, choice_ms, probe_at = None, [], None
    end = time.monotonic() + 30
    while time.monotonic() < end and probe_at is None:
        t0 = time.perf_counter()
        s.run(x)
        ms = (time.perf_counter() - t0) * 1000
        if began is None:
            began = time.perf_counter() if s.auto_choice is not None else None
            continue
        assert s.auto_choice == "fewer"
        if s.num_threads == top:
            probe_at = time.perf_counter()
        else:
            choice_ms.append(ms)
    assert began is not None and probe_at is not None, "no probe within 30 s"
    # (the session times its runs inside run(); the test's times include the call, so its bound is the lower one)
    assert probe_at - began >= 0.5 * 4 * min(choice_ms) / 0.02 / 1000, (probe_at - began, min(choice_ms))
    assert len(choice_ms) > 20  # without the wait, the first probe came after 3 timed runs


def test_training_never_runs_more_threads_than_cpus(played_load):
    # One thread more than the top count is an inference option: a training step has tens of parallel regions, each
    # waiting for whichever of the oversubscribed threads is descheduled (LeNet-5 b64 ran 6x slower on 3 threads under
    # load). The trials of a training session probe the top count only: two probes in a row are both at the top
    # count (for inference the second would be one thread more).
    top = cn.threads_info()["max"]
    play, _ = played_load
    x, t = _data((32, 1, 28, 28)), np.random.default_rng(1).integers(0, 10, 32).astype(np.int32)
    s = cn.models.lenet5(seed=0).compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), batch_pieces=False)
    for _ in range(3):
        s.step(x, t)
    play(1 + 2 * os.cpu_count())
    log = []
    end = time.monotonic() + 30
    while time.monotonic() < end:
        s.step(x, t)
        log.append(s.num_threads)
        if s.auto_choice is not None and sum(1 for a, b in zip(log, log[1:]) if a != top and b == top) >= 2:
            break
    assert top + 1 not in log, log
    assert sum(1 for a, b in zip(log, log[1:]) if a != top and b == top) >= 2, f"fewer than 2 probes in 30 s: {log}"


def test_batches_that_cannot_be_split_always_run_whole(played_load):
    # Under the same played load: a graph that mixes samples, batch_pieces=False, deterministic mode and a batch
    # too small for 2 pieces per worker all run their top-count probes as whole batches.
    top = cn.threads_info()["max"]
    play, _ = played_load
    mixing = _SoftmaxOverBatch()
    cases = {
        "mixes samples": (mixing.compile((32, 1, 28, 28)), (32, 1, 28, 28)),
        "batch_pieces=False": (cn.models.lenet5(seed=0).compile((32, 1, 28, 28), batch_pieces=False), (32, 1, 28, 28)),
        "deterministic": (cn.models.lenet5(seed=0).compile((32, 1, 28, 28), deterministic=True), (32, 1, 28, 28)),
        "batch too small": (cn.models.lenet5(seed=0).compile((2 * top - 1, 1, 28, 28)), (2 * top - 1, 1, 28, 28)),
    }
    xs = {k: _data(shape) for k, (_, shape) in cases.items()}
    refs = {k: s.run(xs[k]).copy() for k, (s, _) in cases.items()}
    play(1 + 2 * os.cpu_count())
    settled = dict.fromkeys(cases, False)  # ran at the governor's 1 thread: the trials have begun
    at_top = dict.fromkeys(cases, 0)       # top-count runs after that: the trials' probes
    end = time.monotonic() + 30
    while time.monotonic() < end and min(at_top.values()) < 4:
        for k, (s, _) in cases.items():
            y = s.run(xs[k])
            assert s.batch_pieces is None, k
            np.testing.assert_allclose(y, refs[k], rtol=1e-5, atol=1e-6, err_msg=k)
            settled[k] = settled[k] or s.num_threads == 1
            at_top[k] += settled[k] and s.num_threads == top
    assert min(at_top.values()) >= 4, f"top-count probes within 30 s: {at_top}"


def test_under_load_inference_pieces_stay_within_max_arena_bytes(played_load):
    """compile(max_arena_bytes=...) bounds the session and its batch pieces together, as it does for training: with
    room for the session alone, a loaded machine runs whole batches (the pieces' workers took 3.7 MB past the cap)."""
    top = cn.threads_info()["max"]
    play, _ = played_load
    shape = (256, 1, 28, 28)
    x = _data(shape)
    r = cn.models.lenet5(seed=0).compile(shape, batch_pieces=False).memory_report()
    # room for the session and the kernel sets of three more thread counts, not for the pieces' workers (~3.7 MB)
    sets = r["scratch_bytes"] + r["prepared_bytes"]
    need = r["arena_bytes"] + 4 * sets + 65536
    capped = cn.models.lenet5(seed=0).compile(shape, max_arena_bytes=need)
    free = cn.models.lenet5(seed=0).compile(shape)
    play(1 + 2 * os.cpu_count())
    # the uncapped twin runs in pieces under the same played load (the condition the cap must change), and they
    # would not fit the cap
    assert _run_until(free, x, lambda: free.batch_pieces is not None, 20, []), "no pieces without the cap"
    assert r["arena_bytes"] + sets + free.memory_report()["pieces_bytes"] > need
    end, runs = time.monotonic() + 20, 0
    while time.monotonic() < end and (runs < 200 or capped.auto_choice is None):
        capped.run(x)
        runs += 1
        assert capped.batch_pieces is None
        assert capped.memory_report()["pieces_bytes"] == 0
    # its trials ran (the first choice for small weights is the pieces, which the cap refused)
    assert capped.auto_choice is not None and capped.auto_choice != "pieces" and top >= 2


def test_profile_of_a_session_that_ran_in_pieces_says_so(played_load):
    """viz.profile (and `report`, which now compiles its profiling session with batch_pieces=False) on a session whose
    runs went to batch pieces: profile() has no per-node timings of them, and the error says why and what to do."""
    pytest.importorskip("matplotlib")
    from cnnnative import viz
    top, play, x, sess, _ = _lenet_b32_under_played_load(played_load)
    whole = cn.models.lenet5(seed=0).compile(x.shape, batch_pieces=False)
    play(1 + 2 * os.cpu_count())
    assert _run_until(sess, x, lambda: sess.batch_pieces is not None, 20, []), "no pieces under the played load"
    pieced, end = 0, time.monotonic() + 20  # five runs in a row in pieces (a probe may run a whole batch between)
    while pieced < 5 and time.monotonic() < end:
        if pieced == 0:
            sess.profile(reset=True)
        sess.run(x)
        whole.run(x)
        pieced = pieced + 1 if sess.batch_pieces is not None else 0
    assert pieced == 5
    assert all(r["calls"] == 0 for r in sess.profile())
    with pytest.raises(ValueError, match="ran its batches in pieces .* compile it with batch_pieces=False"):
        viz.profile(sess, os.devnull + ".png")
    assert whole.batch_pieces is None and any(r["calls"] > 0 for r in whole.profile())
