#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, carrying .carry (scripts/gpu_prepare.sh):
#   scripts/gpu_run.sh [BENCH ...]   BENCH: `samoyeds bench` arguments as one word each, e.g.
#                                    kernel "moe --model mixtral-8x7b,deepseek-moe-16b"
# Builds with nvcc for sm_90a and sm_80, runs the GPU tests and the CPU tests, the demo and, as the
# benchmarks land, `samoyeds bench`. Every log goes to $OUT (default ./gpu-out; packed into logs.tgz at
# the end); a summary prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
status=0
step() {  # step NAME COMMAND...: runs, logs to $OUT/NAME.log, records the result
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "ok    $name ($((SECONDS - start)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "FAIL  $name ($((SECONDS - start)) s): see $name.log" | tee -a "$OUT/summary.txt"
    tail -n 40 "$OUT/$name.log"
    status=1
  fi
}

{ nvidia-smi; nvcc --version; cmake --version; } >"$OUT/machine.txt" 2>&1
[ -f .carry/commit ] && export SAMOYEDS_COMMIT="$(cat .carry/commit)"
gtest_args=()
[ -f .carry/googletest/CMakeLists.txt ] && gtest_args=(-DSAMOYEDS_GTEST_SOURCE="$PWD/.carry/googletest")
step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMOYEDS_CUDA=ON "${gtest_args[@]}"
step build cmake --build build-gpu -j 16
step gpu-tests ctest --test-dir build-gpu -L gpu --output-on-failure
step cpu-tests ctest --test-dir build-gpu -L cpu --output-on-failure -j 16
# Memory errors on small cases of every kernel path (the sanitizer is slow, so small shapes only).
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/samoyeds_tests_gpu \
  --gtest_filter='SsmmGpu.*:*100x200*:*1x64*:*300x192*:*130x72*:*bf16_openmoe*:MoeLayerGpuBehaviour.*:GpuAttention.*:GpuModel.GraphDecodeEqualsEagerDecode:GpuModel.RejectsBadArguments'
tail -n 3 "$OUT/memcheck.log"
step demo ./build-gpu/samoyeds demo
step tiny-checkpoints env SAMOYEDS_TINY_GPU=1 scripts/tiny_checkpoints.sh build-gpu  # moe --check, run on the GPU
for spec in "$@"; do  # "kernel" or "moe --model mixtral-8x7b --tokens 1,16": the first word names the logs
  read -r -a words <<<"$spec"
  name=${words[0]}
  step "bench-$name" ./build-gpu/samoyeds bench "${words[@]}" --out "$OUT/bench-$name.jsonl"
  cat "$OUT/bench-$name.log"
done
grep -h -E "tests passed|tests failed" "$OUT"/gpu-tests.log "$OUT"/cpu-tests.log 2>/dev/null
cat "$OUT/summary.txt"
# The device tool returns only a few files: the logs travel as one archive, the summary and the
# benchmark records as they are.
(cd "$OUT" && tar czf logs.tgz ./*.log machine.txt && rm -f ./*.log machine.txt)
exit $status
