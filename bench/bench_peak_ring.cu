// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench peak`, third part (sm_90a): what filling a ring of shared-memory stages by bulk
// copies costs the sparse wgmma rate, and what taking A out of shared memory would give back.
//
// Why: the SSMM TMA kernel's k loop (128 compressed rows x 128 tokens per CTA, N = 128 per consumer)
// moves 50 KB into shared memory per k-tile (A 16 KB, metadata 2 KB, B 32 KB) and its wgmmas read
// 80 KB out of it (each consumer: B 32 KB + its A 8 KB), for 512 cycles of tensor work at the sparse
// peak. These cases separate what the ring costs from what the consumers cost (docs/kernels/ssmm.md
// v22: the loop runs at the rate the copies come in, ~65 GB/s per SM; v23: a share of a rate the SMs
// split, which multicast lifts), one CTA per SM laid out as the TMA kernel: warp 0 the producer,
// warpgroups 1 and 2 consumers of m64n128k32 wgmmas with the running-total update (S += c T) after
// every k-tile's drain.
//   ss_fixed     A and B read from one fixed tile, no copies (the layout's ceiling without a ring);
//   ss_ring      each k-tile's A, metadata and B (50 KB) bulk-copied into a 4-stage ring (copies of
//                up to 16 KB) and read from the stage: the TMA kernel's k loop, with constant data
//                from L2; _4k / _1k: the same bytes in copies of at most 4 KB / 1 KB;
//   ss_ring_sm/2, /4  ss_ring on a half / a quarter of the SMs: whether the copy rate per SM is the
//                SM's own limit or its share of one that all SMs split (L2's);
//   ss_ring_mc2  ss_ring in clusters of two CTAs, each copying half of every stage's bytes multicast
//                to both: the same bytes into every SM, half of them read from L2;
//   ss_tile32, ss_tile48, ss_tile112  ss_ring in CTAs of 32 / 48 / 112 k-tiles (the TMA kernel's tile
//                lengths at K = 4096 / 6144 / 14336), many waves of them, each CTA storing its T and S
//                (64 KB of bf16) before it exits, as the kernel's tiles do; ss_tile32_nostore without
//                the stores: what a tile's fill, drain and epilogue cost against the long loop's rate;
//   rs_fixed     A from registers (the RS form), B fixed: the reads without A's 2 KB per wgmma;
//   rs_ring      A from registers, the metadata and B (34 KB) copied into the ring;
//   rs_ring_ldg  rs_ring with each consumer thread loading its A words from global memory (64 B per
//                k-tile, one k-tile ahead): the whole cost of an A-from-registers design.
// The data are bf16 ones with the metadata register fixed (positions 0 and 1), so after g k-tiles
// T = 64 g and S is the host's sum; every accumulator is checked before any rate is printed, which
// also proves every copied stage and loaded A word arrived.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_peak.h"
#include "bench/bench_util.h"
#include "kernels/cluster.cuh"
#include "kernels/cuda_check.h"
#include "kernels/ptx.cuh"
#include "kernels/tma.cuh"
#include "kernels/wgmma_common.cuh"
#include "kernels/wgmma_sp.cuh"

namespace samoyeds::bench {

namespace {

constexpr int kN = 128;                      // tokens per consumer wgmma
constexpr int kStages = 4;                   // the TMA kernel's ring depth at 50 KB stages
constexpr int kGroups = 2048;                // k-tiles per CTA of the long-loop cases: T = 64 x 2048 stays fp32-exact
constexpr int kTileWaveKTiles = 2048;        // k-tiles per SM of the tile-length cases, over all their waves
constexpr int kBTileBytes = 2 * kN * 128;    // two 64-column halves of 128 token rows
constexpr int kATileBytes = 2 * 64 * 128;    // both consumers' 64 compressed rows x 64 values
constexpr int kMetaTileBytes = 2048;         // copied, not read: the metadata register is fixed
constexpr int kSlotBytes = kBTileBytes + kATileBytes + kMetaTileBytes;  // one k-tile in the source
constexpr std::uint32_t kTwoOnes = 0x3F803F80u;                          // two bf16 1.0 values

template <bool kRs>
struct RingLayout {
  static constexpr int kStageBytes = kRs ? kBTileBytes + kMetaTileBytes : kSlotBytes;  // [B][A (SS only)][metadata]
  static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;   // + barriers, alignment slack
};

// One CTA per SM; a grid of more CTAs than SMs (the tile-length cases) runs in waves, CTA b reading
// source slot b % src_ctas. kStore: the consumers store T and S as bf16 (64 KB per CTA) to slot
// b % src_ctas of `out` before they exit.
template <bool kRing, bool kRs, bool kLdg, int kChunk = 16384, int kCluster = 1, bool kStore = false>
__global__ void __launch_bounds__(384, 1)
    wgmma_sp_ring_peak(int groups, const std::uint8_t* src, int src_ctas, std::uint32_t* out, int* bad) {
  static_assert(kCluster == 1 || (kRing && !kRs), "the multicast ring is the SS ring's");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kStageBytes = RingLayout<kRs>::kStageBytes;
  extern __shared__ std::uint8_t smem_raw[];
  std::uint8_t* smem = smem_raw + ((1024 - (kernels::ptx::smem_address(smem_raw) & 1023)) & 1023);
  auto* full = reinterpret_cast<std::uint64_t*>(smem + kStages * kStageBytes);  // [kStages]
  std::uint64_t* empty = full + kStages;                                        // [kStages]
  // [kStages][slot], one per cluster
  const int src_cta = static_cast<int>(blockIdx.x % static_cast<unsigned>(src_ctas));
  const std::uint8_t* cta_src = src + static_cast<std::size_t>(src_cta / kCluster) * kStages * kSlotBytes;
  const int tid = threadIdx.x;
  if (!kRing) {
    for (int i = tid; i < kSlotBytes / 4; i += blockDim.x) reinterpret_cast<std::uint32_t*>(smem)[i] = kTwoOnes;
    kernels::wgmma::fence_async_proxy();
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      kernels::tma::mbarrier_init(&full[s], 1);
      kernels::tma::mbarrier_init(&empty[s], 8 * kCluster);  // one arrival per consumer warp of the cluster
    }
    kernels::tma::fence_mbarrier_init();
  }
  if constexpr (kCluster > 1) {
    kernels::cluster_sync();  // no CTA multicasts into or arrives on another's barriers before they exist
  } else {
    __syncthreads();
  }

  if (tid < 128) {
    // ---- Producer: lane 0 of warp 0, one stage per k-tile, as the TMA kernel's. ----
    kernels::wgmma::setmaxnreg_dec<40>();
    if constexpr (kRing) {
      if (tid != 0) return;
      for (int i = 0; i < groups; ++i) {
        const int stage = i % kStages;
        if (i >= kStages) kernels::tma::mbarrier_wait(&empty[stage], ((i / kStages) & 1) ^ 1);
        std::uint8_t* base = smem + stage * kStageBytes;
        const std::uint8_t* from = cta_src + stage * kSlotBytes;
        kernels::tma::mbarrier_arrive_expect_tx(&full[stage], kStageBytes);
        const auto copy = [&](std::uint8_t* to, const std::uint8_t* at, int bytes) {  // in copies of at most kChunk bytes
          if constexpr (kCluster > 1) {  // this rank's half, into both CTAs
            const int half = bytes / 2, o = static_cast<int>(kernels::cluster_ctarank()) * half;
            kernels::tma::load_bulk_multicast(to + o, at + o, half, &full[stage], std::uint16_t{3});
          } else {
            for (int o = 0; o < bytes; o += kChunk) kernels::tma::load_bulk(to + o, at + o, min(kChunk, bytes - o), &full[stage]);
          }
        };
        copy(base, from, kBTileBytes);  // 16 KB copies: B as two halves, like the kernel's
        if (!kRs) copy(base + kBTileBytes, from + kBTileBytes, kATileBytes);
        copy(base + kStageBytes - kMetaTileBytes, from + kBTileBytes + kATileBytes, kMetaTileBytes);
      }
      // A cluster's CTA leaves once the other's consumers have made their last arrivals on its barriers
      // (k-tile i's stage is released when k-tile i + 1 starts; the last one never is).
      if constexpr (kCluster > 1)
        for (int i = max(0, groups - kStages); i < groups - 1; ++i) kernels::tma::mbarrier_wait(&empty[i % kStages], (i / kStages) & 1);
    }
    return;
  }

  // ---- Consumers: warpgroups 1 and 2, 64 compressed rows each. ----
  kernels::wgmma::setmaxnreg_inc<232>();
  const int ctid = tid - 128, group = ctid / 128, lane = tid % 32;
  float t[kN / 2], s[kN / 2];
#pragma unroll
  for (int f = 0; f < kN / 2; ++f) t[f] = s[f] = 0.0f;
  // RS: this k-tile's A words [k-step][4] and the next one's; a thread's 64 B of a k-tile's A part.
  std::uint32_t a_even[4][4], a_odd[4][4];
  const auto load_a = [&](std::uint32_t (&a)[4][4], int i) {
    const std::uint8_t* from = cta_src + (i % kStages) * kSlotBytes + kBTileBytes + ctid * 64;
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(a[ks][0]), "=r"(a[ks][1]), "=r"(a[ks][2]), "=r"(a[ks][3])
                   : "l"(from + ks * 16));
  };
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
#pragma unroll
    for (int w = 0; w < 4; ++w) a_even[ks][w] = a_odd[ks][w] = kTwoOnes;
  if (kLdg) load_a(a_even, 0);
  int stage = 0, prev_stage = 0;
  unsigned phase = 0;
  // k-tile i with A words `a_use` (loaded a k-tile ago), loading k-tile i + 1's into `a_next`.
  const auto k_tile = [&](int i, std::uint32_t (&a_use)[4][4], std::uint32_t (&a_next)[4][4]) {
    if (kRing) kernels::tma::mbarrier_wait(&full[stage], phase);
    const std::uint8_t* base = kRing ? smem + stage * kStageBytes : smem;
    kernels::wgmma::wait<0>();  // k-tile i - 1 is done: its stage and its A words are free
    if (kRing && i > 0 && lane == 0) {
      if constexpr (kCluster > 1) {
        for (unsigned cta = 0; cta < kCluster; ++cta) kernels::mbarrier_arrive_cluster(&empty[prev_stage], cta);
      } else {
        kernels::tma::mbarrier_arrive(&empty[prev_stage]);
      }
    }
    prev_stage = stage;
    if (kLdg && i + 1 < groups) load_a(a_next, i + 1);
    kernels::wgmma::fence_registers(t);
    const float c = (i & 1) ? 1.0f : -1.0f;
#pragma unroll
    for (int f = 0; f < kN / 2; ++f) s[f] = fmaf(c, t[f], s[f]);
    kernels::wgmma::fence();
    kernels::wgmma::fence_registers(t);
    const std::uint64_t desc_b = kernels::wgmma::sw128_descriptor(base);
    const std::uint64_t desc_a = kernels::wgmma::sw128_descriptor(base + kBTileBytes + group * 64 * 128);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const std::uint64_t b = kernels::wgmma::advance_descriptor(desc_b, (ks / 2) * (kN * 128) + (ks % 2) * 64);
      if constexpr (kRs) {
        kernels::wgmma::SparseMmaRs<kN, true>::run(t, a_use[ks], b, 0x44444444u);
      } else {
        kernels::wgmma::SparseMma<kN, true>::run(t, kernels::wgmma::advance_descriptor(desc_a, ks * 32), b, 0x44444444u);
      }
    }
    kernels::wgmma::commit();
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1u;
    }
  };
  for (int i = 0; i < groups; i += 2) {  // groups is even: the A words alternate between two named sets
    k_tile(i, a_even, a_odd);
    k_tile(i + 1, a_odd, a_even);
  }
  kernels::wgmma::wait<0>();
  kernels::wgmma::fence_registers(t);
  float s_expected = 0.0f;
  for (int i = 0; i < groups; ++i) s_expected = fmaf((i & 1) ? 1.0f : -1.0f, 64.0f * i, s_expected);
  if constexpr (kStore) {  // [16 chunks of T then S][256 consumer threads] uint4: coalesced 16-byte stores, as the staged epilogue's
    auto* to = reinterpret_cast<uint4*>(out) + static_cast<std::size_t>(src_cta) * 16 * 256 + ctid;
    const auto pack = [](float lo, float hi) {
      const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<const std::uint32_t*>(&v);
    };
#pragma unroll
    for (int f = 0; f < kN / 2; f += 8) {
      uint4 tv, sv;
      tv.x = pack(t[f], t[f + 1]);
      tv.y = pack(t[f + 2], t[f + 3]);
      tv.z = pack(t[f + 4], t[f + 5]);
      tv.w = pack(t[f + 6], t[f + 7]);
      sv.x = pack(s[f], s[f + 1]);
      sv.y = pack(s[f + 2], s[f + 3]);
      sv.z = pack(s[f + 4], s[f + 5]);
      sv.w = pack(s[f + 6], s[f + 7]);
      to[(f / 8) * 256] = tv;
      to[(kN / 16 + f / 8) * 256] = sv;
    }
  }
  int wrong = 0;
#pragma unroll
  for (int f = 0; f < kN / 2; ++f) wrong += (t[f] != 64.0f * groups) + (s[f] != s_expected);
  bad[static_cast<std::size_t>(blockIdx.x) * 256 + ctid] = wrong;
#else
  if (threadIdx.x == 0 && blockIdx.x == 0) __trap();  // launched only on sm_90 devices
  (void)groups;
  (void)src;
  (void)src_ctas;
  (void)out;
  (void)bad;
#endif
}

struct RingCase {
  const char* name;
  void (*kernel)(int, const std::uint8_t*, int, std::uint32_t*, int*);
  int smem_bytes;
  int copied_bytes;  // per k-tile, into shared memory
  int sm_divisor = 1;  // one CTA on each of sms / sm_divisor SMs
  int cluster = 1;     // CTAs per cluster (the multicast ring)
  int k_tiles = kGroups;  // per CTA; fewer: waves() of CTAs
  // CTAs per SM: the tile cases run about the long loop's k-tiles per SM (2016 for 112) in waves.
  int waves() const { return k_tiles < kGroups ? kTileWaveKTiles / k_tiles : 1; }
};

}  // namespace

int run_wgmma_ring_peaks(const PeakBenchOptions& o, int sms, const std::string& device_label, const std::string& run_commit,
                         const std::string& date) {
  const RingCase cases[] = {
      {"ss_fixed", &wgmma_sp_ring_peak<false, false, false>, RingLayout<false>::kSmemBytes, 0},
      {"ss_ring", &wgmma_sp_ring_peak<true, false, false>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes},
      {"ss_ring_4k", &wgmma_sp_ring_peak<true, false, false, 4096>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes},
      {"ss_ring_1k", &wgmma_sp_ring_peak<true, false, false, 1024>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes},
      {"ss_ring_sm/2", &wgmma_sp_ring_peak<true, false, false>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes, 2},
      {"ss_ring_sm/4", &wgmma_sp_ring_peak<true, false, false>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes, 4},
      {"ss_ring_mc2", &wgmma_sp_ring_peak<true, false, false, 16384, 2>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes,
       1, 2},
      {"ss_tile32", &wgmma_sp_ring_peak<true, false, false, 16384, 1, true>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes,
       1, 1, 32},
      {"ss_tile32_nostore", &wgmma_sp_ring_peak<true, false, false>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes, 1, 1, 32},
      {"ss_tile48", &wgmma_sp_ring_peak<true, false, false, 16384, 1, true>, RingLayout<false>::kSmemBytes, RingLayout<false>::kStageBytes,
       1, 1, 48},
      {"ss_tile112", &wgmma_sp_ring_peak<true, false, false, 16384, 1, true>, RingLayout<false>::kSmemBytes,
       RingLayout<false>::kStageBytes, 1, 1, 112},
      {"rs_fixed", &wgmma_sp_ring_peak<false, true, false>, RingLayout<true>::kSmemBytes, 0},
      {"rs_ring", &wgmma_sp_ring_peak<true, true, false>, RingLayout<true>::kSmemBytes, RingLayout<true>::kStageBytes},
      {"rs_ring_ldg", &wgmma_sp_ring_peak<true, true, true>, RingLayout<true>::kSmemBytes, RingLayout<true>::kStageBytes},
  };
  const std::size_t src_bytes = static_cast<std::size_t>(sms) * kStages * kSlotBytes;
  std::uint8_t* d_src = nullptr;
  int* d_bad = nullptr;
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_src, src_bytes));
  const std::unique_ptr<std::uint8_t, cudaError_t (*)(void*)> src_guard(d_src, &cudaFree);
  const std::vector<std::uint32_t> ones(src_bytes / 4, kTwoOnes);
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(d_src, ones.data(), src_bytes, cudaMemcpyHostToDevice));
  // The bad flags of the largest grid: the tile-length cases' waves.
  int max_ctas = sms;
  for (const RingCase& c : cases) max_ctas = std::max(max_ctas, sms * c.waves());
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_bad, static_cast<std::size_t>(max_ctas) * 256 * sizeof(int)));
  const std::unique_ptr<int, cudaError_t (*)(void*)> bad_guard(d_bad, &cudaFree);
  std::uint32_t* d_out = nullptr;  // the tile cases' stores: [sms][16][256 threads] uint4
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_out, static_cast<std::size_t>(sms) * 16 * 256 * 16));
  const std::unique_ptr<std::uint32_t, cudaError_t (*)(void*)> out_guard(d_out, &cudaFree);
  std::FILE* f = nullptr;
  if (!o.out_path.empty()) {
    f = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(f, "cannot open --out file '", o.out_path, "' for appending");
  }
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_guard(f, &std::fclose);
  std::printf("wgmma.mma_async.sp.m64n%dk32 bf16 with the running-total update, %d SMs x (producer warp + 2 consumer "
              "warpgroups), %d k-tiles each (the tile cases: %d per SM in waves of shorter CTAs), %d-stage ring\n", kN, sms, kGroups,
              kTileWaveKTiles, kStages);
  std::printf("  case         | CTAs | copied/k-tile |      us |  TFLOP/s dense-eq | of the SMs' 1979 | copies GB/s per SM\n");
  Timer timer;
  for (const RingCase& c : cases) {
    SAMOYEDS_CUDA_CHECK(cudaFuncSetAttribute(c.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, c.smem_bytes));
    cudaLaunchConfig_t config{};
    config.blockDim = dim3(384);
    config.dynamicSmemBytes = static_cast<std::size_t>(c.smem_bytes);
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(c.cluster);
    attribute.val.clusterDim.y = attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    int ctas = sms / c.sm_divisor / c.cluster * c.cluster;
    if (c.cluster > 1) {  // one wave: as many clusters as the device holds at once
      config.gridDim = dim3(static_cast<unsigned>(ctas));
      int max_clusters = 0;
      SAMOYEDS_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&max_clusters, c.kernel, &config));
      ctas = std::min(ctas, max_clusters * c.cluster);
    }
    const int src_ctas = ctas;
    ctas *= c.waves();
    config.gridDim = dim3(static_cast<unsigned>(ctas));
    auto launch = [&] {
      SAMOYEDS_CUDA_CHECK(
          cudaLaunchKernelEx(&config, c.kernel, c.k_tiles, static_cast<const std::uint8_t*>(d_src), src_ctas, d_out, d_bad));
      SAMOYEDS_CHECK_LAUNCH("wgmma_sp_ring_peak");
    };
    int wrong = 0;
    const std::int64_t bad = first_nonzero_flag(launch, d_bad, static_cast<std::size_t>(ctas) * 256, &wrong);
    if (bad >= 0) {
      std::printf("INVALID: %s, consumer thread %lld: %d accumulators wrong (-1: not written); no rate reported\n", c.name,
                  static_cast<long long>(bad), wrong);
      return 1;
    }
    const Timing t = timer.time(launch, o.reps);
    const double wgmmas = static_cast<double>(ctas) * 2 * c.k_tiles * 4;
    const double tflops = wgmmas * 2.0 * 64 * kN * 32 / (t.median_us * 1e-6) / 1e12;
    const double copy_gbs = static_cast<double>(c.copied_bytes) * c.k_tiles * ctas / src_ctas / (t.median_us * 1e-6) / 1e9;
    // The share of the peak of the SMs the case runs on (src_ctas: one CTA per SM at a time).
    std::printf("  %-12s | %4d | %11d B | %7.1f | %17.1f | %14.1f %% | %6.1f\n", c.name, ctas, c.copied_bytes, t.median_us, tflops,
                100.0 * tflops / (1978.9 * src_ctas / sms), copy_gbs);
    if (f) {
      Record r = run_record("peak", device_label, run_commit, date);
      r.add("dtype", "bf16").add("kernel", std::string("wgmma_sp_m64n128k32_update_") + c.name).add("time_us", t.median_us)
          .add("p10_us", t.p10_us).add("p90_us", t.p90_us).add("tflops", tflops)
          .add("copied_bytes_per_k_tile", static_cast<std::int64_t>(c.copied_bytes)).add("ctas", static_cast<std::int64_t>(ctas))
          .add("cluster", static_cast<std::int64_t>(c.cluster)).add("k_tiles_per_cta", static_cast<std::int64_t>(c.k_tiles))
          .add("reps", static_cast<std::int64_t>(o.reps));
      std::fprintf(f, "%s\n", r.json().c_str());
    }
  }
  std::printf("  checked: every accumulator of every case exact\n");
  return 0;
}

}  // namespace samoyeds::bench
