// SPDX-License-Identifier: Apache-2.0
// Hugging Face tensor names of the MoE blocks per family (the [out, in] `.weight` tensors of
// Mixtral, MiniCPM-MoE, Qwen2-MoE and DeepSeek-MoE checkpoints; docs/checkpoints.md). OpenMoE
// (ColossalAI) stores each layer's experts fused in three 3-D tensors, input-major
// (openmoe_expert_tensor_names); its per-expert names below are the ones Samoyeds gives the packed
// matrices in a converted directory.
#pragma once

#include <optional>
#include <string>

#include "samoyeds/model_config.h"

namespace samoyeds {

struct MlpTensorNames {
  std::string gate;  // [I, H]; OpenMoE's dense MLPs: [2I, H] (gate_linear rows, then gate rows)
  std::string up;    // [I, H]
  std::string down;  // [H, I]
  std::string gate_linear;  // OpenMoE experts in a converted directory: [I, H]; empty otherwise
};

// OpenMoE's fused experts of MoE layer `layer`: wi_gate [E, H, 2I], wi_up [E, H, I], wo [E, I, H],
// applied as x @ w (so expert e's nn.Linear matrices are the transposes of slice e; of the 2I gate
// outputs the first I multiply and the second I go through SiLU). Throws for other families.
struct FusedExpertTensorNames {
  std::string wi_gate, wi_up, wo;
};
FusedExpertTensorNames openmoe_expert_tensor_names(const ModelConfig& config, int layer);

// Router weight [E, H] of MoE layer `layer`.
std::string router_tensor_name(const ModelConfig& config, int layer);
// Routed expert `expert` of MoE layer `layer` (OpenMoE: the converted directory's names).
MlpTensorNames expert_tensor_names(const ModelConfig& config, int layer, int expert);
// The fused shared experts of MoE layer `layer` (DeepSeek-MoE, Qwen2-MoE), nullopt for other families.
std::optional<MlpTensorNames> shared_expert_tensor_names(const ModelConfig& config, int layer);
// Qwen2-MoE's shared expert gate [1, H], nullopt for other families.
std::optional<std::string> shared_gate_tensor_name(const ModelConfig& config, int layer);

// The rest of a decoder model (Llama-style names, shared by every family).
struct LayerTensorNames {
  std::string input_norm, post_attention_norm;  // [H] RMSNorm weights
  std::string q, k, v, o;                       // attention projections (.weight)
  std::string q_bias, k_bias, v_bias;           // attention biases (.bias), used when config.attention_bias
  MlpTensorNames dense_mlp;                     // the FFN of a dense layer (DeepSeek's first layer)
  std::string extra_norm;                       // OpenMoE's MoE layers: RMSNorm before the extra MLP
  MlpTensorNames extra_mlp;                     // OpenMoE's MoE layers: the extra dense MLP
};
LayerTensorNames layer_tensor_names(const ModelConfig& config, int layer);
std::string embedding_tensor_name(const ModelConfig& config);   // "model.embed_tokens.weight"
std::string final_norm_tensor_name(const ModelConfig& config);  // "model.norm.weight"
std::string lm_head_tensor_name(const ModelConfig& config);     // "lm_head.weight" (absent when tied)

}  // namespace samoyeds
