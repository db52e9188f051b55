// SPDX-License-Identifier: Apache-2.0
// Hugging Face tensor names of the MoE blocks per family (the [out, in] `.weight` tensors of
// Mixtral, MiniCPM-MoE, Qwen2-MoE and DeepSeek-MoE checkpoints; docs/checkpoints.md). OpenMoE's
// ColossalAI checkpoints store their experts fused in 3-D tensors and are not mapped yet: every
// function throws for that family, saying so.
#pragma once

#include <optional>
#include <string>

#include "samoyeds/model_config.h"

namespace samoyeds {

struct MlpTensorNames {
  std::string gate;  // [I, H]
  std::string up;    // [I, H]
  std::string down;  // [H, I]
};

// Router weight [E, H] of MoE layer `layer`.
std::string router_tensor_name(const ModelConfig& config, int layer);
// Routed expert `expert` of MoE layer `layer`.
MlpTensorNames expert_tensor_names(const ModelConfig& config, int layer, int expert);
// The fused shared experts of MoE layer `layer` (DeepSeek-MoE, Qwen2-MoE), nullopt for other families.
std::optional<MlpTensorNames> shared_expert_tensor_names(const ModelConfig& config, int layer);
// Qwen2-MoE's shared expert gate [1, H], nullopt for other families.
std::optional<std::string> shared_gate_tensor_name(const ModelConfig& config, int layer);

// The rest of a decoder model (Llama-style names, shared by the four mapped families).
struct LayerTensorNames {
  std::string input_norm, post_attention_norm;  // [H] RMSNorm weights
  std::string q, k, v, o;                       // attention projections (.weight)
  std::string q_bias, k_bias, v_bias;           // attention biases (.bias), used when config.attention_bias
  MlpTensorNames dense_mlp;                     // the FFN of a dense layer (DeepSeek's first layer)
};
LayerTensorNames layer_tensor_names(const ModelConfig& config, int layer);
std::string embedding_tensor_name(const ModelConfig& config);   // "model.embed_tokens.weight"
std::string final_norm_tensor_name(const ModelConfig& config);  // "model.norm.weight"
std::string lm_head_tensor_name(const ModelConfig& config);     // "lm_head.weight" (absent when tied)

}  // namespace samoyeds
