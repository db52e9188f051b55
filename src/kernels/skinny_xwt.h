// SPDX-License-Identifier: Apache-2.0
// Products with few tokens, y [T, N] = x [T, K] · w [N, K]^T, where cuBLAS leaves bandwidth unused:
// the router logits (N = E, any T) and a decode step's attention projections (T <= 8; docs/model.md:
// cuBLAS ran the Mixtral O projection as a split-K GEMM plus a reduce, 15.6 µs for 33.5 MB of
// weights that stream in 7.8 µs).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "samoyeds/dtype.h"

namespace samoyeds::kernels {

// The grid's y limit in tiles of 8 tokens.
constexpr std::int64_t kSkinnyMaxTokens = std::int64_t{65535} * 8;

// Whether skinny_xwt takes these operands: K a positive multiple of 8, x and w 16-byte aligned.
bool skinny_xwt_fits(const void* x, const void* w, std::int64_t K);

// y [T, N] row-major = x [T, K] (bf16/fp16, row-major) times w [N, K]^T (same dtype), fp32
// accumulation in a fixed order (bitwise reproducible), y fp32 or rounded once to bf16/fp16 (y_dtype
// = dtype). A CTA computes 4 output columns for 8 tokens, its 256 threads splitting K in 16-byte
// chunks: every weight row is read once per 8 tokens. Needs skinny_xwt_fits and T <= kSkinnyMaxTokens;
// T = 0 or N = 0 launches nothing.
void skinny_xwt(const void* x, const void* w, void* y, DType y_dtype, std::int64_t T, std::int64_t N, std::int64_t K,
                DType dtype, cudaStream_t stream);

}  // namespace samoyeds::kernels
