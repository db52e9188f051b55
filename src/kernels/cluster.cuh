// SPDX-License-Identifier: Apache-2.0
// Thread-block clusters (sm_90a): ranks, the cluster-wide barrier, and access to another CTA's shared
// memory (distributed shared memory). Shared by the kernels that launch clusters: the wgmma kernel's
// TMA multicast (ssmm_sm90.cu) and the decode kernel's split-K reduce (ssmm_decode.cu). The callers
// compile their bodies out for sm_80.
#pragma once

#include <cstdint>

#include "kernels/ptx.cuh"

namespace samoyeds::kernels {

__device__ __forceinline__ unsigned cluster_ctarank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
__device__ __forceinline__ unsigned cluster_nctarank() {
  unsigned count;
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(count));
  return count;
}
// Every thread of every CTA in the cluster; what each wrote before it is visible to all after it
// (release / acquire at cluster scope). Also orders barrier inits before their remote use.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// Arrives on the barrier at the same shared-memory offset in CTA `cta` of this cluster.
__device__ __forceinline__ void mbarrier_arrive_cluster(std::uint64_t* bar, unsigned cta) {
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(ptx::smem_address(bar)),
      "r"(cta)
      : "memory");
}
// The two halves of cluster_sync, for a barrier whose wait can come long after the arrival. The
// relaxed arrival orders nothing: it only says that this thread (its CTA) has started.
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
// Stores `value` at the same shared-memory offset as `local` in CTA `cta` of this cluster.
__device__ __forceinline__ void st_shared_cluster(float* local, unsigned cta, float value) {
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "st.shared::cluster.f32 [remote], %2;\n"
      "}\n" ::"r"(ptx::smem_address(local)),
      "r"(cta), "f"(value)
      : "memory");
}

}  // namespace samoyeds::kernels
