// SPDX-License-Identifier: Apache-2.0
// The safetensors dtype strings of the element types a Matrix holds, both ways.
#pragma once

#include <optional>
#include <string_view>

#include "samoyeds/dtype.h"

namespace samoyeds::detail {

inline const char* safetensors_dtype_of(DType dtype) {
  switch (dtype) {
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::f32: return "F32";
  }
  return "?";
}

// BF16, F16 and F32; nullopt for any other safetensors dtype.
inline std::optional<DType> matrix_dtype_of(std::string_view safetensors_dtype) {
  for (const DType d : {DType::bf16, DType::f16, DType::f32})
    if (safetensors_dtype == safetensors_dtype_of(d)) return d;
  return std::nullopt;
}

}  // namespace samoyeds::detail
