// SPDX-License-Identifier: Apache-2.0
// Hugging Face tensor names of the MoE blocks, per family.
#include "samoyeds/hf_names.h"

#include "samoyeds/error.h"

namespace samoyeds {

namespace {

std::string layer_prefix(const ModelConfig& config, int layer) {
  SAMOYEDS_CHECK(config.family != ModelFamily::openmoe, config.display_name,
                 ": OpenMoE checkpoints store their experts fused in 3-D tensors (mlp.experts.wi_gate, wi_up, wo); "
                 "reading them is not supported yet");
  SAMOYEDS_CHECK(config.is_moe_layer(layer), config.display_name, " layer ", layer, " is not a MoE layer");
  return "model.layers." + std::to_string(layer) + (config.family == ModelFamily::mixtral ? ".block_sparse_moe." : ".mlp.");
}

MlpTensorNames proj_names(const std::string& prefix) {
  return {prefix + "gate_proj.weight", prefix + "up_proj.weight", prefix + "down_proj.weight"};
}

}  // namespace

std::string router_tensor_name(const ModelConfig& config, int layer) { return layer_prefix(config, layer) + "gate.weight"; }

MlpTensorNames expert_tensor_names(const ModelConfig& config, int layer, int expert) {
  const std::string prefix = layer_prefix(config, layer);
  SAMOYEDS_CHECK(expert >= 0 && expert < config.num_experts, config.display_name, " has ", config.num_experts,
                 " experts; expert ", expert, " does not exist");
  const std::string e = prefix + "experts." + std::to_string(expert) + ".";
  if (config.family == ModelFamily::mixtral || config.family == ModelFamily::minicpm_moe)
    return {e + "w1.weight", e + "w3.weight", e + "w2.weight"};  // w1 gate, w3 up, w2 down
  return proj_names(e);
}

std::optional<MlpTensorNames> shared_expert_tensor_names(const ModelConfig& config, int layer) {
  const std::string prefix = layer_prefix(config, layer);
  if (config.num_shared_experts == 0) return std::nullopt;
  return proj_names(prefix + (config.family == ModelFamily::qwen2_moe ? "shared_expert." : "shared_experts."));
}

std::optional<std::string> shared_gate_tensor_name(const ModelConfig& config, int layer) {
  const std::string prefix = layer_prefix(config, layer);
  if (!config.shared_expert_sigmoid_gate) return std::nullopt;
  return prefix + "shared_expert_gate.weight";
}

}  // namespace samoyeds
