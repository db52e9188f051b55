// SPDX-License-Identifier: Apache-2.0
// Hugging Face checkpoints: a directory with config.json and safetensors weights, either one file or
// shards listed by model.safetensors.index.json. Every shard is mapped and validated when opened;
// the index must agree with the shards exactly. Tensors of the checkpoint format: docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "samoyeds/matrix.h"
#include "samoyeds/model_config.h"
#include "samoyeds/safetensors.h"

namespace samoyeds {

// A BF16, F16 or F32 tensor of 2 dimensions (or 1, read as [1, n]) copied into a Matrix of that
// dtype; anything else throws naming the tensor and `where` (a file or directory).
Matrix read_matrix(const SafetensorsFile& file, const TensorInfo& info, const std::string& where);

class Checkpoint {
 public:
  // Opens `dir`: model.safetensors.index.json with its shards when present, else model.safetensors,
  // else the single *.safetensors file of the directory. Throws when the directory has none of these,
  // when the index names files outside the directory, missing shards or tensors the shards do not
  // hold, or when a tensor appears in two shards or in a shard but not in the index.
  static Checkpoint open(const std::string& dir);
  // The given safetensors files of `dir` (plain file names), with the same cross-checks minus the index.
  static Checkpoint open_files(const std::string& dir, const std::vector<std::string>& file_names);

  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& shard_names() const { return shard_names_; }  // file names (open: sorted)
  const SafetensorsFile& shard(std::size_t i) const { return shards_.at(i); }
  std::size_t num_shards() const { return shards_.size(); }

  bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }
  std::vector<std::string> tensor_names() const;                // all tensors, sorted
  const SafetensorsFile& file_of(std::string_view name) const;  // throws naming tensor and directory
  const TensorInfo& info(std::string_view name) const;
  Matrix matrix(std::string_view name) const;  // read_matrix of the tensor

 private:
  static Checkpoint load(const std::string& dir, std::vector<std::string> shard_names,
                         const std::map<std::string, std::string>& weight_map);
  std::string dir_;
  std::vector<std::string> shard_names_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t, std::less<>> where_;  // tensor name -> shard
};

// Writes a Hugging Face-style checkpoint of `config` (any family; OpenMoE's experts fused input-major
// as ColossalAI stores them) with seeded random
// weights — linear weights normal with std 1/sqrt(fan_in), norm weights normal(1, 0.1), biases
// normal(0, 0.1) — so that convert, moe and run can be tried and tested without downloads:
// config.json (hf_config_json) and safetensors shards of at most `max_shard_bytes` each (a single
// larger tensor gets a shard of its own) with
// model.safetensors.index.json (a single model.safetensors when everything fits). Tensors are made
// one at a time and a shard is written as soon as it is full. Atomic (DIR.tmp.<pid>, renamed); DIR
// must not exist. Rows are generated in parallel: one real-size Mixtral-8x7B layer (1.4 x 10^9
// weights) takes about half a minute on 2 cores; whole real-size models take correspondingly long.
void write_synthetic_checkpoint(const ModelConfig& config, const std::string& dir, DType dtype, std::uint64_t seed,
                                std::uint64_t max_shard_bytes = 2'000'000'000,
                                const std::function<void(const std::string&)>& progress = {});

}  // namespace samoyeds
