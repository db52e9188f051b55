// SPDX-License-Identifier: Apache-2.0
// Model configurations: the registry of the seven evaluated MoE models and a reader for Hugging Face
// config.json files of the five supported families. Values and their sources: docs/models.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "samoyeds/dtype.h"

namespace samoyeds {

enum class ModelFamily { mixtral, deepseek_moe, qwen2_moe, minicpm_moe, openmoe };

// How an expert (and every dense FFN of the same model) turns x [H] into the down projection's input A [I].
enum class ExpertActivation {
  silu_gated,      // A = SiLU(W_gate x) * (W_up x); W_gate [I, H]
  openmoe_swiglu,  // W_gate [2I, H], g = W_gate x; A = g[0, I) * SiLU(g[I, 2I)) * (W_up x) (ColossalAI SwiGLU)
};

struct ModelConfig {
  std::string name;          // registry key, lower-case: "mixtral-8x7b"
  std::string display_name;  // "Mixtral-8x7B"
  ModelFamily family = ModelFamily::mixtral;

  // --- routed experts -------------------------------------------------------------------------
  std::int64_t hidden_size = 0;        // H
  std::int64_t intermediate_size = 0;  // I of one routed expert
  int num_experts = 0;                 // E
  int top_k = 0;
  ExpertActivation activation = ExpertActivation::silu_gated;
  bool renormalize = false;            // top-k weights divided by their sum (Mixtral, MiniCPM)
  bool capacity_limited = false;       // OpenMoE: per-expert capacity with token dropping
  float capacity_factor = 0.0f;        // OpenMoE evaluation factor (training uses 1.25); 0 when not limited
  int min_capacity = 0;

  // --- shared experts (run on every token of every MoE layer) ------------------------------------
  int num_shared_experts = 0;                 // DeepSeek 2, Qwen2-MoE 1
  std::int64_t shared_intermediate_size = 0;  // total width of the fused shared MLP (DeepSeek 2 x 1408)
  bool shared_expert_sigmoid_gate = false;    // Qwen2-MoE: shared output x sigmoid(w_gate . x), w_gate [1, H]

  // --- which layers are MoE ------------------------------------------------------------------------
  // Layer l (0-based) is MoE when l >= first_dense_layers, l % moe_layer_interval == moe_layer_phase
  // and l is not in dense_layers. DeepSeek: first_k_dense_replace, moe_layer_freq, phase 0.
  // Qwen2-MoE: decoder_sparse_step with phase step - 1, mlp_only_layers. OpenMoE: moe_layer_interval
  // with phase interval - 1 (layers 5, 11, 17, 23 of OpenMoE-8B).
  int num_layers = 0;
  int first_dense_layers = 0;
  int moe_layer_interval = 1;
  int moe_layer_phase = 0;
  std::vector<int> dense_layers;
  std::int64_t dense_intermediate_size = 0;  // FFN width of the non-MoE layers and of OpenMoE's extra MLP; 0 if none
  bool extra_dense_mlp = false;  // OpenMoE: each MoE layer adds RMSNorm + dense MLP (width above) + residual

  // --- attention, embeddings, norms ----------------------------------------------------------------
  int num_attention_heads = 0;
  int num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t vocab_size = 0;
  double rms_norm_eps = 0.0;
  double rope_theta = 0.0;
  std::int64_t max_position_embeddings = 0;
  std::int64_t sliding_window = 0;  // 0: full causal attention
  double attention_scale = 0.0;     // softmax scale; 0 means 1/sqrt(head_dim). OpenMoE (T5-style) uses 1
  bool attention_bias = false;      // Qwen2-MoE has q/k/v biases
  bool tie_word_embeddings = false;
  // MiniCPM: embeddings x scale_emb, each residual branch x scale_depth / sqrt(num_layers), final
  // hidden state / (H / dim_model_base) before the LM head. Others: 1, 0, 0 (no scaling).
  double scale_emb = 1.0;
  double scale_depth = 0.0;
  std::int64_t dim_model_base = 0;

  // Both throw samoyeds::Error unless 0 <= layer < num_layers.
  bool is_moe_layer(int layer) const;
  bool is_dense_layer(int layer) const { return !is_moe_layer(layer); }
  int num_moe_layers() const;
  std::vector<int> moe_layers() const;  // ascending layer indices

  std::int64_t expert_gate_rows() const;  // rows of W_gate: I, or 2I for openmoe_swiglu
  double softmax_scale() const;           // attention_scale, or 1/sqrt(head_dim) when that is 0

  // Positive sizes, top_k <= E, GQA divisibility, consistent shared/dense/capacity settings, at least
  // one MoE layer. Throws samoyeds::Error naming the model, the field and the fix.
  void validate() const;

  bool operator==(const ModelConfig&) const = default;
};

// The seven evaluated models, in this order: mixtral-8x7b, mixtral-8x22b, deepseek-moe-16b,
// qwen1.5-moe-a2.7b, minicpm-moe-8x2b, openmoe-8b, openmoe-34b.
const std::vector<ModelConfig>& model_registry();

// Case-insensitive lookup by registry key or display name; the error lists the known names.
const ModelConfig& find_model(std::string_view name);

// Parses a Hugging Face config.json of one of the five families (found from "model_type", else from
// "architectures"; OpenMoE checkpoints say model_type "llama" and are recognised by their
// architecture or MoE fields). Throws for other families, missing required fields (naming them),
// wrong JSON types, unsupported settings (e.g. rope_scaling) and invalid values. `name`: a registry
// name to take the names from, or any label; empty picks the registry model with the same shape, else
// "_name_or_path", else the family name. The result is validated.
ModelConfig parse_hf_config(std::string_view json_text, std::string name = "");

// The config.json of `config` in its family's Hugging Face spelling, so that parse_hf_config gives
// `config` back (names aside). Throws for OpenMoE (its ColossalAI layout is not written) and for
// settings the family's config cannot express (e.g. a DeepSeek shared width other than n_shared x I).
// `dtype` (bf16 or fp16) is written as torch_dtype.
std::string hf_config_json(const ModelConfig& config, DType dtype = DType::bf16);

// Reads `path`: a config.json file, or a directory that contains one. Errors name the file.
ModelConfig load_hf_config(const std::string& path, std::string name = "");

// Multi-line human-readable summary (used by `samoyeds info`).
std::string describe(const ModelConfig& config);

const char* family_name(ModelFamily family);             // "mixtral", "deepseek_moe", ...
const char* activation_name(ExpertActivation activation);  // "silu_gated", "openmoe_swiglu"

}  // namespace samoyeds
