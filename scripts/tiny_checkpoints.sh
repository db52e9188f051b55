#!/usr/bin/env bash
# End to end without downloads: for each family, a tiny synthetic Hugging Face checkpoint
# (`samoyeds synth`), converted (`samoyeds convert`), one MoE layer run on activations from a file
# (`samoyeds moe`), and greedy generation with the whole converted model (`samoyeds run`).
# Usage: scripts/tiny_checkpoints.sh [BUILD_DIR]   (default build; run scripts/build.sh first)
# With SAMOYEDS_TINY_GPU=1 (the GPU machine: scripts/gpu_run.sh) the MoE layer runs on the GPU with
# --check against the CPU reference, and generation runs on the GPU too.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=${1:-build}/samoyeds
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for model in mixtral-8x7b deepseek-moe-16b qwen1.5-moe-a2.7b minicpm-moe-8x2b openmoe-8b; do
  layers=2 layer=1  # a MoE layer of every family (DeepSeek's layer 0 is dense) ...
  [ "$model" = openmoe-8b ] && layers=6 layer=5  # ... OpenMoE's first MoE layer is its sixth
  "$cli" synth --model "$model" --scale 128,96 --layers "$layers" --vocab 512 --shard-mb 1 --out "$work/$model-hf" >/dev/null
  "$cli" convert --in "$work/$model-hf" --out "$work/$model" --pattern 1:2:64 | tail -n 1
  # X [4, 128] bf16 (0.5 and -0.25 alternating) as a safetensors file: header length, JSON, data.
  python3 - "$work/x.safetensors" <<'PY'
import json, struct, sys
data = b"".join(struct.pack("<H", 0x3F00 if i % 2 == 0 else 0xBE80) for i in range(4 * 128))
header = json.dumps({"x": {"dtype": "BF16", "shape": [4, 128], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
  if [ "${SAMOYEDS_TINY_GPU:-0}" = 1 ]; then gpu_args=(--device gpu --check); run_device=gpu; else gpu_args=(--device cpu); run_device=cpu; fi
  "$cli" moe --checkpoint "$work/$model" --layer "$layer" --input "$work/x.safetensors" --output "$work/y.safetensors" "${gpu_args[@]}"
  "$cli" run --checkpoint "$work/$model" --batch 2 --prompt-len 4 --gen-len 3 --device "$run_device" | tail -n 2
done
echo "tiny checkpoints: 5 families synthesised, converted, run"
