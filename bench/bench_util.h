// SPDX-License-Identifier: Apache-2.0
// Shared benchmark plumbing: median timing with CUDA events and an L2 flush before every timed run,
// JSON Lines records, and run identification (device, commit, date).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace samoyeds::bench {

struct Timing {
  double median_us = 0, p10_us = 0, p90_us = 0;
};

class Timer {
 public:
  Timer();
  ~Timer();
  // Runs `work` `warmup` times, then `reps` times each after an L2 flush (not timed; by reading, or by
  // writing with SAMOYEDS_BENCH_FLUSH=write: bench_util.cu), timing the
  // work alone with events on `stream` (where `work` must queue); returns the median and the
  // 10th/90th percentiles.
  Timing time(const std::function<void()>& work, int reps, int warmup = 3, cudaStream_t stream = nullptr);

 private:
  cudaEvent_t start_, stop_;
  void* flush_ = nullptr;
  std::size_t flush_bytes_ = 0;
};

// The peak benchmarks' check: sets `count` ints at `d_flags` to -1, runs `launch` once (each thread of
// it writes 0, or how many values it found wrong), and returns the index of the first flag that is not
// 0 (its value in *flag), or -1 when every thread wrote 0.
std::int64_t first_nonzero_flag(const std::function<void()>& launch, int* d_flags, std::size_t count, int* flag);

std::string device_name();  // "NVIDIA H100 80GB HBM3"
std::string device_tag();   // "h100" / "h200" / lower-case name, for file names
std::string commit();       // SAMOYEDS_COMMIT from the environment, else the configure-time git hash
std::string today();        // yyyy-mm-dd (UTC)

// One JSON Lines record: ordered key/value pairs, numbers or strings.
class Record {
 public:
  Record& add(const std::string& key, const std::string& value);
  Record& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  Record& add(const std::string& key, double value);
  Record& add(const std::string& key, std::int64_t value);
  std::string json() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // value already JSON-encoded
};

// The first fields of every record: bench, device, commit, date, and "env" with the SAMOYEDS_SSMM_*
// tuning knobs set in the environment (sorted, space-separated; absent when none is set), so that the
// runs of an A/B stay apart in one file.
Record run_record(const std::string& bench, const std::string& device, const std::string& commit, const std::string& date);

double geomean(const std::vector<double>& values);

// Deterministic pseudo-normal data N(0, scale^2), bf16 (else fp16), written on the device (a sum of
// four hashed uniforms): random, never zero-filled, and fast for the largest shapes.
void fill_normal(void* out, std::int64_t n, std::uint64_t seed, float scale, bool bf16, cudaStream_t stream = nullptr);

// Device memory for one benchmark case (at least 256 bytes, so empty cases still get a valid pointer).
struct Buffer {
  void* ptr = nullptr;
  explicit Buffer(std::size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

}  // namespace samoyeds::bench
