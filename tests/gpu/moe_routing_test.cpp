// SPDX-License-Identifier: Apache-2.0
// GPU routing (src/kernels/moe_routing.h) against the CPU routing (samoyeds/routing.h, docs/routing.md).
// Logits are made on the host with fixed seeds and uploaded, so both sides see the same fp32 values.
//  - Choices: exactly the CPU route()'s. The "spread" logits put any two experts of a token at least
//    0.05 apart (probabilities differ by >= 5%), far beyond the few-ulp difference of the two softmaxes;
//    the normal-logits test instead skips and counts tokens with a near tie (relative gap < 1e-5).
//  - Weights: within 2e-6 relative (E <= 64; 1e-5 beyond, where the CPU's serial sum of E terms rounds more).
//  - Lists: bitwise routing_from_choices() of the GPU's own choices (every field), and Routing::validate().
//  - Capacity: bitwise a literal transcription of ColossalAI's queue (docs/routing.md §3) applied to the
//    GPU's choices, and the CPU route() with capacity (lists exact, weights within tolerance).
//  - Shared gate: within 1e-6 of 1 / (1 + exp(-z)).  Combine: bitwise samoyeds::combine(); slot_scale
//    variant bitwise a plain loop on small integers (exact tier).
// Outputs are poisoned before every launch (floats NaN, ints 0x7B7B7B7B, never a valid id or -1).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/moe_routing.h"
#include "samoyeds/routing.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;
using testing::random_int_matrix;
using testing::random_normal_matrix;
using testing::seed_trace;

constexpr std::int64_t kTokenCounts[] = {0, 1, 3, 64, 1000, 5000};

// Finished before returning, as DeviceBuffer::poison (the tests' streams are non-blocking).
void poison_ints(const DeviceBuffer& b) {
  if (b.get()) {
    ASSERT_EQ(cudaMemset(b.get(), 0x7B, b.bytes()), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
}

template <class T>
DeviceBuffer buffer_of(std::int64_t count) {
  return DeviceBuffer(static_cast<std::size_t>(count) * sizeof(T));
}

std::uint32_t bits(float v) { return std::bit_cast<std::uint32_t>(v); }

// Index of the first element where a and b differ bitwise, or -1.
template <class T>
std::int64_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<std::int64_t>(i);
  }
  return -1;
}

#define EXPECT_SAME_BITS(a, b, what)                                                             \
  do {                                                                                           \
    const std::int64_t at_ = first_difference((a), (b));                                         \
    EXPECT_EQ(at_, -1) << what << " differ (sizes " << (a).size() << ", " << (b).size() << ")"; \
  } while (0)

struct Family {
  const char* name;
  int E, top_k;
  bool renormalize;
  bool capacity_limited;
  float capacity_factor;
  bool shared_gate;
  bool skewed;  // every token's top logit on expert 3, its second on expert 5 or 9: most experts empty
};

RouterConfig cpu_config(const Family& f) {
  RouterConfig c;
  c.num_experts = f.E;
  c.top_k = f.top_k;
  c.renormalize = f.renormalize;
  c.capacity_limited = f.capacity_limited;
  c.capacity_factor = f.capacity_factor;
  c.min_capacity = 4;
  return c;
}

kernels::GpuRouting gpu_config(const Family& f, std::int64_t T) {
  kernels::GpuRouting r;
  r.num_experts = f.E;
  r.top_k = f.top_k;
  r.renormalize = f.renormalize;
  r.capacity_limited = f.capacity_limited;
  r.capacity = f.capacity_limited ? expert_capacity(T, cpu_config(f)) : 0;
  r.shared_gate = f.shared_gate;
  return r;
}

double weight_tolerance(int E) { return E <= 64 ? 2e-6 : 1e-5; }

// Router logits [T, E] and, with a shared gate, the gate logits [T]. Per token: a random permutation
// of 0.07 * rank plus noise in [0, 0.02) plus a random offset (so max-subtraction matters): any two
// experts differ by >= 0.05 in logit, no near ties.
struct Logits {
  std::vector<float> router;  // [T, E]
  std::vector<float> gate;    // [T] or empty
  std::vector<float> device_layout(int E) const {  // [T, E (+1)]
    if (gate.empty()) return router;
    const std::size_t T = gate.size();
    std::vector<float> out(T * (E + 1));
    for (std::size_t t = 0; t < T; ++t) {
      std::copy_n(router.begin() + t * E, E, out.begin() + t * (E + 1));
      out[t * (E + 1) + E] = gate[t];
    }
    return out;
  }
};

Logits spread_logits(std::int64_t T, int E, bool shared_gate, bool skewed, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> noise(0.0f, 0.02f), offset(-3.0f, 3.0f), gate(-6.0f, 6.0f);
  std::bernoulli_distribution coin(0.5);
  Logits l;
  l.router.resize(static_cast<std::size_t>(T * E));
  std::vector<int> perm(static_cast<std::size_t>(E));
  for (std::int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const float base = offset(rng);
    float* row = l.router.data() + t * E;
    for (int e = 0; e < E; ++e) row[e] = base + 0.07f * static_cast<float>(perm[static_cast<std::size_t>(e)]) + noise(rng);
    if (skewed) {
      const float top = base + 0.07f * static_cast<float>(E);
      row[3] = top + 5.0f;
      row[coin(rng) ? 5 : 9] = top + 3.0f;
    }
  }
  if (shared_gate) {
    l.gate.resize(static_cast<std::size_t>(T));
    for (auto& g : l.gate) g = gate(rng);
  }
  return l;
}

// Everything the two GPU calls produce, copied back. pre_* are softmax_topk's outputs (before dropping).
struct GpuResult {
  std::vector<std::int32_t> pre_expert, expert, offsets, slot_token, token_slot;
  std::vector<float> pre_weight, weight, shared, slot_weight;
};

// finite_poison: the float outputs start from a finite fill instead of NaN, for checks that an
// output comes out NaN (over NaN poison they could not fail).
void run_gpu(const DeviceBuffer& logits, std::int64_t T, const kernels::GpuRouting& r, GpuResult& out,
             bool finite_poison = false) {
  const std::int64_t n = T * r.top_k;
  DeviceBuffer expert = buffer_of<std::int32_t>(n), weight = buffer_of<float>(n),
               shared = buffer_of<float>(r.shared_gate ? T : 0), offsets = buffer_of<std::int32_t>(r.num_experts + 1),
               slot_token = buffer_of<std::int32_t>(n), slot_weight = buffer_of<float>(n),
               token_slot = buffer_of<std::int32_t>(n);
  const auto poison_floats = [finite_poison](const DeviceBuffer& b) { finite_poison ? b.poison_finite() : b.poison(); };
  poison_ints(expert);
  poison_floats(weight);
  poison_floats(shared);
  kernels::softmax_topk(logits.as<float>(), T, r, expert.as<std::int32_t>(), weight.as<float>(),
                        r.shared_gate ? shared.as<float>() : nullptr, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  out.pre_expert = expert.to_host<std::int32_t>();
  out.pre_weight = weight.to_host<float>();
  out.shared = shared.to_host<float>();
  poison_ints(offsets);
  poison_ints(slot_token);
  poison_floats(slot_weight);
  poison_ints(token_slot);
  kernels::build_expert_lists(expert.as<std::int32_t>(), weight.as<float>(), T, r, offsets.as<std::int32_t>(),
                              slot_token.as<std::int32_t>(), slot_weight.as<float>(), token_slot.as<std::int32_t>(),
                              nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  out.expert = expert.to_host<std::int32_t>();
  out.weight = weight.to_host<float>();
  out.offsets = offsets.to_host<std::int32_t>();
  out.slot_token = slot_token.to_host<std::int32_t>();
  out.slot_weight = slot_weight.to_host<float>();
  out.token_slot = token_slot.to_host<std::int32_t>();
}

// docs/routing.md §3, literally: each expert's queue takes all rank-0 choices in token order, then all
// rank-1 choices; a choice at queue position >= capacity is dropped (dropped ones keep their position).
void drop_over_capacity(std::int64_t T, int E, int top_k, std::int64_t capacity, std::vector<std::int32_t>& expert,
                        std::vector<float>& weight) {
  std::vector<std::int64_t> position(static_cast<std::size_t>(E), 0);
  for (int j = 0; j < top_k; ++j) {
    for (std::int64_t t = 0; t < T; ++t) {
      const std::size_t at = static_cast<std::size_t>(t * top_k + j);
      if (position[static_cast<std::size_t>(expert[at])]++ >= capacity) {
        expert[at] = -1;
        weight[at] = 0.0f;
      }
    }
  }
}

// The GPU lists against routing_from_choices of the GPU's own (post-drop) choices, every field bitwise,
// the unowned tail slots, and validate() on the GPU result.
void expect_lists_match(const GpuResult& g, std::int64_t T, int E, int top_k) {
  const Routing want = routing_from_choices(T, E, top_k, g.expert, g.weight);
  EXPECT_SAME_BITS(g.offsets, want.expert_offsets, "expert_offsets");
  EXPECT_SAME_BITS(g.token_slot, want.token_slot, "token_slot");
  const auto num_slots = static_cast<std::size_t>(want.num_slots());
  ASSERT_GE(g.slot_token.size(), num_slots);
  const std::vector<std::int32_t> slot_token(g.slot_token.begin(), g.slot_token.begin() + num_slots);
  const std::vector<float> slot_weight(g.slot_weight.begin(), g.slot_weight.begin() + num_slots);
  EXPECT_SAME_BITS(slot_token, want.slot_token, "slot_token");
  EXPECT_SAME_BITS(slot_weight, want.slot_weight, "slot_weight");
  for (std::size_t s = num_slots; s < g.slot_token.size(); ++s) {
    EXPECT_EQ(g.slot_token[s], -1) << "unowned slot " << s;
    EXPECT_EQ(bits(g.slot_weight[s]), 0u) << "unowned slot " << s;
  }
  Routing got;
  got.num_tokens = T;
  got.top_k = top_k;
  got.num_experts = E;
  got.topk_expert = g.expert;
  got.topk_weight = g.weight;
  got.expert_offsets = g.offsets;
  got.slot_token = slot_token;
  got.slot_weight = slot_weight;
  got.token_slot = g.token_slot;
  EXPECT_NO_THROW(got.validate());
}

// Choices exactly, weights within tolerance; `skip` marks tokens not compared (near ties).
void expect_choices_match(const std::vector<std::int32_t>& expert, const std::vector<float>& weight,
                          const Routing& cpu, const std::vector<char>& skip) {
  const int k = cpu.top_k;
  const double tol = weight_tolerance(cpu.num_experts);
  int reported = 0;
  for (std::int64_t t = 0; t < cpu.num_tokens; ++t) {
    if (!skip.empty() && skip[static_cast<std::size_t>(t)]) continue;
    for (int j = 0; j < k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * k + j);
      const bool same_expert = expert[at] == cpu.topk_expert[at];
      const double err = std::fabs(static_cast<double>(weight[at]) - cpu.topk_weight[at]);
      const bool close = err <= tol * std::fabs(cpu.topk_weight[at]);  // also catches NaN
      if ((!same_expert || !close) && reported++ < 5) {
        ADD_FAILURE() << "token " << t << " rank " << j << ": GPU expert " << expert[at] << " weight " << weight[at]
                      << ", CPU expert " << cpu.topk_expert[at] << " weight " << cpu.topk_weight[at];
      }
    }
  }
  EXPECT_EQ(reported, 0) << "mismatching (token, rank) choices";
}

class GpuRoutingFamilies : public ::testing::TestWithParam<Family> {};

TEST_P(GpuRoutingFamilies, MatchesCpuRouting) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family f = GetParam();
  for (const std::int64_t T : kTokenCounts) {
    const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(f.E * 131 + f.top_k * 17 + T);
    SCOPED_TRACE(seed_trace(seed) + ", " + f.name + ", T = " + std::to_string(T));
    const Logits logits = spread_logits(T, f.E, f.shared_gate, f.skewed, seed);
    const DeviceBuffer d_logits(logits.device_layout(f.E));
    const kernels::GpuRouting r = gpu_config(f, T);
    GpuResult g;
    run_gpu(d_logits, T, r, g);
    if (::testing::Test::HasFatalFailure()) return;

    // softmax + top-k against route() without capacity.
    RouterConfig uncapped = cpu_config(f);
    uncapped.capacity_limited = false;
    const Routing cpu_uncapped = route(logits.router, T, uncapped);
    expect_choices_match(g.pre_expert, g.pre_weight, cpu_uncapped, {});

    if (f.shared_gate) {
      for (std::int64_t t = 0; t < T; ++t) {
        const float z = logits.gate[static_cast<std::size_t>(t)];
        const float want = 1.0f / (1.0f + std::exp(-z));
        EXPECT_NEAR(g.shared[static_cast<std::size_t>(t)], want, 1e-6) << "shared gate of token " << t << ", z = " << z;
      }
    }

    // Dropping: the GPU's post-drop choices are the literal queue rule applied to its pre-drop choices.
    std::vector<std::int32_t> want_expert = g.pre_expert;
    std::vector<float> want_weight = g.pre_weight;
    if (f.capacity_limited) drop_over_capacity(T, f.E, f.top_k, r.capacity, want_expert, want_weight);
    EXPECT_SAME_BITS(g.expert, want_expert, "topk_expert after dropping");
    EXPECT_SAME_BITS(g.weight, want_weight, "topk_weight after dropping");
    expect_lists_match(g, T, f.E, f.top_k);

    if (f.capacity_limited) {
      const Routing cpu = route(logits.router, T, cpu_config(f));
      expect_choices_match(g.expert, g.weight, cpu, {});
      EXPECT_SAME_BITS(g.offsets, cpu.expert_offsets, "expert_offsets vs route()");
      EXPECT_SAME_BITS(g.token_slot, cpu.token_slot, "token_slot vs route()");
      const std::vector<std::int32_t> slot_token(g.slot_token.begin(), g.slot_token.begin() + cpu.num_slots());
      EXPECT_SAME_BITS(slot_token, cpu.slot_token, "slot_token vs route()");
      const auto dropped = std::count(g.expert.begin(), g.expert.end(), -1);
      // Factor 1 (the average load exactly) or a skewed load must overflow some queue once T >= 64.
      if ((f.capacity_factor <= 1.0f || f.skewed) && T >= 64) EXPECT_GT(dropped, 0) << "no choice was dropped";
      if (T <= 3) EXPECT_EQ(dropped, 0) << "min capacity 4 cannot overflow with <= 3 tokens";
    }
    if (f.skewed && T >= 64) {
      int used = 0;
      for (int e = 0; e < f.E; ++e) used += g.offsets[static_cast<std::size_t>(e + 1)] > g.offsets[static_cast<std::size_t>(e)];
      EXPECT_LE(used, 3 + (f.top_k - 2) * f.E) << "skewed routing should leave most experts empty";
    }
    if (T == 0) EXPECT_EQ(g.offsets, std::vector<std::int32_t>(static_cast<std::size_t>(f.E + 1), 0));

    // Determinism: a second run gives identical bytes.
    GpuResult again;
    run_gpu(d_logits, T, r, again);
    EXPECT_SAME_BITS(again.pre_expert, g.pre_expert, "rerun topk_expert");
    EXPECT_SAME_BITS(again.pre_weight, g.pre_weight, "rerun topk_weight");
    EXPECT_SAME_BITS(again.shared, g.shared, "rerun shared_weight");
    EXPECT_SAME_BITS(again.expert, g.expert, "rerun dropped topk_expert");
    EXPECT_SAME_BITS(again.weight, g.weight, "rerun dropped topk_weight");
    EXPECT_SAME_BITS(again.offsets, g.offsets, "rerun expert_offsets");
    EXPECT_SAME_BITS(again.slot_token, g.slot_token, "rerun slot_token");
    EXPECT_SAME_BITS(again.slot_weight, g.slot_weight, "rerun slot_weight");
    EXPECT_SAME_BITS(again.token_slot, g.token_slot, "rerun token_slot");
  }
}

// route_and_build_lists (one launch at decode sizes, the two calls beyond) against softmax_topk +
// build_expert_lists: every output bit for bit, at 1, 5, 16, 17 and 32 tokens (fused where E <= 64;
// the one-warp lists up to 32 choices, e.g. Mixtral at 16 tokens, and the walks from 17) and 33 and 64
// (the two calls), one token with a NaN logit at 5 tokens.
TEST_P(GpuRoutingFamilies, FusedRoutingEqualsTheTwoCalls) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family f = GetParam();
  for (const std::int64_t T : {1, 5, 16, 17, 32, 33, 64}) {
    const std::uint64_t seed = 1400 + static_cast<std::uint64_t>(f.E * 7 + T);
    SCOPED_TRACE(seed_trace(seed) + ", " + f.name + ", T = " + std::to_string(T));
    const Logits logits = spread_logits(T, f.E, f.shared_gate, f.skewed, seed);
    std::vector<float> host = logits.device_layout(f.E);
    if (T == 5) host[2 * (f.E + (f.shared_gate ? 1 : 0))] = std::nanf("");  // token 2's first logit
    const DeviceBuffer d_logits(host);
    const kernels::GpuRouting r = gpu_config(f, T);
    GpuResult want;
    run_gpu(d_logits, T, r, want, /*finite_poison=*/true);
    if (::testing::Test::HasFatalFailure()) return;

    const std::int64_t n = T * r.top_k;
    DeviceBuffer expert = buffer_of<std::int32_t>(n), weight = buffer_of<float>(n),
                 shared = buffer_of<float>(r.shared_gate ? T : 0), offsets = buffer_of<std::int32_t>(r.num_experts + 1),
                 slot_token = buffer_of<std::int32_t>(n), slot_weight = buffer_of<float>(n),
                 token_slot = buffer_of<std::int32_t>(n);
    for (const DeviceBuffer* b : {&expert, &offsets, &slot_token, &token_slot}) poison_ints(*b);
    // Finite poison: the NaN-weight check below must be able to fail.
    for (const DeviceBuffer* b : {&weight, &shared, &slot_weight}) b->poison_finite();
    kernels::route_and_build_lists(d_logits.as<float>(), T, r, expert.as<std::int32_t>(), weight.as<float>(),
                                   r.shared_gate ? shared.as<float>() : nullptr, offsets.as<std::int32_t>(),
                                   slot_token.as<std::int32_t>(), slot_weight.as<float>(), token_slot.as<std::int32_t>(),
                                   nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_SAME_BITS(expert.to_host<std::int32_t>(), want.expert, "topk_expert");
    EXPECT_SAME_BITS(weight.to_host<float>(), want.weight, "topk_weight");
    EXPECT_SAME_BITS(shared.to_host<float>(), want.shared, "shared_weight");
    EXPECT_SAME_BITS(offsets.to_host<std::int32_t>(), want.offsets, "expert_offsets");
    EXPECT_SAME_BITS(slot_token.to_host<std::int32_t>(), want.slot_token, "slot_token");
    EXPECT_SAME_BITS(slot_weight.to_host<float>(), want.slot_weight, "slot_weight");
    EXPECT_SAME_BITS(token_slot.to_host<std::int32_t>(), want.token_slot, "token_slot");
    if (T == 5) {
      const auto w = weight.to_host<float>();
      EXPECT_TRUE(std::isnan(w[2 * static_cast<std::size_t>(r.top_k)])) << "token 2 has a NaN logit: NaN weights";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, GpuRoutingFamilies,
    ::testing::Values(
        // name, E, top_k, renormalize, capacity_limited, capacity_factor, shared_gate, skewed
        Family{"Mixtral", 8, 2, true, false, 2.0f, false, false},
        Family{"DeepSeek", 64, 6, false, false, 2.0f, false, false},
        Family{"Qwen2Moe", 60, 4, false, false, 2.0f, true, false},
        Family{"OpenMoE", 32, 2, false, true, 2.0f, false, false},
        Family{"OpenMoEFactor1", 32, 2, false, true, 1.0f, false, false},
        Family{"OpenMoERenormFactor1", 32, 2, true, true, 1.0f, false, false},
        Family{"Skewed", 64, 2, false, false, 2.0f, false, true},
        Family{"SkewedOpenMoE", 32, 2, false, true, 2.0f, false, true},
        Family{"OneExpert", 1, 1, false, false, 2.0f, false, false},
        Family{"E33Top3Renorm", 33, 3, true, false, 2.0f, false, false},
        Family{"E160Top6", 160, 6, false, false, 2.0f, false, false},  // DeepSeek-V2 size; 2 units per warp
        Family{"E256Top8", 256, 8, true, false, 2.0f, true, false},
        Family{"E1000Top8", 1000, 8, false, false, 2.0f, false, false}),
    [](const ::testing::TestParamInfo<Family>& info) { return std::string(info.param.name); });

// Normal logits (realistic: near ties possible). Tokens whose CPU probabilities at ranks j and j + 1
// (j < top_k) are within 1e-5 relative may legitimately flip; they are skipped and counted.
TEST(GpuRouting, NormalLogitsMatchExceptNearTies) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  for (const Family& f : {Family{"Mixtral", 8, 2, true, false, 2.0f, false, false},
                          Family{"DeepSeek", 64, 6, false, false, 2.0f, false, false}}) {
    const std::int64_t T = 5000;
    const std::uint64_t seed = 77 + static_cast<std::uint64_t>(f.E);
    SCOPED_TRACE(seed_trace(seed) + ", " + f.name);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> logits(static_cast<std::size_t>(T * f.E));
    for (auto& v : logits) v = dist(rng);
    const DeviceBuffer d_logits(logits);
    GpuResult g;
    run_gpu(d_logits, T, gpu_config(f, T), g);
    if (::testing::Test::HasFatalFailure()) return;

    std::vector<char> skip(static_cast<std::size_t>(T), 0);
    std::int64_t skipped = 0;
    std::vector<float> p(static_cast<std::size_t>(f.E));
    for (std::int64_t t = 0; t < T; ++t) {
      const float* row = logits.data() + t * f.E;
      const float m = *std::max_element(row, row + f.E);
      for (int e = 0; e < f.E; ++e) p[static_cast<std::size_t>(e)] = std::exp(row[e] - m);
      std::sort(p.begin(), p.end(), std::greater<>());
      for (int j = 0; j < f.top_k && j + 1 < f.E; ++j) {
        if (p[static_cast<std::size_t>(j)] - p[static_cast<std::size_t>(j + 1)] <= 1e-5 * p[static_cast<std::size_t>(j)]) {
          skip[static_cast<std::size_t>(t)] = 1;
        }
      }
      skipped += skip[static_cast<std::size_t>(t)];
    }
    std::printf("[ info ] %s: %lld of %lld tokens skipped as near ties\n", f.name, static_cast<long long>(skipped),
                static_cast<long long>(T));
    EXPECT_LE(skipped, T / 100) << "too many near ties for a meaningful comparison";
    expect_choices_match(g.pre_expert, g.pre_weight, route(logits, T, cpu_config(f)), skip);
    expect_lists_match(g, T, f.E, f.top_k);
  }
}

// NaN/Inf logits: the token gets experts 0..top_k-1 with NaN weights (and a NaN shared weight); the
// other tokens are routed normally.
TEST(GpuRouting, NonFiniteLogitsGiveNaNWeightsNotPlausibleRouting) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family f{"Qwen2Moe", 60, 4, false, false, 2.0f, true, false};
  const std::int64_t T = 64;
  const std::uint64_t seed = 5;
  SCOPED_TRACE(seed_trace(seed));
  Logits logits = spread_logits(T, f.E, true, false, seed);
  logits.router[5 * f.E + 17] = std::nanf("");
  logits.router[7 * f.E + 59] = INFINITY;
  logits.router[8 * f.E + 0] = -INFINITY;
  logits.gate[9] = std::nanf("");
  const DeviceBuffer d_logits(logits.device_layout(f.E));
  // NaN poison: the good tokens' weights must be written (finite); finite poison: the bad ones NaN.
  GpuResult g, g_finite_poison;
  run_gpu(d_logits, T, gpu_config(f, T), g);
  if (::testing::Test::HasFatalFailure()) return;
  run_gpu(d_logits, T, gpu_config(f, T), g_finite_poison, true);
  if (::testing::Test::HasFatalFailure()) return;
  for (std::int64_t t = 0; t < T; ++t) {
    const bool bad = t == 5 || t == 7 || t == 8 || t == 9;
    for (int j = 0; j < f.top_k; ++j) {
      const std::size_t at = static_cast<std::size_t>(t * f.top_k + j);
      if (bad) {
        EXPECT_EQ(g.pre_expert[at], j) << "token " << t;
        EXPECT_TRUE(std::isnan(g_finite_poison.pre_weight[at])) << "token " << t;
      } else {
        EXPECT_TRUE(std::isfinite(g.pre_weight[at])) << "token " << t;
      }
    }
    const std::size_t ts = static_cast<std::size_t>(t);
    EXPECT_EQ(std::isnan(bad ? g_finite_poison.shared[ts] : g.shared[ts]), bad) << "token " << t;
  }
  // The lists still hold every choice (with its NaN weight).
  EXPECT_EQ(g.offsets.back(), T * f.top_k);
}

// --- combine -----------------------------------------------------------------------------------------

struct CombineSetup {
  Routing routing;
  DeviceBuffer token_slot;
};

CombineSetup combine_routing(const Family& f, std::int64_t T, std::uint64_t seed) {
  const Logits logits = spread_logits(T, f.E, false, false, seed);
  CombineSetup s{route(logits.router, T, cpu_config(f)), DeviceBuffer()};
  s.token_slot = DeviceBuffer(s.routing.token_slot);
  return s;
}

TEST(GpuRouting, CombineMatchesCpuBitForBit) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family families[] = {Family{"DeepSeek", 64, 6, false, false, 2.0f, false, false},
                             Family{"OpenMoEFactor1", 32, 2, false, true, 1.0f, false, false}};
  for (const Family& f : families) {
    for (const DType dtype : {DType::bf16, DType::f16}) {
      for (const bool with_shared : {false, true}) {
        for (const std::int64_t T : {0, 1, 3, 64, 1000}) {
          for (const std::int64_t H : {8, 256}) {
            const std::uint64_t seed = 300 + static_cast<std::uint64_t>(T + H);
            SCOPED_TRACE(seed_trace(seed) + ", " + f.name + ", " + dtype_name(dtype) + (with_shared ? ", shared" : "") +
                         ", T = " + std::to_string(T) + ", H = " + std::to_string(H));
            const CombineSetup s = combine_routing(f, T, seed);
            const Matrix rows = random_normal_matrix(dtype, s.routing.num_slots(), H, seed + 1);
            const Matrix shared = random_normal_matrix(dtype, T, H, seed + 2);
            const DeviceBuffer d_rows(rows.data(), rows.bytes()), d_shared(shared.data(), shared.bytes());
            DeviceBuffer d_y(static_cast<std::size_t>(T * H) * 2);
            d_y.poison();
            kernels::combine(d_rows.get(), s.token_slot.as<std::int32_t>(), nullptr, with_shared ? d_shared.get() : nullptr,
                             d_y.get(), T, f.top_k, H, dtype, nullptr);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            const Matrix want = samoyeds::combine(rows, s.routing, with_shared ? &shared : nullptr, dtype);
            const std::vector<std::uint16_t> want_bits(want.half_data(), want.half_data() + want.numel());
            EXPECT_SAME_BITS(d_y.to_host<std::uint16_t>(), want_bits, "combined rows");
          }
        }
      }
    }
  }
}

// slot_scale: acc += scale[s] * row_s. Small integers, so every product and sum is exact and the
// plain loop is the only possible answer.
TEST(GpuRouting, CombineWithSlotScaleMatchesPlainLoop) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family f{"DeepSeek", 64, 6, false, false, 2.0f, false, false};
  for (const DType dtype : {DType::bf16, DType::f16}) {
    for (const bool with_shared : {false, true}) {
      const std::int64_t T = 1000, H = 64;
      const std::uint64_t seed = 41;
      SCOPED_TRACE(seed_trace(seed) + ", " + dtype_name(dtype) + (with_shared ? ", shared" : ""));
      const CombineSetup s = combine_routing(f, T, seed);
      const std::int64_t num_slots = s.routing.num_slots();
      const Matrix rows = random_int_matrix(dtype, num_slots, H, seed + 1);
      const Matrix shared = random_int_matrix(dtype, T, H, seed + 2);
      std::vector<float> scale(static_cast<std::size_t>(num_slots));
      std::mt19937_64 rng(seed + 3);
      std::uniform_int_distribution<int> pick(-3, 3);
      for (auto& v : scale) v = static_cast<float>(pick(rng));
      const DeviceBuffer d_rows(rows.data(), rows.bytes()), d_shared(shared.data(), shared.bytes()), d_scale(scale);
      DeviceBuffer d_y(static_cast<std::size_t>(T * H) * 2);
      d_y.poison();
      kernels::combine(d_rows.get(), s.token_slot.as<std::int32_t>(), d_scale.as<float>(),
                       with_shared ? d_shared.get() : nullptr, d_y.get(), T, f.top_k, H, dtype, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<std::uint16_t> want(static_cast<std::size_t>(T * H));
      for (std::int64_t t = 0; t < T; ++t) {
        for (std::int64_t h = 0; h < H; ++h) {
          float acc = 0.0f;
          for (int j = 0; j < f.top_k; ++j) {
            const std::int32_t slot = s.routing.token_slot[static_cast<std::size_t>(t * f.top_k + j)];
            if (slot >= 0) acc += scale[static_cast<std::size_t>(slot)] * rows.get(slot, h);
          }
          if (with_shared) acc += shared.get(t, h);
          want[static_cast<std::size_t>(t * H + h)] = float_to_half(dtype, acc);
        }
      }
      EXPECT_SAME_BITS(d_y.to_host<std::uint16_t>(), want, "scaled combine");
    }
  }
}

// --- graph capture -------------------------------------------------------------------------------------

// The three calls captured into a CUDA graph give the eager results on every replay; with T = 0 the only
// node is the memset of expert_offsets. (T = 5000 also takes the separate slot-scatter kernel.)
TEST(GpuRouting, CapturableInCudaGraph) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Family f{"OpenMoEFactor1", 32, 2, false, true, 1.0f, false, false};
  const std::int64_t H = 64;
  cudaStream_t stream = nullptr;
  SAMOYEDS_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const std::int64_t T : {0, 1000, 5000}) {
    const std::uint64_t seed = 90 + static_cast<std::uint64_t>(T);
    SCOPED_TRACE(seed_trace(seed) + ", T = " + std::to_string(T));
    const kernels::GpuRouting r = gpu_config(f, T);
    const std::int64_t n = T * f.top_k;
    const DeviceBuffer logits(spread_logits(T, f.E, false, false, seed).router);
    const Matrix rows = random_normal_matrix(DType::bf16, n, H, seed + 1);
    const DeviceBuffer d_rows(rows.data(), rows.bytes());
    DeviceBuffer expert = buffer_of<std::int32_t>(n), weight = buffer_of<float>(n),
                 offsets = buffer_of<std::int32_t>(f.E + 1), slot_token = buffer_of<std::int32_t>(n),
                 slot_weight = buffer_of<float>(n), token_slot = buffer_of<std::int32_t>(n),
                 y = DeviceBuffer(static_cast<std::size_t>(T * H) * 2);
    auto enqueue = [&] {
      kernels::softmax_topk(logits.as<float>(), T, r, expert.as<std::int32_t>(), weight.as<float>(), nullptr, stream);
      kernels::build_expert_lists(expert.as<std::int32_t>(), weight.as<float>(), T, r, offsets.as<std::int32_t>(),
                                  slot_token.as<std::int32_t>(), slot_weight.as<float>(), token_slot.as<std::int32_t>(),
                                  stream);
      kernels::combine(d_rows.get(), token_slot.as<std::int32_t>(), nullptr, nullptr, y.get(), T, f.top_k, H,
                       DType::bf16, stream);
    };
    auto poison_all = [&] {
      for (const DeviceBuffer* b : {&expert, &offsets, &slot_token, &token_slot}) poison_ints(*b);
      for (const DeviceBuffer* b : {&weight, &slot_weight, &y}) b->poison();
    };
    auto snapshot = [&] {
      std::vector<std::vector<std::uint8_t>> out;
      for (const DeviceBuffer* b : {&expert, &weight, &offsets, &slot_token, &slot_weight, &token_slot, &y})
        out.push_back(b->to_host<std::uint8_t>());
      return out;
    };
    poison_all();
    enqueue();
    SAMOYEDS_ASSERT_CUDA(cudaStreamSynchronize(stream));
    const auto eager = snapshot();

    cudaGraph_t graph = nullptr;
    SAMOYEDS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    enqueue();
    SAMOYEDS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    std::size_t num_nodes = 0;
    SAMOYEDS_ASSERT_CUDA(cudaGraphGetNodes(graph, nullptr, &num_nodes));
    if (T == 0) {
      EXPECT_EQ(num_nodes, 1u);
    } else {
      EXPECT_GE(num_nodes, 3u);
    }
    cudaGraphExec_t exec = nullptr;
    SAMOYEDS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) {
      poison_all();
      SAMOYEDS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      SAMOYEDS_ASSERT_CUDA(cudaStreamSynchronize(stream));
      const auto replayed = snapshot();
      for (std::size_t i = 0; i < eager.size(); ++i) EXPECT_SAME_BITS(replayed[i], eager[i], "replay buffer " << i);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  cudaStreamDestroy(stream);
}

// --- bad arguments (rejected on the host before any CUDA call, so these run without a GPU too) ---------

// router_logits against the product on the host: exact tier (small integers: every partial sum is an
// integer below 2^24, so any summation order gives the same fp32 value) and realistic tier (normal
// data, within 2e-5 of sum |x w| per logit); two runs bitwise equal; outputs poisoned (NaN) before
// each run, with a guard area behind them. Decode sizes, T with a partial last tile, H not a multiple
// of 256, Qwen's 61 logits, 1 and 7 logits (CTAs with 1 and 3 of their 4 columns).
TEST(GpuRouting, RouterLogitsMatchHostProduct) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  struct Shape {
    std::int64_t T;
    int E;
    std::int64_t H;
    DType dtype;
  };
  std::uint64_t seed = 7100;
  for (const Shape& c : {Shape{1, 8, 4096, DType::bf16}, Shape{7, 61, 2048, DType::f16}, Shape{64, 64, 2048, DType::bf16},
                         Shape{1003, 8, 4104, DType::bf16}, Shape{13, 1, 264, DType::f16},
                         Shape{9, 7, 1024, DType::bf16}}) {
    for (bool exact : {true, false}) {
      ++seed;
      SCOPED_TRACE(seed_trace(seed) + ", T " + std::to_string(c.T) + ", E " + std::to_string(c.E) + ", H " +
                   std::to_string(c.H) + (exact ? ", exact" : ", normal"));
      const Matrix x = exact ? random_int_matrix(c.dtype, c.T, c.H, seed) : random_normal_matrix(c.dtype, c.T, c.H, seed);
      const Matrix w = exact ? random_int_matrix(c.dtype, c.E, c.H, seed + 1)
                             : random_normal_matrix(c.dtype, c.E, c.H, seed + 1, 0.02f);
      // 64 guard floats past the logits: a write past [T, E] shows as a changed guard.
      constexpr std::size_t kGuard = 64;
      DeviceBuffer dx(x.data(), x.bytes()), dw(w.data(), w.bytes()), out(static_cast<std::size_t>(c.T * c.E + kGuard) * 4);
      ASSERT_TRUE(kernels::router_kernel_fits(dx.get(), dw.get(), c.H));
      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        out.poison();
        kernels::router_logits(dx.get(), dw.get(), out.as<float>(), c.T, c.E, c.H, c.dtype, nullptr);
        SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
        const std::vector<float> got = out.to_host<float>();
        std::vector<std::uint32_t> guard(kGuard);
        std::memcpy(guard.data(), got.data() + c.T * c.E, kGuard * 4);
        EXPECT_TRUE(std::all_of(guard.begin(), guard.end(), [](std::uint32_t g) { return g == 0xFFFFFFFFu; }))
            << "router_logits wrote past its [T, E] output";
        if (run == 1) {
          EXPECT_EQ(std::memcmp(got.data(), first.data(), got.size() * 4), 0) << "two runs differ";
          break;
        }
        first = got;
        std::int64_t bad = 0;
        for (std::int64_t t = 0; t < c.T; ++t)
          for (int e = 0; e < c.E; ++e) {
            double want = 0, magnitude = 0;
            for (std::int64_t h = 0; h < c.H; ++h) {
              const double p = static_cast<double>(x.get(t, h)) * w.get(e, h);
              want += p;
              magnitude += std::fabs(p);
            }
            const double g = got[static_cast<std::size_t>(t * c.E + e)];
            // fp32 sums of 8 ceil(H / 2048) products per thread, a 5-step tree and 8 warps: well under 1e-5.
            const bool ok = exact ? g == want : std::fabs(g - want) <= 2e-5 * magnitude + 1e-30;
            if (!ok && bad++ < 3) ADD_FAILURE() << "logit (" << t << ", " << e << "): got " << g << ", want " << want;
          }
      }
    }
  }
}

TEST(GpuRouting, RouterKernelPolicyAndBadArguments) {
  // Which router products take our kernel (kernels::router_kernel_wanted): decode sizes, or few logits.
  EXPECT_TRUE(kernels::router_kernel_wanted(1, 64));
  EXPECT_TRUE(kernels::router_kernel_wanted(64, 61));
  EXPECT_FALSE(kernels::router_kernel_wanted(65, 64));
  EXPECT_TRUE(kernels::router_kernel_wanted(4096, 8));
  EXPECT_TRUE(kernels::router_kernel_wanted(16384, 16));
  EXPECT_FALSE(kernels::router_kernel_wanted(4096, 17));
  EXPECT_TRUE(kernels::router_kernel_wanted(kernels::kRouterMaxTokens, 8));
  EXPECT_FALSE(kernels::router_kernel_wanted(kernels::kRouterMaxTokens + 1, 8));  // beyond the grid: cuBLAS
  void* fake = reinterpret_cast<void*>(std::uintptr_t{256});
  void* misaligned = reinterpret_cast<void*>(std::uintptr_t{258});
  auto* fake_f = reinterpret_cast<float*>(std::uintptr_t{256});
  EXPECT_FALSE(kernels::router_kernel_fits(fake, fake, 12));  // H % 8
  EXPECT_FALSE(kernels::router_kernel_fits(misaligned, fake, 64));
  EXPECT_FALSE(kernels::router_kernel_fits(fake, misaligned, 64));
  EXPECT_TRUE(kernels::router_kernel_fits(fake, fake, 64));
  // Never dereferenced: every call throws before it launches.
  EXPECT_THROW(kernels::router_logits(fake, fake, fake_f, 4, 8, 12, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::router_logits(misaligned, fake, fake_f, 4, 8, 64, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::router_logits(fake, fake, fake_f, 4, 0, 64, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::router_logits(fake, fake, fake_f, -1, 8, 64, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::router_logits(fake, fake, fake_f, 4, 8, 64, DType::f32, nullptr), Error);
  EXPECT_THROW(kernels::router_logits(fake, fake, fake_f, kernels::kRouterMaxTokens + 1, 8, 64, DType::bf16, nullptr), Error);
  EXPECT_NO_THROW(kernels::router_logits(fake, fake, fake_f, 0, 8, 64, DType::bf16, nullptr));  // T = 0: nothing
}

TEST(GpuRouting, RejectsBadArguments) {
  // Never dereferenced: every call below must throw before it launches anything.
  auto* fake_i = reinterpret_cast<std::int32_t*>(std::uintptr_t{256});
  auto* fake_f = reinterpret_cast<float*>(std::uintptr_t{256});
  kernels::GpuRouting ok;
  ok.num_experts = 8;
  ok.top_k = 2;
  auto softmax = [&](const kernels::GpuRouting& r, float* shared = nullptr) {
    kernels::softmax_topk(fake_f, 4, r, fake_i, fake_f, shared, nullptr);
  };
  auto lists = [&](const kernels::GpuRouting& r, std::int64_t T = 4) {
    kernels::build_expert_lists(fake_i, fake_f, T, r, fake_i, fake_i, fake_f, fake_i, nullptr);
  };
  kernels::GpuRouting r = ok;
  r.top_k = 9;  // > E
  EXPECT_THROW(softmax(r), Error);
  EXPECT_THROW(lists(r), Error);
  r = ok;
  r.num_experts = 0;
  EXPECT_THROW(softmax(r), Error);
  EXPECT_THROW(lists(r), Error);
  r = ok;
  r.top_k = 0;
  EXPECT_THROW(softmax(r), Error);
  r.num_experts = 64;
  r.top_k = 9;  // <= E but beyond the register budget
  EXPECT_THROW(softmax(r), Error);
  r = ok;
  r.num_experts = kernels::kMaxExperts + 1;
  EXPECT_THROW(softmax(r), Error);
  EXPECT_THROW(lists(r), Error);
  r = ok;
  r.capacity_limited = true;  // capacity not set
  EXPECT_THROW(lists(r), Error);
  r.capacity = 4;
  r.top_k = 3;  // capacity needs top_k == 2
  EXPECT_THROW(lists(r), Error);
  r = ok;
  EXPECT_THROW(softmax(r, fake_f), Error);  // shared_weight without shared_gate
  r.shared_gate = true;
  EXPECT_THROW(softmax(r, nullptr), Error);  // shared_gate without shared_weight
  EXPECT_THROW(lists(ok, -1), Error);
  EXPECT_THROW(lists(ok, std::int64_t{1} << 31), Error);  // T * top_k beyond int32
  EXPECT_THROW(kernels::build_expert_lists(fake_i, fake_f, 4, ok, nullptr, fake_i, fake_f, fake_i, nullptr), Error);

  void* fake = reinterpret_cast<void*>(std::uintptr_t{256});
  EXPECT_THROW(kernels::combine(fake, fake_i, nullptr, nullptr, fake, 4, 2, 12, DType::bf16, nullptr), Error);  // H % 8
  EXPECT_THROW(kernels::combine(fake, fake_i, nullptr, nullptr, fake, 4, 2, 0, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::combine(fake, fake_i, nullptr, nullptr, fake, 4, 2, 64, DType::f32, nullptr), Error);
  EXPECT_THROW(kernels::combine(fake, fake_i, nullptr, nullptr, fake, 4, 0, 64, DType::bf16, nullptr), Error);
  void* misaligned = reinterpret_cast<void*>(std::uintptr_t{258});
  EXPECT_THROW(kernels::combine(misaligned, fake_i, nullptr, nullptr, fake, 4, 2, 64, DType::bf16, nullptr), Error);
  EXPECT_THROW(kernels::combine(nullptr, fake_i, nullptr, nullptr, fake, 4, 2, 64, DType::f16, nullptr), Error);
  // T = 0 is a valid no-op for softmax_topk and combine (nothing launched, null pointers fine).
  EXPECT_NO_THROW(kernels::softmax_topk(nullptr, 0, ok, nullptr, nullptr, nullptr, nullptr));
  EXPECT_NO_THROW(kernels::combine(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 2, 64, DType::bf16, nullptr));
}

}  // namespace
}  // namespace samoyeds
