// SPDX-License-Identifier: Apache-2.0
// The small kernels of the GPU decoder layer and model (everything but the matrix products and the
// attention): RMSNorm, bias + RoPE + KV-cache append, residual adds, embedding gather, the gated-MLP
// activation, greedy argmax, and the sequence-length advance of a step. Each has the meaning of its CPU
// twin in reference::decoder_layer / model_forward, including where values are rounded to bf16/fp16
// (docs/model.md). All take a stream and never synchronise, so a decode step is graph-capturable.
//
// Token layout of a step: B sequences each append n tokens, token t = b * n + i (sequence-major);
// token t sits at position seq_len[b] + i, where seq_len [B] int32 (device) counts the cached
// positions before the step.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "samoyeds/dtype.h"

namespace samoyeds::kernels {

// y[t, :] = round(round(x[t, :] / rms(x[t, :]) * w) * out_scale) (the second rounding only when
// out_scale != 1: MiniCPM's final hidden-state divisor). x, y [T, H], w [H] of `dtype`, 16-byte
// aligned; H a multiple of 8 and at most 8192.
void rms_norm(const void* x, const void* weight, void* y, std::int64_t T, std::int64_t H, double eps, float out_scale,
              DType dtype, cudaStream_t stream);

// x[t, :] = round(x[t, :] + branch_scale * branch[t, :]) in place (add_residual's arithmetic), then
// y = rms_norm(x) as above, in one pass over x: a sublayer's residual add fused with the next norm.
// branch [T, H] of `dtype`, 16-byte aligned, not aliasing x or y.
void add_residual_rms_norm(void* x, const void* branch, float branch_scale, const void* weight, void* y, std::int64_t T,
                           std::int64_t H, double eps, float out_scale, DType dtype, cudaStream_t stream);

// From the fp32 projection qkv [T, q_dim + 2 kv_dim] (columns q | k | v) and the optional biases
// (bias [q_dim + 2 kv_dim] of `dtype`, or null): q = round(rope(round(qkv_q + b_q))) -> q_out [T, heads, d];
// k = round(rope(round(qkv_k + b_k))), v = round(qkv_v + b_v) -> k_cache / v_cache [B, capacity, kv_heads, d]
// at each token's position. RoPE angles in double (like the CPU reference).
struct QkvRopeArgs {
  const float* qkv = nullptr;
  const void* bias = nullptr;
  void* q_out = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  const std::int32_t* seq_len = nullptr;
  int num_sequences = 0, tokens_per_sequence = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
  std::int64_t capacity = 0;
  double rope_theta = 0.0;
  DType dtype = DType::bf16;
};
void qkv_rope_append(const QkvRopeArgs& args, cudaStream_t stream);

// y = round(residual + scale * branch), elementwise over `count` values (y may alias residual).
void add_residual(const void* residual, const void* branch, void* y, std::int64_t count, float scale, DType dtype,
                  cudaStream_t stream);

// x[t, :] = round(embedding[token_ids[t], :] * scale); ids outside [0, vocab) give zero rows and set
// *bad_token (int32, device) to 1, so a bad id never reads out of bounds and can be reported later.
void embed(const std::int32_t* token_ids, const void* embedding, void* x, std::int64_t T, std::int64_t H,
           std::int64_t vocab, float scale, DType dtype, std::int32_t* bad_token, cudaStream_t stream);

// a[r, i] = round(SiLU(gu[r, i]) * gu[r, I + i] (* gu[r, 2I + i] when num_mats == 3)); gu [rows, num_mats * I].
// With num_rows_dev the row count is min(*num_rows_dev, num_rows) (a count that lives on the device).
void silu_mul(const void* gu, void* a, const std::int32_t* num_rows_dev, std::int64_t num_rows, std::int64_t I,
              int num_mats, DType dtype, cudaStream_t stream);

// out[r] = the first index of the largest value of logits[r, :] (fp32 [rows, vocab]); NaN never wins.
void argmax_rows(const float* logits, std::int64_t rows, std::int64_t vocab, std::int32_t* out, cudaStream_t stream);

// x_rows[b, :] = x[b * n + n - 1, :]: the last token of each sequence (for the LM head).
void gather_last_tokens(const void* x, void* x_rows, int num_sequences, int tokens_per_sequence, std::int64_t H,
                        DType dtype, cudaStream_t stream);

// seq_len[b] += n for b < num_sequences: the end of a step.
void advance(std::int32_t* seq_len, int num_sequences, int n, cudaStream_t stream);

// history[*step, b] = tokens[b] for b < num_sequences, then ++*step: the decode loop's record of the
// generated tokens, kept on the device so a replayed graph needs no host work per step.
void record_tokens(const std::int32_t* tokens, int num_sequences, std::int32_t* history, std::int32_t* step,
                   cudaStream_t stream);

}  // namespace samoyeds::kernels
