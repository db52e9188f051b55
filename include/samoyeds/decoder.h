// SPDX-License-Identifier: Apache-2.0
// The weights of one decoder layer (RMSNorm, attention, RMSNorm, MoE or dense FFN, and OpenMoE's
// extra dense MLP) and of a whole model, seeded synthetic weights for any config, and their checks. The layer's meaning:
// docs/model.md; the CPU reference: reference::decoder_layer.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "samoyeds/format.h"
#include "samoyeds/matrix.h"
#include "samoyeds/model_config.h"
#include "samoyeds/moe.h"

namespace samoyeds {

// nn.Linear layout: [out_features, in_features]. q_dim = heads x head_dim, kv_dim = kv_heads x head_dim.
struct AttentionWeights {
  Matrix q;       // [q_dim, H]
  Matrix k;       // [kv_dim, H]
  Matrix v;       // [kv_dim, H]
  Matrix o;       // [H, q_dim]
  Matrix q_bias;  // [1, q_dim] when config.attention_bias (Qwen2-MoE), empty otherwise
  Matrix k_bias;  // [1, kv_dim] likewise
  Matrix v_bias;  // [1, kv_dim] likewise
};

struct DecoderLayerWeights {
  Matrix input_norm;  // [1, H], before attention
  AttentionWeights attention;
  Matrix post_attention_norm;           // [1, H], before the FFN
  std::optional<PackedMoeWeights> moe;  // MoE layers: routed (and shared) experts in the Samoyeds format
  std::optional<DenseExpert> mlp;       // dense layers: one MLP of config.dense_intermediate_size
  // OpenMoE's MoE layers (config.extra_dense_mlp): RMSNorm, dense MLP, residual after the MoE block.
  Matrix extra_norm;                    // [1, H] or empty
  std::optional<DenseExpert> extra_mlp;
};

// Seeded random weights of layer `layer` of `config`: linear weights normal with std 1/sqrt(fan_in),
// norm weights normal(1, 0.1), biases normal(0, 0.1); the MoE block is synthetic_moe_weights packed
// with `pattern` (magnitude pruning). The same (config, layer, dtype, pattern, seed) gives the same weights.
DecoderLayerWeights synthetic_decoder_layer(const ModelConfig& config, int layer, DType dtype,
                                            const SparsityPattern& pattern, std::uint64_t seed);

// Throws unless the weights fit layer `layer` of `config`: every shape and dtype, MoE block on MoE
// layers and dense MLP on dense ones, biases exactly when the config has them, OpenMoE's extra MLP.
void check_decoder_layer(const ModelConfig& config, int layer, const DecoderLayerWeights& weights);

// A model, or the prefix of its first layers (a run of a model too large for the machine).
struct ModelWeights {
  Matrix embedding;                         // [vocab, H]
  std::vector<DecoderLayerWeights> layers;  // layers 0 .. layers.size() - 1
  Matrix final_norm;                        // [1, H]
  Matrix lm_head;                           // [vocab, H]; empty when config.tie_word_embeddings (the embedding serves)
};

// Seeded weights of the first `num_layers` layers (1 <= num_layers <= config.num_layers) plus the
// embedding, final norm and LM head; embedding rows normal with std 1, LM head std 1/sqrt(H).
ModelWeights synthetic_model(const ModelConfig& config, int num_layers, DType dtype, const SparsityPattern& pattern,
                             std::uint64_t seed);

// `count` seeded token ids, uniform over [0, vocab_size): the prompts of synthetic runs and tests.
std::vector<std::int32_t> random_token_ids(std::int64_t count, std::int64_t vocab_size, std::uint64_t seed);

// Throws unless every part fits `config` (check_decoder_layer for each layer, tied embeddings respected).
void check_model(const ModelConfig& config, const ModelWeights& weights);

}  // namespace samoyeds
