"""Builds and runs the standalone C++ unit tests (planner, optimizers) with the system compiler."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CXX = shutil.which("g++") or shutil.which("c++")


@pytest.mark.skipif(CXX is None or not os.path.isdir(os.path.join(ROOT, "cpp", "tests")),
                    reason="needs a C++ compiler and the source tree")
@pytest.mark.parametrize("name,srcs,flags", [
    ("planner", ["cpp/src/core/planner.cpp", "cpp/tests/test_planner.cpp"], []),
    ("optim", ["cpp/src/host/optim.cpp", "cpp/tests/test_optim.cpp"], ["-fopenmp"]),
])
def test_cpp_unit(tmp_path, name, srcs, flags):
    exe = str(tmp_path / name)
    cmd = [CXX, "-std=c++17", "-O2", *flags, "-I", os.path.join(ROOT, "cpp", "src"),
           *[os.path.join(ROOT, s) for s in srcs], "-o", exe]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
