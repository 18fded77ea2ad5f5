#!/usr/bin/env bash
# Downloads the oneDNN wheels the build needs (onednn-devel-cpu-gomp: headers and CMake files; onednn-cpu-gomp:
# libdnnl.so.3) for CPython 3.12 on manylinux x86_64 into .whl/ at the repository root, for a GPU machine that
# has no network (bench/cuda/device_check.sh installs them from there; the run call carries ".whl").
# ~39 MB together; .whl/ is excluded from git through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
mkdir -p .whl
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || true)
if [ -n "$exclude" ] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then
  mkdir -p "$(dirname "$exclude")" && echo '/.whl/' >>"$exclude"
fi
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl onednn-devel-cpu-gomp==2023.2.0 onednn-cpu-gomp==2023.2.0
ls -la .whl
