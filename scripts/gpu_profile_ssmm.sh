#!/usr/bin/env bash
# Run ON the GPU machine after a build into build-gpu/: a full ncu section set, with per-instruction
# (SASS) stall samples, of one SSMM launch of `samoyeds bench kernel` per environment given.
#   scripts/gpu_profile_ssmm.sh SHAPE L 'ENV=V ...' ...     e.g. 14336x4096 4096 '' 'SAMOYEDS_SSMM_TMA=off'
#   scripts/gpu_profile_ssmm.sh moe:MODEL T 'ENV=V ...' ...  the first two SSMM launches (gate/up, down)
#                                                            of `bench moe` for MODEL at T tokens, eager
# Writes $OUT/profile-N.{details,source}.txt (source: SASS with samples, CSV) packed into one archive.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/profile"
ncu=/usr/local/cuda/bin/ncu
shape=$1 tokens=$2
shift 2
n=0
for e in "$@"; do
  n=$((n + 1))
  if [[ $shape == moe:* ]]; then
    env $e $ncu --clock-control none --set full --import-source no -k regex:'ssmm_(sm90_kernel|sm90_persistent|decode_kernel)' --launch-count 2 -o "$OUT/profile/p$n" \
      build-gpu/samoyeds bench moe --model "${shape#moe:}" --tokens "$tokens" --graph off --reps 1 > "$OUT/profile/p$n.log" 2>&1
  else
    env $e $ncu --clock-control none --set full --import-source no -k regex:'ssmm_(sm90_kernel|sm90_persistent|decode_kernel)' --launch-skip 2 --launch-count 1 \
      -o "$OUT/profile/p$n" build-gpu/samoyeds bench kernel --shapes "$shape" --tokens "$tokens" --reps 3 \
      > "$OUT/profile/p$n.log" 2>&1
  fi
  $ncu --import "$OUT/profile/p$n.ncu-rep" --page details > "$OUT/profile/p$n.details.txt" 2>&1
  $ncu --import "$OUT/profile/p$n.ncu-rep" --page source --csv --print-source sass > "$OUT/profile/p$n.source.csv" 2>&1
  rm -f "$OUT/profile/p$n.ncu-rep"
  echo "profile $n: env '$e'"
  grep -E "Duration|Elapsed Cycles|Compute \(SM\) Throughput|L2 Cache Throughput|DRAM Throughput|L2 Hit Rate|Issue Slots Busy|Executed Ipc Active|No Eligible" "$OUT/profile/p$n.details.txt" | head -14
done
(cd "$OUT" && tar czf profile.tgz profile && rm -rf profile)
