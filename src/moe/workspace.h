// SPDX-License-Identifier: Apache-2.0
// Workspace plumbing of the MoE layers: a carver that cuts typed, 256-byte-aligned arrays out of one
// allocation (with a null base it only counts, so one function both sizes and lays out a workspace),
// and a device buffer that grows on demand.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_check.h"

namespace samoyeds::moe {

class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<std::uint8_t*>(base)) {}
  template <class T>
  T* take(std::int64_t count) {
    T* at = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (static_cast<std::size_t>(count) * sizeof(T) + 255) / 256 * 256;
    return at;
  }
  void* take_bytes(std::size_t bytes) { return take<std::uint8_t>(static_cast<std::int64_t>(bytes)); }
  std::size_t used() const { return used_; }

 private:
  std::uint8_t* base_;
  std::size_t used_ = 0;
};

// Device memory owned by a layer; ensure() reallocates only to grow (contents are not kept).
class OwnedBuffer {
 public:
  OwnedBuffer() = default;
  OwnedBuffer(const OwnedBuffer&) = delete;
  OwnedBuffer& operator=(const OwnedBuffer&) = delete;
  ~OwnedBuffer() { cudaFree(ptr_); }
  void ensure(std::size_t wanted) {
    if (wanted <= bytes_) return;
    cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&ptr_, wanted));
    bytes_ = wanted;
  }
  void release() {
    cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* ptr() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace samoyeds::moe
