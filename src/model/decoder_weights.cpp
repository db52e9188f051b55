// SPDX-License-Identifier: Apache-2.0
// Decoder layer weights: seeded synthetic weights for any config and the shape checks.
#include <cmath>
#include <random>
#include <string>

#include "model/random_weights.h"
#include "samoyeds/decoder.h"

namespace samoyeds {

namespace {

// splitmix64 of (seed, salt): well-separated starting points for the per-layer seed ranges.
std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t salt) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (salt + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::int64_t q_dim(const ModelConfig& c) { return c.num_attention_heads * c.head_dim; }
std::int64_t kv_dim(const ModelConfig& c) { return c.num_kv_heads * c.head_dim; }

Matrix random_around(DType dtype, std::int64_t cols, float mean, float stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(mean, stddev);
  Matrix out(dtype, 1, cols);
  for (std::int64_t c = 0; c < cols; ++c) out.set(0, c, normal(rng));
  return out;
}

void check_norm(const std::string& what, const Matrix& norm, const ModelConfig& c, DType dtype) {
  detail::check_shape(what, norm, 1, c.hidden_size, dtype);
}

}  // namespace

DecoderLayerWeights synthetic_decoder_layer(const ModelConfig& config, int layer, DType dtype,
                                            const SparsityPattern& pattern, std::uint64_t seed) {
  config.validate();
  SAMOYEDS_CHECK(is_half_precision(dtype), "synthetic weights need bf16 or fp16, got ", dtype_name(dtype));
  const bool moe = config.is_moe_layer(layer);  // throws for a layer out of range
  const std::int64_t H = config.hidden_size;
  // Each layer's seeds start at a hash of (seed, layer): the MoE block draws 16 seeds per expert from
  // its own start, so layers spaced evenly would share experts.
  const std::uint64_t base = mix_seed(seed, static_cast<std::uint64_t>(layer));
  const float in_std = 1.0f / std::sqrt(static_cast<float>(H));

  DecoderLayerWeights w;
  w.input_norm = random_around(dtype, H, 1.0f, 0.1f, base + 1);
  w.post_attention_norm = random_around(dtype, H, 1.0f, 0.1f, base + 2);
  AttentionWeights& a = w.attention;
  a.q = detail::random_matrix(dtype, q_dim(config), H, in_std, base + 3);
  a.k = detail::random_matrix(dtype, kv_dim(config), H, in_std, base + 4);
  a.v = detail::random_matrix(dtype, kv_dim(config), H, in_std, base + 5);
  a.o = detail::random_matrix(dtype, H, q_dim(config), 1.0f / std::sqrt(static_cast<float>(q_dim(config))), base + 6);
  if (config.attention_bias) {
    a.q_bias = random_around(dtype, q_dim(config), 0.0f, 0.1f, base + 7);
    a.k_bias = random_around(dtype, kv_dim(config), 0.0f, 0.1f, base + 8);
    a.v_bias = random_around(dtype, kv_dim(config), 0.0f, 0.1f, base + 9);
  }
  if (moe) {
    w.moe = pack_moe_weights(config, synthetic_moe_weights(config, dtype, base + 10), pattern);
    if (config.extra_dense_mlp) {
      w.extra_norm = random_around(dtype, H, 1.0f, 0.1f, base + 11);
      w.extra_mlp = detail::random_mlp(config, config.dense_intermediate_size, dtype, base + 12);
    }
  } else {
    w.mlp = detail::random_mlp(config, config.dense_intermediate_size, dtype, base + 13);
  }
  return w;
}

void check_decoder_layer(const ModelConfig& config, int layer, const DecoderLayerWeights& w) {
  config.validate();
  const bool moe = config.is_moe_layer(layer);
  const std::string who = config.display_name + " layer " + std::to_string(layer);
  const DType dtype = w.input_norm.dtype();
  SAMOYEDS_CHECK(is_half_precision(dtype), who, ": weights must be bf16 or fp16, got ", dtype_name(dtype));
  const std::int64_t H = config.hidden_size;
  check_norm(who + " input norm", w.input_norm, config, dtype);
  check_norm(who + " post-attention norm", w.post_attention_norm, config, dtype);
  const AttentionWeights& a = w.attention;
  detail::check_shape(who + " q projection", a.q, q_dim(config), H, dtype);
  detail::check_shape(who + " k projection", a.k, kv_dim(config), H, dtype);
  detail::check_shape(who + " v projection", a.v, kv_dim(config), H, dtype);
  detail::check_shape(who + " o projection", a.o, H, q_dim(config), dtype);
  if (config.attention_bias) {
    detail::check_shape(who + " q bias", a.q_bias, 1, q_dim(config), dtype);
    detail::check_shape(who + " k bias", a.k_bias, 1, kv_dim(config), dtype);
    detail::check_shape(who + " v bias", a.v_bias, 1, kv_dim(config), dtype);
  } else {
    SAMOYEDS_CHECK(a.q_bias.empty() && a.k_bias.empty() && a.v_bias.empty(), who, ": ", config.display_name,
                   " has no attention biases, but biases were given");
  }
  SAMOYEDS_CHECK(w.moe.has_value() == moe && w.mlp.has_value() == !moe, who, " is a ", moe ? "MoE" : "dense",
                 " layer: it needs ", moe ? "a MoE block and no dense MLP" : "a dense MLP and no MoE block");
  if (moe) {
    check_moe_weights(config, *w.moe);
    SAMOYEDS_CHECK(w.moe->router.dtype() == dtype, who, ": the MoE block is ", dtype_name(w.moe->router.dtype()),
                   " but the layer is ", dtype_name(dtype));
  } else {
    detail::check_mlp_shapes(config, who + " MLP", *w.mlp, config.dense_intermediate_size, dtype);
  }
  const bool extra = moe && config.extra_dense_mlp;
  SAMOYEDS_CHECK(w.extra_mlp.has_value() == extra && w.extra_norm.empty() == !extra, who,
                 extra ? " needs OpenMoE's extra norm and dense MLP" : " has no extra dense MLP, but one was given");
  if (extra) {
    check_norm(who + " extra norm", w.extra_norm, config, dtype);
    detail::check_mlp_shapes(config, who + " extra MLP", *w.extra_mlp, config.dense_intermediate_size, dtype);
  }
}

std::vector<std::int32_t> random_token_ids(std::int64_t count, std::int64_t vocab_size, std::uint64_t seed) {
  SAMOYEDS_CHECK(count >= 0 && vocab_size >= 1 && vocab_size <= (std::int64_t{1} << 31), "random_token_ids: ", count,
                 " ids over a vocabulary of ", vocab_size, "; need count >= 0 and 1 <= vocab_size <= 2^31");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> id(0, static_cast<std::int32_t>(vocab_size - 1));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(count));
  for (auto& i : ids) i = id(rng);
  return ids;
}

ModelWeights synthetic_model(const ModelConfig& config, int num_layers, DType dtype, const SparsityPattern& pattern,
                             std::uint64_t seed) {
  config.validate();
  SAMOYEDS_CHECK(num_layers >= 1 && num_layers <= config.num_layers, config.display_name, " has ", config.num_layers,
                 " layers; asked for ", num_layers);
  ModelWeights w;
  const std::uint64_t model_seed = mix_seed(seed, ~std::uint64_t{0});  // apart from every layer's
  w.embedding = detail::random_matrix(dtype, config.vocab_size, config.hidden_size, 1.0f, model_seed + 1);
  for (int l = 0; l < num_layers; ++l) w.layers.push_back(synthetic_decoder_layer(config, l, dtype, pattern, seed));
  w.final_norm = random_around(dtype, config.hidden_size, 1.0f, 0.1f, model_seed + 2);
  if (!config.tie_word_embeddings)
    w.lm_head = detail::random_matrix(dtype, config.vocab_size, config.hidden_size,
                                      1.0f / std::sqrt(static_cast<float>(config.hidden_size)), model_seed + 3);
  return w;
}

void check_model(const ModelConfig& config, const ModelWeights& w) {
  config.validate();
  const DType dtype = w.embedding.dtype();
  SAMOYEDS_CHECK(is_half_precision(dtype), config.display_name, ": weights must be bf16 or fp16, got ", dtype_name(dtype));
  detail::check_shape(config.display_name + " embedding", w.embedding, config.vocab_size, config.hidden_size, dtype);
  SAMOYEDS_CHECK(!w.layers.empty() && static_cast<int>(w.layers.size()) <= config.num_layers, config.display_name,
                 " has ", config.num_layers, " layers but the weights have ", w.layers.size());
  for (std::size_t l = 0; l < w.layers.size(); ++l) check_decoder_layer(config, static_cast<int>(l), w.layers[l]);
  check_norm(config.display_name + " final norm", w.final_norm, config, dtype);
  if (config.tie_word_embeddings) {
    SAMOYEDS_CHECK(w.lm_head.empty(), config.display_name, " ties the LM head to the embedding; pass no LM head");
  } else {
    detail::check_shape(config.display_name + " LM head", w.lm_head, config.vocab_size, config.hidden_size, dtype);
  }
}

}  // namespace samoyeds
