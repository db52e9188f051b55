// SPDX-License-Identifier: Apache-2.0
// Element types and the host-side bf16/fp16 <-> fp32 conversions (round to nearest even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace samoyeds {

// Storage types. bf16 and f16 are the model dtypes; f32 holds exact-tier outputs and norms.
enum class DType : std::uint8_t { bf16, f16, f32 };

const char* dtype_name(DType dtype);          // "bf16", "fp16", "fp32"
std::size_t dtype_size(DType dtype);          // bytes per element
DType parse_dtype(std::string_view text);     // "bf16", "fp16"/"f16"/"half", "fp32"/"f32"; throws
bool is_half_precision(DType dtype);          // bf16 or f16

float bf16_to_float(std::uint16_t bits);
std::uint16_t float_to_bf16(float value);     // round to nearest even; NaN stays NaN
float f16_to_float(std::uint16_t bits);
std::uint16_t float_to_f16(float value);      // round to nearest even; overflow gives +-inf

// Conversions for a 16-bit storage dtype (bf16 or f16).
float half_to_float(DType dtype, std::uint16_t bits);
std::uint16_t float_to_half(DType dtype, float value);
// value rounded to dtype and back (the identity for f32).
float round_to(DType dtype, float value);

}  // namespace samoyeds
