#!/usr/bin/env bash
# Run ON the GPU machine after scripts/gpu_run.sh (uses build-gpu/): where a decode step's time goes.
#   1. per-kernel GPU time of eager decode steps of one Mixtral-8x7B layer (ncu, durations only),
#      aggregated by kernel name over the last steps;
#   2. a full ncu section set of one grouped gate/up SSMM launch at decode size (T = 1).
# Writes $OUT/decode_kernels.csv, $OUT/decode_breakdown.txt, $OUT/ssmm_decode_{details.txt,source.csv}.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
ncu=/usr/local/cuda/bin/ncu
cli=build-gpu/samoyeds
$ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  $cli run --model mixtral-8x7b --layers 1 --batch 1 --prompt-len 1 --gen-len 12 --graph off \
  > "$OUT/decode_kernels.csv" 2> "$OUT/decode_ncu.log"
python3 - "$OUT/decode_kernels.csv" > "$OUT/decode_breakdown.txt" <<'PY'
import csv, sys, collections
rows = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") == "gpu__time_duration.sum":
        rows.append((int(r["ID"]), r["Kernel Name"][:90], float(r["Metric Value"].replace(",", "")) / 1000.0))
rows.sort()
# The last 8 decode steps of the Samoyeds path: the tail of the launch list before the dense twin's
# check would be ambiguous, so take every launch after the last prefill-size argmax of the run and
# group by name; print per-step averages.
tail = rows[-400:]
agg = collections.defaultdict(lambda: [0, 0.0])
for _, name, us in tail:
    agg[name][0] += 1
    agg[name][1] += us
total = sum(v[1] for v in agg.values())
print(f"{len(tail)} launches, {total:.1f} us of kernel time")
for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{us:10.1f} us {n:5d} x {us / n:8.2f} us  {name}")
PY
head -40 "$OUT/decode_breakdown.txt"
$ncu --clock-control none --set full -k regex:ssmm_sm90_kernel --launch-skip 6 --launch-count 1 \
  -o "$OUT/ssmm_decode" $cli bench moe --model mixtral-8x7b --tokens 1 --reps 3 > "$OUT/ssmm_ncu.log" 2>&1
$ncu --import "$OUT/ssmm_decode.ncu-rep" --page details > "$OUT/ssmm_decode_details.txt" 2>&1
$ncu --import "$OUT/ssmm_decode.ncu-rep" --page source --csv --print-source sass > "$OUT/ssmm_decode_source.csv" 2>&1
rm -f "$OUT/ssmm_decode.ncu-rep"
grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Grid Size|Block Size|Registers|Compute \(SM\)|Elapsed Cycles|L2 Hit|Stall|Warp Cycles Per Issued" \
  "$OUT/ssmm_decode_details.txt" | head -40
