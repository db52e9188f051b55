// SPDX-License-Identifier: Apache-2.0
// DevicePackedMatrix: one allocation holding values, metadata and row-select words of a packed matrix
// or of a stack of them (each array holds all matrices back to back: the kernels index by stride).
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cuda_check.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::gpu {

namespace {
std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
}  // namespace

DevicePackedMatrix::DevicePackedMatrix(const PackedMatrix& host) : DevicePackedMatrix(std::vector{&host}) {}

DevicePackedMatrix::DevicePackedMatrix(const std::vector<const PackedMatrix*>& stack) {
  SAMOYEDS_CHECK(!stack.empty(), "DevicePackedMatrix: a stack needs at least one matrix");
  SAMOYEDS_CHECK(stack.size() <= 65535, "DevicePackedMatrix: ", stack.size(), " matrices in one stack; at most 65535");
  const PackedMatrix& first = *stack.front();
  for (std::size_t e = 0; e < stack.size(); ++e) {
    SAMOYEDS_CHECK(stack[e] != nullptr, "DevicePackedMatrix: matrix ", e, " of the stack is null");
    const PackedMatrix& m = *stack[e];
    m.validate();
    SAMOYEDS_CHECK(m.dtype == first.dtype && m.rows == first.rows && m.cols == first.cols && m.pattern == first.pattern,
                   "DevicePackedMatrix: matrix ", e, " of the stack is ", dtype_name(m.dtype), " [", m.rows, ", ", m.cols,
                   "] ", m.pattern.to_string(), " but matrix 0 is ", dtype_name(first.dtype), " [", first.rows, ", ",
                   first.cols, "] ", first.pattern.to_string(), "; a stack holds matrices of one shape and pattern");
  }
  const std::size_t count = stack.size();
  // Per matrix; the vectors of one pattern and shape have equal sizes (validate() checked them).
  const std::size_t values_bytes = first.values.size() * sizeof(std::uint16_t);
  const std::size_t metadata_bytes = first.metadata.size() * sizeof(std::uint32_t);
  const std::size_t select_bytes = first.row_select.size() * sizeof(std::uint32_t);
  const std::size_t metadata_at = align_up(values_bytes * count);
  const std::size_t select_at = metadata_at + align_up(metadata_bytes * count);
  const std::size_t total = select_at + align_up(select_bytes * count);
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&allocation_, total));
  auto* base = static_cast<std::uint8_t*>(allocation_);
  try {
    for (std::size_t e = 0; e < count; ++e) {
      const PackedMatrix& m = *stack[e];
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(base + e * values_bytes, m.values.data(), values_bytes, cudaMemcpyHostToDevice));
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(base + metadata_at + e * metadata_bytes, m.metadata.data(), metadata_bytes,
                                     cudaMemcpyHostToDevice));
      if (select_bytes)
        SAMOYEDS_CUDA_CHECK(cudaMemcpy(base + select_at + e * select_bytes, m.row_select.data(), select_bytes,
                                       cudaMemcpyHostToDevice));
    }
  } catch (...) {
    release();
    throw;
  }
  view_.pattern = first.pattern;
  view_.dtype = first.dtype;
  view_.rows = first.rows;
  view_.cols = first.cols;
  view_.values = reinterpret_cast<const std::uint16_t*>(base);
  view_.metadata = reinterpret_cast<const std::uint32_t*>(base + metadata_at);
  view_.row_select = select_bytes ? reinterpret_cast<const std::uint32_t*>(base + select_at) : nullptr;
  view_.num_stacked = static_cast<int>(count);
}

DevicePackedMatrix::DevicePackedMatrix(const SparsityPattern& pattern, DType dtype, std::int64_t rows,
                                       std::int64_t cols, int count) {
  pattern.validate();
  SAMOYEDS_CHECK(is_half_precision(dtype), "DevicePackedMatrix: values must be bf16 or fp16, got ", dtype_name(dtype));
  SAMOYEDS_CHECK(rows >= 1 && cols >= 1, "DevicePackedMatrix: [", rows, ", ", cols, "] has no elements");
  SAMOYEDS_CHECK(count >= 1 && count <= 65535, "DevicePackedMatrix: ", count, " matrices in one stack; 1 to 65535");
  const PackedGeometry g = packed_geometry(pattern, rows, cols);
  const auto n = static_cast<std::size_t>(count);
  const std::size_t metadata_at = align_up(static_cast<std::size_t>(g.values_bytes()) * n);
  const std::size_t select_at = metadata_at + align_up(static_cast<std::size_t>(g.metadata_bytes()) * n);
  const std::size_t total = select_at + align_up(static_cast<std::size_t>(g.select_bytes()) * n);
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&allocation_, total));
  auto* base = static_cast<std::uint8_t*>(allocation_);
  const cudaError_t zeroed = cudaMemset(base, 0, total);
  if (zeroed != cudaSuccess) {
    release();
    SAMOYEDS_CUDA_CHECK(zeroed);
  }
  view_.pattern = pattern;
  view_.dtype = dtype;
  view_.rows = rows;
  view_.cols = cols;
  view_.values = reinterpret_cast<const std::uint16_t*>(base);
  view_.metadata = reinterpret_cast<const std::uint32_t*>(base + metadata_at);
  view_.row_select = g.select_bytes() ? reinterpret_cast<const std::uint32_t*>(base + select_at) : nullptr;
  view_.num_stacked = count;
}

PackedMatrix DevicePackedMatrix::download(int index) const {
  SAMOYEDS_CHECK(allocation_, "DevicePackedMatrix::download: the matrix is empty");
  SAMOYEDS_CHECK(index >= 0 && index < view_.num_stacked, "DevicePackedMatrix::download: matrix ", index,
                 " of a stack of ", view_.num_stacked);
  PackedMatrix m;
  m.pattern = view_.pattern;
  m.dtype = view_.dtype;
  m.rows = view_.rows;
  m.cols = view_.cols;
  const PackedGeometry g = m.geometry();
  m.values.resize(static_cast<std::size_t>(g.num_values()));
  m.metadata.resize(static_cast<std::size_t>(g.num_metadata_words()));
  m.row_select.resize(static_cast<std::size_t>(g.num_select_words()));
  const auto i = static_cast<std::size_t>(index);
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(m.values.data(), view_.values + i * m.values.size(), m.values.size() * 2,
                                 cudaMemcpyDeviceToHost));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(m.metadata.data(), view_.metadata + i * m.metadata.size(), m.metadata.size() * 4,
                                 cudaMemcpyDeviceToHost));
  if (!m.row_select.empty())
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(m.row_select.data(), view_.row_select + i * m.row_select.size(),
                                   m.row_select.size() * 4, cudaMemcpyDeviceToHost));
  return m;
}

void DevicePackedMatrix::release() {
  if (allocation_) cudaFree(allocation_);  // no throw from destructors
  allocation_ = nullptr;
  view_ = PackedMatrixView{};
}

DevicePackedMatrix::~DevicePackedMatrix() { release(); }

DevicePackedMatrix::DevicePackedMatrix(DevicePackedMatrix&& other) noexcept
    : view_(std::exchange(other.view_, PackedMatrixView{})), allocation_(std::exchange(other.allocation_, nullptr)) {}

DevicePackedMatrix& DevicePackedMatrix::operator=(DevicePackedMatrix&& other) noexcept {
  if (this != &other) {
    release();
    view_ = std::exchange(other.view_, PackedMatrixView{});
    allocation_ = std::exchange(other.allocation_, nullptr);
  }
  return *this;
}

}  // namespace samoyeds::gpu
