// SPDX-License-Identifier: Apache-2.0
// The elementwise and per-row kernels of the decoder layer and model (decoder_ops.h has their meaning).
// They move a few bytes per weight-free element and are bound by memory traffic; none of them is on
// the critical path of a layer (the matrix products and the attention are), so they favour plainness:
// grid-stride loops, one block per row where a row needs a reduction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda_check.h"
#include "kernels/decoder_ops.h"
#include "kernels/half_math.cuh"

namespace samoyeds::kernels {

namespace {

constexpr int kThreads = 256;

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + kThreads - 1) / kThreads, 1, 16384));
}

template <class F>
void dispatch(DType dtype, F&& f) {
  SAMOYEDS_CHECK(dtype == DType::bf16 || dtype == DType::f16, "decoder kernels run on bf16 or fp16, got ",
                 dtype_name(dtype));
  if (dtype == DType::bf16) f(__nv_bfloat16{}); else f(__half{});
}

// Sum of v over the block (kThreads threads); every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

// One block per row. The row is read once, 16 bytes per load, into registers (kChunks loads per
// thread, issued together: a decode step normalises a single row, and dependent loads one after
// another made this a latency-bound 9 us kernel); H % 8 == 0 and H <= 8 x kThreads x kChunks.
template <class T, int kChunks>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* x, const T* w, T* y, std::int64_t H, float eps,
                                                            float out_scale) {
  __shared__ float scratch[kThreads / 32];
  const uint4* row = reinterpret_cast<const uint4*>(x + blockIdx.x * H);  // one block per token
  uint4* out = reinterpret_cast<uint4*>(y + blockIdx.x * H);
  const uint4* weight = reinterpret_cast<const uint4*>(w);
  const int num_chunks = static_cast<int>(H / 8);
  uint4 v[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int at = threadIdx.x + c * kThreads;
    v[c] = at < num_chunks ? row[at] : make_uint4(0, 0, 0, 0);
  }
  float sum_squares = 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const T* e = reinterpret_cast<const T*>(&v[c]);
#pragma unroll
    for (int i = 0; i < 8; ++i) sum_squares += widen(e[i]) * widen(e[i]);
  }
  const float inv = 1.0f / sqrtf(block_sum(sum_squares, scratch) / static_cast<float>(H) + eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int at = threadIdx.x + c * kThreads;
    if (at >= num_chunks) continue;
    const uint4 wv = weight[at];
    const T* e = reinterpret_cast<const T*>(&v[c]);
    const T* we = reinterpret_cast<const T*>(&wv);
    uint4 result;
    T* r = reinterpret_cast<T*>(&result);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      float value = round_as<T>(widen(e[i]) * inv * widen(we[i]));
      if (out_scale != 1.0f) value *= out_scale;
      r[i] = narrow<T>(value);
    }
    out[at] = result;
  }
}

// Grid (T, pair blocks): block (t, y) rotates pairs [y * kThreads, (y + 1) * kThreads) of token t's
// (q heads + k heads) x d/2 rotation pairs; blocks with y == 0 also write v. The frequencies
// theta^(-2j/d) are computed once per block into shared memory (double, like the CPU reference).
template <class T>
__global__ void __launch_bounds__(kThreads) qkv_rope_kernel(QkvRopeArgs a) {
  __shared__ double inv_freq[256];  // d / 2 <= 256 (checked by the launcher)
  const std::int64_t t = blockIdx.x;
  const int b = static_cast<int>(t / a.tokens_per_sequence), i = static_cast<int>(t % a.tokens_per_sequence);
  const std::int64_t position = a.seq_len[b] + i;
  const int d = a.head_dim, half = d / 2;
  for (int j = threadIdx.x; j < half; j += kThreads) inv_freq[j] = pow(a.rope_theta, -2.0 * j / d);
  __syncthreads();
  const int q_dim = a.num_heads * d, kv_dim = a.num_kv_heads * d;
  const float* acc = a.qkv + t * (q_dim + 2 * kv_dim);
  const T* bias = static_cast<const T*>(a.bias);
  auto biased = [&](int col) { return round_as<T>(acc[col] + (bias ? widen(bias[col]) : 0.0f)); };
  T* q_out = static_cast<T*>(a.q_out) + t * q_dim;
  const std::int64_t cache_row = (static_cast<std::int64_t>(b) * a.capacity + position) * kv_dim;
  T* k_out = static_cast<T*>(a.k_cache) + cache_row;
  T* v_out = static_cast<T*>(a.v_cache) + cache_row;

  const int num_pairs = (a.num_heads + a.num_kv_heads) * half;
  const int p = blockIdx.y * kThreads + threadIdx.x;
  if (p < num_pairs) {
    const int head = p / half, j = p % half;
    // Angles in double: position x frequency loses digits in fp32 at long contexts.
    double s_d, c_d;
    sincos(static_cast<double>(position) * inv_freq[j], &s_d, &c_d);
    const float c = static_cast<float>(c_d), s = static_cast<float>(s_d);
    const int col = head * d + j;  // q heads first, then k heads (the qkv column order)
    const float x1 = biased(col), x2 = biased(col + half);
    T* out = head < a.num_heads ? q_out + col : k_out + (col - q_dim);
    out[0] = narrow<T>(x1 * c - x2 * s);
    out[half] = narrow<T>(x2 * c + x1 * s);
  }
  if (blockIdx.y == 0)
    for (int c = threadIdx.x; c < kv_dim; c += kThreads) v_out[c] = narrow<T>(biased(q_dim + kv_dim + c));
}

template <class T>
__global__ void add_residual_kernel(const T* residual, const T* branch, T* y, std::int64_t count, float scale) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[e] = narrow<T>(widen(residual[e]) + scale * widen(branch[e]));
}

template <class T>
__global__ void embed_kernel(const std::int32_t* ids, const T* embedding, T* x, std::int64_t T_, std::int64_t H,
                             std::int64_t vocab, float scale, std::int32_t* bad_token) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < T_ * H;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = e / H, c = e % H;
    const std::int32_t id = ids[t];
    if (id < 0 || id >= vocab) {
      x[e] = narrow<T>(0.0f);
      if (bad_token) *bad_token = 1;
      continue;
    }
    x[e] = narrow<T>(widen(embedding[id * H + c]) * scale);
  }
}

template <class T>
__global__ void silu_mul_kernel(const T* gu, T* a, const std::int32_t* num_rows_dev, std::int64_t num_rows,
                                std::int64_t I, int num_mats) {
  const std::int64_t rows = num_rows_dev ? min(static_cast<std::int64_t>(*num_rows_dev), num_rows) : num_rows;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < rows * I;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = e / I, i = e % I;
    const T* row = gu + r * num_mats * I;
    const float g = widen(row[i]);
    float v = g / (1.0f + __expf(-g)) * widen(row[I + i]);
    if (num_mats == 3) v *= widen(row[2 * I + i]);
    a[e] = narrow<T>(v);
  }
}

constexpr int kArgmaxThreads = 1024;

// One block per row; four independent loads per thread and iteration (a vocabulary of 32 k floats
// is 8 iterations instead of 125 dependent ones).
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* logits, std::int64_t vocab, std::int32_t* out) {
  __shared__ float best_value[kArgmaxThreads];
  __shared__ std::int64_t best_index[kArgmaxThreads];
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  std::int64_t index = vocab;  // "none yet": loses every tie
  for (std::int64_t v0 = threadIdx.x; v0 < vocab; v0 += 4 * kArgmaxThreads) {
    float value[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const std::int64_t v = v0 + u * kArgmaxThreads;
      value[u] = v < vocab ? row[v] : -INFINITY;
    }
#pragma unroll
    for (int u = 0; u < 4; ++u)  // ascending v per thread: the first maximum stays
      if (value[u] > best) best = value[u], index = v0 + u * kArgmaxThreads;
  }
  best_value[threadIdx.x] = best;
  best_index[threadIdx.x] = index;
  __syncthreads();
  for (int stride = kArgmaxThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const float other = best_value[threadIdx.x + stride];
      const std::int64_t other_index = best_index[threadIdx.x + stride];
      if (other > best_value[threadIdx.x] || (other == best_value[threadIdx.x] && other_index < best_index[threadIdx.x])) {
        best_value[threadIdx.x] = other;
        best_index[threadIdx.x] = other_index;
      }
    }
    __syncthreads();
  }
  // All NaN (or -inf) rows: token 0, as the CPU reference's greedy() gives.
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<std::int32_t>(best_index[0] < vocab ? best_index[0] : 0);
}

template <class T>
__global__ void gather_last_kernel(const T* x, T* rows, int n, std::int64_t H, std::int64_t count) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t b = e / H, c = e % H;
    rows[e] = x[(b * n + n - 1) * H + c];
  }
}

__global__ void advance_kernel(std::int32_t* seq_len, int num_sequences, int n) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < num_sequences; b += gridDim.x * blockDim.x) seq_len[b] += n;
}

__global__ void record_kernel(const std::int32_t* tokens, int num_sequences, std::int32_t* history, std::int32_t* step) {
  const std::int32_t at = *step;
  for (int b = threadIdx.x; b < num_sequences; b += blockDim.x)
    history[static_cast<std::int64_t>(at) * num_sequences + b] = tokens[b];
  __syncthreads();  // every thread has read *step
  if (threadIdx.x == 0) *step = at + 1;
}

}  // namespace

void rms_norm(const void* x, const void* weight, void* y, std::int64_t T, std::int64_t H, double eps, float out_scale,
              DType dtype, cudaStream_t stream) {
  if (T == 0) return;
  SAMOYEDS_CHECK(T <= INT32_MAX, "rms_norm: ", T, " rows is too many for one launch");
  SAMOYEDS_CHECK(H % 8 == 0 && H <= 8 * kThreads * 4, "rms_norm: H = ", H, " must be a multiple of 8 and at most ",
                 8 * kThreads * 4);
  const int chunks = static_cast<int>((H / 8 + kThreads - 1) / kThreads);
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(T), kThreads, 0, stream>>>(static_cast<const T_*>(x), static_cast<const T_*>(weight),
                                                                static_cast<T_*>(y), H, static_cast<float>(eps), out_scale);
    };
    if (chunks <= 1) launch(rms_norm_kernel<T_, 1>);
    else if (chunks == 2) launch(rms_norm_kernel<T_, 2>);
    else launch(rms_norm_kernel<T_, 4>);
  });
  SAMOYEDS_CHECK_LAUNCH("rms_norm_kernel");
}

void qkv_rope_append(const QkvRopeArgs& a, cudaStream_t stream) {
  const std::int64_t T = static_cast<std::int64_t>(a.num_sequences) * a.tokens_per_sequence;
  if (T == 0) return;
  SAMOYEDS_CHECK(a.head_dim % 2 == 0 && a.head_dim > 0 && a.head_dim <= 512,
                 "qkv_rope_append: head_dim must be even and at most 512, got ", a.head_dim);
  SAMOYEDS_CHECK(T <= INT32_MAX, "qkv_rope_append: ", T, " tokens is too many for one launch");
  const int num_pairs = (a.num_heads + a.num_kv_heads) * (a.head_dim / 2);
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((num_pairs + kThreads - 1) / kThreads));
  dispatch(a.dtype, [&](auto tag) { qkv_rope_kernel<decltype(tag)><<<grid, kThreads, 0, stream>>>(a); });
  SAMOYEDS_CHECK_LAUNCH("qkv_rope_kernel");
}

void add_residual(const void* residual, const void* branch, void* y, std::int64_t count, float scale, DType dtype,
                  cudaStream_t stream) {
  if (count == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    add_residual_kernel<T_><<<grid_for(count), kThreads, 0, stream>>>(
        static_cast<const T_*>(residual), static_cast<const T_*>(branch), static_cast<T_*>(y), count, scale);
  });
  SAMOYEDS_CHECK_LAUNCH("add_residual_kernel");
}

void embed(const std::int32_t* token_ids, const void* embedding, void* x, std::int64_t T, std::int64_t H,
           std::int64_t vocab, float scale, DType dtype, std::int32_t* bad_token, cudaStream_t stream) {
  if (T == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    embed_kernel<T_><<<grid_for(T * H), kThreads, 0, stream>>>(token_ids, static_cast<const T_*>(embedding),
                                                               static_cast<T_*>(x), T, H, vocab, scale, bad_token);
  });
  SAMOYEDS_CHECK_LAUNCH("embed_kernel");
}

void silu_mul(const void* gu, void* a, const std::int32_t* num_rows_dev, std::int64_t num_rows, std::int64_t I,
              int num_mats, DType dtype, cudaStream_t stream) {
  if (num_rows == 0) return;
  SAMOYEDS_CHECK(num_mats == 2 || num_mats == 3, "silu_mul: num_mats must be 2 or 3, got ", num_mats);
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    silu_mul_kernel<T_><<<grid_for(num_rows * I), kThreads, 0, stream>>>(static_cast<const T_*>(gu), static_cast<T_*>(a),
                                                                         num_rows_dev, num_rows, I, num_mats);
  });
  SAMOYEDS_CHECK_LAUNCH("silu_mul_kernel");
}

void argmax_rows(const float* logits, std::int64_t rows, std::int64_t vocab, std::int32_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  SAMOYEDS_CHECK(rows <= INT32_MAX && vocab <= INT32_MAX, "argmax_rows: [", rows, ", ", vocab, "] is too large");
  argmax_kernel<<<static_cast<unsigned>(rows), kArgmaxThreads, 0, stream>>>(logits, vocab, out);
  SAMOYEDS_CHECK_LAUNCH("argmax_kernel");
}

void gather_last_tokens(const void* x, void* x_rows, int num_sequences, int tokens_per_sequence, std::int64_t H,
                        DType dtype, cudaStream_t stream) {
  const std::int64_t count = static_cast<std::int64_t>(num_sequences) * H;
  if (count == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    gather_last_kernel<T_><<<grid_for(count), kThreads, 0, stream>>>(static_cast<const T_*>(x), static_cast<T_*>(x_rows),
                                                                     tokens_per_sequence, H, count);
  });
  SAMOYEDS_CHECK_LAUNCH("gather_last_kernel");
}

void advance(std::int32_t* seq_len, int num_sequences, int n, cudaStream_t stream) {
  if (num_sequences == 0) return;
  advance_kernel<<<static_cast<unsigned>((num_sequences + kThreads - 1) / kThreads), kThreads, 0, stream>>>(seq_len,
                                                                                                         num_sequences, n);
  SAMOYEDS_CHECK_LAUNCH("advance_kernel");
}

void record_tokens(const std::int32_t* tokens, int num_sequences, std::int32_t* history, std::int32_t* step,
                   cudaStream_t stream) {
  record_kernel<<<1, 1024, 0, stream>>>(tokens, num_sequences, history, step);
  SAMOYEDS_CHECK_LAUNCH("record_kernel");
}

}  // namespace samoyeds::kernels
