#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, carrying .carry: a quick A/B of
# kernel variants chosen by environment knobs (docs/kernels/ssmm.md), without the whole suite.
#   scripts/gpu_ab.sh 'GTEST_FILTER' 'ENV=V ENV2=V2 :: bench args' ...
# Builds build-gpu/, runs the GPU tests matching the filter once per distinct environment named by the
# specs (and once without one), then each `samoyeds bench` spec under its environment. Logs go to
# $OUT as one archive (the device tool returns only a few files), JSON Lines to $OUT/ab.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
filter=$1
shift
source scripts/gpu_common.sh
build_gpu
# Tests run in the default environment, then in each distinct one the specs name, or only in those
# listed in AB_TEST_ENVS (';'-separated, e.g. 'SAMOYEDS_SSMM_TMA=on;SAMOYEDS_SSMM_CLUSTER=2'; a leading
# ';' keeps the default environment too).
envs=("")
if [ -n "${AB_TEST_ENVS:-}" ]; then IFS=';' read -r -a envs <<<"$AB_TEST_ENVS"; fi
for spec in "$@"; do
  [ -n "${AB_TEST_ENVS:-}" ] && break
  e=$(echo "${spec%%::*}" | xargs)
  seen=0
  for x in "${envs[@]}"; do [ "$x" = "$e" ] && seen=1; done
  [ $seen = 0 ] && envs+=("$e")
done
n=0
for e in "${envs[@]}"; do
  n=$((n + 1))
  step "tests-$n" env $e timeout 240 build-gpu/tests/samoyeds_tests_gpu --gtest_filter="$filter" --gtest_brief=1
  echo "      tests-$n: env '$e'" | tee -a "$OUT/summary.txt"
done
n=0
for spec in "$@"; do
  n=$((n + 1))
  env_part=$(echo "${spec%%::*}" | xargs)
  read -r -a bench_words <<<"${spec#*::}"
  step "bench-$n" env $env_part stdbuf -oL build-gpu/samoyeds bench "${bench_words[@]}" --out "$OUT/ab.jsonl"
  echo "== bench-$n: $spec" >>"$OUT/tables.txt"
  grep -v "^\s*$" "$OUT/logs/bench-$n.log" | tail -n 60 >>"$OUT/tables.txt"
done
pack_logs
cat "$OUT/summary.txt"
exit $status
