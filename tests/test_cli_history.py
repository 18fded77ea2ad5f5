"""Training history: fit / fit_dense return a History (per-epoch records with the learning rate, per-step loss
with its smoothed value) and write it as JSON and CSV at the end of every epoch; the CLI writes
CHECKPOINT.history.json/.csv next to its checkpoint, and a resumed run continues the same history."""
import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnnative as cn
from cnnnative.__main__ import main as cli_main
from cnnnative.train import SMOOTHING, History, checkpoint_info, fit, fit_dense, history_paths
from cli_util import keep_threads  # noqa: F401 (an autouse fixture: the process keeps its thread count)

_TIMING = ("images_per_s", "seconds")


def _tiny(seed=0):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((56, 1, 8, 8)).astype(np.float32)
    y = ((x[:, 0, :4].mean((1, 2)) > 0) + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0)).astype(np.int32)
    cn.manual_seed(seed)
    m = cn.nn.Sequential(cn.nn.Conv2d(1, 4, 3, padding=1), cn.nn.ReLU(), cn.nn.Flatten(), cn.nn.Linear(256, 4))
    return m, (x[:40], y[:40], x[40:], y[40:])


def _read(prefix):
    js, cs = history_paths(prefix)
    with open(js) as f:
        doc = json.load(f)
    with open(cs, newline="") as f:
        rows = list(csv.DictReader(f))
    return doc, rows


def _smoothed(losses):
    """The debiased exponential moving average, written out."""
    out, ema = [], 0.0
    for n, v in enumerate(losses, 1):
        ema = SMOOTHING * ema + (1 - SMOOTHING) * v
        out.append(ema / (1 - SMOOTHING ** n))
    return out


def test_history_paths():
    assert history_paths("runs/a.npz") == ("runs/a.history.json", "runs/a.history.csv")
    assert history_paths("runs/a") == ("runs/a.history.json", "runs/a.history.csv")
    assert history_paths("runs/h.json") == ("runs/h.json", "runs/h.csv")
    assert history_paths("runs/h.CSV") == ("runs/h.json", "runs/h.csv")


def test_fit_records_lr_steps_and_writes_files(tmp_path):
    m, data = _tiny()
    opt = cn.optim.SGD(lr=0.1, momentum=0.9)
    sched = cn.optim.CosineAnnealingLR(opt, 3)
    hist, _ = fit(m, data, 3, 8, opt, sched, progress=False, log=lambda s: None, history_file=tmp_path / "run")
    assert isinstance(hist, list) and len(hist) == 3
    assert [h["lr"] for h in hist] == pytest.approx([0.1, 0.1 * (1 + math.cos(math.pi / 3)) / 2,
                                                     0.1 * (1 + math.cos(2 * math.pi / 3)) / 2])
    assert len(hist.steps) == 3 * 5
    assert [s["step"] for s in hist.steps] == list(range(1, 16))
    assert [s["epoch"] for s in hist.steps] == [1] * 5 + [2] * 5 + [3] * 5
    losses = [s["loss"] for s in hist.steps]
    assert [s["loss_smooth"] for s in hist.steps] == pytest.approx(_smoothed(losses))
    assert np.mean(losses[:5]) == pytest.approx(hist[0]["loss"])  # every batch has 8 samples

    doc, rows = _read(tmp_path / "run")
    assert sorted(os.listdir(tmp_path)) == ["run.history.csv", "run.history.json"]
    assert (doc["model"], doc["task"], doc["metric"]) == ("Sequential", "classify", "test_acc")
    assert doc["epochs"] == list(hist) and doc["steps"] == hist.steps
    assert set(doc["epochs"][0]) == {"epoch", "loss", "train_acc", "test_acc", "lr", "images_per_s", "seconds"}
    assert list(rows[0]) == ["epoch", "loss", "train_acc", "test_acc", "lr", "images_per_s", "seconds"]
    assert [{k: float(v) for k, v in r.items()} for r in rows] == list(hist)


def test_fit_dense_history_names_task_and_metric(tmp_path):
    m, (x_tr, _, x_te, _) = _tiny()
    head = cn.nn.Sequential(cn.nn.Conv2d(1, 4, 3, padding=1), cn.nn.ReLU(), cn.nn.Conv2d(4, 1, 3, padding=1))
    opt = cn.optim.AdamW(lr=0.01)
    hist, _ = fit_dense(head, x_tr, x_tr * 0.5, x_te, x_te * 0.5, 2, 8, opt, "mse", progress=False,
                        log=lambda s: None, metric=lambda p, t: float(np.mean((p - t) ** 2)), metric_name="MSE",
                        history_file=tmp_path / "h.json", model_name="half")
    doc, rows = _read(tmp_path / "h.json")
    assert (doc["model"], doc["task"], doc["metric"]) == ("half", "denoise", "MSE")
    assert list(rows[0]) == ["epoch", "loss", "MSE", "lr", "images_per_s", "seconds"]
    assert [r["MSE"] for r in doc["epochs"]] == [h["MSE"] for h in hist] and len(doc["steps"]) == 2 * 5
    assert hist[1]["MSE"] < hist[0]["MSE"]


def test_non_finite_numbers_become_null():
    h = History([{"epoch": 1, "loss": float("nan"), "lr": 0.1}], model="m", task="classify", metric="test_acc")
    h.add_step(1, 1, float("inf"))
    doc = h.to_dict()
    assert doc["epochs"][0]["loss"] is None and doc["steps"][0]["loss"] is None
    json.dumps(doc, allow_nan=False)  # valid JSON for any reader


# the CLI runs below use --threads 1 (fast on a loaded machine); keep_threads (imported above) restores the count


def _train(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["train", *args, "--no-progress", "--threads", "1"]) == 0
    return out.getvalue()


@pytest.mark.parametrize("model, extra, task, metric", [
    ("unet", ["--samples", "24", "--batch-size", "8"], "segment", "IoU"),
    ("conv_autoencoder", [], "denoise", "MSE"),
])
def test_cli_writes_history_next_to_checkpoint(tmp_path, model, extra, task, metric):
    out = _train([model, "--epochs", "2", "--out", str(tmp_path / "ck.npz"), *extra])
    assert f"history: {tmp_path / 'ck.history.json'}, {tmp_path / 'ck.history.csv'}" in out
    doc, rows = _read(tmp_path / "ck.npz")
    assert (doc["model"], doc["task"], doc["metric"]) == (model, task, metric)
    info = checkpoint_info(tmp_path / "ck.npz")
    lr0 = info["config"]["cli"]["lr"]
    assert [e["lr"] for e in doc["epochs"]] == pytest.approx([lr0, lr0 / 2])  # cosine over 2 epochs
    assert [r["epoch"] for r in rows] == ["1", "2"] and metric in rows[0]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"test {metric}: {doc['epochs'][-1][metric]:.4f}")
    steps = doc["steps"]
    assert [s["step"] for s in steps] == list(range(1, info["optimizer"]["step"] + 1))
    assert [s["epoch"] for s in steps] == sorted(s["epoch"] for s in steps) and steps[-1]["epoch"] == 2


def test_resume_of_an_older_checkpoint_without_step_losses(tmp_path):
    """Checkpoints written before the steps were recorded still resume; the history's steps then begin with
    the resumed epoch (numbered as in the whole run)."""
    import shutil
    ck, ck1 = str(tmp_path / "a.npz"), str(tmp_path / "a1.npz")
    m, data = _tiny()

    def keep_epoch_1(line):
        if line.startswith("epoch  1/"):
            shutil.copy(ck, ck1)
    opt = cn.optim.SGD(lr=0.1)
    full, _ = fit(m, data, 2, 8, opt, seed=1, progress=False, log=keep_epoch_1, checkpoint=ck)
    from test_resume import _rewrite_meta
    _rewrite_meta(ck1, lambda meta: meta.pop("step_losses"))
    lines = []
    m2, _ = _tiny()
    res, _ = fit(m2, data, 2, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lines.append, resume=ck1,
                 history_file=tmp_path / "r")
    assert any("without the loss of each step" in line for line in lines)
    assert [s["step"] for s in res.steps] == list(range(6, 11))
    assert [s["loss"] for s in res.steps] == [s["loss"] for s in full.steps[5:]]
    assert [{k: v for k, v in h.items() if k not in _TIMING} for h in res] == \
        [{k: v for k, v in h.items() if k not in _TIMING} for h in full]


def test_resume_refuses_damaged_step_losses(tmp_path):
    m, data = _tiny()
    ck = str(tmp_path / "a.npz")
    fit(m, data, 1, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lambda s: None, checkpoint=ck)
    from test_resume import _rewrite_meta
    _rewrite_meta(ck, lambda meta: meta.update(epochs=2, step_losses=meta["step_losses"][:-1]))
    with pytest.raises(ValueError, match="step_losses is not one number per step of 1 epochs of 5 steps"):
        fit(_tiny()[0], data, 2, 8, cn.optim.SGD(lr=0.1), seed=1, progress=False, log=lambda s: None, resume=ck)


def test_cli_resume_of_conv_autoencoder_from_before_its_optimizer_was_honoured(tmp_path):
    """conv_autoencoder used AdamW whatever --optimizer said (the checkpoint's CLI settings say 'sgd'): such a
    checkpoint resumes with the AdamW it was trained with."""
    env = dict(os.environ, _CNNNATIVE_TEST_KILL_AFTER_EPOCH="1")
    ck = tmp_path / "ae.npz"
    r = subprocess.run([sys.executable, "-m", "cnnnative", "train", "conv_autoencoder", "--epochs", "2",
                        "--no-progress", "--threads", "1", "--out", str(ck)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == -9, r.stderr
    from test_resume import _rewrite_meta
    _rewrite_meta(ck, lambda meta: meta["config"]["cli"].update(optimizer="sgd"))
    out = _train(["conv_autoencoder", "--resume", str(ck)])
    assert "continuing with epoch 2" in out and out.strip().splitlines()[-1].startswith("test MSE: ")
    info = checkpoint_info(ck)
    assert info["epoch"] == 2 and info["optimizer"]["kind"] == "adamw"
    assert len(_read(ck)[0]["steps"]) == info["optimizer"]["step"]
