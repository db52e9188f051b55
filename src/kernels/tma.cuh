// SPDX-License-Identifier: Apache-2.0
// Shared-memory barriers (mbarrier) and the tensor memory accelerator's tiled copies: what the sm_90a
// kernels that take operands by bulk tensor copies share (ssmm_sm90.cu, ssmm_decode.cu). The callers
// compile their bodies out for sm_80.
#pragma once

#include <cstdint>

#include <cuda.h>  // CUtensorMap

#include "kernels/ptx.cuh"

namespace samoyeds::kernels::tma {

__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(ptx::smem_address(bar)), "r"(count) : "memory");
}

// Returns once the barrier's phase with this parity has completed. Each try_wait may suspend the
// thread until the phase completes, for at most a system-dependent time. (A suspend-time hint per
// try measured 0.98x on the kernel grid: docs/kernels/ssmm.md v9.)
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "retry:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra retry;\n"
      "}\n" ::"r"(ptx::smem_address(bar)),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(ptx::smem_address(bar)) : "memory");
}

__device__ __forceinline__ void fence_mbarrier_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(ptx::smem_address(bar)), "r"(bytes)
               : "memory");
}

// One box of a 3-D tensor map into this CTA's shared memory; completes `bar`'s transaction bytes.
__device__ __forceinline__ void load_3d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(
          ptx::smem_address(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(ptx::smem_address(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// `bytes` contiguous bytes (a multiple of 16, both addresses 16-byte aligned) into this CTA's shared
// memory, without a tensor map; completes `bar`'s transaction bytes.
__device__ __forceinline__ void load_bulk(void* dst, const void* src, unsigned bytes, std::uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   ptx::smem_address(dst)),
               "l"(src), "r"(bytes), "r"(ptx::smem_address(bar))
               : "memory");
}

// load_bulk into the same offset of every CTA of `cta_mask` in this cluster, completing each one's `bar`.
__device__ __forceinline__ void load_bulk_multicast(void* dst, const void* src, unsigned bytes, std::uint64_t* bar,
                                                    std::uint16_t cta_mask) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;\n" ::"r"(
                   ptx::smem_address(dst)),
               "l"(src), "r"(bytes), "r"(ptx::smem_address(bar)), "h"(cta_mask)
               : "memory");
}

// Brings a tensor map's descriptor into the cache the tensor copies read it from.
__device__ __forceinline__ void prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
}

}  // namespace samoyeds::kernels::tma
