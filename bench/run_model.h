// SPDX-License-Identifier: Apache-2.0
// The GPU side of `samoyeds run` and `samoyeds maxbatch` (bench/run_model.cu): whole-model prefill and
// greedy decode with gpu::Model, the dense baseline on the same weights, the check that the two agree
// before any timing is printed, peak memory, the largest batch that fits, JSON Lines records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "samoyeds/format.h"
#include "samoyeds/model_config.h"

namespace samoyeds::bench {

struct ModelRunOptions {
  ModelConfig config;               // of the synthetic model, or the checkpoint's
  std::string checkpoint;           // converted checkpoint directory; empty: synthetic weights
  int layers = 0;                   // first N layers; 0: all
  std::vector<std::int64_t> batches = {1};
  std::int64_t prompt_len = 128, gen_len = 32;
  bool dense = false;               // run the dense baseline only
  bool compare = false;             // run ours and the dense baseline side by side
  bool graph = true;                // sparse decode from CUDA graphs
  SparsityPattern pattern;          // synthetic experts
  std::uint64_t seed = 1;
  std::string out_path;             // JSON Lines appended here when not empty
  double gpu_memory_gb = 0;         // > 0: run as if the GPU had this much memory (10^9 bytes)
};

int run_model(const ModelRunOptions& options);  // samoyeds run (GPU)
int max_batch(const ModelRunOptions& options);  // samoyeds maxbatch

}  // namespace samoyeds::bench
