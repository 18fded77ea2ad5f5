"""Our own cuDNN / cuBLAS declarations (cpp/src/cuda/api.hpp) against NVIDIA's headers: cpp/tests/cuda_api_check.cpp
static_asserts every enum value, the AlgoPerf layout and every function pointer's type (mapped from the real
prototype) and is compiled here with g++. The headers come from the wheels (.ci/cuda_headers.sh DIR), found
through CNNNATIVE_CUDA_HEADERS=DIR; cuda_runtime_api.h from the CUDA toolkit beside nvcc. Skipped when either is
missing, unless CNNNATIVE_CUDA_HEADERS_REQUIRED=1 (CI), which turns a missing header into a failure.
A second test breaks one value in a scratch copy of api.hpp and expects the check to fail, so it cannot pass
vacuously."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(ROOT, "cpp", "tests", "cuda_api_check.cpp")
API = os.path.join(ROOT, "cpp", "src", "cuda", "api.hpp")
CXX = shutil.which("g++") or shutil.which("c++")
REQUIRED = os.environ.get("CNNNATIVE_CUDA_HEADERS_REQUIRED") == "1"


def _find_dir_of(root, header):
    """The folder under root holding header (the wheels' layout nvidia/<pkg>/include first)."""
    for sub in ("nvidia/cudnn/include", "nvidia/cu13/include", "include", ""):
        if os.path.isfile(os.path.join(root, sub, header)):
            return os.path.join(root, sub)
    for d, _, files in os.walk(root):
        if header in files:
            return d
    return None


def _cuda_include():
    """The CUDA toolkit's include folder (cuda_runtime_api.h): what nvcc itself passes (nvcc may be a wrapper
    script, so its own path says little), else CUDA_HOME / CUDA_PATH, else /usr/local/cuda."""
    cands = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            r = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                               capture_output=True, text=True, timeout=60)
            for m in re.finditer(r'INCLUDES="([^"]*)"', r.stdout + r.stderr):
                cands += [p[2:] for p in m.group(1).split() if p.startswith("-I")]
        except (OSError, subprocess.SubprocessError):
            pass
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(os.path.join(os.environ[var], "include"))
    cands.append("/usr/local/cuda/include")
    for c in cands:
        if os.path.isfile(os.path.join(c, "cuda_runtime_api.h")):
            return c
    return None


def _includes():
    """[-I ...] for the check, or a reason why it cannot be built (skip, or fail when REQUIRED)."""
    missing = []
    if CXX is None:
        missing.append("a C++ compiler (g++)")
    root = os.environ.get("CNNNATIVE_CUDA_HEADERS")
    dirs = []
    if not root:
        missing.append("CNNNATIVE_CUDA_HEADERS (a folder made by .ci/cuda_headers.sh)")
    else:
        for h in ("cudnn.h", "cublas_v2.h"):
            d = _find_dir_of(root, h)
            if d is None:
                missing.append(f"{h} under CNNNATIVE_CUDA_HEADERS={root}")
            else:
                dirs.append(d)
    cuda = _cuda_include()
    if cuda is None:
        missing.append("the CUDA toolkit's cuda_runtime_api.h (nvcc, CUDA_HOME or /usr/local/cuda)")
    if missing:
        msg = "cannot compile cpp/tests/cuda_api_check.cpp: missing " + "; ".join(missing)
        if REQUIRED:
            pytest.fail(msg + " (CNNNATIVE_CUDA_HEADERS_REQUIRED=1)", pytrace=False)
        pytest.skip(msg)
    out = []
    for d in dirs + [cuda]:
        out += ["-I", d]
    return out


def _compile(src_dir, tmp_path):
    cmd = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", CHECK, "-o", str(tmp_path / "check.o"),
           "-I", src_dir, "-I", os.path.join(ROOT, "cpp", "include"), *_includes()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_declarations_match_nvidia_headers(tmp_path):
    r = _compile(os.path.join(ROOT, "cpp", "src"), tmp_path)
    assert r.returncode == 0, "cpp/src/cuda/api.hpp disagrees with NVIDIA's headers:\n" + r.stderr[-6000:]


@pytest.mark.parametrize("old, new, what", [
    ("DATA_BFLOAT16 = 9", "DATA_BFLOAT16 = 8", "dnn::DATA_BFLOAT16 != CUDNN_DATA_BFLOAT16"),
    ("int groups);", "int groups, int extra);", "SetConvolutionGroupCount does not match"),
    ("Status (*ConvolutionForward)(Handle, const void* alpha, TensorDesc x, const void* xp, FilterDesc w,",
     "Status (*ConvolutionForward)(Handle, const void* alpha, FilterDesc x, const void* xp, TensorDesc w,",
     "ConvolutionForward does not match"),
    ("  float time;", "  double time;", "field types of cudnnConvolutionFwdAlgoPerf_t"),
])
def test_a_broken_declaration_fails_the_check(tmp_path, old, new, what):
    _includes()  # skip (or fail) before editing anything when the headers are missing
    with open(API) as f:
        text = f.read()
    assert old in text, f"api.hpp changed: update this test's edit {old!r}"
    os.makedirs(tmp_path / "src" / "cuda")
    with open(tmp_path / "src" / "cuda" / "api.hpp", "w") as f:
        f.write(text.replace(old, new, 1))
    r = _compile(str(tmp_path / "src"), tmp_path)
    assert r.returncode != 0, f"the check compiled with a broken api.hpp ({new!r})"
    assert what in r.stderr, r.stderr[-3000:]
