// SPDX-License-Identifier: Apache-2.0
// The Routing result: its invariants (validate) and the construction of the per-expert token lists
// from per-token choices. Every other routing path (route(), the GPU twin's checks) ends here, so the
// slot order is defined in exactly one place.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "samoyeds/error.h"
#include "samoyeds/routing.h"

namespace samoyeds {
namespace {

// Slot ids and offsets are int32 (what the kernels index with), so T * top_k must fit.
void check_shape(std::int64_t num_tokens, int num_experts, int top_k, const char* what) {
  SAMOYEDS_CHECK(num_tokens >= 0, what, ": num_tokens is ", num_tokens, "; it must be >= 0");
  SAMOYEDS_CHECK(num_experts >= 1, what, ": num_experts is ", num_experts, "; it must be >= 1");
  SAMOYEDS_CHECK(top_k >= 1 && top_k <= num_experts, what, ": top_k is ", top_k,
                 "; it must be in [1, num_experts = ", num_experts, "]");
  SAMOYEDS_CHECK(num_tokens <= std::numeric_limits<std::int32_t>::max() / top_k, what, ": num_tokens * top_k = ",
                 num_tokens, " * ", top_k, " does not fit int32 slot ids; route fewer tokens per call");
}

}  // namespace

void RouterConfig::validate() const {
  SAMOYEDS_CHECK(num_experts >= 1, "RouterConfig.num_experts is ", num_experts, "; set it to the model's E (>= 1)");
  SAMOYEDS_CHECK(top_k >= 1 && top_k <= num_experts, "RouterConfig.top_k is ", top_k, "; it must be in [1, E = ",
                 num_experts, "]");
  if (!capacity_limited) return;
  SAMOYEDS_CHECK(top_k == 2, "RouterConfig.capacity_limited needs top_k == 2 (ColossalAI Top2Router), got top_k = ",
                 top_k);
  SAMOYEDS_CHECK(std::isfinite(capacity_factor) && capacity_factor > 0.0f, "RouterConfig.capacity_factor is ",
                 capacity_factor, "; it must be a finite value > 0 (OpenMoE: 2.0 at eval)");
  SAMOYEDS_CHECK(min_capacity >= 1, "RouterConfig.min_capacity is ", min_capacity,
                 "; it must be >= 1 so that every expert can take a token (OpenMoE: 4)");
}

std::int64_t Routing::expert_size(int expert_idx) const {
  SAMOYEDS_CHECK(expert_idx >= 0 && expert_idx < num_experts && expert_offsets.size() == static_cast<std::size_t>(num_experts) + 1,
                 "expert_size(", expert_idx, "): expert id must be in [0, ", num_experts, ") of a validated Routing");
  return expert_offsets[expert_idx + 1] - expert_offsets[expert_idx];
}

void Routing::validate() const {
  check_shape(num_tokens, num_experts, top_k, "Routing");
  const std::size_t num_choices = static_cast<std::size_t>(num_tokens) * static_cast<std::size_t>(top_k);
  SAMOYEDS_CHECK(topk_expert.size() == num_choices && topk_weight.size() == num_choices &&
                     token_slot.size() == num_choices,
                 "Routing: topk_expert, topk_weight and token_slot must each hold T * top_k = ", num_choices,
                 " entries; they hold ", topk_expert.size(), ", ", topk_weight.size(), ", ", token_slot.size());
  SAMOYEDS_CHECK(expert_offsets.size() == static_cast<std::size_t>(num_experts) + 1, "Routing: expert_offsets holds ",
                 expert_offsets.size(), " entries; it must hold E + 1 = ", num_experts + 1);
  SAMOYEDS_CHECK(slot_weight.size() == slot_token.size(), "Routing: slot_weight holds ", slot_weight.size(),
                 " entries but slot_token holds ", slot_token.size());
  const std::int64_t slots = num_slots();
  SAMOYEDS_CHECK(expert_offsets[0] == 0, "Routing: expert_offsets[0] is ", expert_offsets[0], "; it must be 0");
  for (int e = 0; e < num_experts; ++e) {
    SAMOYEDS_CHECK(expert_offsets[e] <= expert_offsets[e + 1], "Routing: expert_offsets decreases at expert ", e,
                   " (", expert_offsets[e], " > ", expert_offsets[e + 1], ")");
  }
  SAMOYEDS_CHECK(expert_offsets[num_experts] == slots, "Routing: expert_offsets[E] is ", expert_offsets[num_experts],
                 " but there are ", slots, " slots");

  // The documented order: inside an expert, strictly ascending token ids (so each token at most once).
  for (int e = 0; e < num_experts; ++e) {
    for (std::int32_t s = expert_offsets[e]; s < expert_offsets[e + 1]; ++s) {
      SAMOYEDS_CHECK(slot_token[s] >= 0 && slot_token[s] < num_tokens, "Routing: slot ", s, " has token ",
                     slot_token[s], ", outside [0, T = ", num_tokens, ")");
      SAMOYEDS_CHECK(s == expert_offsets[e] || slot_token[s - 1] < slot_token[s], "Routing: slots of expert ", e,
                     " are not in strictly ascending token order at slot ", s, " (token ", slot_token[s - 1],
                     " then ", slot_token[s], ")");
      SAMOYEDS_CHECK(std::isfinite(slot_weight[s]), "Routing: slot ", s, " has a non-finite weight ", slot_weight[s]);
    }
  }

  std::vector<std::int64_t> expert_seen_at(static_cast<std::size_t>(num_experts), -1);  // [E] last token per expert
  std::vector<char> slot_used(static_cast<std::size_t>(slots), 0);                       // [num_slots]
  std::int64_t num_kept = 0;
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * top_k + j);
      const std::int32_t e = topk_expert[at];
      const float w = topk_weight[at];
      const std::int32_t s = token_slot[at];
      SAMOYEDS_CHECK(e >= -1 && e < num_experts, "Routing: token ", t, " rank ", j, " has expert ", e,
                     ", outside [0, E = ", num_experts, ") and not -1 (dropped)");
      SAMOYEDS_CHECK(std::isfinite(w), "Routing: token ", t, " rank ", j, " has a non-finite weight ", w);
      if (e < 0) {
        SAMOYEDS_CHECK(w == 0.0f && s == -1, "Routing: token ", t, " rank ", j,
                       " is dropped (expert -1) but has weight ", w, " and slot ", s, "; both must be 0 and -1");
        continue;
      }
      SAMOYEDS_CHECK(expert_seen_at[e] != t, "Routing: token ", t, " chooses expert ", e, " twice");
      expert_seen_at[e] = t;
      SAMOYEDS_CHECK(s >= expert_offsets[e] && s < expert_offsets[e + 1], "Routing: token ", t, " rank ", j,
                     " (expert ", e, ") points at slot ", s, ", outside that expert's slots [", expert_offsets[e],
                     ", ", expert_offsets[e + 1], ")");
      SAMOYEDS_CHECK(slot_token[s] == t && slot_weight[s] == w, "Routing: slot ", s, " holds token ", slot_token[s],
                     " weight ", slot_weight[s], " but token ", t, " rank ", j, " (weight ", w, ") points at it");
      SAMOYEDS_CHECK(!slot_used[s], "Routing: slot ", s, " is referenced twice");
      slot_used[s] = 1;
      ++num_kept;
    }
  }
  SAMOYEDS_CHECK(num_kept == slots, "Routing: ", slots, " slots but only ", num_kept,
                 " kept (token, rank) choices point at slots; every slot must belong to exactly one choice");
}

Routing routing_from_choices(std::int64_t num_tokens, int num_experts, int top_k,
                             std::span<const std::int32_t> topk_expert, std::span<const float> topk_weight) {
  check_shape(num_tokens, num_experts, top_k, "routing_from_choices");
  const std::size_t num_choices = static_cast<std::size_t>(num_tokens) * static_cast<std::size_t>(top_k);
  SAMOYEDS_CHECK(topk_expert.size() == num_choices && topk_weight.size() == num_choices,
                 "routing_from_choices: topk_expert and topk_weight must hold T * top_k = ", num_tokens, " * ", top_k,
                 " = ", num_choices, " entries; they hold ", topk_expert.size(), " and ", topk_weight.size());

  Routing routing;
  routing.num_tokens = num_tokens;
  routing.top_k = top_k;
  routing.num_experts = num_experts;
  routing.topk_expert.assign(topk_expert.begin(), topk_expert.end());
  routing.topk_weight.assign(topk_weight.begin(), topk_weight.end());
  routing.expert_offsets.assign(static_cast<std::size_t>(num_experts) + 1, 0);

  std::vector<std::int64_t> expert_seen_at(static_cast<std::size_t>(num_experts), -1);  // [E] last token per expert
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * top_k + j);
      const std::int32_t e = topk_expert[at];
      const float w = topk_weight[at];
      SAMOYEDS_CHECK(e >= -1 && e < num_experts, "routing_from_choices: token ", t, " rank ", j, " chooses expert ", e,
                     "; experts must be in [0, E = ", num_experts, "), or -1 for a dropped choice");
      SAMOYEDS_CHECK(std::isfinite(w), "routing_from_choices: token ", t, " rank ", j, " has a non-finite weight ", w);
      if (e < 0) {
        SAMOYEDS_CHECK(w == 0.0f, "routing_from_choices: token ", t, " rank ", j,
                       " is dropped (expert -1) but has weight ", w, "; give dropped choices weight 0");
        continue;
      }
      SAMOYEDS_CHECK(expert_seen_at[e] != t, "routing_from_choices: token ", t, " chooses expert ", e,
                     " more than once; the top_k experts of a token must be distinct");
      expert_seen_at[e] = t;
      ++routing.expert_offsets[e + 1];
    }
  }
  for (int e = 0; e < num_experts; ++e) routing.expert_offsets[e + 1] += routing.expert_offsets[e];

  // Counting sort with tokens visited in ascending order: each expert's slots come out sorted by token.
  const std::int32_t num_slots = routing.expert_offsets[num_experts];
  routing.slot_token.resize(static_cast<std::size_t>(num_slots));
  routing.slot_weight.resize(static_cast<std::size_t>(num_slots));
  routing.token_slot.assign(num_choices, -1);
  std::vector<std::int32_t> cursor(routing.expert_offsets.begin(), routing.expert_offsets.end() - 1);  // [E]
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * top_k + j);
      const std::int32_t e = topk_expert[at];
      if (e < 0) continue;
      const std::int32_t s = cursor[e]++;
      routing.slot_token[s] = static_cast<std::int32_t>(t);
      routing.slot_weight[s] = topk_weight[at];
      routing.token_slot[at] = s;
    }
  }
  return routing;
}

}  // namespace samoyeds
