#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, carrying .carry: a quick A/B of
# kernel variants chosen by environment knobs (docs/kernels/ssmm.md), without the whole suite.
#   scripts/gpu_ab.sh 'GTEST_FILTER' 'ENV=V ENV2=V2 :: bench args' ...
# Builds build-gpu/, runs the GPU tests matching the filter once per distinct environment named by the
# specs (and once without one), then each `samoyeds bench` spec under its environment. Logs go to
# $OUT as one archive (the device tool returns only a few files), JSON Lines to $OUT/ab.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/logs"
export PATH="$PATH:/usr/local/cuda/bin"
filter=$1
shift
status=0
step() {  # step NAME COMMAND...
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$OUT/logs/$name.log" 2>&1; then
    echo "ok    $name ($((SECONDS - start)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "FAIL  $name ($((SECONDS - start)) s): see logs/$name.log" | tee -a "$OUT/summary.txt"
    tail -n 30 "$OUT/logs/$name.log"
    status=1
  fi
}
[ -f .carry/commit ] && export SAMOYEDS_COMMIT="$(cat .carry/commit)"
gtest_args=()
[ -f .carry/googletest/CMakeLists.txt ] && gtest_args=(-DSAMOYEDS_GTEST_SOURCE="$PWD/.carry/googletest")
step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMOYEDS_CUDA=ON "${gtest_args[@]}"
step build cmake --build build-gpu -j 16
# Tests run in the default environment, then in each distinct one the specs name, or only in those
# listed in AB_TEST_ENVS (';'-separated, e.g. 'SAMOYEDS_SSMM_TMA=on;SAMOYEDS_SSMM_CLUSTER=2').
envs=("")
if [ -n "${AB_TEST_ENVS:-}" ]; then IFS=';' read -r -a extra <<<"$AB_TEST_ENVS"; envs+=("${extra[@]}"); set -- "$@"; fi
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
(cd "$OUT" && tar czf logs.tgz logs && rm -rf logs)
cat "$OUT/summary.txt"
exit $status
