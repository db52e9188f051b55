#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, carrying .carry (scripts/gpu_prepare.sh):
#   scripts/gpu_smem_ceiling.sh
# Whether shared memory bounds the Hopper SSMM kernels (docs/kernels/ssmm.md, v12 evidence):
# `samoyeds bench peak` (wgmma.sp from shared memory per N: pipelined, drained, with the update), the
# same kernels under ncu, and one launch of each Mixtral-8x7B TMA kernel (gate/up, down; 4096 tokens)
# under ncu, with the shared-memory and tensor-pipe counters this ncu knows. Logs and ncu reports
# go to $OUT/logs (packed into logs.tgz), the tables also to $OUT/ceiling.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_common.sh
build_gpu
step bench-peak ./build-gpu/samoyeds bench peak --out "$OUT/bench-peak.jsonl"
cat "$OUT/logs/bench-peak.log" >>"$OUT/ceiling.txt"
ncu=/usr/local/cuda/bin/ncu
$ncu --query-metrics >"$OUT/logs/ncu-metrics.txt" 2>&1
metrics=()
for base in l1tex__data_bank_reads l1tex__data_bank_writes l1tex__data_pipe_lsu_wavefronts_mem_shared \
  sm__pipe_shared_cycles_active sm__pipe_tensor_op_gmma_cycles_active sm__inst_executed_pipe_uniform \
  smsp__inst_executed sm__cycles_active; do
  grep -q "^$base " "$OUT/logs/ncu-metrics.txt" && metrics+=("$base.avg.pct_of_peak_sustained_active" "$base.sum")
done
echo "counters found: ${metrics[*]}" >>"$OUT/ceiling.txt"
sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables)
[ ${#metrics[@]} -gt 0 ] && sections+=(--metrics "$(IFS=,; echo "${metrics[*]}")")
# Each case: one checked launch, then the timer's warm-up and repetitions; --reps 1 keeps it short.
step ncu-peak $ncu "${sections[@]}" --kernel-name regex:wgmma_sp_smem_peak --launch-count 40 \
  ./build-gpu/samoyeds bench peak --reps 1
step ncu-ssmm $ncu "${sections[@]}" --kernel-name regex:ssmm_sm90_kernel --launch-count 2 \
  ./build-gpu/samoyeds bench moe --model mixtral-8x7b --tokens 4096 --graph off --reps 1
for name in ncu-peak ncu-ssmm; do
  { echo "==== $name"; grep -E "^  [a-z_]+.*\(|Throughput|Pipe|Shared|wavefront|Bank|bank|sm__|l1tex__|smsp__|Duration|Elapsed Cycles" \
      "$OUT/logs/$name.log"; } >>"$OUT/ceiling.txt"
done
step bench-moe ./build-gpu/samoyeds bench moe --model mixtral-8x22b,qwen1.5-moe-a2.7b --out "$OUT/bench-moe.jsonl"
cat "$OUT/logs/bench-moe.log" >>"$OUT/ceiling.txt"
cat "$OUT/summary.txt"
pack_logs
exit $status
