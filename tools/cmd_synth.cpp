// SPDX-License-Identifier: Apache-2.0
// `samoyeds synth`: a synthetic Hugging Face-style checkpoint (seeded weights, the family's tensor
// names, sharded with an index), for trying `convert`, `moe` and `run` without downloads.
#include <cstdio>

#include "cli.h"
#include "samoyeds/checkpoint.h"
#include "samoyeds/moe.h"

namespace samoyeds::cli {

namespace {

int run_synth(const Args& args) {
  if (!args.has("model") || !args.has("out")) throw UsageError{"give --model NAME and --out DIR"};
  ModelConfig config = model_from_args(args);
  if (args.has("layers")) {
    const std::int64_t layers = args.get_int("layers");
    if (layers < 1 || layers > config.num_layers)
      throw UsageError{"--layers must be in [1, " + std::to_string(config.num_layers) + "]"};
    config.num_layers = static_cast<int>(layers);
  }
  if (args.has("vocab")) config.vocab_size = args.get_int("vocab");
  const std::int64_t shard_mb = args.get_int("shard-mb");
  if (shard_mb < 1) throw UsageError{"--shard-mb must be at least 1"};
  std::printf("writing a synthetic %s checkpoint (%d layers, H = %lld, I = %lld, vocab %lld) to %s\n",
              config.display_name.c_str(), config.num_layers, static_cast<long long>(config.hidden_size),
              static_cast<long long>(config.intermediate_size), static_cast<long long>(config.vocab_size),
              args.get("out").c_str());
  write_synthetic_checkpoint(config, args.get("out"), DType::bf16, static_cast<std::uint64_t>(args.get_int("seed")),
                             static_cast<std::uint64_t>(shard_mb) << 20, [](const std::string& line) {
                               std::printf("  %s\n", line.c_str());
                               std::fflush(stdout);
                             });
  return 0;
}

}  // namespace

Command synth_command() {
  return Command{
      "synth",
      "write a synthetic Hugging Face-style checkpoint (no downloads)",
      "Writes config.json and bf16 safetensors shards (with model.safetensors.index.json when there are\n"
      "several) of a registered model in its family's tensor names, with seeded random weights. Use\n"
      "--scale and --layers for sizes a CPU generates quickly. Families: Mixtral, DeepSeek-MoE,\n"
      "Qwen2-MoE, MiniCPM-MoE, OpenMoE (experts fused input-major, as ColossalAI stores them).",
      {{"model", "NAME", "a registered model (samoyeds models)", ""},
       {"out", "DIR", "output directory (must not exist)", ""},
       {"scale", "H,I", "hidden and expert widths (e.g. 256,512)", ""},
       {"layers", "N", "number of layers written (a prefix of the model)", ""},
       {"vocab", "V", "vocabulary size", ""},
       {"shard-mb", "M", "largest shard, MiB", "2000"},
       {"seed", "S", "random seed", "1"}},
      run_synth};
}

}  // namespace samoyeds::cli
