// SPDX-License-Identifier: Apache-2.0
// bf16/fp16 element helpers for the elementwise kernels: widen to fp32, round back (nearest even).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace samoyeds::kernels {

template <class T>
__device__ __forceinline__ float widen(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v); else return __half2float(v);
}
template <class T>
__device__ __forceinline__ T narrow(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v); else return __float2half_rn(v);
}
// The element's 16-bit pattern and back.
template <class T>
__device__ __forceinline__ unsigned short bits_of(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat16_as_ushort(v); else return __half_as_ushort(v);
}
template <class T>
__device__ __forceinline__ T from_bits(unsigned short b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __ushort_as_bfloat16(b); else return __ushort_as_half(b);
}
// fp32 -> dtype -> fp32: the value a rounded intermediate holds.
template <class T>
__device__ __forceinline__ float round_as(float v) { return widen(narrow<T>(v)); }

// SiLU, x * sigmoid(x) = x / (1 + e^-x), by the approximate exp2 and reciprocal with subnormals
// flushed (ex2/rcp.approx.ftz, each within 2 ulp; the exp's error grows with |x| as __expf's does,
// far below 16-bit output precision): 2 MUFU + 3 FP instructions per element. The IEEE
// division took a check, a branch and ~10 instructions per element (a quarter of the SSMM gate/up
// epilogue), and the non-ftz approximations still add a range test and two scalings each
// (docs/kernels/ssmm.md v12, v13). Flushing is harmless here: e^-x below 2^-126 only meets
// 1 + e^-x = 1, and a reciprocal below 2^-126 (x < -87.34) gives 0 where the true value's magnitude
// is under 1.03e-36. x = -inf gives NaN, as the IEEE form does. The SSMM epilogue and the dense
// baseline's SiLU·up share this definition.
__device__ __forceinline__ float silu(float x) {
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * -1.4426950408889634f));  // e^-x
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
  return x * r;
}

// The 8 elements of a 16-byte chunk widened to fp32 (element 2k is the low half of word k).
template <bool kBf16>
__device__ __forceinline__ void widen8(const uint4& v, float (&out)[8]) {
  const unsigned words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned lo = words[k] & 0xFFFFu, hi = words[k] >> 16;  // element 2k is the low half (little endian)
    if constexpr (kBf16) {
      out[2 * k] = __uint_as_float(lo << 16);
      out[2 * k + 1] = __uint_as_float(hi << 16);
    } else {
      out[2 * k] = __half2float(__ushort_as_half(static_cast<unsigned short>(lo)));
      out[2 * k + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(hi)));
    }
  }
}

// Two fp32 values rounded to the 16-bit type, packed as one word (the first in the low half).
template <bool kBf16>
__device__ __forceinline__ unsigned narrow2(float a, float b) {
  unsigned lo, hi;
  if constexpr (kBf16) {
    lo = __bfloat16_as_ushort(__float2bfloat16_rn(a));
    hi = __bfloat16_as_ushort(__float2bfloat16_rn(b));
  } else {
    lo = __half_as_ushort(__float2half_rn(a));
    hi = __half_as_ushort(__float2half_rn(b));
  }
  return lo | (hi << 16);
}

}  // namespace samoyeds::kernels
