#!/usr/bin/env bash
# Extracts the cuDNN and cuBLAS C headers from NVIDIA's PyPI wheels into DIR, for the compile-time check of
# our own declarations (cpp/tests/cuda_api_check.cpp, run by tests/test_cuda_api_decls.py):
#   .ci/cuda_headers.sh DIR && CNNNATIVE_CUDA_HEADERS=DIR CNNNATIVE_CUDA_HEADERS_REQUIRED=1 pytest tests/test_cuda_api_decls.py
# Only the include folders are kept (DIR/nvidia/cudnn/include, DIR/nvidia/cu13/include); the wheels (~1 GB
# together) are downloaded to a temporary folder and deleted. The versions are pinned: a new cuDNN/cuBLAS is
# checked by changing them here on purpose. Nothing is done when DIR already holds both headers.
set -euo pipefail
dir=${1:?usage: .ci/cuda_headers.sh DIR}
CUDNN_WHEEL=nvidia-cudnn-cu13==9.28.1.4
CUBLAS_WHEEL=nvidia-cublas==13.10.0.20
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/nvidia/cudnn/include/cudnn.h" ] && [ -f "$dir/nvidia/cu13/include/cublas_v2.h" ]; then
  echo "cuda_headers: already in $dir"
  exit 0
fi
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp" "$CUDNN_WHEEL" "$CUBLAS_WHEEL"
"$py" - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
n = 0
for whl in glob.glob(os.path.join(tmp, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            parts = name.split("/")
            # nvidia/<pkg>/include/... only (no libraries, no dist-info)
            if len(parts) >= 4 and parts[0] == "nvidia" and parts[2] == "include" and not name.endswith("/"):
                z.extract(name, out)
                n += 1
if not (os.path.exists(os.path.join(out, "nvidia/cudnn/include/cudnn.h"))
        and os.path.exists(os.path.join(out, "nvidia/cu13/include/cublas_v2.h"))):
    sys.exit(f"cuda_headers: cudnn.h or cublas_v2.h missing after extracting {n} files into {out}")
print(f"cuda_headers: {n} header files in {out}")
PY
