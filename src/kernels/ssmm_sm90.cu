// SPDX-License-Identifier: Apache-2.0
// SSMM, Hopper path (sm_90a): warpgroup-level wgmma.mma_async.sp.m64nNk32 with fp32 accumulation.
//
// Algorithm (v4, warp-specialised). A CTA of three warpgroups computes kBM = 128 compressed rows x kBN
// tokens. Warpgroup 0 is the producer: its 128 threads fill a kStages-deep ring of shared-memory
// stages with cp.async (A values, metadata words, and the B tile gathered from
// X[token_idx[j], k0:k0+128], zero-filled past K; rows of slots past L are not copied and a bad
// index copies X's row 0, those outputs never being stored or stored as NaN) and signal each
// stage's `full` mbarrier with cp.async.mbarrier.arrive.noinc, so no thread ever waits for its own
// copies (SAMOYEDS_SSMM_A_TMA=on: thread 0 brings A and metadata by bulk tensor copies instead; the
// first stage's A values and metadata come from the consumers while the token ids load, v15). Warpgroups 1 and 2
// are the consumers, 64 compressed rows (one wgmma M) each: per 128-column k-tile and matrix they
// issue four wgmma.sp (k32 each; A descriptor +32 B per step, B +64 B and the 64-column half
// offset), then release the stage through its `empty` mbarrier once those wgmmas have finished.
// Tiles are K-major with the 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8),
// 1024-byte atoms), the layout wgmma descriptors read.
// Row selection (1:2:V) without moving accumulators: the wgmmas always accumulate into set 0, the
// running total T of compressed row r over the segments so far; set 1, S, gathers the odd logical
// row 2r + 1 as differences of T: at a segment start where r's selection goes from p to n,
// S += (p - n) T, one FFMA per accumulator (a register swap took three instructions per pair and
// half the consumers' issue slots). After the last k-tile, odd = S + sel T and even = T - odd.
// Each consumer keeps one k-tile of wgmmas in flight and drains it before the next (with V = 128
// every k-tile starts a segment anyway); the two consumers take turns issuing (named barriers 1
// and 2), so one warpgroup's drain and update run while the other's wgmmas keep the tensor cores
// busy.
// Split-K (few output tiles: small L or few rows): gridDim.z CTAs share an output tile, each over a
// whole number of segments, writing fp32 partials to a workspace; ssmm_sm90_reduce sums them in
// split order and applies the epilogue, so results stay bitwise reproducible.
// Grouped launch (all experts of a layer): blockIdx.y walks the token tiles of every expert in expert
// order (find_tile, ssmm_common.cuh); a CTA takes its expert's matrices from the stacks and its slots
// from the expert's range; CTAs past the last tile exit at once.
// TMA variant (kTma; large L, unsplit, one or two matrices; docs/kernels/ssmm.md v5): the producer is
// one warp, lane 0 issuing bulk tensor copies (cp.async.bulk.tensor) of the A values and metadata
// and of its share of the B tile (in a cluster of two one whole 64-column half: one copy; v22), which
// it multicasts to the cluster of consecutive row tiles sharing the token tile (B then must be
// contiguous rows: a call with a token list first gathers X into slot order in the workspace); its
// registers go to the consumers (232). Each stage's `empty` barrier takes the arrivals of every
// consumer warp in the cluster, and a producer leaves only after all of them. Its gate/up is paired
// (v24): a CTA takes 64 compressed rows of both matrices x 128 tokens, consumer g accumulates matrix g
// (m64n128 wgmmas, the one-matrix k loop), and the two meet through the free ring for SiLU(gate) * up:
// staged, each hands the other half of its tokens over and finishes its own half (v25); otherwise
// consumer 1 hands everything to consumer 0 (the former 128-row x 64-token tiles, both matrices per
// consumer at N = 64, took 1.12x the time).
// Budget: kBN = 128 / 64 / 32 tokens for 1 / 2 / 3 matrices (32 for every count when L <= 32; 128
// for the paired gate/up), so a consumer's accumulators take at most 128 registers (setmaxnreg splits
// the register file by matrix count); smem: kStages x (kBM x 144 B per matrix + kBN x 256 B) <= 216 KB
// (200 KB for the cp.async variant). The consumers read the row-select words from global memory
// themselves, one segment ahead (v9).
// Epilogue: with row selection, 16-bit output and rows % 8 == 0, the finished tile is staged in the
// (then free) ring, kBN x (4 kBM + 16) B, and written as 16-byte chunks of whole slot rows (v13).
// Stream-K variant (ssmm_sm90_stream_k, SAMOYEDS_SSMM_STREAM_K=on; measured slower, off by default,
// v16): decode-sized calls as one CTA per SM over granule ranges that cross tiles; see its comment.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cluster.cuh"
#include "kernels/cuda_check.h"
#include "kernels/half_math.cuh"
#include "kernels/ptx.cuh"
#include "kernels/ssmm_common.cuh"
#include "kernels/ssmm_sm90.h"
#include "kernels/stream_k.h"
#include "kernels/tensor_map.h"
#include "kernels/tma.cuh"
#include "kernels/wgmma_common.cuh"
#include "kernels/wgmma_sp.cuh"

namespace samoyeds::kernels {

// Device helpers with external linkage: the sm_80 compile pass sees the kernel body compiled out
// and would otherwise warn that internal helpers are unused.
namespace sm90 {

using tma::fence_mbarrier_init;
using tma::load_3d;
using tma::mbarrier_arrive;
using tma::mbarrier_arrive_expect_tx;
using tma::mbarrier_init;
using tma::mbarrier_wait;
using wgmma::advance_descriptor;
using wgmma::fence_async_proxy;
using wgmma::setmaxnreg_dec;
using wgmma::setmaxnreg_inc;
using wgmma::sw128_descriptor;

// A position in the ring of kStages stages and the parity of its pass, as counters: i % kStages and
// i / kStages took a dozen instructions per k-tile (signed division, by 3 or 7 for some stage counts).
template <int kStages>
struct RingPosition {
  int stage = 0;
  unsigned phase = 0;
  __device__ __forceinline__ void next() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1u;
    }
  }
};

// Arrives on the barrier once every cp.async this thread issued before has landed.
__device__ __forceinline__ void mbarrier_arrive_on_copies(std::uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(ptx::smem_address(bar)) : "memory");
}
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- The tensor memory accelerator (the large-L variant, kTma; clusters: kernels/cluster.cuh) ----
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          ptx::smem_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(ptx::smem_address(bar)), "r"(c0), "r"(c1)
      : "memory");
}
// The same box into every CTA of `cta_mask`, at the same offset, completing each one's `bar`.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                                      std::uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%3, %4}], "
      "[%2], %5;\n" ::"r"(ptx::smem_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(ptx::smem_address(bar)), "r"(c0), "r"(c1), "h"(cta_mask)
      : "memory");
}

// Holds the barrier's current phase open until every cp.async this thread issued before has landed,
// without being one of its counted arrivals (the pending count goes up now and down on landing).
__device__ __forceinline__ void mbarrier_hold_for_copies(std::uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];\n" ::"r"(ptx::smem_address(bar)) : "memory");
}

// One matrix's A values (crow rows x 128 B, swizzled) and metadata (rows / 16 row tiles x 256 B) at k-tile kt,
// the maps' boxes (128 rows, or 64 for the paired gate/up):
// one box each (v22: 32-row boxes, four times the copies, took 1.27-1.37x the time).
__device__ __forceinline__ void load_a_tile(std::uint8_t* values_dst, std::uint8_t* meta_dst, const CUtensorMap* values,
                                            const CUtensorMap* metadata, std::uint64_t* bar, int kt, int crow0, int expert) {
  load_3d(values_dst, values, bar, kt * 64, crow0, expert);
  load_3d(meta_dst, metadata, bar, kt * 64, crow0 / 16, expert);
}
// Rows of the B map's box for a cluster of num_ctas CTAs sharing a tile of kBN token rows: whole
// 64-column halves for one or two CTAs, else each half in num_ctas / 2 row slices.
__host__ __device__ constexpr int b_box_rows(int bn, int num_ctas) { return num_ctas <= 2 ? bn : bn / (num_ctas / 2); }
// Cluster rank `rank`'s share of k-tile kt's B tile (two 64-column halves of kBN token rows, half h
// at tile + h * kBN * 128), multicast to every CTA of `cta_mask`: with two CTAs one whole half each
// (one copy per CTA; v22), with one both halves, with more a row slice of one half.
__device__ __forceinline__ void load_b_share(std::uint8_t* tile, int bn, const CUtensorMap* map, std::uint64_t* bar, int kt, int tok0,
                                             unsigned rank, unsigned num_ctas, std::uint16_t cta_mask) {
  if (num_ctas == 1) {
    tma_load_2d(tile, map, bar, kt * 128, tok0);
    tma_load_2d(tile + bn * 128, map, bar, kt * 128 + 64, tok0);
    return;
  }
  const int half = static_cast<int>(rank % 2), rows = b_box_rows(bn, static_cast<int>(num_ctas)), r0 = static_cast<int>(rank / 2) * rows;
  tma_load_2d_multicast(tile + half * bn * 128 + r0 * 128, map, bar, kt * 128 + half * 64, tok0 + r0, cta_mask);
}

}  // namespace sm90

// Tensor maps of the large-L variant: per matrix the values [E][compressed rows][K_padded / 2] (box
// 64 x kBM rows, 128-byte swizzle: the layout the wgmma descriptors read) and the metadata
// [E][row tiles][k-steps x 16 words] (box 64 words x kBM / 16 row tiles), and the activations B [rows][K]
// (box 64 x kBN / cluster rows, 128-byte swizzle). Unused by the cp.async variant.
struct TmaMaps {
  CUtensorMap values[2];
  CUtensorMap metadata[2];
  CUtensorMap b;
};

namespace {

// kPaired (the one-CTA TMA kernel's gate/up, v24): the CTA holds 64 compressed rows of both matrices
// and 128 tokens; consumer g accumulates matrix g alone (m64n128 wgmmas, as a one-matrix product),
// and the epilogue meets the two in shared memory for SiLU(gate) * up.
// Whether the one-CTA kernel runs its gate/up paired: the kernel and its launcher both ask this.
constexpr bool paired_gate_up(int num_mats, bool small_n, bool tma) { return tma && num_mats == 2 && !small_n; }

template <int kNumMats, bool kSmallN, bool kTma = false, bool kPaired = false>
struct Sm90Config {
  static_assert(!kPaired || (kTma && kNumMats == 2 && !kSmallN), "paired consumers: the TMA variant's two matrices");
  static constexpr int kStageMats = kNumMats;  // matrices whose A tiles a stage holds
  static constexpr int kBM = kPaired ? 64 : 128;  // compressed rows per CTA (2 consumer warpgroups x 64, or 64 of each matrix)
  static constexpr int kConsumerMats = kPaired ? 1 : kNumMats;  // matrices one consumer warpgroup accumulates
  static_assert(kConsumerMats * (kPaired ? 2 : 1) == kStageMats, "paired: one matrix per consumer warpgroup");
  static constexpr int kBK = 128;      // logical columns per k-tile
  static constexpr int kProducerThreads = 128;  // one warpgroup
  static constexpr int kConsumerThreads = 256;  // two warpgroups
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  // 128 x producer + 256 x consumer registers <= 64 K; the producer's hoisted addresses grow with the
  // matrix count, the consumers' accumulators stay at most 128 registers.
  // The TMA producer is one warp issuing a handful of copies: its registers go to the consumers.
  static constexpr int kProducerRegisters = kTma ? 40 : (kNumMats == 1 ? 72 : (kNumMats == 2 ? 96 : 120));
  static constexpr int kConsumerRegisters = kTma ? 232 : (kNumMats == 1 ? 208 : (kNumMats == 2 ? 200 : 184));
  static_assert(128 * kProducerRegisters + 256 * kConsumerRegisters <= 65536, "register file");
  static constexpr int kATileBytes = kBM * 128;  // per matrix: kBM rows x 64 values
  static constexpr int kMetaTileBytes = (kBM / 16) * 4 * 64;  // per matrix: kBM / 16 row tiles x 4 k-steps x 16 words
  static constexpr int kBN = kPaired ? 128 : (kSmallN ? 32 : (kNumMats == 1 ? 128 : (kNumMats == 2 ? 64 : 32)));
  static constexpr int kBTileBytes = kBN * 256;  // two 64-column halves of kBN x 128 B
  static constexpr int kStagedRowBytes = 2 * kBM * 2 + 16;  // the staged epilogue: a slot's logical rows, 16-bit, + 16 B
  static constexpr int kStageBytes = kNumMats * (kATileBytes + kMetaTileBytes) + kBTileBytes;  // a multiple of 1024
  // The TMA variant has no token-id table to spare room for and takes a fourth stage for gate/up.
  static constexpr int kStages = std::min(8, ((kTma ? 216 : 200) * 1024) / kStageBytes);
  // + full/empty barriers + token ids + alignment slack (the row-select words go straight from
  // global memory to the consumers: v9)
  static constexpr int kSmemBytes = kStages * kStageBytes + kStages * 16 + kBN * 4 + 1024;
  static_assert(kBN * kStagedRowBytes <= kStages * kStageBytes, "the staged tile fits in the (then free) ring");
};

// The cp.async copies of one k-tile's A values and metadata into a stage, spread over kCopiers
// threads: the producer warpgroup in its loop, and the consumers in the prologue (the first stages'
// weights do not wait for the token ids). Thread c copies 16-byte chunk c % 8 of compressed rows
// c / 8 + (kCopiers / 8) j (the rows share their swizzle phase, so destination j is one stride on)
// and, for c < 128, metadata chunk c % 16 of row tile c / 16. Everything but the k offset is computed
// once (the loop issues ~4 instructions per 16-byte copy; an address rebuilt per copy made the
// producer the bottleneck: docs/kernels/ssmm.md, v4).
template <typename Config, int kNumMats, int kCopiers>
struct ATileCopier {
  using Bytes = const std::uint8_t*;
  static constexpr int kRowsPerPass = kCopiers / 8;
  static constexpr int kPasses = Config::kBM / kRowsPerPass;
  static_assert(kCopiers % 128 == 0 && kPasses % 2 == 0, "whole 8-row swizzle atoms in each half of the rows");
  int a_dst;
  bool all_rows;  // a CTA's rows are all real, or only its first 64 (the padded row count is a multiple of 64)
  std::uint64_t a_row_bytes;  // K_padded / 2 values x 2 B
  std::int64_t a_col_bytes;
  Bytes a_src[kNumMats];
  // Metadata [kBM / 16 row tiles][4 k-steps][16 words]; a row tile's k-steps are contiguous in global memory.
  // (The cp.async variant only: kBM = 128, so a CTA that is not all real has its first 64 rows real.)
  bool meta_copier, meta_row_in;
  int meta_dst, meta_chunk;
  std::int64_t ksteps_per_row;
  Bytes meta_src[kNumMats];

  __device__ __forceinline__ ATileCopier(const Params& p, const MatrixArrays<kNumMats>& mats, std::int64_t row0, int c) {
    const int a_row = c / 8, a_chunk = c % 8;
    a_dst = a_row * 128 + ((a_chunk ^ (a_row & 7)) * 16);
    all_rows = row0 + Config::kBM <= p.compressed_rows_padded;
    a_row_bytes = static_cast<std::uint64_t>(p.K_padded);
    a_col_bytes = a_chunk * 16;
    ksteps_per_row = p.K_padded / 32;
    meta_copier = c < 128;
    const int meta_tile = (c % 128) / 16;
    meta_chunk = c % 16;
    meta_dst = kNumMats * Config::kATileBytes + meta_tile * 256 + meta_chunk * 16;
    meta_row_in = (row0 / 16 + meta_tile) * 16 < p.compressed_rows_padded;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      a_src[m] = reinterpret_cast<Bytes>(mats.values[m]) + static_cast<std::uint64_t>(row0 + a_row) * a_row_bytes + a_col_bytes;
      // Copies that read nothing (src-size 0) still get an address inside the array.
      meta_src[m] = reinterpret_cast<Bytes>(mats.metadata[m]) +
                    (meta_row_in ? (static_cast<std::uint64_t>(row0 / 16 + meta_tile) * ksteps_per_row) * 64 + meta_chunk * 16 : 0);
    }
  }

  __device__ __forceinline__ void copy(std::uint8_t* base, int kt) const {
    // Past K_padded the chunk is zero-filled (B is zero there too, but smem may hold NaN patterns).
    const bool a_col_in = static_cast<std::int64_t>(kt) * 128 + a_col_bytes < static_cast<std::int64_t>(a_row_bytes);
    const int a_size = a_col_in ? 16 : 0;
    const bool meta_in = meta_row_in && static_cast<std::int64_t>(kt) * 4 + meta_chunk / 4 < ksteps_per_row;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      std::uint8_t* a_tile = base + m * Config::kATileBytes + a_dst;
      Bytes a_k = a_col_in ? a_src[m] + static_cast<std::uint64_t>(kt) * 128 : a_src[m];
      // Rows past the padded count (the second 64 of a last row tile) are not copied: their smem
      // rows feed only the outputs of rows that do not exist, which are never stored. The branch
      // is uniform over the CTA, so the copies need no per-row predicate.
#pragma unroll
      for (int j = 0; j < kPasses / 2; ++j)
        ptx::cp_async_16(a_tile + j * kRowsPerPass * 128, a_k + j * kRowsPerPass * a_row_bytes, a_size);
      if (all_rows) {
#pragma unroll
        for (int j = kPasses / 2; j < kPasses; ++j)
          ptx::cp_async_16(a_tile + j * kRowsPerPass * 128, a_k + j * kRowsPerPass * a_row_bytes, a_size);
      }
      if (kCopiers == 128 || meta_copier)
        ptx::cp_async_16(base + meta_dst + m * Config::kMetaTileBytes, meta_in ? meta_src[m] + static_cast<std::uint64_t>(kt) * 256 : meta_src[m],
                         meta_in ? 16 : 0);
    }
  }
};

// The cp.async copies of one k-tile's B tile (the tile's token rows of X) into a stage, by the 128
// producer threads: chunk tid % 16 of token rows tid / 16 + 8 j (j < kBN / 8); the same swizzle phase
// for every j, so destination j is one 1 KB step on. An output column depends on its own B row only,
// and the columns of slots without a token are never stored (past L) or stored as NaN (bad index), so
// their rows need no zeros: slots past L (a suffix of the tile) are not copied at all, and a bad index
// copies X's row 0. The copies then share one size per k-tile, and a full tile needs no per-copy
// predicate (two instructions per copy saved; docs/kernels/ssmm.md v8). Not copying the suffix keeps a
// decode tile (1 of 32 slots used) from reading one row of X 31 times per k-tile.
template <typename Config, int kNumMats>
struct BTileCopier {
  using Bytes = const std::uint8_t*;
  static constexpr int kRows = Config::kBN / 8;
  int rows_here;  // rows tid / 16 + 8 j < the tile's slots with a token id
  int chunk, dst;
  std::uint32_t x_row_bytes;  // K < 2^31 (can_implement)
  Bytes x;
  std::uint32_t tok[kRows];

  // token_of(slot) gives the token slot `slot` of the tile reads (kNoToken past the expert's slots,
  // kBadToken for an index outside X).
  template <typename TokenOf>
  __device__ __forceinline__ BTileCopier(const Params& p, int slots, int tid, TokenOf token_of) {
    rows_here = slots > tid / 16 ? (slots - tid / 16 + 7) / 8 : 0;
    chunk = tid % 16;
    dst = (chunk / 8) * (Config::kBN * 128) + (tid / 16) * 128 + (((chunk % 8) ^ ((tid / 16) & 7)) * 16);
    x_row_bytes = static_cast<std::uint32_t>(p.K) * 2;
    x = reinterpret_cast<Bytes>(p.x);
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const std::int32_t t = token_of(tid / 16 + 8 * j);
      tok[j] = t >= 0 ? static_cast<std::uint32_t>(t) : 0u;
    }
  }

  __device__ __forceinline__ void copy(std::uint8_t* base, int kt) const {
    std::uint8_t* b_tile = base + kNumMats * (Config::kATileBytes + Config::kMetaTileBytes) + dst;
    const std::uint32_t col_bytes = static_cast<std::uint32_t>(kt) * 256 + chunk * 16;
    // Past K the chunk is zero-filled (A's padding values are zero too, but smem may hold NaN bit
    // patterns from earlier use, and 0 x NaN would reach real outputs). K % 8 == 0: a chunk is all
    // in or all out.
    const bool col_in = col_bytes < x_row_bytes;
    const int size = col_in ? 16 : 0;
    const Bytes x_k = col_in ? x + col_bytes : x;
    if (rows_here == kRows) {
#pragma unroll
      for (int j = 0; j < kRows; ++j) ptx::cp_async_16(b_tile + j * 1024, x_k + static_cast<std::uint64_t>(tok[j]) * x_row_bytes, size);
    } else {
#pragma unroll
      for (int j = 0; j < kRows; ++j)
        if (j < rows_here) ptx::cp_async_16(b_tile + j * 1024, x_k + static_cast<std::uint64_t>(tok[j]) * x_row_bytes, size);
    }
  }
};

// ---- Consumer steps shared by every sm90 kernel (one CTA per tile, persistent, stream-K) ----
// Accumulators of a consumer warpgroup: [matrix][set][wgmma fragment], set 0 the running total T of
// the compressed rows, set 1 the odd logical rows' differences S (see the file comment).

// Where consumer warpgroup `group`'s part of a stage starts: its first matrix, the row tile of its
// first warp in the metadata tiles, and the byte offset of its A rows. Unpaired it holds rows 64 group..
// of every matrix; paired (one matrix per consumer) all rows of matrix `group`.
template <typename Config>
__device__ __forceinline__ int consumer_first_mat(int group) {
  return Config::kConsumerMats < Config::kStageMats ? group : 0;
}
template <typename Config>
__device__ __forceinline__ int consumer_row_tile(int group) {
  return Config::kConsumerMats < Config::kStageMats ? 0 : group * 4;
}
template <typename Config>
__device__ __forceinline__ std::uint32_t consumer_a_offset(int group) {
  return Config::kConsumerMats < Config::kStageMats ? group * Config::kATileBytes : group * (64 * 128);
}

// This thread's metadata words of a stage, 4 k-steps per matrix of consumer `group` (rows g and g + 8
// of its warp `warp_in_group`). A short last k-tile, or a warp without rows (ksteps_here = 0), pads
// with 0x44444444: positions (0, 1) over zero values.
template <typename Config, int kNumMats>
__device__ __forceinline__ void load_k_tile_metadata(std::uint32_t (&meta)[kNumMats][4], const std::uint8_t* base, int group,
                                                     int warp_in_group, int lane, int ksteps_here) {
  static_assert(kNumMats == Config::kConsumerMats, "the metadata of one consumer warpgroup's matrices");
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) {
    const auto* words = reinterpret_cast<const std::uint32_t*>(base + Config::kStageMats * Config::kATileBytes +
                                                               (consumer_first_mat<Config>(group) + m) * Config::kMetaTileBytes) +
                        (consumer_row_tile<Config>(group) + warp_in_group) * 64 + (lane / 4) * 2 + (lane & 1);
    if (__builtin_expect(ksteps_here == 4, 1)) {  // every k-tile of a warp with rows but a short last one
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) meta[m][ks] = words[ks * 16];
    } else {
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) meta[m][ks] = ks < ksteps_here ? words[ks * 16] : 0x44444444u;
    }
  }
}

// At a segment start: the selection of this thread's rows (bit h: row g + 8h) in the new segment from
// its warp's prefetched select word, c = p - n for update_running_totals, and the following segment's
// word fetched now when that segment starts before the range's end, k-tile kt_end (its latency hides
// behind this segment's k-tiles). select_shift: the rows' bit in the word (warp_row0 % 32 + g).
template <int kNumMats>
__device__ __forceinline__ void enter_segment(std::uint32_t (&sel)[kNumMats], std::uint32_t (&word_ahead)[kNumMats], float (&c)[kNumMats][2],
                                              const std::uint32_t* (&select_src)[kNumMats], int select_shift, const SegmentCursor& segment,
                                              int kt, int kt_end) {
#pragma unroll
  for (int m = 0; m < kNumMats; ++m) {
    const std::uint32_t word = word_ahead[m];
    const std::uint32_t next = ((word >> select_shift) & 1u) | (((word >> (select_shift + 8)) & 1u) << 1);
#pragma unroll
    for (int h = 0; h < 2; ++h) c[m][h] = static_cast<float>(static_cast<int>((sel[m] >> h) & 1u) - static_cast<int>((next >> h) & 1u));
    sel[m] = next;
    if (kt + segment.per_segment < kt_end && select_src[m]) word_ahead[m] = __ldg(select_src[m] + segment.index + 1);
  }
}

// At a segment start, with none of this warpgroup's wgmmas in flight: S += (p - n) T for each row
// whose selection goes from p to n; c[m][h] = p - n for matrix m, row half h (rows g + 8h). c = 0
// leaves S as it is, and at a range's first k-tile T is still zero.
template <int kNumMats, int kFrags>
__device__ __forceinline__ void update_running_totals(float (&acc)[kNumMats][2][kFrags], const float (&c)[kNumMats][2]) {
#pragma unroll
  for (int m = 0; m < kNumMats; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int i = 0; i < kFrags / 4; ++i)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int f = 4 * i + 2 * h + q;
          acc[m][1][f] = fmaf(acc[m][0][f], c[m][h], acc[m][1][f]);
        }
}

// This warpgroup's wgmmas of one stage: 4 k-steps x kMats matrices into set 0 (A descriptor +32 B
// per k-step, B +64 B and the 64-column half offset), committed as one group.
template <typename Config, bool kBf16, int kMats>
__device__ __forceinline__ void issue_k_tile(float (&acc)[kMats][2][Config::kBN / 2], std::uint64_t desc_stage, int group,
                                             const std::uint32_t (&meta)[kMats][4]) {
  constexpr int kBN = Config::kBN;
  static_assert(kMats == Config::kConsumerMats, "the accumulators hold the matrices of one consumer warpgroup");
  wgmma::fence();
  const std::uint32_t a_offset = consumer_a_offset<Config>(group);
  const std::uint32_t b_offset = Config::kStageMats * (Config::kATileBytes + Config::kMetaTileBytes);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    const std::uint64_t desc_b = wgmma::advance_descriptor(desc_stage, b_offset + (ks / 2) * (kBN * 128) + (ks % 2) * 64);
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      const std::uint64_t desc_a = wgmma::advance_descriptor(desc_stage, a_offset + m * Config::kATileBytes + ks * 32);
      wgmma::SparseMma<kBN, kBf16>::run(acc[m][0], desc_a, desc_b, meta[m][ks]);
    }
  }
  wgmma::commit();
}

// After the last k-tile: sets 0 and 1 become logical rows 2 crow and 2 crow + 1, odd = S + sel T and
// even = T - odd (without row selection S stays zero and set 0 is the row).
template <int kNumMats, int kFrags>
__device__ __forceinline__ void running_totals_to_rows(float (&acc)[kNumMats][2][kFrags], const std::uint32_t (&sel)[kNumMats]) {
#pragma unroll
  for (int m = 0; m < kNumMats; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float selected = static_cast<float>((sel[m] >> h) & 1u);
#pragma unroll
      for (int i = 0; i < kFrags / 4; ++i)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int f = 4 * i + 2 * h + q;
          const float odd = fmaf(acc[m][0][f], selected, acc[m][1][f]);
          acc[m][0][f] -= odd;
          acc[m][1][f] = odd;
        }
    }
}

template <bool kBf16, int kNumMats, Epi kEpi, bool kSmallN, bool kTma>
__global__ void __launch_bounds__(384, 1) ssmm_sm90_kernel(const Params p, const __grid_constant__ TmaMaps maps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr bool kPaired = paired_gate_up(kNumMats, kSmallN, kTma);  // gate/up: consumer g takes matrix g (Sm90Config)
  using Config = Sm90Config<kNumMats, kSmallN, kTma, kPaired>;
  constexpr int kBM = Config::kBM, kBK = Config::kBK, kThreads = Config::kThreads, kATileBytes = Config::kATileBytes;
  constexpr int kBN = Config::kBN;
  constexpr int kStages = Config::kStages;
  // A split-K reduce launched as this grid's programmatic dependent may be scheduled once every CTA
  // got here (it waits for the whole grid before reading); without one this does nothing.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  extern __shared__ std::uint8_t smem_raw[];
  // The 128-byte swizzle works on absolute address bits: stages start on 1024-byte boundaries.
  // Offsetting smem_raw itself (not a pointer rebuilt from an integer) keeps every access an LDS.
  std::uint8_t* smem = smem_raw + ((1024 - (ptx::smem_address(smem_raw) & 1023)) & 1023);
  auto* full_bar = reinterpret_cast<std::uint64_t*>(smem + kStages * Config::kStageBytes);  // [kStages]
  std::uint64_t* empty_bar = full_bar + kStages;                                                 // [kStages]
  auto* s_tok = reinterpret_cast<std::int32_t*>(empty_bar + kStages);                            // [kBN]

  const int tid = threadIdx.x;
  // The tile this CTA computes: launch positions walk the tiles in bands of p.tile_band token tiles
  // (tile_order.h), in whole clusters (TMA: the CTAs of a cluster share a token tile, and rank r
  // takes row tile r of the cluster's).
  const unsigned num_ctas = kTma ? cluster_nctarank() : 1u;
  const int num_units_x = static_cast<int>(gridDim.x / num_ctas);
  const TileCoord unit = banded_tile(blockIdx.x / num_ctas + static_cast<long long>(num_units_x) * blockIdx.y, num_units_x,
                                     static_cast<int>(gridDim.y), p.tile_band);
  const std::int64_t row0 = (static_cast<std::int64_t>(unit.x) * num_ctas + blockIdx.x % num_ctas) * kBM;
  TileSlots tile;
  if (!find_tile<kBN>(p, unit.y, tile, s_tok)) return;  // past the last expert's tiles (grouped)
  const std::int64_t tok0 = tile.begin;
  const MatrixArrays<kNumMats> mats = matrix_arrays<kNumMats>(p, tile.expert);
  const int num_kt_total = static_cast<int>((p.K_padded + kBK - 1) / kBK);
  const int kt_begin = static_cast<int>(blockIdx.z * p.k_tiles_per_split);
  const int kt_end = std::min(num_kt_total, static_cast<int>(kt_begin + p.k_tiles_per_split));
  // The token ids' loads go out now and land in s_tok after the barrier below; meanwhile the
  // consumers issue the first stages' weight copies, which do not depend on them (before v15 every
  // copy waited for the ids: ncu, decode, ~10 % of the warp samples at that barrier).
  static_assert(kBN <= kThreads, "one token id per thread");
  const std::int32_t my_tok = tid < kBN ? token_of_slot(p, tok0 + tid, tile.end) : kNoToken;
  const bool a_by_tma = kNumMats <= 2 && p.a_by_tma;
  // TMA variant: the CTAs of a cluster (consecutive row tiles, one token tile) each load a slice of
  // the B tile and multicast it to all, so a stage may only be refilled once the consumers of every
  // CTA in the cluster released it: their warps arrive on each CTA's `empty` barrier.
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      // TMA: lane 0's expect_tx arrival; else every producer thread, + the expect_tx arrival when A
      // comes by tensor copies.
      mbarrier_init(&full_bar[s], kTma ? 1u : Config::kProducerThreads + (a_by_tma ? 1u : 0u));
      mbarrier_init(&empty_bar[s], (Config::kConsumerThreads / 32) * num_ctas);  // one arrival per consumer warp
    }
    // Bulk tensor copies complete on these barriers through the async proxy: make the inits visible to it.
    if (kTma || a_by_tma) fence_mbarrier_init();
  }
  __syncthreads();  // find_tile's result is read before s_tok is overwritten; the barriers exist
  // Stages whose A the consumers copy (p.early_stages: SAMOYEDS_SSMM_EARLY_STAGES, measured in v15).
  const int num_early = kTma || a_by_tma ? 0 : std::min(std::min(kStages, p.early_stages), kt_end - kt_begin);
  if (tid >= Config::kProducerThreads && num_early > 0) {
    const ATileCopier<Config, kNumMats, Config::kConsumerThreads> early(p, mats, row0, tid - Config::kProducerThreads);
    for (int s = 0; s < num_early; ++s) {
      early.copy(smem + s * Config::kStageBytes, kt_begin + s);
      // Not one of the stage's counted arrivals: the producers' come only after the barrier below.
      mbarrier_hold_for_copies(&full_bar[s]);
    }
  }
  if (tid < kBN) s_tok[tid] = my_tok;
  if constexpr (kTma) {
    cluster_sync();  // no CTA arrives on or multicasts into another's barriers before they exist
  } else {
    __syncthreads();
  }
  const std::int64_t ksteps_per_row = p.K_padded / 32;
  const int kt_per_segment = p.row_select_on ? p.v / kBK : 0;  // V is a multiple of kBK (can_implement)

  if (kTma && tid < Config::kProducerThreads) {
    // ---- TMA producer: one warp, lane 0 issuing the bulk tensor copies (A values and metadata of
    // this CTA's rows, its share of the B tile multicast to the cluster: load_b_share). ----
    setmaxnreg_dec<Config::kProducerRegisters>();
    if (tid >= 32) return;
    const int lane = tid;
    const unsigned rank = cluster_ctarank();
    const auto cta_mask = static_cast<std::uint16_t>((1u << num_ctas) - 1u);
    const int crow0 = static_cast<int>(row0), slot0 = static_cast<int>(tok0);
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const int i = kt - kt_begin, stage = i % kStages;
      if (i >= kStages) mbarrier_wait(&empty_bar[stage], ((i / kStages) & 1) ^ 1);  // every reader in the cluster is done
      std::uint8_t* base = smem + stage * Config::kStageBytes;
      if (lane == 0) {
        // Whole boxes, zero fill included: this CTA's A values and metadata, and every CTA's B share.
        constexpr unsigned kTxBytes = kNumMats * (kATileBytes + Config::kMetaTileBytes) + Config::kBTileBytes;
        mbarrier_arrive_expect_tx(&full_bar[stage], kTxBytes);
#pragma unroll
        for (int m = 0; m < kNumMats; ++m)
          load_a_tile(base + m * kATileBytes, base + kNumMats * kATileBytes + m * Config::kMetaTileBytes, &maps.values[m],
                      &maps.metadata[m], &full_bar[stage], kt, crow0, tile.expert);
        load_b_share(base + kNumMats * (kATileBytes + Config::kMetaTileBytes), kBN, &maps.b, &full_bar[stage], kt, slot0, rank, num_ctas,
                     cta_mask);
      }
    }
    // Leave only after every consumer in the cluster has released every stage: until then a remote
    // CTA may still arrive on this CTA's barriers.
    const int num_kt = kt_end - kt_begin;
    for (int i = std::max(0, num_kt - kStages); i < num_kt; ++i) mbarrier_wait(&empty_bar[i % kStages], (i / kStages) & 1);
    return;
  }
  if (tid < Config::kProducerThreads) {
    // ---- Producer warpgroup: fills the ring, never touches the accumulators. ----
    setmaxnreg_dec<Config::kProducerRegisters>();
    const ATileCopier<Config, kNumMats, Config::kProducerThreads> a_copier(p, mats, row0, tid);
    const int b_slots = static_cast<int>(std::min<std::int64_t>(kBN, tile.end - tok0));  // slots with a token id
    const BTileCopier<Config, kNumMats> b_copier(p, b_slots, tid, [&](int slot) { return s_tok[slot]; });

    RingPosition<kStages> ring;
    for (int kt = kt_begin; kt < kt_end; ++kt, ring.next()) {
      const int i = kt - kt_begin, stage = ring.stage;
      if (i >= kStages) mbarrier_wait(&empty_bar[stage], ring.phase ^ 1u);  // its last reader is done
      std::uint8_t* base = smem + stage * Config::kStageBytes;
      if (a_by_tma) {
        // Thread 0 arrives with the stage's A bytes expected, then issues their bulk copies (whole
        // boxes: rows past the padded count and columns past K_padded are zero-filled by the copy).
        if (tid == 0 && kNumMats <= 2) {
          mbarrier_arrive_expect_tx(&full_bar[stage], kNumMats * (kATileBytes + Config::kMetaTileBytes));
#pragma unroll
          for (int m = 0; m < kNumMats; ++m) {
            const int map = m < 2 ? m : 1;  // the maps hold two matrices; three never take this path
            load_3d(base + m * kATileBytes, &maps.values[map], &full_bar[stage], kt * 64, static_cast<int>(row0), tile.expert);
            load_3d(base + kNumMats * kATileBytes + m * Config::kMetaTileBytes, &maps.metadata[map], &full_bar[stage],
                        kt * 64, static_cast<int>(row0 / 16), tile.expert);
          }
        }
      } else if (i >= num_early) {  // the consumers copied the first stages' A in the prologue
        a_copier.copy(base, kt);
      }
      b_copier.copy(base, kt);
      mbarrier_arrive_on_copies(&full_bar[stage]);
    }
    ptx::cp_async_wait<0>();
    return;
  }

  // ---- Consumer warpgroups 1 and 2: wgmma over the ring, then the epilogue. ----
  setmaxnreg_inc<Config::kConsumerRegisters>();
  const int ctid = tid - Config::kProducerThreads;
  const int lane = ctid % 32, warp_in_group = (ctid % 128) / 32, group = ctid / 128;
  const int g = lane / 4, t = lane % 4;

  // Paired, consumer g holds matrix g of all the CTA's rows; else both matrices of its 64-row half.
  constexpr int kMats = Config::kConsumerMats;
  float acc[kMats][2][kBN / 2];  // [matrix][set][wgmma accumulator fragment]
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int f = 0; f < kBN / 2; ++f) acc[m][s][f] = 0.0f;
  std::uint32_t sel[kMats];  // bit h: selection of this thread's row g + 8h in the current segment
#pragma unroll
  for (int m = 0; m < kMats; ++m) sel[m] = 0;

  const std::int64_t warp_row0 = row0 + (kPaired ? 0 : group * 64) + warp_in_group * 16;  // this warp's 16 compressed rows
  const bool warp_rows_exist = warp_row0 < p.compressed_rows_padded;
  // Gives a drained stage back to the producer (TMA: to every producer of the cluster).
  auto release_stage = [&](int stage) {
    if (lane != 0) return;
    if constexpr (kTma) {
#pragma unroll 1
      for (unsigned cta = 0; cta < num_ctas; ++cta) mbarrier_arrive_cluster(&empty_bar[stage], cta);
    } else {
      mbarrier_arrive(&empty_bar[stage]);
    }
  };
  // Row selection: the select word of this warp's 32-row group in each segment comes from global
  // memory, fetched one segment ahead into a register (v9: read from the stage, its shared load
  // stalled the chain between the `full` wait and the next wgmmas, 6-10 % of all samples, and the
  // producers spent instructions copying it). [32-row groups][num_segments] words per matrix. A warp
  // without rows reads nothing and keeps every selection at 0.
  const int select_shift = static_cast<int>(warp_row0 % 32) + g;
  const std::uint32_t* select_src[kMats];
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
    // Paired: matrix `group` (a select, not an index: a runtime index put the array in local memory).
    const std::uint32_t* words = kPaired ? (group == 0 ? mats.row_select[0] : mats.row_select[kNumMats - 1]) : mats.row_select[m];
    select_src[m] = p.row_select_on && warp_rows_exist ? words + (warp_row0 / 32) * p.num_segments : nullptr;
  }

  // Turn-taking: consumer 0 issues k-tile i after consumer 1 issued k-tile i - 1 (barrier 1),
  // consumer 1 issues k-tile i after consumer 0 issued it (barrier 2). Arrivals and waits pair up.
  const int num_kt = kt_end - kt_begin;
  // K_padded is a multiple of 64: a k-tile has 4 k-steps, the last one possibly 2; a warp without
  // rows reads no metadata (its wgmmas see the padding pattern).
  const int ksteps_full = warp_rows_exist ? 4 : 0;
  const int ksteps_last = warp_rows_exist ? static_cast<int>(ksteps_per_row - static_cast<std::int64_t>(num_kt_total - 1) * 4) : 0;
  SegmentCursor segment(kt_per_segment, kt_begin);
  // The next segment start's select words (a CTA's k range starts on a segment boundary: plan_split_k).
  std::uint32_t word_ahead[kMats];
#pragma unroll
  for (int m = 0; m < kMats; ++m)
    word_ahead[m] = kt_begin < kt_end && segment.starts() && select_src[m] ? __ldg(select_src[m] + segment.index) : 0u;
  // The turn-taking conditions as loop-carried values: written as `group == 1 || i > 0`, the
  // compiler re-read the thread index every k-tile to rebuild them, and that S2R's latency sat right
  // before the running-total update (v8 profile: 11-12 % of all samples in the TMA kernels).
  bool wait_turn = group == 1;                             // consumer 0's first k-tile waits for nobody
  int arrivals_left = group == 0 ? num_kt : num_kt - 1;  // consumer 1's last k-tile has no successor
  RingPosition<kStages> ring;
  int prev_stage = 0;  // the stage of this warpgroup's k-tile in flight
  for (int kt = kt_begin; kt < kt_end; ++kt, segment.next(), ring.next()) {
    const int i = kt - kt_begin, stage = ring.stage;
    mbarrier_wait(&full_bar[stage], ring.phase);
    // cp.async wrote the stage through the generic proxy; wgmma reads through the async one (TMA's).
    if constexpr (!kTma) fence_async_proxy();
    const std::uint8_t* base = smem + stage * Config::kStageBytes;
    // What needs no register an issued wgmma uses comes before the drain: after it, the running-total
    // update and the next wgmmas are the chain that keeps the tensor cores waiting.
    const bool new_segment = segment.starts();
    float c[kMats][2];
    if (new_segment) enter_segment(sel, word_ahead, c, select_src, select_shift, segment, kt, kt_end);
    // One descriptor per stage, offsets added: building each from its address cost ~8 instructions.
    const std::uint64_t desc_stage = sw128_descriptor(base);
    // This warpgroup's previous k-tile is done: its stage goes back to the producer and the
    // running totals may be read. (At most one k-tile per consumer is in flight; the other
    // consumer's wgmmas cover the gap.)
    wgmma::wait<0>();
    if (i > 0) release_stage(prev_stage);
    prev_stage = stage;
    // The metadata registers are rewritten only now: whether an issued wgmma.sp may still read its
    // metadata register is not documented (CUTLASS drains before rewriting it too), and the loads'
    // latency hides behind the update's FFMAs anyway.
    std::uint32_t meta[kMats][4];
    load_k_tile_metadata<Config, kMats>(meta, base, group, warp_in_group, lane, kt + 1 < num_kt_total ? ksteps_full : ksteps_last);
    if (new_segment) update_running_totals(acc, c);

    if (wait_turn) named_barrier_sync(1 + group, Config::kConsumerThreads);
    wait_turn = true;
    issue_k_tile<Config, kBf16, kMats>(acc, desc_stage, group, meta);
    if (arrivals_left > 0) named_barrier_arrive(2 - group, Config::kConsumerThreads);
    --arrivals_left;
  }
  wgmma::wait<0>();
  if constexpr (kTma) release_stage(prev_stage);  // the producers drain every stage before exiting
  running_totals_to_rows(acc, sel);

  // Paired and staged, the epilogue split by tokens (v25): consumer G finishes slots [G kBN / 2,
  // (G + 1) kBN / 2) of both matrices, i.e. its fragments [G kHalf, (G + 1) kHalf), and hands the other
  // half of its own matrix to the other consumer, thread to thread (the two hold the same rows and
  // tokens in the same fragments): [receiving consumer][2 sets][kHalf fragments][128 threads] fp32
  // after the staged tile's region. With the whole epilogue on gate's consumer, it ran every SiLU at
  // one warp per scheduler while up's waited (ncu, v25). G is a template constant in each branch, so
  // every fragment index stays static (v24's split by rows selected on the runtime group per value
  // and lost 8 %). The staged conditions are those of the unsplit path below.
  constexpr int kStagedRowBytes = Config::kStagedRowBytes;
  constexpr int kXchgOffset = (kBN * kStagedRowBytes + 1023) / 1024 * 1024;
  static_assert(!kPaired || kXchgOffset + 2 * (kBN / 2) * 128 * 4 <= kStages * Config::kStageBytes, "the hand-over fits in the ring");
  if constexpr (kPaired) {
    const bool staged = p.row_select_on && p.splits == 1 && !p.y_f32 && p.rows % 8 == 0 &&
                        (reinterpret_cast<std::uintptr_t>(p.y) & 15u) == 0;
    if (staged && p.split_epilogue) {
      auto* xchg = reinterpret_cast<float*>(smem + kXchgOffset);
      const int xchg_thread = ctid % 128;
      const int pair_offset = static_cast<int>(warp_row0 - row0 + g) * 4;  // logical rows 2 crow, 2 crow + 1 of row h = 0
      constexpr int kHalf = kBN / 4;  // fragments of half the slots: i in [0, kBN / 16) of 8i + 2t + q
      const auto finish_half = [&](auto consumer) {
        constexpr int G = decltype(consumer)::value;
        named_barrier_sync(3, Config::kConsumerThreads);  // both consumers' last wgmmas are done: the ring is free
        float* to_other = xchg + (1 - G) * 2 * kHalf * 128 + xchg_thread;
#pragma unroll
        for (int s = 0; s < 2; ++s)
#pragma unroll
          for (int j = 0; j < kHalf; ++j) to_other[(s * kHalf + j) * 128] = acc[0][s][(1 - G) * kHalf + j];
        named_barrier_sync(3, Config::kConsumerThreads);
        const float* from_other = xchg + G * 2 * kHalf * 128 + xchg_thread;
#pragma unroll
        for (int ii = 0; ii < kBN / 16; ++ii)
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const int i = G * (kBN / 16) + ii, slot = 8 * i + 2 * t + q;
            const std::int32_t tok = s_tok[slot];
            if (tok == kNoToken) continue;  // past the expert's slots (a suffix of the tile): never stored
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int f = 4 * i + 2 * h + q, j = f - G * kHalf;
              float out[2];
#pragma unroll
              for (int s = 0; s < 2; ++s) {  // logical rows 2 crow + s
                const float own = acc[0][s][f], other = from_other[(s * kHalf + j) * 128];
                const float v[kNumMats] = {G == 0 ? own : other, G == 0 ? other : own};  // gate, up
                out[s] = epilogue_value<kEpi, kNumMats>(v, p, tok0 + slot, tok);
              }
              *reinterpret_cast<std::uint32_t*>(smem + slot * kStagedRowBytes + pair_offset + h * 32) = narrow2<kBf16>(out[0], out[1]);
            }
          }
      };
      if (group == 0) finish_half(std::integral_constant<int, 0>{});
      else finish_half(std::integral_constant<int, 1>{});
      named_barrier_sync(3, Config::kConsumerThreads);
      // The staged tile's copy-out, as in the unsplit path below (written twice: one shared helper
      // changed the register allocation of all 18 other one-CTA kernels, whose SASS this keeps as verified).
      constexpr int kChunksPerSlot = 2 * kBM * 2 / 16;
      const int slots_here = static_cast<int>(std::min<std::int64_t>(kBN, tile.end - tok0));
      const int chunks_here = static_cast<int>(std::min<std::int64_t>(2 * kBM, p.rows - 2 * row0) / 8);
      auto* y = static_cast<std::uint16_t*>(p.y);
      for (int c = ctid; c < slots_here * kChunksPerSlot; c += Config::kConsumerThreads) {
        const int slot = c / kChunksPerSlot, chunk = c % kChunksPerSlot;
        if (chunk < chunks_here)
          *reinterpret_cast<uint4*>(y + (tok0 + slot) * p.rows + 2 * row0 + chunk * 8) =
              *reinterpret_cast<const uint4*>(smem + slot * kStagedRowBytes + chunk * 16);
      }
      return;
    }
  }
  // Paired otherwise: up's consumer hands its rows to gate's through shared memory, thread to thread (the two
  // hold the same rows and tokens in the same fragments), [2 sets][kBN / 2 fragments][128 threads]
  // fp32 after the staged tile's region. The first barrier waits for both consumers' last wgmmas
  // (every copy into the ring landed before they were issued), so the ring is free.
  const float* up_rows = nullptr;  // this thread's fragments of up (paired, gate's consumer)
  if constexpr (kPaired) {
    auto* xchg = reinterpret_cast<float*>(smem + kXchgOffset);
    const int xchg_thread = ctid % 128;
    named_barrier_sync(3, Config::kConsumerThreads);
    if (group == 1) {
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int f = 0; f < kBN / 2; ++f) xchg[(s * (kBN / 2) + f) * 128 + xchg_thread] = acc[0][s][f];
    }
    named_barrier_sync(3, Config::kConsumerThreads);
    up_rows = xchg + xchg_thread;
  }
  // Matrix m's value at fragment f of set s (0: logical row 2 crow, 1: 2 crow + 1), held or handed over.
  const auto mat_value = [&](int m, int s, int f) -> float {
    if constexpr (kPaired) {
      return m == 0 ? acc[0][s][f] : up_rows[(s * (kBN / 2) + f) * 128];
    } else {
      return acc[m][s][f];
    }
  };

  // Epilogue: thread rows g, g + 8 of its warp's 16; tokens 8i + 2t (+1). With row selection a
  // compressed row feeds the adjacent logical rows 2 crow and 2 crow + 1, which for 16-bit output
  // and an even row count go out as one 4-byte store (half the stores; each token's id is read once).
  // The three variants (staged, paired, one element per store) are separate unrolled loops:
  // interleaved, the executed code spread over twice the instruction-cache footprint (ncu: "no
  // instruction" stalls dominated the epilogue).
  const bool paired_stores = p.row_select_on && p.splits == 1 && !p.y_f32 && p.rows % 2 == 0;
  // The paired paths' outputs at fragment f of slot `slot`: logical rows 2 crow (set 0) and 2 crow + 1.
  auto row_pair = [&](int f, int slot, std::int32_t tok, float& even_out, float& odd_out) {
    float even[kNumMats], odd[kNumMats];
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      even[m] = mat_value(m, 0, f);
      odd[m] = mat_value(m, 1, f);
    }
    even_out = epilogue_value<kEpi, kNumMats>(even, p, tok0 + slot, tok);
    odd_out = epilogue_value<kEpi, kNumMats>(odd, p, tok0 + slot, tok);
  };
  // Staged (v13): the tile goes through shared memory and out as whole 16-byte chunks of a slot's
  // rows, a warp writing 512 contiguous bytes per store (paired: two slots of 256), instead of one 4-byte store per pair with
  // its own 64-bit address and checks (docs/kernels/ssmm.md v13). Needs rows % 8 == 0 and a 16-byte
  // aligned Y so every chunk is aligned; the ring is free by then: every k-tile of this CTA's range
  // was consumed, so every copy into it (the cluster's multicasts included) has landed, and the
  // barrier below waits for the other consumer's last wgmmas.
  if (paired_stores && p.rows % 8 == 0 && (reinterpret_cast<std::uintptr_t>(p.y) & 15u) == 0) {
    // [kBN slots][2 kBM logical rows] 16-bit, a slot's row padded by 16 B: the pair writes of a warp
    // (4 slots x 8 rows) then fall on 32 different banks.
    constexpr int kChunksPerSlot = 2 * kBM * 2 / 16;
    named_barrier_sync(3, Config::kConsumerThreads);
    const int pair_offset = static_cast<int>(warp_row0 - row0 + g) * 4;  // logical rows 2 crow, 2 crow + 1 of row h = 0
    if (!kPaired || group == 0) {  // paired: gate's consumer holds both matrices' values now
#pragma unroll
      for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int slot = 8 * i + 2 * t + q;
          const std::int32_t tok = s_tok[slot];
          if (tok == kNoToken) continue;  // past the expert's slots (a suffix of the tile): never stored
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float even, odd;
            row_pair(4 * i + 2 * h + q, slot, tok, even, odd);
            *reinterpret_cast<std::uint32_t*>(smem + slot * kStagedRowBytes + pair_offset + h * 32) = narrow2<kBf16>(even, odd);
          }
        }
    }
    named_barrier_sync(3, Config::kConsumerThreads);
    const int slots_here = static_cast<int>(std::min<std::int64_t>(kBN, tile.end - tok0));
    const int chunks_here = static_cast<int>(std::min<std::int64_t>(2 * kBM, p.rows - 2 * row0) / 8);  // rows % 8 == 0
    auto* y = static_cast<std::uint16_t*>(p.y);
    for (int c = ctid; c < slots_here * kChunksPerSlot; c += Config::kConsumerThreads) {
      const int slot = c / kChunksPerSlot, chunk = c % kChunksPerSlot;
      if (chunk >= chunks_here) continue;  // rows past the matrix in its last row tile
      *reinterpret_cast<uint4*>(y + (tok0 + slot) * p.rows + 2 * row0 + chunk * 8) =
          *reinterpret_cast<const uint4*>(smem + slot * kStagedRowBytes + chunk * 16);
    }
    return;
  }
  if (kPaired && group == 1) return;  // its rows went to gate's consumer, which stores both
  if (paired_stores) {
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int slot = 8 * i + 2 * t + q;
        const std::int32_t tok = s_tok[slot];
        if (tok == kNoToken) continue;
        const std::int64_t y_row = (tok0 + slot) * p.rows;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const std::int64_t crow = warp_row0 + g + 8 * h;
          if (2 * crow >= p.rows) continue;
          float even, odd;
          row_pair(4 * i + 2 * h + q, slot, tok, even, odd);
          store_pair<kBf16>(p.y, y_row + 2 * crow, even, odd);
        }
      }
    return;
  }
  const int rows_per_crow = p.row_select_on ? 2 : 1;
#pragma unroll
  for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int slot = 8 * i + 2 * t + q;
      const std::int32_t tok = s_tok[slot];
      if (tok == kNoToken) continue;
      const std::int64_t y_row = (tok0 + slot) * p.rows;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const std::int64_t crow = warp_row0 + g + 8 * h;
        const int f = 4 * i + 2 * h + q;
#pragma unroll
        for (int o = 0; o < 2; ++o) {
          if (o >= rows_per_crow) break;
          const std::int64_t R = crow * rows_per_crow + o;
          if (R >= p.rows) continue;
          float v[kNumMats];
#pragma unroll
          for (int m = 0; m < kNumMats; ++m) v[m] = mat_value(m, o, f);
          if (p.splits > 1) {
#pragma unroll
            for (int m = 0; m < kNumMats; ++m)
              p.workspace[((static_cast<std::int64_t>(blockIdx.z) * kNumMats + m) * p.L + tok0 + slot) * p.rows + R] = v[m];
          } else {
            store<kBf16>(p.y, y_row + R, epilogue_value<kEpi, kNumMats>(v, p, tok0 + slot, tok), p.y_f32);
          }
        }
      }
    }
#else
  __trap();  // compiled for another architecture: the launcher only runs this kernel on sm_90
#endif
}

// ---- Stream-K variant of the cp.async kernel (v16; docs/kernels/ssmm.md) ----
// For calls with few 32-token output tiles (decode): a 1-D grid of C CTAs, one per SM, CTA c taking
// the granules [c U / C, (c + 1) U / C) of all tiles laid end to end (stream_k.h; a granule is one
// row-selection segment, or one k-tile without selection), so no SM idles while others hold whole
// tiles (Mixtral's gate/up at decode: 112 tiles of 32 k-tiles on 132 SMs). A run is walked as pieces,
// one per tile it touches; the ring position, the producer's fill count and the consumers'
// turn-taking carry across pieces (one sequence of k-tiles, as in the persistent kernel). A piece
// that covers its tile whole stores it (per element, with the epilogue); a partial piece writes the
// fp32 partials of its logical rows into workspace slot piece.slot, and ssmm_sm90_stream_k_reduce
// sums each shared tile's parts in k order (the result does not depend on timing) and applies the
// epilogue. Tile t is row tile t % row_tiles of token tile t / row_tiles; grouped, every warp maps the
// token tile itself (find_tile_in_warp) and skips pieces past the last expert's. Token ids come from
// global memory per piece: the producer runs ahead of the consumers' epilogue, so a shared s_tok would
// need double buffering. Budget: the one-CTA kernel's 32-token configuration (Sm90Config); the
// workspace holds 2 C partial tiles of [kNumMats][32 slots][256 logical rows] fp32.
template <bool kBf16, int kNumMats, Epi kEpi>
__global__ void __launch_bounds__(384, 1) ssmm_sm90_stream_k(const Params p, const StreamK sk, int row_tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  using Config = Sm90Config<kNumMats, kNumMats < 3>;
  constexpr int kBM = Config::kBM, kBN = Config::kBN, kStages = Config::kStages;
  static_assert(kBN == 32, "stream-K runs the 32-token tiles");
  // The reduce, launched as this grid's programmatic dependent, waits for the whole grid anyway.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  extern __shared__ std::uint8_t smem_raw[];
  std::uint8_t* smem = smem_raw + ((1024 - (ptx::smem_address(smem_raw) & 1023)) & 1023);
  auto* full_bar = reinterpret_cast<std::uint64_t*>(smem + kStages * Config::kStageBytes);  // [kStages]
  std::uint64_t* empty_bar = full_bar + kStages;                                                 // [kStages]
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full_bar[s], Config::kProducerThreads);
      mbarrier_init(&empty_bar[s], Config::kConsumerThreads / 32);
    }
  }
  __syncthreads();
  const int cta = static_cast<int>(blockIdx.x);
  const long long run_end = sk.begin(cta + 1);
  const int num_kt_total = static_cast<int>((p.K_padded + 127) / 128);
  const int kt_per_granule = p.row_select_on ? p.v / 128 : 1;
  // The piece of this run at granule x: its tile's slots (false: past the last expert's tile), row
  // tile and k-tiles; x moves to the next piece. Every warp walks the run this way.
  auto next_piece = [&](long long& x, StreamKPiece& piece, TileSlots& tile, std::int64_t& row0, int& kt_begin, int& kt_end) {
    piece = sk.piece_at(cta, x);
    x = piece.tile * sk.granules_per_tile + piece.end;
    row0 = (piece.tile % row_tiles) * kBM;
    kt_begin = static_cast<int>(piece.first) * kt_per_granule;
    kt_end = min(num_kt_total, static_cast<int>(piece.end) * kt_per_granule);
    return find_tile_in_warp<kBN>(p, static_cast<int>(piece.tile / row_tiles), tile);
  };

  if (tid < Config::kProducerThreads) {
    // ---- Producer warpgroup: fills the ring piece after piece. ----
    setmaxnreg_dec<Config::kProducerRegisters>();
    RingPosition<kStages> ring;
    int fills = 0;
    for (long long x = sk.begin(cta); x < run_end;) {
      StreamKPiece piece;
      TileSlots tile;
      std::int64_t row0;
      int kt_begin, kt_end;
      if (!next_piece(x, piece, tile, row0, kt_begin, kt_end)) continue;
      const ATileCopier<Config, kNumMats, Config::kProducerThreads> a_copier(p, matrix_arrays<kNumMats>(p, tile.expert), row0, tid);
      const int slots = static_cast<int>(min(static_cast<std::int64_t>(kBN), tile.end - tile.begin));
      const BTileCopier<Config, kNumMats> b_copier(p, slots, tid, [&](int slot) { return token_of_slot(p, tile.begin + slot, tile.end); });
      for (int kt = kt_begin; kt < kt_end; ++kt, ++fills, ring.next()) {
        if (fills >= kStages) mbarrier_wait(&empty_bar[ring.stage], ring.phase ^ 1u);  // its last reader is done
        std::uint8_t* base = smem + ring.stage * Config::kStageBytes;
        a_copier.copy(base, kt);
        b_copier.copy(base, kt);
        mbarrier_arrive_on_copies(&full_bar[ring.stage]);
      }
    }
    ptx::cp_async_wait<0>();
    return;
  }

  // ---- Consumer warpgroups 1 and 2 ----
  setmaxnreg_inc<Config::kConsumerRegisters>();
  const int ctid = tid - Config::kProducerThreads;
  const int lane = ctid % 32, warp_in_group = (ctid % 128) / 32, group = ctid / 128;
  const int g = lane / 4, t = lane % 4;
  const std::int64_t ksteps_per_row = p.K_padded / 32;
  const int ksteps_tail = static_cast<int>(ksteps_per_row - static_cast<std::int64_t>(num_kt_total - 1) * 4);
  const int kt_per_segment = p.row_select_on ? p.v / 128 : 0;
  const int rows_per_crow = p.row_select_on ? 2 : 1;
  // Turn-taking over the run's whole sequence of k-tiles (the one-CTA kernel's rule).
  int run_kt = 0;
  for (long long x = sk.begin(cta); x < run_end;) {
    StreamKPiece piece;
    TileSlots tile;
    std::int64_t row0;
    int kt_begin, kt_end;
    if (next_piece(x, piece, tile, row0, kt_begin, kt_end)) run_kt += kt_end - kt_begin;
  }
  bool wait_turn = group == 1;
  int arrivals_left = group == 0 ? run_kt : run_kt - 1;
  RingPosition<kStages> ring;
  for (long long x = sk.begin(cta); x < run_end;) {
    StreamKPiece piece;
    TileSlots tile;
    std::int64_t row0;
    int kt_begin, kt_end;
    if (!next_piece(x, piece, tile, row0, kt_begin, kt_end)) continue;
    const MatrixArrays<kNumMats> mats = matrix_arrays<kNumMats>(p, tile.expert);
    float acc[kNumMats][2][kBN / 2];
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int f = 0; f < kBN / 2; ++f) acc[m][s][f] = 0.0f;
    std::uint32_t sel[kNumMats], word_ahead[kNumMats];
    const std::uint32_t* select_src[kNumMats];
    const std::int64_t warp_row0 = row0 + group * 64 + warp_in_group * 16;
    const bool warp_rows_exist = warp_row0 < p.compressed_rows_padded;
    const int select_shift = static_cast<int>(warp_row0 % 32) + g;
    SegmentCursor segment(kt_per_segment, kt_begin);  // pieces start on granule (segment) boundaries
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      sel[m] = 0;
      select_src[m] = p.row_select_on && warp_rows_exist ? mats.row_select[m] + (warp_row0 / 32) * p.num_segments : nullptr;
      word_ahead[m] = segment.starts() && select_src[m] ? __ldg(select_src[m] + segment.index) : 0u;
    }
    int prev_stage = -1;
    for (int kt = kt_begin; kt < kt_end; ++kt, segment.next(), ring.next()) {
      const int stage = ring.stage;
      mbarrier_wait(&full_bar[stage], ring.phase);
      fence_async_proxy();  // cp.async wrote the stage through the generic proxy; wgmma reads through the async one
      const std::uint8_t* base = smem + stage * Config::kStageBytes;
      const bool new_segment = segment.starts();
      float c[kNumMats][2];
      if (new_segment) enter_segment(sel, word_ahead, c, select_src, select_shift, segment, kt, kt_end);
      const std::uint64_t desc_stage = sw128_descriptor(base);
      wgmma::wait<0>();
      if (prev_stage >= 0 && lane == 0) mbarrier_arrive(&empty_bar[prev_stage]);
      prev_stage = stage;
      std::uint32_t meta[kNumMats][4];
      load_k_tile_metadata<Config, kNumMats>(meta, base, group, warp_in_group, lane,
                                             !warp_rows_exist ? 0 : (kt + 1 < num_kt_total ? 4 : ksteps_tail));
      if (new_segment) update_running_totals(acc, c);
      if (wait_turn) named_barrier_sync(1 + group, Config::kConsumerThreads);
      wait_turn = true;
      issue_k_tile<Config, kBf16, kNumMats>(acc, desc_stage, group, meta);
      if (arrivals_left > 0) named_barrier_arrive(2 - group, Config::kConsumerThreads);
      --arrivals_left;
    }
    wgmma::wait<0>();
    if (lane == 0) mbarrier_arrive(&empty_bar[prev_stage]);  // the producer refills it for the next piece
    running_totals_to_rows(acc, sel);
    // Thread rows g, g + 8 of its warp's 16; slots 8i + 2t (+1).
    float* part = piece.slot >= 0 ? p.workspace + static_cast<std::int64_t>(piece.slot) * kNumMats * kBN * 256 : nullptr;
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int slot = 8 * i + 2 * t + q;
        if (tile.begin + slot >= tile.end) continue;  // past the expert's slots: never stored
        const std::int32_t tok = part ? 0 : token_of_slot(p, tile.begin + slot, tile.end);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const std::int64_t crow = warp_row0 + g + 8 * h;
          const int f = 4 * i + 2 * h + q;
#pragma unroll
          for (int o = 0; o < 2; ++o) {
            if (o >= rows_per_crow) break;
            const std::int64_t R = crow * rows_per_crow + o;
            if (R >= p.rows) continue;
            float v[kNumMats];
#pragma unroll
            for (int m = 0; m < kNumMats; ++m) v[m] = o ? acc[m][1][f] : acc[m][0][f];
            if (part) {
              const int lrow = static_cast<int>(R - row0 * rows_per_crow);  // < 256
#pragma unroll
              for (int m = 0; m < kNumMats; ++m) part[(m * kBN + slot) * 256 + lrow] = v[m];
            } else {
              store<kBf16>(p.y, (tile.begin + slot) * p.rows + R, epilogue_value<kEpi, kNumMats>(v, p, tile.begin + slot, tok), p.y_f32);
            }
          }
        }
      }
  }
#else
  __trap();  // compiled for another architecture: the launcher only runs this kernel on sm_90
#endif
}

// Sums the parts of each output tile that several stream-K CTAs computed, in k order (part 0 first),
// then applies the epilogue; tiles one CTA computed whole were stored by it. One CTA per tile.
template <bool kBf16, int kNumMats, Epi kEpi>
__global__ void __launch_bounds__(256) ssmm_sm90_stream_k_reduce(const Params p, const StreamK sk, int row_tiles) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the product: waits here until its partials are complete.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  constexpr int kBN = 32, kBM = 128;
  constexpr int kMaxParts = 256;  // the launcher keeps the grid at most this many CTAs, so a tile has at most as many parts
  __shared__ int s_slot[kMaxParts];
  const long long tile_idx = blockIdx.x;
  const int num_parts = sk.parts_of(tile_idx);
  if (num_parts < 2) return;
  TileSlots tile;
  if (!find_tile_in_warp<kBN>(p, static_cast<int>(tile_idx / row_tiles), tile)) return;  // past the last expert's tile
  for (int k = threadIdx.x; k < num_parts; k += blockDim.x) s_slot[k] = sk.part(tile_idx, k).slot;
  __syncthreads();
  const int rows_per_crow = p.row_select_on ? 2 : 1;
  const int tile_rows = kBM * rows_per_crow;
  const std::int64_t row_base = (tile_idx % row_tiles) * tile_rows;
  const int slots = static_cast<int>(min(static_cast<std::int64_t>(kBN), tile.end - tile.begin));
  for (int e = threadIdx.x; e < slots * tile_rows; e += blockDim.x) {
    const int slot = e / tile_rows, lrow = e % tile_rows;
    const std::int64_t R = row_base + lrow;
    if (R >= p.rows) continue;
    float v[kNumMats];
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      float sum = 0.0f;
      for (int k = 0; k < num_parts; ++k) sum += p.workspace[(static_cast<std::int64_t>(s_slot[k]) * kNumMats + m) * kBN * 256 + slot * 256 + lrow];
      v[m] = sum;
    }
    const std::int64_t j = tile.begin + slot;
    store<kBf16>(p.y, j * p.rows + R, epilogue_value<kEpi, kNumMats>(v, p, j, token_of_slot(p, j, tile.end)), p.y_f32);
  }
}

// ---- Persistent TMA variant (v14; docs/kernels/ssmm.md) ----
// The TMA variant as a persistent kernel: one CTA per SM takes units of work (output tiles in the
// banded order) from a global counter as it goes, so the tiles in flight stay a window of
// consecutive units (the L2 reuse the banded order is for) and no SM idles while others hold
// several tiles; its warps keep working across tile boundaries:
// - warp 0, lane 0, takes the next unit when it starts loading it and passes it to the CTA's other
//   warps through a small ring in shared memory (`unit_full` / `unit_empty`), then fills the stage
//   ring with bulk tensor copies, its ring position carried from tile to tile, so the next tile's
//   first stages load while the consumers finish this one;
// - warpgroups 1 and 2, the consumers, run the k loop of the one-CTA-per-tile kernel, then convert
//   the running totals to logical rows, apply the epilogue (SiLU·up or the slot weight), round to
//   16 bits and write the tile into the staging buffer ([kBN slots][256 logical rows], rows padded
//   to 528 B as in v13), and go on with the next tile;
// - warps 1-3, the epilogue warps, store the staged tile as 16-byte chunks of whole slot rows while
//   the consumers compute the next one.
// The hand-over is two mbarriers: `staged_full` (every consumer thread arrives after its writes) and
// `staged_empty` (every epilogue thread arrives after its reads). Output bits equal the one-CTA kernel's
// staged epilogue, so it runs where that one applies: row selection, 16-bit Y, 16-byte aligned,
// rows % 8 == 0. Every warp maps a unit to its tile itself (find_tile_in_warp), no CTA-wide barrier
// after the prologue. The consumers' turn-taking (named barriers 1 and 2) runs on across tiles as one
// sequence. No clusters: taking units one CTA at a time needs no cross-CTA hand-over, and the B
// multicast did not pay (v12: cluster 1 and 2 took the same time).
// Budget: registers 56 for warpgroup 0 and 224 for the consumers (128 x 56 + 256 x 224 <= 64 K);
// smem: 3 stages (gate/up 52 KB, down 50 KB each) + the staging buffer (33 / 66 KB) <= 227 KB.
template <int kNumMats>
struct PersistentConfig {
  using Tiles = Sm90Config<kNumMats, false, true>;  // the TMA variant's stage layout, unpaired for gate/up
  static constexpr int kBM = Tiles::kBM, kBK = Tiles::kBK, kBN = Tiles::kBN;
  static constexpr int kThreads = Tiles::kThreads, kProducerThreads = Tiles::kProducerThreads,
                       kConsumerThreads = Tiles::kConsumerThreads;
  static constexpr int kEpilogueThreads = kProducerThreads - 32;  // warps 1-3 of warpgroup 0
  static constexpr int kLowRegisters = 56, kConsumerRegisters = 224;
  static_assert(128 * kLowRegisters + 256 * kConsumerRegisters <= 65536, "register file");
  static constexpr int kStageMats = Tiles::kStageMats, kConsumerMats = Tiles::kConsumerMats;
  static_assert(kConsumerMats == kStageMats, "its consumers hold every matrix of their 64 rows (not the paired gate/up)");
  static constexpr int kATileBytes = Tiles::kATileBytes, kMetaTileBytes = Tiles::kMetaTileBytes,
                       kBTileBytes = Tiles::kBTileBytes, kStageBytes = Tiles::kStageBytes;
  static constexpr int kStagedRowBytes = Tiles::kStagedRowBytes;  // a slot's 256 logical rows, 16-bit, + 16 B
  static constexpr int kStagedBytes = kBN * kStagedRowBytes;
  static constexpr int kUnitRing = 4;  // units passed from the producer to the other warps, in flight
  // the stage pairs (at most 8 stages), two hand-over barriers, the unit ring's pairs and values
  static constexpr int kBarrierBytes = 2 * 8 * 8 + 2 * 8 + 2 * 8 * kUnitRing + 4 * kUnitRing;
  static constexpr int kStages = std::min(8, (227 * 1024 - kStagedBytes - kBarrierBytes - 1024) / kStageBytes);
  static constexpr int kSmemBytes = kStages * kStageBytes + kStagedBytes + kBarrierBytes + 1024;
  static_assert(kStages >= 2 && kSmemBytes <= 227 * 1024, "shared memory");
};

template <bool kBf16, int kNumMats, Epi kEpi>
__global__ void __launch_bounds__(384, 1)
    ssmm_sm90_persistent(const Params p, const __grid_constant__ TmaMaps maps, int num_units_x, int num_units_y,
                         int* next_unit /* zero at launch */) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  using Config = PersistentConfig<kNumMats>;
  constexpr int kBM = Config::kBM, kBK = Config::kBK, kBN = Config::kBN, kStages = Config::kStages;
  constexpr int kATileBytes = Config::kATileBytes, kStagedRowBytes = Config::kStagedRowBytes;
  extern __shared__ std::uint8_t smem_raw[];
  std::uint8_t* smem = smem_raw + ((1024 - (ptx::smem_address(smem_raw) & 1023)) & 1023);  // [kStages] stages
  std::uint8_t* staged = smem + kStages * Config::kStageBytes;                                // [kBN][kStagedRowBytes]
  auto* full_bar = reinterpret_cast<std::uint64_t*>(staged + Config::kStagedBytes);           // [kStages]
  std::uint64_t* empty_bar = full_bar + kStages;                                              // [kStages]
  std::uint64_t* staged_full = empty_bar + kStages;   // the consumers wrote a tile into `staged`
  std::uint64_t* staged_empty = staged_full + 1;      // the epilogue warps stored it
  std::uint64_t* unit_full = staged_empty + 1;        // [kUnitRing] the producer wrote a unit
  std::uint64_t* unit_empty = unit_full + Config::kUnitRing;  // [kUnitRing] every reader warp took it
  auto* unit_value = reinterpret_cast<int*>(unit_empty + Config::kUnitRing);  // [kUnitRing]
  constexpr int kUnitReaders = Config::kConsumerThreads / 32 + Config::kEpilogueThreads / 32;

  const int tid = threadIdx.x;
  const int num_units = num_units_x * num_units_y;  // the launcher checks that this fits an int
  const int num_kt = static_cast<int>((p.K_padded + kBK - 1) / kBK);
  // Unit u's tile (found: false past the last expert's tiles, or u >= num_units: no units left).
  // Called by each warp for itself.
  struct UnitTile {
    int u;
    bool found;
    TileSlots tile;
    std::int64_t row0;
  };
  auto unit_tile = [&](int u) {
    UnitTile t{u, false, {0, 0, 0}, 0};
    if (u < num_units) {
      const TileCoord unit = banded_tile(u, num_units_x, num_units_y, p.tile_band);
      t.row0 = static_cast<std::int64_t>(unit.x) * kBM;
      t.found = find_tile_in_warp<kBN>(p, unit.y, t.tile);
    }
    return t;
  };
  // The reader warps' side of the unit ring: the n-th unit this CTA takes (num_units or more: none left).
  auto take_unit = [&](unsigned n) {
    const int slot = static_cast<int>(n % Config::kUnitRing);
    mbarrier_wait(&unit_full[slot], (n / Config::kUnitRing) & 1u);
    const int u = __shfl_sync(0xffffffffu, (threadIdx.x % 32) == 0 ? unit_value[slot] : 0, 0);
    if (threadIdx.x % 32 == 0) mbarrier_arrive(&unit_empty[slot]);
    return u;
  };
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full_bar[s], 1u);                                // lane 0's expect_tx arrival
      mbarrier_init(&empty_bar[s], Config::kConsumerThreads / 32);  // every consumer warp
    }
    mbarrier_init(staged_full, Config::kConsumerThreads);
    mbarrier_init(staged_empty, Config::kEpilogueThreads);
    for (int s = 0; s < Config::kUnitRing; ++s) {
      mbarrier_init(&unit_full[s], 1u);
      mbarrier_init(&unit_empty[s], kUnitReaders);
    }
    fence_mbarrier_init();  // the bulk copies complete on the stage barriers through the async proxy
  }
  __syncthreads();

  if (tid < Config::kProducerThreads) {
    setmaxnreg_dec<Config::kLowRegisters>();
    if (tid < 32) {
      // ---- Producer: takes the units and issues the bulk tensor copies of every tile's k-tiles. ----
      // (find_tile_in_warp needs the whole warp; only lane 0 issues.) Unit n + 1 is taken and looked
      // up once tile n's first copies are issued, so the next copies go out at once at the boundary
      // (against taking it there: no measurable difference, docs/kernels/ssmm.md v14).
      const int lane = tid;
      auto take_next = [&](unsigned n) {
        const int slot = static_cast<int>(n % Config::kUnitRing);
        mbarrier_wait(&unit_empty[slot], ((n / Config::kUnitRing) & 1u) ^ 1u);  // every reader took unit n - kUnitRing
        int u = 0;
        if (lane == 0) {
          u = atomicAdd(next_unit, 1);
          unit_value[slot] = u;
          mbarrier_arrive(&unit_full[slot]);
        }
        return unit_tile(__shfl_sync(0xffffffffu, u, 0));
      };
      RingPosition<kStages> ring;
      long long fills = 0;
      UnitTile cur = take_next(0);
      for (unsigned n = 0; cur.u < num_units; ++n) {
        if (!cur.found) {
          cur = take_next(n + 1);
          continue;
        }
        UnitTile next{};
        const int crow0 = static_cast<int>(cur.row0), slot0 = static_cast<int>(cur.tile.begin), expert = cur.tile.expert;
        for (int kt = 0; kt < num_kt; ++kt, ++fills, ring.next()) {
          const int stage = ring.stage;
          if (fills >= kStages) mbarrier_wait(&empty_bar[stage], ring.phase ^ 1u);  // its readers are done
          if (lane == 0) {
            std::uint8_t* base = smem + stage * Config::kStageBytes;
            constexpr unsigned kTxBytes = kNumMats * (kATileBytes + Config::kMetaTileBytes) + Config::kBTileBytes;
            mbarrier_arrive_expect_tx(&full_bar[stage], kTxBytes);
#pragma unroll
            for (int m = 0; m < kNumMats; ++m)
              load_a_tile(base + m * kATileBytes, base + kNumMats * kATileBytes + m * Config::kMetaTileBytes, &maps.values[m],
                          &maps.metadata[m], &full_bar[stage], kt, crow0, expert);
            load_b_share(base + kNumMats * (kATileBytes + Config::kMetaTileBytes), kBN, &maps.b, &full_bar[stage], kt, slot0, 0, 1,
                         std::uint16_t{1});
          }
          if (kt == 0) next = take_next(n + 1);
        }
        cur = next;
      }
      return;
    }
    // ---- Epilogue warps: store each staged tile as 16-byte chunks of whole slot rows. ----
    const int etid = tid - 32;
    auto* y = static_cast<std::uint16_t*>(p.y);
    unsigned handed = 0;  // tiles stored so far
    for (unsigned n = 0;; ++n) {
      const UnitTile cur = unit_tile(take_unit(n));
      if (cur.u >= num_units) break;
      if (!cur.found) continue;
      const TileSlots& tile = cur.tile;
      const std::int64_t row0 = cur.row0;
      const int slots_here = static_cast<int>(std::min<std::int64_t>(kBN, tile.end - tile.begin));
      const int chunks_here = static_cast<int>(std::min<std::int64_t>(2 * kBM, p.rows - 2 * row0) / 8);  // <= 0: a padded row tile
      mbarrier_wait(staged_full, handed & 1u);
#pragma unroll 4
      for (int c = etid; c < slots_here * 32; c += Config::kEpilogueThreads) {
        const int slot = c / 32, chunk = c % 32;
        if (chunk >= chunks_here) continue;  // rows past the matrix in its last row tile
        *reinterpret_cast<uint4*>(y + (tile.begin + slot) * p.rows + 2 * row0 + chunk * 8) =
            *reinterpret_cast<const uint4*>(staged + slot * kStagedRowBytes + chunk * 16);
      }
      mbarrier_arrive(staged_empty);
      ++handed;
    }
    return;
  }

  // ---- Consumer warpgroups 1 and 2: the k loop of each tile, then its hand-over. ----
  setmaxnreg_inc<Config::kConsumerRegisters>();
  const int ctid = tid - Config::kProducerThreads;
  const int lane = ctid % 32, warp_in_group = (ctid % 128) / 32, group = ctid / 128;
  const int g = lane / 4, t = lane % 4;
  const std::int64_t ksteps_per_row = p.K_padded / 32;
  const int kt_per_segment = p.v / kBK;  // row selection is on (the launcher's condition); V % kBK == 0
  // K_padded is a multiple of 64: a k-tile has 4 k-steps, the last one possibly 2.
  const int ksteps_last = static_cast<int>(ksteps_per_row - static_cast<std::int64_t>(num_kt - 1) * 4);
  const int pair_offset = (group * 64 + warp_in_group * 16 + g) * 4;  // logical rows 2 crow, 2 crow + 1 of row h = 0
  RingPosition<kStages> ring;
  // Turn-taking over the whole sequence of k-tiles: consumer 0 issues after consumer 1 issued the
  // previous k-tile (barrier 1; its very first one waits for nobody), consumer 1 after consumer 0
  // issued the same k-tile (barrier 2). Each arrives after every issue; consumer 0 takes the last
  // arrival on barrier 1 before leaving.
  bool wait_turn = group == 1;
  unsigned handed = 0;  // tiles handed to the epilogue warps so far
  float acc[kNumMats][2][kBN / 2];  // [matrix][set][wgmma accumulator fragment]
  // The first select word of each matrix for this warp's rows of a unit's tile (0 where it has none).
  auto first_select_words = [&](const UnitTile& ut, std::uint32_t (&words)[kNumMats]) {
    const std::int64_t rows0 = ut.row0 + group * 64 + warp_in_group * 16;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
      words[m] = ut.found && rows0 < p.compressed_rows_padded
                     ? __ldg(p.row_select[m] + ut.tile.expert * p.select_stride + (rows0 / 32) * p.num_segments)
                     : 0u;
  };
  // Unit n + 1 and its first select words are taken in the middle of tile n's k loop, so the tile
  // boundary waits for neither lookup (the producer took it at the start of tile n).
  UnitTile cur = unit_tile(take_unit(0));
  std::uint32_t cur_words[kNumMats];
  first_select_words(cur, cur_words);
  for (unsigned n = 0; cur.u < num_units; ++n) {
    UnitTile next{};
    std::uint32_t next_words[kNumMats];
    auto look_ahead = [&] {
      next = unit_tile(take_unit(n + 1));
      first_select_words(next, next_words);
    };
    if (!cur.found) {
      look_ahead();
      cur = next;
#pragma unroll
      for (int m = 0; m < kNumMats; ++m) cur_words[m] = next_words[m];
      continue;
    }
    const TileSlots tile = cur.tile;
    const std::int64_t row0 = cur.row0;
    const MatrixArrays<kNumMats> mats = matrix_arrays<kNumMats>(p, tile.expert);
#pragma unroll
    for (int m = 0; m < kNumMats; ++m)
#pragma unroll
      for (int s = 0; s < 2; ++s)
#pragma unroll
        for (int f = 0; f < kBN / 2; ++f) acc[m][s][f] = 0.0f;
    std::uint32_t sel[kNumMats];  // bit h: selection of this thread's row g + 8h in the current segment
    const std::int64_t warp_row0 = row0 + group * 64 + warp_in_group * 16;  // this warp's 16 compressed rows
    const bool warp_rows_exist = warp_row0 < p.compressed_rows_padded;
    const int select_shift = static_cast<int>(warp_row0 % 32) + g;
    const std::uint32_t* select_src[kNumMats];
    std::uint32_t word_ahead[kNumMats];  // the next segment start's select words
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      sel[m] = 0;
      select_src[m] = warp_rows_exist ? mats.row_select[m] + (warp_row0 / 32) * p.num_segments : nullptr;
      word_ahead[m] = cur_words[m];
    }
    const int ksteps_full = warp_rows_exist ? 4 : 0, ksteps_tail = warp_rows_exist ? ksteps_last : 0;
    SegmentCursor segment(kt_per_segment, 0);
    int prev_stage = 0;
    for (int kt = 0; kt < num_kt; ++kt, segment.next(), ring.next()) {
      const int stage = ring.stage;
      mbarrier_wait(&full_bar[stage], ring.phase);
      const std::uint8_t* base = smem + stage * Config::kStageBytes;
      const bool new_segment = segment.starts();
      float c[kNumMats][2];
      if (new_segment) {
#pragma unroll
        for (int m = 0; m < kNumMats; ++m) {
          const std::uint32_t word = word_ahead[m];
          const std::uint32_t next = ((word >> select_shift) & 1u) | (((word >> (select_shift + 8)) & 1u) << 1);
#pragma unroll
          for (int h = 0; h < 2; ++h) c[m][h] = static_cast<float>(static_cast<int>((sel[m] >> h) & 1u) - static_cast<int>((next >> h) & 1u));
          sel[m] = next;
          if (kt + kt_per_segment < num_kt && select_src[m]) word_ahead[m] = __ldg(select_src[m] + segment.index + 1);
        }
      }
      const std::uint64_t desc_stage = sw128_descriptor(base);
      wgmma::wait<0>();
      if (kt > 0 && lane == 0) mbarrier_arrive(&empty_bar[prev_stage]);
      prev_stage = stage;
      std::uint32_t meta[kNumMats][4];
      load_k_tile_metadata<Config, kNumMats>(meta, base, group, warp_in_group, lane, kt + 1 < num_kt ? ksteps_full : ksteps_tail);
      if (new_segment) update_running_totals(acc, c);
      if (wait_turn) named_barrier_sync(1 + group, Config::kConsumerThreads);
      wait_turn = true;
      issue_k_tile<Config, kBf16, kNumMats>(acc, desc_stage, group, meta);
      named_barrier_arrive(2 - group, Config::kConsumerThreads);
      if (kt == num_kt / 2) look_ahead();
    }
    wgmma::wait<0>();
    if (lane == 0) mbarrier_arrive(&empty_bar[prev_stage]);
    // Hand-over: odd = S + sel T, even = T - odd, the epilogue, rounded to 16-bit pairs in registers
    // (the accumulators die as they go), then into the staging buffer once the epilogue warps have
    // stored the previous tile: the token and weight loads and the math do not wait for them.
    const int slots_here = static_cast<int>(std::min<std::int64_t>(kBN, tile.end - tile.begin));
    std::uint32_t pairs[kBN / 8][2][2];  // [i][q][h]
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int slot = 8 * i + 2 * t + q;
        pairs[i][q][0] = pairs[i][q][1] = 0u;
        if (slot >= slots_here) continue;  // past the expert's slots (a suffix of the tile): never stored
        const std::int32_t tok = token_of_slot(p, tile.begin + slot, tile.end);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int f = 4 * i + 2 * h + q;
          float even[kNumMats], odd[kNumMats];
#pragma unroll
          for (int m = 0; m < kNumMats; ++m) {
            odd[m] = fmaf(acc[m][0][f], static_cast<float>((sel[m] >> h) & 1u), acc[m][1][f]);
            even[m] = acc[m][0][f] - odd[m];
          }
          pairs[i][q][h] = narrow2<kBf16>(epilogue_value<kEpi, kNumMats>(even, p, tile.begin + slot, tok),
                                          epilogue_value<kEpi, kNumMats>(odd, p, tile.begin + slot, tok));
        }
      }
    mbarrier_wait(staged_empty, (handed & 1u) ^ 1u);  // the epilogue warps stored the previous tile
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i)
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int slot = 8 * i + 2 * t + q;
        if (slot >= slots_here) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h)
          *reinterpret_cast<std::uint32_t*>(staged + slot * kStagedRowBytes + pair_offset + h * 32) = pairs[i][q][h];
      }
    mbarrier_arrive(staged_full);
    ++handed;
    cur = next;
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) cur_words[m] = next_words[m];
  }
  if (group == 0 && handed > 0) named_barrier_sync(1, Config::kConsumerThreads);  // consumer 1's last arrival
#else
  __trap();  // compiled for another architecture: the launcher only runs this kernel on sm_90
#endif
}

// Sums the split-K partials of each output element in split order, then applies the epilogue.
template <bool kBf16, int kNumMats, Epi kEpi>
__global__ void ssmm_sm90_reduce(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the product (launch_reduce): it may start before the
  // product finishes, and waits here until the product's partials are complete and visible.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const std::int64_t n = p.L * p.rows;
  // Grouped: slots before the first expert's and past the last expert's were never computed (their
  // partials are not written) and stay untouched in Y.
  std::int64_t slot_begin = 0, slot_end = p.L;
  if (p.expert_offsets) {
    const std::int64_t used = p.expert_offsets[p.num_experts];
    slot_end = used < 0 ? 0 : (used < p.L ? used : p.L);
    const std::int64_t first = p.expert_offsets[0];
    slot_begin = first < 0 ? 0 : (first < slot_end ? first : slot_end);
  }
  for (std::int64_t e = slot_begin * p.rows + blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t slot = e / p.rows;
    if (slot >= slot_end) break;  // e only grows
    float v[kNumMats];
#pragma unroll
    for (int m = 0; m < kNumMats; ++m) {
      float sum = 0.0f;
      for (int s = 0; s < p.splits; ++s) sum += p.workspace[(static_cast<std::int64_t>(s) * kNumMats + m) * n + e];
      v[m] = sum;
    }
    store<kBf16>(p.y, e, epilogue_value<kEpi, kNumMats>(v, p, slot, token_of_slot(p, slot, slot_end)), p.y_f32);
  }
}

int num_sms() {
  static int count = [] {
    int device = 0, sms = 132;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    return sms;
  }();
  return count;
}

int num_mats_of(const gpu::SsmmArgs& a) {
  return a.epilogue == gpu::SsmmEpilogue::gate_up ? (a.gate_linear.values ? 3 : 2) : 1;
}

// Experts that can hold tokens in a call (1 for one matrix); a grouped grid has a tile row for each.
std::int64_t busy_experts_of(const gpu::SsmmArgs& a) {
  return a.expert_offsets ? std::min<std::int64_t>(a.weight.num_stacked, a.num_tokens) : 1;
}

// Token slots per expert a call expects: all of them for one matrix, the mean over the experts that
// can be non-empty for a grouped call (the real counts stay on the device).
std::int64_t tokens_per_expert(const gpu::SsmmArgs& a) {
  if (!a.expert_offsets) return a.num_tokens;
  const std::int64_t busy = std::max<std::int64_t>(1, busy_experts_of(a));
  return (a.num_tokens + busy - 1) / busy;
}

// Tuning knobs for measurements (docs/kernels/ssmm.md): SAMOYEDS_SSMM_TMA = auto | on | off,
// SAMOYEDS_SSMM_CLUSTER = the largest cluster (1, 2, 4 or 8; default 2), SAMOYEDS_SSMM_BAND = the
// token tiles per band of the launch order (0 or unset: planned; 1: row tiles fastest),
// SAMOYEDS_SSMM_NARROW = on (32-token tiles wherever the kernel has them), off (wide tiles except where
// only 32 exist) or auto (planned), and SAMOYEDS_SSMM_SPLIT_TRAFFIC = a factor on the split-K partial-traffic bound (default 1;
// larger allows more splits at medium L), SAMOYEDS_SSMM_A_TMA = on (the cp.async variant takes A values
// and metadata by bulk tensor copies, the producer warpgroup gathering only B; off by default until
// measured: docs/kernels/ssmm.md v8), SAMOYEDS_SSMM_PDL = off (the split-K reduce as a plain
// stream-ordered launch), SAMOYEDS_SSMM_PERSISTENT = on (the TMA variant's persistent kernel where
// it applies; off by default: it measured slower, docs/kernels/ssmm.md v14), SAMOYEDS_SSMM_EARLY_STAGES =
// N (the cp.async variant's consumers copy the first N stages' A values and metadata while the token
// ids load; default 1, v15), SAMOYEDS_SSMM_STREAM_K = on (decode-sized calls through the stream-K
// kernel where it applies; off by default until measured, v16), SAMOYEDS_SSMM_DECODE = off (the calls
// gpu::plan_decode gives ssmm_decode.cu through the wgmma kernels instead, v17), SAMOYEDS_SSMM_DECODE_WIDE_K
// = the largest K the decode kernel takes past 8 slots per expert (default gpu::kDecodeMaxKOver8Slots,
// at most gpu::kDecodeMaxK; v19), SAMOYEDS_SSMM_DECODE_MAX_SLOTS = the most slots per expert it takes
// for small weights (default gpu::kDecodeMaxSlotsSmallWeight; 16 or less keeps it to 16 everywhere; v20),
// SAMOYEDS_SSMM_SPLIT_EPILOGUE = off (the paired gate/up's staged epilogue on gate's consumer alone, v24; v25). Read once per
// process; ssmm_sm90_set_persistent, ssmm_sm90_set_stream_k and ssmm_sm90_set_decode override the
// three choices for tests.
struct Tuning {
  int tma = -1;  // -1 auto, 0 off, 1 on wherever the variant can run
  int max_cluster = 2;
  int band = 0;
  int narrow = -1;  // -1 planned (gpu::plan_tile_tokens), 0 wide tiles, 1 32-token tiles
  bool a_tma = false;  // cp.async variant: A values and metadata by bulk tensor copies
  bool pdl = true;     // the split-K reduce as a programmatic dependent launch
  bool persistent = false;  // the TMA variant's persistent kernel where it applies
  int early_stages = 1;  // cp.async variant: stages whose A the consumers copy in the prologue (v15: 1 measured best)
  bool stream_k = false;  // the stream-K kernel where it applies
  bool decode = true;     // the decode kernel where it applies
  std::int64_t decode_wide_k = gpu::kDecodeMaxKOver8Slots;
  std::int64_t decode_max_slots = gpu::kDecodeMaxSlotsSmallWeight;
  double split_traffic = 1.0;
  bool split_epilogue = true;  // the paired gate/up's staged epilogue split between its consumers (v25)
};
const Tuning& tuning() {
  static const Tuning t = [] {
    Tuning r;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_TMA")) r.tma = std::strcmp(v, "on") == 0 ? 1 : (std::strcmp(v, "off") == 0 ? 0 : -1);
    if (const char* v = std::getenv("SAMOYEDS_SSMM_CLUSTER")) r.max_cluster = std::clamp(std::atoi(v), 1, 8);
    if (const char* v = std::getenv("SAMOYEDS_SSMM_BAND")) r.band = std::max(0, std::atoi(v));
    if (const char* v = std::getenv("SAMOYEDS_SSMM_NARROW")) r.narrow = std::strcmp(v, "on") == 0 ? 1 : (std::strcmp(v, "off") == 0 ? 0 : -1);
    if (const char* v = std::getenv("SAMOYEDS_SSMM_A_TMA")) r.a_tma = std::strcmp(v, "on") == 0;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_PDL")) r.pdl = std::strcmp(v, "off") != 0;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_PERSISTENT")) r.persistent = std::strcmp(v, "on") == 0;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_EARLY_STAGES")) r.early_stages = std::max(0, std::atoi(v));
    if (const char* v = std::getenv("SAMOYEDS_SSMM_STREAM_K")) r.stream_k = std::strcmp(v, "on") == 0;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_DECODE")) r.decode = std::strcmp(v, "off") != 0;
    if (const char* v = std::getenv("SAMOYEDS_SSMM_DECODE_WIDE_K")) r.decode_wide_k = std::clamp<std::int64_t>(std::atoll(v), 0, gpu::kDecodeMaxK);
    if (const char* v = std::getenv("SAMOYEDS_SSMM_DECODE_MAX_SLOTS")) r.decode_max_slots = std::clamp<std::int64_t>(std::atoll(v), 0, 1024);
    if (const char* v = std::getenv("SAMOYEDS_SSMM_SPLIT_TRAFFIC")) r.split_traffic = std::max(0.0, std::atof(v));
    if (const char* v = std::getenv("SAMOYEDS_SSMM_SPLIT_EPILOGUE")) r.split_epilogue = std::strcmp(v, "off") != 0;
    return r;
  }();
  return t;
}

std::atomic<int> persistent_override{-1};  // ssmm_sm90_set_persistent: -1 follows the knob
std::atomic<int> stream_k_override{-1};    // ssmm_sm90_set_stream_k: -1 follows the knob
std::atomic<int> decode_override{-1};      // ssmm_sm90_set_decode: -1 follows the knob

// Output row tiles of a call's weight in 128 compressed rows (Sm90Config::kBM; the paired gate/up runs
// twice as many 64-row CTAs, but its plans — TMA or not, cluster size — count these, as measured in v24).
std::int64_t row_tiles_of(const gpu::SsmmArgs& a) {
  return (packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols).compressed_rows_padded + 127) / 128;
}

// The tile width a call uses (gpu::plan_tile_tokens), or the SAMOYEDS_SSMM_NARROW override.
int tile_tokens(const gpu::SsmmArgs& a) {
  if (tuning().narrow == 1) return 32;
  if (tuning().narrow == 0 && num_mats_of(a) < 3 && tokens_per_expert(a) > 32) return num_mats_of(a) == 1 ? 128 : 64;
  return gpu::plan_tile_tokens(tokens_per_expert(a), num_mats_of(a), row_tiles_of(a), a.weight.cols, a.num_tokens,
                               busy_experts_of(a), num_sms());
}

// How many splits the partial traffic allows: each split writes and the reduce reads L x M fp32
// partials per matrix; keep all of that within the weight bytes plus 2 MB, or splitting costs more than
// the parallelism it buys. (v3.1 needed a quarter of the weight bytes; the v4 kernel, one CTA per SM,
// left medium L on a fifth of the SMs under that bound: docs/kernels/ssmm.md.)
std::int64_t max_splits_of(const gpu::SsmmArgs& a, const PackedGeometry& g) {
  const double partial_bytes =
      8.0 * num_mats_of(a) * static_cast<double>(a.num_tokens) * static_cast<double>(a.weight.rows);
  const double allowed_bytes = (static_cast<double>(g.total_bytes()) + 2.0e6) * tuning().split_traffic;
  return static_cast<std::int64_t>(allowed_bytes / partial_bytes);
}

// The decode kernel's tiles and split for a call (gpu::plan_decode); tile_tokens 0 when it does not take it.
gpu::DecodePlan decode_plan(const gpu::SsmmArgs& a) {
  const int mode = decode_override.load();
  if (!(mode >= 0 ? mode == 1 : tuning().decode) || a.num_tokens <= 0) return {};
  const PackedGeometry g = packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols);
  gpu::DecodeCall call;
  call.num_mats = num_mats_of(a);
  call.tokens_per_expert = tokens_per_expert(a);
  call.K = a.weight.cols;
  call.row_tiles = g.compressed_rows_padded / 32;
  call.num_tokens = a.num_tokens;
  call.busy_experts = busy_experts_of(a);
  call.num_k_tiles = (g.cols_padded + gpu::kDecodeKTileColumns - 1) / gpu::kDecodeKTileColumns;
  call.num_sms = num_sms();
  call.max_k_over_8_slots = tuning().decode_wide_k;
  call.max_slots = tuning().decode_max_slots;
  // Whether the kernel takes the call does not depend on the split's bound (a host test checks it):
  // only calls it takes need the device's table, whose first query sets kernel attributes.
  if (!gpu::plan_decode(call).tile_tokens) return {};
  call.resident = ssmm_decode_resident_clusters();
  return gpu::plan_decode(call);
}

gpu::SplitPlan split_plan(const gpu::SsmmArgs& a) {
  const PackedGeometry g = packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols);
  const std::int64_t row_tiles = row_tiles_of(a);
  // Grouped: at least one tile per busy expert (the real tile count is only known on the device).
  const std::int64_t token_tiles = std::max((a.num_tokens + tile_tokens(a) - 1) / tile_tokens(a), busy_experts_of(a));
  const std::int64_t num_kt = (g.cols_padded + 127) / 128;
  const std::int64_t segment_kt = a.weight.pattern.has_row_selection() ? a.weight.pattern.v / 128 : 1;
  return gpu::plan_split_k(row_tiles, token_tiles, num_kt, segment_kt, num_sms(), max_splits_of(a, g));
}

// X's rows in slot order for the TMA variant, whose B boxes are runs of contiguous rows: slot j gets
// X[token_idx[j]] (zeros for a bad index; the epilogue stores NaN for it). One CTA per slot at a time.
__global__ void gather_slot_rows(const Params p, std::uint16_t* x_slots /* [L, K] */) {
  std::int64_t slot_end = p.L;
  if (p.expert_offsets) {
    const std::int64_t used = p.expert_offsets[p.num_experts];
    slot_end = used < 0 ? 0 : (used < p.L ? used : p.L);
  }
  const std::int64_t chunks = p.K / 8;  // 16-byte chunks per row (K % 8 == 0: can_implement)
  for (std::int64_t slot = blockIdx.x; slot < slot_end; slot += gridDim.x) {
    const std::int32_t tok = token_of_slot(p, slot, slot_end);
    const auto* src = reinterpret_cast<const uint4*>(p.x + (tok >= 0 ? tok : 0) * p.K);
    auto* dst = reinterpret_cast<uint4*>(x_slots + slot * p.K);
    for (std::int64_t c = threadIdx.x; c < chunks; c += blockDim.x) dst[c] = tok >= 0 ? src[c] : make_uint4(0, 0, 0, 0);
  }
}

// The launch order's band for a grid of row_tiles x token_tiles CTAs of configuration Config. In a
// grouped launch only the token tiles of one expert share weights: a band wider than an expert's
// (mean) tile count spans experts whose weights differ, so it is capped there.
template <typename Config>
int tile_band_of(const Params& p, std::int64_t row_tiles, std::int64_t token_tiles, int num_mats) {
  std::int64_t tiles_per_expert = token_tiles;
  if (p.expert_offsets) {
    const std::int64_t busy = std::max<std::int64_t>(1, std::min<std::int64_t>(p.num_experts, p.L));
    tiles_per_expert = ((p.L + busy - 1) / busy + Config::kBN - 1) / Config::kBN;
  }
  const std::int64_t band =
      tuning().band > 0 ? tuning().band
                        : gpu::plan_tile_band(row_tiles, token_tiles, num_mats * (Config::kATileBytes + Config::kMetaTileBytes),
                                              Config::kBTileBytes, num_sms(), tiles_per_expert);
  return static_cast<int>(std::clamp<std::int64_t>(band, 1, std::max<std::int64_t>(token_tiles, 1)));
}

bool aligned16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }

// What the launcher runs for a call: the split plan, and whether the TMA variant takes it (unsplit,
// one or two matrices, full-width token tiles, 16-byte aligned arrays) with which cluster size.
struct Sm90Choice {
  gpu::SplitPlan plan;
  bool tma = false;
  bool a_tma = false;  // the cp.async variant with A by tensor copies
  int cluster = 1;
  // The TMA variant as the persistent kernel: its staged epilogue needs row selection, 16-bit Y
  // aligned to 16 bytes and rows % 8 == 0 (otherwise the one-CTA-per-tile kernel's paired stores).
  bool persistent = false;
  std::size_t gather_bytes = 0;  // X in slot order, for calls with a token list
  // The stream-K kernel (cp.async, 32-token tiles): its split of the tiles' granules over CTAs.
  bool stream_k = false;
  StreamK sk;
  int row_tiles = 0;
  // The decode kernel (ssmm_decode.cu): slots per tile (8 or 16), 0 when it does not take the call; `plan`
  // is then its split (in 128-column k-tiles, reduced on chip: no workspace).
  int decode_tokens = 0;
};

// The stream-K kernel's reduce keeps a tile's part list in a fixed shared array: at most this many CTAs.
constexpr int kMaxStreamKCtas = 256;

// Whether a call takes the stream-K kernel, and its split: 32-token tiles, fewer output tiles than
// SMs (so one CTA per tile leaves SMs idle) and at least two granules per SM (a shorter run is mostly
// the fixed costs the split would double).
void choose_stream_k(const gpu::SsmmArgs& a, Sm90Choice& c) {
  const int mode = stream_k_override.load();
  if (!(mode >= 0 ? mode == 1 : tuning().stream_k) || c.tma || tile_tokens(a) != 32) return;
  const PackedGeometry g = packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols);
  const std::int64_t row_tiles = row_tiles_of(a);
  // Grouped: the device-side tile count is only bounded here (grid_token_tiles' bound); tiles past the
  // real count are skipped by the kernel and the reduce.
  const std::int64_t token_tiles =
      a.expert_offsets ? a.num_tokens / 32 + std::min<std::int64_t>(a.weight.num_stacked, a.num_tokens) : (a.num_tokens + 31) / 32;
  const std::int64_t num_kt = (g.cols_padded + 127) / 128;
  const std::int64_t granules = a.weight.pattern.has_row_selection() ? g.num_segments : num_kt;
  const std::int64_t tiles = row_tiles * token_tiles;
  const int ctas = std::min(num_sms(), kMaxStreamKCtas);
  if (a.num_tokens <= 0 || tiles >= num_sms() || tiles * granules < 2 * static_cast<std::int64_t>(ctas)) return;
  c.stream_k = true;
  c.sk.num_tiles = tiles;
  c.sk.granules_per_tile = granules;
  c.sk.num_ctas = ctas;
  c.row_tiles = static_cast<int>(row_tiles);
}

Sm90Choice choose(const gpu::SsmmArgs& a) {
  Sm90Choice c;
  const gpu::DecodePlan decode = decode_plan(a);
  if (decode.tile_tokens) {
    c.decode_tokens = decode.tile_tokens;
    c.plan = decode.split;
    return c;
  }
  c.plan = split_plan(a);
  const Tuning& t = tuning();
  const PackedGeometry g = packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols);
  const std::int64_t row_tiles = row_tiles_of(a);
  const bool wanted =
      t.tma == 1 || (t.tma == -1 && gpu::plan_tma_variant(tokens_per_expert(a), num_mats_of(a), row_tiles, a.token_idx != nullptr));
  bool weights_ok = true;
  for (const gpu::PackedMatrixView* m : {&a.weight, &a.up}) weights_ok = weights_ok && aligned16(m->values) && aligned16(m->metadata);
  // Tensor-map strides are whole 16-byte units: X rows (K % 8 == 0 already), values rows and stacks.
  weights_ok = weights_ok && (g.num_values() * 2) % 16 == 0 && (g.cols_padded % 16) == 0;
  const bool arrays_ok = weights_ok && aligned16(a.x);
  c.tma = wanted && t.tma != 0 && c.plan.splits == 1 && num_mats_of(a) <= 2 && tile_tokens(a) != 32 && arrays_ok;
  // Used whenever the cp.async variant runs (also when the TMA variant is chosen but its gather
  // workspace is missing).
  c.a_tma = t.a_tma && num_mats_of(a) <= 2 && weights_ok;
  if (!c.tma) {
    choose_stream_k(a, c);
    return c;
  }
  c.cluster = gpu::plan_cluster_size(row_tiles, t.max_cluster);
  // kBN / cluster rows per slice must stay whole 1024-byte swizzle atoms (8 rows).
  while (c.cluster > 1 && tile_tokens(a) / c.cluster < 8) c.cluster /= 2;
  if (a.token_idx) c.gather_bytes = (static_cast<std::size_t>(a.num_tokens) * static_cast<std::size_t>(a.weight.cols) * 2 + 255) / 256 * 256;
  const int override_mode = persistent_override.load();
  const bool persistent_wanted = override_mode >= 0 ? override_mode == 1 : t.persistent;
  c.persistent = persistent_wanted && a.weight.pattern.has_row_selection() && a.y_dtype != DType::f32 && a.weight.rows % 8 == 0 &&
                 aligned16(a.y);
  return c;
}

// Tensor maps of the A values and metadata of kNumMats (<= 2) matrices in the boxes a stage holds:
// box_rows (a CTA's compressed rows: 128, or 64 for the paired gate/up) x 64 values, box_rows / 16
// row tiles x 4 k-steps of words.
template <int kNumMats>
TmaMaps weight_maps(const Params& p, std::uint32_t box_rows = 128) {
  static_assert(kNumMats <= 2, "TmaMaps holds two matrices");
  TmaMaps maps;
  std::memset(&maps, 0, sizeof(maps));
  for (int m = 0; m < kNumMats; ++m) {
    const WeightMaps w = weight_maps_of(p, m, box_rows);
    maps.values[m] = w.values;
    maps.metadata[m] = w.metadata;
  }
  return maps;
}

// Both variants: the kernel's shared-memory size, and the token tiles its grid covers (checked
// against the grid's y limit).
template <typename Config, typename Kernel>
std::int64_t prepare_launch(Kernel* kernel, const Params& p) {
  SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Config::kSmemBytes));
  const std::int64_t token_tiles = grid_token_tiles(p, Config::kBN);
  SAMOYEDS_CHECK(token_tiles <= 65535, "ssmm: ", p.L, " token slots need ", token_tiles, " tiles of ", Config::kBN,
                 "; the grid allows 65535: split the call");
  return token_tiles;
}

// A reduce of 256-thread CTAs as a programmatic dependent launch: the grid is set up while the product
// runs (its CTAs are scheduled once every product CTA has started, and wait in griddepcontrol.wait),
// hiding the launch gap that a plain stream-ordered launch pays after the product's last CTA.
template <typename... Args>
void launch_dependent(void (*kernel)(Args...), unsigned blocks, cudaStream_t stream, const Args&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(256);
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = tuning().pdl ? 1 : 0;  // without it griddepcontrol.wait returns at once
  SAMOYEDS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
}

// The split-K reduce of a product just launched on `stream`: one thread per output element.
template <bool kBf16, int kNumMats, Epi kEpi>
void launch_reduce(const Params& p, cudaStream_t stream) {
  const std::int64_t n = p.L * p.rows;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 32 * num_sms()));
  launch_dependent(ssmm_sm90_reduce<kBf16, kNumMats, kEpi>, blocks, stream, p);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_reduce");
}

template <bool kBf16, int kNumMats, Epi kEpi, bool kSmallN>
void launch(const Params& p, cudaStream_t stream) {
  using Config = Sm90Config<kNumMats, kSmallN>;
  static_assert(Config::kBK == 128, "an A tile row is one 128-byte swizzle row: 64 values = 128 columns");
  auto* kernel = ssmm_sm90_kernel<kBf16, kNumMats, kEpi, kSmallN, false>;
  const std::int64_t token_tiles = prepare_launch<Config>(kernel, p);
  const std::int64_t row_tiles = (p.compressed_rows_padded + Config::kBM - 1) / Config::kBM;
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(token_tiles), static_cast<unsigned>(p.splits));
  Params q = p;
  q.tile_band = tile_band_of<Config>(p, row_tiles, token_tiles, kNumMats);
  TmaMaps maps{};
  if constexpr (kNumMats <= 2) {
    if (p.a_by_tma) maps = weight_maps<kNumMats>(p);
  }
  q.a_by_tma = kNumMats <= 2 && p.a_by_tma ? 1 : 0;
  kernel<<<grid, Config::kThreads, Config::kSmemBytes, stream>>>(q, maps);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_kernel");
  if (p.splits > 1) launch_reduce<kBf16, kNumMats, kEpi>(p, stream);
}

// The stream-K kernel (1-D grid of sk.num_ctas CTAs), then the reduce of the tiles it shares.
template <bool kBf16, int kNumMats, Epi kEpi>
void launch_stream_k(const Params& p, const StreamK& sk, int row_tiles, cudaStream_t stream) {
  using Config = Sm90Config<kNumMats, kNumMats < 3>;
  auto* kernel = ssmm_sm90_stream_k<kBf16, kNumMats, kEpi>;
  SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Config::kSmemBytes));
  kernel<<<static_cast<unsigned>(sk.num_ctas), Config::kThreads, Config::kSmemBytes, stream>>>(p, sk, row_tiles);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_stream_k");
  bool shared = false;
  for (long long t = 0; t < sk.num_tiles && !shared; ++t) shared = sk.parts_of(t) > 1;
  if (!shared) return;
  launch_dependent(ssmm_sm90_stream_k_reduce<kBf16, kNumMats, kEpi>, static_cast<unsigned>(sk.num_tiles), stream, p, sk, row_tiles);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_stream_k_reduce");
}

// The persistent kernel: one CTA per SM (at most one per unit of work), the unit counter zeroed
// first in the stream.
template <bool kBf16, int kNumMats, Epi kEpi>
void launch_persistent(const Params& p, const TmaMaps& maps, int* next_unit, cudaStream_t stream) {
  using Config = PersistentConfig<kNumMats>;
  auto* kernel = ssmm_sm90_persistent<kBf16, kNumMats, kEpi>;
  const std::int64_t token_tiles = prepare_launch<Config>(kernel, p);
  const std::int64_t row_tiles = (p.compressed_rows_padded + Config::kBM - 1) / Config::kBM;
  const std::int64_t units = row_tiles * token_tiles;
  SAMOYEDS_CHECK(units + num_sms() < (std::int64_t{1} << 31), "ssmm: ", units, " output tiles overflow the unit counter: split the call");
  Params q = p;
  q.tile_band = tile_band_of<Config>(p, row_tiles, token_tiles, kNumMats);
  SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(next_unit, 0, sizeof(int), stream));
  const auto ctas = static_cast<unsigned>(std::min<std::int64_t>(units, num_sms()));
  kernel<<<ctas, Config::kThreads, Config::kSmemBytes, stream>>>(q, maps, static_cast<int>(row_tiles), static_cast<int>(token_tiles),
                                                                next_unit);
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_persistent");
}

// The TMA variant: gathers X into slot order first when the call has a token list (into the
// workspace), builds the tensor maps and launches clusters of `cluster` row tiles, as the persistent
// kernel or one CTA per tile.
template <bool kBf16, int kNumMats, Epi kEpi>
void launch_tma(const gpu::SsmmArgs& a, const Params& p, const Sm90Choice& c, cudaStream_t stream) {
  const int cluster = c.persistent ? 1 : c.cluster;  // the persistent kernel takes its units one CTA at a time
  // The one-CTA kernel's tiles (paired for gate/up, ssmm_sm90_kernel), or the persistent kernel's.
  using Config = Sm90Config<kNumMats, false, true, paired_gate_up(kNumMats, false, true)>;
  using Tiles = Sm90Config<kNumMats, false, true>;
  static_assert(Config::kBK == 128, "an A box row is one 128-byte swizzle row: 64 values = 128 columns");
  const std::uint16_t* b = p.x;
  std::int64_t b_rows = p.num_x_rows;
  if (p.token_idx) {
    auto* x_slots = static_cast<std::uint16_t*>(a.workspace);  // [L, K]
    const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(p.L, 16 * num_sms()));
    gather_slot_rows<<<blocks, 128, 0, stream>>>(p, x_slots);
    SAMOYEDS_CHECK_LAUNCH("gather_slot_rows");
    b = x_slots;
    b_rows = p.L;
  }
  const auto u64 = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  const int box_rows = c.persistent ? Tiles::kBM : Config::kBM, box_tokens = c.persistent ? Tiles::kBN : Config::kBN;
  TmaMaps maps = weight_maps<kNumMats>(p, static_cast<std::uint32_t>(box_rows));
  maps.b = tensor_map<2>("activations", CU_TENSOR_MAP_DATA_TYPE_UINT16, b, {u64(p.K), u64(b_rows)}, {u64(p.K * 2)},
                         {64, static_cast<std::uint32_t>(sm90::b_box_rows(box_tokens, cluster))}, CU_TENSOR_MAP_SWIZZLE_128B);
  if (c.persistent) {
    // The unit counter follows the gathered X in the workspace (workspace_bytes_of).
    auto* next_unit = reinterpret_cast<int*>(static_cast<std::uint8_t*>(a.workspace) + c.gather_bytes);
    return launch_persistent<kBf16, kNumMats, kEpi>(p, maps, next_unit, stream);
  }
  auto* kernel = ssmm_sm90_kernel<kBf16, kNumMats, kEpi, false, true>;
  const std::int64_t token_tiles = prepare_launch<Config>(kernel, p);
  const std::int64_t row_tiles = (p.compressed_rows_padded + Config::kBM - 1) / Config::kBM;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>((row_tiles + cluster - 1) / cluster * cluster), static_cast<unsigned>(token_tiles), 1);
  config.blockDim = dim3(Config::kThreads);
  config.dynamicSmemBytes = Config::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = static_cast<unsigned>(cluster);
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  Params q = p;
  q.tile_band = tile_band_of<Config>(p, row_tiles, token_tiles, kNumMats);
  SAMOYEDS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, q, maps));
  SAMOYEDS_CHECK_LAUNCH("ssmm_sm90_kernel (tma)");
}

template <bool kBf16, int kNumMats, Epi kEpi>
void launch_width(const Params& p, cudaStream_t stream, bool small_n) {
  if constexpr (kNumMats == 3) {
    launch<kBf16, 3, kEpi, false>(p, stream);  // OpenMoE's three matrices always use 32-token tiles
  } else if (small_n) {
    launch<kBf16, kNumMats, kEpi, true>(p, stream);
  } else {
    launch<kBf16, kNumMats, kEpi, false>(p, stream);
  }
}

template <bool kBf16>
void dispatch(const gpu::SsmmArgs& a, const Params& p, cudaStream_t stream) {
  const bool small_n = tile_tokens(a) == 32;
  switch (a.epilogue) {
    case gpu::SsmmEpilogue::plain: return launch_width<kBf16, 1, Epi::plain>(p, stream, small_n);
    case gpu::SsmmEpilogue::down_weighted: return launch_width<kBf16, 1, Epi::down_weighted>(p, stream, small_n);
    case gpu::SsmmEpilogue::gate_up:
      if (a.gate_linear.values) return launch_width<kBf16, 3, Epi::gate_up>(p, stream, small_n);
      return launch_width<kBf16, 2, Epi::gate_up>(p, stream, small_n);
  }
}

template <bool kBf16>
void dispatch_stream_k(const gpu::SsmmArgs& a, const Params& p, const Sm90Choice& c, cudaStream_t stream) {
  switch (a.epilogue) {
    case gpu::SsmmEpilogue::plain: return launch_stream_k<kBf16, 1, Epi::plain>(p, c.sk, c.row_tiles, stream);
    case gpu::SsmmEpilogue::down_weighted: return launch_stream_k<kBf16, 1, Epi::down_weighted>(p, c.sk, c.row_tiles, stream);
    case gpu::SsmmEpilogue::gate_up:
      if (a.gate_linear.values) return launch_stream_k<kBf16, 3, Epi::gate_up>(p, c.sk, c.row_tiles, stream);
      return launch_stream_k<kBf16, 2, Epi::gate_up>(p, c.sk, c.row_tiles, stream);
  }
}

template <bool kBf16>
void dispatch_tma(const gpu::SsmmArgs& a, const Params& p, const Sm90Choice& c, cudaStream_t stream) {
  switch (a.epilogue) {
    case gpu::SsmmEpilogue::plain: return launch_tma<kBf16, 1, Epi::plain>(a, p, c, stream);
    case gpu::SsmmEpilogue::down_weighted: return launch_tma<kBf16, 1, Epi::down_weighted>(a, p, c, stream);
    case gpu::SsmmEpilogue::gate_up: return launch_tma<kBf16, 2, Epi::gate_up>(a, p, c, stream);
  }
}

// The workspace the chosen kernel wants: X in slot order (TMA), split-K partials, or none.
std::size_t workspace_bytes_of(const gpu::SsmmArgs& args, const Sm90Choice& c) {
  if (c.tma) return c.gather_bytes + (c.persistent ? 256 : 0);  // + the persistent kernel's unit counter
  // Two partial tiles per CTA, [matrices][32 slots][256 logical rows] fp32 each.
  if (c.stream_k) return static_cast<std::size_t>(2 * c.sk.num_ctas) * static_cast<std::size_t>(num_mats_of(args)) * 32 * 256 * sizeof(float);
  if (c.decode_tokens || c.plan.splits <= 1) return 0;  // the decode kernel's splits add up in a cluster
  return static_cast<std::size_t>(c.plan.splits) * static_cast<std::size_t>(num_mats_of(args)) *
         static_cast<std::size_t>(args.num_tokens) * static_cast<std::size_t>(args.weight.rows) * sizeof(float);
}

}  // namespace

std::size_t ssmm_sm90_workspace_bytes(const gpu::SsmmArgs& args) { return workspace_bytes_of(args, choose(args)); }

// The choice as it runs with the workspace the call brings: the TMA variant needs X in slot order
// (token lists) and the persistent kernel its unit counter on top; without them a call still runs,
// one CTA per tile or through the cp.async variant.
Sm90Choice choice_with_workspace(const gpu::SsmmArgs& args) {
  Sm90Choice c = choose(args);
  const auto holds = [&](std::size_t bytes) { return bytes == 0 || (args.workspace && args.workspace_bytes >= bytes); };
  c.tma = c.tma && holds(c.gather_bytes);
  c.persistent = c.tma && c.persistent && holds(workspace_bytes_of(args, c));
  return c;
}

bool ssmm_sm90_takes_persistent(const gpu::SsmmArgs& args) { return choice_with_workspace(args).persistent; }

void ssmm_sm90_set_persistent(int mode) { persistent_override.store(mode < 0 ? -1 : (mode > 0 ? 1 : 0)); }

void ssmm_sm90_set_stream_k(int mode) { stream_k_override.store(mode < 0 ? -1 : (mode > 0 ? 1 : 0)); }

void ssmm_sm90_set_decode(int mode) { decode_override.store(mode < 0 ? -1 : (mode > 0 ? 1 : 0)); }

int ssmm_sm90_decode_tile_tokens(const gpu::SsmmArgs& args) { return choose(args).decode_tokens; }

int ssmm_sm90_decode_splits(const gpu::SsmmArgs& args) {
  const Sm90Choice c = choose(args);
  return c.decode_tokens ? c.plan.splits : 0;
}

bool ssmm_sm90_takes_stream_k(const gpu::SsmmArgs& args) {
  const Sm90Choice c = choice_with_workspace(args);
  return c.stream_k && args.workspace && args.workspace_bytes >= workspace_bytes_of(args, c);
}

void ssmm_sm90(const gpu::SsmmArgs& args, Params p, cudaStream_t stream) {
  const Sm90Choice c = choice_with_workspace(args);
  const bool has_workspace = args.workspace && args.workspace_bytes >= workspace_bytes_of(args, c);
  p.splits = 1;
  p.k_tiles_per_split = (p.K_padded + 127) / 128;
  p.split_epilogue = tuning().split_epilogue;
  if (c.tma) {
    if (args.x_dtype == DType::bf16) {
      dispatch_tma<true>(args, p, c, stream);
    } else {
      dispatch_tma<false>(args, p, c, stream);
    }
    return;
  }
  if (c.decode_tokens) {
    p.splits = c.plan.splits;
    p.k_tiles_per_split = c.plan.k_tiles_per_split;
    ssmm_decode(args, p, c.decode_tokens, stream);
    return;
  }
  p.early_stages = tuning().early_stages;
  if (c.stream_k && has_workspace) {
    p.workspace = static_cast<float*>(args.workspace);
    if (args.x_dtype == DType::bf16) {
      dispatch_stream_k<true>(args, p, c, stream);
    } else {
      dispatch_stream_k<false>(args, p, c, stream);
    }
    return;
  }
  // Without the workspace it wants, a call still runs: unsplit, through the cp.async variant.
  if (!c.tma && c.plan.splits > 1 && has_workspace) {
    p.splits = c.plan.splits;
    p.k_tiles_per_split = c.plan.k_tiles_per_split;
    // The consumers fetch each segment's select words one segment ahead, starting at their range's
    // first k-tile: a range must start on a segment boundary (plan_split_k rounds to segments).
    SAMOYEDS_CHECK(!p.row_select_on || (p.v >= 128 && p.k_tiles_per_split % (p.v / 128) == 0), "ssmm: split of ", p.k_tiles_per_split,
                   " k-tiles is not a whole number of ", p.v / 128, "-k-tile segments (internal planning error)");
    p.workspace = static_cast<float*>(args.workspace);
  }
  p.a_by_tma = c.a_tma ? 1 : 0;
  if (args.x_dtype == DType::bf16) {
    dispatch<true>(args, p, stream);
  } else {
    dispatch<false>(args, p, stream);
  }
}

}  // namespace samoyeds::kernels
