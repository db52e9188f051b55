// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench kernel`: our SSMM against cuBLAS dense on the same routed tokens (with and without
// the gather copy dense needs) and cuSPARSELt 2:4 on Ŵ (when the build found it), after validating
// every output against cuBLAS on the effective weight Ŵ.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "samoyeds/format.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::bench {

struct KernelBenchOptions {
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;  // (M, K)
  std::vector<std::int64_t> tokens;                           // L per expert
  SparsityPattern pattern;
  DType dtype = DType::bf16;
  gpu::SsmmPath path = gpu::SsmmPath::automatic;
  bool split_k = true;  // false: no workspace, so the kernel never splits K (for comparisons)
  int reps = 20;
  std::uint64_t seed = 1;
  std::string out_path;  // JSON Lines appended here ("" = none)
};

// Returns 0 when every case validated, 1 otherwise (timings of failed cases are not reported).
int run_kernel_bench(const KernelBenchOptions& options);

}  // namespace samoyeds::bench
