// SPDX-License-Identifier: Apache-2.0
#include "samoyeds/dtype.h"

#include <bit>
#include <cmath>

#include "samoyeds/error.h"

namespace samoyeds {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::bf16: return "bf16";
    case DType::f16: return "fp16";
    case DType::f32: return "fp32";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

bool is_half_precision(DType dtype) { return dtype == DType::bf16 || dtype == DType::f16; }

DType parse_dtype(std::string_view text) {
  if (text == "bf16" || text == "bfloat16") return DType::bf16;
  if (text == "fp16" || text == "f16" || text == "half" || text == "float16") return DType::f16;
  if (text == "fp32" || text == "f32" || text == "float32") return DType::f32;
  SAMOYEDS_FAIL("unknown dtype '", text, "': use bf16, fp16 or fp32");
}

float bf16_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t float_to_bf16(float value) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

float f16_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  std::uint32_t mantissa = bits & 0x3FFu;
  std::uint32_t out;
  if (exponent == 0x1F) {
    out = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {  // subnormal: normalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3FFu;
    out = sign | (static_cast<std::uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(out);
}

std::uint16_t float_to_f16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits >= 0x7F800000u) {  // inf or NaN
    return static_cast<std::uint16_t>(sign | 0x7C00u | (abs_bits > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs_bits >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (abs_bits < 0x38800000u) {  // result is subnormal or zero in f16
    // value = m * 2^(e-23); f16 subnormal unit is 2^-24.
    const int exponent = static_cast<int>(abs_bits >> 23);
    if (exponent < 102) return sign;  // below half of the smallest subnormal
    const std::uint32_t mantissa = (abs_bits & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - exponent;  // shift so that the unit is 2^-24
    const std::uint32_t truncated = mantissa >> shift;
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    std::uint32_t rounded = truncated + ((remainder > half || (remainder == half && (truncated & 1u))) ? 1u : 0u);
    return static_cast<std::uint16_t>(sign | rounded);
  }
  // normal: rebias exponent (127 -> 15), round mantissa from 23 to 10 bits
  std::uint32_t rebased = abs_bits - (112u << 23);
  const std::uint32_t remainder = rebased & 0x1FFFu;
  std::uint32_t result = rebased >> 13;
  if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;
  return static_cast<std::uint16_t>(sign | result);
}

float half_to_float(DType dtype, std::uint16_t bits) {
  return dtype == DType::bf16 ? bf16_to_float(bits) : f16_to_float(bits);
}

std::uint16_t float_to_half(DType dtype, float value) {
  return dtype == DType::bf16 ? float_to_bf16(value) : float_to_f16(value);
}

float round_to(DType dtype, float value) {
  if (dtype == DType::f32) return value;
  return half_to_float(dtype, float_to_half(dtype, value));
}

}  // namespace samoyeds
