// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench peak` (bench/bench_peak.h). Every warp of a full grid (8 warps per SM sub-partition)
// issues 8 independent chains of mma.sp.m16n8k32 from registers, so neither memory nor dependent
// latency limits the rate: what remains is the tensor cores' throughput for this instruction.
// Check first: with A's kept values, B and the metadata fixed (all ones, positions 0 and 1), each
// accumulator gains exactly 16 per MMA, so every thread's sum must be exactly 8 x 4 x 16 x iterations
// (fp32-exact below 2^24).
//
// Second part (sm_90a): the rate of warpgroup-level wgmma.mma_async.sp.m64nNk32 with both operands
// read from shared memory (the SS form the Hopper SSMM kernels use), one CTA per SM of two
// warpgroups that share a B tile, as the SSMM consumers do. Each warpgroup issues groups of four
// wgmmas (one 128-column k-tile: A 64 rows x 128 B, B two halves of N rows x 128 B, 128-byte
// swizzle) on the same accumulators, and per N three ways:
//   pipelined - wait until one group is left in flight: the instruction's ceiling from smem;
//   drained   - wait for every group before the next: the cost of having no k-tile in flight;
//   update    - drained, then one FFMA per accumulator into a second set (S += c T, c = +-1): the
//               SSMM consumers' running-total step at every segment start (docs/kernels/ssmm.md).
// The ceilings separate what shared memory allows (per wgmma N x 64 B of B plus 2 KB of A, against
// N / 2 cycles of tensor work at the sparse peak) from what draining costs. Every accumulator is
// checked exactly (T = 64 x groups, S by the same sum on the host) before any rate is printed.
#include "bench/bench_peak.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "kernels/cuda_check.h"
#include "kernels/ptx.cuh"
#include "kernels/wgmma_common.cuh"
#include "kernels/wgmma_sp.cuh"

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


// ---- wgmma.sp from shared memory (sm_90a) ----
enum class WgmmaMode { pipelined, drained, update };
constexpr int kWgmmaGroups = 2048;         // k-tile groups per warpgroup: T = 64 x 2048 stays fp32-exact
constexpr int kWgmmaSmemBytes = 160 * 1024;  // asked for, so that one CTA fills an SM as in the SSMM kernels

template <int kN, WgmmaMode kMode>
__global__ void __launch_bounds__(256, 1) wgmma_sp_smem_peak(int groups, int* bad) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) std::uint8_t smem[];
  // [2 warpgroups][64 rows][128 B] A, then [2 halves][kN rows][128 B] B: all bf16 ones.
  constexpr int kABytes = 2 * 64 * 128, kBBytes = 2 * kN * 128;
  for (int i = threadIdx.x; i < (kABytes + kBBytes) / 4; i += blockDim.x)
    reinterpret_cast<std::uint32_t*>(smem)[i] = 0x3F803F80u;
  kernels::wgmma::fence_async_proxy();
  __syncthreads();
  const int group = threadIdx.x / 128;
  const std::uint64_t desc_a = kernels::wgmma::sw128_descriptor(smem + group * 64 * 128);
  const std::uint64_t desc_b = kernels::wgmma::sw128_descriptor(smem + kABytes);
  float t[kN / 2] = {};
  float s[kMode == WgmmaMode::update ? kN / 2 : 1] = {};
  for (int i = 0; i < groups; ++i) {
    if constexpr (kMode != WgmmaMode::pipelined) kernels::wgmma::wait<0>();
    if constexpr (kMode == WgmmaMode::update) {
      kernels::wgmma::fence_registers(t);
      const float c = (i & 1) ? 1.0f : -1.0f;
#pragma unroll
      for (int f = 0; f < kN / 2; ++f) s[f] = fmaf(c, t[f], s[f]);
    }
    kernels::wgmma::fence();
    if constexpr (kMode == WgmmaMode::update) kernels::wgmma::fence_registers(t);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      kernels::wgmma::SparseMma<kN, true>::run(
          t, kernels::wgmma::advance_descriptor(desc_a, ks * 32),
          kernels::wgmma::advance_descriptor(desc_b, (ks / 2) * (kN * 128) + (ks % 2) * 64), 0x44444444u);
    kernels::wgmma::commit();
    if constexpr (kMode == WgmmaMode::pipelined) kernels::wgmma::wait<1>();
  }
  kernels::wgmma::wait<0>();
  kernels::wgmma::fence_registers(t);
  // Expected: T = 4 wgmmas x 16 kept ones per group; S = sum over groups of c_i x T before group i.
  float s_expected = 0.0f;
  if constexpr (kMode == WgmmaMode::update)
    for (int i = 0; i < groups; ++i) s_expected = fmaf((i & 1) ? 1.0f : -1.0f, 64.0f * i, s_expected);
  int wrong = 0;
#pragma unroll
  for (int f = 0; f < kN / 2; ++f) {
    wrong += t[f] != 64.0f * groups;
    if constexpr (kMode == WgmmaMode::update) wrong += s[f] != s_expected;
  }
  bad[static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x] = wrong;
#else
  if (threadIdx.x == 0 && blockIdx.x == 0) __trap();  // launched only on sm_90 devices
  (void)groups;
  (void)bad;
#endif
}

struct WgmmaCase {
  int n;
  const char* name;
  void (*kernel)(int, int*);
};

template <int kN>
void add_wgmma_cases(std::vector<WgmmaCase>& cases) {
  cases.push_back({kN, "pipelined", &wgmma_sp_smem_peak<kN, WgmmaMode::pipelined>});
  cases.push_back({kN, "drained", &wgmma_sp_smem_peak<kN, WgmmaMode::drained>});
  if constexpr (kN <= 128)  // a second set of N/2 accumulators: 256 registers at N = 256
    cases.push_back({kN, "update", &wgmma_sp_smem_peak<kN, WgmmaMode::update>});
}

// Runs the wgmma cases; returns 1 if any produced a wrong accumulator.
int run_wgmma_peaks(const PeakBenchOptions& o, int sms, const std::string& device_label, const std::string& run_commit,
                    const std::string& date) {
  std::vector<WgmmaCase> cases;
  add_wgmma_cases<64>(cases);
  add_wgmma_cases<128>(cases);
  add_wgmma_cases<256>(cases);
  constexpr int kThreadsPerCta = 256;
  const std::size_t threads = static_cast<std::size_t>(sms) * kThreadsPerCta;
  int* d_bad = nullptr;
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_bad, threads * sizeof(int)));
  const std::unique_ptr<int, cudaError_t (*)(void*)> guard(d_bad, &cudaFree);
  std::printf("wgmma.mma_async.sp.m64nNk32 bf16, A and B from shared memory, %d SMs x 2 warpgroups sharing B, "
              "%d groups of 4 per warpgroup\n", sms, kWgmmaGroups);
  std::printf("     N  mode       |      us |  TFLOP/s dense-eq | of 1979\n");
  std::FILE* f = nullptr;
  if (!o.out_path.empty()) {
    f = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(f, "cannot open --out file '", o.out_path, "' for appending");
  }
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_guard(f, &std::fclose);
  Timer timer;
  for (const WgmmaCase& c : cases) {
    SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(c.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgmmaSmemBytes));
    auto launch = [&] {
      c.kernel<<<sms, kThreadsPerCta, kWgmmaSmemBytes>>>(kWgmmaGroups, d_bad);
      SAMOYEDS_CHECK_LAUNCH("wgmma_sp_smem_peak");
    };
    int wrong = 0;
    const std::int64_t bad = first_nonzero_flag(launch, d_bad, threads, &wrong);
    if (bad >= 0) {
      std::printf("INVALID: N = %d %s, thread %lld: %d accumulators wrong (-1: not written); no rate reported\n", c.n, c.name,
                  static_cast<long long>(bad), wrong);
      return 1;
    }
    const Timing t = timer.time(launch, o.reps);
    // Dense-equivalent work of one m64nNk32 (the convention of the 2:4 peaks): 2 x 64 x N x 32.
    const double wgmmas = static_cast<double>(sms) * 2 * kWgmmaGroups * 4;
    const double tflops = wgmmas * 2.0 * 64 * c.n * 32 / (t.median_us * 1e-6) / 1e12;
    std::printf("  %4d  %-9s  | %7.1f | %17.1f | %5.1f %%\n", c.n, c.name, t.median_us, tflops, 100.0 * tflops / 1978.9);
    if (f) {
      Record r = run_record("peak", device_label, run_commit, date);
      r.add("dtype", "bf16").add("kernel", std::string("wgmma_sp_m64n") + std::to_string(c.n) + "k32_smem_" + c.name)
          .add("time_us", t.median_us).add("p10_us", t.p10_us).add("p90_us", t.p90_us).add("tflops", tflops)
          .add("reps", static_cast<std::int64_t>(o.reps));
      std::fprintf(f, "%s\n", r.json().c_str());
    }
  }
  std::printf("  checked: every accumulator of every case exact\n");
  return 0;
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
  int major = 0;
  SAMOYEDS_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major != 9) {
    std::printf("wgmma.sp from shared memory: skipped (sm_90 only; this device is sm_%d)\n", major * 10);
    return 0;
  }
  if (run_wgmma_peaks(o, sms, device_label, run_commit, date) != 0) return 1;
  return run_wgmma_ring_peaks(o, sms, device_label, run_commit, date);
}

}  // namespace samoyeds::bench
