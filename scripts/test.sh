#!/usr/bin/env bash
# README command 2: build everything and run the CPU tests (the GPU tests run on a GPU machine:
# scripts/gpu_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build -L cpu --output-on-failure -j "${SAMOYEDS_JOBS:-$(nproc)}"
