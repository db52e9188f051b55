// SPDX-License-Identifier: Apache-2.0
// skinny_xwt (skinny_xwt.h): products with few tokens.
//
// CTA (bx, by) computes output columns 4 bx .. 4 bx + 3 for tokens 8 by .. 8 by + 7. Its 256 threads
// stride over K in 16-byte chunks (thread i takes chunks i, i + 256, ...: two per row at K = 4096),
// so even one token has its weight loads in flight at once instead of one warp walking a row. Each
// thread keeps 4 x 8 fp32 partial sums, reduced by an xor tree per warp and then over the 8 warps
// through shared memory, in a fixed order. The x tile is read once per 4 columns (through L2), each
// weight row once per 8 tokens. Registers: 32 partials + 4 x 8 widened weights (~125 in all: 2 CTAs
// per SM); the one-token kernel keeps 4 partials (~60 registers: 4 CTAs per SM); shared memory 1 KB.
// Bytes at decode (T = 1, Mixtral QKV 6144 x 4096): 50 MB of weights, 1536 CTAs (2.9 waves of 4 CTAs
// per SM), ~11.7 µs at the 4.3 TB/s device copy.
#include "kernels/skinny_xwt.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/half_math.cuh"
#include "samoyeds/error.h"

namespace samoyeds::kernels {
namespace {

constexpr int kTokens = 8;   // tokens per CTA (a call with one token takes the 1-token kernel)
constexpr int kColumns = 4;  // output columns per CTA
constexpr int kThreads = 256;
static_assert(kColumns * kTokens <= kThreads, "one thread writes each output of the CTA");

// Out = float, or T (the product rounded once). kTileTokens = kTokens, or 1 for a one-token call:
// its 4 partials instead of 32 leave registers for more resident CTAs, so more weight loads in flight.
template <class T, class Out, int kTileTokens>
__global__ void __launch_bounds__(kThreads) skinny_xwt_kernel(const T* __restrict__ x,  // [T, K]
                                                              const T* __restrict__ w,  // [N, K]
                                                              Out* __restrict__ y,      // [T, N]
                                                              std::int64_t num_tokens, std::int64_t N, std::int64_t K) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  __shared__ float partial[kThreads / 32][kColumns * kTileTokens];  // [warp][c * kTileTokens + t]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kColumns;
  const std::int64_t columns_left = N - n0;
  const int columns_here = columns_left < kColumns ? static_cast<int>(columns_left) : kColumns;
  const std::int64_t t0 = static_cast<std::int64_t>(blockIdx.y) * kTileTokens;
  const std::int64_t tokens_left = num_tokens - t0;
  const int tokens = tokens_left < kTileTokens ? static_cast<int>(tokens_left) : kTileTokens;
  const T* w_rows = w + n0 * K;   // [columns_here, K]
  const T* x_tile = x + t0 * K;   // [tokens, K]
  float acc[kColumns][kTileTokens];
#pragma unroll
  for (int c = 0; c < kColumns; ++c)
#pragma unroll
    for (int t = 0; t < kTileTokens; ++t) acc[c][t] = 0.0f;
#pragma unroll 2
  for (std::int64_t k = 8 * static_cast<std::int64_t>(threadIdx.x); k < K; k += 8 * kThreads) {
    float wf[kColumns][8];
#pragma unroll
    for (int c = 0; c < kColumns; ++c) {
      if (c < columns_here) widen8<kBf16>(__ldg(reinterpret_cast<const uint4*>(w_rows + c * K + k)), wf[c]);
      else
#pragma unroll
        for (int i = 0; i < 8; ++i) wf[c][i] = 0.0f;
    }
#pragma unroll
    for (int t = 0; t < kTileTokens; ++t) {
      if (t < tokens) {  // (a `break` here kept the loop rolled and the partials in local memory)
        float xf[8];
        widen8<kBf16>(__ldg(reinterpret_cast<const uint4*>(x_tile + t * K + k)), xf);
#pragma unroll
        for (int c = 0; c < kColumns; ++c)
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[c][t] = fmaf(xf[i], wf[c][i], acc[c][t]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kColumns; ++c)
#pragma unroll
    for (int t = 0; t < kTileTokens; ++t) {
      float v = acc[c][t];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0) partial[warp][c * kTileTokens + t] = v;
    }
  __syncthreads();
  if (threadIdx.x < kColumns * kTileTokens) {
    const int c = threadIdx.x / kTileTokens, t = threadIdx.x % kTileTokens;
    float v = 0.0f;
#pragma unroll
    for (int w_idx = 0; w_idx < kThreads / 32; ++w_idx) v += partial[w_idx][threadIdx.x];
    if (c < columns_here && t < tokens) {
      if constexpr (std::is_same_v<Out, float>) y[(t0 + t) * N + n0 + c] = v;
      else y[(t0 + t) * N + n0 + c] = narrow<T>(v);
    }
  }
}

}  // namespace

bool skinny_xwt_fits(const void* x, const void* w, std::int64_t K) {
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  return K > 0 && K % 8 == 0 && aligned(x) && aligned(w);
}

void skinny_xwt(const void* x, const void* w, void* y, DType y_dtype, std::int64_t T, std::int64_t N, std::int64_t K,
                DType dtype, cudaStream_t stream) {
  SAMOYEDS_CHECK(dtype == DType::bf16 || dtype == DType::f16, "skinny_xwt: x and w must be bf16 or fp16, got ",
                 dtype_name(dtype));
  SAMOYEDS_CHECK(y_dtype == DType::f32 || y_dtype == dtype, "skinny_xwt: y must be fp32 or ", dtype_name(dtype),
                 " like x and w, got ", dtype_name(y_dtype));
  SAMOYEDS_CHECK(T >= 0 && N >= 0, "skinny_xwt: T = ", T, " and N = ", N, " must not be negative");
  SAMOYEDS_CHECK(T <= kSkinnyMaxTokens, "skinny_xwt: ", T, " tokens exceed the grid (", kSkinnyMaxTokens,
                 " at most); use the cuBLAS product");
  SAMOYEDS_CHECK((N + kColumns - 1) / kColumns <= 0x7FFFFFFF, "skinny_xwt: N = ", N, " exceeds the grid");
  if (T == 0 || N == 0) return;
  SAMOYEDS_CHECK(x != nullptr && w != nullptr && y != nullptr, "skinny_xwt: x, w and y must be device pointers (one is null)");
  SAMOYEDS_CHECK(skinny_xwt_fits(x, w, K), "skinny_xwt: K (", K,
                 ") must be a positive multiple of 8 with 16-byte aligned x and w; use the cuBLAS product");
  const unsigned column_blocks = static_cast<unsigned>((N + kColumns - 1) / kColumns);
  auto launch = [&](auto tag) {
    using T_ = decltype(tag);
    const auto* xt = static_cast<const T_*>(x);
    const auto* wt = static_cast<const T_*>(w);
    auto run = [&](auto out_tag) {
      using Out = decltype(out_tag);
      auto* yt = static_cast<Out*>(y);
      auto go = [&](auto kernel, int tile_tokens) {
        const dim3 grid(column_blocks, static_cast<unsigned>((T + tile_tokens - 1) / tile_tokens));
        kernel<<<grid, kThreads, 0, stream>>>(xt, wt, yt, T, N, K);
      };
      if (T == 1) go(skinny_xwt_kernel<T_, Out, 1>, 1);
      else go(skinny_xwt_kernel<T_, Out, kTokens>, kTokens);
    };
    if (y_dtype == DType::f32) run(float{});
    else run(T_{});
  };
  if (dtype == DType::bf16) launch(__nv_bfloat16{});
  else launch(__half{});
  SAMOYEDS_CHECK_LAUNCH("skinny_xwt_kernel");
}

}  // namespace samoyeds::kernels
