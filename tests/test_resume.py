"""Resume: the CLI (and fit/fit_dense with checkpoint=) writes a checkpoint at the end of every epoch; a run
SIGKILLed right after its epoch-2 checkpoint and resumed in a new process prints the same per-epoch numbers
and final line, and ends with bitwise the same weights, optimizer state, RNG states and step count as an
uninterrupted run (same thread count). Mismatched settings, finished runs and weights-only checkpoints are
refused with clear errors."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import cnnnative as cn
from cnnnative.__main__ import main as cli_main
from cnnnative.train import checkpoint_info, fit, fit_dense

KILL = "_CNNNATIVE_TEST_KILL_AFTER_EPOCH"
_TIMING = ("images_per_s", "seconds")


def _start_cli(args, cwd, kill_after=None):
    env = dict(os.environ)
    env.pop(KILL, None)
    if kill_after is not None:
        env[KILL] = str(kill_after)
    return subprocess.Popen([sys.executable, "-m", "cnnnative", "train", *args, "--no-progress", "--threads", "1"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _cli(args, cwd, kill_after=None, timeout=300):
    return _finish(_start_cli(args, cwd, kill_after), timeout)


def _epoch_lines(out):
    """The per-epoch lines without their throughput (timing differs between runs)."""
    return [re.sub(r"\s+\d+ img/s$", "", l) for l in out.splitlines() if l.startswith("epoch ")]


def _final(out):
    return out.strip().splitlines()[-1]


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _strip_timing(meta):
    meta = dict(meta)
    meta["history"] = [{k: v for k, v in h.items() if k not in _TIMING} for h in meta["history"]]
    return meta


def assert_same_checkpoint(a, b):
    """Every .npy member (weights, BN counters, optimizer state) bitwise equal; the JSON state (epoch, step
    count, schedule, RNG states, history) equal but for the timings."""
    ma, mb = _members(a), _members(b)
    assert sorted(ma) == sorted(mb)
    for name in ma:
        if name.endswith(".json"):
            assert _strip_timing(json.loads(ma[name])) == _strip_timing(json.loads(mb[name]))
        else:
            assert ma[name] == mb[name], f"{name} differs"


def _kill_and_resume(tmp_path, args, epochs=4, kill_after=2):
    """Uninterrupted run, a run SIGKILLed after epoch `kill_after`'s checkpoint, its resumption; compares."""
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    pa = _start_cli([*args, "--epochs", str(epochs), "--out", str(full)], tmp_path)  # the two run side by side
    b1 = _cli([*args, "--epochs", str(epochs), "--out", str(part)], tmp_path, kill_after=kill_after)
    a = _finish(pa)
    assert a.returncode == 0, a.stderr
    assert b1.returncode == -signal.SIGKILL, (b1.returncode, b1.stderr)
    assert checkpoint_info(part)["epoch"] == kill_after
    assert [f for f in os.listdir(tmp_path) if ".tmp." in f] == []
    b2 = _cli([args[0], "--resume", str(part)], tmp_path)
    assert b2.returncode == 0, b2.stderr
    assert f"resuming from {part}: epoch {kill_after}/{epochs} done" in b2.stdout
    full_lines = _epoch_lines(a.stdout)
    assert len(full_lines) == epochs
    assert _epoch_lines(b1.stdout) == full_lines[:kill_after]
    assert _epoch_lines(b2.stdout) == full_lines[kill_after:]
    assert _final(b2.stdout) == _final(a.stdout)
    assert_same_checkpoint(full, part)
    assert_same_history(full, part)
    return a, b1, b2


def assert_same_history(a, b):
    """The history files next to two checkpoints (.json: epochs and steps; .csv) equal but for the timings."""
    def read(ck):
        js, cs = cn.train.history_paths(ck)
        with open(js) as f:
            doc = json.load(f)
        doc["epochs"] = [{k: v for k, v in e.items() if k not in _TIMING} for e in doc["epochs"]]
        with open(cs) as f:
            rows = [line.split(",")[:-2] for line in f.read().splitlines()]  # timing columns come last
        return doc, rows
    da, ra = read(a)
    db, rb = read(b)
    assert da == db and ra == rb
    assert len(da["steps"]) == checkpoint_info(a)["optimizer"]["step"]


def _digits_idx(path, n_train=160, n_test=48, seed=0):
    """A small MNIST-format folder (a learnable stripe per class), so no process waits for scikit-learn."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    for kind, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        x[np.arange(n), y * 2 + 4, 4:24] = 255
        cn.data.write_idx(str(path / f"{kind}-images-idx3-ubyte"), x)
        cn.data.write_idx(str(path / f"{kind}-labels-idx1-ubyte"), y)
    return str(path)


def test_cli_resume_lenet5_sgd(tmp_path):
    d = _digits_idx(tmp_path / "mnist")
    _kill_and_resume(tmp_path, ["lenet5", "--data", d, "--batch-size", "16"])


def test_cli_resume_lenet5_adamw_augment(tmp_path):
    d = _digits_idx(tmp_path / "mnist")
    _kill_and_resume(tmp_path, ["lenet5", "--data", d, "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.002",
                                "--augment"])


@pytest.mark.slow
def test_cli_resume_lenet5_bundled_digits(tmp_path):
    pytest.importorskip("sklearn")
    _kill_and_resume(tmp_path, ["lenet5"])


def test_cli_resume_unet_batchnorm(tmp_path):
    """fit_dense through the CLI; the U-Net's BatchNorm layers carry running stats and num_batches_tracked."""
    _kill_and_resume(tmp_path, ["unet", "--samples", "30", "--batch-size", "8"], epochs=3, kill_after=1)
    info = checkpoint_info(tmp_path / "part.npz")
    assert info["epoch"] == 3 and info["optimizer"]["step"] == 3 * 3
    counts = np.load(tmp_path / "part.npz")["inc.1.num_batches_tracked"]
    assert counts.shape == () and int(counts) == 9


@pytest.mark.slow
def test_cli_resume_conv_autoencoder_adamw(tmp_path):
    pytest.importorskip("sklearn")
    _kill_and_resume(tmp_path, ["conv_autoencoder", "--optimizer", "adamw"])


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--optimizer", "adamw", "--lr", "0.001", "--augment"]])
def test_cli_resume_alexnet_dropout(tmp_path, extra):
    _kill_and_resume(tmp_path, ["alexnet", "--samples", "40", "--batch-size", "8", *extra])


@pytest.mark.slow
def test_cli_sigkill_from_outside(tmp_path):
    """No hook: the parent SIGKILLs the run as soon as it prints epoch 2 (the kill lands somewhere in a later
    epoch or checkpoint write); the run resumes from whatever the checkpoint holds."""
    args = ["unet", "--samples", "40", "--batch-size", "8", "--epochs", "5"]
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    a = _cli([*args, "--out", str(full)], tmp_path)
    assert a.returncode == 0, a.stderr
    p = subprocess.Popen([sys.executable, "-m", "cnnnative", "train", *args, "--out", str(part), "--no-progress",
                          "--threads", "1"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("epoch  2/5"):
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=60)
    p.stdout.close()
    done = checkpoint_info(part)["epoch"]
    assert done >= 2
    b = _cli([args[0], "--resume", str(part)], tmp_path)
    assert b.returncode == 0, b.stderr
    assert _epoch_lines(b.stdout) == _epoch_lines(a.stdout)[done:]
    assert _final(b.stdout) == _final(a.stdout)
    assert_same_checkpoint(full, part)


# ---- refusals (in-process: nothing trains) ----

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch lenet5 CLI run and its checkpoint."""
    d = tmp_path_factory.mktemp("finished")
    r = _cli(["lenet5", "--data", _digits_idx(d / "mnist"), "--epochs", "2", "--batch-size", "32", "--out",
              str(d / "ck.npz")], d)
    assert r.returncode == 0, r.stderr
    return d / "ck.npz", r.stdout


@pytest.mark.parametrize("args, msg", [
    (["--batch-size", "16"], "--batch-size 16 (the checkpoint's run has 32)"),
    (["--optimizer", "adamw"], "--optimizer 'adamw' (the checkpoint's run has 'sgd')"),
    (["--seed", "1"], "--seed 1 (the checkpoint's run has 0)"),
    (["--lr", "0.1"], "--lr 0.1"),
    (["--augment"], "--augment True"),
    (["--num-classes", "12"], "--num-classes 12"),
    (["--epochs", "3"], "the checkpoint's run has 2 epochs"),
])
def test_cli_refuses_other_settings(finished, capsys, args, msg):
    ck, _ = finished
    before = ck.read_bytes()
    assert cli_main(["train", "lenet5", "--resume", str(ck), *args]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and msg in err, err
    assert ck.read_bytes() == before


def test_cli_refuses_other_model_and_data(finished, tmp_path, capsys):
    ck, _ = finished
    assert cli_main(["train", "alexnet", "--resume", str(ck)]) == 1
    assert "is of model 'lenet5', not 'alexnet'" in capsys.readouterr().err
    part = tmp_path / "copy.npz"
    shutil.copy(ck, part)

    def unfinish(meta):  # pretend the run is unfinished, so the CLI gets as far as comparing the data
        meta["epochs"] = meta["config"]["cli"]["epochs"] = 3
    _rewrite_meta(part, unfinish)
    other = _digits_idx(tmp_path / "other", seed=1)  # same sizes, other samples
    assert cli_main(["train", "lenet5", "--resume", str(part), "--data", other, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "training data differs" in err, err
    assert "schedule" in err  # the cosine schedule spans 3 epochs now, the checkpoint's 2


def test_cli_resume_follows_moved_data(tmp_path):
    """The data folder may move (its fingerprint, not its path, identifies it); without --data the
    checkpoint's folder is used."""
    d = _digits_idx(tmp_path / "mnist")
    r = _cli(["lenet5", "--data", d, "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "ck.npz")],
             tmp_path, kill_after=1)
    assert r.returncode == -signal.SIGKILL
    shutil.copy(tmp_path / "ck.npz", tmp_path / "ck2.npz")
    moved = shutil.copytree(d, tmp_path / "moved")
    r2 = _cli(["lenet5", "--resume", str(tmp_path / "ck.npz"), "--data", str(moved)], tmp_path)
    r3 = _cli(["lenet5", "--resume", str(tmp_path / "ck2.npz")], tmp_path)
    assert r2.returncode == 0 and r3.returncode == 0, (r2.stderr, r3.stderr)
    assert f"IDX files in {moved}" in r2.stdout and f"IDX files in {d}" in r3.stdout
    assert _epoch_lines(r2.stdout) == _epoch_lines(r3.stdout) and len(_epoch_lines(r2.stdout)) == 1
    assert np.load(tmp_path / "ck.npz")["fc3.weight"].tobytes() == np.load(tmp_path / "ck2.npz")["fc3.weight"].tobytes()


def _rewrite_meta(path, edit):
    """Edits a checkpoint's JSON member in place (for tests)."""
    members = _members(path)
    meta = json.loads(members["train_state/meta.json"])
    edit(meta)
    members["train_state/meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)


def test_cli_finished_run_has_nothing_to_do(finished, capsys):
    ck, out = finished
    before = ck.read_bytes()
    assert cli_main(["train", "lenet5", "--resume", str(ck), "--epochs", "2"]) == 0
    got = capsys.readouterr().out
    assert "finished all 2 epochs; nothing to do" in got
    assert _final(got) == _final(out)
    assert not any(l.startswith("epoch ") for l in got.splitlines())
    assert ck.read_bytes() == before


def test_cli_refuses_weights_only_and_api_checkpoints(tmp_path, capsys):
    w = cn.save_checkpoint(cn.models.lenet5(), str(tmp_path / "w.npz"))
    assert cli_main(["train", "lenet5", "--resume", w]) == 1
    assert "holds model weights only" in capsys.readouterr().err
    m, data = _tiny()
    opt = cn.optim.SGD(lr=0.1, momentum=0.9)
    fit(m, data, 1, 8, opt, progress=False, log=lambda s: None, checkpoint=str(tmp_path / "api.npz"))
    assert cli_main(["train", "lenet5", "--resume", str(tmp_path / "api.npz")]) == 1
    assert "was not written by 'python -m cnnnative train'" in capsys.readouterr().err


def test_new_checkpoints_keep_weights_readable(finished):
    ck, _ = finished
    m = cn.load_checkpoint(cn.models.lenet5(seed=9), str(ck))
    z = np.load(ck, allow_pickle=False)
    for k, v in m.state_dict().items():
        assert z[k].tobytes() == v.tobytes()


# ---- the API: fit / fit_dense with checkpoint= and resume= ----

def _tiny(dropout=0.3, seed=0):
    """A conv + BN + dropout net with initial weights from `seed`, and a fixed 4-class data set."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((56, 1, 8, 8)).astype(np.float32)
    y = ((x[:, 0, :4].mean((1, 2)) > 0) + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0)).astype(np.int32)
    cn.manual_seed(seed)
    m = cn.nn.Sequential(cn.nn.Conv2d(1, 4, 3, padding=1), cn.nn.BatchNorm2d(4), cn.nn.ReLU(), cn.nn.Flatten(),
                         cn.nn.Dropout(dropout), cn.nn.Linear(256, 4))
    return m, (x[:40], y[:40], x[40:], y[40:])


_API_CHILD = textwrap.dedent("""
    import sys, numpy as np, cnnnative as cn
    sys.path.insert(0, sys.argv[1])
    from test_resume import _tiny, _api_run
    cn.set_num_threads(1)
    hist = _api_run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] or None)
    print("final", hist[-1]["loss"], hist[-1].get("test_acc", hist[-1].get("MSE")))
""")


def _api_run(kind, opt_name, ck, resume):
    """The run the API tests make: 4 epochs of a tiny conv+BN+dropout net, fit or fit_dense."""
    m, data = _tiny()
    opt = (cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3) if opt_name == "sgd"
           else cn.optim.AdamW(lr=0.01))
    sched = cn.optim.StepLR(opt, step_size=2, gamma=0.5)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if kind == "fit":
        tf = cn.data.Compose([cn.data.RandomTranslate(1), cn.data.GaussianNoise(0.05)])
        hist, _ = fit(m, data, 4, 8, opt, sched, seed=3, progress=False, log=log, transform=tf, checkpoint=ck,
                      resume=resume)
    else:
        x_tr, _, x_te, _ = data
        head = cn.nn.Sequential(cn.nn.Conv2d(1, 4, 3, padding=1), cn.nn.BatchNorm2d(4), cn.nn.ReLU(),
                                cn.nn.Dropout(0.3), cn.nn.Conv2d(4, 1, 3, padding=1))
        hist, _ = fit_dense(head, x_tr, x_tr * 0.5, x_te, x_te * 0.5, 4, 8, opt, "mse", sched, seed=3,
                            progress=False, log=log, metric=lambda p, t: float(np.mean((p - t) ** 2)),
                            metric_name="MSE", checkpoint=ck, resume=resume)
    return hist


@pytest.mark.parametrize("kind, opt", [("fit", "sgd"), ("fit", "adamw"), ("fit_dense", "adamw")])
def test_api_resume_after_sigkill_with_dropout(tmp_path, kind, opt):
    here = os.path.dirname(__file__)
    env = {k: v for k, v in os.environ.items() if k != KILL}

    def child(ck, resume="", kill=None):
        e = dict(env, **({KILL: str(kill)} if kill else {}))
        return subprocess.run([sys.executable, "-c", _API_CHILD, here, kind, opt, str(ck), resume],
                              capture_output=True, text=True, timeout=120, env=e, cwd=tmp_path)
    a = child(tmp_path / "full.npz")
    assert a.returncode == 0, a.stderr
    b1 = child(tmp_path / "part.npz", kill=2)
    assert b1.returncode == -signal.SIGKILL, b1.stderr
    b2 = child(tmp_path / "part.npz", resume=str(tmp_path / "part.npz"))
    assert b2.returncode == 0, b2.stderr
    lines = _epoch_lines(a.stdout)
    assert _epoch_lines(b1.stdout) == lines[:2] and _epoch_lines(b2.stdout) == lines[2:]
    assert _final(b2.stdout) == _final(a.stdout)
    assert_same_checkpoint(tmp_path / "full.npz", tmp_path / "part.npz")


def _copy_after(ck, epoch, dst):
    """A log callback that keeps a copy of the checkpoint as it was after `epoch` (log runs after the save)."""
    def log(line):
        if line.startswith(f"epoch {epoch:2d}/"):
            shutil.copy(ck, dst)
    return log


def test_api_resume_in_process_matches_and_returns_full_history(tmp_path):
    ck, ck1 = str(tmp_path / "a.npz"), str(tmp_path / "a1.npz")
    m, data = _tiny()
    opt = cn.optim.AdamW(lr=0.01)
    h_full, _ = fit(m, data, 3, 8, opt, cn.optim.CosineAnnealingLR(opt, 3), seed=1, progress=False,
                    log=_copy_after(ck, 1, ck1), checkpoint=ck)
    m2, _ = _tiny(seed=5)  # other initial weights: the checkpoint replaces them
    opt2 = cn.optim.AdamW(lr=0.01)
    h_res, sess = fit(m2, data, 3, 8, opt2, cn.optim.CosineAnnealingLR(opt2, 3), seed=1, progress=False,
                      log=lambda s: None, resume=ck1)
    strip = [{k: v for k, v in h.items() if k not in _TIMING} for h in h_full]
    assert [{k: v for k, v in h.items() if k not in _TIMING} for h in h_res] == strip
    for k, v in m.state_dict().items():
        assert m2.state_dict()[k].tobytes() == v.tobytes(), k
    assert sess.step_count == 3 * 5 and opt2.lr == opt.lr


def _refuse_api(tmp_path, ck, match, **kw):
    m, data = _tiny(seed=5)
    snap = {k: np.array(v) for k, v in m.state_dict().items()}
    args = dict(epochs=2, batch_size=8, seed=1)
    args.update(kw)
    opt = args.pop("opt", None) or cn.optim.SGD(lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=match):
        fit(m, args.pop("data", data), optimizer=opt, progress=False, log=lambda s: None, resume=ck, **args)
    for k, v in snap.items():
        assert m.state_dict()[k].tobytes() == v.tobytes(), k


def test_api_refusals_change_nothing(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, data = _tiny()
    fit(m, data, 2, 8, cn.optim.SGD(lr=0.1, momentum=0.9), seed=1, progress=False, log=lambda s: None,
        checkpoint=ck)
    info = checkpoint_info(ck)
    assert info["epoch"] == 2 and info["epochs"] == 2
    part = str(tmp_path / "part.npz")
    shutil.copy(ck, part)
    _rewrite_meta(part, lambda meta: meta.update(epochs=3))
    _refuse_api(tmp_path, part, "batch_size: checkpoint 8, this run 4", epochs=3, batch_size=4)
    _refuse_api(tmp_path, part, "seed: checkpoint 1, this run 2", epochs=3, seed=2)
    _refuse_api(tmp_path, part, "optimizer", epochs=3, opt=cn.optim.SGD(lr=0.1, momentum=0.8))
    _refuse_api(tmp_path, part, "the checkpoint's run has 3", epochs=5)
    x_tr, y_tr, x_te, y_te = data
    _refuse_api(tmp_path, part, "training data differs", epochs=3, data=(x_tr + 1, y_tr, x_te, y_te))
    # damaged optimizer state: refused before the weights are touched
    bad = str(tmp_path / "bad.npz")
    members = _members(part)
    buf = __import__("io").BytesIO()
    mom = np.load(part)["train_state/optimizer.momentum_buffer"].copy()
    mom[-1] = np.inf
    np.lib.format.write_array(buf, mom)
    members["train_state/optimizer.momentum_buffer.npy"] = buf.getvalue()
    with zipfile.ZipFile(bad, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    _refuse_api(tmp_path, bad, "momentum_buffer", epochs=3)
    shutil.copy(part, bad)
    _rewrite_meta(bad, lambda meta: meta["loader"].update(shuffle_rng={"bit_generator": "PCG64"}))
    _refuse_api(tmp_path, bad, "shuffle_rng", epochs=3)
    shutil.copy(part, bad)
    _rewrite_meta(bad, lambda meta: meta["optimizer"].update(step=7))
    _refuse_api(tmp_path, bad, "step count 7", epochs=3)


def test_api_finished_run_trains_nothing(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, data = _tiny()
    h, _ = fit(m, data, 2, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lambda s: None, checkpoint=ck)
    before = open(ck, "rb").read()
    m2, _ = _tiny(seed=4)
    lines = []
    h2, _ = fit(m2, data, 2, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lines.append, checkpoint=ck,
                resume=ck)
    assert any("nothing to do" in l for l in lines) and not any(l.startswith("epoch") for l in lines)
    assert h2 == h and open(ck, "rb").read() == before
    for k, v in m.state_dict().items():
        assert m2.state_dict()[k].tobytes() == v.tobytes()


def test_api_resume_notes_another_thread_count(tmp_path):
    ck = str(tmp_path / "ck.npz")
    m, data = _tiny()
    threads = cn.get_num_threads()
    try:
        cn.set_num_threads(1)
        fit(m, data, 2, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lambda s: None, checkpoint=ck)
        _rewrite_meta(ck, lambda meta: meta.update(epochs=3))
        cn.set_num_threads(2)
        lines = []
        fit(_tiny()[0], data, 3, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lines.append, resume=ck)
    finally:
        cn.set_num_threads(threads)
    assert any(l.startswith("note: threads 1 -> 2") for l in lines), lines
    assert [l[:9] for l in lines if l.startswith("epoch")] == ["epoch  3/"]
