#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, carrying .carry (scripts/gpu_prepare.sh):
#   scripts/gpu_run.sh [BENCH ...]   BENCH: `samoyeds bench` arguments as one word each, e.g.
#                                    kernel "moe --model mixtral-8x7b,deepseek-moe-16b"; or `model` (the
#                                    Mixtral-8x7B comparison runs), `prefill` / `decode` (per-kernel ncu
#                                    breakdowns: scripts/gpu_profile_*.sh)
# Builds with nvcc for sm_90a and sm_80, runs the GPU tests and the CPU tests, the demo and, as the
# benchmarks land, `samoyeds bench`. Logs go to $OUT/logs (default ./gpu-out; packed into logs.tgz at
# the end), benchmark records to $OUT/bench-NAME.jsonl; a summary prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_common.sh
{ nvidia-smi; nvcc --version; cmake --version; } >"$OUT/logs/machine.txt" 2>&1
build_gpu
step gpu-tests ctest --test-dir build-gpu -L gpu --output-on-failure
step cpu-tests ctest --test-dir build-gpu -L cpu --output-on-failure -j 16
# Memory errors on small cases of every kernel path (the sanitizer is slow, so small shapes only).
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/samoyeds_tests_gpu \
  --gtest_filter='SsmmGpu.*:*100x200*:*1x64*:*300x192*:*130x72*:*bf16_openmoe*:MoeLayerGpuBehaviour.*:GpuAttention.*:GpuModel.GraphDecodeEqualsEagerDecode:GpuModel.RejectsBadArguments:GpuDecoderOps.*:*FusedRouting*/Mixtral'
tail -n 3 "$OUT/logs/memcheck.log"
step demo ./build-gpu/samoyeds demo
step tiny-checkpoints env SAMOYEDS_TINY_GPU=1 scripts/tiny_checkpoints.sh build-gpu  # moe --check, run on the GPU
for spec in "$@"; do  # "kernel" or "moe --model mixtral-8x7b --tokens 1,16": the first word names the logs
  read -r -a words <<<"$spec"
  name=${words[0]}
  case $name in
    model)  # the whole Mixtral-8x7B against its dense twin: short prompts at three batch sizes, one long prompt
      step model-128 ./build-gpu/samoyeds run --model mixtral-8x7b --compare --batch 1,16,64 --prompt-len 128 --gen-len 64 \
        --out "$OUT/bench-model.jsonl"
      step model-4096 ./build-gpu/samoyeds run --model mixtral-8x7b --compare --batch 1 --prompt-len 4096 --gen-len 64 \
        --out "$OUT/bench-model.jsonl"
      grep -h -E "^(samoyeds|dense|geomean)" "$OUT/logs/model-128.log" "$OUT/logs/model-4096.log" ;;
    prefill | decode)  # per-kernel time of one layer's pass (ncu): scripts/gpu_profile_{prefill,decode}.sh
      # Their files go into the logs archive (the device tool brings back 8 files), the tables also to
      # $OUT/profiles.txt.
      step "profile-$name" env OUT="$OUT/logs/profile-$name" "scripts/gpu_profile_$name.sh"
      cat "$OUT/logs/profile-$name/${name}_breakdown.txt" >>"$OUT/profiles.txt" ;;
    *)
      step "bench-$name" ./build-gpu/samoyeds bench "${words[@]}" --out "$OUT/bench-$name.jsonl"
      cat "$OUT/logs/bench-$name.log" ;;
  esac
done
grep -h -E "tests passed|tests failed" "$OUT"/logs/gpu-tests.log "$OUT"/logs/cpu-tests.log 2>/dev/null
cat "$OUT/summary.txt"
pack_logs  # the summary and the benchmark records stay as they are
exit $status
