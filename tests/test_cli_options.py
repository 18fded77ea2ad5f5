"""The CLI's options: an option that does not apply to the chosen model is an error naming why (never silently
ignored); --help lists every model and every option's default; --version; the program name of the console
script; conv_autoencoder honours --optimizer."""
import os
import re
import subprocess
import sys

import pytest

from cnnnative import models
from cnnnative.__main__ import main as cli_main
from cnnnative.train import checkpoint_info
from cli_util import keep_threads, run_cli  # noqa: F401 (keep_threads: an autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_run = run_cli


@pytest.mark.parametrize("args, msg", [
    (["unet", "--augment"], "--augment applies to classification models; unet's targets are images (masks)"),
    (["fcn_resnet50", "--augment"], "--augment applies to classification models"),
    (["lraspp_mobilenet_v3_large", "--augment"], "--augment applies to classification models"),
    (["conv_autoencoder", "--augment"], "conv_autoencoder's targets are images (clean digits)"),
    (["resnet18", "--data", "mnist"], "--data applies to lenet5 (MNIST-format IDX files); resnet18 trains on "
                                      "synthetic 10-class gratings"),
    (["unet", "--data", "mnist"], "--data applies to lenet5"),
    (["conv_autoencoder", "--data", "mnist"], "--data applies to lenet5"),
    (["lenet5", "--samples", "100"], "--samples sets the size of a synthetic data set; lenet5 trains on bundled "
                                     "scikit-learn digits"),
    (["conv_autoencoder", "--samples", "100"], "--samples sets the size of a synthetic data set"),
    (["unet", "--num-classes", "3"], "--num-classes applies to classification models, not unet"),
    (["conv_autoencoder", "--num-classes", "3"], "--num-classes applies to classification models"),
    (["lenet5", "--epochs", "0"], "--epochs must be positive"),
    (["resnet18", "--samples", "0"], "--samples must be positive"),
    (["lenet5", "--lr", "0"], "--lr must be positive"),
    (["lenet5", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["nosuchnet"], "unknown model 'nosuchnet'; available: alexnet, "),
])
def test_train_refuses_options_that_do_not_apply(tmp_path, args, msg):
    rc, out, err = _run(["train", *args, "--out", str(tmp_path / "ck.npz")])
    assert rc == 2 and msg in err, err
    assert err.startswith("usage: python -m cnnnative train") and os.listdir(tmp_path) == []


def test_options_that_apply_are_accepted(tmp_path):
    """--samples and --augment on a synthetic-data classifier, --data on lenet5, --optimizer everywhere."""
    rc, out, err = _run(["train", "squeezenet1_1", "--samples", "40", "--batch-size", "16", "--epochs", "1",
                         "--augment", "--optimizer", "adamw", "--no-progress", "--threads", "1", "--out",
                         str(tmp_path / "s.npz")])
    assert rc == 0, err
    cli = checkpoint_info(tmp_path / "s.npz")["config"]["cli"]
    assert (cli["samples"], cli["augment"], cli["optimizer"], cli["lr"]) == (40, True, "adamw", 1e-3)


def test_conv_autoencoder_honours_the_optimizer(tmp_path):
    """Default AdamW (its task's default); --optimizer sgd trains with SGD at its own default lr, and learns."""
    for extra, kind, lr in (([], "adamw", 2e-3), (["--optimizer", "sgd"], "sgd", 1.0)):
        ck = tmp_path / f"{kind}.npz"
        rc, out, err = _run(["train", "conv_autoencoder", "--epochs", "1", "--no-progress", "--threads", "1",
                             "--out", str(ck), *extra])
        assert rc == 0, err
        info = checkpoint_info(ck)
        assert info["optimizer"]["kind"] == kind and info["config"]["cli"]["optimizer"] == kind
        assert info["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0)  # cosine over 1 epoch: at the end
        assert info["history"][0]["lr"] == lr
        m = re.search(r"test MSE: ([\d.]+) \(noisy input: ([\d.]+), ([\d.]+)x lower\)", out)
        assert m and float(m.group(3)) > 3, out  # one epoch already removes most of the noise


def test_train_help_lists_models_and_every_default():
    rc, out, _ = _run(["train", "--help"])
    assert rc == 0
    for name in models.MODELS:
        assert re.search(rf"\b{name}\b", out), name
    options = re.split(r"\n(?=  -)", out.split("\noptions:\n", 1)[1].split("\n\n", 1)[0])
    assert len(options) == 21  # -h and the 20 options
    for opt in options:
        if not opt.lstrip().startswith("-h"):
            assert "default" in opt, opt
    table = out.split("defaults per task", 1)[1]
    for row in ("digits     lenet5", "denoise    conv_autoencoder", "adamw", "2000"):
        assert row in table, table
    for sub in ("evaluate", "predict", "export", "report"):
        rc, text, _ = _run([sub, "--help"])
        assert rc == 0
        for opt in re.split(r"\n(?=  -)", text.split("\noptions:\n", 1)[1]):
            if not opt.lstrip().startswith("-h"):
                assert "default" in opt, (sub, opt)


def test_version_is_the_projects():
    rc, out, _ = _run(["--version"])
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    assert rc == 0 and out == f"cnnnative {version}\n"


@pytest.mark.parametrize("argv0, prog", [("/usr/local/bin/cnnnative", "cnnnative"),
                                         (os.path.join(ROOT, "python", "cnnnative", "__main__.py"),
                                          "python -m cnnnative")])
def test_program_name_follows_how_it_was_started(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0, "train", "--help"])
    with pytest.raises(SystemExit) as e:
        cli_main()
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog} train [-h]")


def test_python_dash_m_usage():
    r = subprocess.run([sys.executable, "-m", "cnnnative", "predict"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("usage: python -m cnnnative predict")
