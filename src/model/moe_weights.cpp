// SPDX-License-Identifier: Apache-2.0
// MoE layer weights: synthetic seeded weights, shape checks, packing and unpacking of a whole layer.
#include <cmath>
#include <random>
#include <string>

#include "core/parallel.h"
#include "model/random_weights.h"
#include "samoyeds/moe.h"

namespace samoyeds {

RouterConfig router_config(const ModelConfig& config) {
  RouterConfig router;
  router.num_experts = config.num_experts;
  router.top_k = config.top_k;
  router.renormalize = config.renormalize;
  router.capacity_limited = config.capacity_limited;
  if (config.capacity_limited) {
    router.capacity_factor = config.capacity_factor;
    router.min_capacity = config.min_capacity;
  }
  return router;
}

ModelConfig scaled_config(const ModelConfig& config, std::int64_t hidden_size, std::int64_t intermediate_size) {
  SAMOYEDS_CHECK(hidden_size >= 1 && intermediate_size >= 1, "scaled sizes must be positive, got H = ", hidden_size,
                 ", I = ", intermediate_size);
  ModelConfig scaled = config;
  auto rescale = [&](std::int64_t width) {
    return width == 0 ? 0 : std::max<std::int64_t>(1, width * intermediate_size / config.intermediate_size);
  };
  scaled.shared_intermediate_size = rescale(config.shared_intermediate_size);
  scaled.dense_intermediate_size = rescale(config.dense_intermediate_size);
  scaled.hidden_size = hidden_size;
  scaled.intermediate_size = intermediate_size;
  scaled.name = config.name + "-scaled";
  return scaled;
}

namespace detail {

Matrix random_matrix(DType dtype, std::int64_t rows, std::int64_t cols, float stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  Matrix out(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out.set(r, c, normal(rng));
  return out;
}

DenseExpert random_mlp(const ModelConfig& config, std::int64_t width, DType dtype, std::uint64_t seed) {
  const std::int64_t H = config.hidden_size;
  const float in_std = 1.0f / std::sqrt(static_cast<float>(H));
  DenseExpert expert;
  expert.gate = random_matrix(dtype, width, H, in_std, seed);
  expert.up = random_matrix(dtype, width, H, in_std, seed + 1);
  expert.down = random_matrix(dtype, H, width, 1.0f / std::sqrt(static_cast<float>(width)), seed + 2);
  if (config.activation == ExpertActivation::openmoe_swiglu) expert.gate_linear = random_matrix(dtype, width, H, in_std, seed + 3);
  return expert;
}

void check_shape(const std::string& what, const Matrix& m, std::int64_t rows, std::int64_t cols, DType dtype) {
  SAMOYEDS_CHECK(m.rows() == rows && m.cols() == cols, what, " is [", m.rows(), ", ", m.cols(), "] but the model needs [",
                 rows, ", ", cols, "]");
  SAMOYEDS_CHECK(m.dtype() == dtype, what, " is ", dtype_name(m.dtype()), " but the layer's dtype is ", dtype_name(dtype));
}
void check_shape(const std::string& what, const PackedMatrix& m, std::int64_t rows, std::int64_t cols, DType dtype) {
  SAMOYEDS_CHECK(m.rows == rows && m.cols == cols, what, " is [", m.rows, ", ", m.cols, "] but the model needs [", rows,
                 ", ", cols, "]");
  SAMOYEDS_CHECK(m.dtype == dtype, what, " is ", dtype_name(m.dtype), " but the layer's dtype is ", dtype_name(dtype));
}

}  // namespace detail

namespace {

using detail::check_shape;
using detail::random_matrix;

template <class Weights>
void check_layer(const ModelConfig& config, const Weights& weights) {
  config.validate();
  const std::int64_t H = config.hidden_size;
  const DType dtype = weights.router.dtype();
  SAMOYEDS_CHECK(is_half_precision(dtype), "the router weight must be bf16 or fp16, got ", dtype_name(dtype));
  check_shape("router weight", weights.router, config.num_experts, H, dtype);
  SAMOYEDS_CHECK(static_cast<int>(weights.experts.size()) == config.num_experts, "the layer has ", weights.experts.size(),
                 " experts but ", config.display_name, " has ", config.num_experts);
  auto check_expert = [&](const std::string& name, const auto& e, std::int64_t width) {
    detail::check_mlp_shapes(config, name, e, width, dtype);
  };
  for (std::size_t e = 0; e < weights.experts.size(); ++e)
    check_expert("expert " + std::to_string(e), weights.experts[e], config.intermediate_size);
  SAMOYEDS_CHECK(weights.shared.has_value() == (config.num_shared_experts > 0), config.display_name,
                 config.num_shared_experts > 0 ? " needs" : " has no", " shared experts");
  if (weights.shared) check_expert("shared expert", *weights.shared, config.shared_intermediate_size);
  if (config.shared_expert_sigmoid_gate) {
    check_shape("shared expert gate", weights.shared_gate, 1, H, dtype);
  } else {
    SAMOYEDS_CHECK(weights.shared_gate.empty(), config.display_name, " has no sigmoid-gated shared expert, but a shared gate was given");
  }
}

}  // namespace

DenseMoeWeights synthetic_moe_weights(const ModelConfig& config, DType dtype, std::uint64_t seed) {
  config.validate();
  SAMOYEDS_CHECK(is_half_precision(dtype), "synthetic weights need bf16 or fp16, got ", dtype_name(dtype));
  DenseMoeWeights weights;
  weights.router = random_matrix(dtype, config.num_experts, config.hidden_size, 1.0f / std::sqrt(static_cast<float>(config.hidden_size)) * 4.0f, seed);
  weights.experts.resize(static_cast<std::size_t>(config.num_experts));
  detail::parallel_for(config.num_experts, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t e = begin; e < end; ++e)
      weights.experts[static_cast<std::size_t>(e)] =
          detail::random_mlp(config, config.intermediate_size, dtype, seed + 16 * static_cast<std::uint64_t>(e + 1));
  });
  if (config.num_shared_experts > 0) weights.shared = detail::random_mlp(config, config.shared_intermediate_size, dtype, seed + 7);
  if (config.shared_expert_sigmoid_gate)
    weights.shared_gate = random_matrix(dtype, 1, config.hidden_size, 1.0f / std::sqrt(static_cast<float>(config.hidden_size)), seed + 11);
  return weights;
}

void check_moe_weights(const ModelConfig& config, const DenseMoeWeights& weights) { check_layer(config, weights); }
void check_moe_weights(const ModelConfig& config, const PackedMoeWeights& weights) { check_layer(config, weights); }

PackedMoeWeights pack_moe_weights(const ModelConfig& config, const DenseMoeWeights& weights,
                                  const SparsityPattern& pattern) {
  check_moe_weights(config, weights);
  auto pack_expert = [&](const DenseExpert& e) {
    PackedExpert packed{pack(e.gate, pattern), pack(e.up, pattern), pack(e.down, pattern), std::nullopt};
    if (!e.gate_linear.empty()) packed.gate_linear = pack(e.gate_linear, pattern);
    return packed;
  };
  PackedMoeWeights packed;
  packed.router = weights.router;
  packed.experts.resize(weights.experts.size());
  for (std::size_t e = 0; e < weights.experts.size(); ++e) packed.experts[e] = pack_expert(weights.experts[e]);
  if (weights.shared) packed.shared = pack_expert(*weights.shared);
  packed.shared_gate = weights.shared_gate;
  return packed;
}

DenseMoeWeights unpack_moe_weights(const PackedMoeWeights& weights) {
  auto unpack_expert = [](const PackedExpert& e) {
    DenseExpert dense{unpack(e.gate), unpack(e.up), unpack(e.down), Matrix()};
    if (e.gate_linear) dense.gate_linear = unpack(*e.gate_linear);
    return dense;
  };
  DenseMoeWeights dense;
  dense.router = weights.router;
  for (const auto& e : weights.experts) dense.experts.push_back(unpack_expert(e));
  if (weights.shared) dense.shared = unpack_expert(*weights.shared);
  dense.shared_gate = weights.shared_gate;
  return dense;
}

}  // namespace samoyeds
