import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnnative as cn
from cnnnative.train import fit, load_checkpoint, predict, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return cn.data.load_digits(size=28, test_fraction=0.2, seed=0)


def test_lenet5_learns_digits(digits):
    m = cn.models.lenet5(seed=0)
    opt = cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    hist, _ = fit(m, digits, epochs=6, batch_size=32, optimizer=opt,
                  schedule=cn.optim.CosineAnnealingLR(opt, 6), progress=False, log=lambda s: None)
    assert hist[-1]["test_acc"] >= 0.95, hist
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_predict_pads_last_batch(digits):
    m = cn.models.lenet5(seed=0)
    x = digits[2][:37]
    full = predict(m, x, batch_size=37)
    padded = predict(m, x, batch_size=16)
    np.testing.assert_allclose(full, padded, rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    m = cn.models.lenet5(seed=0)
    p = save_checkpoint(m, str(tmp_path / "ck" / "m.npz"))
    m2 = load_checkpoint(cn.models.lenet5(seed=5), p)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, m2.state_dict()[k])
    assert os.listdir(tmp_path / "ck") == ["m.npz"]  # no temp file left behind
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_checkpoint(m, str(bad))


def test_checkpoint_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    m = cn.models.lenet5(seed=0)
    target = tmp_path / "m.npz"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError):
        save_checkpoint(m, str(target))
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.npz"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cnnnative", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_train_short_run(tmp_path):
    pytest.importorskip("sklearn")
    r = _cli("train", "lenet5", "--epochs", "2", "--no-progress", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("test accuracy: 0.")
    assert any(l.startswith("epoch  1/2") and "img/s" in l for l in lines)
    ck = [l for l in lines if l.startswith("checkpoint saved to ")][0].split(" to ", 1)[1]
    assert os.path.exists(ck) and ck.startswith(str(tmp_path))


def test_cli_errors(tmp_path):
    r = _cli("train", "nosuchnet", cwd=tmp_path)
    assert r.returncode == 2 and "unknown model 'nosuchnet'" in r.stderr
    r = _cli("train", "lenet5", "--data", str(tmp_path / "missing"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", "lenet5", "--epochs", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--epochs must be positive" in r.stderr


def test_cli_trains_on_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for kind, n in (("train", 64), ("t10k", 32)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
        x[np.arange(n), y * 2 + 3, :] = 255  # a learnable stripe per class
        cn.data.write_idx(str(tmp_path / f"{kind}-images-idx3-ubyte"), x)
        cn.data.write_idx(str(tmp_path / f"{kind}-labels-idx1-ubyte"), y)
    r = _cli("train", "lenet5", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "16", "--no-progress",
             "--out", str(tmp_path / "ck.npz"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test accuracy:" in r.stdout and (tmp_path / "ck.npz").exists()


def test_cli_train_with_recompute(tmp_path):
    """A zoo model through the CLI with --recompute segments (synthetic data, one short epoch)."""
    r = _cli("train", "resnet18", "--epochs", "1", "--samples", "64", "--batch-size", "16", "--recompute",
             "segments", "--no-progress", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("test accuracy: ")
    r = _cli("train", "lenet5", "--recompute", "everything", cwd=tmp_path)
    assert r.returncode != 0 and "--recompute" in r.stderr


def _idx_dir(path, labels_train, labels_test, dtype=np.int32):
    rng = np.random.default_rng(0)
    for kind, y in (("train", labels_train), ("t10k", labels_test)):
        y = np.asarray(y, dtype)
        x = (rng.random((len(y), 28, 28)) * 40).astype(np.uint8)
        cn.data.write_idx(str(path / f"{kind}-images-idx3-ubyte"), x)
        cn.data.write_idx(str(path / f"{kind}-labels-idx1-ubyte"), y)


@pytest.mark.parametrize("value", [10, 2 ** 31 - 1])
def test_cli_labels_do_not_size_the_model(tmp_path, value):
    """A label of 10 (or 2**31-1) no longer builds an 11-class (or 2**31-class, MemoryError) LeNet: the class
    count is --num-classes (default 10) and the out-of-range label is an error naming the file and index."""
    y = np.arange(32) % 10
    y[17] = value
    _idx_dir(tmp_path, y, np.arange(16) % 10)
    r = _cli("train", "lenet5", "--data", str(tmp_path), "--epochs", "1", "--batch-size", "16", "--no-progress",
             "--threads", "1", "--out", str(tmp_path / "ck.npz"), cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert str(tmp_path / "train-labels-idx1-ubyte") in r.stderr
    assert f"label {value} at index 17 is outside [0, 10)" in r.stderr
    assert not (tmp_path / "ck.npz").exists()


def test_cli_num_classes_option(tmp_path):
    _idx_dir(tmp_path, np.arange(32) % 12, np.arange(16) % 12, np.uint8)
    r = _cli("train", "lenet5", "--data", str(tmp_path), "--num-classes", "12", "--epochs", "1", "--batch-size",
             "16", "--no-progress", "--threads", "1", "--out", str(tmp_path / "ck.npz"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "ck.npz")["fc3.weight"].shape == (12, 84)
    r = _cli("train", "lenet5", "--num-classes", "5", "--epochs", "1", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1 and "--num-classes 5" in r.stderr and "outside [0, 5)" in r.stderr
    r = _cli("train", "unet", "--num-classes", "3", cwd=tmp_path)
    assert r.returncode == 2 and "--num-classes applies to classification models" in r.stderr
    r = _cli("train", "lenet5", "--num-classes", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--num-classes must be positive" in r.stderr


def test_fit_label_error_names_index_and_value(digits):
    x_tr, y_tr, x_te, y_te = digits
    y_bad = y_tr.copy()
    y_bad[7] = 12
    with pytest.raises(ValueError, match=r"label 12 at index 7 is outside \[0, 10\)"):
        fit(cn.models.lenet5(seed=0), (x_tr, y_bad, x_te, y_te), 1, 32, cn.optim.SGD(lr=0.1), progress=False,
            log=lambda s: None)


def test_cli_writes_a_checkpoint_every_epoch(tmp_path):
    """Killed right after epoch 1 of 3: the checkpoint on disk already holds epoch 1 (weights and state)."""
    pytest.importorskip("sklearn")
    env = dict(os.environ, _CNNNATIVE_TEST_KILL_AFTER_EPOCH="1")
    r = subprocess.run([sys.executable, "-m", "cnnnative", "train", "lenet5", "--epochs", "3", "--no-progress",
                        "--threads", "1", "--out", str(tmp_path / "ck.npz")], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == -9, r.stderr
    info = cn.train.checkpoint_info(str(tmp_path / "ck.npz"))
    assert info["epoch"] == 1 and info["epochs"] == 3 and len(info["history"]) == 1
    assert info["config"]["cli"]["model"] == "lenet5"
    load_checkpoint(cn.models.lenet5(seed=1), str(tmp_path / "ck.npz"))
    assert sorted(os.listdir(tmp_path)) == ["ck.history.csv", "ck.history.json", "ck.npz"]  # no temporary file
    with open(tmp_path / "ck.history.json") as f:
        assert [e["epoch"] for e in json.load(f)["epochs"]] == [1]
