"""A repeated `pip install .` reuses the build (issue 15, docs/ARCHITECTURE.md "Build"). An isolated pip build puts
pybind11 and oneDNN's headers into a new temporary folder each time, with new time stamps, and scikit-build-core
then deletes CMakeCache.txt and CMakeFiles/ of the kept build folder. This does the same to the real CMake
project: configure it as scikit-build-core does against one copy of the installed build requirements, compile a
source that includes oneDNN's headers, then move that copy to a new folder with new time stamps, delete the cache
and CMakeFiles/, and configure again: every compile and link command must be the same and ninja must have nothing
to redo; after a header's content changes, it must recompile. Skips without CMake 4.2+, ninja or the build
requirements (pybind11, onednn-devel-cpu-gomp) installed."""
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
NINJA = shutil.which("ninja")
DISTS = ("onednn-devel-cpu-gomp", "onednn-cpu-gomp", "pybind11")
SOURCE = "cpp/src/cpu/upsample.cpp"  # small, and includes oneDNN's headers


def _cmake_version():
    if CMAKE is None:
        return (0, 0)
    r = subprocess.run([CMAKE, "--version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"version (\d+)\.(\d+)", r.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _installed(name):
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_cmake_version() < (4, 2) or NINJA is None or not (ROOT / "CMakeLists.txt").is_file(),
                       reason="needs CMake 4.2+ (objects outside CMakeFiles/), ninja and the source tree"),
    pytest.mark.skipif(any(_installed(d) is None for d in DISTS),
                       reason="needs the build requirements installed: " + ", ".join(DISTS)),
]


def _build_env(prefix):
    """What pip's isolated build does: the build requirements' files (from this environment's installs) copied
    into a fresh prefix; returns its site-packages folder, for PYTHONPATH."""
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    for name in DISTS:
        d = metadata.distribution(name)
        for f in d.files:
            src = Path(d.locate_file(f)).resolve()
            if src.is_file() and "__pycache__" not in f.parts:
                dst = Path(os.path.normpath(site / f))
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
    return site


def _configure(build, site):
    env = dict(os.environ, PYTHONPATH=str(site))
    # scikit-build-core's own settings (SKBUILD, the interpreter, Release); no cuda plugin: nvcc takes minutes
    r = subprocess.run([CMAKE, "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={NINJA}",
                        "-DSKBUILD=2", f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release",
                        "-DCNNNATIVE_CUDA=OFF", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(site.parents[2]) in r.stdout, "the configure did not take oneDNN from the copied build environment"
    return json.loads((build / "compile_commands.json").read_text()), (build / "build.ninja").read_text()


def _ninja(build, site, *args):
    env = dict(os.environ, PYTHONPATH=str(site))  # as pip runs it, should CMake re-run
    r = subprocess.run([NINJA, "-C", str(build), *args], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_new_build_environment_recompiles_nothing(tmp_path):
    build = tmp_path / "build"
    site_a = _build_env(tmp_path / "pip-build-env-a")
    commands_a, ninja_a = _configure(build, site_a)
    entry = next(c for c in commands_a if c["file"] == str(ROOT / SOURCE))
    obj = os.path.relpath(os.path.join(entry["directory"], entry["output"]), build)  # as ninja names it
    assert "CMakeFiles" not in obj, f"object {obj} is in CMakeFiles/, which scikit-build-core deletes"
    assert SOURCE in _ninja(build, site_a, obj)
    assert "no work to do" in _ninja(build, site_a, obj)

    # the next isolated install: a new folder (the old one gone), files with new time stamps, cache deleted
    shutil.move(tmp_path / "pip-build-env-a", tmp_path / "pip-build-env-b")
    site_b = tmp_path / "pip-build-env-b" / site_a.relative_to(tmp_path / "pip-build-env-a")
    for p in (tmp_path / "pip-build-env-b").rglob("*"):
        if p.is_file():
            os.utime(p)
    (build / "CMakeCache.txt").unlink()
    shutil.rmtree(build / "CMakeFiles")
    commands_b, ninja_b = _configure(build, site_b)
    assert "pip-build-env-" not in ninja_b
    assert commands_b == commands_a
    assert ninja_b == ninja_a  # every compile and link command, and what they depend on
    out = _ninja(build, site_b, "-d", "explain", obj)
    assert "no work to do" in out, out

    # a dependency whose content changed is rebuilt against
    deps = _ninja(build, site_b, "-t", "deps", obj)
    header = next(line.strip() for line in deps.splitlines() if line.strip().endswith("/dnnl_config.h"))
    rel = Path(header).relative_to(build / "_deps" / "onednn")
    with open(tmp_path / "pip-build-env-b" / rel, "a") as f:
        f.write("\n/* changed */\n")
    _configure(build, site_b)
    out = _ninja(build, site_b, "-d", "explain", obj)
    assert SOURCE in out and "dnnl_config.h" in out, out
