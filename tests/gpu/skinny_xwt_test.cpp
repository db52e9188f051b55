// SPDX-License-Identifier: Apache-2.0
// kernels::skinny_xwt (the few-token product of the router and the decode projections) against the
// product on the host, for fp32 and rounded 16-bit outputs. Exact tier: small integers, every partial
// sum an integer below 2^24, so any summation order gives the same fp32 value and a 16-bit output is
// that value rounded once. Realistic tier: normal data, within 2e-5 of sum |x w| (fp32 out) plus one
// unit of the output type (16-bit out). Outputs poisoned before each run with a guard area behind
// them; two runs bitwise equal. Shapes: the Mixtral decode projections (T = 1, N = 6144 and 4096),
// N with a partial last CTA (4097, 3), T with a partial last token tile (9, 19), K not a multiple of
// the 256-thread stride (264, 4104); the one-token kernel in bf16 and fp16.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/skinny_xwt.h"
#include "samoyeds/error.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;

struct Shape {
  std::int64_t T, N, K;
  DType dtype, y_dtype;
};

TEST(GpuSkinnyXwt, MatchesHostProduct) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Shape shapes[] = {
      {1, 6144, 4096, DType::bf16, DType::f32},   // Mixtral QKV at decode
      {1, 4096, 4096, DType::bf16, DType::bf16},  // Mixtral O at decode
      {3, 4097, 264, DType::f16, DType::f16},
      {9, 3, 4104, DType::bf16, DType::bf16},
      {19, 130, 1024, DType::f16, DType::f32},
      {1, 77, 2048, DType::f16, DType::f16},  // the one-token kernel in fp16
  };
  std::uint64_t seed = 1500;
  for (const Shape& c : shapes) {
    for (const bool exact : {true, false}) {
      ++seed;
      SCOPED_TRACE(testing::seed_trace(seed) + ", T " + std::to_string(c.T) + ", N " + std::to_string(c.N) + ", K " +
                   std::to_string(c.K) + ", y " + dtype_name(c.y_dtype) + (exact ? ", exact" : ", normal"));
      const Matrix x = exact ? testing::random_int_matrix(c.dtype, c.T, c.K, seed)
                             : testing::random_normal_matrix(c.dtype, c.T, c.K, seed);
      const Matrix w = exact ? testing::random_int_matrix(c.dtype, c.N, c.K, seed + 1)
                             : testing::random_normal_matrix(c.dtype, c.N, c.K, seed + 1, 0.02f);
      const std::size_t y_size = dtype_size(c.y_dtype), count = static_cast<std::size_t>(c.T * c.N);
      constexpr std::size_t kGuardBytes = 256;  // a write past [T, N] changes the guard
      DeviceBuffer dx(x.data(), x.bytes()), dw(w.data(), w.bytes()), dy(count * y_size + kGuardBytes);
      ASSERT_TRUE(kernels::skinny_xwt_fits(dx.get(), dw.get(), c.K));
      std::vector<std::uint8_t> first;
      for (int run = 0; run < 2; ++run) {
        dy.poison();
        kernels::skinny_xwt(dx.get(), dw.get(), dy.get(), c.y_dtype, c.T, c.N, c.K, c.dtype, nullptr);
        SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
        const std::vector<std::uint8_t> bytes = dy.to_host<std::uint8_t>();
        bool guard_intact = true;
        for (std::size_t i = count * y_size; i < bytes.size(); ++i) guard_intact = guard_intact && bytes[i] == 0xFF;
        EXPECT_TRUE(guard_intact) << "skinny_xwt wrote past its [T, N] output";
        if (run == 1) {
          EXPECT_EQ(bytes, first) << "two runs differ";
          break;
        }
        first = bytes;
        auto got_at = [&](std::size_t i) -> double {
          if (c.y_dtype == DType::f32) {
            float v;
            std::memcpy(&v, bytes.data() + 4 * i, 4);
            return v;
          }
          std::uint16_t v;
          std::memcpy(&v, bytes.data() + 2 * i, 2);
          return half_to_float(c.y_dtype, v);
        };
        const int unit_exponent = c.y_dtype == DType::bf16 ? -7 : -10;
        std::int64_t bad = 0;
        for (std::int64_t t = 0; t < c.T; ++t)
          for (std::int64_t n = 0; n < c.N; ++n) {
            double want = 0, magnitude = 0;
            for (std::int64_t k = 0; k < c.K; ++k) {
              const double p = static_cast<double>(x.get(t, k)) * w.get(n, k);
              want += p;
              magnitude += std::fabs(p);
            }
            const double g = got_at(static_cast<std::size_t>(t * c.N + n));
            bool ok;
            if (c.y_dtype == DType::f32) {
              ok = exact ? g == want : std::fabs(g - want) <= 2e-5 * magnitude + 1e-30;
            } else {
              const double rounded = round_to(c.y_dtype, static_cast<float>(want));
              ok = exact ? g == rounded
                         : std::fabs(g - want) <= 2e-5 * magnitude + std::ldexp(std::fabs(want), unit_exponent) + 1e-30;
            }
            if (!ok && bad++ < 3) ADD_FAILURE() << "y(" << t << ", " << n << "): got " << g << ", want " << want;
          }
      }
    }
  }
}

// A token's outputs do not depend on the call's other tokens: the one-token kernel (T = 1) and the
// 8-token one (T = 9: the token in a full tile and in a partial one) give the same bits.
TEST(GpuSkinnyXwt, OneTokenEqualsItsRowOfALargerCall) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const std::int64_t T = 9, N = 37, K = 2056;
  const std::uint64_t seed = 1550;
  SCOPED_TRACE(testing::seed_trace(seed));
  const Matrix x = testing::random_normal_matrix(DType::bf16, T, K, seed);
  const Matrix w = testing::random_normal_matrix(DType::bf16, N, K, seed + 1, 0.02f);
  DeviceBuffer dx(x.data(), x.bytes()), dw(w.data(), w.bytes()), all(static_cast<std::size_t>(T * N) * 4),
      one(static_cast<std::size_t>(N) * 4);
  all.poison();
  kernels::skinny_xwt(dx.get(), dw.get(), all.get(), DType::f32, T, N, K, DType::bf16, nullptr);
  SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> all_host = all.to_host<float>();
  for (const std::int64_t t : {0, 8}) {
    one.poison();
    const auto* row = static_cast<const std::uint8_t*>(dx.get()) + t * K * 2;
    kernels::skinny_xwt(row, dw.get(), one.get(), DType::f32, 1, N, K, DType::bf16, nullptr);
    SAMOYEDS_ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> got = one.to_host<float>();
    EXPECT_EQ(std::memcmp(got.data(), all_host.data() + t * N, static_cast<std::size_t>(N) * 4), 0) << "token " << t;
  }
}

TEST(GpuSkinnyXwt, RejectsBadArguments) {
  // Rejected on the host before any launch (the pointers are never dereferenced).
  alignas(16) static std::uint16_t host[64];
  void* p = host;
  EXPECT_THROW(kernels::skinny_xwt(p, p, p, DType::f16, 1, 4, 8, DType::bf16, nullptr), Error);      // y type
  EXPECT_THROW(kernels::skinny_xwt(p, p, p, DType::f32, 1, 4, 8, DType::f32, nullptr), Error);       // x type
  EXPECT_THROW(kernels::skinny_xwt(p, p, p, DType::f32, -1, 4, 8, DType::bf16, nullptr), Error);     // T < 0
  EXPECT_THROW(kernels::skinny_xwt(p, p, p, DType::f32, kernels::kSkinnyMaxTokens + 1, 4, 8, DType::bf16, nullptr),
               Error);
  EXPECT_THROW(kernels::skinny_xwt(p, p, nullptr, DType::f32, 1, 4, 8, DType::bf16, nullptr), Error);  // null y
  EXPECT_THROW(kernels::skinny_xwt(p, p, p, DType::f32, 1, 4, 12, DType::bf16, nullptr), Error);       // K % 8
  EXPECT_FALSE(kernels::skinny_xwt_fits(host + 1, p, 8));  // misaligned x
  EXPECT_FALSE(kernels::skinny_xwt_fits(p, p, 0));
  EXPECT_TRUE(kernels::skinny_xwt_fits(p, p, 4096));
}

}  // namespace
}  // namespace samoyeds
