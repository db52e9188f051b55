// SPDX-License-Identifier: Apache-2.0
// SSMM for decode-sized token tiles: a stream of one packed weight matrix through warp-level
// mma.sp.m16n8k32 with fp32 accumulation, its weights by bulk tensor copies (sm_90a; taken by the sm90
// path where gpu::plan_decode says: one matrix, at most 16 slots per expert (128 for small weights),
// K <= 16384).
//
// Why a kernel of its own: at L <= 16 the product is the weight bytes' time. The wgmma kernel runs one
// 384-thread CTA per SM of 128 compressed rows, so the tall-K shapes need split-K and a reduce launch,
// the wide ones leave SMs idle (96 CTAs of 12288x3072 on 132 SMs), and its fixed costs (ring barriers,
// producer warpgroup, ~200 KB of shared memory per CTA) are a large share of a 10 µs call
// (docs/kernels/ssmm.md v15-v17).
//
// Algorithm. A CTA computes 32 compressed rows (one row-select word) x kBN = 8 or 16 token slots over
// a K range (gridDim.z splits K, as far as the device holds the split grid in one wave). Its kWarps
// warps (8 for 8-slot tiles, 4 for 16) share the range k-tile by k-tile: warp w takes k-tiles w,
// w + kWarps, ... of 128 columns, so the warps read neighbouring 128-byte lines of every weight row at
// any time (64-column k-tiles with a division per k-tile measured 1.1-1.2x slower: v17). Each warp
// streams its k-tiles through a ring of its own, so the k loop has no CTA barrier: lane 0 requests a
// k-tile's A values (32 rows x 64, the 128-byte swizzle ldmatrix reads) and metadata as two tensor
// copies onto the stage's mbarrier, and the lanes gather the B rows of X and the segment's select word
// by cp.async (v18: the per-lane cp.async of A was ~180 instructions per k-tile). The first stages'
// weights are requested before the token ids arrive.
// Row selection by running totals as in ssmm_sm80.cu (set 0 the total T, set 1 the odd rows' S),
// updated at every k-tile whose segment differs from the warp's previous one: the identity holds for
// any in-order subset of a row's segments. At the end each warp converts T/S to logical rows, the
// warps' sums meet in shared memory and are added in warp order (deterministic), then the epilogue
// and 16-bit (or fp32) stores. A split tile's CTAs are one cluster along z: rank r owns a share of the
// tile's outputs, every CTA stores its sums of that share into rank r's shared memory (distributed
// shared memory: remote stores need no reply), and after the cluster barrier each rank adds what it
// received in rank order. No workspace and no reduce launch (that launch cost 3.3-4.4 µs, v18; v19).
// Budget (one matrix): per warp and stage 4.5 KB of weights (A 4 KB + metadata 512 B) + 256 B per slot
// of B + 16 B of select words; 8 warps x 2 stages with 8 slots, 4 x 3 with 16; 107-109 KB per CTA with
// the split's receive region (2-4 KB; the epilogue's sums reuse the rings), two CTAs per SM.
// Registers: 75 (8 slots, 8 warps) / 102 (16 slots). The kernel is written for kNumMats matrices;
// only one is launched (gate/up at one CTA per SM measured slower than the wgmma kernel: v17).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "kernels/cluster.cuh"
#include "kernels/cuda_check.h"
#include "kernels/decode_trace.cuh"
#include "kernels/ptx.cuh"
#include "kernels/ssmm_common.cuh"
#include "kernels/ssmm_sm90.h"
#include "kernels/strided_segment.h"
#include "kernels/tensor_map.h"
#include "kernels/tma.cuh"
#include "kernels/wgmma_common.cuh"
#include "samoyeds/ssmm.h"

namespace samoyeds::kernels {

namespace {

constexpr int kRows = 32;   // compressed rows per CTA: one row-select word
constexpr int kBK = 128;    // logical columns per k-tile: 64 stored values, one 128-byte line per row
static_assert(kBK == gpu::kDecodeKTileColumns, "the host plan counts k-tiles of this width");

// Shared memory, one ring per warp, each array of the stages in a region of its own so that every A
// tile starts on a 1024-byte boundary (where the tensor copies' 128-byte swizzle repeats):
//   A     [kWarps][kStages][kNumMats][32 rows][128 B]    the 128-byte swizzle (chunk c of row r at c ^ (r % 8))
//   meta  [kWarps][kStages][kNumMats][2 row tiles][4 k-steps][16 words]
//   B     [kWarps][kStages][kBN tokens][256 B]           chunk c of token t at c ^ (t % 8)
//   select[kWarps][kStages][16 B]                        a word per matrix
// then the stages' barriers [kWarps][kStages], the token ids [kBN] and the split's receive region.
template <int kNumMats, int kNT, int kWarps>
struct DecodeConfig {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBN = 8 * kNT;                              // token slots per CTA
  static constexpr int kATileBytes = kRows * (kBK / 2) * 2;        // per matrix: 32 rows x 64 values
  static constexpr int kMetaTileBytes = (kRows / 16) * 4 * 16 * 4;  // per matrix: 2 row tiles x 4 k-steps x 16 words
  static constexpr int kBTileBytes = kBN * kBK * 2;                // kBN token rows x 256 B
  static constexpr int kSelectBytes = 16;                          // a select word per matrix, 16-byte padded
  static constexpr int kStageBytes = kNumMats * (kATileBytes + kMetaTileBytes) + kBTileBytes + kSelectBytes;
  // One matrix: two CTAs per SM; two or three: one.
  static constexpr int kRingBudget = (kNumMats == 1 ? 108 : 214) * 1024;
  static constexpr int kStages = std::min(4, kRingBudget / (kWarps * kStageBytes));
  static_assert(kStages >= 2, "a k-tile in flight per warp while it computes another");
  static constexpr int kRingStages = kWarps * kStages;
  static constexpr int kMetaOffset = kRingStages * kNumMats * kATileBytes;
  static constexpr int kBOffset = kMetaOffset + kRingStages * kNumMats * kMetaTileBytes;
  static constexpr int kSelectOffset = kBOffset + kRingStages * kBTileBytes;
  static constexpr int kRingBytes = kSelectOffset + kRingStages * kSelectBytes;
  static_assert(kATileBytes % 1024 == 0 && kRingBytes % 16 == 0, "A tiles on 1024-byte boundaries; barriers 8-byte aligned");
  // The warps' logical-row sums, [warp][matrix][slot][64 logical rows + 4 of padding] fp32, reuse the ring.
  static constexpr int kSumRow = 2 * kRows + 4;
  static constexpr int kSumBytes = kWarps * kNumMats * kBN * kSumRow * 4;
  static constexpr int kRegionBytes = std::max(kRingBytes, kSumBytes);
  static constexpr int kBarrierOffset = kRegionBytes;
  static constexpr int kTokenOffset = kBarrierOffset + kRingStages * 8;
  // Split K: what the cluster's CTAs send this one, [rank][kNumMats][share] fp32 (share: this CTA's
  // ceil(kOutputs / splits) outputs), in a region of its own: a CTA sends while others may still be
  // in their loops.
  static constexpr int kOutputs = kBN * 2 * kRows;  // (slot, logical row) pairs
  static constexpr int kReduceOffset = (kTokenOffset + kBN * 4 + 15) / 16 * 16;
  static constexpr int kSmemBytes = kReduceOffset + kNumMats * (kOutputs + gpu::kDecodeMaxSplits) * 4;
  static constexpr int kMinBlocks = kNumMats == 1 ? 2 : 1;
  static_assert(kMinBlocks * (kSmemBytes + 1024) <= 228 * 1024, "the CTAs per SM fit its shared memory (1 KB reserved each)");
};

// Tensor maps of the weights the kernel streams, per matrix: values [E][compressed rows][K_padded / 2]
// (box 64 values x 32 rows, 128-byte swizzle) and metadata [E][row tiles][k-steps x 16 words] (box 64
// words x 2 row tiles: a k-tile's four k-steps of the CTA's two row tiles).
template <int kNumMats>
struct DecodeMaps {
  CUtensorMap values[kNumMats];
  CUtensorMap metadata[kNumMats];
};

template <bool kBf16, int kNumMats, Epi kEpi, int kNT, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, DecodeConfig<kNumMats, kNT, kWarps>::kMinBlocks)
    ssmm_decode_kernel(const Params p, const __grid_constant__ DecodeMaps<kNumMats> maps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Config = DecodeConfig<kNumMats, kNT, kWarps>;
  constexpr int kThreads = Config::kThreads;
  constexpr int kBN = Config::kBN, kStages = Config::kStages;
  constexpr int kATileBytes = Config::kATileBytes, kMetaTileBytes = Config::kMetaTileBytes;
  // Transaction bytes of a stage's tensor copies: boxes count whole, their out-of-range parts zero-filled.
  constexpr unsigned kTmaBytes = kNumMats * (kATileBytes + kMetaTileBytes);
  extern __shared__ __align__(1024) std::uint8_t smem[];
  if (threadIdx.x == 0) {  // the maps' descriptors, fetched while the tile is found and the barriers set up
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      tma::prefetch_map(&maps.values[m]);
      tma::prefetch_map(&maps.metadata[m]);
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  auto* s_tok = reinterpret_cast<std::int32_t*>(smem + Config::kTokenOffset);  // [kBN]
  TileSlots tile;
  if (!find_tile<kBN>(p, blockIdx.y, tile, s_tok)) return;  // past the last expert's tiles (grouped): the whole cluster
  // A split tile's CTAs send each other their sums at the end; this arrival says the CTA (its shared
  // memory) exists, and the wait for it comes just before the sends.
  if (gridDim.z > 1) cluster_arrive_relaxed();
  DECODE_TRACE(0);
  const std::int64_t tok0 = tile.begin;
  const MatrixArrays<kNumMats> mats = matrix_arrays<kNumMats>(p, tile.expert);
  const int row0 = static_cast<int>(blockIdx.x) * kRows;  // first compressed row (a tensor-map coordinate)
  const int ksteps_per_row = static_cast<int>(p.K_padded / 32);
  // K_padded is a multiple of 64: the last k-tile may hold only two of its four k-steps.
  const int num_kt = (ksteps_per_row + 3) / 4;
  const int kt_begin = static_cast<int>(blockIdx.z * p.k_tiles_per_split);
  const int kt_end = min(num_kt, kt_begin + static_cast<int>(p.k_tiles_per_split));
  const int first_kt = kt_begin + warp;  // this warp's k-tiles: first_kt + kWarps i
  const int my_tiles = kt_end > first_kt ? (kt_end - first_kt + kWarps - 1) / kWarps : 0;
  // This warp's stage s: A of matrix m at a_ring + (s * kNumMats + m) * kATileBytes, and so on.
  std::uint8_t* const a_ring = smem + warp * kStages * kNumMats * kATileBytes;
  std::uint8_t* const meta_ring = smem + Config::kMetaOffset + warp * kStages * kNumMats * kMetaTileBytes;
  std::uint8_t* const b_ring = smem + Config::kBOffset + warp * kStages * Config::kBTileBytes;
  std::uint8_t* const select_ring = smem + Config::kSelectOffset + warp * kStages * Config::kSelectBytes;
  auto* const full = reinterpret_cast<std::uint64_t*>(smem + Config::kBarrierOffset) + warp * kStages;  // [kStages]
  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) tma::mbarrier_init(&full[s], 1);
    tma::fence_mbarrier_init();
  }
  __syncwarp();
  const int kt_per_segment = p.row_select_on ? p.v / kBK : 1;  // V is a multiple of 128 (the sm90 path's rule)

  const std::uint32_t* select_src = nullptr;  // lane m < kNumMats: matrix m's select words of the CTA's rows
#pragma unroll
  for (int m = 0; m < kNumMats; ++m)
    if (lane == m && p.row_select_on) select_src = mats.row_select[m] + (row0 / 32) * p.num_segments;

  // A values and metadata by tensor copies from lane 0, onto the stage's barrier (the last k-tile's
  // second half, past K_padded, is zero-filled); the select words by cp.async with B's group.
  StridedSegment load_segment(kt_per_segment, first_kt, kWarps);  // of the next k-tile load_weights copies
  auto load_weights = [&](int stage, int kt) {
    if (lane == 0) {
      tma::mbarrier_arrive_expect_tx(&full[stage], kTmaBytes);
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) {
        tma::load_3d(a_ring + (stage * kNumMats + m) * kATileBytes, &maps.values[m], &full[stage], kt * (kBK / 2), row0, tile.expert);
        tma::load_3d(meta_ring + (stage * kNumMats + m) * kMetaTileBytes, &maps.metadata[m], &full[stage], kt * 4 * 16, row0 / 16,
                     tile.expert);
      }
    }
    if (select_src) ptx::cp_async_4(select_ring + stage * Config::kSelectBytes + lane * 4, select_src + load_segment.index, 4);
    load_segment.next();
  };

  // First stages' weights before the token ids (which may come from DRAM): one cp.async group.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < my_tiles) load_weights(s, first_kt + kWarps * s);
  ptx::cp_async_commit();

  // Token ids of the CTA's slots (kNoToken / kBadToken: ssmm_common.cuh); find_tile's result was read.
  __syncthreads();
  if (threadIdx.x < kBN) s_tok[threadIdx.x] = token_of_slot(p, tok0 + threadIdx.x, tile.end);
  __syncthreads();
  DECODE_TRACE(1);

  // B: chunk lane % 16 of token rows lane / 16 + 2 j (j < kBN / 2); null source: no token (zero-filled).
  constexpr int kBCopies = kBN / 2;
  const int b_tok = lane / 16, b_chunk = lane % 16;
  const std::uint16_t* b_src[kBCopies];
#pragma unroll
  for (int j = 0; j < kBCopies; ++j) {
    const std::int32_t tok = s_tok[b_tok + 2 * j];
    b_src[j] = tok >= 0 ? p.x + static_cast<std::int64_t>(tok) * p.K + b_chunk * 8 : nullptr;
  }
  auto load_tokens = [&](int stage, int kt) {
    std::uint8_t* b_tile = b_ring + stage * Config::kBTileBytes;
    const bool col_in = static_cast<std::int64_t>(kt) * kBK + b_chunk * 8 < p.K;  // K % 8 == 0: a chunk is all in or all out
#pragma unroll
    for (int j = 0; j < kBCopies; ++j) {
      const int row = b_tok + 2 * j;
      const bool valid = col_in && b_src[j] != nullptr;
      ptx::cp_async_16(b_tile + row * 256 + ((b_chunk ^ (row & 7)) * 16), valid ? b_src[j] + kt * kBK : p.x, valid ? 16 : 0);
    }
  };
  // One group per stage from here: group i holds k-tile i's B (and, past the prologue, its weights).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < my_tiles) load_tokens(s, first_kt + kWarps * s);
    ptx::cp_async_commit();
  }

  float acc[kNumMats][2][2][kNT][4];  // [matrix][set T / S][m16 tile][n8 tile][fragment]
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) zero_fragments(acc[m]);
  std::uint32_t sel[kNumMats];  // bit (mt * 2 + h): selection of this thread's row (mt, g + 8 h) in the current segment
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) sel[m] = 0;
  StridedSegment segment(kt_per_segment, first_kt, kWarps);  // of k-tile i
  int previous_segment = -1;

  int stage = 0;
  unsigned phase = 0;
  for (int i = 0; i < my_tiles; ++i, segment.next()) {
    ptx::cp_async_wait<kStages - 2>();
    tma::mbarrier_wait(&full[stage], phase);
    DECODE_TRACE(i < 2 ? 2 + i : 4);  // the first, second and last k-tile's data in hand
    // k-tile i's stage is visible to the warp, and the previous k-tile's stage is free: its ldmatrix
    // results fed MMAs already issued, and the fence orders those reads before the tensor copies that
    // refill it (async proxy).
    wgmma::fence_async_proxy();
    __syncwarp();
    const int ahead = i + kStages - 1;
    if (ahead < my_tiles) {
      load_weights(ahead % kStages, first_kt + kWarps * ahead);
      load_tokens(ahead % kStages, first_kt + kWarps * ahead);
    }
    ptx::cp_async_commit();

    const int kt = first_kt + kWarps * i;
    if (p.row_select_on && segment.index != previous_segment) {
      previous_segment = segment.index;
      const auto* words = reinterpret_cast<const std::uint32_t*>(select_ring + stage * Config::kSelectBytes);
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) enter_select_segment(acc[m], sel[m], words[m], g);
    }

    const std::uint8_t* a_tiles = a_ring + stage * kNumMats * kATileBytes;
    const auto* meta_words = reinterpret_cast<const std::uint32_t*>(meta_ring + stage * kNumMats * kMetaTileBytes);
    const std::uint8_t* b_tile = b_ring + stage * Config::kBTileBytes;
    const int ksteps = min(4, ksteps_per_row - kt * 4);  // 2 in a last, half k-tile
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      if (ks >= ksteps) break;
      std::uint32_t b[kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int tok = nt * 8 + (lane % 8);
        const int chunk = ks * 4 + lane / 8;
        ptx::ldmatrix_x4(b[nt], b_tile + tok * 256 + ((chunk ^ (tok & 7)) * 16));
      }
#pragma unroll
      for (int m = 0; m < kNumMats; ++m)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          std::uint32_t a[4];
          const int r = mt * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int chunk = ks * 2 + lane / 16;
          ptx::ldmatrix_x4(a, a_tiles + m * kATileBytes + r * 128 + ((chunk ^ (r & 7)) * 16));
          const std::uint32_t meta = meta_words[m * (kMetaTileBytes / 4) + (mt * 4 + ks) * 16 + g * 2 + (lane & 1)];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) ptx::mma_sp_16832<kBf16>(acc[m][0][mt][nt], a, b[nt], meta);
        }
    }
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1u;
    }
  }
  ptx::cp_async_wait<0>();
  DECODE_TRACE(5);
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) select_sets_to_rows(acc[m], sel[m]);

  // The warps' sums meet in shared memory (the rings are free once every warp is past its loop).
  __syncthreads();
  auto* sums = reinterpret_cast<float*>(smem);  // [kWarps][kNumMats][kBN][kSumRow]
  const int rows_per_crow = p.row_select_on ? 2 : 1;
#pragma unroll
  for (int m = 0; m < kNumMats; ++m)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int o = 0; o < 2; ++o) {
          if (o >= rows_per_crow) break;
          const int lr = (mt * 16 + g + 8 * h) * rows_per_crow + o;  // logical row in the CTA
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int i = 0; i < 2; ++i) {
              const int slot = nt * 8 + 2 * t + i;
              sums[((warp * kNumMats + m) * kBN + slot) * Config::kSumRow + lr] = acc[m][o][mt][nt][2 * h + i];
            }
        }
  __syncthreads();

  DECODE_TRACE(6);
  // Output e of the tile is logical row e % 64 of slot e / 64: a warp stores 32 neighbouring rows of
  // one slot. The warps' sums are added in warp order, so the result does not depend on timing.
  constexpr int kOutputs = Config::kOutputs;
  const int logical_rows = kRows * rows_per_crow;
  const std::int64_t row_base = row0 * rows_per_crow;
  const auto warp_sum = [&](int m, int e) {
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += sums[((w * kNumMats + m) * kBN + e / (2 * kRows)) * Config::kSumRow + e % (2 * kRows)];
    return sum;
  };
  const auto stored = [&](int e) {  // rows past the CTA's logical ones or past M, empty slots: nothing to store
    return e % (2 * kRows) < logical_rows && row_base + e % (2 * kRows) < p.rows && s_tok[e / (2 * kRows)] != kNoToken;
  };
  const auto store_output = [&](int e, const float (&v)[kNumMats]) {
    const int slot = e / (2 * kRows);
    store<kBf16>(p.y, (tok0 + slot) * p.rows + row_base + e % (2 * kRows), epilogue_value<kEpi, kNumMats>(v, p, tok0 + slot, s_tok[slot]),
                 p.y_f32);
  };
  if (gridDim.z == 1) {
    for (int e = threadIdx.x; e < kOutputs; e += kThreads) {
      if (!stored(e)) continue;
      float v[kNumMats];
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) v[m] = warp_sum(m, e);
      store_output(e, v);
#ifdef SAMOYEDS_DECODE_TRACE
      if (e == static_cast<int>(threadIdx.x)) DECODE_TRACE(8);  // the first output stored
#endif
    }
    DECODE_TRACE(7);
    return;
  }
  // Split K: the tile's gridDim.z CTAs are one cluster along z (the launch below), so CTA z is cluster
  // rank z. Rank r owns outputs [r share, (r + 1) share): every CTA sends its K range's sums of them
  // into rank r's reduce region (remote stores do not wait for a reply), then, after the cluster
  // barrier, each rank adds what it received in rank order (deterministic: the order of the former
  // split-K reduce kernel) and stores. No workspace, no second launch.
  static_assert(kOutputs % kThreads == 0, "every thread takes the same number of outputs: the warps reach the .aligned cluster barrier converged");
  const unsigned num_ranks = gridDim.z, rank = blockIdx.z;
  const int share = (kOutputs + static_cast<int>(num_ranks) - 1) / static_cast<int>(num_ranks);
  auto* received = reinterpret_cast<float*>(smem + Config::kReduceOffset);  // [num_ranks][kNumMats][share]
  cluster_wait();  // every CTA of the cluster has started: its reduce region is there
  DECODE_TRACE(8);
  for (int e = threadIdx.x; e < kOutputs; e += kThreads) {
    const int owner = e / share, at = e - owner * share;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
      st_shared_cluster(&received[(rank * kNumMats + m) * share + at], static_cast<unsigned>(owner), warp_sum(m, e));
  }
  cluster_sync();  // every CTA's sends have landed and are visible
  DECODE_TRACE(9);
  const int first = static_cast<int>(rank) * share, last = min(kOutputs, first + share);
  for (int e = first + threadIdx.x; e < last; e += kThreads) {
    if (!stored(e)) continue;
    float v[kNumMats];
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      float sum = 0.0f;
      for (unsigned r = 0; r < num_ranks; ++r) sum += received[(r * kNumMats + m) * share + e - first];
      v[m] = sum;
    }
    store_output(e, v);
  }
  DECODE_TRACE(7);
#else
  __trap();  // sm_90a only: the sm90 path never launches it elsewhere
#endif
}

template <int kNumMats>
DecodeMaps<kNumMats> decode_maps(const Params& p) {
  static_assert(kBK / 2 == 64, "a k-tile's values are one 64-value box");
  DecodeMaps<kNumMats> maps;
  for (int m = 0; m < kNumMats; ++m) {
    const WeightMaps w = weight_maps_of(p, m, kRows);
    maps.values[m] = w.values;
    maps.metadata[m] = w.metadata;
  }
  return maps;
}

// The launch of a (row tiles, token tiles, splits) grid: a split tile's CTAs are one cluster along z,
// which adds their partial sums on chip (the kernel's end). `attribute` must outlive the config.
template <int kNumMats, int kNT, int kWarps>
cudaLaunchConfig_t launch_config(dim3 grid, cudaLaunchAttribute& attribute, cudaStream_t stream) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(DecodeConfig<kNumMats, kNT, kWarps>::kThreads);
  config.dynamicSmemBytes = DecodeConfig<kNumMats, kNT, kWarps>::kSmemBytes;
  config.stream = stream;
  attribute = cudaLaunchAttribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = 1;
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = grid.z;
  config.attrs = &attribute;
  config.numAttrs = grid.z > 1 ? 1 : 0;
  return config;
}

template <bool kBf16, int kNumMats, Epi kEpi, int kNT, int kWarps>
auto* prepared_kernel() {
  auto* kernel = ssmm_decode_kernel<kBf16, kNumMats, kEpi, kNT, kWarps>;
  SAMOYEDS_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, DecodeConfig<kNumMats, kNT, kWarps>::kSmemBytes));
  // Two CTAs per SM for one matrix need the largest shared-memory carveout.
  SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  return kernel;
}

template <bool kBf16, int kNumMats, Epi kEpi, int kNT, int kWarps>
void launch(const Params& p, cudaStream_t stream) {
  auto* kernel = prepared_kernel<kBf16, kNumMats, kEpi, kNT, kWarps>();
  constexpr int kBN = DecodeConfig<kNumMats, kNT, kWarps>::kBN;
  const std::int64_t token_tiles = grid_token_tiles(p, kBN);
  SAMOYEDS_CHECK(token_tiles <= 65535, "ssmm: ", p.L, " token slots need ", token_tiles, " tiles of ", kBN,
                 "; the grid allows 65535: split the call");
  SAMOYEDS_CHECK(p.splits >= 1 && p.splits <= gpu::kDecodeMaxSplits, "ssmm_decode: ", p.splits, " splits do not form one cluster of at most ",
                 gpu::kDecodeMaxSplits, " CTAs (internal planning error)");
  cudaLaunchAttribute attribute;
  const cudaLaunchConfig_t config = launch_config<kNumMats, kNT, kWarps>(
      dim3(static_cast<unsigned>(p.compressed_rows_padded / kRows), static_cast<unsigned>(token_tiles), static_cast<unsigned>(p.splits)),
      attribute, stream);
#ifdef SAMOYEDS_DECODE_TRACE
  decode_trace::reset(stream);
#endif
  SAMOYEDS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p, decode_maps<kNumMats>(p)));
  SAMOYEDS_CHECK_LAUNCH("ssmm_decode_kernel");
#ifdef SAMOYEDS_DECODE_TRACE
  decode_trace::write(config.gridDim, DecodeConfig<kNumMats, kNT, kWarps>::kThreads / 32, stream);
#endif
}

// Warps per CTA (the same shared memory either way): the 8-slot tiles 8 warps of 2 stages (4 of 4 stages
// measured 0-10 % slower, v19), the 16-slot tiles 4 of 3 (6 of 2 measured within -10 / +2 %, slower on
// the large shapes; 8 would hold one stage each).
constexpr int kNarrowTileWarps = 8;
constexpr int kWideTileWarps = 4;

template <bool kBf16, Epi kEpi>
void dispatch_tiles(const Params& p, int tile_tokens, cudaStream_t stream) {
  if (tile_tokens == 8) return launch<kBf16, 1, kEpi, 1, kNarrowTileWarps>(p, stream);
  launch<kBf16, 1, kEpi, 2, kWideTileWarps>(p, stream);
}

template <bool kBf16>
void dispatch(const gpu::SsmmArgs& a, const Params& p, int tile_tokens, cudaStream_t stream) {
  if (a.epilogue == gpu::SsmmEpilogue::down_weighted) return dispatch_tiles<kBf16, Epi::down_weighted>(p, tile_tokens, stream);
  dispatch_tiles<kBf16, Epi::plain>(p, tile_tokens, stream);
}

// Clusters of `splits` CTAs of one kernel variant the current device holds at once (single CTAs for
// splits = 1). The plain bf16 kernel stands for its variant: the epilogue and the type change neither
// its registers' bound nor its shared memory.
template <int kNT, int kWarps>
int resident_clusters_of(int splits, int num_sms) {
  auto* kernel = prepared_kernel<true, 1, Epi::plain, kNT, kWarps>();
  cudaLaunchAttribute attribute;
  const cudaLaunchConfig_t config = launch_config<1, kNT, kWarps>(dim3(1, 1, static_cast<unsigned>(splits)), attribute, nullptr);
  int count = 0;
  if (splits == 1) {
    SAMOYEDS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&count, kernel, static_cast<int>(config.blockDim.x), config.dynamicSmemBytes));
    return count * num_sms;
  }
  SAMOYEDS_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&count, kernel, &config));
  return count;
}

}  // namespace

gpu::ResidentClusters ssmm_decode_resident_clusters() {
  int device = 0;
  SAMOYEDS_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<int, gpu::ResidentClusters> by_device;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = by_device.find(device);
  if (found != by_device.end()) return found->second;
  int num_sms = 0, major = 0;
  SAMOYEDS_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  SAMOYEDS_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major != 9) return gpu::ideal_resident_clusters(num_sms);  // a size query on a device the kernel never runs on
  gpu::ResidentClusters resident{};
  for (int splits = 1; splits <= gpu::kDecodeMaxSplits; ++splits) {
    // One table for both tile widths (the plan compares them); they hold the same CTAs (H200: equal).
    resident[splits] = std::min(resident_clusters_of<1, kNarrowTileWarps>(splits, num_sms), resident_clusters_of<2, kWideTileWarps>(splits, num_sms));
  }
  by_device.emplace(device, resident);
  return resident;
}

void ssmm_decode(const gpu::SsmmArgs& args, const Params& p, int tile_tokens, cudaStream_t stream) {
  SAMOYEDS_CHECK((tile_tokens == 8 || tile_tokens == 16) && args.epilogue != gpu::SsmmEpilogue::gate_up, "ssmm_decode: tiles of ", tile_tokens,
                 " slots for ", gpu::epilogue_name(args.epilogue), " (one matrix and 8 or 16 slots: internal planning error)");
  SAMOYEDS_CHECK(p.K_padded % 64 == 0 && (!p.row_select_on || p.v % kBK == 0), "ssmm_decode: K_padded ", p.K_padded, " and V ", p.v,
                 " must be multiples of 64 and ", kBK, " (internal planning error)");
  args.x_dtype == DType::bf16 ? dispatch<true>(args, p, tile_tokens, stream) : dispatch<false>(args, p, tile_tokens, stream);
}

}  // namespace samoyeds::kernels
