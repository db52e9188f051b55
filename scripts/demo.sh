#!/usr/bin/env bash
# README command 1: build and run the main job, `samoyeds demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
./build/samoyeds demo "$@"
