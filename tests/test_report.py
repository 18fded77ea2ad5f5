"""python -m cnnnative report CHECKPOINT and train --plot: every picture of a run, in one HTML file."""
import base64
import os

import numpy as np
import pytest

from cnnnative.__main__ import main

plt_image = pytest.importorskip("matplotlib.image")


def _not_blank(path):
    img = plt_image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.02 and len(np.unique(rgb[::7], axis=0)) > 8, path


def _train(tmp_path, *args):
    ck = str(tmp_path / "run" / "ck.npz")
    assert main(["train", *args, "--no-progress", "--threads", "1", "--out", ck]) == 0
    return ck


def test_train_plot_draws_the_curves(tmp_path, capsys):
    _train(tmp_path, "lenet5", "--epochs", "2", "--plot")
    png = str(tmp_path / "run" / "ck.history.png")
    assert f"wrote {png}" in capsys.readouterr().out
    _not_blank(png)


@pytest.mark.parametrize("model,args,pictures", [
    ("lenet5", ["--epochs", "1"], ["history", "filters", "feature_maps", "confusion", "augmentations", "profile",
                                   "memory_plan"]),
    ("unet", ["--epochs", "1", "--samples", "40", "--batch-size", "8"],
     ["history", "filters", "feature_maps", "masks", "profile", "memory_plan"]),
    ("conv_autoencoder", ["--epochs", "1", "--batch-size", "64"],
     ["history", "filters", "feature_maps", "denoise", "profile", "memory_plan"]),
])
def test_report_draws_every_picture_of_the_task(tmp_path, capsys, model, args, pictures):
    ck = _train(tmp_path, model, *args)
    out = tmp_path / "pictures"
    assert main(["report", ck, "--out-dir", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    html = (out / f"{model}.report.html").read_text()
    assert set(os.listdir(out)) == {f"{model}.{p}.png" for p in pictures} | {f"{model}.report.html"}
    for p in pictures:
        path = out / f"{model}.{p}.png"
        assert f"wrote {path}" in printed
        _not_blank(str(path))
        # self-contained: every picture embedded, no reference to a file
        assert base64.b64encode(path.read_bytes()).decode() in html
    assert 'src="data:image/png;base64,' in html and ".png\"" not in html


def test_report_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.npz"), "--out-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.npz" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    ck = _train(tmp_path, "lenet5", "--epochs", "1")
    (tmp_path / "file").write_text("x")
    assert main(["report", ck, "--out-dir", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
