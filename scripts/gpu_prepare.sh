#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before a device run: stages what the GPU machine lacks into
# .carry/ (git-ignored), which the device call must name in `carry`. The GPU machine has no network
# and no GoogleTest, so the GoogleTest sources travel with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
if [ ! -f .carry/googletest/CMakeLists.txt ]; then
  src=/usr/src/googletest
  if [ ! -f "$src/CMakeLists.txt" ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq && $sudo apt-get install -y -qq googletest >/dev/null
  fi
  rm -rf .carry/googletest && cp -r "$src" .carry/googletest
fi
# cuDNN attention: the frontend headers (fetched by scripts/build.sh) and cudnn.h for a machine
# whose cuDNN has no headers installed (scripts/gpu_common.sh points CMake at both).
if [ -f .deps/cudnn-frontend/include/cudnn_frontend.h ] && [ ! -f .carry/cudnn-frontend/include/cudnn_frontend.h ]; then
  rm -rf .carry/cudnn-frontend && mkdir -p .carry/cudnn-frontend && cp -r .deps/cudnn-frontend/include .carry/cudnn-frontend/
fi
if [ ! -f .carry/cudnn/include/cudnn.h ] && ls /usr/local/cuda/include/cudnn*.h >/dev/null 2>&1; then
  mkdir -p .carry/cudnn/include && cp /usr/local/cuda/include/cudnn*.h .carry/cudnn/include/
fi
# The GPU machine's copy of the tree has no .git: record which commit the numbers belong to.
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!bench/results' 2>/dev/null || commit="$commit-dirty"
echo "$commit" > .carry/commit
du -sh .carry; cat .carry/commit
