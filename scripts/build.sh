#!/usr/bin/env bash
# Configures and builds Samoyeds into ./build (CUDA kernels included when nvcc is found).
# Installs what the build needs from Debian when it is missing (cmake, a C++ compiler, GoogleTest).
# Usage: scripts/build.sh [extra cmake arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
[ -e /usr/include/gtest/gtest.h ] || [ -e /usr/src/googletest/CMakeLists.txt ] || missing+=(libgtest-dev)
command -v ninja >/dev/null || missing+=(ninja-build)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/build.sh: installing ${missing[*]} from Debian" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -z "${PATH##*/usr/local/cuda/bin*}" ] || export PATH="$PATH:/usr/local/cuda/bin"

# cuDNN's header-only frontend (PyPI) for the cuDNN attention path, once into .deps/ (git-ignored).
# Offline, the build goes on without that path (CMake says so).
fe=.deps/cudnn-frontend
if [ ! -f "$fe/include/cudnn_frontend.h" ] && command -v python3 >/dev/null; then
  tmp=$(mktemp -d)
  if python3 -m pip download -q --no-deps "nvidia-cudnn-frontend==1.32.0" -d "$tmp" >/dev/null 2>&1 &&
     python3 -m zipfile -e "$tmp"/nvidia_cudnn_frontend-*.whl "$tmp/wheel" && [ -f "$tmp/wheel/include/cudnn_frontend.h" ]; then
    mkdir -p "$fe" && rm -rf "$fe/include" && cp -r "$tmp/wheel/include" "$fe/include"
  else
    echo "scripts/build.sh: could not fetch nvidia-cudnn-frontend 1.32.0 from PyPI; building without cuDNN attention" >&2
  fi
  rm -rf "$tmp"
fi

jobs=${SAMOYEDS_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$jobs"
