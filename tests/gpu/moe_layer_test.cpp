// SPDX-License-Identifier: Apache-2.0
// The GPU MoE layers (sparse MoeLayer and the cuBLAS DenseMoeLayer baseline) against the CPU reference
// layer, for every model family (scaled down) and the real Mixtral-8x7B and DeepSeek-MoE shapes.
// The reference runs on the GPU's own routing (reference::moe_layer_routed), so a near-tie that the
// GPU router (cuBLAS fp32 logits) and the CPU router (exact logits) break differently cannot fail the
// expert path; the routing itself is compared with the CPU router separately, allowing near-tie flips.
// Tolerance per element: |gpu - ref| <= 2^-7 |ref| + 2^-7 max|ref| (bf16 rounding of A, of each slot
// row and of Y, each one unit, from different fp32 summation orders). Outputs are poisoned first.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "samoyeds/moe_layer.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;
using testing::random_normal_matrix;
using testing::seed_trace;

struct LayerCheck {
  std::int64_t bad = 0;
  double max_err = 0, max_ref = 0;
};

LayerCheck compare_layer(const DeviceBuffer& y, const Matrix& ref) {
  const auto got = y.to_host<std::uint16_t>();
  LayerCheck c;
  for (std::int64_t t = 0; t < ref.rows(); ++t)
    for (std::int64_t h = 0; h < ref.cols(); ++h) c.max_ref = std::max(c.max_ref, static_cast<double>(std::fabs(ref.get(t, h))));
  for (std::int64_t t = 0; t < ref.rows(); ++t)
    for (std::int64_t h = 0; h < ref.cols(); ++h) {
      const double g = half_to_float(ref.dtype(), got[static_cast<std::size_t>(t * ref.cols() + h)]);
      const double want = ref.get(t, h);
      const double err = std::fabs(g - want);
      c.max_err = std::isfinite(err) ? std::max(c.max_err, err) : INFINITY;
      if (!(err <= std::ldexp(std::fabs(want), -7) + std::ldexp(c.max_ref, -7)) && c.bad++ < 3)
        ADD_FAILURE() << "token " << t << ", h " << h << ": got " << g << ", want " << want;
    }
  return c;
}

// Choices of the GPU router that differ from the CPU router's on the same x (near ties only).
std::int64_t count_choice_flips(const Routing& gpu, const Routing& cpu) {
  std::int64_t flips = 0;
  for (std::size_t i = 0; i < gpu.topk_expert.size(); ++i) flips += gpu.topk_expert[i] != cpu.topk_expert[i];
  return flips;
}

struct LayerCase {
  const char* model;
  std::int64_t H, I;  // 0: the model's real sizes
};

class MoeLayerGpu : public ::testing::TestWithParam<LayerCase> {};

TEST_P(MoeLayerGpu, SparseAndDenseMatchReference) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const LayerCase lc = GetParam();
  const ModelConfig& base = find_model(lc.model);
  const ModelConfig config = lc.H ? scaled_config(base, lc.H, lc.I) : base;
  const std::uint64_t seed = 500 + static_cast<std::uint64_t>(config.num_experts);
  SCOPED_TRACE(seed_trace(seed) + ", " + config.name);
  const PackedMoeWeights packed =
      pack_moe_weights(config, synthetic_moe_weights(config, DType::bf16, seed), SparsityPattern::parse("1:2:128"));
  gpu::MoeLayer layer(config, packed);
  gpu::DenseMoeLayer dense(config, unpack_moe_weights(packed));
  const std::vector<std::int64_t> token_counts =
      lc.H ? std::vector<std::int64_t>{1, 3, 64, 1000} : std::vector<std::int64_t>{1, 3};
  for (std::int64_t T : token_counts) {
    SCOPED_TRACE("T = " + std::to_string(T));
    const Matrix x = random_normal_matrix(DType::bf16, T, config.hidden_size, seed + static_cast<std::uint64_t>(T));
    DeviceBuffer dx(x.data(), x.bytes()), dy(x.bytes()), dy_dense(x.bytes());
    dy.poison();
    dy_dense.poison();
    layer.forward(dx.get(), dy.get(), T);
    dense.forward(dx.get(), dy_dense.get(), T);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const Routing routing = layer.last_routing();  // checks the device lists against its own choices
    EXPECT_EQ(routing.topk_expert, dense.last_routing().topk_expert) << "both layers share one router";

    const Routing cpu_routing = route(router_logits(x, packed.router), T, router_config(config));
    const std::int64_t flips = count_choice_flips(routing, cpu_routing);
    EXPECT_LE(flips, std::max<std::int64_t>(2, T * config.top_k / 100)) << "more GPU/CPU routing differences than near ties explain";

    const Matrix ref = reference::moe_layer_routed(config, packed, x, routing);
    const LayerCheck sparse_check = compare_layer(dy, ref);
    EXPECT_EQ(sparse_check.bad, 0) << "sparse layer, max err " << sparse_check.max_err << " of " << sparse_check.max_ref;
    const LayerCheck dense_check = compare_layer(dy_dense, ref);
    EXPECT_EQ(dense_check.bad, 0) << "dense layer, max err " << dense_check.max_err << " of " << dense_check.max_ref;
    EXPECT_GT(sparse_check.max_ref, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllModels, MoeLayerGpu,
    ::testing::Values(LayerCase{"mixtral-8x7b", 256, 384}, LayerCase{"mixtral-8x22b", 384, 512},
                      LayerCase{"deepseek-moe-16b", 256, 176}, LayerCase{"qwen1.5-moe-a2.7b", 256, 176},
                      LayerCase{"minicpm-moe-8x2b", 288, 720}, LayerCase{"openmoe-8b", 256, 512},
                      LayerCase{"openmoe-34b", 384, 768}, LayerCase{"mixtral-8x7b", 0, 0},
                      LayerCase{"deepseek-moe-16b", 0, 0}),
    [](const ::testing::TestParamInfo<LayerCase>& info) {
      std::string name = std::string(info.param.model) + (info.param.H ? "_scaled" : "_real");
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

// A small Mixtral-like layer for the behaviour tests below.
struct SmallLayer {
  ModelConfig config = scaled_config(find_model("mixtral-8x7b"), 256, 384);
  PackedMoeWeights packed;
  explicit SmallLayer(std::uint64_t seed) {
    DenseMoeWeights dense = synthetic_moe_weights(config, DType::bf16, seed);
    // Skew: a large router weight on feature 0 for expert 3; inputs below carry a large feature 0, so
    // every token picks expert 3 first and most experts see few tokens.
    for (std::int64_t e = 0; e < config.num_experts; ++e) dense.router.set(e, 0, e == 3 ? 4.0f : 0.0f);
    packed = pack_moe_weights(config, dense, SparsityPattern::parse("1:2:128"));
  }
};

TEST(MoeLayerGpuBehaviour, SkewedRoutingOneHotExpert) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const std::uint64_t seed = 77;
  SCOPED_TRACE(seed_trace(seed));
  SmallLayer small(seed);
  gpu::MoeLayer layer(small.config, small.packed);
  const std::int64_t T = 200;
  Matrix x = random_normal_matrix(DType::bf16, T, small.config.hidden_size, seed + 1);
  for (std::int64_t t = 0; t < T; ++t) x.set(t, 0, 8.0f);
  DeviceBuffer dx(x.data(), x.bytes()), dy(x.bytes());
  dy.poison();
  layer.forward(dx.get(), dy.get(), T);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const Routing routing = layer.last_routing();
  EXPECT_EQ(routing.expert_size(3), T) << "expert 3 should take every token";
  const LayerCheck c = compare_layer(dy, reference::moe_layer_routed(small.config, small.packed, x, routing));
  EXPECT_EQ(c.bad, 0);
}

TEST(MoeLayerGpuBehaviour, GraphReplayAndDeterminism) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const std::uint64_t seed = 78;
  SCOPED_TRACE(seed_trace(seed));
  SmallLayer small(seed);
  gpu::MoeLayer layer(small.config, small.packed);
  for (std::int64_t T : {1, 16, 300}) {
    SCOPED_TRACE("T = " + std::to_string(T));
    const Matrix x1 = random_normal_matrix(DType::bf16, T, small.config.hidden_size, seed + 2);
    const Matrix x2 = random_normal_matrix(DType::bf16, T, small.config.hidden_size, seed + 3);
    DeviceBuffer dx(x1.data(), x1.bytes()), dy(x1.bytes());
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    // Direct runs, twice each: bitwise identical.
    layer.forward(dx.get(), dy.get(), T, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const auto direct1 = dy.to_host<std::uint16_t>();
    dy.poison();
    layer.forward(dx.get(), dy.get(), T, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(direct1, dy.to_host<std::uint16_t>()) << "two runs differ";
    ASSERT_EQ(cudaMemcpy(dx.get(), x2.data(), x2.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    layer.forward(dx.get(), dy.get(), T, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    const auto direct2 = dy.to_host<std::uint16_t>();

    // Capture once (workspace reserved, so nothing allocates), replay on both inputs.
    layer.reserve(T);
    cudaGraph_t graph;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    layer.forward(dx.get(), dy.get(), T, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dx.get(), x1.data(), x1.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    dy.poison();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(direct1, dy.to_host<std::uint16_t>()) << "graph replay differs from the direct run (x1)";
    ASSERT_EQ(cudaMemcpy(dx.get(), x2.data(), x2.bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    dy.poison();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(direct2, dy.to_host<std::uint16_t>()) << "graph replay differs from the direct run (x2)";
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(MoeLayerGpuBehaviour, ZeroTokensAndBadInputs) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  SmallLayer small(79);
  gpu::MoeLayer layer(small.config, small.packed);
  layer.forward(nullptr, nullptr, 0);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const Routing empty = layer.last_routing();
  EXPECT_EQ(empty.num_slots(), 0);
  EXPECT_EQ(empty.expert_offsets, std::vector<std::int32_t>(static_cast<std::size_t>(small.config.num_experts + 1), 0));

  const std::int64_t T = 8, H = small.config.hidden_size;
  DeviceBuffer dx(static_cast<std::size_t>(T * H) * 2 + 16), dy(static_cast<std::size_t>(T * H) * 2);
  EXPECT_THROW(layer.forward(dx.get(), dy.get(), -1), Error);
  EXPECT_THROW(layer.forward(static_cast<std::uint8_t*>(dx.get()) + 2, dy.get(), T), Error) << "misaligned x";
  DeviceBuffer small_ws(256);
  EXPECT_THROW(layer.forward(dx.get(), dy.get(), T, small_ws.get(), small_ws.bytes(), nullptr), Error)
      << "workspace too small";
  PackedMoeWeights wrong = small.packed;
  wrong.experts.pop_back();
  EXPECT_THROW(gpu::MoeLayer(small.config, wrong), Error) << "one expert missing";
}

}  // namespace
}  // namespace samoyeds
