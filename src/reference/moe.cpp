// SPDX-License-Identifier: Apache-2.0
// The CPU reference MoE layer: on packed weights (the twin of the GPU layer, built from the SSMM
// twins) and as a straightforward per-token loop on dense weights. Both share the routing code and
// the rounding points: A in the dtype, each weighted slot row in the dtype, the combine in fp32.
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "samoyeds/reference.h"

namespace samoyeds::reference {

namespace {

void check_input(const ModelConfig& config, const Matrix& router, const Matrix& x) {
  SAMOYEDS_CHECK(x.dtype() == router.dtype(), "moe_layer: activations are ", dtype_name(x.dtype()),
                 " but the weights are ", dtype_name(router.dtype()));
  SAMOYEDS_CHECK(x.cols() == config.hidden_size, "moe_layer: activations have ", x.cols(), " columns but ",
                 config.display_name, " has H = ", config.hidden_size);
}

Routing route_tokens(const ModelConfig& config, const Matrix& router, const Matrix& x) {
  const std::vector<float> logits = router_logits(x, router);
  return route(logits, x.rows(), router_config(config));
}

// Weights of the shared expert's output per token: Qwen2-MoE's sigmoid gate, else 1.
std::vector<float> shared_weights(const ModelConfig& config, const Matrix& shared_gate, const Matrix& x) {
  if (config.shared_expert_sigmoid_gate) return shared_expert_gate(x, shared_gate);
  return std::vector<float>(static_cast<std::size_t>(x.rows()), 1.0f);
}

void copy_rows(const Matrix& from, Matrix& to, std::int64_t first_row) {
  const std::size_t row_bytes = static_cast<std::size_t>(from.cols()) * dtype_size(from.dtype());
  std::memcpy(static_cast<std::uint8_t*>(to.data()) + static_cast<std::size_t>(first_row) * row_bytes, from.data(),
              row_bytes * static_cast<std::size_t>(from.rows()));
}

}  // namespace

Matrix moe_layer(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x, Routing* routing_out) {
  check_moe_weights(config, weights);
  check_input(config, weights.router, x);
  Routing routing = route_tokens(config, weights.router, x);
  Matrix y = moe_layer_routed(config, weights, x, routing);
  if (routing_out) *routing_out = std::move(routing);
  return y;
}

Matrix moe_layer_routed(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x,
                        const Routing& routing) {
  check_moe_weights(config, weights);
  check_input(config, weights.router, x);
  routing.validate();
  SAMOYEDS_CHECK(routing.num_tokens == x.rows() && routing.num_experts == config.num_experts &&
                     routing.top_k == config.top_k,
                 "moe_layer_routed: the routing is for T = ", routing.num_tokens, ", E = ", routing.num_experts,
                 ", top_k = ", routing.top_k, " but x has ", x.rows(), " tokens and ", config.display_name, " has E = ",
                 config.num_experts, ", top_k = ", config.top_k);
  const DType dtype = x.dtype();

  Matrix slot_rows(dtype, routing.num_slots(), config.hidden_size);  // [slots, H]
  for (int e = 0; e < config.num_experts; ++e) {
    const std::int64_t begin = routing.expert_offsets[static_cast<std::size_t>(e)];
    const std::int64_t length = routing.expert_size(e);
    if (length == 0) continue;  // empty experts are skipped, as the GPU scheduler does
    const std::span<const std::int32_t> tokens(routing.slot_token.data() + begin, static_cast<std::size_t>(length));
    const std::span<const float> slot_weight(routing.slot_weight.data() + begin, static_cast<std::size_t>(length));
    const PackedExpert& expert = weights.experts[static_cast<std::size_t>(e)];
    const Matrix a = ssmm_gate_up(expert.gate, expert.up, x, Tokens::list(tokens), dtype,
                                  expert.gate_linear ? &*expert.gate_linear : nullptr);  // [L, I]
    copy_rows(ssmm_down_weighted(expert.down, a, slot_weight, dtype), slot_rows, begin);
  }

  Matrix shared_rows;  // [T, H]
  if (weights.shared) {
    const PackedExpert& shared = *weights.shared;
    const Matrix a = ssmm_gate_up(shared.gate, shared.up, x, Tokens::all(x.rows()), dtype,
                                  shared.gate_linear ? &*shared.gate_linear : nullptr);
    shared_rows = ssmm_down_weighted(shared.down, a, shared_weights(config, weights.shared_gate, x), dtype);
  }
  return combine(slot_rows, routing, weights.shared ? &shared_rows : nullptr, dtype);
}

namespace {

// fp32 dot product of a dense weight row with x (both widened), ascending columns.
float dot(const Matrix& w, std::int64_t row, const std::vector<float>& x) {
  float sum = 0.0f;
  for (std::int64_t c = 0; c < w.cols(); ++c) sum += w.get(row, c) * x[static_cast<std::size_t>(c)];
  return sum;
}

// One expert on one token, with the kernels' rounding points: A rounded, the weighted output rounded.
std::vector<float> expert_on_token(const DenseExpert& e, const std::vector<float>& x, float weight, DType dtype) {
  const std::int64_t width = e.gate.rows();
  std::vector<float> a(static_cast<std::size_t>(width));
  for (std::int64_t i = 0; i < width; ++i) {
    float value = silu(dot(e.gate, i, x)) * dot(e.up, i, x);
    if (!e.gate_linear.empty()) value *= dot(e.gate_linear, i, x);
    a[static_cast<std::size_t>(i)] = round_to(dtype, value);
  }
  std::vector<float> y(static_cast<std::size_t>(e.down.rows()));
  for (std::int64_t h = 0; h < e.down.rows(); ++h) y[static_cast<std::size_t>(h)] = round_to(dtype, weight * dot(e.down, h, a));
  return y;
}

}  // namespace

Matrix dense_mlp(const DenseExpert& mlp, const Matrix& x) {
  SAMOYEDS_CHECK(x.cols() == mlp.gate.cols() && x.dtype() == mlp.gate.dtype(), "dense_mlp: x is [", x.rows(), ", ",
                 x.cols(), "] ", dtype_name(x.dtype()), " but the MLP takes ", mlp.gate.cols(), " ",
                 dtype_name(mlp.gate.dtype()), " columns");
  Matrix y(x.dtype(), x.rows(), mlp.down.rows());
  detail::parallel_for(x.rows(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> x_row(static_cast<std::size_t>(x.cols()));
    for (std::int64_t t = begin; t < end; ++t) {
      x.row_to_float(t, x_row.data());
      const auto out = expert_on_token(mlp, x_row, 1.0f, x.dtype());
      for (std::int64_t h = 0; h < y.cols(); ++h) y.set(t, h, out[static_cast<std::size_t>(h)]);
    }
  });
  return y;
}

Matrix moe_layer_dense(const ModelConfig& config, const DenseMoeWeights& weights, const Matrix& x, Routing* routing_out) {
  check_moe_weights(config, weights);
  check_input(config, weights.router, x);
  const DType dtype = x.dtype();
  Routing routing = route_tokens(config, weights.router, x);
  const std::vector<float> shared_weight =
      weights.shared ? shared_weights(config, weights.shared_gate, x) : std::vector<float>{};
  Matrix y(dtype, x.rows(), config.hidden_size);
  detail::parallel_for(x.rows(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> x_row(static_cast<std::size_t>(x.cols()));
    for (std::int64_t t = begin; t < end; ++t) {
      x.row_to_float(t, x_row.data());
      std::vector<float> sum(static_cast<std::size_t>(config.hidden_size), 0.0f);
      for (int j = 0; j < config.top_k; ++j) {
        const std::int32_t e = routing.topk_expert[static_cast<std::size_t>(t * config.top_k + j)];
        if (e < 0) continue;  // dropped by capacity
        const float w = routing.topk_weight[static_cast<std::size_t>(t * config.top_k + j)];
        const auto out = expert_on_token(weights.experts[static_cast<std::size_t>(e)], x_row, w, dtype);
        for (std::size_t h = 0; h < sum.size(); ++h) sum[h] += out[h];
      }
      if (weights.shared) {
        const auto out = expert_on_token(*weights.shared, x_row, shared_weight[static_cast<std::size_t>(t)], dtype);
        for (std::size_t h = 0; h < sum.size(); ++h) sum[h] += out[h];
      }
      for (std::int64_t h = 0; h < config.hidden_size; ++h) y.set(t, h, sum[static_cast<std::size_t>(h)]);
    }
  });
  if (routing_out) *routing_out = std::move(routing);
  return y;
}

}  // namespace samoyeds::reference
