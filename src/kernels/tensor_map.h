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
#include "kernels/ssmm_common.cuh"  // Params

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

// The maps of matrix m's packed weights as the sm90 kernels' stages take them: A values
// [E][compressed rows][K_padded / 2] in boxes of 64 values x box_rows rows (128-byte swizzle), and
// metadata [E][row tiles][k-steps x 16 words] in boxes of 64 words (4 k-steps) x box_rows / 16 row tiles.
struct WeightMaps {
  CUtensorMap values;
  CUtensorMap metadata;
};
inline WeightMaps weight_maps_of(const Params& p, int m, std::uint32_t box_rows) {
  const auto u64 = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  const std::int64_t E = std::max(1, p.num_experts), ksteps = p.K_padded / 32;
  return WeightMaps{
      tensor_map<3>("values", CU_TENSOR_MAP_DATA_TYPE_UINT16, p.values[m], {u64(p.K_padded / 2), u64(p.compressed_rows_padded), u64(E)},
                    {u64(p.K_padded), u64(p.values_stride * 2)}, {64, box_rows, 1}, CU_TENSOR_MAP_SWIZZLE_128B),
      tensor_map<3>("metadata", CU_TENSOR_MAP_DATA_TYPE_UINT32, p.metadata[m], {u64(ksteps * 16), u64(p.compressed_rows_padded / 16), u64(E)},
                    {u64(ksteps * 64), u64(p.metadata_stride * 4)}, {64, box_rows / 16, 1}, CU_TENSOR_MAP_SWIZZLE_NONE)};
}

}  // namespace samoyeds::kernels
