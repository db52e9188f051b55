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
  // Runs `work` `warmup` times, then `reps` times each after an L2 flush (not timed), timing the
  // work alone with events; returns the median and the 10th/90th percentiles.
  Timing time(const std::function<void()>& work, int reps, int warmup = 3);

 private:
  cudaEvent_t start_, stop_;
  void* flush_ = nullptr;
  std::size_t flush_bytes_ = 0;
};

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

double geomean(const std::vector<double>& values);

}  // namespace samoyeds::bench
