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
# The GPU machine's copy of the tree has no .git: record which commit the numbers belong to.
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!bench/results' 2>/dev/null || commit="$commit-dirty"
echo "$commit" > .carry/commit
du -sh .carry; cat .carry/commit
