// SPDX-License-Identifier: Apache-2.0
// Checks for every CUDA runtime call and every launch: failures throw samoyeds::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include "samoyeds/error.h"

#define SAMOYEDS_CUDA_CHECK(call)                                                                            \
  do {                                                                                                       \
    const cudaError_t samoyeds_status_ = (call);                                                             \
    if (samoyeds_status_ != cudaSuccess)                                                                     \
      ::samoyeds::detail::throw_error(__FILE__, __LINE__,                                                    \
                                      std::string(#call " failed: ") + cudaGetErrorString(samoyeds_status_)); \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here; execution errors at the next sync.
#define SAMOYEDS_CHECK_LAUNCH(kernel_name)                                                                   \
  do {                                                                                                       \
    const cudaError_t samoyeds_status_ = cudaGetLastError();                                                 \
    if (samoyeds_status_ != cudaSuccess)                                                                     \
      ::samoyeds::detail::throw_error(__FILE__, __LINE__,                                                    \
                                      std::string("launch of " kernel_name " failed: ") +                     \
                                          cudaGetErrorString(samoyeds_status_));                              \
  } while (0)
