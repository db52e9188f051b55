// SPDX-License-Identifier: Apache-2.0
// Causal grouped-query attention over the KV cache (flash-attention style, warp-level mma.sync):
//
// Grid (kv_heads, ceil(n * group / 64) x splits, B), the row tiles walked from the last (longest)
// one; 4 warps. The query heads that share a key/value head are packed into the M dimension: CTA
// row r is token i = r / group, head kv_head * group + r % group, so
// a decode step (n = 1) still fills part of a 16-row MMA and every key/value tile is read once per
// group instead of once per query head. Each warp owns 16 rows and keeps Q (16 x d) in registers as
// MMA A fragments. Key/value tiles of 64 positions stream through a two-stage cp.async ring
// (zero-filled past the last needed key, so masked positions are finite zeros); per tile a warp computes
// S = Q K^T (m16n8k16, K fragments by ldmatrix), masks causally (and by the sliding window),
// updates the running max/sum in the log2 domain (max over the raw scores, scaled once; each
// probability one FFMA and one ex2.approx.ftz; the max, and with it O's rescale, moves only when a
// tile exceeds it by more than 8 in log2 units, a factor of 2^8), turns P into bf16/fp16 A fragments
// in registers (the accumulator layout of m16n8 is the A layout of the next MMA) and accumulates
// O += P V (V fragments by ldmatrix.trans). O is divided by the row sums at the end.
//
// Budget (d = 128): shared 2 stages x (K + V) x 64 x (128 + 8) x 2 B = 68 KB (row padding of 8 keeps
// the ldmatrix reads of K and V conflict-free); registers per thread: Q 32, O 64, S 32 of the 216-224
// ptxas allots at d = 128 (168 at d = 64), so two CTAs per SM at d = 128.
// Numerics differ from the CPU reference (fp32 probabilities) by the rounding of P to 16 bits.
// attention() hands long prefill passes to cuDNN's SDPA first (attention_cudnn.cpp; faster there:
// docs/kernels/attention.md v3); this kernel takes decode, sliding windows and everything cuDNN refuses.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cuda_check.h"
#include "kernels/ptx.cuh"

namespace samoyeds::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kBlockM = 64;  // query rows per CTA (16 per warp)
constexpr int kBlockN = 64;  // key positions per tile
constexpr float kLazyRescaleLog2 = 8.0f;  // the running max moves only when a tile exceeds it by more (log2)
constexpr std::int64_t kMaxRowsPerStep = std::int64_t{65535} * kBlockM;  // grid y: row tiles (x splits)

template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}

// 2^x by the special-function unit alone. exp2f adds a range check and two multiplies around it so
// that results below 2^-126 come out as denormals (four instructions per probability); those
// probabilities are flushed to zero here, which moves a row's sum by less than 2^-126 of its max.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One of the two rows (g or g + 8 of the warp's 16) that a thread holds.
struct RowState {
  bool valid;
  std::int64_t position;  // of its token
  std::int64_t token;     // b * n + i
  int head;
  float max = -INFINITY;  // running max of the scaled scores (log2 domain)
  float sum = 0.0f;       // this thread's part of the running sum
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionArgs a) {
  constexpr int kStride = D + 8;  // shared row stride in elements
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* k_smem = reinterpret_cast<T*>(smem);      // [2][kBlockN][kStride]
  T* v_smem = k_smem + 2 * kBlockN * kStride;  // [2][kBlockN][kStride]

  // Longest work first: CTAs start in grid order (x fastest), and a causal row tile further down sees
  // more keys, so x walks the KV heads and y the row tiles from the last to the first (in the old
  // order, row tiles in x, the longest tiles of the last head started last and ran alone).
  const int b = blockIdx.z, kv_head = blockIdx.x;
  const int group = a.num_heads / a.num_kv_heads;
  const int rows_total = a.tokens_per_sequence * group;
  const int unit = static_cast<int>(blockIdx.y), split = unit % a.splits;
  const int row_tiles = static_cast<int>(gridDim.y) / a.splits;
  const int row0 = (row_tiles - 1 - unit / a.splits) * kBlockM;
  const std::int64_t len0 = a.seq_len[b];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;

  // Keys this CTA needs: up to its last row's position, from its first row's window start.
  const int last_row = min(row0 + kBlockM, rows_total) - 1;
  const std::int64_t key_end = len0 + last_row / group + 1;
  std::int64_t key_begin = a.window > 0 ? max(std::int64_t{0}, len0 + row0 / group - a.window + 1) : 0;
  key_begin = key_begin / kBlockN * kBlockN;
  const int num_tiles = static_cast<int>((key_end - key_begin + kBlockN - 1) / kBlockN);
  // This CTA's share of the key tiles (split-KV: the sequence lengths live on the device, so the
  // split of the range is decided here; a split past the end has no tiles and contributes nothing).
  const int per_split = (num_tiles + a.splits - 1) / a.splits;
  const int tile_begin = min(num_tiles, split * per_split), tile_end = min(num_tiles, tile_begin + per_split);

  RowState rows[2];
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + warp * 16 + g + 8 * h;
    rows[h].valid = r < rows_total;
    const int i = rows[h].valid ? r / group : 0;
    rows[h].position = len0 + i;
    rows[h].token = static_cast<std::int64_t>(b) * a.tokens_per_sequence + i;
    rows[h].head = kv_head * group + (rows[h].valid ? r % group : 0);
  }
  const bool warp_active = row0 + warp * 16 < rows_total;

  // Q as A fragments: [k-step][reg]: (row g, cols 2t..), (row g+8, cols 2t..), (g, 8+2t..), (g+8, 8+2t..).
  std::uint32_t q_frag[D / 16][4];
  const T* q = static_cast<const T*>(a.q);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const RowState& row = rows[reg % 2];
      const int col = kk * 16 + (reg / 2) * 8 + tig * 2;
      q_frag[kk][reg] = row.valid ? *reinterpret_cast<const std::uint32_t*>(q + (row.token * a.num_heads + row.head) * D + col) : 0u;
    }

  float o[D / 8][4];
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;

  const T* k_cache = static_cast<const T*>(a.k_cache);
  const T* v_cache = static_cast<const T*>(a.v_cache);
  auto load_tile = [&](int tile, int stage) {
    const std::int64_t key0 = key_begin + static_cast<std::int64_t>(tile) * kBlockN;
    for (int c = threadIdx.x; c < kBlockN * D / 8; c += kThreads) {
      const int row = c / (D / 8), col = c % (D / 8) * 8;
      const std::int64_t j = key0 + row;
      const bool needed = j < key_end;
      const std::int64_t at = ((static_cast<std::int64_t>(b) * a.capacity + (needed ? j : 0)) * a.num_kv_heads + kv_head) * D + col;
      const int offset = (stage * kBlockN + row) * kStride + col;
      ptx::cp_async_16(k_smem + offset, k_cache + at, needed ? 16 : 0);
      ptx::cp_async_16(v_smem + offset, v_cache + at, needed ? 16 : 0);
    }
    ptx::cp_async_commit();
  };

  const float scale_log2 = a.scale * 1.4426950408889634f;
  if (tile_begin < tile_end) load_tile(tile_begin, 0);
  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int stage = (tile - tile_begin) & 1;
    if (tile + 1 < tile_end) load_tile(tile + 1, stage ^ 1);
    else ptx::cp_async_commit();  // an empty group keeps wait<1> meaning "tile `tile` has landed"
    ptx::cp_async_wait<1>();
    __syncthreads();
    if (warp_active) {
      const T* ks = k_smem + stage * kBlockN * kStride;
      const T* vs = v_smem + stage * kBlockN * kStride;
      float s[kBlockN / 8][4];
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        // B fragments of two k-steps per ldmatrix: matrices (keys nt*8 .. +7) x (d 16kk, 16kk + 8,
        // 16kk + 16, 16kk + 24); lane l addresses key nt*8 + l % 8 at d 16kk + 8 (l / 8). Thread (g, t)
        // gets key nt*8 + g, d 16kk + 8m + 2t (+1) in register m: the B layout of m16n8k16 (the
        // 4-byte shared loads it replaces took two instructions per MMA).
#pragma unroll
        for (int kk = 0; kk < D / 16; kk += 2) {
          std::uint32_t k_frag[4];
          ptx::ldmatrix_x4(k_frag, ks + (nt * 8 + lane % 8) * kStride + kk * 16 + (lane / 8) * 8);
          ptx::mma_16816<kBf16>(s[nt], q_frag[kk], k_frag[0], k_frag[1]);
          ptx::mma_16816<kBf16>(s[nt], q_frag[kk + 1], k_frag[2], k_frag[3]);
        }
      }
      // Mask, scale, running max and sum; o rescaled by exp2(old max - new max).
      const std::int64_t key0 = key_begin + static_cast<std::int64_t>(tile) * kBlockN;
      float rescale[2];  // per row h: what O and the sum are multiplied by for this tile
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        RowState& row = rows[h];
        // Key key0 + jj is visible to this row iff lo < jj <= hi: the causal and window bounds as
        // 32-bit offsets into the tile, clamped, so the per-element test is two compares (the 64-bit
        // positions per element cost ~5 instructions each, 32 elements per thread and tile).
        const std::int64_t hi64 = row.valid ? row.position - key0 : -1;
        const std::int64_t lo64 = a.window > 0 ? row.position - a.window - key0 : -1;
        const int hi = static_cast<int>(std::clamp<std::int64_t>(hi64, -1, kBlockN));
        const int lo = static_cast<int>(std::clamp<std::int64_t>(lo64, -1, kBlockN));
        float tile_max = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int jj = nt * 8 + tig * 2 + e;
            float& v = s[nt][2 * h + e];
            v = jj <= hi && jj > lo ? v : -INFINITY;
            tile_max = fmaxf(tile_max, v);
          }
        // The max of the raw scores, scaled once (scale > 0, and rounding is monotonic: the same value
        // as the max of the scaled scores); each probability is then one FFMA and one EX2.
        // Lazy rescaling: the running max (the base of the probabilities) only moves when a tile's
        // max exceeds it by more than kLazyRescaleLog2, so most tiles leave O and the sum as they are
        // (probabilities up to about 2^kLazyRescaleLog2 = 256 lose nothing in bf16/fp16 or in fp32
        // sums, and O / sum is the same quotient whatever the base). A row's first visible tile always
        // moves it from -inf.
        const float tile_max_scaled = quad_max(tile_max) * scale_log2;
        const bool moves = tile_max_scaled > row.max + kLazyRescaleLog2;
        const float new_max = moves ? tile_max_scaled : row.max;
        // Rows with nothing visible yet keep max -inf: their probabilities and rescale stay 0 and 1.
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        rescale[h] = moves ? exp2_ftz(row.max - new_max) : 1.0f;  // exp2(-inf) = 0 on the first move
        float tile_sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& v = s[nt][2 * h + e];
            v = exp2_ftz(fmaf(v, scale_log2, -base));
            tile_sum += v;
          }
        row.sum = row.sum * rescale[h] + tile_sum;
        row.max = new_max;
      }
      // O's rescale, 4 x D / 8 multiplies per thread, only when some row of the warp moved its base.
      if (__any_sync(0xffffffffu, rescale[0] != 1.0f || rescale[1] != 1.0f)) {
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd) {
          o[nd][0] *= rescale[0];
          o[nd][1] *= rescale[0];
          o[nd][2] *= rescale[1];
          o[nd][3] *= rescale[1];
        }
      }
      // O += P V: P's accumulator pairs are the A fragment of keys 16kk .. 16kk + 15.
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        const std::uint32_t p[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                    pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int nd = 0; nd < D / 8; nd += 2) {
          // Matrices: keys +0..7 / +8..15 of d-tile nd, then the same of d-tile nd + 1.
          const T* v_row = vs + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + (nd + lane / 16) * 8;
          std::uint32_t v_frag[4];
          ptx::ldmatrix_x4_trans(v_frag, v_row);
          ptx::mma_16816<kBf16>(o[nd], p, v_frag[0], v_frag[1]);
          ptx::mma_16816<kBf16>(o[nd + 1], p, v_frag[2], v_frag[3]);
        }
      }
    }
    __syncthreads();  // this stage is refilled by the load issued two tiles on
  }
  ptx::cp_async_wait<0>();

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const RowState& row = rows[h];
    const float total = quad_sum(row.sum);
    if (!row.valid) continue;
    if (a.splits > 1) {  // unnormalised partial O, its max and sum: merged by attention_combine_kernel
      const std::int64_t slot = (static_cast<std::int64_t>(split) * a.num_sequences * a.tokens_per_sequence + row.token) * a.num_heads + row.head;
      float* o_out = a.partial_o + slot * D;
#pragma unroll
      for (int nd = 0; nd < D / 8; ++nd)
        *reinterpret_cast<float2*>(o_out + nd * 8 + tig * 2) = make_float2(o[nd][2 * h], o[nd][2 * h + 1]);
      if (tig == 0) *reinterpret_cast<float2*>(a.partial_ml + 2 * slot) = make_float2(row.max, total);
      continue;
    }
    const float inv = 1.0f / total;
    T* out_row = out + (row.token * a.num_heads + row.head) * D;
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd)
      *reinterpret_cast<std::uint32_t*>(out_row + nd * 8 + tig * 2) = pack2<T>(o[nd][2 * h] * inv, o[nd][2 * h + 1] * inv);
  }
}

// out[t, h, :] = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s over the splits (M = max_s m_s); a
// split with no visible key has m_s = -inf and weight 0. One warp per (token, head) row.
template <class T, int D>
__global__ void attention_combine_kernel(const float* partial_o, const float* partial_ml, T* out, std::int64_t rows,
                                         int splits) {
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, partial_ml[2 * (s * rows + row)]);
  float denominator = 0.0f, acc[D / 32] = {};
  for (int s = 0; s < splits; ++s) {
    const float ms = partial_ml[2 * (s * rows + row)];
    const float w = ms == -INFINITY ? 0.0f : exp2f(ms - m);
    denominator += w * partial_ml[2 * (s * rows + row) + 1];
    const float* o = partial_o + (s * rows + row) * D;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) acc[i] += w * o[lane + 32 * i];
  }
  const float inv = 1.0f / denominator;
#pragma unroll
  for (int i = 0; i < D / 32; ++i) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) out[row * D + lane + 32 * i] = __float2bfloat16_rn(acc[i] * inv);
    else out[row * D + lane + 32 * i] = __float2half_rn(acc[i] * inv);
  }
}

template <class T, int D>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int kSmemBytes = 2 * 2 * kBlockN * (D + 8) * static_cast<int>(sizeof(T));
  // Per launch (cheap, and valid on whichever device is current; allowed during graph capture).
  SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const int group = a.num_heads / a.num_kv_heads;
  const std::int64_t rows = static_cast<std::int64_t>(a.tokens_per_sequence) * group;
  AttentionArgs args = a;
  args.splits = attention_splits(a);
  const dim3 grid(static_cast<unsigned>(a.num_kv_heads), static_cast<unsigned>((rows + kBlockM - 1) / kBlockM * args.splits),
                  static_cast<unsigned>(a.num_sequences));
  SAMOYEDS_CHECK(grid.y <= 65535, "attention: ", grid.y, " row tiles x splits exceed the grid's y limit");
  attention_kernel<T, D><<<grid, kThreads, kSmemBytes, stream>>>(args);
  SAMOYEDS_CHECK_LAUNCH("attention_kernel");
  if (args.splits > 1) {
    const std::int64_t out_rows = static_cast<std::int64_t>(a.num_sequences) * a.tokens_per_sequence * a.num_heads;
    attention_combine_kernel<T, D><<<static_cast<unsigned>((out_rows + 7) / 8), 256, 0, stream>>>(
        args.partial_o, args.partial_ml, static_cast<T*>(a.out), out_rows, args.splits);
    SAMOYEDS_CHECK_LAUNCH("attention_combine_kernel");
  }
}

int num_sms() {  // of the current device (a few microseconds; not cached across devices)
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    sms = 1;
  return sms;
}

}  // namespace

int attention_splits(const AttentionArgs& a) {
  if (a.max_splits <= 1 || !a.partial_o || !a.partial_ml || a.num_sequences <= 0 || a.num_kv_heads <= 0 ||
      a.tokens_per_sequence <= 0 || a.num_heads % a.num_kv_heads != 0)
    return 1;
  const int group = a.num_heads / a.num_kv_heads;
  const std::int64_t row_tiles = (static_cast<std::int64_t>(a.tokens_per_sequence) * group + kBlockM - 1) / kBlockM;
  const std::int64_t ctas = row_tiles * a.num_kv_heads * a.num_sequences;
  const std::int64_t key_tiles = (a.capacity + kBlockN - 1) / kBlockN;  // the longest the keys can get
  // Enough CTAs for two per SM, each with at least two key tiles; never more than the workspace holds.
  std::int64_t splits = std::min<std::int64_t>((2 * num_sms() + ctas - 1) / ctas, key_tiles / 2);
  splits = std::min<std::int64_t>(splits, a.max_splits);
  const std::int64_t rows = static_cast<std::int64_t>(a.num_sequences) * a.tokens_per_sequence * a.num_heads;
  while (splits > 1 && static_cast<std::size_t>(splits * rows) * (a.head_dim + 2) * sizeof(float) > a.workspace_bytes) --splits;
  return static_cast<int>(std::max<std::int64_t>(splits, 1));
}

std::size_t attention_workspace_bytes(std::int64_t rows, int head_dim, int max_splits) {
  // partial_o [splits, rows, d] then partial_ml [splits, rows, 2], fp32.
  return static_cast<std::size_t>(rows) * max_splits * (head_dim + 2) * sizeof(float);
}

bool attention_supported(int head_dim, int num_heads, int num_kv_heads, int num_sequences, DType dtype,
                         const char** reason) {
  const char* why = nullptr;
  if (head_dim != 64 && head_dim != 128) why = "the GPU attention handles head_dim 64 and 128";
  else if (dtype != DType::bf16 && dtype != DType::f16) why = "the GPU attention runs bf16 or fp16";
  else if (num_kv_heads < 1 || num_heads % num_kv_heads != 0) why = "num_kv_heads must divide num_heads";
  else if (num_kv_heads > 65535 || num_sequences > 65535) why = "at most 65535 key/value heads and 65535 sequences";
  if (reason) *reason = why;
  return why == nullptr;
}

void attention(const AttentionArgs& a, cudaStream_t stream) {
  const char* reason = nullptr;
  SAMOYEDS_CHECK(attention_supported(a.head_dim, a.num_heads, a.num_kv_heads, a.num_sequences, a.dtype, &reason),
                 "attention: ", reason, " (head_dim ", a.head_dim, ", ", a.num_heads, " heads, ", a.num_kv_heads,
                 " KV heads, ", a.num_sequences, " sequences, ", dtype_name(a.dtype), ")");
  SAMOYEDS_CHECK(a.window >= 0 && a.capacity >= 1, "attention: window must be >= 0 and capacity >= 1");
  // The kernel takes each row's max over the raw scores and scales it once, which needs scale > 0,
  // and scale x log2(e), its factor, a normal float (a subnormal one would flush to 0).
  SAMOYEDS_CHECK(a.scale > 0.0f && std::isnormal(a.scale * 1.4426950408889634f),
                 "attention: the softmax scale must be positive, finite and not tiny (a normal float), got ", a.scale);
  // Row tiles x splits are the grid's y extent (at most 65535; many row tiles leave one split).
  SAMOYEDS_CHECK(static_cast<std::int64_t>(a.tokens_per_sequence) * (a.num_heads / a.num_kv_heads) <= kMaxRowsPerStep,
                 "attention: ", a.tokens_per_sequence, " tokens per sequence x ", a.num_heads / a.num_kv_heads,
                 " query heads per KV head is more than ", kMaxRowsPerStep, " rows for one step; split the prefill into chunks");
  if (a.num_sequences == 0 || a.tokens_per_sequence == 0) return;
  // cuDNN's SDPA for prefill passes (faster than our kernel: docs/kernels/attention.md v3); `cudnn`
  // forces it for every pass with a host-known cached length and fails if it cannot.
  const AttentionBackend backend = attention_backend();
  const bool forced = backend == AttentionBackend::cudnn;
  if (a.cached_len >= 0 && (forced || (backend == AttentionBackend::automatic && a.tokens_per_sequence >= kCudnnMinQueryTokens))) {
    std::string why;
    if (cudnn_attention(a, stream, &why)) return;
    SAMOYEDS_CHECK(!forced, "attention: SAMOYEDS_ATTENTION=cudnn, but cuDNN cannot take this pass: ", why);
  }
  const bool bf16 = a.dtype == DType::bf16;
  if (a.head_dim == 128) bf16 ? launch<__nv_bfloat16, 128>(a, stream) : launch<__half, 128>(a, stream);
  else bf16 ? launch<__nv_bfloat16, 64>(a, stream) : launch<__half, 64>(a, stream);
}

}  // namespace samoyeds::kernels
