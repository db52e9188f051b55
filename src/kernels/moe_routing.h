// SPDX-License-Identifier: Apache-2.0
// GPU twin of the routing part (docs/routing.md): router softmax + top-k, OpenMoE capacity dropping,
// the per-expert slot lists, and the deterministic combine. Internal to the library (the GPU MoE layer
// calls it). Every function only enqueues work on `stream`: no host synchronisation, no allocation, no
// function-attribute change, so a layer built from them can be captured in a CUDA graph for a fixed T.
// Results are deterministic (no atomics; fixed reduction orders) and mean what the CPU code means:
// the lists are bitwise those of routing_from_choices() on the GPU's own choices, and the combine is
// bitwise samoyeds::combine().
//
// Limits (checked on the host, samoyeds::Error otherwise): 1 <= E <= kMaxExperts (1024),
// 1 <= top_k <= min(E, kMaxTopK = 8), T * top_k <= INT32_MAX, combine: H a positive multiple of 8 and
// 16-byte aligned row pointers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "samoyeds/dtype.h"

namespace samoyeds::kernels {

constexpr int kMaxExperts = 1024;  // softmax: 32 logits per lane; lists: 48 KB of per-warp counters
constexpr int kMaxTopK = 8;        // the chosen experts of a token live in registers

struct GpuRouting {              // what the router kernels need to know; filled on the host
  int num_experts = 0;           // E, 1 <= E <= kMaxExperts
  int top_k = 0;                 // 1 <= top_k <= min(E, kMaxTopK)
  bool renormalize = false;      // weights divided by the sum of the top-k probabilities (rank order)
  bool capacity_limited = false; // OpenMoE: then top_k == 2
  std::int64_t capacity = 0;     // expert_capacity(T, config) computed on the host (>= 1 when capacity_limited)
  bool shared_gate = false;      // Qwen2-MoE: logits carry a column E = the shared-expert gate logit

  void validate(const char* what) const;  // throws samoyeds::Error naming the bad field
};

// Router logits [T, E] fp32 row-major = x [T, H] (bf16/fp16, row-major) times w [E, H]^T, fp32
// accumulation in a fixed order (bitwise reproducible). For the products cuBLAS serves poorly: a CTA
// per 4 logit columns and 8 tokens, its threads splitting H in 16-byte chunks. Needs H a positive
// multiple of 8 and 16-byte aligned x and w (router_kernel_fits); T = 0 launches nothing.
void router_logits(const void* x, const void* w, float* logits, std::int64_t T, int E, std::int64_t H, DType dtype,
                   cudaStream_t stream);
bool router_kernel_fits(const void* x, const void* w, std::int64_t H);
// Whether router_logits should take a router product instead of cuBLAS: decode-sized T (<= 64 tokens:
// cuBLAS took 8.9 µs per layer for Mixtral's 1 x 4096 x 8 in the decode profile, docs/model.md) or few
// logits (E <= 16: at T = 4096, N = 8 cuBLAS ran a 256 x 8 tile at 67 µs where reading x takes ~8 µs).
// Many logits at large T stay with cuBLAS: the kernel reads x once per 8 logits.
// (Beyond kRouterMaxTokens, the grid's y limit of 8-token tiles, cuBLAS takes every product.)
constexpr std::int64_t kRouterMaxTokens = std::int64_t{65535} * 8;  // kSkinnyMaxTokens (skinny_xwt.h)
constexpr bool router_kernel_wanted(std::int64_t T, int E) { return T <= kRouterMaxTokens && (T <= 64 || E <= 16); }

// logits [T, E (+1 when shared_gate)] fp32 row-major (row stride E or E + 1).
// -> topk_expert [T, top_k] int32, topk_weight [T, top_k] fp32, and shared_weight [T] fp32 =
//    sigmoid(logits[t, E]) = 1 / (1 + exp(-z)) when shared_gate (must be nullptr otherwise).
// One warp per token: fp32 softmax over the E logits (max-subtracted, expf, warp-tree sum), top-k by
// repeated argmax with ties to the lower expert id, optional renormalisation (sum in rank order).
// Non-finite logits: the CPU route() throws; a kernel cannot, so a token with any NaN/Inf logit (its E
// router logits or its shared-gate logit) gets the choices 0, 1, ..., top_k - 1 (valid and distinct,
// so nothing downstream indexes out of range) and NaN for every weight, shared_weight included. Its
// output then comes out NaN instead of a plausible value. (With capacity dropping such a choice may
// still be dropped like any other, and a dropped choice has weight 0 by definition.)
void softmax_topk(const float* logits, std::int64_t T, const GpuRouting& r, std::int32_t* topk_expert,
                  float* topk_weight, float* shared_weight, cudaStream_t stream);

// Capacity dropping (when r.capacity_limited: in place, dropped choices become expert -1, weight 0,
// exactly docs/routing.md §3: queue order = all rank-0 choices by token, then rank-1 by token, dropped
// rank-0 choices still occupy their position) and then the per-expert lists in the documented
// deterministic order (ascending expert, inside an expert ascending token):
//   topk_expert [T, top_k] int32 (in/out), topk_weight [T, top_k] fp32 (in/out),
//   expert_offsets [E + 1] int32, slot_token [T * top_k] int32, slot_weight [T * top_k] fp32,
//   token_slot [T, top_k] int32 (-1 where dropped).
// Slots past expert_offsets[E] (only possible with dropping) get slot_token -1, weight 0. Incoming -1
// choices stay dropped; expert ids outside [-1, E) are treated like -1 for the lists (token_slot -1)
// so that a corrupt choice never writes out of bounds. T = 0 only zeroes expert_offsets.
void build_expert_lists(std::int32_t* topk_expert, float* topk_weight, std::int64_t T, const GpuRouting& r,
                        std::int32_t* expert_offsets, std::int32_t* slot_token, float* slot_weight,
                        std::int32_t* token_slot, cudaStream_t stream);

// softmax_topk, then build_expert_lists, with the same outputs bit for bit; in one launch for decode
// sizes (T <= 32 and E <= 64: the list CTA's warps route the tokens first, one warp per token as
// softmax_topk does), else as the two calls. The arguments are those of the two calls.
void route_and_build_lists(const float* logits, std::int64_t T, const GpuRouting& r, std::int32_t* topk_expert,
                           float* topk_weight, float* shared_weight, std::int32_t* expert_offsets,
                           std::int32_t* slot_token, float* slot_weight, std::int32_t* token_slot, cudaStream_t stream);

// Y[t, :] = round_to(y dtype, fp32 acc) with acc = +0, then for j = 0..top_k-1 ascending, skipping
// token_slot -1: acc += slot_scale ? slot_scale[s] * row_s : row_s  (row_s = slot_rows[s, :] widened;
// the product is rounded before the sum, never fused), then acc += shared[t, :] when shared != nullptr.
//   slot_rows [num_slots, H], shared [T, H] or nullptr, y [T, H], all of dtype `dtype` (bf16 or fp16);
//   token_slot [T, top_k] int32 (every id >= 0 must be < num_slots); slot_scale [num_slots] fp32 or nullptr.
// H must be a positive multiple of 8 and the row pointers 16-byte aligned (one thread moves 8 values).
// Bitwise equal to samoyeds::combine() when slot_scale == nullptr.
void combine(const void* slot_rows, const std::int32_t* token_slot, const float* slot_scale, const void* shared,
             void* y, std::int64_t T, int top_k, std::int64_t H, DType dtype, cudaStream_t stream);

}  // namespace samoyeds::kernels
