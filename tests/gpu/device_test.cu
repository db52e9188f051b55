// SPDX-License-Identifier: Apache-2.0
// GPU smoke tests: device discovery agrees with the CUDA runtime, and a kernel compiled for this
// build's architectures (sm_90a, sm_80) runs and writes every element. Skips without a device.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <vector>

#include "samoyeds/device.h"

namespace samoyeds {
namespace {

bool have_device() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return ok;
}

#define SKIP_WITHOUT_GPU() \
  if (!have_device()) GTEST_SKIP() << "no CUDA device: " << cuda_status()

__global__ void scale_kernel(const float* in, float* out, float factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * factor;
}

TEST(GpuDevice, DiscoveryMatchesRuntime) {
  SKIP_WITHOUT_GPU();
  const auto devices = cuda_devices();
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  ASSERT_EQ(static_cast<int>(devices.size()), count);
  for (const DeviceInfo& d : devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.num_sms, 0);
    EXPECT_GT(d.memory_bytes, 0);
    std::printf("device %d: %s sm_%d%d, %d SMs, %.1f GiB\n", d.index, d.name.c_str(), d.sm_major, d.sm_minor, d.num_sms,
                static_cast<double>(d.memory_bytes) / (1 << 30));
  }
}

TEST(GpuDevice, KernelForThisArchitectureRuns) {
  SKIP_WITHOUT_GPU();
  const int n = 100003;  // not a multiple of the block size
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[static_cast<std::size_t>(i)] = static_cast<float>(i % 977) - 400.0f;
  float *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(out, 0xFF, n * sizeof(float)), cudaSuccess);  // poison: NaN bit pattern
  scale_kernel<<<(n + 255) / 256, 256>>>(in, out, 2.5f, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> result(n);
  ASSERT_EQ(cudaMemcpy(result.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) ASSERT_EQ(result[static_cast<std::size_t>(i)], host[static_cast<std::size_t>(i)] * 2.5f) << i;
  cudaFree(in);
  cudaFree(out);
}

}  // namespace
}  // namespace samoyeds
