// SPDX-License-Identifier: Apache-2.0
// A timeline of the decode kernel's warps, for performance work (docs/kernels/ssmm.md v20). Compiled
// in only with -DSAMOYEDS_DECODE_TRACE (e.g. cmake -DCMAKE_CUDA_FLAGS=-DSAMOYEDS_DECODE_TRACE); without
// it DECODE_TRACE is nothing and the launcher is unchanged. With it, lane 0 of every warp records the
// global timer, its SM's clock and the SM at each DECODE_TRACE(event), and the host launcher writes the
// last launch's records to $SAMOYEDS_DECODE_TRACE_FILE (a synchronisation per launch: times from such
// a build are not benchmark numbers); scripts/decode_trace.py summarises the file. The events, in
// ssmm_decode.cu: 0 start, 1 token ids in hand, 2 / 3 / 4 the first / second / last k-tile's data in
// hand, 5 loop end, 6 the warps' sums in shared memory, 7 end; 8 the first output stored (unsplit; not
// recorded where lane 0's first output is not stored) or the cluster wait passed (split), 9 the cluster
// barrier after the sends passed (split).
#pragma once

#ifdef SAMOYEDS_DECODE_TRACE
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/cuda_check.h"

// Internal linkage: a translation unit that includes this has a buffer of its own (only ssmm_decode.cu does).
namespace samoyeds::kernels::decode_trace {
namespace {

constexpr int kCtas = 4096, kWarps = 8, kEvents = 10;
constexpr int kSlots = 2 * kEvents + 1;  // [global timer x kEvents][clock64 x kEvents][SM]
__device__ unsigned long long g_records[kCtas * kWarps * kSlots];

__device__ __forceinline__ void record(int event) {
  const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (threadIdx.x % 32 != 0 || cta >= kCtas) return;
  unsigned long long* slot = g_records + (cta * kWarps + threadIdx.x / 32) * kSlots;
  unsigned long long now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  slot[event] = now;
  slot[kEvents + event] = clock64();
  slot[2 * kEvents] = sm;
}

inline void* records_address() {
  void* address = nullptr;
  SAMOYEDS_CUDA_CHECK(cudaGetSymbolAddress(&address, g_records));
  return address;
}

inline void reset(cudaStream_t stream) { SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(records_address(), 0, sizeof(g_records), stream)); }

// One line per recorded warp: CTA, warp, then the kSlots values; the first line the launch's shape (CTAs
// past kCtas are not recorded). Nothing is written for a launch inside a stream capture.
inline void write(dim3 grid, int warps, cudaStream_t stream) {
  const char* path = std::getenv("SAMOYEDS_DECODE_TRACE_FILE");
  if (!path) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SAMOYEDS_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  std::vector<unsigned long long> host(sizeof(g_records) / sizeof(g_records[0]));
  SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(host.data(), records_address(), sizeof(g_records), cudaMemcpyDeviceToHost));
  FILE* f = std::fopen(path, "w");
  if (!f) return;
  std::fprintf(f, "grid %u %u %u warps %d recorded-ctas %d\n", grid.x, grid.y, grid.z, warps, kCtas);
  for (int c = 0; c < kCtas; ++c)
    for (int w = 0; w < kWarps; ++w) {
      const unsigned long long* slot = host.data() + (c * kWarps + w) * kSlots;
      if (slot[0] == 0) continue;
      std::fprintf(f, "%d %d", c, w);
      for (int k = 0; k < kSlots; ++k) std::fprintf(f, " %llu", slot[k]);
      std::fprintf(f, "\n");
    }
  std::fclose(f);
}

}  // namespace
}  // namespace samoyeds::kernels::decode_trace

#define DECODE_TRACE(event) ::samoyeds::kernels::decode_trace::record(event)
#else
#define DECODE_TRACE(event) ((void)0)
#endif
