// SPDX-License-Identifier: Apache-2.0
// Matrix: an owning, row-major 2-D host array of bf16, fp16 or fp32 elements. The host-side
// currency of the format, routing and reference parts (weights [rows, cols] in nn.Linear layout:
// rows = output features, cols = input features; activations [T, H]).
#pragma once

#include <cstdint>
#include <vector>

#include "samoyeds/dtype.h"
#include "samoyeds/error.h"

namespace samoyeds {

class Matrix {
 public:
  Matrix() = default;
  Matrix(DType dtype, std::int64_t rows, std::int64_t cols);  // zero-filled

  DType dtype() const { return dtype_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  std::int64_t numel() const { return rows_ * cols_; }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return numel() == 0; }

  float get(std::int64_t row, std::int64_t col) const;
  void set(std::int64_t row, std::int64_t col, float value);  // rounds to dtype (nearest even)

  // Raw storage: uint16_t bit patterns for bf16/fp16, float for fp32.
  const std::uint16_t* half_data() const;
  std::uint16_t* half_data();
  const float* float_data() const;
  float* float_data();
  const void* data() const;
  void* data();

  // Row `row` widened to fp32 (out must hold cols() floats).
  void row_to_float(std::int64_t row, float* out) const;
  std::vector<float> to_float() const;  // all elements, row-major

 private:
  void check_index(std::int64_t row, std::int64_t col) const;

  DType dtype_ = DType::f32;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::vector<std::uint16_t> half_;  // bf16/fp16 bit patterns (empty for fp32)
  std::vector<float> float_;         // fp32 elements (empty otherwise)
};

}  // namespace samoyeds
