#!/usr/bin/env bash
# Run ON the GPU machine after a build into build-gpu/ (scripts/gpu_run.sh or build_gpu): where a
# prefill's time goes, per kernel, for one Mixtral-8x7B layer (or the model and size given), on the
# Samoyeds path and on the dense baseline. ncu records every launch's duration (clocks unlocked);
# the launches are summed by kernel name. The weight-building kernels (synthetic weights, pruning,
# packing) appear under their own names and are left to the reader to skip.
#   scripts/gpu_profile_prefill.sh [MODEL] [PROMPT_LEN]      default: mixtral-8x7b 4096
# Writes $OUT/prefill_breakdown.txt and $OUT/prefill.tgz (the per-launch CSVs and logs; the device tool
# brings back at most 8 files from $OUT, so the raw files travel as one archive).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/prefill"
ncu=/usr/local/cuda/bin/ncu
model=${1:-mixtral-8x7b} prompt=${2:-4096}
for path in samoyeds dense; do
  flag=()
  [ "$path" = dense ] && flag=(--dense)
  $ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
    build-gpu/samoyeds run --model "$model" --layers 1 --batch 1 --prompt-len "$prompt" --gen-len 1 "${flag[@]}" \
    > "$OUT/prefill/$path.csv" 2> "$OUT/prefill/$path.log"
done
python3 - "$OUT/prefill/samoyeds.csv" "$OUT/prefill/dense.csv" > "$OUT/prefill_breakdown.txt" <<'PY'
import csv, sys, collections
for path in sys.argv[1:]:
    with open(path) as f:
        lines = [l for l in f if l.startswith('"')]
    agg = collections.defaultdict(lambda: [0, 0.0])
    for r in csv.DictReader(lines):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            name = r["Kernel Name"][:100]
            agg[name][0] += 1
            agg[name][1] += float(r["Metric Value"].replace(",", "")) / 1000.0  # ncu prints 484,192
    total = sum(v[1] for v in agg.values())
    print(f"== {path}: {sum(v[0] for v in agg.values())} launches, {total:.1f} us of kernel time")
    for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:30]:
        print(f"{us:10.1f} us {n:5d} x {us / n:9.2f} us  {name}")
PY
cat "$OUT/prefill_breakdown.txt"
(cd "$OUT" && tar czf prefill.tgz prefill && rm -rf prefill)
