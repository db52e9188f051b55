#!/usr/bin/env bash
# Fuzzes the safetensors and packed-file readers with libFuzzer (clang from Debian), starting from and
# growing the corpus in tests/data/fuzz/safetensors, which `ctest -L cpu` replays (FuzzCorpus test).
# Usage: scripts/fuzz.sh [SECONDS]   (default 60); new inputs are merged into the corpus (minimised).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq clang libclang-rt-dev >/dev/null
fi
mkdir -p build-fuzz tests/data/fuzz/safetensors
sources=(src/io/safetensors.cpp src/io/json.cpp src/io/packed_file.cpp src/format/*.cpp src/core/*.cpp)
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude -Isrc -Itests tests/fuzz/safetensors_fuzz.cpp "${sources[@]}" -lpthread -o build-fuzz/safetensors_fuzz
rm -rf build-fuzz/new && mkdir -p build-fuzz/new
build-fuzz/safetensors_fuzz -max_total_time="$seconds" -max_len=12288 -timeout=10 build-fuzz/new tests/data/fuzz/safetensors
# Keep only inputs that add coverage over the existing corpus.
build-fuzz/safetensors_fuzz -merge=1 tests/data/fuzz/safetensors build-fuzz/new
ls tests/data/fuzz/safetensors | wc -l
