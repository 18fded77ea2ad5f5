"""The C++ example as a new user runs it: examples/cpp/make_assets.py trains LeNet-5 on the bundled digits and writes
lenet5.cnn (taking pixels in [0, 1], load_digits' normalization inside the graph) and the held-out test digits
digit0.pgm ... digit9.pgm; then the bash block of docs/cpp.md (and of the README's "Use from C++" section), run
verbatim in an empty folder holding only examples/, builds examples/cpp against the installed package and classifies
the digits: the true digit for at least 9 of the 10 images, the same outputs as Python's for the same file."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnnnative as cn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SCRIPT = os.path.join(EXAMPLES, "cpp", "make_assets.py")

pytestmark = pytest.mark.skipif(not os.path.isfile(SCRIPT), reason="needs the source tree (examples/cpp)")


def _make_assets():
    spec = importlib.util.spec_from_file_location("make_assets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pgm_pixels(path):
    """The 8-bit pixels of a PGM written as '<P5> <w> <h> <255>' with one whitespace byte between the fields."""
    data = open(path, "rb").read()
    head = b"P5\n28 28\n255\n"
    assert data[:len(head)] == head and len(data) == len(head) + 28 * 28, path
    return np.frombuffer(data, np.uint8, offset=len(head)).reshape(28, 28)


def _check_classify_lines(lines, files, model_path):
    """classify's lines: file, class, probability, outputs; outputs equal to Python's for the same file and images."""
    assert len(lines) == len(files), lines
    x = np.stack([_pgm_pixels(f) for f in files]).astype(np.float32)[:, None] / np.float32(255)
    want = cn.load(model_path).compile(x.shape).run(x)
    right = 0
    for line, f, y in zip(lines, files, want):
        name, cls, prob, outputs = line.split("\t")
        got = np.array([float(v) for v in outputs.split()], np.float32)
        assert name.endswith(os.path.basename(f)) and int(cls) == int(np.argmax(got))
        np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
        p = np.exp(got.astype(np.float64) - got.max())
        assert abs(float(prob) - 1 / p.sum()) <= 1e-6
        right += int(cls) == int(re.search(r"digit(\d)\.pgm$", f).group(1))
    return right


def test_make_assets_writes_trained_model_and_test_digits(tmp_path, capsys):
    out = tmp_path / "assets"
    assert _make_assets().main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted(["lenet5.cnn"] + [f"digit{k}.pgm" for k in range(10)])

    # digitK.pgm is the first test image of class K, as 8-bit pixels of the un-normalized image
    _, _, x_te, y_te, (mean, std) = cn.data.load_digits(size=28, seed=0, return_stats=True)
    for k in range(10):
        px = _pgm_pixels(out / f"digit{k}.pgm")
        v = x_te[np.flatnonzero(y_te == k)[0], 0].astype(np.float64) * std + mean
        assert np.abs(px / 255.0 - v).max() <= 0.5 / 255 + 1e-6

    # the model takes pixels in [0, 1]: its weights, given load_digits' normalized images, give the same outputs
    saved = cn.load(out / "lenet5.cnn")
    assert tuple(saved.input_shape) == (1, 1, 28, 28)
    px = (x_te * np.float32(std) + np.float32(mean)).astype(np.float32)
    plain = cn.models.lenet5()
    plain.load_state_dict({k.removeprefix("model."): v for k, v in saved.state_dict().items()})
    np.testing.assert_allclose(saved.compile(px.shape).run(px), plain.compile(x_te.shape).run(x_te),
                               rtol=1e-4, atol=1e-4)
    # trained: the held-out digits as the C++ example reads them (8-bit, p / 255)
    pix = np.stack([_pgm_pixels(out / f"digit{k}.pgm") for k in range(10)]).astype(np.float32)[:, None] / 255
    assert (np.argmax(saved.compile(pix.shape).run(pix), axis=1) == np.arange(10)).sum() >= 9
    acc = float(re.search(r"test accuracy (0\.\d+) on the 360 held-out digits as 8-bit images", printed).group(1))
    assert acc >= 0.95, printed


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--out", "FILE"], "exists and is not a folder"),
    (["--threads", "0"], "--threads 0: "),
])
def test_make_assets_refuses_bad_arguments(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("x")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        _make_assets().main(argv + ([] if "--out" in argv else ["--out", str(tmp_path / "assets")]))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["FILE"]  # nothing written


def _bash_block(path, heading):
    """The first ```bash block after `heading` in a Markdown file that runs make_assets.py, as lines."""
    text = open(path, encoding="utf-8").read()
    start = text.find(heading)
    if start < 0:
        return None
    for m in re.finditer(r"```bash\n(.*?)```", text[start:], re.S):
        if "make_assets.py" in m.group(1):
            return m.group(1).strip().splitlines()
    return None


@pytest.mark.slow  # trains LeNet-5 and builds the examples: 10-30 s
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and c++")
@pytest.mark.parametrize("doc, heading", [("docs/cpp.md", "The bundled examples"), ("README.md", "## Use from C++")])
def test_documented_cpp_block_runs_verbatim(tmp_path, doc, heading):
    lines = _bash_block(os.path.join(ROOT, doc), heading)
    assert lines, f"{doc}: no bash block running make_assets.py after {heading!r}"
    # a fresh clone's examples/, `python` = this interpreter; the package is installed already (pip install .)
    work = tmp_path / "clone"
    shutil.copytree(EXAMPLES, work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    os.chmod(bindir / "python", 0o755)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    script = "\n".join(ln for ln in lines if ln.split("#")[0].strip() not in ("pip install .", ""))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"{doc}:\n{script}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    classify = [ln for ln in r.stdout.splitlines() if re.match(r"\S*digit\d\.pgm\t", ln)]
    files = [str(work / "cpp-assets" / f"digit{k}.pgm") for k in range(10)]
    assert _check_classify_lines(classify, files, work / "cpp-assets" / "lenet5.cnn") >= 9, r.stdout
