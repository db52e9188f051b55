// SPDX-License-Identifier: Apache-2.0
// DevicePackedMatrix: one allocation holding values, metadata and row-select words of a packed matrix.
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cuda_check.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::gpu {

namespace {
std::size_t align_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
}  // namespace

DevicePackedMatrix::DevicePackedMatrix(const PackedMatrix& host) {
  host.validate();
  const std::size_t values_bytes = host.values.size() * sizeof(std::uint16_t);
  const std::size_t metadata_bytes = host.metadata.size() * sizeof(std::uint32_t);
  const std::size_t select_bytes = host.row_select.size() * sizeof(std::uint32_t);
  const std::size_t metadata_at = align_up(values_bytes), select_at = metadata_at + align_up(metadata_bytes);
  const std::size_t total = select_at + align_up(select_bytes);
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&allocation_, total));
  auto* base = static_cast<std::uint8_t*>(allocation_);
  try {
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(base, host.values.data(), values_bytes, cudaMemcpyHostToDevice));
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(base + metadata_at, host.metadata.data(), metadata_bytes, cudaMemcpyHostToDevice));
    if (select_bytes)
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(base + select_at, host.row_select.data(), select_bytes, cudaMemcpyHostToDevice));
  } catch (...) {
    release();
    throw;
  }
  view_.pattern = host.pattern;
  view_.dtype = host.dtype;
  view_.rows = host.rows;
  view_.cols = host.cols;
  view_.values = reinterpret_cast<const std::uint16_t*>(base);
  view_.metadata = reinterpret_cast<const std::uint32_t*>(base + metadata_at);
  view_.row_select = select_bytes ? reinterpret_cast<const std::uint32_t*>(base + select_at) : nullptr;
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
