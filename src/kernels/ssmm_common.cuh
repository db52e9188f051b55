// SPDX-License-Identifier: Apache-2.0
// What the SSMM kernels of both paths share: launch parameters, the epilogue math, output stores
// and the token-slot convention.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "samoyeds/ssmm.h"

namespace samoyeds::kernels {

enum class Epi { plain, gate_up, down_weighted };

struct Params {
  const std::uint16_t* values[3];      // per matrix: [compressed_rows_padded, K_padded / 2]
  const std::uint32_t* metadata[3];    // per matrix: docs/format.md §3.2
  const std::uint32_t* row_select[3];  // per matrix: docs/format.md §3.3, null for plain 2:4
  bool row_select_on;
  std::int64_t rows;                   // logical rows M
  std::int64_t compressed_rows_padded;
  std::int64_t K;                      // logical columns (X row length)
  std::int64_t K_padded;               // cols_padded
  int num_segments;
  int v;                               // segment length (columns); 0 for plain 2:4
  const std::uint16_t* x;              // [T, K]
  std::int64_t num_x_rows;
  const std::int32_t* token_idx;       // [L] or null (all rows)
  std::int64_t L;
  const float* slot_weight;            // [L], down_weighted
  void* y;                             // [L, rows]
  bool y_f32;
  // split-K: CTA z covers k-tiles [z * k_tiles_per_split, ...) and writes fp32 partial products to
  // workspace [splits][num_mats][L][rows]; a reduce kernel sums them in split order, then the epilogue.
  int splits;
  std::int64_t k_tiles_per_split;
  float* workspace;
};

Params make_params(const gpu::SsmmArgs& args);

// Token slot values: a row of X, kNoToken past L (zeros, nothing stored), kBadToken for an index
// outside X (zeros, stored as NaN so a bad list never yields a plausible result).
constexpr std::int32_t kNoToken = -1;
constexpr std::int32_t kBadToken = -2;

__device__ __forceinline__ std::int32_t token_of_slot(const Params& p, std::int64_t j) {
  if (j >= p.L) return kNoToken;
  const std::int32_t tok = p.token_idx ? p.token_idx[j] : static_cast<std::int32_t>(j);
  return (tok < 0 || tok >= p.num_x_rows) ? kBadToken : tok;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }

// The epilogue of slot j: v[m] is matrix m's fp32 product for one output element.
template <Epi kEpi, int kNumMats>
__device__ __forceinline__ float epilogue_value(const float (&v)[kNumMats], const Params& p, std::int64_t slot,
                                                std::int32_t tok) {
  float out = v[0];
  if constexpr (kEpi == Epi::gate_up) {
    out = silu(v[0]) * v[1];
    if constexpr (kNumMats == 3) out *= v[2];
  } else if constexpr (kEpi == Epi::down_weighted) {
    out = p.slot_weight[slot] * v[0];
  }
  return tok == kBadToken ? __int_as_float(0x7fc00000) : out;
}

template <bool kBf16>
__device__ __forceinline__ void store(void* y, std::int64_t at, float value, bool y_f32) {
  if (y_f32) {
    static_cast<float*>(y)[at] = value;
  } else if constexpr (kBf16) {
    static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16_rn(value);
  } else {
    static_cast<__half*>(y)[at] = __float2half_rn(value);
  }
}

void ssmm_sm80(const gpu::SsmmArgs& args, const Params& p, cudaStream_t stream);
// Fills the split fields of `p` (splits = 1 when the workspace is too small) and launches.
void ssmm_sm90(const gpu::SsmmArgs& args, Params p, cudaStream_t stream);
std::size_t ssmm_sm90_workspace_bytes(const gpu::SsmmArgs& args);

}  // namespace samoyeds::kernels
