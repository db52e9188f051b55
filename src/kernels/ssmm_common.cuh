// SPDX-License-Identifier: Apache-2.0
// What the SSMM kernels of both paths share: launch parameters, the epilogue math, output stores
// and the token-slot convention.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/half_math.cuh"
#include "kernels/tile_order.h"
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
  // sm90 paired gate/up, staged: both consumers finish half the slots each (SAMOYEDS_SSMM_SPLIT_EPILOGUE;
  // docs/kernels/ssmm.md v25). Beside y_f32, in padding: the other fields keep their offsets.
  bool split_epilogue;
  // split-K: CTA z covers k-tiles [z * k_tiles_per_split, ...). The wgmma kernels write fp32 partial
  // products to workspace [splits][num_mats][L][rows] and a reduce kernel sums them in split order,
  // then the epilogue; the decode kernel's split CTAs add theirs within a cluster (no workspace).
  int splits;
  std::int64_t k_tiles_per_split;
  float* workspace;
  // Grouped launch (all experts of a layer): matrix e of each stack starts e * *_stride elements after
  // matrix 0, and expert e's slots are [expert_offsets[e], expert_offsets[e + 1]) clamped to [0, L).
  // gridDim.y covers an upper bound of the token tiles (grid_token_tiles); CTAs past the real count exit.
  const std::int32_t* expert_offsets;  // [E + 1] int32, or null: one matrix, slots [0, L)
  int num_experts;
  // Launch order of the sm90 kernel's output tiles (tile_order.h): token tiles per band, 1 = row
  // tiles fastest (the sm80 kernel always walks row tiles fastest).
  int tile_band;
  // sm90 cp.async variant: A values and metadata come by bulk tensor copies (the launch's maps) while
  // the producer warpgroup gathers B (SAMOYEDS_SSMM_A_TMA; docs/kernels/ssmm.md v8).
  int a_by_tma;
  // sm90 cp.async variant: how many of the first stages' A values and metadata the consumers copy
  // while the token ids load (the producer copies the rest; docs/kernels/ssmm.md v15).
  int early_stages;
  std::int64_t values_stride, metadata_stride, select_stride;
};

// Token tiles gridDim.y must cover: sum over experts of ceil(L_e / bn) <= floor(L / bn) + min(E, L),
// since the L_e add up to at most L and only non-empty experts round up.
inline std::int64_t grid_token_tiles(const Params& p, int bn) {
  if (!p.expert_offsets) return (p.L + bn - 1) / bn;
  return p.L / bn + std::min<std::int64_t>(p.num_experts, p.L);
}

// Where the k-tiles of a CTA's range fall in the row-selection segments, advanced once per k-tile:
// a division by the runtime segment length per k-tile cost the consumers a ~25-instruction dependent
// chain on their critical path (ncu source counters, docs/kernels/ssmm.md v5).
struct SegmentCursor {
  int per_segment;  // k-tiles per segment; 0 without row selection
  int offset;       // this k-tile's position in its segment
  int index;        // this k-tile's segment
  __device__ __forceinline__ SegmentCursor(int kt_per_segment, int kt)
      : per_segment(kt_per_segment), offset(kt_per_segment ? kt % kt_per_segment : 0), index(kt_per_segment ? kt / kt_per_segment : 0) {}
  __device__ __forceinline__ bool starts() const { return per_segment != 0 && offset == 0; }
  __device__ __forceinline__ void next() {
    if (++offset == per_segment) {
      offset = 0;
      ++index;
    }
  }
};

// One CTA's token tile: slots [begin, min(begin + kBN, end)) of expert `expert`.
struct TileSlots {
  std::int64_t begin;
  std::int64_t end;  // one past the expert's last slot
  int expert;
};

// Maps token tile `tile` to its expert and slots, in one warp (every lane gets the result; no shared
// memory, no barrier): the experts' tile counts are scanned 32 at a time (tiles ordered by expert, then
// by slot). False when the tile is past the last expert's. The sm90 persistent kernel's warps walk
// their tiles this way, each on its own.
template <int kBN>
__device__ __forceinline__ bool find_tile_in_warp(const Params& p, int tile, TileSlots& out) {
  if (!p.expert_offsets) {
    out = {static_cast<std::int64_t>(tile) * kBN, p.L, 0};
    return true;
  }
  const int lane = threadIdx.x % 32;
  const int L = static_cast<int>(p.L);
  int tiles_before = 0;  // tiles of the experts already scanned (warp-uniform)
  for (int e0 = 0; e0 < p.num_experts && tiles_before <= tile; e0 += 32) {
    const int e = e0 + lane;
    int begin = 0, end = 0;
    if (e < p.num_experts) {
      begin = min(max(p.expert_offsets[e], 0), L);
      end = min(max(p.expert_offsets[e + 1], begin), L);
    }
    const int tiles = (end - begin + kBN - 1) / kBN;
    int inclusive = tiles;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int up = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += up;
    }
    const int first = tiles_before + inclusive - tiles;
    const unsigned hit = __ballot_sync(0xffffffffu, tile >= first && tile < first + tiles);
    if (hit != 0u) {  // the experts' tile ranges are disjoint: one lane at most
      const int src = __ffs(static_cast<int>(hit)) - 1;
      out.expert = e0 + src;
      out.begin = __shfl_sync(0xffffffffu, begin + (tile - first) * kBN, src);
      out.end = __shfl_sync(0xffffffffu, end, src);
      return true;
    }
    tiles_before += __shfl_sync(0xffffffffu, inclusive, 31);
  }
  return false;
}

// find_tile_in_warp for a whole CTA (blockIdx.y's tile): warp 0 scans and publishes the hit through
// `s_hit` (3 ints of shared memory); false when the tile is past the last expert's (the whole CTA
// then exits). Every thread of the CTA must call it (it synchronises when grouped).
template <int kBN>
__device__ __forceinline__ bool find_tile(const Params& p, int tile, TileSlots& out, int* s_hit) {
  if (!p.expert_offsets) return find_tile_in_warp<kBN>(p, tile, out);
  if (threadIdx.x < 32) {
    TileSlots hit{};
    const bool found = find_tile_in_warp<kBN>(p, tile, hit);
    if (threadIdx.x == 0) {
      s_hit[0] = found ? hit.expert : -1;
      s_hit[1] = static_cast<int>(hit.begin);
      s_hit[2] = static_cast<int>(hit.end);
    }
  }
  __syncthreads();
  if (s_hit[0] < 0) return false;
  out = {s_hit[1], s_hit[2], s_hit[0]};
  return true;
}

// The arrays of expert `expert`'s matrices (matrix 0 of the stack for a single product).
template <int kNumMats>
struct MatrixArrays {
  const std::uint16_t* values[kNumMats];
  const std::uint32_t* metadata[kNumMats];
  const std::uint32_t* row_select[kNumMats];
};

template <int kNumMats>
__device__ __forceinline__ MatrixArrays<kNumMats> matrix_arrays(const Params& p, int expert) {
  MatrixArrays<kNumMats> a;
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) {
    a.values[m] = p.values[m] + expert * p.values_stride;
    a.metadata[m] = p.metadata[m] + expert * p.metadata_stride;
    a.row_select[m] = p.row_select[m] ? p.row_select[m] + expert * p.select_stride : nullptr;
  }
  return a;
}

// Row selection by running totals on warp-level mma.sp fragments (ssmm_sm80.cu, ssmm_decode.cu). Per
// matrix a thread holds acc[set][mt][nt][f]: set 0 the running total T, set 1 the odd rows' S, for its
// rows g and g + 8 (h = 0, 1: fragments 2h, 2h + 1) of the m16 tiles mt = 0, 1 and kNT n8 tiles. Bit
// (mt * 2 + h) of `sel` is the row's selection in the current segment (0 before the first).
template <int kNT>
__device__ __forceinline__ void zero_fragments(float (&acc)[2][2][kNT][4]) {
#pragma unroll
  for (int s = 0; s < 2; ++s)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int f = 0; f < 4; ++f) acc[s][mt][nt][f] = 0.0f;
}

// Enters the segment whose select word is `word` (bit i: compressed row i of the 32 rows the two m16
// tiles cover): S += (p - n) T for each row whose selection goes from p to n, one FFMA per accumulator.
template <int kNT>
__device__ __forceinline__ void enter_select_segment(float (&acc)[2][2][kNT][4], std::uint32_t& sel, std::uint32_t word, int g) {
  std::uint32_t next = 0;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) next |= ((word >> (mt * 16 + g + 8 * h)) & 1u) << (mt * 2 + h);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int bit = mt * 2 + h;
      const float c = static_cast<float>(static_cast<int>((sel >> bit) & 1u) - static_cast<int>((next >> bit) & 1u));
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int f = 2 * h; f < 2 * h + 2; ++f) acc[1][mt][nt][f] = fmaf(acc[0][mt][nt][f], c, acc[1][mt][nt][f]);
    }
  sel = next;
}

// After the last segment: sets 0 and 1 become logical rows 2r and 2r + 1 (odd = S + sel T, even =
// T - odd; without row selection S stays zero and set 0 keeps the rows).
template <int kNT>
__device__ __forceinline__ void select_sets_to_rows(float (&acc)[2][2][kNT][4], std::uint32_t sel) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float selected = static_cast<float>((sel >> (mt * 2 + h)) & 1u);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int f = 2 * h; f < 2 * h + 2; ++f) {
          const float odd = fmaf(acc[0][mt][nt][f], selected, acc[1][mt][nt][f]);
          acc[0][mt][nt][f] -= odd;
          acc[1][mt][nt][f] = odd;
        }
    }
}

Params make_params(const gpu::SsmmArgs& args);

// Token slot values: a row of X, kNoToken past L (nothing stored), kBadToken for an index outside X
// (stored as NaN so a bad list never yields a plausible result). What such a slot's B row holds is
// the loader's choice (zeros; in the sm90 cp.async producer stale data past L and X's row 0 for a bad
// index): its outputs depend on it alone and are never seen.
constexpr std::int32_t kNoToken = -1;
constexpr std::int32_t kBadToken = -2;

// slot_end: one past the last slot of the CTA's expert (p.L for a single product).
__device__ __forceinline__ std::int32_t token_of_slot(const Params& p, std::int64_t j, std::int64_t slot_end) {
  if (j >= slot_end) return kNoToken;
  const std::int32_t tok = p.token_idx ? p.token_idx[j] : static_cast<std::int32_t>(j);
  return (tok < 0 || tok >= p.num_x_rows) ? kBadToken : tok;
}

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

// Elements at and after `at` (16-bit output, `at` even) in one 4-byte store.
template <bool kBf16>
__device__ __forceinline__ void store_pair(void* y, std::int64_t at, float first, float second) {
  if constexpr (kBf16) {
    reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(y) + at)[0] = __floats2bfloat162_rn(first, second);
  } else {
    reinterpret_cast<__half2*>(static_cast<__half*>(y) + at)[0] = __floats2half2_rn(first, second);
  }
}

void ssmm_sm80(const gpu::SsmmArgs& args, const Params& p, cudaStream_t stream);
// Decode-sized calls of one matrix (tiles of tile_tokens = 8 or 16 slots; ssmm_decode.cu). p.splits
// (at most gpu::kDecodeMaxSplits, one cluster per tile) and p.k_tiles_per_split (in 128-column k-tiles)
// are the caller's plan (gpu::plan_decode); p.workspace is not used.
void ssmm_decode(const gpu::SsmmArgs& args, const Params& p, int tile_tokens, cudaStream_t stream);

// Fills the split fields of `p` (the wgmma kernels: splits = 1 when the workspace is too small) and launches.
void ssmm_sm90(const gpu::SsmmArgs& args, Params p, cudaStream_t stream);
std::size_t ssmm_sm90_workspace_bytes(const gpu::SsmmArgs& args);

}  // namespace samoyeds::kernels
