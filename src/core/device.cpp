// SPDX-License-Identifier: Apache-2.0
// Device discovery through the CUDA runtime when the library is built with CUDA.
#include "samoyeds/device.h"

#if SAMOYEDS_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace samoyeds {

bool built_with_cuda() {
#if SAMOYEDS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<DeviceInfo> cuda_devices() {
  std::vector<DeviceInfo> devices;
#if SAMOYEDS_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls are not confused
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                                 static_cast<std::int64_t>(prop.totalGlobalMem)});
  }
#endif
  return devices;
}

std::string cuda_status() {
#if SAMOYEDS_WITH_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device (") + cudaGetErrorString(status) + ")";
  }
  if (count == 0) return "no CUDA device found";
  return std::to_string(count) + " CUDA device(s) found";
#else
  return "this build of samoyeds has no CUDA support (configured without nvcc)";
#endif
}

}  // namespace samoyeds
