// SPDX-License-Identifier: Apache-2.0
#include "bench/bench_util.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <unistd.h>  // environ

#include "io/json.h"
#include "kernels/cuda_check.h"

#ifndef SAMOYEDS_GIT_COMMIT
#define SAMOYEDS_GIT_COMMIT "unknown"
#endif

namespace samoyeds::bench {

namespace {
__global__ void fill_normal_kernel(std::uint16_t* out, std::int64_t n, std::uint64_t seed, float scale, bool bf16) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int k = 0; k < 4; ++k) {
      std::uint64_t h = (static_cast<std::uint64_t>(i) * 4 + k) ^ (seed * 0x9E3779B97F4A7C15ull);
      h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
      sum += static_cast<float>(h >> 40) * (1.0f / 16777216.0f) - 0.5f;
    }
    const float v = sum * 1.7320508f * scale;  // 4 uniforms on [-0.5, 0.5]: variance 1/3
    out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
  }
}

// Reads the whole flush buffer, so L2 ends up holding clean lines of it. The store never happens (the
// buffer holds zeros) but keeps the loads from being dropped.
__global__ void read_flush_kernel(const uint4* buffer, std::size_t n, unsigned* sink) {
  unsigned x = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcg(buffer + i);
    x |= v.x & v.y & v.z & v.w;
  }
  if (x == 0xFFFFFFFFu) *sink = x;
}

// How L2 is flushed before each timed run. By default by reading a buffer twice its size, which leaves
// it holding clean lines, as an inference step finds it (the previous layer's weights). Writing the
// buffer instead (SAMOYEDS_BENCH_FLUSH=write, the protocol until 2026-12-02) leaves L2 full of dirty
// lines that the timed work's misses must first write back: ~8 MB of extra DRAM writes during a 21 MB
// product, which slowed cuBLAS more than the packed kernels (docs/kernels/ssmm.md v18).
bool read_flush() {
  static const bool on = [] {
    const char* v = std::getenv("SAMOYEDS_BENCH_FLUSH");
    return !(v && std::strcmp(v, "write") == 0);
  }();
  return on;
}
}  // namespace

void fill_normal(void* out, std::int64_t n, std::uint64_t seed, float scale, bool bf16, cudaStream_t stream) {
  fill_normal_kernel<<<1024, 256, 0, stream>>>(static_cast<std::uint16_t*>(out), n, seed, scale, bf16);
  SAMOYEDS_CHECK_LAUNCH("fill_normal_kernel");
}

Buffer::Buffer(std::size_t bytes) { SAMOYEDS_CUDA_CHECK(cudaMalloc(&ptr, std::max<std::size_t>(bytes, 256))); }
Buffer::~Buffer() { cudaFree(ptr); }

Timer::Timer() {
  SAMOYEDS_CUDA_CHECK(cudaEventCreate(&start_));
  SAMOYEDS_CUDA_CHECK(cudaEventCreate(&stop_));
  int device = 0, l2_bytes = 0;
  SAMOYEDS_CUDA_CHECK(cudaGetDevice(&device));
  SAMOYEDS_CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
  flush_bytes_ = static_cast<std::size_t>(std::max(l2_bytes, 1 << 20)) * 2;  // twice the L2: nothing survives
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
  SAMOYEDS_CUDA_CHECK(cudaMemset(flush_, 0, flush_bytes_));
}

Timer::~Timer() {
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
  cudaFree(flush_);
}

std::int64_t first_nonzero_flag(const std::function<void()>& launch, int* d_flags, std::size_t count, int* flag) {
  SAMOYEDS_CUDA_CHECK(cudaMemset(d_flags, 0xFF, count * sizeof(int)));  // -1 until written
  launch();
  SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<int> flags(count);
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(flags.data(), d_flags, count * sizeof(int), cudaMemcpyDeviceToHost));
  for (std::size_t i = 0; i < count; ++i) {
    if (flags[i] != 0) {
      *flag = flags[i];
      return static_cast<std::int64_t>(i);
    }
  }
  return -1;
}

Timing Timer::time(const std::function<void()>& work, int reps, int warmup, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) work();
  SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    if (read_flush()) {
      read_flush_kernel<<<1024, 512, 0, stream>>>(static_cast<const uint4*>(flush_), flush_bytes_ / 16,
                                                  static_cast<unsigned*>(flush_));
      SAMOYEDS_CHECK_LAUNCH("read_flush_kernel");
    } else {
      SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xFF, flush_bytes_, stream));
    }
    SAMOYEDS_CUDA_CHECK(cudaEventRecord(start_, stream));
    work();
    SAMOYEDS_CUDA_CHECK(cudaEventRecord(stop_, stream));
    SAMOYEDS_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    SAMOYEDS_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    us.push_back(ms * 1000.0);
  }
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[static_cast<std::size_t>(q * static_cast<double>(us.size() - 1) + 0.5)]; };
  return Timing{at(0.5), at(0.1), at(0.9)};
}

std::string device_name() {
  int device = 0;
  cudaDeviceProp prop{};
  SAMOYEDS_CUDA_CHECK(cudaGetDevice(&device));
  SAMOYEDS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

std::string device_tag() {
  std::string name = device_name();
  for (const char* known : {"H200", "H100", "A100", "L40S", "L4", "B200"})
    if (name.find(known) != std::string::npos) {
      std::string tag = known;
      for (char& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return tag;
    }
  std::string tag;
  for (char c : name) tag += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '-';
  return tag;
}

std::string commit() {
  if (const char* env = std::getenv("SAMOYEDS_COMMIT"); env && *env) return env;
  return SAMOYEDS_GIT_COMMIT;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  char text[16];
  std::strftime(text, sizeof text, "%Y-%m-%d", std::gmtime(&now));
  return text;
}

Record& Record::add(const std::string& key, const std::string& value) {
  fields_.emplace_back(key, json::dump(json::Value(value)));
  return *this;
}
Record& Record::add(const std::string& key, double value) {
  fields_.emplace_back(key, json::dump(json::Value(value)));
  return *this;
}
Record& Record::add(const std::string& key, std::int64_t value) {
  fields_.emplace_back(key, json::dump(json::Value(value)));
  return *this;
}

Record run_record(const std::string& bench, const std::string& device, const std::string& commit, const std::string& date) {
  Record r;
  r.add("bench", bench).add("device", device).add("commit", commit).add("date", date);
  r.add("l2_flush", read_flush() ? "read" : "write");
  std::vector<std::string> knobs;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "SAMOYEDS_SSMM_", 14) == 0) knobs.emplace_back(*e);
  std::sort(knobs.begin(), knobs.end());
  std::string env;
  for (const std::string& k : knobs) env += (env.empty() ? "" : " ") + k;
  if (!env.empty()) r.add("env", env);
  return r;
}

std::string Record::json() const {
  std::string out = "{";
  for (std::size_t i = 0; i < fields_.size(); ++i)
    out += (i ? "," : "") + json::dump(json::Value(fields_[i].first)) + ":" + fields_[i].second;
  return out + "}";
}

double geomean(const std::vector<double>& values) {
  if (values.empty()) return 0.0;
  double log_sum = 0;
  for (double v : values) log_sum += std::log(v);
  return std::exp(log_sum / static_cast<double>(values.size()));
}

}  // namespace samoyeds::bench
