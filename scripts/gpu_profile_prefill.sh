#!/usr/bin/env bash
# Run ON the GPU machine after a build into build-gpu/ (scripts/gpu_run.sh or build_gpu): where a
# prefill's time goes, per kernel, for one Mixtral-8x7B layer (or the model and size given), on the
# Samoyeds path and on the dense baseline. ncu records every launch's duration (clocks unlocked);
# scripts/ncu_passes.py splits them into model passes and prints the timed prefill's launches (the
# longest pass; the weight building and the check are left out).
#   scripts/gpu_profile_prefill.sh [MODEL] [PROMPT_LEN]      default: mixtral-8x7b 4096
# Writes $OUT/prefill_breakdown.txt and $OUT/prefill.tgz (the per-launch CSVs and logs; the device tool
# brings back at most 8 files from $OUT, so the raw files travel as one archive).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/prefill"
ncu=/usr/local/cuda/bin/ncu
model=${1:-mixtral-8x7b} prompt=${2:-4096}
: >"$OUT/prefill_breakdown.txt"
for path in samoyeds dense; do
  flag=()
  [ "$path" = dense ] && flag=(--dense)
  $ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    build-gpu/samoyeds run --model "$model" --layers 1 --batch 1 --prompt-len "$prompt" --gen-len 1 --graph off "${flag[@]}" \
    > "$OUT/prefill/$path.csv" 2> "$OUT/prefill/$path.log"
  { echo "==== $path"; python3 scripts/ncu_passes.py "$OUT/prefill/$path.csv" --passes 1 --largest; } >>"$OUT/prefill_breakdown.txt" 2>&1
done
cat "$OUT/prefill_breakdown.txt"
(cd "$OUT" && tar czf prefill.tgz prefill && rm -rf prefill)
