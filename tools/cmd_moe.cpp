// SPDX-License-Identifier: Apache-2.0
// `samoyeds moe`: one MoE layer of a converted checkpoint on activations from a safetensors file, so
// that anyone can check our layer against their own implementation (docs/checkpoints.md).
#include <chrono>
#include <cstdio>
#include <cstring>

#include "cli.h"
#include "io/tensor_dtype.h"
#include "samoyeds/convert.h"
#include "samoyeds/reference.h"

namespace samoyeds::cli {

namespace {

int run_moe_command(const Args& args) {
  for (const char* required : {"checkpoint", "layer", "input", "output"})
    if (!args.has(required)) throw UsageError{std::string("--") + required + " is required"};
  const ConvertedCheckpoint ck = ConvertedCheckpoint::open(args.get("checkpoint"));
  const ModelConfig& config = ck.config();
  const std::int64_t layer = args.get_int("layer");
  if (layer < 0 || layer >= config.num_layers || !config.is_moe_layer(static_cast<int>(layer)))
    throw UsageError{"--layer " + std::to_string(layer) + " is not a MoE layer of " + config.display_name +
                     " (the first is " + std::to_string(config.moe_layers().front()) + ")"};
  const PackedMoeWeights weights = ck.moe_layer(static_cast<int>(layer));

  const SafetensorsFile input = SafetensorsFile::open(args.get("input"));
  const TensorInfo* info = nullptr;
  if (args.has("tensor")) {
    info = &input.tensor(args.get("tensor"));
  } else if (input.tensors().size() == 1) {
    info = &input.tensors().front();
  } else {
    throw UsageError{args.get("input") + " holds " + std::to_string(input.tensors().size()) +
                     " tensors: name the activations with --tensor"};
  }
  const Matrix x = read_matrix(input, *info, input.path());
  if (x.cols() != config.hidden_size || x.dtype() != weights.router.dtype())
    throw UsageError{"the activations \"" + info->name + "\" are " + dtype_name(x.dtype()) + " [" + std::to_string(x.rows()) +
                     ", " + std::to_string(x.cols()) + "]; layer " + std::to_string(layer) + " needs " +
                     dtype_name(weights.router.dtype()) + " [T, " + std::to_string(config.hidden_size) + "]"};

  const auto start = std::chrono::steady_clock::now();
  const Matrix y = reference::moe_layer(config, weights, x);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  SafetensorsWriter writer;
  writer.add("y", detail::safetensors_dtype_of(y.dtype()), {y.rows(), y.cols()},
             {static_cast<const std::uint8_t*>(y.data()), y.bytes()});
  writer.set_metadata("samoyeds.model", config.display_name);
  writer.set_metadata("samoyeds.layer", std::to_string(layer));
  writer.set_metadata("samoyeds.pattern", ck.pattern().to_string());
  writer.set_metadata("samoyeds.computed_by", "CPU reference (samoyeds::reference::moe_layer)");
  writer.write(args.get("output"));
  std::printf("%s layer %lld: %lld tokens x %lld through %d experts (top-%d%s) on the CPU reference in %.3f s; "
              "wrote \"y\" to %s\n",
              config.display_name.c_str(), static_cast<long long>(layer), static_cast<long long>(x.rows()),
              static_cast<long long>(x.cols()), config.num_experts, config.top_k,
              config.num_shared_experts ? ", shared experts" : "", seconds, args.get("output").c_str());
  return 0;
}

}  // namespace

Command moe_command() {
  return Command{
      "moe",
      "run one MoE layer of a converted checkpoint on activations from a file",
      "Reads activations X [T, H] (bf16/fp16, a safetensors file) and writes the layer's output Y [T, H]\n"
      "as tensor \"y\" of OUTPUT, with the model, layer and pattern in its metadata. The layer is the\n"
      "converted checkpoint's (routing, routed and shared experts, combine) computed by the CPU\n"
      "reference; the GPU layer is not wired to this command yet.",
      {{"checkpoint", "DIR", "a directory written by `samoyeds convert`", ""},
       {"layer", "L", "MoE layer index (0-based, as in the Hugging Face names)", ""},
       {"input", "FILE", "safetensors file with X [T, H]", ""},
       {"tensor", "NAME", "which tensor of the input is X (needed when it holds several)", ""},
       {"output", "FILE", "safetensors file to write (atomically)", ""}},
      run_moe_command};
}

}  // namespace samoyeds::cli
