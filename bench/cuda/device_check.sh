#!/usr/bin/env bash
# The GPU check of issue 12, for a fresh GPU machine with no network (see bench/cuda/README.md for the one `run`
# call): installs the carried oneDNN wheels (.whl/), builds and installs cnnnative with its cuda backend, prints
# nvidia-smi, runs tests/cuda (then the slow ones) and the declarations check against the installed cuDNN/cuBLAS
# headers, then the GPU benchmark against PyTorch. Writes into OUTDIR:
#   env.txt (nvidia-smi, versions), build.log, pytest.log, pytest_slow.log, bench.log, figures.json, summary.txt
# (7 files: the device tool returns at most 8). Never stops early: a failed stage is logged in summary.txt and the
# next one runs (the tests and bench then find whatever was installed). Every stage has a timeout taken from one
# budget (CHECK_BUDGET_S, default 460 s) so the whole run ends in under 8 minutes; a stage that would get less
# than its minimum is skipped and logged. Exit status: 0 if every stage passed, else 1.
#   usage: bench/cuda/device_check.sh OUTDIR
set -uo pipefail
out=${1:?usage: bench/cuda/device_check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/../.."
root=$(pwd)
py=${PYTHON:-python3}
start=$(date +%s)
deadline=$((start + ${CHECK_BUDGET_S:-460}))
summary="$out/summary.txt"
: >"$summary"
failed=0
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

note() { echo "[device_check $(($(date +%s) - start))s] $*" | tee -a "$summary"; }

# stage NAME LOG CAP_S RESERVE_S CMD...: runs CMD with a timeout of min(CAP_S, time left - RESERVE_S), appending
# to LOG; RESERVE_S is kept for the stages after it. Skipped when under 15 s would be left for it.
stage() {
  local name=$1 log=$2 cap=$3 reserve=$4
  shift 4
  local left=$((deadline - $(date +%s) - reserve))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt 15 ]; then
    note "$name: SKIPPED (only ${left}s left in the budget)"
    failed=1
    return 1
  fi
  note "$name: start (timeout ${t}s)"
  local t0 rc
  t0=$(date +%s)
  { echo "### $name: $*"; } >>"$log"
  timeout --kill-after=10 "$t" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    note "$name: ok ($(($(date +%s) - t0))s)"
  else
    [ $rc -eq 124 ] && note "$name: TIMED OUT after ${t}s" || note "$name: FAILED (exit $rc, $(($(date +%s) - t0))s)"
    tail -n 25 "$log" | sed 's/^/    /' >>"$summary"
    failed=1
  fi
  return $rc
}

# ---- the machine ----
{
  echo "date: $(date -u)"
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  echo "nvcc: $(command -v nvcc)"; nvcc --version 2>&1 | tail -2
  echo "python: $(command -v "$py") $("$py" --version 2>&1)"
  "$py" - <<'PY'
import importlib.metadata as m
for d in ("torch", "numpy", "pybind11", "scikit-build-core", "cmake", "ninja", "nvidia-cudnn-cu13", "nvidia-cublas",
          "onednn-cpu-gomp", "onednn-devel-cpu-gomp", "pytest"):
    try:
        print(f"{d} {m.version(d)}")
    except m.PackageNotFoundError:
        print(f"{d} MISSING")
try:
    import torch
    print("torch cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "device",
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
except Exception as e:  # noqa: BLE001
    print("torch:", e)
PY
  echo "cpus: $(nproc)"
} >"$out/env.txt" 2>&1
note "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"

# ---- build: oneDNN wheels from .whl/, then the package with its cuda backend ----
build=$out/build.log
: >"$build"
if ls .whl/onednn*.whl >/dev/null 2>&1; then
  stage "install oneDNN wheels" "$build" 120 330 \
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/onednn*.whl
else
  note "install oneDNN wheels: no .whl/onednn*.whl here (run bench/cuda/fetch_wheels.sh and carry .whl)"
  failed=1
fi
CNNNATIVE_CUDA=ON stage "build + install cnnnative (CNNNATIVE_CUDA=ON)" "$build" 300 165 \
  "$py" -m pip install -v --no-build-isolation --no-deps --no-cache-dir .
# run the tests against the installed package, from outside the source tree's python/ folder
stage "import + cuda info" "$build" 30 150 "$py" -c '
import cnnnative as cn
print("cnnnative", cn.__file__)
print("cuda available:", cn.cuda.is_available(), "|", cn.cuda.why_unavailable())
print("cuda info:", cn.cuda.info())'

# ---- tests ----
tests=$out/pytest.log
: >"$tests"
stage "pytest tests/cuda -x" "$tests" 150 90 "$py" -m pytest tests/cuda -x -q -rs --durations=15 -p no:cacheprovider
nv_root=$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)
CNNNATIVE_CUDA_HEADERS=$nv_root CNNNATIVE_CUDA_HEADERS_REQUIRED=1 stage "api.hpp vs installed cuDNN/cuBLAS headers" \
  "$tests" 40 90 "$py" -m pytest tests/test_cuda_api_decls.py -q -p no:cacheprovider
stage "pytest tests/cuda -m slow" "$out/pytest_slow.log" 60 90 \
  "$py" -m pytest tests/cuda -m slow -q -rs --durations=10 -p no:cacheprovider

# ---- benchmark against PyTorch on the same GPU ----
left=$((deadline - $(date +%s)))
quick=()
[ "$left" -lt 150 ] && quick=(--quick)
stage "bench (cnnnative.bench.cuda ${quick[*]})" "$out/bench.log" 240 0 \
  "$py" -m cnnnative.bench.cuda --out "$out/figures.json" --budget-s $((left - 15 > 30 ? left - 15 : 30)) "${quick[@]}"
[ -f "$out/figures.json" ] || echo '{"error": "the bench wrote no figures; see bench.log"}' >"$out/figures.json"

note "done in $(($(date +%s) - start))s; $([ $failed -eq 0 ] && echo 'every stage passed' || echo 'SOME STAGES FAILED')"
cd "$root"
exit $failed
