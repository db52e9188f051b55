// SPDX-License-Identifier: Apache-2.0
// GPU routing (docs/routing.md): router softmax + top-k, OpenMoE capacity dropping, the per-expert slot
// lists and the combine. All enqueue-only (graph capturable) and deterministic:
//   softmax_topk_kernel   one warp per token; fixed reduction trees, so every run gives the same bits.
//   build_lists_kernel    one CTA; capacity dropping and the lists come from exact "stable ranks"
//                         (order-free counts, then in-order ranking), so nothing depends on scheduling;
//                         at decode sizes it runs softmax + top-k first (route_and_build_lists).
//   scatter_slots_kernel  for large T * top_k: slot_token / slot_weight from token_slot on all SMs.
//   combine_kernel        one thread per 8 output values; a gather in rank order, bitwise the CPU sum.
#include "kernels/moe_routing.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/half_math.cuh"
#include "kernels/skinny_xwt.h"
#include "samoyeds/error.h"

namespace samoyeds::kernels {
namespace {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7FC00000); }
__device__ __forceinline__ float minus_infinity() { return __int_as_float(static_cast<int>(0xFF800000u)); }
__device__ __forceinline__ bool is_finite(float x) { return (__float_as_uint(x) & 0x7F800000u) != 0x7F800000u; }

// ---------------------------------------------------------------------------------------------------
// softmax + top-k
// ---------------------------------------------------------------------------------------------------

constexpr int kSoftmaxWarps = 8;  // tokens per CTA

// One warp per token. Lane l holds experts l, l + 32, ... (kPerLane of them, E <= 32 * kPerLane), so
// the logit loads are coalesced. Softmax as on the CPU (max-subtracted, expf, then p / sum) except for
// expf's last-bit rounding and the sum order: lane-local ascending, then an xor-butterfly, which gives
// all lanes the same bits (each pair adds the same two values); the weights differ from route()'s by
// rounding only (within 2e-6 relative for E <= 64 in the tests), choices only at near ties.
// Top-k: top_k rounds of a warp argmax over (probability, expert) with ties to the lower expert id;
// chosen and out-of-range experts hold -1, below every probability (probabilities are >= 0).
// Registers: kPerLane + 2 * kMaxTopK values per lane (E > 256 spills a little; rare sizes); no shared
// memory.
// Token t by the calling warp (all 32 lanes; t is warp-uniform, so the full-mask shuffles see them all).
template <int kPerLane>
__device__ __forceinline__ void softmax_topk_token(const float* __restrict__ logits,  // [T, stride] fp32
                                                   std::int64_t t, int E, int stride, int top_k, bool renormalize,
                                                   bool shared_gate,
                                                   std::int32_t* topk_expert,  // [T, top_k] int32
                                                   float* topk_weight,         // [T, top_k] fp32
                                                   float* shared_weight) {     // [T] fp32 or null
  const int lane = static_cast<int>(threadIdx.x % 32);
  const float* row = logits + t * stride;

  float p[kPerLane];
  bool finite = true;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    p[i] = e < E ? row[e] : minus_infinity();
    if (e < E) finite = finite && is_finite(p[i]);
  }
  const float gate_logit = shared_gate ? row[E] : 0.0f;
  finite = finite && is_finite(gate_logit);

  std::int32_t* experts_out = topk_expert + t * top_k;
  float* weights_out = topk_weight + t * top_k;
  if (!__all_sync(kFullMask, finite)) {
    // The CPU throws here. A kernel cannot, so the token is routed to valid, distinct experts with NaN
    // weights: the layer's output for it is NaN, never a plausible number (moe_routing.h).
    if (lane < top_k) {
      experts_out[lane] = lane;
      weights_out[lane] = quiet_nan();
    }
    if (shared_gate && lane == 0) shared_weight[t] = quiet_nan();
    return;
  }

  float max_logit = p[0];
#pragma unroll
  for (int i = 1; i < kPerLane; ++i) max_logit = fmaxf(max_logit, p[i]);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) max_logit = fmaxf(max_logit, __shfl_xor_sync(kFullMask, max_logit, offset));
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    p[i] = lane + 32 * i < E ? expf(p[i] - max_logit) : 0.0f;
    sum += p[i];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(kFullMask, sum, offset);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) p[i] = lane + 32 * i < E ? p[i] / sum : -1.0f;

  std::int32_t chosen[kMaxTopK];
  float weight[kMaxTopK];
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    chosen[j] = 0;
    weight[j] = 0.0f;
    if (j >= top_k) continue;
    // Lane-local candidates are visited in ascending expert order, so a strict '>' keeps the lower id.
    float best = -2.0f;
    int best_expert = std::numeric_limits<int>::max();
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      if (p[i] > best) {
        best = p[i];
        best_expert = lane + 32 * i;
      }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(kFullMask, best, offset);
      const int other_expert = __shfl_xor_sync(kFullMask, best_expert, offset);
      if (other > best || (other == best && other_expert < best_expert)) {
        best = other;
        best_expert = other_expert;
      }
    }
    // (best, best_expert) is a total-order maximum, so every lane holds the same winner.
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      if (lane + 32 * i == best_expert) p[i] = -1.0f;
    }
    chosen[j] = best_expert;
    weight[j] = best;
  }
  if (renormalize) {
    float top_sum = 0.0f;  // rank order, as the CPU
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) top_sum += j < top_k ? weight[j] : 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) weight[j] = weight[j] / top_sum;
  }
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {  // lane j writes rank j (registers cannot be indexed by lane)
    if (j < top_k && lane == j) {
      experts_out[j] = chosen[j];
      weights_out[j] = weight[j];
    }
  }
  if (shared_gate && lane == 0) shared_weight[t] = 1.0f / (1.0f + expf(-gate_logit));
}

template <int kPerLane>
__global__ void __launch_bounds__(kSoftmaxWarps * 32)
    softmax_topk_kernel(const float* __restrict__ logits,  // [T, stride] fp32
                        std::int64_t T, int E, int stride, int top_k, bool renormalize, bool shared_gate,
                        std::int32_t* __restrict__ topk_expert,  // [T, top_k] int32
                        float* __restrict__ topk_weight,         // [T, top_k] fp32
                        float* __restrict__ shared_weight) {     // [T] fp32 or null
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * kSoftmaxWarps + threadIdx.x / 32;
  if (t >= T) return;  // uniform per warp
  softmax_topk_token<kPerLane>(logits, t, E, stride, top_k, renormalize, shared_gate, topk_expert, topk_weight,
                               shared_weight);
}

template <int kPerLane>
void launch_softmax_topk(const float* logits, std::int64_t T, const GpuRouting& r, std::int32_t* topk_expert,
                         float* topk_weight, float* shared_weight, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((T + kSoftmaxWarps - 1) / kSoftmaxWarps);
  const int stride = r.num_experts + (r.shared_gate ? 1 : 0);
  softmax_topk_kernel<kPerLane><<<blocks, kSoftmaxWarps * 32, 0, stream>>>(
      logits, T, r.num_experts, stride, r.top_k, r.renormalize, r.shared_gate, topk_expert, topk_weight, shared_weight);
  SAMOYEDS_CHECK_LAUNCH("softmax_topk_kernel");
}

// ---------------------------------------------------------------------------------------------------
// Capacity dropping and the per-expert lists
// ---------------------------------------------------------------------------------------------------

// Shared memory stays within the default 48 KB of dynamic shared memory: a larger size needs
// cudaFuncSetAttribute, which is not a stream operation and would have to run outside graph capture.
constexpr int kListSmemInts = 48 * 1024 / 4;
constexpr int kListMaxWarps = 32;

// The sequence to rank is cut into W * K contiguous chunks ("units"), K per warp. A warp advances its
// K units in lockstep: K independent rank chains whose latencies overlap (with one chain per warp every
// step waited on the previous step's counter).
struct ListShape {
  int warps;           // W
  int units_per_warp;  // K, 1, 2 or 4
};

// Counters [E][W * K + 1] (padded so lanes with different experts hit different banks) + offsets
// [E + 1] + warp sums [32], all ints, within kListSmemInts. W = 32 with K = 4 up to E = 94, K = 2 up
// to E = 185, K = 1 up to E = 360; beyond, fewer warps (E = 1024: 9).
bool list_shape_fits(int num_experts, int warps, int units_per_warp) {
  return static_cast<std::int64_t>(num_experts) * (warps * units_per_warp + 1) + num_experts + 1 + 32 <= kListSmemInts;
}

ListShape list_shape(int num_experts) {
  for (const int k : {4, 2, 1}) {
    if (list_shape_fits(num_experts, kListMaxWarps, k)) return {kListMaxWarps, k};
  }
  int warps = kListMaxWarps;
  while (warps > 1 && !list_shape_fits(num_experts, warps, 1)) --warps;
  return {warps, 1};
}

std::size_t list_smem_bytes(int num_experts, const ListShape& shape) {
  const std::size_t units = static_cast<std::size_t>(shape.warps) * shape.units_per_warp;
  return sizeof(int) * (static_cast<std::size_t>(num_experts) * (units + 1) + num_experts + 1 + 32);
}

__device__ __forceinline__ int warp_inclusive_scan(int v) {
  const int lane = static_cast<int>(threadIdx.x % 32);
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int other = __shfl_up_sync(kFullMask, v, offset);
    if (lane >= offset) v += other;
  }
  return v;
}

// One element of a ranked sequence: its key (an expert id, or -1 for "not ranked") and a payload that
// the emit step needs (a choice index, or a weight's bits), loaded together so that no load sits in the
// dependent rank chain.
struct RankItem {
  int key;
  std::uint32_t aux;
};

// A walk over the sequence [0, n) cut into units = W * K chunks of `chunk` elements (ceil(n / units)
// rounded up to 32); unit u = warp * K + k owns [u * chunk, min(n, (u + 1) * chunk)). Each warp visits
// its K units 32 elements at a time, in sequence order, all K in the same round, and loads the next
// round while it works on this one. Lanes past a unit's end hold the key -1 and still join
// __match_any_sync. counts [E][units + 1]: expert e's counter for unit u is counts[e * (units + 1) + u].
//  - Counting walk (!kEmit): counter += 1 per element, by shared-memory atomics: a count does not
//    depend on the order of the additions, so it is exact and deterministic.
//  - Emitting walk (kEmit), counters holding each unit's base per expert: lanes of one round and unit
//    with the same key form a match group; rank = counter + (group lanes below this lane), then the
//    group's lowest lane advances the counter by the group size. So rank = the unit's base + the number
//    of earlier elements of the unit with that key: the element's stable rank in the whole sequence.
//    emit(i, item, rank) for every element (rank -1 for key -1).
// Indices are 32-bit unsigned: n <= INT32_MAX and units * chunk < n + 33 * units never wrap.
template <bool kEmit, int K, class Load, class Emit>
__device__ __forceinline__ void rank_walk(std::uint32_t n, int units, int* counts, Load load, Emit emit) {
  const std::uint32_t lane = threadIdx.x % 32;
  const std::uint32_t warp = threadIdx.x / 32;
  const std::uint32_t chunk = ((n + units - 1) / units + 31) / 32 * 32;
  const int stride = units + 1;
  const unsigned lanes_below = (1u << lane) - 1u;
  std::uint32_t begin[K], end[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    begin[k] = std::min(n, (warp * K + k) * chunk);
    end[k] = std::min(n, begin[k] + chunk);
  }
  auto load_round = [&](std::uint32_t offset, RankItem (&items)[K]) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const std::uint32_t i = begin[k] + offset + lane;
      items[k] = i < end[k] ? load(i) : RankItem{-1, 0};
    }
  };
  RankItem cur[K];
  load_round(0, cur);
  // Units are equal-sized and only the last non-empty one is cut by n, so once unit 0 of this warp is
  // done all of them are: a loop condition uniform across the warp.
  for (std::uint32_t offset = 0; begin[0] + offset < end[0]; offset += 32) {
    RankItem next[K];
    load_round(offset + 32, next);
    if constexpr (!kEmit) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (cur[k].key >= 0) atomicAdd(&counts[cur[k].key * stride + warp * K + k], 1);
      }
    } else {
      unsigned group[K];
      int rank[K];
#pragma unroll
      for (int k = 0; k < K; ++k) group[k] = __match_any_sync(kFullMask, cur[k].key);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        rank[k] = cur[k].key >= 0 ? counts[cur[k].key * stride + warp * K + k] + __popc(group[k] & lanes_below) : -1;
      }
      __syncwarp();  // every lane has read its counters before the leaders advance them
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (cur[k].key >= 0 && __ffs(group[k]) - 1 == static_cast<int>(lane))
          counts[cur[k].key * stride + warp * K + k] += __popc(group[k]);
      }
      __syncwarp();  // the next round reads the advanced counters
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const std::uint32_t i = begin[k] + offset + lane;
        if (i < end[k]) emit(i, cur[k], rank[k]);
      }
    }
#pragma unroll
    for (int k = 0; k < K; ++k) cur[k] = next[k];
  }
}

// counts [E][units + 1] per-unit counts -> per-unit exclusive bases inside each expert (unit order is
// sequence order); totals [E] = per-expert counts. Up to 32 units a thread walks one expert's units
// serially (E = 1000 has 10 units and 1000 experts: a warp per expert would be 30x slower); beyond, a
// warp scans one expert's units 32 at a time (E = 64 has 128 units).
__device__ __forceinline__ void unit_bases(int* counts, int* totals, int num_experts, int units) {
  if (units <= 32) {
    for (int e = static_cast<int>(threadIdx.x); e < num_experts; e += static_cast<int>(blockDim.x)) {
      int* row = counts + e * (units + 1);
      int running = 0;
      for (int u = 0; u < units; ++u) {
        const int c = row[u];
        row[u] = running;
        running += c;
      }
      totals[e] = running;
    }
    return;
  }
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int num_warps = static_cast<int>(blockDim.x / 32);
  for (int e = warp; e < num_experts; e += num_warps) {
    int* row = counts + e * (units + 1);
    int carry = 0;
    for (int base = 0; base < units; base += 32) {
      const int u = base + lane;
      const int v = u < units ? row[u] : 0;
      const int inclusive = warp_inclusive_scan(v);
      if (u < units) row[u] = carry + inclusive - v;
      carry += __shfl_sync(kFullMask, inclusive, 31);
    }
    if (lane == 0) totals[e] = carry;
  }
}

// In-place exclusive scan of values [n] by the whole CTA, in tiles of blockDim with a carry; returns the
// total to every thread. warp_sums [32]. Called by all threads (it synchronises).
__device__ int block_exclusive_scan(int* values, int n, int* warp_sums) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int num_warps = static_cast<int>(blockDim.x / 32);
  int carry = 0;
  for (int tile = 0; tile < n; tile += static_cast<int>(blockDim.x)) {
    const int i = tile + static_cast<int>(threadIdx.x);
    const int v = i < n ? values[i] : 0;
    const int inclusive = warp_inclusive_scan(v);
    if (lane == 31) warp_sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0) warp_sums[lane] = warp_inclusive_scan(lane < num_warps ? warp_sums[lane] : 0);
    __syncthreads();
    if (i < n) values[i] = carry + (warp > 0 ? warp_sums[warp - 1] : 0) + inclusive - v;
    carry += warp_sums[num_warps - 1];
    __syncthreads();  // warp_sums is rewritten by the next tile
  }
  return carry;
}

// The lists of at most 32 choices without capacity limits, by one warp: lane c holds choice c =
// t * top_k + j (token-major, the lists' order inside an expert). An expert's count is the number of
// lanes holding it, a choice's rank the matching lanes below it, so the lists are those of the
// ranking walks below, bit for bit, without their shared-memory counters and CTA barriers (5.3 µs of
// a decode step's 8.4 µs routing launch went to those for two choices). offsets: E ints of shared memory.
__device__ void small_lists_warp(const std::int32_t* topk_expert, const float* topk_weight, int n, int E, int top_k,
                                 int* offsets, std::int32_t* expert_offsets, std::int32_t* slot_token, float* slot_weight,
                                 std::int32_t* token_slot) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const std::int32_t chosen = lane < n ? topk_expert[lane] : -1;
  const int key = chosen >= 0 && chosen < E ? static_cast<int>(chosen) : -1;  // as the walks' as_key
  const unsigned same = __match_any_sync(kFullMask, key);
  const int rank = __popc(same & ((1u << lane) - 1u));
  int total = 0;  // choices of the experts before this round's 32
  for (int base = 0; base < E; base += 32) {
    const int e = base + lane;
    int count = 0;
    for (int c = 0; c < n; ++c) count += __shfl_sync(kFullMask, key, c) == e ? 1 : 0;
    int inclusive = count;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const int below = __shfl_up_sync(kFullMask, inclusive, offset);
      if (lane >= offset) inclusive += below;
    }
    if (e < E) {
      offsets[e] = total + inclusive - count;
      expert_offsets[e] = total + inclusive - count;
    }
    total += __shfl_sync(kFullMask, inclusive, 31);
  }
  if (lane == 0) expert_offsets[E] = total;
  __syncwarp();  // offsets (shared memory) written above are read by other lanes below
  if (lane < n) {
    if (key < 0) {
      token_slot[lane] = -1;
    } else {
      const int s = offsets[key] + rank;
      slot_token[s] = lane / top_k;
      slot_weight[s] = topk_weight[lane];
      token_slot[lane] = s;
    }
  }
  for (int s = total + lane; s < n; s += 32) {  // slots nobody owns (choices outside [0, E))
    slot_token[s] = -1;
    slot_weight[s] = 0.0f;
  }
}

// With kPerLane > 0 (decode sizes, route_and_build_lists) the CTA's warps first run softmax + top-k
// on every token (one warp per token, softmax_topk's function: the same bits), which writes
// topk_expert / topk_weight: one launch instead of two.
struct FusedSoftmax {
  const float* logits = nullptr;  // [T, stride] fp32
  int stride = 0;
  bool renormalize = false, shared_gate = false;
  float* shared_weight = nullptr;  // [T] fp32 or null
};

// Capacity dropping, then the lists, in one CTA of W warps (list_shape: W = 32 up to E = 360).
// Both are "stable rankings": rank(i) = number of earlier elements of a sequence with the same expert,
// computed exactly in three steps over the sequence cut into W * K contiguous units:
//   1. count each unit's elements per expert (shared atomics: a count does not depend on the order of
//      the additions, so it is exact and deterministic);
//   2. per expert, an exclusive scan over the units gives each unit's base (and the expert totals);
//   3. re-walk every unit in order: rank = base + running count + lanes below in the __match_any_sync
//      group (no atomics here: the order matters).
// Capacity: the sequence is rank-major, q = j * T + t (ColossalAI's queue: all rank-0 choices by token,
// then rank-1), over every choice including those that will be dropped, so a dropped rank-0 choice still
// holds its position; a choice whose rank is >= capacity becomes (-1, 0) in place.
// Lists: the sequence is token-major, c = t * top_k + j, over kept choices; a token picks an expert at
// most once, so sequence order is token order inside an expert and slot = offsets[e] + rank.
// Shared memory: 4 * (E * (W * K + 1) + E + 1 + 32) bytes <= 48 KB (E = 64: 33 KB).
// With scatter_here (small T * top_k) it also writes slot_token / slot_weight and the unowned tail;
// otherwise only token_slot, and scatter_slots_kernel follows.
// Work: about T * top_k / (32 * W * K) rounds per walk, two walks per ranking. One SM does it all: the
// limit is __match_any_sync, which an H100 SM retires at about one per 25 cycles with 25 distinct keys
// (measured). H100 under ncu (base clock): 6-8 us up to T = 64; T = 5000 takes 12 us (Mixtral),
// 50 us (DeepSeek, E = 64, top-6), 38 us (OpenMoE with dropping), plus 4 us of scatter. If that ever
// matters, the same three steps spread over many CTAs (per-tile counts, a scan over tiles, per-tile
// ranking) scale with the SMs at the cost of two more launches.
template <int K, int kPerLane>
__global__ void __launch_bounds__(kListMaxWarps * 32)
    build_lists_kernel(std::int32_t* topk_expert,  // [T, top_k] int32, in/out
                       float* topk_weight,         // [T, top_k] fp32, in/out
                       int T, int E, int top_k, bool capacity_limited, int capacity, bool scatter_here,
                       std::int32_t* __restrict__ expert_offsets,  // [E + 1] int32
                       std::int32_t* __restrict__ slot_token,      // [T * top_k] int32
                       float* __restrict__ slot_weight,            // [T * top_k] fp32
                       std::int32_t* __restrict__ token_slot,      // [T, top_k] int32
                       FusedSoftmax softmax) {
  extern __shared__ int list_smem[];
  if constexpr (kPerLane > 0) {
    for (int t = static_cast<int>(threadIdx.x / 32); t < T; t += static_cast<int>(blockDim.x / 32))
      softmax_topk_token<kPerLane>(softmax.logits, t, E, softmax.stride, top_k, softmax.renormalize, softmax.shared_gate,
                                   topk_expert, topk_weight, softmax.shared_weight);
    __syncthreads();  // the choices (global writes) are visible to the whole CTA from here on
    if (!capacity_limited && T * top_k <= 32) {  // CTA-uniform
      if (threadIdx.x < 32)
        small_lists_warp(topk_expert, topk_weight, T * top_k, E, top_k, list_smem, expert_offsets, slot_token,
                         slot_weight, token_slot);
      return;
    }
  }
  const int units = static_cast<int>(blockDim.x / 32) * K;
  int* counts = list_smem;                         // [E, units + 1]
  int* offsets = counts + E * (units + 1);         // [E + 1]: expert totals, then first slots
  int* warp_sums = offsets + E + 1;                // [32]
  const std::uint32_t n = static_cast<std::uint32_t>(T) * static_cast<std::uint32_t>(top_k);
  const int tid = static_cast<int>(threadIdx.x);
  auto zero_counts = [&] {
    for (int i = tid; i < E * (units + 1); i += static_cast<int>(blockDim.x)) counts[i] = 0;
  };
  // Keys outside [0, E) (dropped choices, or corrupt ids) are not counted and get no slot.
  auto as_key = [E](std::int32_t e) { return e >= 0 && e < E ? static_cast<int>(e) : -1; };
  auto no_emit = [](std::uint32_t, const RankItem&, int) {};

  if (capacity_limited) {
    // Queue position q = j * T + t holds choice c = t * top_k + j; the item carries c.
    auto queue_item = [&](std::uint32_t q) {
      std::uint32_t j = 0, t = q;  // q / T by subtraction: top_k == 2, so at most one step (no division)
      while (t >= static_cast<std::uint32_t>(T)) {
        t -= static_cast<std::uint32_t>(T);
        ++j;
      }
      const std::uint32_t c = t * static_cast<std::uint32_t>(top_k) + j;
      return RankItem{as_key(topk_expert[c]), c};
    };
    zero_counts();
    __syncthreads();
    rank_walk<false, K>(n, units, counts, queue_item, no_emit);
    __syncthreads();
    unit_bases(counts, offsets, E, units);
    __syncthreads();
    // Each choice is read and written by the one lane that owns its queue position.
    rank_walk<true, K>(n, units, counts, queue_item, [&](std::uint32_t, const RankItem& item, int rank) {
      if (item.key >= 0 && rank >= capacity) {
        topk_expert[item.aux] = -1;
        topk_weight[item.aux] = 0.0f;
      }
    });
    __syncthreads();  // the drops (global writes) are visible to the whole CTA from here on
  }

  auto token_key = [&](std::uint32_t c) { return RankItem{as_key(topk_expert[c]), 0}; };
  zero_counts();
  __syncthreads();
  rank_walk<false, K>(n, units, counts, token_key, no_emit);
  __syncthreads();
  unit_bases(counts, offsets, E, units);
  __syncthreads();
  const int num_slots = block_exclusive_scan(offsets, E, warp_sums);
  if (tid == 0) offsets[E] = num_slots;
  __syncthreads();
  for (int e = tid; e <= E; e += static_cast<int>(blockDim.x)) expert_offsets[e] = offsets[e];
  if (!scatter_here) {  // scatter_slots_kernel writes slot_token and slot_weight from token_slot
    rank_walk<true, K>(n, units, counts, token_key, [&](std::uint32_t c, const RankItem& item, int rank) {
      token_slot[c] = item.key >= 0 ? offsets[item.key] + rank : -1;
    });
    return;
  }
  auto token_item = [&](std::uint32_t c) { return RankItem{as_key(topk_expert[c]), __float_as_uint(topk_weight[c])}; };
  rank_walk<true, K>(n, units, counts, token_item, [&](std::uint32_t c, const RankItem& item, int rank) {
    if (item.key < 0) {
      token_slot[c] = -1;
      return;
    }
    const int s = offsets[item.key] + rank;
    slot_token[s] = static_cast<std::int32_t>(c / static_cast<std::uint32_t>(top_k));
    slot_weight[s] = __uint_as_float(item.aux);
    token_slot[c] = s;
  });
  // Slots nobody owns (only after drops): a fixed, harmless value for kernels that read all T * top_k.
  for (std::uint32_t s = static_cast<std::uint32_t>(num_slots) + tid; s < n; s += blockDim.x) {
    slot_token[s] = -1;
    slot_weight[s] = 0.0f;
  }
}

// The slot side of the lists from token_slot, for large T * top_k: a gather over choices whose stores
// scatter across the experts' slot ranges, spread over all SMs (one SM's L1 would serialise them).
// Also fills the unowned tail slots [expert_offsets[E], T * top_k) with (-1, 0). No shared memory.
__global__ void __launch_bounds__(256)
    scatter_slots_kernel(const std::int32_t* __restrict__ token_slot,      // [T, top_k] int32
                         const float* __restrict__ topk_weight,            // [T, top_k] fp32
                         const std::int32_t* __restrict__ expert_offsets,  // [E + 1] int32
                         int E, int top_k, std::uint32_t n,
                         std::int32_t* __restrict__ slot_token,  // [T * top_k] int32
                         float* __restrict__ slot_weight) {      // [T * top_k] fp32
  const std::uint32_t stride = gridDim.x * blockDim.x;
  const std::uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  for (std::uint32_t c = first; c < n; c += stride) {
    const std::int32_t s = token_slot[c];
    if (s < 0) continue;
    slot_token[s] = static_cast<std::int32_t>(c / static_cast<std::uint32_t>(top_k));
    slot_weight[s] = topk_weight[c];
  }
  for (std::uint32_t s = static_cast<std::uint32_t>(expert_offsets[E]) + first; s < n; s += stride) {
    slot_token[s] = -1;
    slot_weight[s] = 0.0f;
  }
}

// Up to this many choices the list CTA also writes slot_token / slot_weight itself (one launch, for
// decode); beyond, scatter_slots_kernel does it on all SMs. Measured on H100 (DeepSeek, E = 64,
// top-6): 6000 choices took 26 us in the CTA against about 10 + 4 us split.
constexpr std::uint32_t kScatterInCtaMaxChoices = 2048;

template <int K, int kPerLane = 0>
void launch_build_lists(const ListShape& shape, std::int32_t* topk_expert, float* topk_weight, int T,
                        const GpuRouting& r, int capacity, std::int32_t* expert_offsets, std::int32_t* slot_token,
                        float* slot_weight, std::int32_t* token_slot, cudaStream_t stream,
                        const FusedSoftmax& softmax = {}) {
  const std::uint32_t n = static_cast<std::uint32_t>(T) * static_cast<std::uint32_t>(r.top_k);
  const bool scatter_here = n <= kScatterInCtaMaxChoices;
  build_lists_kernel<K, kPerLane><<<1, shape.warps * 32, list_smem_bytes(r.num_experts, shape), stream>>>(
      topk_expert, topk_weight, T, r.num_experts, r.top_k, r.capacity_limited, capacity, scatter_here, expert_offsets,
      slot_token, slot_weight, token_slot, softmax);
  SAMOYEDS_CHECK_LAUNCH("build_lists_kernel");
  if (scatter_here) return;
  const unsigned blocks = std::min<std::uint32_t>((n + 255) / 256, 1024);
  scatter_slots_kernel<<<blocks, 256, 0, stream>>>(token_slot, topk_weight, expert_offsets, r.num_experts, r.top_k, n,
                                                    slot_token, slot_weight);
  SAMOYEDS_CHECK_LAUNCH("scatter_slots_kernel");
}

// ---------------------------------------------------------------------------------------------------
// Combine
// ---------------------------------------------------------------------------------------------------

constexpr int kCombineThreads = 256;
constexpr unsigned kCombineMaxBlocks = 1u << 16;

// Y[t, 8c .. 8c + 8) per thread (grid-stride over T * H / 8 chunks): one fp32 accumulator per value,
// starting at +0, the token's slot rows added in rank order (scaled first when slot_scale is given;
// __fmul_rn / __fadd_rn keep the product rounded and unfused, as written), the shared row last, then one
// round to nearest even. The same operations in the same order as samoyeds::combine, hence bitwise.
// 16-byte loads and stores; no shared memory.
template <bool kBf16>
__global__ void __launch_bounds__(kCombineThreads)
    combine_kernel(const uint4* __restrict__ slot_rows,        // [num_slots, H / 8] of 8 x 16-bit
                   const std::int32_t* __restrict__ token_slot,  // [T, top_k] int32
                   const float* __restrict__ slot_scale,         // [num_slots] fp32 or null
                   const uint4* __restrict__ shared,             // [T, H / 8] of 8 x 16-bit, or null
                   uint4* __restrict__ y,                        // [T, H / 8] of 8 x 16-bit
                   std::int64_t T, int top_k, std::int64_t chunks_per_row) {
  const std::int64_t total = T * chunks_per_row;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = idx / chunks_per_row;
    const std::int64_t chunk = idx - t * chunks_per_row;
    float acc[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = 0.0f;
    float row[8];
    for (int j = 0; j < top_k; ++j) {
      const std::int32_t s = token_slot[t * top_k + j];
      if (s < 0) continue;
      widen8<kBf16>(slot_rows[static_cast<std::int64_t>(s) * chunks_per_row + chunk], row);
      if (slot_scale != nullptr) {
        const float scale = slot_scale[s];
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[k] = __fadd_rn(acc[k], __fmul_rn(scale, row[k]));
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[k] = __fadd_rn(acc[k], row[k]);
      }
    }
    if (shared != nullptr) {
      widen8<kBf16>(shared[idx], row);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] = __fadd_rn(acc[k], row[k]);
    }
    y[idx] = make_uint4(narrow2<kBf16>(acc[0], acc[1]), narrow2<kBf16>(acc[2], acc[3]),
                        narrow2<kBf16>(acc[4], acc[5]), narrow2<kBf16>(acc[6], acc[7]));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void check_tokens(std::int64_t T, int top_k, const char* what) {
  SAMOYEDS_CHECK(T >= 0, what, ": T is ", T, "; it must be >= 0");
  SAMOYEDS_CHECK(T <= std::numeric_limits<std::int32_t>::max() / top_k, what, ": T * top_k = ", T, " * ", top_k,
                 " does not fit int32 slot ids; route fewer tokens per call");
}

}  // namespace

void GpuRouting::validate(const char* what) const {
  SAMOYEDS_CHECK(num_experts >= 1 && num_experts <= kMaxExperts, what, ": GpuRouting.num_experts is ", num_experts,
                 "; it must be in [1, ", kMaxExperts, "] (the GPU router keeps up to 32 logits per lane)");
  SAMOYEDS_CHECK(top_k >= 1 && top_k <= num_experts, what, ": GpuRouting.top_k is ", top_k,
                 "; it must be in [1, num_experts = ", num_experts, "]");
  SAMOYEDS_CHECK(top_k <= kMaxTopK, what, ": GpuRouting.top_k is ", top_k, "; the GPU router supports top_k <= ",
                 kMaxTopK, " (the chosen experts live in registers)");
  if (capacity_limited) {
    SAMOYEDS_CHECK(top_k == 2, what, ": GpuRouting.capacity_limited needs top_k == 2 (ColossalAI Top2Router), got ",
                   top_k);
    SAMOYEDS_CHECK(capacity >= 1, what, ": GpuRouting.capacity is ", capacity,
                   "; set it to expert_capacity(T, config) (>= min_capacity >= 1)");
  }
}

namespace {
// softmax_topk's argument checks (as `who`); false when there is nothing to compute (T == 0).
bool check_softmax_args(const float* logits, std::int64_t T, const GpuRouting& r, const std::int32_t* topk_expert,
                        const float* topk_weight, const float* shared_weight, const char* who) {
  r.validate(who);
  check_tokens(T, r.top_k, who);
  SAMOYEDS_CHECK(r.shared_gate || shared_weight == nullptr, who,
                 ": shared_weight is given but GpuRouting.shared_gate is false; pass nullptr, or set "
                 "shared_gate when the logits carry the shared-expert gate column E");
  if (T == 0) return false;
  SAMOYEDS_CHECK(logits != nullptr && topk_expert != nullptr && topk_weight != nullptr, who,
                 ": logits, topk_expert and topk_weight must be device pointers (one is null)");
  SAMOYEDS_CHECK(!r.shared_gate || shared_weight != nullptr, who,
                 ": GpuRouting.shared_gate is set but shared_weight is null; pass a [T] fp32 buffer");
  return true;
}

// build_expert_lists' argument checks (as `who`); false when there are no tokens (T == 0).
bool check_list_args(const std::int32_t* topk_expert, const float* topk_weight, std::int64_t T, const GpuRouting& r,
                     const std::int32_t* expert_offsets, const std::int32_t* slot_token, const float* slot_weight,
                     const std::int32_t* token_slot, const char* who) {
  r.validate(who);
  check_tokens(T, r.top_k, who);
  SAMOYEDS_CHECK(expert_offsets != nullptr, who, ": expert_offsets must be a device [E + 1] int32 buffer");
  if (T == 0) return false;
  SAMOYEDS_CHECK(topk_expert != nullptr && topk_weight != nullptr && slot_token != nullptr && slot_weight != nullptr &&
                     token_slot != nullptr,
                 who, ": topk_expert, topk_weight, slot_token, slot_weight and token_slot must be device "
                 "pointers (one is null)");
  return true;
}

int list_capacity(const GpuRouting& r) {
  return static_cast<int>(std::min<std::int64_t>(r.capacity, std::numeric_limits<int>::max()));
}

// route_and_build_lists takes one launch up to this many tokens (decode sizes: each of the list CTA's
// 32 warps routes at most one token) and E <= 64 (the lists' 4-unit shape, logits in 2 per lane).
// Measured (H200, Mixtral-8x7B): at T = 1 the fused kernel takes 8.4 us (ncu) against 4.2 + 5.3 us for
// the two; with the fused path up to 64 tokens (two per warp on one SM) decode at batch 64 ran 6531
// tokens/s, with this bound 6849 (docs/model.md).
constexpr std::int64_t kFusedRoutingMaxTokens = 32;
constexpr int kFusedRoutingMaxExperts = 64;
}  // namespace

void softmax_topk(const float* logits, std::int64_t T, const GpuRouting& r, std::int32_t* topk_expert,
                  float* topk_weight, float* shared_weight, cudaStream_t stream) {
  if (!check_softmax_args(logits, T, r, topk_expert, topk_weight, shared_weight, "softmax_topk")) return;
  const int E = r.num_experts;
  if (E <= 32) return launch_softmax_topk<1>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
  if (E <= 64) return launch_softmax_topk<2>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
  if (E <= 128) return launch_softmax_topk<4>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
  if (E <= 256) return launch_softmax_topk<8>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
  if (E <= 512) return launch_softmax_topk<16>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
  return launch_softmax_topk<32>(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
}

void build_expert_lists(std::int32_t* topk_expert, float* topk_weight, std::int64_t T, const GpuRouting& r,
                        std::int32_t* expert_offsets, std::int32_t* slot_token, float* slot_weight,
                        std::int32_t* token_slot, cudaStream_t stream) {
  const int E = r.num_experts;
  if (!check_list_args(topk_expert, topk_weight, T, r, expert_offsets, slot_token, slot_weight, token_slot,
                       "build_expert_lists")) {
    // Empty routing: all offsets zero. A memset node is as capturable as a kernel.
    SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(expert_offsets, 0, sizeof(std::int32_t) * (static_cast<std::size_t>(E) + 1), stream));
    return;
  }
  const ListShape shape = list_shape(E);
  const int capacity = list_capacity(r);
  const int tokens = static_cast<int>(T);
  switch (shape.units_per_warp) {
    case 4:
      return launch_build_lists<4>(shape, topk_expert, topk_weight, tokens, r, capacity, expert_offsets, slot_token,
                                   slot_weight, token_slot, stream);
    case 2:
      return launch_build_lists<2>(shape, topk_expert, topk_weight, tokens, r, capacity, expert_offsets, slot_token,
                                   slot_weight, token_slot, stream);
    default:
      return launch_build_lists<1>(shape, topk_expert, topk_weight, tokens, r, capacity, expert_offsets, slot_token,
                                   slot_weight, token_slot, stream);
  }
}

void route_and_build_lists(const float* logits, std::int64_t T, const GpuRouting& r, std::int32_t* topk_expert,
                           float* topk_weight, float* shared_weight, std::int32_t* expert_offsets,
                           std::int32_t* slot_token, float* slot_weight, std::int32_t* token_slot, cudaStream_t stream) {
  const int E = r.num_experts;
  if (T <= 0 || T > kFusedRoutingMaxTokens || E < 1 || E > kFusedRoutingMaxExperts) {
    softmax_topk(logits, T, r, topk_expert, topk_weight, shared_weight, stream);
    build_expert_lists(topk_expert, topk_weight, T, r, expert_offsets, slot_token, slot_weight, token_slot, stream);
    return;
  }
  check_softmax_args(logits, T, r, topk_expert, topk_weight, shared_weight, "route_and_build_lists");
  check_list_args(topk_expert, topk_weight, T, r, expert_offsets, slot_token, slot_weight, token_slot,
                  "route_and_build_lists");
  const ListShape shape = list_shape(E);
  SAMOYEDS_CHECK(shape.units_per_warp == 4, "route_and_build_lists: internal: E = ", E, " lists take ",
                 shape.units_per_warp, " units per warp, the fused kernel is built for 4");
  const FusedSoftmax softmax{logits, E + (r.shared_gate ? 1 : 0), r.renormalize, r.shared_gate, shared_weight};
  // E <= 32: one logit per lane, else two (softmax_topk's choice).
  auto launch = E <= 32 ? launch_build_lists<4, 1> : launch_build_lists<4, 2>;
  launch(shape, topk_expert, topk_weight, static_cast<int>(T), r, list_capacity(r), expert_offsets, slot_token,
         slot_weight, token_slot, stream, softmax);
}

void combine(const void* slot_rows, const std::int32_t* token_slot, const float* slot_scale, const void* shared,
             void* y, std::int64_t T, int top_k, std::int64_t H, DType dtype, cudaStream_t stream) {
  SAMOYEDS_CHECK(dtype == DType::bf16 || dtype == DType::f16, "combine (GPU): dtype is ", dtype_name(dtype),
                 "; slot_rows, shared and y must be bf16 or fp16");
  SAMOYEDS_CHECK(top_k >= 1, "combine (GPU): top_k is ", top_k, "; it must be >= 1");
  SAMOYEDS_CHECK(T >= 0, "combine (GPU): T is ", T, "; it must be >= 0");
  SAMOYEDS_CHECK(H > 0 && H % 8 == 0, "combine (GPU): H is ", H,
                 "; it must be a positive multiple of 8 (each thread moves 8 values in one 16-byte access)");
  if (T == 0) return;
  SAMOYEDS_CHECK(slot_rows != nullptr && token_slot != nullptr && y != nullptr,
                 "combine (GPU): slot_rows, token_slot and y must be device pointers (one is null)");
  SAMOYEDS_CHECK(aligned16(slot_rows) && aligned16(y) && (shared == nullptr || aligned16(shared)),
                 "combine (GPU): slot_rows, shared and y must be 16-byte aligned (cudaMalloc gives 256); pass whole "
                 "rows of an aligned buffer");
  const std::int64_t chunks_per_row = H / 8;
  const std::int64_t total = T * chunks_per_row;
  const unsigned blocks =
      static_cast<unsigned>(std::min<std::int64_t>((total + kCombineThreads - 1) / kCombineThreads, kCombineMaxBlocks));
  const auto* rows = static_cast<const uint4*>(slot_rows);
  const auto* shared_rows = static_cast<const uint4*>(shared);
  auto* out = static_cast<uint4*>(y);
  if (dtype == DType::bf16) {
    combine_kernel<true><<<blocks, kCombineThreads, 0, stream>>>(rows, token_slot, slot_scale, shared_rows, out, T,
                                                                 top_k, chunks_per_row);
  } else {
    combine_kernel<false><<<blocks, kCombineThreads, 0, stream>>>(rows, token_slot, slot_scale, shared_rows, out, T,
                                                                  top_k, chunks_per_row);
  }
  SAMOYEDS_CHECK_LAUNCH("combine_kernel");
}

bool router_kernel_fits(const void* x, const void* w, std::int64_t H) { return skinny_xwt_fits(x, w, H); }

void router_logits(const void* x, const void* w, float* logits, std::int64_t T, int E, std::int64_t H, DType dtype,
                   cudaStream_t stream) {
  SAMOYEDS_CHECK(T >= 0 && E >= 1 && E <= kMaxExperts + 1, "router_logits: T = ", T, ", E = ", E, " (E must be in [1, ",
                 kMaxExperts + 1, "])");
  SAMOYEDS_CHECK(router_kernel_fits(x, w, H), "router_logits: H (", H,
                 ") must be a positive multiple of 8 with 16-byte aligned x and w; use the cuBLAS product");
  static_assert(kRouterMaxTokens == kSkinnyMaxTokens, "the router's token limit is the product kernel's");
  SAMOYEDS_CHECK(T <= kRouterMaxTokens, "router_logits: ", T, " tokens exceed the grid (", kRouterMaxTokens,
                 " at most; route() uses cuBLAS beyond)");
  skinny_xwt(x, w, logits, DType::f32, T, E, H, dtype, stream);
}

}  // namespace samoyeds::kernels
