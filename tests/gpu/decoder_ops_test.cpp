// SPDX-License-Identifier: Apache-2.0
// The decoder's row kernels against their CPU twins: RMSNorm for widths that leave partial 16-byte
// chunk rounds (8, 2304, 6144) and with MiniCPM's output scale, and greedy argmax (ties go to the
// lowest index; NaN never wins), and the QKV bias + RoPE + cache append. Tolerance for RMSNorm: one
// bf16 unit of the result (the sum of squares is added in a different order), plus one more where
// out_scale rounds a second time; for RoPE one unit of the output type (the device may fuse the
// rotation's multiply and add), v exact.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/decoder_ops.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;

TEST(GpuDecoderOps, RmsNormMatchesReference) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  for (const std::int64_t H : {8, 2304, 6144}) {
    for (const float out_scale : {1.0f, 0.25f}) {
      const std::uint64_t seed = 980 + static_cast<std::uint64_t>(H);
      SCOPED_TRACE(testing::seed_trace(seed) + ", H " + std::to_string(H) + ", scale " + std::to_string(out_scale));
      const std::int64_t T = 5;
      const Matrix x = testing::random_normal_matrix(DType::bf16, T, H, seed);
      const Matrix w = testing::random_normal_matrix(DType::bf16, 1, H, seed + 1);
      Matrix want = reference::rms_norm(x, w, 1e-5);
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t c = 0; c < H; ++c) want.set(t, c, want.get(t, c) * out_scale);
      DeviceBuffer dx(x.data(), x.bytes()), dw(w.data(), w.bytes()), dy(x.bytes());
      dy.poison();
      kernels::rms_norm(dx.get(), dw.get(), dy.get(), T, H, 1e-5, out_scale, DType::bf16, nullptr);
      SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
      const auto got = dy.to_host<std::uint16_t>();
      std::int64_t bad = 0;
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t c = 0; c < H; ++c) {
          const double g = half_to_float(DType::bf16, got[static_cast<std::size_t>(t * H + c)]), r = want.get(t, c);
          if (!(std::fabs(g - r) <= std::ldexp(std::fabs(r), -7) * (out_scale == 1.0f ? 1 : 2)) && bad++ < 3)
            ADD_FAILURE() << "(" << t << ", " << c << "): got " << g << ", want " << r;
        }
    }
  }
  EXPECT_THROW(kernels::rms_norm(nullptr, nullptr, nullptr, 1, 12, 1e-5, 1.0f, DType::bf16, nullptr), Error);
}

TEST(GpuDecoderOps, ArgmaxPicksTheFirstLargest) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const std::int64_t vocab = 32003;  // not a multiple of the block's stride
  Matrix logits = testing::random_normal_matrix(DType::f32, 4, vocab, 990);
  logits.set(0, 17, 100.0f);
  logits.set(0, 30000, 100.0f);  // a tie: the lower index wins
  logits.set(1, vocab - 1, 50.0f);
  for (std::int64_t v = 0; v < vocab; ++v) logits.set(2, v, NAN);
  logits.set(2, 123, 1.0f);      // NaN never wins
  logits.set(3, 4096, 7.0f);
  DeviceBuffer dl(logits.data(), logits.bytes()), out(4 * sizeof(std::int32_t));
  out.poison();
  kernels::argmax_rows(dl.as<float>(), 4, vocab, out.as<std::int32_t>(), nullptr);
  SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(out.to_host<std::int32_t>(), reference::greedy(logits));
  EXPECT_EQ(out.to_host<std::int32_t>(), (std::vector<std::int32_t>{17, static_cast<std::int32_t>(vocab - 1), 123, 4096}));
}

// q_out, the k and v cache rows of each token against reference::rope on the same rounded inputs, over
// shapes whose pair count is not a multiple of the block (d = 80), decode sizes (one token per
// sequence: heads split over blocks) and prefill sizes, with and without biases, positions past
// 10^5 (double angles) and cache rows that must stay untouched.
TEST(GpuDecoderOps, QkvRopeAppendMatchesReference) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  struct Case {
    DType dtype;
    int heads, kv_heads, d, sequences, tokens;
    std::int32_t first_len;  // sequence b starts at first_len + 3 b
    std::int64_t capacity;
    bool bias;
    double theta;
  };
  const Case cases[] = {
      {DType::bf16, 32, 8, 128, 2, 1, 7, 16, false, 1e6},     // Mixtral decode
      {DType::bf16, 32, 8, 128, 1, 300, 0, 300, false, 1e6},  // a prefill from empty
      {DType::f16, 5, 1, 80, 3, 4, 2, 16, true, 10000.0},     // d / 2 = 40 pairs, Qwen-style biases
      {DType::bf16, 3, 3, 64, 1, 2, 100000, 100002, true, 10000.0},
      {DType::bf16, 32, 8, 128, 4, 25, 1, 40, false, 1e6},    // 100 tokens: 7 heads per block, the last has 5
      {DType::f16, 4, 2, 64, 1, 600, 5, 605, true, 10000.0},  // > 512 tokens: every head in one block
  };
  std::uint64_t seed = 1200;
  for (const Case& c : cases) {
    ++seed;
    SCOPED_TRACE(testing::seed_trace(seed) + ", heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + ", d " +
                 std::to_string(c.d) + ", " + std::to_string(c.sequences) + " x " + std::to_string(c.tokens) + " tokens");
    const int q_dim = c.heads * c.d, kv_dim = c.kv_heads * c.d, width = q_dim + 2 * kv_dim;
    const std::int64_t T = static_cast<std::int64_t>(c.sequences) * c.tokens;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> qkv(static_cast<std::size_t>(T * width));
    for (float& v : qkv) v = normal(rng);
    std::vector<std::uint16_t> bias(static_cast<std::size_t>(width));
    for (auto& b : bias) b = float_to_half(c.dtype, 0.5f * normal(rng));
    std::vector<std::int32_t> seq_len(static_cast<std::size_t>(c.sequences));
    for (int b = 0; b < c.sequences; ++b) seq_len[static_cast<std::size_t>(b)] = c.first_len + 3 * b;

    const std::size_t cache_elems = static_cast<std::size_t>(c.sequences * c.capacity * kv_dim);
    DeviceBuffer d_qkv(qkv), d_bias(bias), d_len(seq_len), d_q(static_cast<std::size_t>(T * q_dim) * 2),
        d_k(cache_elems * 2), d_v(cache_elems * 2);
    d_q.poison();
    d_k.poison();
    d_v.poison();
    kernels::QkvRopeArgs args;
    args.qkv = d_qkv.as<float>();
    args.bias = c.bias ? d_bias.get() : nullptr;
    args.q_out = d_q.get();
    args.k_cache = d_k.get();
    args.v_cache = d_v.get();
    args.seq_len = d_len.as<std::int32_t>();
    args.num_sequences = c.sequences;
    args.tokens_per_sequence = c.tokens;
    args.num_heads = c.heads;
    args.num_kv_heads = c.kv_heads;
    args.head_dim = c.d;
    args.capacity = c.capacity;
    args.rope_theta = c.theta;
    args.dtype = c.dtype;
    kernels::qkv_rope_append(args, nullptr);
    SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
    const auto q = d_q.to_host<std::uint16_t>(), k = d_k.to_host<std::uint16_t>(), v = d_v.to_host<std::uint16_t>();

    const int unit_exponent = c.dtype == DType::bf16 ? -7 : -10;
    std::int64_t bad = 0, exact = 0, compared = 0;
    auto expect_close = [&](std::uint16_t got_bits, float want, const char* what, std::int64_t t, int col) {
      const float got = half_to_float(c.dtype, got_bits);
      ++compared;
      if (got == want) ++exact;
      if (!(std::fabs(got - want) <= std::max(std::ldexp(std::fabs(want), unit_exponent), 1e-6f)) && bad++ < 3)
        ADD_FAILURE() << what << " token " << t << " column " << col << ": got " << got << ", want " << want;
    };
    std::vector<bool> written(static_cast<std::size_t>(c.sequences * c.capacity), false);
    for (std::int64_t t = 0; t < T; ++t) {
      const int b = static_cast<int>(t / c.tokens);
      const std::int64_t position = seq_len[static_cast<std::size_t>(b)] + t % c.tokens;
      const std::int64_t cache_row = b * c.capacity + position;
      written[static_cast<std::size_t>(cache_row)] = true;
      std::vector<float> row(static_cast<std::size_t>(width));
      for (int col = 0; col < width; ++col) {
        const float b_col = c.bias ? half_to_float(c.dtype, bias[static_cast<std::size_t>(col)]) : 0.0f;
        row[static_cast<std::size_t>(col)] = round_to(c.dtype, qkv[static_cast<std::size_t>(t * width + col)] + b_col);
      }
      for (int h = 0; h < c.heads + c.kv_heads; ++h)
        reference::rope(std::span<float>(row.data() + h * c.d, static_cast<std::size_t>(c.d)), position, c.theta);
      for (int col = 0; col < q_dim; ++col)
        expect_close(q[static_cast<std::size_t>(t * q_dim + col)], round_to(c.dtype, row[static_cast<std::size_t>(col)]), "q", t, col);
      for (int col = 0; col < kv_dim; ++col) {
        expect_close(k[static_cast<std::size_t>(cache_row * kv_dim + col)], round_to(c.dtype, row[static_cast<std::size_t>(q_dim + col)]),
                     "k", t, col);
        if (v[static_cast<std::size_t>(cache_row * kv_dim + col)] !=
                float_to_half(c.dtype, row[static_cast<std::size_t>(q_dim + kv_dim + col)]) &&
            bad++ < 3)
          ADD_FAILURE() << "v token " << t << " column " << col << " differs";
      }
    }
    EXPECT_GT(exact, compared * 9 / 10) << "most rotated values should match the reference exactly";
    for (std::size_t r = 0; r < written.size(); ++r)
      if (!written[r])
        for (int col = 0; col < kv_dim; ++col)
          if (k[r * kv_dim + col] != 0xFFFF || v[r * kv_dim + col] != 0xFFFF) {
            ADD_FAILURE() << "cache row " << r << " was written, no token has its position";
            break;
          }
  }
  kernels::QkvRopeArgs bad_args;
  bad_args.num_sequences = 1;
  bad_args.tokens_per_sequence = 1;
  bad_args.num_heads = 4;
  bad_args.num_kv_heads = 1;
  bad_args.head_dim = 7;  // odd
  EXPECT_THROW(kernels::qkv_rope_append(bad_args, nullptr), Error);
  bad_args.head_dim = 64;
  bad_args.num_kv_heads = 0;
  EXPECT_THROW(kernels::qkv_rope_append(bad_args, nullptr), Error);
}

// The fused residual add + norm against the two kernels it replaces, bit for bit (the same arithmetic
// in the same order): x after the add and the normalised rows, widths with partial chunk rounds.
TEST(GpuDecoderOps, AddResidualRmsNormEqualsAddThenNorm) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  for (const DType dtype : {DType::bf16, DType::f16}) {
    for (const std::int64_t H : {8, 2304, 6144}) {
      for (const float scale : {1.0f, 0.37f}) {
        const std::uint64_t seed = 1300 + static_cast<std::uint64_t>(H);
        SCOPED_TRACE(testing::seed_trace(seed) + ", " + dtype_name(dtype) + ", H " + std::to_string(H) + ", scale " +
                     std::to_string(scale));
        const std::int64_t T = 3;
        const Matrix x = testing::random_normal_matrix(dtype, T, H, seed);
        const Matrix branch = testing::random_normal_matrix(dtype, T, H, seed + 1);
        const Matrix w = testing::random_normal_matrix(dtype, 1, H, seed + 2);
        DeviceBuffer dx_fused(x.data(), x.bytes()), dx_split(x.data(), x.bytes()), db(branch.data(), branch.bytes()),
            dw(w.data(), w.bytes()), dy_fused(x.bytes()), dy_split(x.bytes());
        dy_fused.poison();
        dy_split.poison();
        kernels::add_residual_rms_norm(dx_fused.get(), db.get(), scale, dw.get(), dy_fused.get(), T, H, 1e-5, 1.0f, dtype, nullptr);
        kernels::add_residual(dx_split.get(), db.get(), dx_split.get(), T * H, scale, dtype, nullptr);
        kernels::rms_norm(dx_split.get(), dw.get(), dy_split.get(), T, H, 1e-5, 1.0f, dtype, nullptr);
        SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
        EXPECT_EQ(dx_fused.to_host<std::uint16_t>(), dx_split.to_host<std::uint16_t>()) << "x after the add";
        EXPECT_EQ(dy_fused.to_host<std::uint16_t>(), dy_split.to_host<std::uint16_t>()) << "normalised rows";
        const std::vector<std::uint16_t> x_before(x.half_data(), x.half_data() + x.numel());
        EXPECT_NE(dx_fused.to_host<std::uint16_t>(), x_before) << "x was not written back";
      }
    }
  }
  DeviceBuffer dx(16 * 2), dw(16 * 2), dy(16 * 2);
  EXPECT_THROW(kernels::add_residual_rms_norm(dx.get(), nullptr, 1.0f, dw.get(), dy.get(), 1, 16, 1e-5, 1.0f, DType::bf16, nullptr),
               Error);
}

// The gated-MLP activation: the 16-byte path (aligned rows, I % 8 == 0) against the one-element path
// (the same data one element further into the buffers, so 2-byte aligned), bit for bit; both against
// the formula on the host (expf against the device's __expf: within one bf16 unit); rows past the
// device-side count stay as poisoned.
TEST(GpuDecoderOps, SiluMulChunksEqualElementsAndFormula) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  for (const int num_mats : {2, 3}) {
    const std::int64_t rows = 5, I = 1408;
    const std::int32_t rows_used = 3;
    const std::uint64_t seed = 1600 + static_cast<std::uint64_t>(num_mats);
    SCOPED_TRACE(testing::seed_trace(seed) + ", " + std::to_string(num_mats) + " matrices");
    const Matrix gu = testing::random_normal_matrix(DType::bf16, rows, num_mats * I, seed);
    const std::size_t gu_bytes = gu.bytes(), a_bytes = static_cast<std::size_t>(rows * I) * 2;
    // Buffers one element longer: the second call reads and writes at an offset of one element.
    DeviceBuffer d_gu(gu_bytes + 16), d_a(a_bytes + 16), d_rows(std::vector<std::int32_t>{rows_used});
    std::vector<std::uint16_t> chunked, elementwise;
    for (const std::size_t offset : {std::size_t{0}, std::size_t{2}}) {
      auto* gu_ptr = static_cast<std::uint8_t*>(d_gu.get()) + offset;
      auto* a_ptr = static_cast<std::uint8_t*>(d_a.get()) + offset;
      SAMOYEDS_ASSERT_CUDA(cudaMemcpy(gu_ptr, gu.data(), gu_bytes, cudaMemcpyHostToDevice));
      d_a.poison();
      kernels::silu_mul(gu_ptr, a_ptr, d_rows.as<std::int32_t>(), rows, I, num_mats, DType::bf16, nullptr);
      SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
      std::vector<std::uint16_t> out(static_cast<std::size_t>(rows * I));
      SAMOYEDS_ASSERT_CUDA(cudaMemcpy(out.data(), a_ptr, a_bytes, cudaMemcpyDeviceToHost));
      (offset == 0 ? chunked : elementwise) = out;
    }
    EXPECT_EQ(chunked, elementwise) << "the 16-byte and the one-element paths differ";
    std::int64_t bad = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t i = 0; i < I; ++i) {
        const std::uint16_t got_bits = chunked[static_cast<std::size_t>(r * I + i)];
        if (r >= rows_used) {
          if (got_bits != 0xFFFF && bad++ < 3) ADD_FAILURE() << "row " << r << " is past the count but was written";
          continue;
        }
        const float g = gu.get(r, i), u = gu.get(r, I + i);
        float want = g / (1.0f + std::exp(-g)) * u;
        if (num_mats == 3) want *= gu.get(r, 2 * I + i);
        const float got = half_to_float(DType::bf16, got_bits);
        if (!(std::fabs(got - want) <= std::ldexp(std::fabs(want), -7) + 1e-6f) && bad++ < 3)
          ADD_FAILURE() << "(" << r << ", " << i << "): got " << got << ", want " << want;
      }
  }
}

}  // namespace
}  // namespace samoyeds
