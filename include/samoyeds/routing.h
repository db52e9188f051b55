// SPDX-License-Identifier: Apache-2.0
// Routing: router logits, softmax + top-k per model family (with OpenMoE's capacity limit), the
// per-expert token lists the expert kernels read, and the deterministic combine back to tokens.
// This is the CPU implementation; the GPU twin must produce the same lists (docs/routing.md).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "samoyeds/dtype.h"
#include "samoyeds/matrix.h"

namespace samoyeds {

struct RouterConfig {
  int num_experts = 0;            // E
  int top_k = 0;
  bool renormalize = false;       // Mixtral, MiniCPM: weights divided by the sum of the top-k probabilities
  bool capacity_limited = false;  // OpenMoE (ColossalAI Top2Router): per-expert capacity, token dropping
  float capacity_factor = 2.0f;   // OpenMoE eval value (training uses 1.25)
  int min_capacity = 4;
  void validate() const;          // throws samoyeds::Error naming the bad field
};

// Result of routing T tokens. A "slot" is one (token, expert) pair that an expert computes; slots are
// grouped by ascending expert id and, inside an expert, sorted by ascending token id.
struct Routing {
  std::int64_t num_tokens = 0;  // T
  int top_k = 0;
  int num_experts = 0;          // E
  std::vector<std::int32_t> topk_expert;     // [T, top_k] int32, rank 0 = highest probability; -1 where dropped
  std::vector<float> topk_weight;            // [T, top_k] fp32 routing weight; 0 where dropped
  std::vector<std::int32_t> expert_offsets;  // [E + 1] int32, slots of expert e are [offsets[e], offsets[e + 1])
  std::vector<std::int32_t> slot_token;      // [num_slots] int32 token id of each slot
  std::vector<float> slot_weight;            // [num_slots] fp32 routing weight of each slot
  std::vector<std::int32_t> token_slot;      // [T, top_k] int32 slot of token t's rank-j choice; -1 where dropped

  std::int64_t num_slots() const { return static_cast<std::int64_t>(slot_token.size()); }
  std::int64_t expert_size(int expert_idx) const;  // number of slots (tokens) of one expert
  void validate() const;  // every invariant of docs/routing.md; throws naming the first violation
};

// logits[t * E + e] = sum_h x[t][h] * w[e][h], accumulated exactly (fp64) and rounded to fp32; then
// rounded to logits_dtype, which models a gate Linear that runs in the model dtype (HF Mixtral,
// Qwen2-MoE: bf16 logits) instead of fp32 (OpenMoE). x [T, H], router_weight [E, H]; returns [T * E].
std::vector<float> router_logits(const Matrix& x, const Matrix& router_weight, DType logits_dtype = DType::f32);

// OpenMoE capacity per expert for T tokens: max(even_up(floor(top_k * factor * T / E)), min_capacity).
std::int64_t expert_capacity(std::int64_t num_tokens, const RouterConfig& config);

// fp32 softmax (max-subtracted) per token, then top-k (ties to the lower expert id), optional
// renormalisation, optional capacity dropping; builds the per-expert lists. logits [T * E] fp32.
Routing route(std::span<const float> logits, std::int64_t num_tokens, const RouterConfig& config);

// Lists from explicit choices (tests, skewed routing, checks of the GPU path). topk_expert [T * top_k]
// with -1 for a dropped choice (its weight must be 0); experts of one token must be distinct.
Routing routing_from_choices(std::int64_t num_tokens, int num_experts, int top_k,
                             std::span<const std::int32_t> topk_expert, std::span<const float> topk_weight);

// Qwen2-MoE shared-expert gate: sigmoid(x[t] . w) per token in fp32, the dot rounded to logit_dtype
// first (see router_logits). x [T, H], gate_weight [1, H]; returns [T].
std::vector<float> shared_expert_gate(const Matrix& x, const Matrix& gate_weight, DType logit_dtype = DType::f32);

// Deterministic combine: Y[t, :] = round_to(out_dtype, fp32 sum over j = 0..top_k-1 ascending, skipping
// dropped choices, of slot_rows[token_slot[t, j], :], then + shared[t, :] when shared != nullptr).
// slot_rows [num_slots, H] (already weighted), shared [T, H] or nullptr; returns [T, H] out_dtype.
Matrix combine(const Matrix& slot_rows, const Routing& routing, const Matrix* shared, DType out_dtype);

}  // namespace samoyeds
