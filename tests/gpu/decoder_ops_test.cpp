// SPDX-License-Identifier: Apache-2.0
// The decoder's row kernels against their CPU twins: RMSNorm for widths that leave partial 16-byte
// chunk rounds (8, 2304, 6144) and with MiniCPM's output scale, and greedy argmax (ties go to the
// lowest index; NaN never wins). Tolerance for RMSNorm: one bf16 unit of the result (the sum of
// squares is added in a different order), plus one more where out_scale rounds a second time.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace samoyeds
