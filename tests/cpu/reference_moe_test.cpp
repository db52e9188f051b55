// SPDX-License-Identifier: Apache-2.0
// The CPU reference MoE layer on packed weights against a straightforward per-token loop on the
// effective dense weights, for every model family (scaled down), plus weight checks and bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/test_util.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::random_normal_matrix;
using testing::seed_trace;

// Largest |a - b| over all elements, and the largest |b|.
std::pair<double, double> max_errors(const Matrix& a, const Matrix& b) {
  double err = 0.0, scale = 0.0;
  for (std::int64_t r = 0; r < a.rows(); ++r)
    for (std::int64_t c = 0; c < a.cols(); ++c) {
      err = std::max(err, static_cast<double>(std::fabs(a.get(r, c) - b.get(r, c))));
      scale = std::max(scale, static_cast<double>(std::fabs(b.get(r, c))));
    }
  return {err, scale};
}

class ReferenceMoeFamilies : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceMoeFamilies, PackedLayerEqualsPerTokenLoopOnEffectiveWeights) {
  const ModelConfig config = scaled_config(find_model(GetParam()), 128, 96);
  const std::uint64_t seed = 31;
  SCOPED_TRACE(seed_trace(seed));
  const PackedMoeWeights packed =
      pack_moe_weights(config, synthetic_moe_weights(config, DType::bf16, seed), SparsityPattern::parse("1:2:64"));
  const DenseMoeWeights effective = unpack_moe_weights(packed);
  for (std::int64_t T : {0, 1, 3, 37}) {
    SCOPED_TRACE("T = " + std::to_string(T));
    const Matrix x = random_normal_matrix(DType::bf16, T, config.hidden_size, seed + static_cast<std::uint64_t>(T));
    Routing routing, routing_dense;
    const Matrix y = reference::moe_layer(config, packed, x, &routing);
    const Matrix y_dense = reference::moe_layer_dense(config, effective, x, &routing_dense);
    ASSERT_EQ(y.rows(), T);
    ASSERT_EQ(y.cols(), config.hidden_size);
    EXPECT_NO_THROW(routing.validate());
    // Same routing and rounding points; only the fp32 summation order of the dot products differs,
    // which can move a bf16 rounding of A or of a slot row by one unit (2^-8 relative).
    const auto [err, scale] = max_errors(y, y_dense);
    EXPECT_LE(err, 2e-2 * std::max(scale, 1e-3)) << "max |y| = " << scale;
    if (T > 0) EXPECT_GT(scale, 0.0) << "an all-zero output hides unwritten rows";
    // Given the same routing, moe_layer_routed is moe_layer bit for bit.
    const Matrix y_routed = reference::moe_layer_routed(config, packed, x, routing);
    EXPECT_EQ(std::memcmp(y_routed.data(), y.data(), y.bytes()), 0);
  }
  const Matrix x = random_normal_matrix(DType::bf16, 4, config.hidden_size, seed);
  Routing routing;
  reference::moe_layer(config, packed, x, &routing);
  const Matrix fewer = random_normal_matrix(DType::bf16, 3, config.hidden_size, seed);
  EXPECT_THROW(reference::moe_layer_routed(config, packed, fewer, routing), Error) << "routing for 4 tokens, x has 3";
}

INSTANTIATE_TEST_SUITE_P(AllModels, ReferenceMoeFamilies,
                         ::testing::Values("mixtral-8x7b", "mixtral-8x22b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b",
                                           "minicpm-moe-8x2b", "openmoe-8b", "openmoe-34b"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name;
                         });

TEST(ReferenceMoe, SharedExpertAndGateContribute) {
  const ModelConfig qwen = scaled_config(find_model("qwen1.5-moe-a2.7b"), 64, 32);
  EXPECT_TRUE(qwen.shared_expert_sigmoid_gate);
  EXPECT_EQ(qwen.shared_intermediate_size, 128);  // 5632 / 1408 = 4 x I
  const PackedMoeWeights packed = pack_moe_weights(qwen, synthetic_moe_weights(qwen, DType::bf16, 5), SparsityPattern::parse("2:4"));
  const Matrix x = random_normal_matrix(DType::bf16, 4, 64, 6);
  PackedMoeWeights no_shared_gate = packed;
  no_shared_gate.shared_gate.set(0, 0, no_shared_gate.shared_gate.get(0, 0) + 8.0f);
  const auto [err, scale] = max_errors(reference::moe_layer(qwen, packed, x), reference::moe_layer(qwen, no_shared_gate, x));
  EXPECT_GT(err, 0.0) << "changing the shared gate must change the output";
  (void)scale;
}

TEST(ReferenceMoe, RejectsMismatchedWeightsAndInputs) {
  const ModelConfig mixtral = scaled_config(find_model("mixtral-8x7b"), 64, 32);
  const DenseMoeWeights dense = synthetic_moe_weights(mixtral, DType::bf16, 9);
  PackedMoeWeights packed = pack_moe_weights(mixtral, dense, SparsityPattern::parse("1:2:64"));
  EXPECT_THROW(reference::moe_layer(mixtral, packed, random_normal_matrix(DType::bf16, 2, 63, 1)), Error);
  EXPECT_THROW(reference::moe_layer(mixtral, packed, random_normal_matrix(DType::f16, 2, 64, 1)), Error);
  PackedMoeWeights missing = packed;
  missing.experts.pop_back();
  EXPECT_THROW(reference::moe_layer(mixtral, missing, random_normal_matrix(DType::bf16, 2, 64, 1)), Error);
  const ModelConfig deepseek = scaled_config(find_model("deepseek-moe-16b"), 64, 32);
  EXPECT_THROW(check_moe_weights(deepseek, dense), Error);  // wrong expert count and no shared expert
  DenseMoeWeights openmoe_like = dense;
  openmoe_like.experts[0].gate_linear = dense.experts[0].gate;
  EXPECT_THROW(check_moe_weights(mixtral, openmoe_like), Error);
}

}  // namespace
}  // namespace samoyeds
