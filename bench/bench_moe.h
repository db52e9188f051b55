// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench moe`: the whole sparse MoE layer (routing included) against the dense cuBLAS layer
// with the same routing and combine, after validating the sparse output against the dense layer run
// on the effective weights Ŵ.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "samoyeds/format.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::bench {

struct MoeBenchOptions {
  std::vector<std::string> models;   // registry names
  std::vector<std::int64_t> tokens;  // T per forward
  SparsityPattern pattern;
  DType dtype = DType::bf16;
  gpu::SsmmPath path = gpu::SsmmPath::automatic;
  bool graph = true;  // time the sparse layer replayed from a CUDA graph (it needs no host sync)
  int reps = 20;
  std::uint64_t seed = 1;
  std::string out_path;  // JSON Lines appended here ("" = none)
};

// Returns 0 when every case validated, 1 otherwise (timings of failed cases are not reported).
int run_moe_bench(const MoeBenchOptions& options);

}  // namespace samoyeds::bench
