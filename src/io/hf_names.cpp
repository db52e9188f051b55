// SPDX-License-Identifier: Apache-2.0
// Hugging Face tensor names of the MoE blocks, per family.
#include "samoyeds/hf_names.h"

#include "samoyeds/error.h"

namespace samoyeds {

namespace {

std::string layer_prefix(const ModelConfig& config, int layer) {
  SAMOYEDS_CHECK(config.is_moe_layer(layer), config.display_name, " layer ", layer, " is not a MoE layer");
  return "model.layers." + std::to_string(layer) + (config.family == ModelFamily::mixtral ? ".block_sparse_moe." : ".mlp.");
}

MlpTensorNames proj_names(const std::string& prefix) {
  return {prefix + "gate_proj.weight", prefix + "up_proj.weight", prefix + "down_proj.weight", ""};
}

}  // namespace

std::string router_tensor_name(const ModelConfig& config, int layer) {
  return layer_prefix(config, layer) + (config.family == ModelFamily::openmoe ? "gate_weight" : "gate.weight");
}

FusedExpertTensorNames openmoe_expert_tensor_names(const ModelConfig& config, int layer) {
  SAMOYEDS_CHECK(config.family == ModelFamily::openmoe, config.display_name,
                 " stores one tensor per expert matrix; only OpenMoE fuses them");
  const std::string e = layer_prefix(config, layer) + "experts.";
  return {e + "wi_gate", e + "wi_up", e + "wo"};
}

MlpTensorNames expert_tensor_names(const ModelConfig& config, int layer, int expert) {
  const std::string prefix = layer_prefix(config, layer);
  SAMOYEDS_CHECK(expert >= 0 && expert < config.num_experts, config.display_name, " has ", config.num_experts,
                 " experts; expert ", expert, " does not exist");
  const std::string e = prefix + "experts." + std::to_string(expert) + ".";
  if (config.family == ModelFamily::mixtral || config.family == ModelFamily::minicpm_moe)
    return {e + "w1.weight", e + "w3.weight", e + "w2.weight", ""};  // w1 gate, w3 up, w2 down
  if (config.family == ModelFamily::openmoe)  // slices of the fused tensors, named by samoyeds convert
    return {e + "gate.weight", e + "up.weight", e + "down.weight", e + "gate_linear.weight"};
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

LayerTensorNames layer_tensor_names(const ModelConfig& config, int layer) {
  SAMOYEDS_CHECK(layer >= 0 && layer < config.num_layers, config.display_name, " has ", config.num_layers,
                 " layers; layer ", layer, " does not exist");
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  LayerTensorNames n;
  n.input_norm = p + "input_layernorm.weight";
  n.post_attention_norm = p + "post_attention_layernorm.weight";
  n.q = p + "self_attn.q_proj.weight";
  n.k = p + "self_attn.k_proj.weight";
  n.v = p + "self_attn.v_proj.weight";
  n.o = p + "self_attn.o_proj.weight";
  n.q_bias = p + "self_attn.q_proj.bias";
  n.k_bias = p + "self_attn.k_proj.bias";
  n.v_bias = p + "self_attn.v_proj.bias";
  n.dense_mlp = proj_names(p + "mlp.");
  if (config.extra_dense_mlp && config.is_moe_layer(layer)) {
    n.extra_norm = p + "pre_extra_mlp_layernorm.weight";
    n.extra_mlp = proj_names(p + "extra_mlp.");
  }
  return n;
}

std::string embedding_tensor_name(const ModelConfig&) { return "model.embed_tokens.weight"; }
std::string final_norm_tensor_name(const ModelConfig&) { return "model.norm.weight"; }
std::string lm_head_tensor_name(const ModelConfig&) { return "lm_head.weight"; }

}  // namespace samoyeds
