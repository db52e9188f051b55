// SPDX-License-Identifier: Apache-2.0
// Routing: router logits and the shared gate against plain loops, softmax/top-k on hand-worked logits,
// tie-breaking, list invariants and the documented order, OpenMoE capacity dropping (hand-worked and
// against a test-side transcription of ColossalAI's mask/cumsum formulation), edge sizes, bad inputs,
// and the combine against a plain loop, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "samoyeds/routing.h"

namespace samoyeds {
namespace {

using testing::random_normal_matrix;
using testing::seed_trace;

RouterConfig make_config(int num_experts, int top_k, bool renormalize = false) {
  RouterConfig config;
  config.num_experts = num_experts;
  config.top_k = top_k;
  config.renormalize = renormalize;
  return config;
}

RouterConfig make_capacity_config(int num_experts, float capacity_factor, int min_capacity) {
  RouterConfig config = make_config(num_experts, 2);
  config.capacity_limited = true;
  config.capacity_factor = capacity_factor;
  config.min_capacity = min_capacity;
  return config;
}

std::vector<float> random_logits(std::int64_t num_tokens, int num_experts, std::uint64_t seed, float stddev = 2.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> logits(static_cast<std::size_t>(num_tokens * num_experts));  // [T, E] fp32
  for (float& l : logits) l = dist(rng);
  return logits;
}

std::vector<double> softmax_f64(const float* row, int num_experts) {
  std::vector<double> p(static_cast<std::size_t>(num_experts));  // [E] fp64
  const double max_logit = *std::max_element(row, row + num_experts);
  double sum = 0.0;
  for (int e = 0; e < num_experts; ++e) sum += p[e] = std::exp(static_cast<double>(row[e]) - max_logit);
  for (double& v : p) v /= sum;
  return p;
}

// Expects fn() to throw samoyeds::Error whose message contains `needle`.
template <class Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected samoyeds::Error containing '" << needle << "'";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find(needle), std::string::npos) << "message: " << error.message();
  }
}

// Independent check of the list invariants (validate() checks them too; this does not rely on it).
void expect_lists_consistent(const Routing& r) {
  ASSERT_EQ(r.expert_offsets.size(), static_cast<std::size_t>(r.num_experts) + 1);
  EXPECT_EQ(r.expert_offsets.front(), 0);
  EXPECT_EQ(r.expert_offsets.back(), r.num_slots());
  for (int e = 0; e < r.num_experts; ++e) EXPECT_LE(r.expert_offsets[e], r.expert_offsets[e + 1]) << "expert " << e;
  std::vector<int> hits(static_cast<std::size_t>(r.num_slots()), 0);  // [num_slots]
  for (std::int64_t t = 0; t < r.num_tokens; ++t) {
    for (int j = 0; j < r.top_k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * r.top_k + j);
      const int e = r.topk_expert[at];
      const int s = r.token_slot[at];
      if (e < 0) {
        EXPECT_EQ(s, -1);
        EXPECT_EQ(r.topk_weight[at], 0.0f);
        continue;
      }
      ASSERT_GE(s, r.expert_offsets[e]);
      ASSERT_LT(s, r.expert_offsets[e + 1]);
      EXPECT_EQ(r.slot_token[s], t);
      EXPECT_EQ(r.slot_weight[s], r.topk_weight[at]);
      ++hits[s];
    }
  }
  for (std::size_t s = 0; s < hits.size(); ++s) EXPECT_EQ(hits[s], 1) << "slot " << s;
  for (int e = 0; e < r.num_experts; ++e) {
    for (int s = r.expert_offsets[e] + 1; s < r.expert_offsets[e + 1]; ++s) {
      EXPECT_LT(r.slot_token[s - 1], r.slot_token[s]) << "expert " << e << " slot " << s;
    }
  }
  EXPECT_NO_THROW(r.validate());
}

// --- router logits and the shared gate -------------------------------------------------------------

TEST(RoutingLogits, MatchesPlainLoop) {
  for (const DType x_dtype : {DType::bf16, DType::f16, DType::f32}) {
    const std::uint64_t seed = 11 + static_cast<std::uint64_t>(x_dtype);
    SCOPED_TRACE(seed_trace(seed));
    const std::int64_t num_tokens = 37, hidden = 70;
    const int num_experts = 9;
    const Matrix x = random_normal_matrix(x_dtype, num_tokens, hidden, seed);
    const Matrix w = random_normal_matrix(DType::bf16, num_experts, hidden, seed + 100, 0.1f);
    const std::vector<float> logits = router_logits(x, w);
    const std::vector<float> logits_bf16 = router_logits(x, w, DType::bf16);
    ASSERT_EQ(logits.size(), static_cast<std::size_t>(num_tokens * num_experts));
    for (std::int64_t t = 0; t < num_tokens; ++t) {
      for (int e = 0; e < num_experts; ++e) {
        double acc = 0.0;
        for (std::int64_t h = 0; h < hidden; ++h) acc += static_cast<double>(x.get(t, h)) * w.get(e, h);
        const std::size_t at = static_cast<std::size_t>(t * num_experts + e);
        EXPECT_EQ(logits[at], static_cast<float>(acc)) << "t " << t << " e " << e;
        EXPECT_EQ(logits_bf16[at], round_to(DType::bf16, static_cast<float>(acc))) << "t " << t << " e " << e;
      }
    }
  }
}

TEST(RoutingLogits, EmptyAndBadShapes) {
  EXPECT_TRUE(router_logits(Matrix(DType::bf16, 0, 8), Matrix(DType::bf16, 4, 8)).empty());
  expect_error([] { router_logits(Matrix(DType::bf16, 2, 8), Matrix(DType::bf16, 4, 7)); }, "router_weight is [4, 7]");
  expect_error([] { router_logits(Matrix(DType::bf16, 2, 8), Matrix(DType::bf16, 0, 8)); }, "E >= 1");
  expect_error([] { router_logits(Matrix(DType::bf16, 2, 0), Matrix(DType::bf16, 4, 0)); }, "H >= 1");
}

TEST(RoutingSharedGate, MatchesPlainLoopAndChecksShapes) {
  const std::uint64_t seed = 21;
  SCOPED_TRACE(seed_trace(seed));
  const std::int64_t num_tokens = 19, hidden = 48;
  const Matrix x = random_normal_matrix(DType::bf16, num_tokens, hidden, seed);
  const Matrix w = random_normal_matrix(DType::bf16, 1, hidden, seed + 1, 0.2f);
  const std::vector<float> gate = shared_expert_gate(x, w);
  const std::vector<float> gate_bf16 = shared_expert_gate(x, w, DType::bf16);
  ASSERT_EQ(gate.size(), static_cast<std::size_t>(num_tokens));
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    double acc = 0.0;
    for (std::int64_t h = 0; h < hidden; ++h) acc += static_cast<double>(x.get(t, h)) * w.get(0, h);
    const float z = static_cast<float>(acc);
    EXPECT_EQ(gate[t], 1.0f / (1.0f + std::exp(-z))) << "t " << t;
    const float z_bf16 = round_to(DType::bf16, z);
    EXPECT_EQ(gate_bf16[t], 1.0f / (1.0f + std::exp(-z_bf16))) << "t " << t;
    EXPECT_GT(gate[t], 0.0f);
    EXPECT_LT(gate[t], 1.0f);
  }
  expect_error([&] { shared_expert_gate(x, Matrix(DType::bf16, 2, hidden)); }, "must be [1, H]");
  expect_error([&] { shared_expert_gate(x, Matrix(DType::bf16, 1, hidden + 1)); }, "must be [1, H]");
}

// --- softmax and top-k -----------------------------------------------------------------------------

TEST(RoutingTopK, HandWorkedWithAndWithoutRenormalisation) {
  // Token 0: logits ln(1..4) give probabilities 0.1, 0.2, 0.3, 0.4. Token 1: logits 0 except 2 at
  // expert 1: p1 = e^2 / (e^2 + 3), the others 1 / (e^2 + 3).
  const std::vector<float> logits = {std::log(1.0f), std::log(2.0f), std::log(3.0f), std::log(4.0f),
                                     0.0f,           2.0f,           0.0f,           0.0f};
  const double e2 = std::exp(2.0), z = e2 + 3.0;

  const Routing plain = route(logits, 2, make_config(4, 2));
  EXPECT_EQ(plain.topk_expert, (std::vector<std::int32_t>{3, 2, 1, 0}));
  EXPECT_NEAR(plain.topk_weight[0], 0.4, 1e-6);
  EXPECT_NEAR(plain.topk_weight[1], 0.3, 1e-6);
  EXPECT_NEAR(plain.topk_weight[2], e2 / z, 1e-6);
  EXPECT_NEAR(plain.topk_weight[3], 1.0 / z, 1e-6);  // experts 0, 2, 3 tie: the lowest id wins

  const Routing renorm = route(logits, 2, make_config(4, 2, true));
  EXPECT_EQ(renorm.topk_expert, plain.topk_expert);
  EXPECT_NEAR(renorm.topk_weight[0], 4.0 / 7.0, 1e-6);
  EXPECT_NEAR(renorm.topk_weight[1], 3.0 / 7.0, 1e-6);
  EXPECT_NEAR(renorm.topk_weight[2], e2 / (e2 + 1.0), 1e-6);
  EXPECT_NEAR(renorm.topk_weight[3], 1.0 / (e2 + 1.0), 1e-6);

  // Lists: expert 0 <- t1, expert 1 <- t1, expert 2 <- t0, expert 3 <- t0.
  EXPECT_EQ(plain.expert_offsets, (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(plain.slot_token, (std::vector<std::int32_t>{1, 1, 0, 0}));
  EXPECT_EQ(plain.token_slot, (std::vector<std::int32_t>{3, 2, 1, 0}));
  expect_lists_consistent(plain);
  expect_lists_consistent(renorm);

  // top_k == E with renormalisation: the weights are the full softmax again.
  const Routing all = route(logits, 2, make_config(4, 4, true));
  EXPECT_EQ(all.topk_expert, (std::vector<std::int32_t>{3, 2, 1, 0, 1, 0, 2, 3}));
  EXPECT_NEAR(all.topk_weight[3], 0.1, 1e-6);
}

TEST(RoutingTopK, TiesGoToTheLowerExpertId) {
  const std::vector<float> logits = {
      0.0f, 0.0f, 0.0f, 0.0f, 0.0f,   // all equal
      1.0f, 3.0f, 3.0f, 3.0f, -1.0f,  // three-way tie for rank 0
      5.0f, 2.0f, 4.0f, 2.0f, 4.0f,   // ties at rank 1 and rank 2
  };
  const Routing r = route(logits, 3, make_config(5, 3));
  EXPECT_EQ(r.topk_expert, (std::vector<std::int32_t>{0, 1, 2, 1, 2, 3, 0, 2, 4}));
  EXPECT_FLOAT_EQ(r.topk_weight[0], 0.2f);
  EXPECT_EQ(r.topk_weight[0], r.topk_weight[2]);
  EXPECT_EQ(r.topk_weight[3], r.topk_weight[5]);
  EXPECT_EQ(r.topk_weight[7], r.topk_weight[8]);
  expect_lists_consistent(r);
}

TEST(RoutingTopK, MatchesSortBasedReferenceOnRandomLogits) {
  for (const bool renormalize : {false, true}) {
    const std::uint64_t seed = renormalize ? 32 : 31;
    SCOPED_TRACE(seed_trace(seed));
    const std::int64_t num_tokens = 257;
    const int num_experts = 60, top_k = 4;  // Qwen1.5-MoE's E and top_k
    const std::vector<float> logits = random_logits(num_tokens, num_experts, seed);
    const Routing r = route(logits, num_tokens, make_config(num_experts, top_k, renormalize));
    expect_lists_consistent(r);
    for (std::int64_t t = 0; t < num_tokens; ++t) {
      const std::vector<double> p = softmax_f64(logits.data() + t * num_experts, num_experts);
      std::vector<int> order(static_cast<std::size_t>(num_experts));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      double top_sum = 0.0;
      for (int j = 0; j < top_k; ++j) top_sum += p[order[j]];
      for (int j = 0; j < top_k; ++j) {
        const std::size_t at = static_cast<std::size_t>(t * top_k + j);
        ASSERT_EQ(r.topk_expert[at], order[j]) << "t " << t << " rank " << j;
        const double expected = renormalize ? p[order[j]] / top_sum : p[order[j]];
        EXPECT_NEAR(r.topk_weight[at], expected, 1e-6 * std::max(1.0, expected)) << "t " << t << " rank " << j;
      }
    }
  }
}

// --- list construction -----------------------------------------------------------------------------

TEST(RoutingLists, EmptyBatch) {
  const Routing r = route({}, 0, make_config(8, 2));
  EXPECT_EQ(r.num_slots(), 0);
  EXPECT_EQ(r.expert_offsets, std::vector<std::int32_t>(9, 0));
  EXPECT_TRUE(r.topk_expert.empty() && r.topk_weight.empty() && r.token_slot.empty() && r.slot_weight.empty());
  EXPECT_NO_THROW(r.validate());
  const Routing c = route({}, 0, make_capacity_config(8, 2.0f, 4));
  EXPECT_EQ(c.expert_offsets, std::vector<std::int32_t>(9, 0));
  const Matrix y = combine(Matrix(DType::bf16, 0, 16), r, nullptr, DType::bf16);
  EXPECT_EQ(y.rows(), 0);
  EXPECT_EQ(y.cols(), 16);
}

TEST(RoutingLists, SingleToken) {
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f, 1.0f, 0.0f, 0.0f};
  const Routing r = route(logits, 1, make_config(6, 2, true));
  EXPECT_EQ(r.topk_expert, (std::vector<std::int32_t>{2, 3}));
  EXPECT_EQ(r.expert_offsets, (std::vector<std::int32_t>{0, 0, 0, 1, 2, 2, 2}));
  EXPECT_EQ(r.slot_token, (std::vector<std::int32_t>{0, 0}));
  EXPECT_EQ(r.token_slot, (std::vector<std::int32_t>{0, 1}));
  EXPECT_NEAR(r.topk_weight[0] + r.topk_weight[1], 1.0f, 1e-6f);
  expect_lists_consistent(r);
  // Decode with capacity: T = 1 gives capacity = min_capacity, nothing is dropped.
  const Routing c = route(logits, 1, make_capacity_config(6, 2.0f, 4));
  EXPECT_EQ(c.topk_expert, (std::vector<std::int32_t>{2, 3}));
}

TEST(RoutingLists, OneHotExpertLeavesTheOthersEmpty) {
  const std::uint64_t seed = 41;
  SCOPED_TRACE(seed_trace(seed));
  const std::int64_t num_tokens = 100;
  const int num_experts = 64, top_k = 2;
  std::vector<float> logits = random_logits(num_tokens, num_experts, seed, 0.1f);
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    logits[t * num_experts + 0] = 30.0f;  // every token's first choice
    logits[t * num_experts + 5] = 20.0f;  // and second
  }
  const Routing r = route(logits, num_tokens, make_config(num_experts, top_k));
  expect_lists_consistent(r);
  for (int e = 0; e < num_experts; ++e) {
    EXPECT_EQ(r.expert_size(e), e == 0 || e == 5 ? num_tokens : 0) << "expert " << e;
  }
  for (std::int32_t s = 0; s < num_tokens; ++s) EXPECT_EQ(r.slot_token[s], s);

  // The extreme: top-1 routing with every token on expert 0 (explicit choices).
  std::vector<std::int32_t> choices(static_cast<std::size_t>(num_tokens), 0);
  std::vector<float> weights(static_cast<std::size_t>(num_tokens), 1.0f);
  const Routing hot = routing_from_choices(num_tokens, num_experts, 1, choices, weights);
  expect_lists_consistent(hot);
  std::vector<std::int32_t> expected_offsets(static_cast<std::size_t>(num_experts) + 1, num_tokens);
  expected_offsets[0] = 0;
  EXPECT_EQ(hot.expert_offsets, expected_offsets);
}

TEST(RoutingLists, ValidateRejectsCorruption) {
  const std::vector<float> logits = random_logits(12, 4, 51);
  const Routing good = route(logits, 12, make_config(4, 2));
  ASSERT_NO_THROW(good.validate());
  ASSERT_GE(good.expert_size(0), 2);

  Routing r = good;
  std::swap(r.slot_token[0], r.slot_token[1]);
  expect_error([&] { r.validate(); }, "ascending token order");
  r = good;
  r.expert_offsets[1] -= 1;
  expect_error([&] { r.validate(); }, "Routing:");
  r = good;
  r.expert_offsets[4] += 1;
  expect_error([&] { r.validate(); }, "expert_offsets[E]");
  r = good;
  r.token_slot[0] = -1;
  expect_error([&] { r.validate(); }, "token 0 rank 0");
  r = good;
  r.topk_weight[0] += 0.5f;
  expect_error([&] { r.validate(); }, "points at it");
  r = good;
  r.slot_token.pop_back();
  expect_error([&] { r.validate(); }, "slot_weight holds");
  r = good;
  r.topk_expert[3] = 4;
  expect_error([&] { r.validate(); }, "outside [0, E = 4)");
}

// --- OpenMoE capacity ------------------------------------------------------------------------------

TEST(RoutingCapacity, CapacityFormula) {
  // max(even_up(floor(2 * factor * T / E)), min_capacity)
  EXPECT_EQ(expert_capacity(4, make_capacity_config(4, 1.0f, 1)), 2);      // 2
  EXPECT_EQ(expert_capacity(5, make_capacity_config(4, 1.0f, 1)), 2);      // floor(2.5) = 2
  EXPECT_EQ(expert_capacity(6, make_capacity_config(4, 1.0f, 1)), 4);      // 3 -> even 4
  EXPECT_EQ(expert_capacity(1, make_capacity_config(32, 2.0f, 4)), 4);     // 0 -> min 4 (decode)
  EXPECT_EQ(expert_capacity(0, make_capacity_config(32, 2.0f, 4)), 4);
  EXPECT_EQ(expert_capacity(100, make_capacity_config(32, 2.0f, 4)), 12);  // floor(12.5)
  EXPECT_EQ(expert_capacity(104, make_capacity_config(32, 2.0f, 4)), 14);  // 13 -> 14
  EXPECT_EQ(expert_capacity(10, make_capacity_config(4, 1.25f, 1)), 6);    // floor(6.25)
  EXPECT_EQ(expert_capacity(4096, make_capacity_config(32, 2.0f, 4)), 512);
}

TEST(RoutingCapacity, HandWorkedDropping) {
  // E = 4, T = 4, factor 1, min 1: capacity = 2. Choices (rank 0, rank 1):
  //   t0: (0, 1)  t1: (0, 1)  t2: (0, 2)  t3: (1, 0)
  // Expert 0 queue: rank-0 t0 (pos 0), t1 (1), t2 (2: drop); then rank-1 t3 (3: drop).
  // Expert 1 queue: rank-0 t3 (0); then rank-1 t0 (1), t1 (2: drop). Expert 2: rank-1 t2 (0).
  const std::vector<float> logits = {
      3.0f, 2.0f, 0.0f, 0.0f,  // t0
      3.0f, 1.0f, 0.0f, 0.0f,  // t1
      2.0f, 0.0f, 1.0f, 0.0f,  // t2
      1.0f, 4.0f, 0.0f, 0.0f,  // t3
  };
  const RouterConfig config = make_capacity_config(4, 1.0f, 1);
  ASSERT_EQ(expert_capacity(4, config), 2);
  const Routing r = route(logits, 4, config);
  EXPECT_EQ(r.topk_expert, (std::vector<std::int32_t>{0, 1, 0, -1, -1, 2, 1, -1}));
  EXPECT_EQ(r.expert_offsets, (std::vector<std::int32_t>{0, 2, 4, 5, 5}));
  EXPECT_EQ(r.slot_token, (std::vector<std::int32_t>{0, 1, 0, 3, 2}));
  EXPECT_EQ(r.token_slot, (std::vector<std::int32_t>{0, 2, 1, -1, -1, 4, 3, -1}));
  // Weights are the raw softmax probabilities (no renormalisation), zero where dropped.
  const double p_t0_0 = softmax_f64(logits.data(), 4)[0], p_t0_1 = softmax_f64(logits.data(), 4)[1];
  const double p_t2_2 = softmax_f64(logits.data() + 8, 4)[2];
  EXPECT_NEAR(r.topk_weight[0], p_t0_0, 1e-6);
  EXPECT_NEAR(r.topk_weight[1], p_t0_1, 1e-6);
  EXPECT_EQ(r.topk_weight[3], 0.0f);
  EXPECT_EQ(r.topk_weight[4], 0.0f);
  EXPECT_NEAR(r.topk_weight[5], p_t2_2, 1e-6);
  expect_lists_consistent(r);

  // The same logits without the capacity limit keep everything, with the same weights.
  const Routing free = route(logits, 4, make_config(4, 2));
  EXPECT_EQ(free.topk_expert, (std::vector<std::int32_t>{0, 1, 0, 1, 0, 2, 1, 0}));
  EXPECT_EQ(free.topk_weight[5], r.topk_weight[5]);
}

// ColossalAI Top2Router transcribed literally: one-hot masks, rank = cumsum over tokens - 1, rank-1
// positions offset by the column sums of the rank-0 mask, keep where rank < capacity.
std::vector<std::int32_t> colossal_top2_keep(const std::vector<std::int32_t>& top1, const std::vector<std::int32_t>& top2,
                                             int num_experts, std::int64_t capacity) {
  const std::size_t num_tokens = top1.size();
  std::vector<std::int64_t> mask1(num_tokens * num_experts, 0), mask2(num_tokens * num_experts, 0);  // [T, E]
  for (std::size_t t = 0; t < num_tokens; ++t) {
    mask1[t * num_experts + top1[t]] = 1;
    mask2[t * num_experts + top2[t]] = 1;
  }
  std::vector<std::int64_t> rank1(mask1.size()), rank2(mask2.size());  // [T, E]
  for (int e = 0; e < num_experts; ++e) {
    std::int64_t c1 = 0, c2 = 0;
    for (std::size_t t = 0; t < num_tokens; ++t) {
      c1 += mask1[t * num_experts + e];
      c2 += mask2[t * num_experts + e];
      rank1[t * num_experts + e] = c1 - 1;
      rank2[t * num_experts + e] = c2 - 1;
    }
    for (std::size_t t = 0; t < num_tokens; ++t) rank2[t * num_experts + e] += c1;  // + sum(mask1, dim=0)
  }
  std::vector<std::int32_t> keep(num_tokens * 2);  // [T, 2] 1 where kept
  for (std::size_t t = 0; t < num_tokens; ++t) {
    keep[2 * t] = rank1[t * num_experts + top1[t]] < capacity;
    keep[2 * t + 1] = rank2[t * num_experts + top2[t]] < capacity;
  }
  return keep;
}

TEST(RoutingCapacity, MatchesColossalFormulationAndInvariants) {
  for (const std::int64_t num_tokens : {7, 64, 300, 1000}) {
    const std::uint64_t seed = 60 + static_cast<std::uint64_t>(num_tokens);
    SCOPED_TRACE(seed_trace(seed));
    const int num_experts = 8;
    std::vector<float> logits = random_logits(num_tokens, num_experts, seed);
    for (std::int64_t t = 0; t < num_tokens; ++t) logits[t * num_experts + 1] += 2.5f;  // a hot expert
    const RouterConfig config = make_capacity_config(num_experts, 0.75f, 4);
    const std::int64_t capacity = expert_capacity(num_tokens, config);
    const Routing r = route(logits, num_tokens, config);
    const Routing free = route(logits, num_tokens, make_config(num_experts, 2));
    expect_lists_consistent(r);

    std::vector<std::int32_t> top1(static_cast<std::size_t>(num_tokens)), top2(top1.size());
    for (std::int64_t t = 0; t < num_tokens; ++t) {
      top1[t] = free.topk_expert[2 * t];
      top2[t] = free.topk_expert[2 * t + 1];
    }
    const std::vector<std::int32_t> keep = colossal_top2_keep(top1, top2, num_experts, capacity);
    std::int64_t num_dropped = 0;
    for (std::size_t at = 0; at < keep.size(); ++at) {
      const std::int32_t expected = keep[at] ? free.topk_expert[at] : -1;
      ASSERT_EQ(r.topk_expert[at], expected) << "choice " << at;
      EXPECT_EQ(r.topk_weight[at], keep[at] ? free.topk_weight[at] : 0.0f) << "choice " << at;
      num_dropped += !keep[at];
    }
    if (num_tokens >= 64) {
      EXPECT_GT(num_dropped, 0) << "the test should exercise dropping";
    }

    // No expert over capacity; rank-0 priority: an expert that kept any rank-1 choice dropped no rank-0 one;
    // inside one rank the kept tokens of an expert are the earliest ones.
    for (int e = 0; e < num_experts; ++e) {
      EXPECT_LE(r.expert_size(e), capacity) << "expert " << e;
      bool kept_rank1 = false, dropped_rank0 = false;
      for (int j = 0; j < 2; ++j) {
        bool seen_drop = false;
        for (std::int64_t t = 0; t < num_tokens; ++t) {
          const std::size_t at = static_cast<std::size_t>(2 * t + j);
          if (free.topk_expert[at] != e) continue;
          const bool kept = r.topk_expert[at] == e;
          EXPECT_FALSE(kept && seen_drop) << "expert " << e << " rank " << j << " token " << t;
          seen_drop |= !kept;
          if (j == 0) dropped_rank0 |= !kept;
          if (j == 1) kept_rank1 |= kept;
        }
      }
      EXPECT_FALSE(kept_rank1 && dropped_rank0) << "expert " << e;
    }
  }
}

// --- explicit choices and configuration errors ----------------------------------------------------

TEST(RoutingChoices, BuildsListsAndRejectsBadChoices) {
  const std::vector<std::int32_t> experts = {2, 0, 1, 2, -1, 1};  // [T = 3, top_k = 2]
  const std::vector<float> weights = {0.5f, 0.25f, 0.75f, 0.125f, 0.0f, 1.0f};
  const Routing r = routing_from_choices(3, 3, 2, experts, weights);
  EXPECT_EQ(r.expert_offsets, (std::vector<std::int32_t>{0, 1, 3, 5}));
  EXPECT_EQ(r.slot_token, (std::vector<std::int32_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(r.slot_weight, (std::vector<float>{0.25f, 0.75f, 1.0f, 0.5f, 0.125f}));
  EXPECT_EQ(r.token_slot, (std::vector<std::int32_t>{3, 0, 1, 4, -1, 2}));
  expect_lists_consistent(r);

  auto with = [&](std::size_t at, std::int32_t e) {
    std::vector<std::int32_t> bad = experts;
    bad[at] = e;
    return bad;
  };
  expect_error([&] { routing_from_choices(3, 3, 2, with(2, 3), weights); }, "token 1 rank 0 chooses expert 3");
  expect_error([&] { routing_from_choices(3, 3, 2, with(2, -2), weights); }, "chooses expert -2");
  expect_error([&] { routing_from_choices(3, 3, 2, with(3, 1), weights); }, "token 1 chooses expert 1 more than once");
  expect_error([&] { routing_from_choices(3, 3, 2, with(0, -1), weights); }, "give dropped choices weight 0");
  expect_error([&] { routing_from_choices(4, 3, 2, experts, weights); }, "must hold T * top_k");
  expect_error([&] { routing_from_choices(3, 3, 2, experts, std::vector<float>(5, 0.0f)); }, "must hold T * top_k");
  expect_error([&] { routing_from_choices(3, 3, 4, experts, weights); }, "top_k is 4");
  expect_error([&] { routing_from_choices(-1, 3, 2, experts, weights); }, "num_tokens is -1");
  std::vector<float> nan_weights = weights;
  nan_weights[1] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { routing_from_choices(3, 3, 2, experts, nan_weights); }, "non-finite weight");
}

TEST(RoutingConfig, ValidationAndBadLogits) {
  expect_error([] { make_config(0, 1).validate(); }, "num_experts is 0");
  expect_error([] { make_config(4, 0).validate(); }, "top_k is 0");
  expect_error([] { make_config(4, 5).validate(); }, "top_k is 5");
  RouterConfig capacity = make_capacity_config(4, 2.0f, 4);
  EXPECT_NO_THROW(capacity.validate());
  capacity.top_k = 1;
  expect_error([&] { capacity.validate(); }, "needs top_k == 2");
  expect_error([] { make_capacity_config(4, 0.0f, 4).validate(); }, "capacity_factor");
  expect_error([] { make_capacity_config(4, std::nanf(""), 4).validate(); }, "capacity_factor");
  expect_error([] { make_capacity_config(4, 2.0f, 0).validate(); }, "min_capacity");

  std::vector<float> logits(12, 0.0f);  // [T = 3, E = 4]
  expect_error([&] { route(logits, 2, make_config(4, 2)); }, "logits hold 12 values");
  expect_error([&] { route(logits, 3, make_config(0, 2)); }, "num_experts is 0");
  logits[6] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { route(logits, 3, make_config(4, 2)); }, "[token 1, expert 2]");
  logits[6] = 0.0f;
  logits[11] = -std::numeric_limits<float>::infinity();
  expect_error([&] { route(logits, 3, make_config(4, 2)); }, "[token 2, expert 3] is -inf");
}

// --- combine ---------------------------------------------------------------------------------------

// The definition in routing.h, written as plainly as possible.
Matrix plain_combine(const Matrix& slot_rows, const Routing& r, const Matrix* shared, DType out_dtype) {
  Matrix out(out_dtype, r.num_tokens, slot_rows.cols());
  for (std::int64_t t = 0; t < r.num_tokens; ++t) {
    for (std::int64_t h = 0; h < slot_rows.cols(); ++h) {
      float acc = 0.0f;
      for (int j = 0; j < r.top_k; ++j) {
        const std::int32_t s = r.token_slot[t * r.top_k + j];
        if (s >= 0) acc += slot_rows.get(s, h);
      }
      if (shared != nullptr) acc += shared->get(t, h);
      out.set(t, h, acc);
    }
  }
  return out;
}

void expect_bitwise_equal(const Matrix& a, const Matrix& b) {
  ASSERT_EQ(a.dtype(), b.dtype());
  ASSERT_EQ(a.rows(), b.rows());
  ASSERT_EQ(a.cols(), b.cols());
  ASSERT_EQ(a.bytes(), b.bytes());
  if (a.bytes() == 0) return;
  const auto* pa = static_cast<const unsigned char*>(a.data());
  const auto* pb = static_cast<const unsigned char*>(b.data());
  const auto mismatch = std::mismatch(pa, pa + a.bytes(), pb);
  EXPECT_EQ(mismatch.first, pa + a.bytes()) << "first mismatching byte " << (mismatch.first - pa);
}

TEST(RoutingCombine, MatchesPlainLoopBitwise) {
  for (const DType out_dtype : {DType::bf16, DType::f16, DType::f32}) {
    const std::uint64_t seed = 70 + static_cast<std::uint64_t>(out_dtype);
    SCOPED_TRACE(seed_trace(seed));
    const std::int64_t num_tokens = 97, hidden = 40;
    const int num_experts = 16, top_k = 4;
    const Routing r = route(random_logits(num_tokens, num_experts, seed), num_tokens, make_config(num_experts, top_k));
    const Matrix slot_rows = random_normal_matrix(DType::bf16, r.num_slots(), hidden, seed + 1);
    const Matrix shared = random_normal_matrix(DType::f16, num_tokens, hidden, seed + 2);
    expect_bitwise_equal(combine(slot_rows, r, nullptr, out_dtype), plain_combine(slot_rows, r, nullptr, out_dtype));
    expect_bitwise_equal(combine(slot_rows, r, &shared, out_dtype), plain_combine(slot_rows, r, &shared, out_dtype));
  }
}

TEST(RoutingCombine, SameBitsForAnyThreadCount) {
  const std::uint64_t seed = 80;
  SCOPED_TRACE(seed_trace(seed));
  const std::int64_t num_tokens = 3000, hidden = 64;
  const Routing r = route(random_logits(num_tokens, 8, seed), num_tokens, make_config(8, 2));
  const Matrix slot_rows = random_normal_matrix(DType::f32, r.num_slots(), hidden, seed + 1);
  const char* previous = std::getenv("SAMOYEDS_NUM_THREADS");
  const std::string saved = previous ? previous : "";
  setenv("SAMOYEDS_NUM_THREADS", "4", 1);  // several threads even on a one-core runner
  const Matrix many = combine(slot_rows, r, nullptr, DType::bf16);
  setenv("SAMOYEDS_NUM_THREADS", "1", 1);
  const Matrix one = combine(slot_rows, r, nullptr, DType::bf16);
  if (previous) setenv("SAMOYEDS_NUM_THREADS", saved.c_str(), 1); else unsetenv("SAMOYEDS_NUM_THREADS");
  expect_bitwise_equal(many, one);
}

TEST(RoutingCombine, DroppedTokensGetOnlyTheSharedPart) {
  // Capacity 2 per expert with every token on experts 0 and 1: tokens 2.. lose both choices.
  const std::int64_t num_tokens = 6, hidden = 8;
  std::vector<float> logits(static_cast<std::size_t>(num_tokens * 4), 0.0f);
  for (std::int64_t t = 0; t < num_tokens; ++t) {
    logits[t * 4 + 0] = 5.0f;
    logits[t * 4 + 1] = 4.0f;
  }
  const Routing r = route(logits, num_tokens, make_capacity_config(4, 0.5f, 2));
  ASSERT_EQ(r.num_slots(), 4);  // t0, t1 on experts 0 and 1
  const Matrix slot_rows = random_normal_matrix(DType::bf16, r.num_slots(), hidden, 90);
  const Matrix shared = random_normal_matrix(DType::bf16, num_tokens, hidden, 91);
  const Matrix y = combine(slot_rows, r, nullptr, DType::bf16);
  const Matrix ys = combine(slot_rows, r, &shared, DType::bf16);
  for (std::int64_t t = 2; t < num_tokens; ++t) {
    for (std::int64_t h = 0; h < hidden; ++h) {
      EXPECT_EQ(y.get(t, h), 0.0f);
      EXPECT_FALSE(std::signbit(y.get(t, h)));
      EXPECT_EQ(ys.get(t, h), shared.get(t, h));
    }
  }
  expect_bitwise_equal(ys, plain_combine(slot_rows, r, &shared, DType::bf16));
}

TEST(RoutingCombine, RejectsBadShapes) {
  const Routing r = route(random_logits(5, 4, 95), 5, make_config(4, 2));
  const Matrix slot_rows(DType::bf16, r.num_slots(), 8);
  expect_error([&] { combine(Matrix(DType::bf16, r.num_slots() - 1, 8), r, nullptr, DType::bf16); },
               "one per slot");
  const Matrix shared_bad_rows(DType::bf16, 4, 8);
  expect_error([&] { combine(slot_rows, r, &shared_bad_rows, DType::bf16); }, "must be [T, H] = [5, 8]");
  const Matrix shared_bad_cols(DType::bf16, 5, 9);
  expect_error([&] { combine(slot_rows, r, &shared_bad_cols, DType::bf16); }, "must be [T, H] = [5, 8]");
  Routing broken = r;
  broken.token_slot[0] = broken.token_slot[1];
  expect_error([&] { combine(slot_rows, broken, nullptr, DType::bf16); }, "Routing:");
}

}  // namespace
}  // namespace samoyeds
