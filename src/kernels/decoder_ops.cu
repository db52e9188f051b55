// SPDX-License-Identifier: Apache-2.0
// The elementwise and per-row kernels of the decoder layer and model (decoder_ops.h has their meaning).
// They move a few bytes per weight-free element and are bound by memory traffic; none of them is on
// the critical path of a layer (the matrix products and the attention are), so they favour plainness:
// grid-stride loops, one block per row where a row needs a reduction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

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

// round(x + scale * b) for the 8 elements of two 16-byte chunks (add_residual's arithmetic), built
// from 32-bit words: 16-bit element stores into a uint4 went through local memory in the fp16 build.
template <class T>
__device__ __forceinline__ uint4 add8(const uint4& x, const uint4& b, float scale) {
  const unsigned xw[4] = {x.x, x.y, x.z, x.w}, bw[4] = {b.x, b.y, b.z, b.w};
  unsigned out[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    unsigned word = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // element 2k + h is the low half for h = 0 (little endian)
      const T xe = from_bits<T>(static_cast<unsigned short>(xw[k] >> (16 * h)));
      const T be = from_bits<T>(static_cast<unsigned short>(bw[k] >> (16 * h)));
      const unsigned short sum_bits = bits_of(narrow<T>(widen(xe) + scale * widen(be)));
      word |= static_cast<unsigned>(sum_bits) << (16 * h);
    }
    out[k] = word;
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// One block per row. The row is read once, 16 bytes per load, into registers (kChunks loads per
// thread, issued together: a decode step normalises a single row, and dependent loads one after
// another made this a latency-bound 9 us kernel); H % 8 == 0 and H <= 8 x kThreads x kChunks.
// kAdd: the row is first x + branch_scale * branch, rounded and written back to x (add_residual's
// arithmetic), so a sublayer's residual add and the next norm read x once.
// (__launch_bounds__'s minimum of one block per SM: without it ptxas held the fp16 fused 4-chunk
// kernel to 40 registers and spilled.)
template <class T, int kChunks, bool kAdd>
__global__ void __launch_bounds__(kThreads, 1) rms_norm_kernel(T* x, const T* branch, float branch_scale, const T* w, T* y,
                                                            std::int64_t H, float eps, float out_scale) {
  __shared__ float scratch[kThreads / 32];
  uint4* row = reinterpret_cast<uint4*>(x + blockIdx.x * H);  // one block per token
  uint4* out = reinterpret_cast<uint4*>(y + blockIdx.x * H);
  const uint4* weight = reinterpret_cast<const uint4*>(w);
  const int num_chunks = static_cast<int>(H / 8);
  uint4 v[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int at = threadIdx.x + c * kThreads;
    v[c] = at < num_chunks ? row[at] : make_uint4(0, 0, 0, 0);
  }
  if constexpr (kAdd) {
    const uint4* branch_row = reinterpret_cast<const uint4*>(branch + blockIdx.x * H);
    uint4 b[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int at = threadIdx.x + c * kThreads;
      b[c] = at < num_chunks ? branch_row[at] : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      v[c] = add8<T>(v[c], b[c], branch_scale);
      const int at = threadIdx.x + c * kThreads;
      if (at < num_chunks) row[at] = v[c];
    }
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

// Grid (T, head blocks): block (t, y) rotates the heads [y * heads_per_block, (y + 1) * heads_per_block)
// of token t (q heads first, then k heads: the qkv column order); blocks with y == 0 also write v.
// An angle depends on the position and the pair index only, so a block first puts the cosines and
// sines of its token's d / 2 angles in shared memory (double, like the CPU reference) and every head
// reuses them: one sincos per pair index and token (computed per pair and head, the double-precision
// sincos made a 4096-token prefill take 147 us per Mixtral layer against ~35 us of memory traffic).
template <class T>
__global__ void __launch_bounds__(kThreads) qkv_rope_kernel(QkvRopeArgs a, int heads_per_block) {
  __shared__ float cos_of[256], sin_of[256];  // [d / 2], d / 2 <= 256 (checked by the launcher)
  const std::int64_t t = blockIdx.x;
  const int b = static_cast<int>(t / a.tokens_per_sequence), i = static_cast<int>(t % a.tokens_per_sequence);
  const std::int64_t position = a.seq_len[b] + i;
  const int d = a.head_dim, half = d / 2;
  for (int j = threadIdx.x; j < half; j += kThreads) {
    // Angles in double: position x frequency loses digits in fp32 at long contexts.
    double s_d, c_d;
    sincos(static_cast<double>(position) * pow(a.rope_theta, -2.0 * j / d), &s_d, &c_d);
    cos_of[j] = static_cast<float>(c_d);
    sin_of[j] = static_cast<float>(s_d);
  }
  __syncthreads();
  const int q_dim = a.num_heads * d, kv_dim = a.num_kv_heads * d;
  const float* acc = a.qkv + t * (q_dim + 2 * kv_dim);  // [q_dim + 2 kv_dim] fp32, this token's row
  const T* bias = static_cast<const T*>(a.bias);
  auto biased = [&](int col) { return round_as<T>(acc[col] + (bias ? widen(bias[col]) : 0.0f)); };
  T* q_out = static_cast<T*>(a.q_out) + t * q_dim;
  const std::int64_t cache_row = (static_cast<std::int64_t>(b) * a.capacity + position) * kv_dim;
  T* k_out = static_cast<T*>(a.k_cache) + cache_row;
  T* v_out = static_cast<T*>(a.v_cache) + cache_row;

  const int head_begin = static_cast<int>(blockIdx.y) * heads_per_block;
  const int head_end = min(head_begin + heads_per_block, a.num_heads + a.num_kv_heads);
  const int col_begin = head_begin * d, col_end = head_end * d;  // whole heads
  for (int pair = col_begin / 2 + threadIdx.x; pair < col_end / 2; pair += kThreads) {
    const int head = pair / half, j = pair - head * half;
    const int col = head * d + j;
    const float x1 = biased(col), x2 = biased(col + half), c = cos_of[j], s = sin_of[j];
    T* out = head < a.num_heads ? q_out + col : k_out + (col - q_dim);
    // The rounding steps spelled out (what nvcc made of the plain expressions before), so that no
    // rewrite of this code moves a contraction and changes the last bit.
    out[0] = narrow<T>(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
    out[half] = narrow<T>(__fmaf_rn(x1, s, __fmul_rn(x2, c)));
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

// 8 outputs per thread and step, 16-byte loads and stores (I % 8 == 0 and 16-byte aligned rows):
// one element per thread and step, with a 64-bit division each, ran the dense baseline's SiLU at
// ~1.4 TB/s (493 µs for Mixtral's 8192 x 2 x 14336 at a 4096-token prefill; its bytes take ~164 µs).
// The same arithmetic per element as silu_mul_kernel.
template <class T>
__global__ void silu_mul8_kernel(const T* gu, T* a, const std::int32_t* num_rows_dev, std::int64_t num_rows,
                                 std::int64_t I, int num_mats) {
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  const std::int64_t rows = num_rows_dev ? min(static_cast<std::int64_t>(*num_rows_dev), num_rows) : num_rows;
  const std::int64_t chunks_per_row = I / 8;
  for (std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; c < rows * chunks_per_row;
       c += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = c / chunks_per_row, i = (c - r * chunks_per_row) * 8;
    const T* row = gu + r * num_mats * I;  // [num_mats * I]: gate | up (| linear)
    float g[8], u[8], l[8];
    widen8<kBf16>(*reinterpret_cast<const uint4*>(row + i), g);
    widen8<kBf16>(*reinterpret_cast<const uint4*>(row + I + i), u);
    if (num_mats == 3) widen8<kBf16>(*reinterpret_cast<const uint4*>(row + 2 * I + i), l);
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = silu(g[k]) * u[k];
      if (num_mats == 3) v[k] *= l[k];
    }
    *reinterpret_cast<uint4*>(a + r * I + i) = make_uint4(narrow2<kBf16>(v[0], v[1]), narrow2<kBf16>(v[2], v[3]),
                                                          narrow2<kBf16>(v[4], v[5]), narrow2<kBf16>(v[6], v[7]));
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
    float v = silu(g) * widen(row[I + i]);
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

namespace {
// rms_norm and add_residual_rms_norm: branch null for the plain norm.
void launch_rms_norm(void* x, const void* branch, float branch_scale, const void* weight, void* y, std::int64_t T,
                     std::int64_t H, double eps, float out_scale, DType dtype, cudaStream_t stream, const char* who) {
  if (T == 0) return;
  SAMOYEDS_CHECK(T <= INT32_MAX, who, ": ", T, " rows is too many for one launch");
  SAMOYEDS_CHECK(H % 8 == 0 && H <= 8 * kThreads * 4, who, ": H = ", H, " must be a multiple of 8 and at most ",
                 8 * kThreads * 4);
  const int chunks = static_cast<int>((H / 8 + kThreads - 1) / kThreads);
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned>(T), kThreads, 0, stream>>>(static_cast<T_*>(x), static_cast<const T_*>(branch),
                                                                branch_scale, static_cast<const T_*>(weight),
                                                                static_cast<T_*>(y), H, static_cast<float>(eps), out_scale);
    };
    auto pick = [&](auto add) {
      constexpr bool kAdd = decltype(add)::value;
      if (chunks <= 1) launch(rms_norm_kernel<T_, 1, kAdd>);
      else if (chunks == 2) launch(rms_norm_kernel<T_, 2, kAdd>);
      else launch(rms_norm_kernel<T_, 4, kAdd>);
    };
    if (branch) pick(std::true_type{});
    else pick(std::false_type{});
  });
  SAMOYEDS_CHECK_LAUNCH("rms_norm_kernel");
}
}  // namespace

void rms_norm(const void* x, const void* weight, void* y, std::int64_t T, std::int64_t H, double eps, float out_scale,
              DType dtype, cudaStream_t stream) {
  // x is only read when no branch is added.
  launch_rms_norm(const_cast<void*>(x), nullptr, 0.0f, weight, y, T, H, eps, out_scale, dtype, stream, "rms_norm");
}

void add_residual_rms_norm(void* x, const void* branch, float branch_scale, const void* weight, void* y, std::int64_t T,
                           std::int64_t H, double eps, float out_scale, DType dtype, cudaStream_t stream) {
  SAMOYEDS_CHECK(branch != nullptr, "add_residual_rms_norm: the branch is null (use rms_norm without an add)");
  launch_rms_norm(x, branch, branch_scale, weight, y, T, H, eps, out_scale, dtype, stream, "add_residual_rms_norm");
}

void qkv_rope_append(const QkvRopeArgs& a, cudaStream_t stream) {
  const std::int64_t T = static_cast<std::int64_t>(a.num_sequences) * a.tokens_per_sequence;
  if (T == 0) return;
  SAMOYEDS_CHECK(a.head_dim % 2 == 0 && a.head_dim > 0 && a.head_dim <= 512,
                 "qkv_rope_append: head_dim must be even and at most 512, got ", a.head_dim);
  SAMOYEDS_CHECK(T <= INT32_MAX, "qkv_rope_append: ", T, " tokens is too many for one launch");
  SAMOYEDS_CHECK(a.num_heads >= 1 && a.num_kv_heads >= 1 && a.tokens_per_sequence >= 1,
                 "qkv_rope_append: needs at least one head, one key/value head and one token per sequence, got ",
                 a.num_heads, ", ", a.num_kv_heads, ", ", a.tokens_per_sequence);
  // Few tokens (decode) split a token's heads over blocks so that ~512 blocks are in flight; a
  // prefill takes one block per token (the angle table is then computed once per token).
  const int num_rotated = a.num_heads + a.num_kv_heads;
  const int head_blocks = static_cast<int>(std::clamp<std::int64_t>((512 + T - 1) / T, 1, num_rotated));
  const int heads_per_block = (num_rotated + head_blocks - 1) / head_blocks;
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((num_rotated + heads_per_block - 1) / heads_per_block));
  dispatch(a.dtype, [&](auto tag) { qkv_rope_kernel<decltype(tag)><<<grid, kThreads, 0, stream>>>(a, heads_per_block); });
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
  const bool by_chunks = I % 8 == 0 && reinterpret_cast<std::uintptr_t>(gu) % 16 == 0 &&
                         reinterpret_cast<std::uintptr_t>(a) % 16 == 0;
  dispatch(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    if (by_chunks) {
      silu_mul8_kernel<T_><<<grid_for(num_rows * I / 8), kThreads, 0, stream>>>(
          static_cast<const T_*>(gu), static_cast<T_*>(a), num_rows_dev, num_rows, I, num_mats);
    } else {
      silu_mul_kernel<T_><<<grid_for(num_rows * I), kThreads, 0, stream>>>(static_cast<const T_*>(gu), static_cast<T_*>(a),
                                                                           num_rows_dev, num_rows, I, num_mats);
    }
  });
  SAMOYEDS_CHECK_LAUNCH("silu_mul8_kernel / silu_mul_kernel");
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
