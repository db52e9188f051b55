// SPDX-License-Identifier: Apache-2.0
// The GPU attention kernel against a direct double-precision computation on the same cache contents:
// grouped-query heads, causal masking (the cache holds random values past each position, so a key
// that should be masked would show), sliding windows, several new tokens per sequence, sequences of
// different lengths, head_dim 64 and 128, with and without split-KV (whose result must also match
// the unsplit one), the usual softmax scale and 8x it (peaky rows), bf16 and fp16. Tolerance: 2^-7
// max|v| (16-bit probabilities, fp32 sums, a 16-bit output). cuDNN's prefill path (attention_cudnn.h)
// is held to the same computation and tolerance on the shapes it takes.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "samoyeds/error.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;

struct Case {
  int head_dim, heads, kv_heads, n;
  std::int64_t window;
  std::vector<std::int32_t> lengths;  // cached positions before the step, per sequence
  std::int64_t capacity;
  float scale_factor = 1.0f;  // softmax scale = scale_factor / sqrt(d); larger ones make peakier rows
  DType dtype = DType::bf16;
};

// Our kernel unsplit and split-KV, or (cudnn) our kernel unsplit and cuDNN's graph, which needs every
// sequence at the same cached length.
void check_case(const Case& c, std::uint64_t seed, bool cudnn = false) {
  SCOPED_TRACE(testing::seed_trace(seed) + ", d " + std::to_string(c.head_dim) + ", n " + std::to_string(c.n) +
               ", window " + std::to_string(c.window) + ", scale x" + std::to_string(c.scale_factor) + ", " +
               dtype_name(c.dtype));
  const int B = static_cast<int>(c.lengths.size()), d = c.head_dim, group = c.heads / c.kv_heads;
  const std::int64_t T = static_cast<std::int64_t>(B) * c.n, kv_row = static_cast<std::int64_t>(c.kv_heads) * d;
  const Matrix q = testing::random_normal_matrix(c.dtype, T, c.heads * d, seed);
  const Matrix k = testing::random_normal_matrix(c.dtype, B * c.capacity, kv_row, seed + 1);
  const Matrix v = testing::random_normal_matrix(c.dtype, B * c.capacity, kv_row, seed + 2);
  DeviceBuffer dq(q.data(), q.bytes()), dk(k.data(), k.bytes()), dv(v.data(), v.bytes()), dlen(c.lengths);
  DeviceBuffer out_split(q.bytes()), out_plain(q.bytes());
  const std::size_t ws_bytes = kernels::attention_workspace_bytes(T * c.heads, d, 16);
  DeviceBuffer workspace(ws_bytes);

  kernels::AttentionArgs a;
  a.q = dq.get();
  a.k_cache = dk.get();
  a.v_cache = dv.get();
  a.seq_len = dlen.as<std::int32_t>();
  a.num_sequences = B;
  a.tokens_per_sequence = c.n;
  a.num_heads = c.heads;
  a.num_kv_heads = c.kv_heads;
  a.head_dim = d;
  a.capacity = c.capacity;
  a.window = c.window;
  a.scale = c.scale_factor / std::sqrt(static_cast<float>(d));
  a.dtype = c.dtype;
  out_plain.poison();
  a.out = out_plain.get();
  kernels::attention(a, nullptr);  // no workspace: one CTA per rows tile
  a.out = out_split.get();
  out_split.poison();
  if (cudnn) {
    a.cached_len = c.lengths[0];
    std::string why;
    ASSERT_TRUE(kernels::cudnn_attention(a, nullptr, &why)) << why;
  } else {
    a.partial_o = workspace.as<float>();
    a.partial_ml = a.partial_o + static_cast<std::int64_t>(ws_bytes / ((d + 2) * sizeof(float))) * d;
    a.workspace_bytes = ws_bytes;
    const int splits = kernels::attention_splits(a);
    kernels::attention(a, nullptr);
    EXPECT_GT(splits, 1) << "the case is meant to exercise split-KV";
  }
  SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());

  double max_v = 0;
  for (std::int64_t r = 0; r < v.rows(); ++r)
    for (std::int64_t x = 0; x < v.cols(); ++x) max_v = std::max(max_v, std::fabs(double(v.get(r, x))));
  const auto plain = out_plain.to_host<std::uint16_t>(), split = out_split.to_host<std::uint16_t>();
  std::int64_t bad = 0;
  std::vector<double> scores;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < c.n; ++i)
      for (int h = 0; h < c.heads; ++h) {
        const std::int64_t t = static_cast<std::int64_t>(b) * c.n + i, pos = c.lengths[b] + i;
        const std::int64_t first = c.window > 0 ? std::max<std::int64_t>(0, pos - c.window + 1) : 0;
        const std::int64_t kv_col = static_cast<std::int64_t>(h / group) * d;
        scores.assign(static_cast<std::size_t>(pos - first + 1), 0.0);
        double top = -INFINITY;
        for (std::int64_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int x = 0; x < d; ++x) dot += double(q.get(t, h * d + x)) * k.get(b * c.capacity + j, kv_col + x);
          scores[static_cast<std::size_t>(j - first)] = dot * a.scale;
          top = std::max(top, dot * a.scale);
        }
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - top));
        for (int x = 0; x < d; ++x) {
          double want = 0;
          for (std::int64_t j = first; j <= pos; ++j) want += scores[static_cast<std::size_t>(j - first)] * v.get(b * c.capacity + j, kv_col + x);
          want /= sum;
          const std::size_t at = static_cast<std::size_t>((t * c.heads + h) * d + x);
          for (const auto* got : {&plain, &split}) {
            const double g = half_to_float(c.dtype, (*got)[at]);
            if (!(std::fabs(g - want) <= std::ldexp(max_v, -7)) && bad++ < 3)
              ADD_FAILURE() << (got == &plain ? "unsplit" : cudnn ? "cuDNN" : "split") << " (b " << b << ", i " << i << ", h " << h << ", "
                            << x << "): got " << g << ", want " << want;
          }
        }
      }
}

TEST(GpuAttention, MatchesDirectComputation) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  std::uint64_t seed = 970;
  for (const Case& c : {Case{128, 8, 2, 1, 0, {700, 313}, 1000},    // decode, grouped heads (4 per KV head)
                        Case{64, 4, 4, 3, 0, {0, 257, 1}, 600},       // three new tokens, one sequence from empty
                        Case{128, 4, 1, 2, 100, {650, 64}, 900},      // sliding window shorter than the context
                        Case{64, 6, 3, 1, 33, {500}, 512},            // window not a multiple of the tile
                        // Prefill: many 64-row CTAs, keys from before the step and from it, diagonal
                        // tiles cut at a position that is no multiple of the tile, one sequence from empty.
                        Case{128, 8, 2, 300, 0, {0, 37}, 400},
                        // Peaky rows (8x the usual scale: scores spread ~12 in log2 units), fp16: a row's
                        // running max moves after its first tile and probabilities reach ~2^8 (lazy rescaling).
                        Case{128, 8, 2, 200, 0, {0, 150}, 400, 8.0f, DType::f16},
                        Case{64, 4, 4, 1, 0, {900}, 1000, 8.0f, DType::bf16}})
    check_case(c, seed++);
}

// cuDNN's SDPA graph on the prefill shapes it takes: grouped heads, from empty (causal from the top
// left) and after cached positions (from the bottom right), a tile-unaligned n, several sequences,
// head_dim 64 and 128, peaky fp16 rows. Skips (saying why) where cuDNN cannot be loaded.
TEST(GpuAttention, CudnnMatchesDirectComputation) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  kernels::AttentionArgs probe;
  probe.cached_len = 0;
  probe.tokens_per_sequence = 1;
  probe.capacity = 1;
  probe.head_dim = 128;
  std::string why;
  if (!kernels::cudnn_attention_fits(probe, &why)) GTEST_SKIP() << "cuDNN attention unavailable: " << why;
  std::uint64_t seed = 1970;
  for (const Case& c : {Case{128, 32, 8, 300, 0, {0}, 400},                         // Mixtral's heads, from empty
                        Case{128, 8, 2, 200, 0, {150, 150}, 400},                  // after 150 cached positions
                        Case{64, 4, 4, 100, 0, {0, 0, 0}, 128, 1.0f, DType::f16},  // three sequences, d = 64
                        Case{128, 8, 2, 129, 0, {37}, 200, 8.0f, DType::f16},     // peaky rows, cached 37
                        Case{64, 6, 3, 64, 0, {1}, 65}})                         // the keys fill the cache exactly
    check_case(c, seed++, true);
}

TEST(GpuAttention, CudnnRefusesWhatItDoesNotTake) {
  kernels::AttentionArgs a;
  a.head_dim = 128;
  a.capacity = 100;
  a.tokens_per_sequence = 10;
  std::string why;
  EXPECT_FALSE(kernels::cudnn_attention_fits(a, &why)) << "an unknown cached length";  // cached_len -1
  a.cached_len = 0;
  a.window = 16;
  EXPECT_FALSE(kernels::cudnn_attention_fits(a, &why)) << "a sliding window";
  a.window = 0;
  a.cached_len = 95;
  EXPECT_FALSE(kernels::cudnn_attention_fits(a, &why)) << "keys past the capacity";
  EXPECT_NE(why.find("capacity"), std::string::npos) << why;
}

TEST(GpuAttention, RejectsScaleThatIsNotPositive) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  // Valid in every other respect, so the error can only be the scale's.
  const int d = 64;
  DeviceBuffer q(static_cast<std::size_t>(4 * d) * 2), kv(static_cast<std::size_t>(8 * 4 * d) * 2), out(q.bytes());
  DeviceBuffer len(std::vector<std::int32_t>{3});
  for (DeviceBuffer* buffer : {&q, &kv}) SAMOYEDS_ASSERT_CUDA(cudaMemset(buffer->get(), 0, buffer->bytes()));
  kernels::AttentionArgs a;
  a.q = q.get();
  a.k_cache = kv.get();
  a.v_cache = kv.get();
  a.out = out.get();
  a.seq_len = len.as<std::int32_t>();
  a.num_sequences = 1;
  a.tokens_per_sequence = 1;
  a.num_heads = 4;
  a.num_kv_heads = 4;
  a.head_dim = d;
  a.capacity = 8;
  a.dtype = DType::bf16;
  for (float scale : {0.0f, -0.125f, NAN, INFINITY, 1e-45f}) {
    a.scale = scale;
    try {
      kernels::attention(a, nullptr);
      ADD_FAILURE() << "scale " << scale << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("scale"), std::string::npos) << e.what();
    }
  }
  a.scale = 0.125f;
  EXPECT_NO_THROW(kernels::attention(a, nullptr));
  SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace samoyeds
