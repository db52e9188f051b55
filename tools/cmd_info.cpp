// SPDX-License-Identifier: Apache-2.0
// `samoyeds info`: a model's configuration and its expert weight bytes, dense vs. packed.
#include <cstdio>
#include <string>

#include "cli.h"
#include "samoyeds/format.h"
#include "samoyeds/model_config.h"

namespace samoyeds::cli {

namespace {

struct Bytes {
  double dense = 0, values = 0, metadata = 0, select = 0;
  double packed() const { return values + metadata + select; }
  void add(const Bytes& other, double times = 1.0) {
    dense += other.dense * times;
    values += other.values * times;
    metadata += other.metadata * times;
    select += other.select * times;
  }
};

Bytes matrix_bytes(const SparsityPattern& pattern, std::int64_t rows, std::int64_t cols) {
  const PackedGeometry g = packed_geometry(pattern, rows, cols);
  return Bytes{static_cast<double>(g.dense_bytes()), static_cast<double>(g.values_bytes()),
               static_cast<double>(g.metadata_bytes()), static_cast<double>(g.select_bytes())};
}

void print_row(const std::string& label, const std::string& shape, const Bytes& b) {
  std::printf("  %-26s %-16s %11s %11s %11s %11s %11s %6.1f%%\n", label.c_str(), shape.c_str(), format_bytes(b.dense).c_str(),
              format_bytes(b.values).c_str(), format_bytes(b.metadata).c_str(), format_bytes(b.select).c_str(),
              format_bytes(b.packed()).c_str(), 100.0 * b.packed() / b.dense);
}

std::string shape(std::int64_t rows, std::int64_t cols) { return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]"; }

// Bytes of one expert MLP of width `width`; prints its matrices when `print` is set.
Bytes expert_bytes(const ModelConfig& config, const SparsityPattern& pattern, std::int64_t width, const std::string& name,
                   bool print) {
  const std::int64_t H = config.hidden_size;
  const bool openmoe = config.activation == ExpertActivation::openmoe_swiglu;
  Bytes total;
  auto add = [&](const std::string& label, std::int64_t rows, std::int64_t cols, int copies) {
    Bytes b = matrix_bytes(pattern, rows, cols);
    Bytes all;
    all.add(b, copies);
    if (print) print_row(name + " " + label, copies == 1 ? shape(rows, cols) : std::to_string(copies) + " x " + shape(rows, cols), all);
    total.add(all);
  };
  add(openmoe ? "gate (2 halves)" : "gate", width, H, openmoe ? 2 : 1);
  add("up", width, H, 1);
  add("down", H, width, 1);
  return total;
}

int run_info(const Args& args) {
  if (args.has("model") == args.has("config"))
    throw UsageError{"give exactly one of --model NAME (see `samoyeds models`) or --config PATH (a Hugging Face config.json)"};
  const ModelConfig config = args.has("model") ? find_model(args.get("model")) : load_hf_config(args.get("config"));
  const SparsityPattern pattern = SparsityPattern::parse(args.get("pattern"));

  std::printf("%s\n", describe(config).c_str());
  std::printf("Expert weights: dense bf16/fp16 vs. the Samoyeds format, pattern %s (%.1f%% of the weights kept)\n\n",
              pattern.to_string().c_str(), 100.0 * pattern.density());
  std::printf("  %-26s %-16s %11s %11s %11s %11s %11s %7s\n", "matrix", "shape", "dense", "values", "metadata",
              "row-select", "packed", "ratio");
  const Bytes routed = expert_bytes(config, pattern, config.intermediate_size, "expert", true);
  print_row("one routed expert", "", routed);
  Bytes layer;
  layer.add(routed, config.num_experts);
  if (config.num_shared_experts > 0) {
    const Bytes shared = expert_bytes(config, pattern, config.shared_intermediate_size, "shared", true);
    layer.add(shared);
  }
  std::printf("\n");
  const std::string layer_label = std::to_string(config.num_experts) + " experts" +
                                  (config.num_shared_experts > 0 ? " + shared" : "");
  print_row("one MoE layer", layer_label, layer);
  Bytes model;
  model.add(layer, config.num_moe_layers());
  print_row("whole model (MoE layers)", std::to_string(config.num_moe_layers()) + " layers", model);
  std::printf("\nPacked expert weights are %.1f%% of dense (%.2fx smaller): %s instead of %s.\n",
              100.0 * model.packed() / model.dense, model.dense / model.packed(), format_bytes(model.packed()).c_str(),
              format_bytes(model.dense).c_str());
  return 0;
}

}  // namespace

Command info_command() {
  return Command{
      "info",
      "a model's configuration and its dense vs. packed expert bytes",
      "Prints the configuration of a registered model (or of a Hugging Face config.json) and, per expert,\n"
      "per MoE layer and for the whole model, the bytes of the expert weights dense (bf16/fp16) and in the\n"
      "Samoyeds format (values, 2-bit metadata, row-select indices) with their ratio.",
      {{"model", "NAME", "a registered model, e.g. mixtral-8x7b (list: samoyeds models)", ""},
       {"config", "PATH", "a Hugging Face config.json, or a checkpoint directory holding one", ""},
       {"pattern", "N:M:V", "sparsity pattern: N:M:V (e.g. 1:2:128) or 2:4", "1:2:128"}},
      run_info};
}

Command models_command() {
  return Command{"models", "list the registered model configurations", "Lists the models `--model` accepts.", {},
                 [](const Args&) {
                   std::printf("  %-20s %-20s %6s %6s %4s %5s %7s %7s\n", "name", "model", "H", "I", "E", "top_k",
                               "shared", "layers");
                   for (const ModelConfig& m : model_registry())
                     std::printf("  %-20s %-20s %6lld %6lld %4d %5d %7d %7d\n", m.name.c_str(), m.display_name.c_str(),
                                 static_cast<long long>(m.hidden_size), static_cast<long long>(m.intermediate_size),
                                 m.num_experts, m.top_k, m.num_shared_experts, m.num_layers);
                   return 0;
                 }};
}

}  // namespace samoyeds::cli
