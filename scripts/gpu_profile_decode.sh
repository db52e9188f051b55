#!/usr/bin/env bash
# Run ON the GPU machine after scripts/gpu_run.sh (uses build-gpu/): where a decode step's time goes.
#   1. per-kernel GPU time of eager decode steps of one Mixtral-8x7B layer (ncu, durations only):
#      the last two steps' launches and their sums by kernel name (scripts/ncu_passes.py);
#   2. a full ncu section set of one grouped gate/up SSMM launch at decode size (T = 1).
# Writes $OUT/decode_breakdown.txt and $OUT/decode.tgz (the launch CSV, logs, the SSMM launch's details
# and per-instruction samples).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
ncu=/usr/local/cuda/bin/ncu
cli=build-gpu/samoyeds
$ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  $cli run --model mixtral-8x7b --layers 1 --batch 1 --prompt-len 1 --gen-len 12 --graph off \
  > "$OUT/decode_kernels.csv" 2> "$OUT/decode_ncu.log"
python3 scripts/ncu_passes.py "$OUT/decode_kernels.csv" --passes 2 > "$OUT/decode_breakdown.txt" 2>&1
head -40 "$OUT/decode_breakdown.txt"
$ncu --clock-control none --set full -k regex:ssmm_sm90_kernel --launch-skip 6 --launch-count 1 \
  -o "$OUT/ssmm_decode" $cli bench moe --model mixtral-8x7b --tokens 1 --reps 3 > "$OUT/ssmm_ncu.log" 2>&1
$ncu --import "$OUT/ssmm_decode.ncu-rep" --page details > "$OUT/ssmm_decode_details.txt" 2>&1
$ncu --import "$OUT/ssmm_decode.ncu-rep" --page source --csv --print-source sass > "$OUT/ssmm_decode_source.csv" 2>&1
rm -f "$OUT/ssmm_decode.ncu-rep"
grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Grid Size|Block Size|Registers|Compute \(SM\)|Elapsed Cycles|L2 Hit|Stall|Warp Cycles Per Issued" \
  "$OUT/ssmm_decode_details.txt" | head -40
# The device tool brings back at most 8 files: the raw ones travel as one archive.
(cd "$OUT" && tar czf decode.tgz decode_kernels.csv decode_ncu.log ssmm_ncu.log ssmm_decode_details.txt ssmm_decode_source.csv &&
  rm -f decode_kernels.csv decode_ncu.log ssmm_ncu.log ssmm_decode_details.txt ssmm_decode_source.csv)
