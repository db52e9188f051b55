// SPDX-License-Identifier: Apache-2.0
// Seeded random packed weights and the unpack to Ŵ, on the device (packed_device.h). One thread per
// output word or element; every random choice is a pure function of (seed, matrix, position), so
// the kernels that write values, metadata and row_select agree without sharing state. Index
// arithmetic follows docs/format.md §3 (the host twins are in src/format/layout.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/packed_device.h"

namespace samoyeds::kernels {

namespace {

constexpr int kThreads = 256;

__host__ __device__ __forceinline__ std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ std::uint64_t hash(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  return splitmix(splitmix(splitmix(seed ^ a) ^ b) ^ c);
}

// Box-Muller from one 64-bit hash: 24-bit uniforms, u1 in (0, 1].
__device__ __forceinline__ float normal_from(std::uint64_t h) {
  const float u1 = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>((h >> 8) & 0xFFFFFFu) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * __logf(u1)) * __cosf(6.283185307179586f * u2);
}

__device__ __forceinline__ std::uint16_t to_bits(float v, bool bf16) {
  std::uint16_t bits;
  if (bf16) {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    bits = *reinterpret_cast<const std::uint16_t*>(&h);
  } else {
    const __half h = __float2half_rn(v);
    bits = *reinterpret_cast<const std::uint16_t*>(&h);
  }
  return bits == 0x8000u ? std::uint16_t{0} : bits;  // the format stores -0.0 as +0.0
}

// Everything the kernels need about one matrix of the stack (all matrices share it).
struct Shape {
  int n, m, v;  // pattern (plain 2:4: n = m = 1, v = 0)
  bool row_selection;
  std::int64_t rows, cols, compressed_rows, compressed_rows_padded, cols_padded, num_segments;
  int select_bits;
  std::int64_t values_per_matrix, metadata_per_matrix, select_per_matrix;
};

Shape shape_of(const gpu::PackedMatrixView& view) {
  const PackedGeometry g = packed_geometry(view.pattern, view.rows, view.cols);
  return Shape{view.pattern.n, view.pattern.m, view.pattern.v, view.pattern.has_row_selection(), g.rows, g.cols,
               g.compressed_rows, g.compressed_rows_padded, g.cols_padded, g.num_segments, g.select_bits,
               g.num_values(), g.num_metadata_words(), g.num_select_words()};
}

// The in-group offset of compressed row `crow` (a real one) in `segment`: N distinct ascending offsets
// per (group, segment), drawn among the group's real rows (padding rows only when it has fewer than N).
__device__ int selected_offset(const Shape& s, std::uint64_t seed, int matrix, std::int64_t crow, std::int64_t segment) {
  if (!s.row_selection) return 0;
  const std::int64_t group = crow / s.n;
  const int real = static_cast<int>(min(static_cast<std::int64_t>(s.m), s.rows - group * s.m));
  if (real <= s.n) return static_cast<int>(crow % s.n);  // real rows first, then padding rows
  int order[8];
  for (int i = 0; i < real; ++i) order[i] = i;
  std::uint64_t h = hash(seed, 0x5E1EC7ull + static_cast<std::uint64_t>(matrix), static_cast<std::uint64_t>(group),
                         static_cast<std::uint64_t>(segment));
  for (int i = 0; i < s.n; ++i) {  // partial Fisher-Yates: the first N of a random order
    h = splitmix(h);
    const int j = i + static_cast<int>(h % static_cast<std::uint64_t>(real - i));
    const int t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  unsigned mask = 0;
  for (int i = 0; i < s.n; ++i) mask |= 1u << order[i];
  // The (crow % N)-th set bit of mask, ascending.
  int want = static_cast<int>(crow % s.n);
  for (int o = 0; o < 8; ++o)
    if (mask & (1u << o)) {
      if (want == 0) return o;
      --want;
    }
  return 0;
}

// The 2:4 code of chunk q of compressed row crow: one of the six (first < second) pairs; (0, 1) on padding rows.
__device__ std::uint32_t chunk_code(const Shape& s, std::uint64_t seed, int matrix, std::int64_t crow, std::int64_t q) {
  if (crow >= s.compressed_rows) return 0x4u;
  constexpr std::uint32_t kCodes[6] = {0x4u, 0x8u, 0xCu, 0x9u, 0xDu, 0xEu};
  const std::uint64_t h = hash(seed, 0xC0DEull + static_cast<std::uint64_t>(matrix), static_cast<std::uint64_t>(crow),
                               static_cast<std::uint64_t>(q));
  return kCodes[h % 6];
}

__global__ void random_metadata_kernel(Shape s, std::uint64_t seed, std::uint32_t* metadata, std::int64_t total) {
  const std::int64_t num_ksteps = s.cols_padded / 32;
  for (std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int matrix = static_cast<int>(w / s.metadata_per_matrix);
    const std::int64_t local = w % s.metadata_per_matrix;
    const std::int64_t tile = local / (num_ksteps * 16), kstep = (local / 16) % num_ksteps;
    const int g = static_cast<int>(local % 16) / 2, half = static_cast<int>(local % 2);
    std::uint32_t word = 0;
    for (int upper = 0; upper < 2; ++upper)
      for (int j = 0; j < 4; ++j)
        word |= chunk_code(s, seed, matrix, tile * 16 + g + 8 * upper, kstep * 8 + half * 4 + j) << (upper * 16 + j * 4);
    metadata[w] = word;
  }
}

__global__ void random_select_kernel(Shape s, std::uint64_t seed, std::uint32_t* row_select, std::int64_t total) {
  for (std::int64_t w = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; w < total;
       w += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int matrix = static_cast<int>(w / s.select_per_matrix);
    const std::int64_t local = w % s.select_per_matrix;
    const int bit = static_cast<int>(local % s.select_bits);
    const std::int64_t segment = (local / s.select_bits) % s.num_segments;
    const std::int64_t block = local / (s.select_bits * s.num_segments);
    std::uint32_t word = 0;
    for (int r = 0; r < 32; ++r) {
      const std::int64_t crow = block * 32 + r;
      const int offset = crow < s.compressed_rows ? selected_offset(s, seed, matrix, crow, segment) : 0;
      word |= static_cast<std::uint32_t>((offset >> bit) & 1) << r;
    }
    row_select[w] = word;
  }
}

__global__ void random_values_kernel(Shape s, std::uint64_t seed, float stddev, bool bf16, std::uint32_t* value_pairs,
                                     std::int64_t total) {
  const std::int64_t chunks_per_row = s.cols_padded / 4;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int matrix = static_cast<int>(p / (s.values_per_matrix / 2));
    const std::int64_t local = p % (s.values_per_matrix / 2);
    const std::int64_t crow = local / chunks_per_row, q = local % chunks_per_row;
    std::uint32_t pair = 0;
    if (crow < s.compressed_rows) {
      const std::int64_t segment = s.row_selection ? 4 * q / s.v : 0;
      const std::int64_t row = s.row_selection ? (crow / s.n) * s.m + selected_offset(s, seed, matrix, crow, segment) : crow;
      const std::uint32_t code = chunk_code(s, seed, matrix, crow, q);
      const int positions[2] = {static_cast<int>(code & 3u), static_cast<int>(code >> 2)};
      const std::uint64_t h = hash(seed, 0x7A1ull + static_cast<std::uint64_t>(matrix), static_cast<std::uint64_t>(crow),
                                   static_cast<std::uint64_t>(q));
      for (int k = 0; k < 2; ++k) {
        const std::int64_t col = 4 * q + positions[k];
        if (row < s.rows && col < s.cols)
          pair |= static_cast<std::uint32_t>(to_bits(stddev * normal_from(splitmix(h + k)), bf16)) << (16 * k);
      }
    }
    value_pairs[p] = pair;
  }
}

__global__ void unpack_kernel(Shape s, const std::uint16_t* values, const std::uint32_t* metadata,
                              const std::uint32_t* row_select, std::uint16_t* dense) {
  const std::int64_t total = s.rows * s.cols;
  const std::int64_t num_ksteps = s.cols_padded / 32;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = e / s.cols, c = e % s.cols;
    std::int64_t crow = r;
    if (s.row_selection) {
      const std::int64_t group = r / s.m, segment = c / s.v;
      const int wanted = static_cast<int>(r % s.m);
      crow = -1;
      for (int i = 0; i < s.n; ++i) {
        const std::int64_t candidate = group * s.n + i;
        int offset = 0;
        for (int b = 0; b < s.select_bits; ++b) {
          const std::int64_t word = ((candidate / 32) * s.num_segments + segment) * s.select_bits + b;
          offset |= static_cast<int>((row_select[word] >> (candidate % 32)) & 1u) << b;
        }
        if (offset == wanted) crow = candidate;
      }
    }
    std::uint16_t out = 0;
    if (crow >= 0) {
      const std::int64_t q = c / 4;
      const std::int64_t word = ((crow / 16) * num_ksteps + q / 8) * 16 + (crow % 8) * 2 + (q % 8) / 4;
      const int shift = static_cast<int>(((crow % 16) / 8) * 16 + (q % 4) * 4);
      const std::uint32_t code = (metadata[word] >> shift) & 0xFu;
      const int position = static_cast<int>(c % 4);
      const std::int64_t at = crow * (s.cols_padded / 2) + 2 * q;
      if (position == static_cast<int>(code & 3u)) out = values[at];
      else if (position == static_cast<int>(code >> 2)) out = values[at + 1];
    }
    dense[e] = out;
  }
}

__global__ void normal_kernel(std::uint16_t* out, std::int64_t count, float mean, float stddev, bool bf16,
                              std::uint64_t seed) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[e] = to_bits(mean + stddev * normal_from(hash(seed, 0x4E0ull, static_cast<std::uint64_t>(e), 0)), bf16);
}

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + kThreads - 1) / kThreads, 1, 65536));
}

}  // namespace

void fill_random_packed(const gpu::PackedMatrixView& view, float stddev, std::uint64_t seed, cudaStream_t stream) {
  SAMOYEDS_CHECK(view.values && view.metadata, "fill_random_packed: the stack has no device arrays");
  SAMOYEDS_CHECK(view.pattern.m <= 8, "fill_random_packed: M must be at most 8, got ", view.pattern.m);
  SAMOYEDS_CHECK(!view.pattern.has_row_selection() || view.row_select, "fill_random_packed: pattern ",
                 view.pattern.to_string(), " needs the stack's row_select array");
  const Shape s = shape_of(view);
  const std::int64_t stack = view.num_stacked;
  random_metadata_kernel<<<grid_for(s.metadata_per_matrix * stack), kThreads, 0, stream>>>(
      s, seed, const_cast<std::uint32_t*>(view.metadata), s.metadata_per_matrix * stack);
  SAMOYEDS_CHECK_LAUNCH("random_metadata_kernel");
  if (s.row_selection) {
    random_select_kernel<<<grid_for(s.select_per_matrix * stack), kThreads, 0, stream>>>(
        s, seed, const_cast<std::uint32_t*>(view.row_select), s.select_per_matrix * stack);
    SAMOYEDS_CHECK_LAUNCH("random_select_kernel");
  }
  random_values_kernel<<<grid_for(s.values_per_matrix / 2 * stack), kThreads, 0, stream>>>(
      s, seed, stddev, view.dtype == DType::bf16, reinterpret_cast<std::uint32_t*>(const_cast<std::uint16_t*>(view.values)),
      s.values_per_matrix / 2 * stack);
  SAMOYEDS_CHECK_LAUNCH("random_values_kernel");
}

void unpack_packed(const gpu::PackedMatrixView& view, int index, void* dense, cudaStream_t stream) {
  SAMOYEDS_CHECK(index >= 0 && index < view.num_stacked, "unpack_packed: matrix ", index, " of a stack of ",
                 view.num_stacked);
  const Shape s = shape_of(view);
  unpack_kernel<<<grid_for(s.rows * s.cols), kThreads, 0, stream>>>(
      s, view.values + index * s.values_per_matrix, view.metadata + index * s.metadata_per_matrix,
      view.row_select ? view.row_select + index * s.select_per_matrix : nullptr, static_cast<std::uint16_t*>(dense));
  SAMOYEDS_CHECK_LAUNCH("unpack_kernel");
}

void fill_random_normal(void* out, std::int64_t count, float mean, float stddev, DType dtype, std::uint64_t seed,
                        cudaStream_t stream) {
  if (count == 0) return;
  SAMOYEDS_CHECK(dtype == DType::bf16 || dtype == DType::f16, "fill_random_normal: bf16 or fp16, got ", dtype_name(dtype));
  normal_kernel<<<grid_for(count), kThreads, 0, stream>>>(static_cast<std::uint16_t*>(out), count, mean, stddev,
                                                          dtype == DType::bf16, seed);
  SAMOYEDS_CHECK_LAUNCH("normal_kernel");
}

}  // namespace samoyeds::kernels
