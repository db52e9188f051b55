// SPDX-License-Identifier: Apache-2.0
// Causal grouped-query attention over a KV cache, for prefill and decode alike (attention.cu has the
// algorithm). Token layout as in decoder_ops.h: B sequences, n new tokens each, token t = b * n + i at
// position seq_len[b] + i; the new tokens' keys and values are already in the cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "samoyeds/dtype.h"

namespace samoyeds::kernels {

struct AttentionArgs {
  const void* q = nullptr;        // [B * n, heads, d] dtype, RoPE applied
  const void* k_cache = nullptr;  // [B, capacity, kv_heads, d] dtype
  const void* v_cache = nullptr;  // [B, capacity, kv_heads, d] dtype
  void* out = nullptr;            // [B * n, heads, d] dtype
  const std::int32_t* seq_len = nullptr;  // [B] cached positions before this step (device)
  int num_sequences = 0, tokens_per_sequence = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
  std::int64_t capacity = 0;
  std::int64_t window = 0;  // sliding window (keys p - window < j <= p); 0 = full causal
  float scale = 0.0f;       // softmax scale
  DType dtype = DType::bf16;
  // Cached positions of every sequence before this step, when the host knows them and they are all
  // equal (a prefill pass); -1 when they live on the device only (a captured decode step). Only
  // cuDNN's path needs it (attention_cudnn.h): its graph is built for fixed key lengths.
  std::int64_t cached_len = -1;
  // Split-KV (decode: few CTAs, long keys): each CTA takes a share of the key tiles and writes fp32
  // partials to the workspace, a second kernel merges them. With no workspace, one CTA per rows tile.
  float* partial_o = nullptr;   // workspace: [splits, B * n * heads, d] fp32
  float* partial_ml = nullptr;  // workspace: [splits, B * n * heads, 2] fp32 (running max, sum)
  std::size_t workspace_bytes = 0;  // of both together
  int max_splits = 16;
  int splits = 1;               // set by attention() from attention_splits()
};

// How many ways attention() splits the key range for these arguments (1: no split). Decided from
// the grid size and the cache capacity (not the current lengths, which live on the device), so a
// captured decode step stays valid as the sequences grow.
int attention_splits(const AttentionArgs& args);
// Workspace bytes for split-KV partials of `rows` (token, head) rows with up to max_splits splits.
std::size_t attention_workspace_bytes(std::int64_t rows, int head_dim, int max_splits);

// Whether the kernel handles the shape (head_dim 64 or 128, bf16/fp16, grid limits); if not, `reason`
// says what is unsupported. attention() throws with that reason.
bool attention_supported(int head_dim, int num_heads, int num_kv_heads, int num_sequences, DType dtype,
                         const char** reason);
// Runs one pass: cuDNN's SDPA for prefill passes it takes (attention_cudnn.h: SAMOYEDS_ATTENTION,
// >= kCudnnMinQueryTokens tokens per sequence, a host-known cached length), our kernel otherwise.
void attention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace samoyeds::kernels
