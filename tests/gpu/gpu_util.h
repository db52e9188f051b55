// SPDX-License-Identifier: Apache-2.0
// GPU test helpers: skip without a device, RAII device buffers, poisoning.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "samoyeds/device.h"
#include "samoyeds/error.h"

namespace samoyeds::testing {

inline bool have_gpu() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return ok;
}

#define SAMOYEDS_SKIP_WITHOUT_GPU() \
  if (!::samoyeds::testing::have_gpu()) GTEST_SKIP() << "no CUDA device: " << ::samoyeds::cuda_status()

#define SAMOYEDS_ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes && cudaMalloc(&ptr_, bytes) != cudaSuccess) SAMOYEDS_FAIL("cudaMalloc of ", bytes, " bytes failed");
  }
  template <class T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    if (bytes_) cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice);
  }
  DeviceBuffer(const void* host, std::size_t bytes) : DeviceBuffer(bytes) {
    if (bytes_) cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { if (ptr_) cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  void* get() const { return ptr_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }
  std::size_t bytes() const { return bytes_; }
  // The fills finish before returning: cudaMemset runs on the legacy default stream, which a
  // non-blocking stream does not wait for, so a kernel on one could otherwise run before the poison
  // lands (and pass on stale values) or after it (and fail on correct ones).
  void poison() const { fill(0xFF); }  // NaN in bf16, fp16 and fp32
  // A finite fill (0x3F3F...: 0.747 in fp32, 0.184 in bf16): where an output must come out NaN, a
  // NaN poison would let an unwritten output pass.
  void poison_finite() const { fill(0x3F); }
  template <class T> std::vector<T> to_host() const {
    std::vector<T> out(bytes_ / sizeof(T));
    if (bytes_) cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  void fill(int byte) const {
    if (ptr_ && (cudaMemset(ptr_, byte, bytes_) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess))
      SAMOYEDS_FAIL("filling ", bytes_, " device bytes failed");
  }
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace samoyeds::testing
