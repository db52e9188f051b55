// SPDX-License-Identifier: Apache-2.0
// `samoyeds convert`: a Hugging Face MoE checkpoint to the Samoyeds layout (docs/checkpoints.md).
#include <cstdio>

#include "cli.h"
#include "samoyeds/convert.h"

namespace samoyeds::cli {

namespace {

int run_convert(const Args& args) {
  if (!args.has("in") || !args.has("out")) throw UsageError{"give the checkpoint directory (--in) and the output directory (--out)"};
  ConvertOptions o;
  o.in_dir = args.get("in");
  o.out_dir = args.get("out");
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.policy = parse_pruning_policy(args.get("policy"));
  o.calibration_path = args.get("calib");
  if (o.policy == PruningPolicy::activation && o.calibration_path.empty())
    throw UsageError{"--policy activation needs --calib FILE (per-matrix input column norms)"};
  if (o.policy == PruningPolicy::magnitude && !o.calibration_path.empty())
    throw UsageError{"--calib is only used with --policy activation"};
  o.overwrite = args.flag("force");
  o.progress = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  const ConvertReport report = convert_checkpoint(o);
  std::printf("\n%s: %zu expert matrices packed (relative error of the effective weights: mean %.4f, max %.4f), "
              "%s -> %s (%.1f%%); %lld other tensors copied; written to %s\n",
              report.model.c_str(), report.matrices.size(), report.mean_relative_error(), report.max_relative_error(),
              format_bytes(static_cast<double>(report.dense_expert_bytes)).c_str(),
              format_bytes(static_cast<double>(report.packed_expert_bytes)).c_str(),
              report.dense_expert_bytes ? 100.0 * static_cast<double>(report.packed_expert_bytes) / static_cast<double>(report.dense_expert_bytes) : 0.0,
              static_cast<long long>(report.copied_tensors), o.out_dir.c_str());
  return 0;
}

}  // namespace

Command convert_command() {
  return Command{
      "convert",
      "prune and pack a Hugging Face MoE checkpoint into the Samoyeds layout",
      "Reads a checkpoint directory (config.json and safetensors: one file, or shards with\n"
      "model.safetensors.index.json), packs every routed and shared expert matrix into the Samoyeds\n"
      "format (one packed file per MoE layer), copies every other tensor unchanged, and writes the\n"
      "config and a manifest. Prints each matrix's relative error ||W-hat - W|| / ||W|| and a summary.\n"
      "Streams one matrix at a time; the output appears only when complete (OUT.tmp.<pid> renamed).\n"
      "Families: Mixtral, DeepSeek-MoE, Qwen2-MoE, MiniCPM-MoE, OpenMoE (its fused 3-D experts are sliced).",
      {{"in", "DIR", "Hugging Face checkpoint directory", ""},
       {"out", "DIR", "output directory (must not exist unless --force)", ""},
       {"pattern", "N:M:V", "sparsity pattern: N:M:V (e.g. 1:2:128) or 2:4", "1:2:128"},
       {"policy", "magnitude|activation", "pruning policy", "magnitude"},
       {"calib", "FILE", "activation policy: safetensors with NAME.input_norm [cols] F32 per expert matrix", ""},
       {"force", "", "replace an existing output directory", ""}},
      run_convert};
}

}  // namespace samoyeds::cli
