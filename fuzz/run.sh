#!/usr/bin/env bash
# Fuzzes the model loader with libFuzzer under AddressSanitizer and UndefinedBehaviorSanitizer, for a bounded
# time. Builds fuzz/fuzz_load.cpp with clang (installed with apt-get when missing and run as root) against the
# core sources the loader needs, starts from the seed corpus fuzz/corpus/ (regenerate it with
# `python fuzz/make_corpus.py`); new inputs go to build/fuzz/work/, reproducers of findings to
# build/fuzz/artifacts/ (replay one: build/fuzz/fuzz_load FILE).
#   fuzz/run.sh [SECONDS]      default $FUZZ_TIME or 60
# Exit status: 0 nothing found; libFuzzer's non-zero status on a crash, leak, sanitizer report or timeout;
# 2 when the fuzzer cannot be built (no clang).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${FUZZ_TIME:-60}}"
out="${FUZZ_OUT:-build/fuzz}"
cxx="${FUZZ_CXX:-clang++}"

if ! command -v "$cxx" >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "fuzz: $cxx not found, installing clang with apt-get"
  apt-get install -y -qq clang >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq clang >/dev/null 2>&1; } || true
fi
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz: $cxx is not available; cannot build the fuzzer" >&2
  exit 2
fi

mkdir -p "$out/work" "$out/artifacts"
echo "fuzz: building $out/fuzz_load with $("$cxx" --version | head -n1)"
"$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -Icpp/include -Icpp/src -Ifuzz/stubs \
  fuzz/fuzz_load.cpp cpp/src/core/serialize.cpp cpp/src/core/model.cpp cpp/src/core/graph.cpp cpp/src/ops/*.cpp \
  -o "$out/fuzz_load" || exit 2

echo "fuzz: running for ${secs} s"
"$out/fuzz_load" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" "$out/work" fuzz/corpus
