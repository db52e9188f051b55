// SPDX-License-Identifier: Apache-2.0
// The GPU model (gpu::Model) against the CPU reference model (reference::model_forward), for every
// family at small sizes; prefill + decode against recomputation; graph replay against eager decode;
// the sparse path against its dense twin; the device-made random packed weights against the host
// format code; bad arguments.
//
// Routing: the test configs select every expert (E = top_k), so the GPU and CPU cannot route a
// token differently on a near tie (GPU and CPU inputs to the router differ by rounding); the routing
// weights still depend continuously on the input. Expert choice itself is tested in moe_layer_test.
// Tolerance on logits: |gpu - cpu| <= 2^-5 max|cpu| per element and mean error <= 2^-8 max|cpu|
// (bf16 rounding at each of the ~10 rounded intermediates per layer, the 16-bit attention
// probabilities, different fp32 summation orders).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/packed_device.h"
#include "samoyeds/gpu_model.h"
#include "samoyeds/moe_layer.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::seed_trace;

// A small config of `name`'s family that routes to every expert.
ModelConfig test_config(const std::string& name, int num_layers) {
  ModelConfig c = scaled_config(find_model(name), 256, 384);
  c.num_experts = c.top_k;
  c.num_layers = num_layers;
  c.vocab_size = 1001;
  c.max_position_embeddings = 4096;
  if (c.head_dim == 64) {
    c.num_attention_heads = 4;  // MiniCPM: head_dim 64, q_dim = H
    c.num_kv_heads = 4;
  } else if (c.family == ModelFamily::openmoe) {
    c.num_attention_heads = 3;  // q_dim 384 != H, like OpenMoE's 24 x 128 != 2048
    c.num_kv_heads = 3;
    c.moe_layer_interval = 2;
    c.moe_layer_phase = 1;
  } else {
    c.num_attention_heads = 4;  // 4 query heads share 2 key/value heads
    c.num_kv_heads = 2;
    c.head_dim = 64;
  }
  if (c.family == ModelFamily::deepseek_moe) c.first_dense_layers = 1;
  if (c.family == ModelFamily::mixtral) c.sliding_window = 48;  // shorter than the prompts below
  c.validate();
  return c;
}

struct Tolerance {
  std::int64_t bad = 0;
  double max_err = 0, mean_err = 0, max_ref = 0;
};

// Compares rows [0, rows) of got with rows [ref_row0, ref_row0 + rows) of ref.
Tolerance compare_logits(const Matrix& got, const Matrix& ref, std::int64_t ref_row0 = 0, double rel = 0x1p-5) {
  Tolerance t;
  for (std::int64_t r = 0; r < got.rows(); ++r)
    for (std::int64_t v = 0; v < got.cols(); ++v) t.max_ref = std::max(t.max_ref, std::fabs(double(ref.get(ref_row0 + r, v))));
  double sum = 0;
  for (std::int64_t r = 0; r < got.rows(); ++r)
    for (std::int64_t v = 0; v < got.cols(); ++v) {
      const double want = ref.get(ref_row0 + r, v), g = got.get(r, v);
      const double err = std::fabs(g - want);
      sum += std::isfinite(err) ? err : INFINITY;
      t.max_err = std::isfinite(err) ? std::max(t.max_err, err) : INFINITY;
      if (!(err <= rel * t.max_ref) && t.bad++ < 3)
        ADD_FAILURE() << "row " << r << ", vocab " << v << ": got " << g << ", want " << want << " (max |ref| " << t.max_ref << ")";
    }
  t.mean_err = sum / static_cast<double>(got.rows() * got.cols());
  EXPECT_LE(t.mean_err, 0x1p-8 * t.max_ref) << "mean error";
  EXPECT_GT(t.max_ref, 0.0) << "reference logits are all zero: the comparison would be vacuous";
  return t;
}

// Sequence ids for the CPU reference of a [B, n] step.
std::vector<std::int32_t> sequence_of(int B, std::int64_t n) {
  std::vector<std::int32_t> s;
  for (int b = 0; b < B; ++b) s.insert(s.end(), static_cast<std::size_t>(n), b);
  return s;
}

// Rows of `logits` [B * n, V] at each sequence's last token.
Matrix last_rows(const Matrix& logits, int B, std::int64_t n) {
  Matrix out(DType::f32, B, logits.cols());
  for (int b = 0; b < B; ++b)
    for (std::int64_t v = 0; v < logits.cols(); ++v) out.set(b, v, logits.get((b + 1) * n - 1, v));
  return out;
}

class GpuModelFamily : public ::testing::TestWithParam<const char*> {};

// Prefill (every token's logits), then decode steps with given tokens, each against the CPU reference
// running the same steps on its own KV caches.
TEST_P(GpuModelFamily, PrefillAndDecodeMatchReference) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig config = test_config(GetParam(), 2);
  const std::uint64_t seed = 910;
  SCOPED_TRACE(seed_trace(seed) + ", " + config.name);
  const ModelWeights weights = synthetic_model(config, 2, DType::bf16, SparsityPattern::parse("1:2:128"), seed);
  gpu::Model model(config, weights);
  const int B = 2;
  const std::int64_t P = 70, steps = 3;  // 70 positions: two key tiles, and past Mixtral's window of 48
  model.start(B, P + steps);
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, config.vocab_size, seed + 1);
  const Matrix gpu_prefill = model.forward(prompt, /*all_logits=*/true);

  std::vector<reference::KvCache> caches = reference::make_kv_caches(config, weights, B, P + steps);
  const Matrix cpu_prefill = reference::model_forward(config, weights, prompt, sequence_of(B, P), caches);
  compare_logits(gpu_prefill, cpu_prefill);

  for (std::int64_t s = 0; s < steps; ++s) {
    SCOPED_TRACE("decode step " + std::to_string(s));
    const std::vector<std::int32_t> tokens = random_token_ids(B, config.vocab_size, seed + 10 + static_cast<std::uint64_t>(s));
    const Matrix gpu_step = model.forward(tokens);  // [B, V]
    const Matrix cpu_step = reference::model_forward(config, weights, tokens, sequence_of(B, 1), caches);
    compare_logits(gpu_step, cpu_step);
  }
  EXPECT_EQ(model.length(), P + steps);
}

INSTANTIATE_TEST_SUITE_P(Families, GpuModelFamily,
                         ::testing::Values("mixtral-8x7b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b",
                                           "openmoe-8b"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

// The cache after a prefill and decode steps gives what recomputing the whole sequence gives, and a
// prefill in several passes (max_step_tokens smaller than the prompt) equals one pass.
TEST(GpuModel, DecodeEqualsRecomputationAndPassesAgree) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig config = test_config("qwen1.5-moe-a2.7b", 2);
  const std::uint64_t seed = 920;
  SCOPED_TRACE(seed_trace(seed));
  const ModelWeights weights = synthetic_model(config, 2, DType::bf16, SparsityPattern::parse("1:2:128"), seed);
  const int B = 3;
  const std::int64_t P = 40, steps = 4;
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, config.vocab_size, seed + 1);
  const std::vector<std::int32_t> extra = random_token_ids(B * steps, config.vocab_size, seed + 2);  // [B, steps]

  gpu::Model model(config, weights);
  model.start(B, P + steps);
  model.forward(prompt);
  std::vector<Matrix> stepwise;
  for (std::int64_t s = 0; s < steps; ++s) {
    std::vector<std::int32_t> tokens;
    for (int b = 0; b < B; ++b) tokens.push_back(extra[static_cast<std::size_t>(b * steps + s)]);
    stepwise.push_back(model.forward(tokens));
  }
  // The whole sequences at once.
  std::vector<std::int32_t> whole;
  for (int b = 0; b < B; ++b) {
    whole.insert(whole.end(), prompt.begin() + b * P, prompt.begin() + (b + 1) * P);
    whole.insert(whole.end(), extra.begin() + b * steps, extra.begin() + (b + 1) * steps);
  }
  model.clear();
  const Matrix all = model.forward(whole, true);  // [B * (P + steps), V]
  for (std::int64_t s = 0; s < steps; ++s) {
    Matrix rows(DType::f32, B, config.vocab_size);
    for (int b = 0; b < B; ++b)
      for (std::int64_t v = 0; v < config.vocab_size; ++v) rows.set(b, v, all.get(b * (P + steps) + P + s, v));
    SCOPED_TRACE("step " + std::to_string(s));
    compare_logits(stepwise[static_cast<std::size_t>(s)], rows, 0, 0x1p-6);
  }

  // Passes of 25 tokens: the prompt of 40 runs as positions [0, 25) then [25, 40), one sequence at a time.
  gpu::ModelOptions small;
  small.max_step_tokens = 25;
  gpu::Model chunked(config, weights, small);
  chunked.start(B, P);
  const Matrix chunked_last = chunked.forward(prompt);
  model.clear();
  const Matrix one_pass = model.forward(prompt);
  compare_logits(chunked_last, one_pass, 0, 0x1p-6);
}

// Greedy decode from a replayed CUDA graph picks exactly the tokens that eager steps pick, and those
// are the argmax of the eager logits.
TEST(GpuModel, GraphDecodeEqualsEagerDecode) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig config = test_config("mixtral-8x7b", 2);
  const std::uint64_t seed = 930;
  SCOPED_TRACE(seed_trace(seed));
  const ModelWeights weights = synthetic_model(config, 2, DType::bf16, SparsityPattern::parse("1:2:128"), seed);
  gpu::Model model(config, weights);
  const int B = 4;
  const std::int64_t P = 9;
  const int steps = 7;
  model.start(B, P + steps + 1);
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, config.vocab_size, seed + 1);

  const std::vector<std::int32_t> first = model.prefill(prompt);
  const std::vector<std::int32_t> graph_tokens = model.decode(first, steps, true);
  ASSERT_EQ(graph_tokens.size(), static_cast<std::size_t>(steps * B));

  model.clear();
  EXPECT_EQ(model.prefill(prompt), first);
  const std::vector<std::int32_t> eager_tokens = model.decode(first, steps, false);
  EXPECT_EQ(graph_tokens, eager_tokens);

  model.clear();
  Matrix logits = model.forward(prompt);
  EXPECT_EQ(reference::greedy(logits), first);
  std::vector<std::int32_t> tokens = first;
  for (int s = 0; s < steps; ++s) {
    logits = model.forward(tokens);
    tokens = reference::greedy(logits);
    const std::vector<std::int32_t> picked(graph_tokens.begin() + s * B, graph_tokens.begin() + (s + 1) * B);
    EXPECT_EQ(tokens, picked) << "step " << s;
  }

  // Replaying the same graph after clear() again gives the same tokens (run to run determinism).
  model.clear();
  model.prefill(prompt);
  EXPECT_EQ(model.decode(first, steps, true), graph_tokens);
}

// The dense baseline (Ŵ unpacked on the device, cuBLAS) computes what the sparse path computes.
TEST(GpuModel, DensePathMatchesSparsePath) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig config = test_config("deepseek-moe-16b", 2);
  const std::uint64_t seed = 940;
  SCOPED_TRACE(seed_trace(seed));
  const ModelWeights weights = synthetic_model(config, 2, DType::bf16, SparsityPattern::parse("1:2:128"), seed);
  gpu::ModelOptions dense_options;
  dense_options.dense = true;
  gpu::Model sparse(config, weights), dense(config, weights, dense_options);
  EXPECT_TRUE(dense.dense());
  EXPECT_GT(dense.weight_bytes(), sparse.weight_bytes());
  const int B = 2;
  const std::int64_t P = 33;
  sparse.start(B, P + 2);
  dense.start(B, P + 2);
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, config.vocab_size, seed + 1);
  compare_logits(dense.forward(prompt, true), sparse.forward(prompt, true), 0, 0x1p-6);
  const std::vector<std::int32_t> tokens = random_token_ids(B, config.vocab_size, seed + 2);
  compare_logits(dense.forward(tokens), sparse.forward(tokens), 0, 0x1p-6);
  EXPECT_THROW(dense.decode(tokens, 1, true), Error);  // the dense path cannot be captured
  EXPECT_NO_THROW(dense.decode(tokens, 1, false));
}

// Real Mixtral-8x7B sizes (one layer) from device-made weights: runs, and sparse == dense twin.
TEST(GpuModel, SyntheticRealSizeMixtralLayer) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig& config = find_model("mixtral-8x7b");
  const SparsityPattern pattern = SparsityPattern::parse("1:2:128");
  gpu::ModelOptions dense_options;
  dense_options.dense = true;
  gpu::Model sparse = gpu::Model::synthetic(config, 1, DType::bf16, pattern, 7);
  gpu::Model dense = gpu::Model::synthetic(config, 1, DType::bf16, pattern, 7, dense_options);
  // Exact bytes: embedding + LM head + final norm, one layer's norms, q|k|v, o and router, and the experts.
  const std::size_t H = 4096, I = 14336, E = 8, V = 32000;
  const std::size_t common = 2 * V * H * 2 + H * 2 + 2 * H * 2 + (4096 + 1024 + 1024) * H * 2 + H * 4096 * 2 + E * H * 2;
  const std::size_t packed = E * static_cast<std::size_t>(2 * packed_geometry(pattern, I, H).total_bytes() +
                                                          packed_geometry(pattern, H, I).total_bytes());
  EXPECT_EQ(sparse.weight_bytes(), common + packed);
  EXPECT_EQ(dense.weight_bytes(), common + E * 3 * I * H * 2);
  const int B = 2;
  const std::int64_t P = 20;
  sparse.start(B, P + 4);
  dense.start(B, P + 4);
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, config.vocab_size, 8);
  compare_logits(dense.forward(prompt), sparse.forward(prompt), 0, 0x1p-5);
  const std::vector<std::int32_t> tokens = random_token_ids(B, config.vocab_size, 9);
  const std::vector<std::int32_t> picked = sparse.decode(tokens, 3, true);
  EXPECT_EQ(picked.size(), 6u);
  for (const std::int32_t t : picked) EXPECT_TRUE(t >= 0 && t < config.vocab_size);
}

// Device-made random packed weights are valid Samoyeds-format matrices, and the device unpack equals
// the host unpack bit for bit, for odd shapes and every kind of pattern.
TEST(GpuPackedDevice, RandomPackedIsValidAndUnpacksLikeTheHost) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  struct Case {
    const char* pattern;
    std::int64_t rows, cols;
  };
  for (const Case c : {Case{"1:2:128", 1409, 200}, Case{"2:4", 96, 130}, Case{"2:4:64", 150, 333}, Case{"3:8:32", 77, 96},
                       Case{"1:2:256", 64, 5760}}) {
    SCOPED_TRACE(std::string(c.pattern) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const SparsityPattern pattern = SparsityPattern::parse(c.pattern);
    gpu::DevicePackedMatrix stack(pattern, DType::bf16, c.rows, c.cols, 2);
    kernels::fill_random_packed(stack.view(), 0.1f, 42, nullptr);
    for (int e = 0; e < 2; ++e) {
      const PackedMatrix host = stack.download(e);
      EXPECT_NO_THROW(host.validate());
      const Matrix want = unpack(host);
      testing::DeviceBuffer dense(want.bytes());
      dense.poison();
      kernels::unpack_packed(stack.view(), e, dense.get(), nullptr);
      SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
      const auto got = dense.to_host<std::uint16_t>();
      ASSERT_EQ(std::memcmp(got.data(), want.data(), want.bytes()), 0) << "matrix " << e;
      std::int64_t nonzero = 0;
      for (const std::uint16_t bits : got) nonzero += bits != 0;
      const double density = static_cast<double>(nonzero) / static_cast<double>(got.size());
      EXPECT_NEAR(density, pattern.density(), 0.05) << "kept fraction";
    }
    // Two matrices of a stack differ; the same seed gives the same bits.
    EXPECT_NE(stack.download(0).values, stack.download(1).values);
    gpu::DevicePackedMatrix again(pattern, DType::bf16, c.rows, c.cols, 2);
    kernels::fill_random_packed(again.view(), 0.1f, 42, nullptr);
    EXPECT_EQ(again.download(1).values, stack.download(1).values);
  }
  // A synthetic MoE layer passes the weight checks.
  const ModelConfig config = scaled_config(find_model("qwen1.5-moe-a2.7b"), 256, 1408);
  const gpu::MoeLayer layer = gpu::MoeLayer::synthetic(config, DType::bf16, SparsityPattern::parse("1:2:128"), 3);
  EXPECT_NO_THROW(check_moe_weights(config, layer.download()));
}

TEST(GpuModel, RejectsBadArguments) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const ModelConfig config = test_config("mixtral-8x7b", 1);
  const ModelWeights weights = synthetic_model(config, 1, DType::bf16, SparsityPattern::parse("1:2:128"), 950);
  gpu::Model model(config, weights);
  const std::vector<std::int32_t> ids = {1, 2, 3, 4};
  EXPECT_THROW(model.forward(ids), Error);  // start() first
  EXPECT_THROW(model.start(0, 8), Error);
  EXPECT_THROW(model.start(2, 0), Error);
  model.start(2, 4);
  EXPECT_THROW(model.forward(std::vector<std::int32_t>{1, 2, 3}), Error);  // 3 ids for 2 sequences
  EXPECT_THROW(model.forward(std::vector<std::int32_t>{}), Error);
  EXPECT_THROW(model.forward(std::vector<std::int32_t>{1, static_cast<std::int32_t>(config.vocab_size)}), Error);
  EXPECT_THROW(model.forward(std::vector<std::int32_t>{1, -1}), Error);
  EXPECT_THROW(model.forward(std::vector<std::int32_t>(2 * 5, 1)), Error);  // 5 positions, capacity 4
  EXPECT_EQ(model.length(), 0);
  model.forward(ids);
  EXPECT_THROW(model.decode(std::vector<std::int32_t>{1, 2}, 3, true), Error);  // 2 + 3 > 4
  EXPECT_THROW(model.decode(std::vector<std::int32_t>{1}, 1, true), Error);     // one token for two sequences
  model.forward(ids);                                                           // 4 of 4 positions
  EXPECT_THROW(model.forward(ids), Error);                                      // 6 > 4
  EXPECT_EQ(model.length(), 4);
  // Fewer layers may be switched on at any time, more only on empty sequences.
  gpu::Model two(test_config("mixtral-8x7b", 2), synthetic_model(test_config("mixtral-8x7b", 2), 2, DType::bf16,
                                                                 SparsityPattern::parse("1:2:128"), 952));
  two.start(2, 4);
  two.set_active_layers(1);
  two.forward(ids);
  EXPECT_THROW(two.set_active_layers(2), Error);
  two.clear();
  EXPECT_NO_THROW(two.set_active_layers(2));
  two.stop();
  EXPECT_THROW(two.forward(ids), Error);  // stopped: start() again first

  ModelConfig odd = config;
  odd.head_dim = 32;  // not a head size the GPU attention handles (and q/k/v of other shapes)
  odd.num_attention_heads = 4;
  odd.num_kv_heads = 4;
  const ModelWeights odd_weights = synthetic_model(odd, 1, DType::bf16, SparsityPattern::parse("1:2:128"), 951);
  EXPECT_THROW(gpu::Model(odd, odd_weights), Error);
  EXPECT_THROW(gpu::Model(config, odd_weights), Error);  // weights of another shape
}

}  // namespace
}  // namespace samoyeds
