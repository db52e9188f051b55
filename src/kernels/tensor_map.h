// SPDX-License-Identifier: Apache-2.0
// Host side of the bulk tensor copies (kernels/tma.cuh): encoding a tensor map through the runtime's
// driver entry point, so nothing links libcuda. Used by the sm90 launchers (ssmm_sm90.cu, ssmm_decode.cu).
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda_check.h"

namespace samoyeds::kernels {

using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;
inline EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    SAMOYEDS_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    SAMOYEDS_CHECK(found == cudaDriverEntryPointSuccess && f != nullptr,
                   "ssmm: the CUDA driver has no cuTensorMapEncodeTiled (needs a CUDA 12 driver); set SAMOYEDS_SSMM_TMA=off "
                   "and SAMOYEDS_SSMM_DECODE=off to use plain cp.async copies");
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}

// A tensor map over a row-major array of 16-bit or 32-bit elements: dims innermost first, strides in
// bytes for dims 1.., box in elements.
template <int kRank>
inline CUtensorMap tensor_map(const char* what, CUtensorMapDataType type, const void* base, const std::uint64_t (&dims)[kRank],
                              const std::uint64_t (&strides)[kRank - 1], const std::uint32_t (&box)[kRank],
                              CUtensorMapSwizzle swizzle) {
  CUtensorMap map;
  std::memset(&map, 0, sizeof(map));
  std::uint32_t element_strides[kRank];
  for (int d = 0; d < kRank; ++d) element_strides[d] = 1;
  const CUresult r = encode_tiled()(&map, type, kRank, const_cast<void*>(base), dims, strides, box, element_strides,
                                    CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SAMOYEDS_CHECK(r == CUDA_SUCCESS, "ssmm: cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r), ") for the ", what,
                 " map; set SAMOYEDS_SSMM_TMA=off, SAMOYEDS_SSMM_A_TMA=off and SAMOYEDS_SSMM_DECODE=off to use plain cp.async copies");
  return map;
}

}  // namespace samoyeds::kernels
