#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before a device run: stages what the GPU machine lacks into
# .carry/ (git-ignored), which the device call must name in `carry`. The GPU machine has no network
# and no GoogleTest, so the GoogleTest sources travel with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
if [ ! -f .carry/googletest/CMakeLists.txt ]; then
  src=/usr/src/googletest
  [ -f "$src/CMakeLists.txt" ] || { apt-get update -qq && apt-get install -y -qq googletest >/dev/null; }
  rm -rf .carry/googletest && cp -r "$src" .carry/googletest
fi
du -sh .carry
