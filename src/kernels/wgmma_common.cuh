// SPDX-License-Identifier: Apache-2.0
// What every warpgroup-MMA (wgmma) user needs besides the instruction wrappers of wgmma_sp.cuh: the
// shared-memory matrix descriptor of a K-major tile with the 128-byte swizzle (16-byte chunk c of
// row r at chunk c ^ (r % 8), 1024-byte atoms of 8 rows), and the fence / commit / wait of the
// asynchronous pipeline. sm_90a only (the callers compile their bodies out elsewhere).
#pragma once

#include <cstdint>

#include "kernels/ptx.cuh"

namespace samoyeds::kernels::wgmma {

__device__ __forceinline__ std::uint64_t sw128_descriptor(const void* smem_pointer) {
  const std::uint32_t address = ptx::smem_address(smem_pointer);
  return static_cast<std::uint64_t>((address & 0x3FFFF) >> 4)  // start address
         | (std::uint64_t{1} << 16)                             // leading byte offset (unused for swizzled K-major)
         | (std::uint64_t{1024 >> 4} << 32)                     // stride byte offset: 8 rows x 128 B
         | (std::uint64_t{1} << 62);                            // 128-byte swizzle
}
// The descriptor of the tile `bytes` further on: the start address is the low field (address >> 4,
// 14 bits), and shared-memory addresses stay below 256 KB, so the add cannot carry out of it; a
// 32-bit add on the low word is then enough (the 64-bit one was two instructions per wgmma).
__device__ __forceinline__ std::uint64_t advance_descriptor(std::uint64_t descriptor, std::uint32_t bytes) {
  const std::uint32_t low = static_cast<std::uint32_t>(descriptor) + (bytes >> 4);
  return (descriptor & 0xFFFFFFFF00000000ull) | low;
}

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Returns once at most kPending committed groups of this warpgroup are still running.
template <int kPending>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Pins accumulator registers at this point of the program: the wgmma and wait statements are
// volatile asm, but ordinary code reading an accumulator is not ordered against them by the
// compiler (registers are not memory), so without this a read could be scheduled above the wait.
template <int kCount>
__device__ __forceinline__ void fence_registers(float (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Moves this warpgroup's per-thread register limit (warp-specialised kernels: the producer gives its
// registers to the consumers, which hold the accumulators).
template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads (wgmma, TMA).
__device__ __forceinline__ void fence_async_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

}  // namespace samoyeds::kernels::wgmma
