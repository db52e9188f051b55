// SPDX-License-Identifier: Apache-2.0
// Which NVIDIA GPUs this process can use, without exposing CUDA types. Works (and reports none) in a
// build without CUDA or on a machine without a driver.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace samoyeds {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;  // compute capability
  int num_sms = 0;
  std::int64_t memory_bytes = 0;
  // Sparse tensor cores (mma.sp) exist from sm_80 on; the wgmma sparse path needs sm_90.
  bool has_sparse_tensor_cores() const { return sm_major >= 8; }
  bool is_hopper() const { return sm_major == 9; }
};

bool built_with_cuda();
std::vector<DeviceInfo> cuda_devices();  // empty when there is no usable device
// One line explaining why no device is usable ("built without CUDA", "no CUDA driver", ...).
std::string cuda_status();

}  // namespace samoyeds
