// SPDX-License-Identifier: Apache-2.0
#include "samoyeds/matrix.h"

#include <cstring>

namespace samoyeds {

Matrix::Matrix(DType dtype, std::int64_t rows, std::int64_t cols) : dtype_(dtype), rows_(rows), cols_(cols) {
  SAMOYEDS_CHECK(rows >= 0 && cols >= 0, "matrix shape [", rows, ", ", cols, "] has a negative extent");
  SAMOYEDS_CHECK(cols == 0 || rows <= (std::int64_t{1} << 40) / cols, "matrix shape [", rows, ", ", cols,
                 "] is too large for host memory");
  if (dtype == DType::f32) {
    float_.assign(static_cast<std::size_t>(rows * cols), 0.0f);
  } else {
    half_.assign(static_cast<std::size_t>(rows * cols), 0);
  }
}

void Matrix::check_index(std::int64_t row, std::int64_t col) const {
  SAMOYEDS_CHECK(row >= 0 && row < rows_ && col >= 0 && col < cols_, "index (", row, ", ", col,
                 ") is outside the matrix [", rows_, ", ", cols_, "]");
}

float Matrix::get(std::int64_t row, std::int64_t col) const {
  check_index(row, col);
  const std::int64_t at = row * cols_ + col;
  if (dtype_ == DType::f32) return float_[static_cast<std::size_t>(at)];
  return half_to_float(dtype_, half_[static_cast<std::size_t>(at)]);
}

void Matrix::set(std::int64_t row, std::int64_t col, float value) {
  check_index(row, col);
  const std::int64_t at = row * cols_ + col;
  if (dtype_ == DType::f32) {
    float_[static_cast<std::size_t>(at)] = value;
  } else {
    half_[static_cast<std::size_t>(at)] = float_to_half(dtype_, value);
  }
}

const std::uint16_t* Matrix::half_data() const {
  SAMOYEDS_CHECK(dtype_ != DType::f32, "half_data() on an fp32 matrix");
  return half_.data();
}
std::uint16_t* Matrix::half_data() {
  SAMOYEDS_CHECK(dtype_ != DType::f32, "half_data() on an fp32 matrix");
  return half_.data();
}
const float* Matrix::float_data() const {
  SAMOYEDS_CHECK(dtype_ == DType::f32, "float_data() on a ", dtype_name(dtype_), " matrix");
  return float_.data();
}
float* Matrix::float_data() {
  SAMOYEDS_CHECK(dtype_ == DType::f32, "float_data() on a ", dtype_name(dtype_), " matrix");
  return float_.data();
}
const void* Matrix::data() const { return dtype_ == DType::f32 ? static_cast<const void*>(float_.data()) : half_.data(); }
void* Matrix::data() { return dtype_ == DType::f32 ? static_cast<void*>(float_.data()) : half_.data(); }

void Matrix::row_to_float(std::int64_t row, float* out) const {
  SAMOYEDS_CHECK(row >= 0 && row < rows_, "row ", row, " is outside the matrix [", rows_, ", ", cols_, "]");
  if (dtype_ == DType::f32) {
    std::memcpy(out, float_data() + row * cols_, static_cast<std::size_t>(cols_) * sizeof(float));
    return;
  }
  const std::uint16_t* src = half_.data() + row * cols_;
  if (dtype_ == DType::bf16) {
    for (std::int64_t c = 0; c < cols_; ++c) out[c] = bf16_to_float(src[c]);
  } else {
    for (std::int64_t c = 0; c < cols_; ++c) out[c] = f16_to_float(src[c]);
  }
}

std::vector<float> Matrix::to_float() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  for (std::int64_t r = 0; r < rows_; ++r) row_to_float(r, out.data() + r * cols_);
  return out;
}

}  // namespace samoyeds
