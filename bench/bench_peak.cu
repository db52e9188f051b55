// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench peak` (bench/bench_peak.h). Every warp of a full grid (8 warps per SM sub-partition)
// issues 8 independent chains of mma.sp.m16n8k32 from registers, so neither memory nor dependent
// latency limits the rate: what remains is the tensor cores' throughput for this instruction.
// Check first: with A's kept values, B and the metadata fixed (all ones, positions 0 and 1), each
// accumulator gains exactly 16 per MMA, so every thread's sum must be exactly 8 x 4 x 16 x iterations
// (fp32-exact below 2^24).
#include "bench/bench_peak.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "bench/bench_util.h"
#include "kernels/cuda_check.h"
#include "kernels/ptx.cuh"

namespace samoyeds::bench {

namespace {

constexpr int kChains = 8;         // independent accumulators per warp
constexpr int kIterations = 4096;  // per chain: sums stay fp32-exact (8 x 4 x 16 x 4096 < 2^24)
constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 4;    // 32 warps per SM

template <bool kBf16>
__global__ void mma_sp_peak(int iterations, float* sums) {
  const std::uint32_t ones = kBf16 ? 0x3F803F80u : 0x3C003C00u;  // two 1.0 values
  const std::uint32_t a[4] = {ones, ones, ones, ones}, b[4] = {ones, ones, ones, ones};
  float d[kChains][4] = {};
  for (int i = 0; i < iterations; ++i) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) kernels::ptx::mma_sp_16832<kBf16>(d[c], a, b, 0x44444444u);
  }
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < kChains; ++c)
#pragma unroll
    for (int f = 0; f < 4; ++f) sum += d[c][f];
  sums[static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x] = sum;
}

}  // namespace

int run_peak_bench(const PeakBenchOptions& o) {
  const bool bf16 = o.dtype == DType::bf16;
  int device = 0, sms = 0;
  SAMOYEDS_CUDA_CHECK(cudaGetDevice(&device));
  SAMOYEDS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = sms * kBlocksPerSm;
  const std::size_t threads = static_cast<std::size_t>(blocks) * kThreads;
  float* d_sums = nullptr;
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_sums, threads * sizeof(float)));
  const std::unique_ptr<float, cudaError_t (*)(void*)> guard(d_sums, &cudaFree);
  SAMOYEDS_CUDA_CHECK(cudaMemset(d_sums, 0xFF, threads * sizeof(float)));  // NaN until written
  auto launch = [&] {
    if (bf16) {
      mma_sp_peak<true><<<blocks, kThreads>>>(kIterations, d_sums);
    } else {
      mma_sp_peak<false><<<blocks, kThreads>>>(kIterations, d_sums);
    }
    SAMOYEDS_CHECK_LAUNCH("mma_sp_peak");
  };
  const std::string device_label = device_name(), run_commit = commit(), date = today();
  std::printf("samoyeds bench peak: %s, %s, mma.sp.m16n8k32 from registers, %d SMs x %d warps, commit %s, %s\n",
              device_label.c_str(), dtype_name(o.dtype), sms, kBlocksPerSm * kThreads / 32, run_commit.c_str(), date.c_str());

  launch();
  SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> sums(threads);
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(sums.data(), d_sums, threads * sizeof(float), cudaMemcpyDeviceToHost));
  const float expected = static_cast<float>(kChains * 4 * 16) * kIterations;
  for (std::size_t i = 0; i < threads; ++i) {
    if (sums[i] != expected) {
      std::printf("INVALID: thread %zu summed %.9g, expected %.9g; no rate reported\n", i, static_cast<double>(sums[i]),
                  static_cast<double>(expected));
      return 1;
    }
  }

  Timer timer;
  const Timing t = timer.time(launch, o.reps);
  // Dense-equivalent work of one m16n8k32 (the convention of the 2:4 peaks): 2 x 16 x 8 x 32.
  const double mmas = static_cast<double>(threads / 32) * kChains * kIterations;
  const double tflops = mmas * 2.0 * 16 * 8 * 32 / (t.median_us * 1e-6) / 1e12;
  std::printf("  checked: every thread's sum exact\n  %.1f us for %.3g MMAs: %.1f TFLOP/s dense-equivalent (p10 %.1f us, p90 %.1f us)\n",
              t.median_us, mmas, tflops, t.p10_us, t.p90_us);
  if (!o.out_path.empty()) {
    std::FILE* f = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(f, "cannot open --out file '", o.out_path, "' for appending");
    Record r = run_record("peak", device_label, run_commit, date);
    r.add("dtype", dtype_name(o.dtype)).add("kernel", "mma_sp_m16n8k32_registers").add("time_us", t.median_us)
        .add("p10_us", t.p10_us).add("p90_us", t.p90_us).add("tflops", tflops).add("reps", static_cast<std::int64_t>(o.reps));
    std::fprintf(f, "%s\n", r.json().c_str());
    std::fclose(f);
  }
  return 0;
}

}  // namespace samoyeds::bench
