// SPDX-License-Identifier: Apache-2.0
// Routers: gate logits, the Qwen2-MoE shared-expert gate, and route() = fp32 softmax + top-k with the
// family options (renormalisation, OpenMoE capacity dropping). The exact arithmetic is spelled out in
// docs/routing.md so that the GPU twin can reproduce the same choices.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "samoyeds/error.h"
#include "samoyeds/routing.h"

namespace samoyeds {
namespace {

// Tokens per parallel chunk so that a chunk carries about 128K multiply-adds.
std::int64_t token_grain(std::int64_t work_per_token) {
  return std::max<std::int64_t>(1, (std::int64_t{1} << 17) / std::max<std::int64_t>(1, work_per_token));
}

// out[t * R + r] = round_to(dtype, float(sum_h x[t][h] * w[r][h])). fp32 products are exact in fp64,
// so the result is the rounded true dot product for any realistic H: no order to agree on with a GPU.
std::vector<float> dot_rows(const Matrix& x, const Matrix& w, DType dtype) {
  const std::int64_t num_tokens = x.rows();
  const std::int64_t num_rows = w.rows();
  const std::int64_t hidden = x.cols();
  const std::vector<float> w_f = w.to_float();  // [R, H] fp32
  std::vector<float> out(static_cast<std::size_t>(num_tokens * num_rows));  // [T, R] fp32
  detail::parallel_for(num_tokens, token_grain(num_rows * hidden), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> x_row(static_cast<std::size_t>(hidden));  // [H] fp32
    for (std::int64_t t = begin; t < end; ++t) {
      x.row_to_float(t, x_row.data());
      for (std::int64_t r = 0; r < num_rows; ++r) {
        const float* w_row = w_f.data() + r * hidden;
        double acc = 0.0;
        for (std::int64_t h = 0; h < hidden; ++h) acc += static_cast<double>(x_row[h]) * static_cast<double>(w_row[h]);
        out[static_cast<std::size_t>(t * num_rows + r)] = round_to(dtype, static_cast<float>(acc));
      }
    }
  });
  return out;
}

}  // namespace

std::vector<float> router_logits(const Matrix& x, const Matrix& router_weight, DType logits_dtype) {
  SAMOYEDS_CHECK(x.cols() >= 1, "router_logits: x is [", x.rows(), ", ", x.cols(), "]; it needs H >= 1 columns");
  SAMOYEDS_CHECK(router_weight.rows() >= 1 && router_weight.cols() == x.cols(), "router_logits: router_weight is [",
                 router_weight.rows(), ", ", router_weight.cols(), "]; it must be [E, H] = [E >= 1, ", x.cols(),
                 "] to match x [T, H] = [", x.rows(), ", ", x.cols(), "]");
  return dot_rows(x, router_weight, logits_dtype);
}

std::vector<float> shared_expert_gate(const Matrix& x, const Matrix& gate_weight, DType logit_dtype) {
  SAMOYEDS_CHECK(x.cols() >= 1, "shared_expert_gate: x is [", x.rows(), ", ", x.cols(), "]; it needs H >= 1 columns");
  SAMOYEDS_CHECK(gate_weight.rows() == 1 && gate_weight.cols() == x.cols(), "shared_expert_gate: gate_weight is [",
                 gate_weight.rows(), ", ", gate_weight.cols(), "]; it must be [1, H] = [1, ", x.cols(), "]");
  std::vector<float> gate = dot_rows(x, gate_weight, logit_dtype);  // [T] fp32
  for (float& g : gate) g = 1.0f / (1.0f + std::exp(-g));
  return gate;
}

std::int64_t expert_capacity(std::int64_t num_tokens, const RouterConfig& config) {
  config.validate();
  SAMOYEDS_CHECK(num_tokens >= 0, "expert_capacity: num_tokens is ", num_tokens, "; it must be >= 0");
  // ColossalAI MoeRouter.get_capacity, evaluated left to right in double as Python does.
  const double raw = static_cast<double>(config.top_k) * static_cast<double>(config.capacity_factor) *
                     static_cast<double>(num_tokens) / static_cast<double>(config.num_experts);
  std::int64_t capacity = static_cast<std::int64_t>(std::floor(raw));
  capacity += capacity % 2;  // round an odd capacity up to even
  return std::max<std::int64_t>(capacity, config.min_capacity);
}

Routing route(std::span<const float> logits, std::int64_t num_tokens, const RouterConfig& config) {
  config.validate();
  const int num_experts = config.num_experts;
  const int top_k = config.top_k;
  SAMOYEDS_CHECK(num_tokens >= 0, "route: num_tokens is ", num_tokens, "; it must be >= 0");
  SAMOYEDS_CHECK(num_tokens <= std::numeric_limits<std::int32_t>::max() / top_k, "route: num_tokens * top_k = ",
                 num_tokens, " * ", top_k, " does not fit int32 slot ids; route fewer tokens per call");
  SAMOYEDS_CHECK(logits.size() == static_cast<std::size_t>(num_tokens) * static_cast<std::size_t>(num_experts),
                 "route: logits hold ", logits.size(), " values; they must be [T, E] = ", num_tokens, " * ",
                 num_experts, " = ", num_tokens * num_experts);
  // Scanned serially first so that the message names the first bad logit, whatever the thread count.
  for (std::size_t i = 0; i < logits.size(); ++i) {
    SAMOYEDS_CHECK(std::isfinite(logits[i]), "route: router logit [token ", i / num_experts, ", expert ",
                   i % num_experts, "] is ", logits[i], "; check the router input and weight for NaN/Inf or overflow");
  }

  std::vector<std::int32_t> topk_expert(static_cast<std::size_t>(num_tokens * top_k));  // [T, top_k] int32
  std::vector<float> topk_weight(static_cast<std::size_t>(num_tokens * top_k));         // [T, top_k] fp32
  detail::parallel_for(num_tokens, token_grain(num_experts * 8), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> probs(static_cast<std::size_t>(num_experts));  // [E] fp32
    std::vector<char> taken(static_cast<std::size_t>(num_experts));   // [E]
    for (std::int64_t t = begin; t < end; ++t) {
      const float* row = logits.data() + t * num_experts;
      float max_logit = row[0];
      for (int e = 1; e < num_experts; ++e) max_logit = std::max(max_logit, row[e]);
      float sum = 0.0f;
      for (int e = 0; e < num_experts; ++e) {
        probs[e] = std::exp(row[e] - max_logit);
        sum += probs[e];
      }
      for (int e = 0; e < num_experts; ++e) probs[e] /= sum;

      // Repeated argmax with a strict '>': equal probabilities go to the lower expert id (torch.argmax).
      std::fill(taken.begin(), taken.end(), 0);
      std::int32_t* experts = topk_expert.data() + t * top_k;
      float* weights = topk_weight.data() + t * top_k;
      for (int j = 0; j < top_k; ++j) {
        int best = -1;
        for (int e = 0; e < num_experts; ++e) {
          if (!taken[e] && (best < 0 || probs[e] > probs[best])) best = e;
        }
        taken[best] = 1;
        experts[j] = best;
        weights[j] = probs[best];
      }
      if (config.renormalize) {
        float top_sum = 0.0f;
        for (int j = 0; j < top_k; ++j) top_sum += weights[j];
        for (int j = 0; j < top_k; ++j) weights[j] /= top_sum;
      }
    }
  });

  if (config.capacity_limited) {
    // ColossalAI Top2Router: an expert's queue takes all rank-0 choices in token order, then the rank-1
    // choices in token order; a choice whose queue position is >= capacity is dropped. Dropped rank-0
    // choices still occupy their position, exactly like the cumsum over the unmasked one-hot mask.
    const std::int64_t capacity = expert_capacity(num_tokens, config);
    std::vector<std::int64_t> queued(static_cast<std::size_t>(num_experts), 0);  // [E]
    for (int j = 0; j < top_k; ++j) {
      for (std::int64_t t = 0; t < num_tokens; ++t) {
        const std::size_t at = static_cast<std::size_t>(t * top_k + j);
        if (queued[topk_expert[at]]++ >= capacity) {
          topk_expert[at] = -1;
          topk_weight[at] = 0.0f;
        }
      }
    }
  }
  return routing_from_choices(num_tokens, num_experts, top_k, topk_expert, topk_weight);
}

}  // namespace samoyeds
