// SPDX-License-Identifier: Apache-2.0
// SSMM, portable path (sm_80+, also runs on Hopper): warp-level mma.sp.m16n8k32 with fp32 accumulation.
//
// Algorithm. A CTA computes 64 compressed rows x 64 tokens. K is walked in 64-column tiles through a
// 3-stage cp.async pipeline: the A tile (packed values, 64 rows x 32 values per matrix) is contiguous;
// the B tile gathers the 64 token rows X[token_idx[j], k0:k0+64] (zero-filled past L or K, so no X[idx]
// copy exists). Metadata words (docs/format.md §3.2 is the mma.sp register layout) and, at segment
// starts, the row-select words come with the stage (read from global memory by the MMA warps they put
// a memory latency before each k-tile's first MMA). Row selection (1:2:V) keeps two accumulator sets per compressed row, as
// the sm_90 path does: the MMA always accumulates into set 0, the running total T of row r; set 1, S,
// gathers the odd logical row 2r + 1 as differences of T (S += (p - n) T at a segment boundary where
// the row's selection goes from p to n: one FFMA per accumulator, no branch). After the last
// segment, odd = S + sel T and even = T - odd.
// Grouped launch: blockIdx.y walks the token tiles of all experts (find_tile, ssmm_common.cuh).
// Warps: 2 (rows) x kWarpsN (tokens); one weight matrix: 4 warps, warp tile 32 x 32 (2 x 4 MMA tiles);
// gate/up (2-3 matrices): 8 warps, warp tile 32 x 16, so the accumulators stay in registers.
// Budget: smem 3 x (8 KB B + 4.5 KB per matrix + 128 B select words) + 256 B token ids (up to 65.1 KB
// for OpenMoE's three matrices); registers: 64 fp32 accumulators per matrix.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "kernels/cuda_check.h"
#include "kernels/ptx.cuh"
#include "kernels/ssmm_common.cuh"
#include "samoyeds/ssmm.h"

namespace samoyeds::kernels {

namespace {

constexpr int kBM = 64;      // compressed rows per CTA
constexpr int kBN = 64;      // tokens per CTA
constexpr int kBK = 64;      // logical columns per k-tile (32 stored values per row)
constexpr int kStages = 3;
constexpr int kATileBytes = kBM * (kBK / 2) * 2;  // 4 KB per matrix
constexpr int kMetaTileBytes = (kBM / 16) * 2 * 64;  // 512 B per matrix: 4 row tiles x 2 k-steps x 16 words
constexpr int kBTileBytes = kBN * kBK * 2;        // 8 KB
constexpr int kSelectBytes = 128;                 // 2 row-select words per matrix, padded to keep stages 128-byte aligned

constexpr int stage_bytes(int num_mats) { return num_mats * (kATileBytes + kMetaTileBytes) + kBTileBytes + kSelectBytes; }
constexpr int smem_bytes(int num_mats) { return kStages * stage_bytes(num_mats) + kBN * 4; }

template <int kNumMats>
struct WarpLayout {
  static constexpr int kWarpsN = kNumMats == 1 ? 2 : 4;
  static constexpr int kThreads = 64 * kWarpsN;
  static constexpr int kNT = 8 / kWarpsN;  // n8 tiles per warp
};

template <bool kBf16, int kNumMats, Epi kEpi>
__global__ void __launch_bounds__(WarpLayout<kNumMats>::kThreads) ssmm_sm80_kernel(const Params p) {
  constexpr int kThreads = WarpLayout<kNumMats>::kThreads;
  constexpr int kWarpsN = WarpLayout<kNumMats>::kWarpsN;
  constexpr int kNT = WarpLayout<kNumMats>::kNT;
  extern __shared__ __align__(128) std::uint8_t smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane / 4, t = lane % 4;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * kBM;  // first compressed row of the CTA
  auto* s_tok = reinterpret_cast<std::int32_t*>(smem + kStages * stage_bytes(kNumMats));  // [kBN]
  TileSlots tile;
  if (!find_tile<kBN>(p, blockIdx.y, tile, s_tok)) return;  // past the last expert's tiles (grouped)
  const std::int64_t tok0 = tile.begin;  // first token slot of the CTA
  const MatrixArrays<kNumMats> mats = matrix_arrays<kNumMats>(p, tile.expert);
  __syncthreads();  // find_tile's result is read before s_tok is overwritten

  // Token ids of the CTA's 64 slots (kNoToken / kBadToken: see ssmm_common.cuh).
  for (int i = threadIdx.x; i < kBN; i += kThreads) s_tok[i] = token_of_slot(p, tok0 + i, tile.end);
  __syncthreads();

  const std::int64_t values_per_row = p.K_padded / 2;
  const std::int64_t ksteps_per_row = p.K_padded / 32;
  const int kt_per_segment = p.row_select_on ? p.v / kBK : 0;  // V is a multiple of 64 (can_implement)
  // The metadata and, at a segment's first k-tile, the row-select words travel with the stage: read
  // from global memory by the MMA warps they put a memory latency before every k-tile's first MMA.
  SegmentCursor load_segment(kt_per_segment, 0);  // the k-tile load_stage is called for next (in order)
  // Each thread copies the same chunk positions every k-tile, so everything but the k offset is
  // computed here once (the sm90 producer's lesson, docs/kernels/ssmm.md v4): A chunk tid % 4 of rows
  // tid / 4 + (kThreads / 4) j, B chunk tid % 8 of token rows tid / 8 + (kThreads / 8) j. The rows of
  // one thread share their swizzle phase, so only the row offset differs between its copies.
  constexpr int kACopies = kBM * 4 / kThreads, kBCopies = kBN * 8 / kThreads;
  static_assert(kBM * 4 % kThreads == 0 && kBN * 8 % kThreads == 0, "whole copies per thread");
  const int a_row = threadIdx.x / 4, a_chunk = threadIdx.x % 4;
  const int a_dst = a_row * 64 + ((a_chunk ^ ((a_row >> 1) & 3)) * 16);  // [64 rows][4 chunks of 8 values], chunk ^= (row/2)%4
  const std::uint16_t* a_src[kNumMats];
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) a_src[m] = mats.values[m] + (row0 + a_row) * values_per_row + a_chunk * 8;
  const int b_row = threadIdx.x / 8, b_chunk = threadIdx.x % 8;
  const int b_dst = b_row * 128 + ((b_chunk ^ (b_row & 7)) * 16);  // [64 tokens][8 chunks of 8], chunk ^= token%8
  const std::uint16_t* b_src[kBCopies];  // null: the slot has no token (zero-filled)
#pragma unroll
  for (int j = 0; j < kBCopies; ++j) {
    const std::int32_t tok = s_tok[b_row + (kThreads / 8) * j];
    b_src[j] = tok >= 0 ? p.x + static_cast<std::int64_t>(tok) * p.K + b_chunk * 8 : nullptr;
  }
  auto load_stage = [&](int stage, int kt) {
    std::uint8_t* base = smem + stage * stage_bytes(kNumMats);
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      std::uint8_t* a_tile = base + m * kATileBytes;
#pragma unroll
      for (int j = 0; j < kACopies; ++j)
        ptx::cp_async_16(a_tile + a_dst + j * (kThreads / 4) * 64, a_src[m] + (kThreads / 4) * j * values_per_row + kt * (kBK / 2), 16);
    }
    // Metadata [4 row tiles][2 k-steps][16 words]: a row tile's two k-steps of this k-tile are 128
    // contiguous bytes in global memory (docs/format.md §3.2); the CTA's 64 rows all exist (the padded
    // row count is a multiple of 64) and K_padded is a whole number of 64-column k-tiles.
    std::uint8_t* meta_tile = base + kNumMats * kATileBytes;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
      for (int i = threadIdx.x; i < kMetaTileBytes / 16; i += kThreads) {
        const int tile16 = i / 8, chunk = i % 8;
        const std::uint32_t* src = mats.metadata[m] + ((row0 / 16 + tile16) * ksteps_per_row + kt * 2) * 16 + chunk * 4;
        ptx::cp_async_16(meta_tile + m * kMetaTileBytes + tile16 * 128 + chunk * 16, src, 16);
      }
    std::uint8_t* b_tile = base + kNumMats * (kATileBytes + kMetaTileBytes);
    const bool col_in = static_cast<std::int64_t>(kt) * kBK + b_chunk * 8 < p.K;  // K % 8 == 0: a chunk is all in or all out
#pragma unroll
    for (int j = 0; j < kBCopies; ++j) {
      const bool valid = col_in && b_src[j] != nullptr;
      ptx::cp_async_16(b_tile + b_dst + j * (kThreads / 8) * 128, valid ? b_src[j] + kt * kBK : p.x, valid ? 16 : 0);
    }
    // Word w of matrix m: rows row0 + 32 w .. + 31 of the segment starting at this k-tile.
    if (load_segment.starts() && static_cast<int>(threadIdx.x) < 2 * kNumMats) {
      const int m = threadIdx.x / 2, w = threadIdx.x % 2;
      auto* dst = base + kNumMats * (kATileBytes + kMetaTileBytes) + kBTileBytes + threadIdx.x * 4;
#pragma unroll
      for (int mm = 0; mm < kNumMats; ++mm)  // a compile-time matrix index keeps `mats` in registers
        if (mm == m) ptx::cp_async_4(dst, mats.row_select[mm] + (row0 / 32 + w) * p.num_segments + load_segment.index, 4);
    }
    load_segment.next();
  };

  float acc[kNumMats][2][2][kNT][4];  // [matrix][set][m16 tile][n8 tile][fragment]
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) zero_fragments(acc[m]);
  std::uint32_t sel[kNumMats];  // bit (mt*2 + h): selection of this thread's row (mt, g + 8h) in the current segment
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) sel[m] = 0;

  const int num_kt = static_cast<int>(p.K_padded / kBK);
  const std::int64_t warp_row0 = row0 + warp_m * 32;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_kt) load_stage(s, s);
    ptx::cp_async_commit();
  }

  SegmentCursor segment(kt_per_segment, 0);
  for (int kt = 0; kt < num_kt; ++kt, segment.next()) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt is visible; stage (kt-1) % kStages is free for the next load
    if (kt + kStages - 1 < num_kt) load_stage((kt + kStages - 1) % kStages, kt + kStages - 1);
    ptx::cp_async_commit();

    const std::uint8_t* base = smem + (kt % kStages) * stage_bytes(kNumMats);
    if (segment.starts()) {
      const auto* words = reinterpret_cast<const std::uint32_t*>(base + kNumMats * (kATileBytes + kMetaTileBytes) + kBTileBytes);
      // The thread's four rows lie in one 32-row select word (warp_row0 is a multiple of 32).
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) enter_select_segment(acc[m], sel[m], words[m * 2 + warp_m], g);
    }

    std::uint32_t meta[kNumMats][2][2];  // [matrix][m16 tile][k32 step]
    const auto* meta_words = reinterpret_cast<const std::uint32_t*>(base + kNumMats * kATileBytes);
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int ks = 0; ks < 2; ++ks)
          meta[m][mt][ks] = meta_words[m * (kMetaTileBytes / 4) + ((warp_m * 2 + mt) * 2 + ks) * 16 + g * 2 + (lane & 1)];

    const std::uint8_t* b_tile = base + kNumMats * (kATileBytes + kMetaTileBytes);
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      std::uint32_t b[kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int tok = warp_n * (kNT * 8) + nt * 8 + (lane % 8);
        const int chunk = ks * 4 + lane / 8;
        ptx::ldmatrix_x4(b[nt], b_tile + tok * 128 + ((chunk ^ (tok & 7)) * 16));
      }
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          std::uint32_t a[4];
          const int r = warp_m * 32 + mt * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int chunk = ks * 2 + lane / 16;
          ptx::ldmatrix_x4(a, base + m * kATileBytes + r * 64 + ((chunk ^ ((r >> 1) & 3)) * 16));
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) ptx::mma_sp_16832<kBf16>(acc[m][0][mt][nt], a, b[nt], meta[m][mt][ks]);
        }
      }
    }
  }
  ptx::cp_async_wait<0>();
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) select_sets_to_rows(acc[m], sel[m]);

  // Epilogue: each thread owns, per (m16 tile, half h), compressed row r and tokens 2t, 2t+1 of each n8 tile.
  const int rows_per_crow = p.row_select_on ? 2 : 1;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t crow = warp_row0 + mt * 16 + g + 8 * h;
#pragma unroll
      for (int o = 0; o < 2; ++o) {
        if (o >= rows_per_crow) break;
        const std::int64_t R = crow * rows_per_crow + o;
        if (R >= p.rows) continue;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const int slot = warp_n * (kNT * 8) + nt * 8 + 2 * t + i;
            const std::int32_t tok = s_tok[slot];
            if (tok == kNoToken) continue;
            float v[kNumMats];
#pragma unroll
            for (int m = 0; m < kNumMats; ++m) v[m] = o ? acc[m][1][mt][nt][2 * h + i] : acc[m][0][mt][nt][2 * h + i];
            store<kBf16>(p.y, (tok0 + slot) * p.rows + R, epilogue_value<kEpi, kNumMats>(v, p, tok0 + slot, tok), p.y_f32);
          }
      }
    }
}

template <bool kBf16, int kNumMats, Epi kEpi>
void launch(const Params& p, cudaStream_t stream) {
  constexpr int bytes = smem_bytes(kNumMats);
  auto* kernel = ssmm_sm80_kernel<kBf16, kNumMats, kEpi>;
  SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  const std::int64_t token_tiles = grid_token_tiles(p, kBN);
  SAMOYEDS_CHECK(token_tiles <= 65535, "ssmm: ", p.L, " token slots need ", token_tiles,
                 " tiles of 64; the grid allows 65535: split the call");
  const dim3 grid(static_cast<unsigned>(p.compressed_rows_padded / kBM), static_cast<unsigned>(token_tiles));
  kernel<<<grid, WarpLayout<kNumMats>::kThreads, bytes, stream>>>(p);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm80_kernel");
}

template <bool kBf16>
void dispatch(const gpu::SsmmArgs& a, const Params& p, cudaStream_t stream) {
  switch (a.epilogue) {
    case gpu::SsmmEpilogue::plain: return launch<kBf16, 1, Epi::plain>(p, stream);
    case gpu::SsmmEpilogue::down_weighted: return launch<kBf16, 1, Epi::down_weighted>(p, stream);
    case gpu::SsmmEpilogue::gate_up:
      if (a.gate_linear.values) return launch<kBf16, 3, Epi::gate_up>(p, stream);
      return launch<kBf16, 2, Epi::gate_up>(p, stream);
  }
}

}  // namespace

void ssmm_sm80(const gpu::SsmmArgs& args, const Params& p, cudaStream_t stream) {
  if (args.x_dtype == DType::bf16) {
    dispatch<true>(args, p, stream);
  } else {
    dispatch<false>(args, p, stream);
  }
}

}  // namespace samoyeds::kernels
