// SPDX-License-Identifier: Apache-2.0
// `samoyeds convert`: a Hugging Face MoE checkpoint to the Samoyeds layout. Every routed and shared
// expert matrix is pruned and packed; every other tensor is copied unchanged. The output layout and
// its rules: docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "samoyeds/checkpoint.h"
#include "samoyeds/decoder.h"
#include "samoyeds/format.h"
#include "samoyeds/hf_names.h"
#include "samoyeds/model_config.h"
#include "samoyeds/moe.h"

namespace samoyeds {

struct ConvertOptions {
  std::string in_dir;   // config.json + safetensors (one file, or shards with their index)
  std::string out_dir;  // created; must not exist unless `overwrite`; never the input, inside it or around it
  SparsityPattern pattern = SparsityPattern::parse("1:2:128");
  PruningPolicy policy = PruningPolicy::magnitude;
  // PruningPolicy::activation: a safetensors file with, for each expert matrix NAME (its tensor name
  // without ".weight"), the tensor "NAME.input_norm" [cols] or [1, cols] F32: ||x_col||_2 of the
  // inputs that matrix sees on calibration data.
  std::string calibration_path;
  bool overwrite = false;  // replace out_dir when it is an earlier conversion (has samoyeds.json) or empty
  std::function<void(const std::string&)> progress;  // one line per step; may be empty
};

struct ConvertedMatrix {
  std::string name;  // tensor name without ".weight"
  std::int64_t rows = 0, cols = 0;
  double relative_error = 0.0;  // ||Ŵ - W||_F / ||W||_F
};

struct ConvertReport {
  std::string model;  // display name of the config
  std::vector<ConvertedMatrix> matrices;
  std::int64_t dense_expert_bytes = 0;   // the expert matrices as stored in the checkpoint
  std::int64_t packed_expert_bytes = 0;  // values + metadata + row-select indices
  std::int64_t copied_tensors = 0;
  double mean_relative_error() const;
  double max_relative_error() const;
};

// Converts, streaming one matrix at a time (at most one MoE layer's packed experts are held). Atomic:
// the output is written to OUT.tmp.<pid> and renamed at the end; on any error nothing is left behind
// and samoyeds::Error says what went wrong.
ConvertReport convert_checkpoint(const ConvertOptions& options);

// The packed file of MoE layer `layer` in a converted directory: "experts-layer-LLLLL.safetensors".
std::string expert_file_name(int layer);

// A directory written by convert_checkpoint: its config, pattern, the copied tensors, and each MoE
// layer's weights ready for reference::moe_layer or the GPU layer.
class ConvertedCheckpoint {
 public:
  // Reads samoyeds.json and config.json and opens the copied tensors; throws naming what is missing.
  static ConvertedCheckpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const SparsityPattern& pattern() const { return pattern_; }
  const Checkpoint& dense() const { return dense_; }  // every tensor that was copied, by its original name

  // Router, routed experts, shared experts and shared gate of MoE layer `layer`, checked against the
  // config (check_moe_weights) and the manifest's pattern.
  PackedMoeWeights moe_layer(int layer) const;

  // The whole model, or its first `num_layers` layers (0: all), for reference::model_forward or the
  // GPU runner; check_model passes on the result.
  ModelWeights model(int num_layers = 0) const;

 private:
  DenseExpert dense_mlp(const MlpTensorNames& names) const;  // a dense layer's or OpenMoE's extra MLP
  std::string dir_;
  ModelConfig config_;
  SparsityPattern pattern_;
  Checkpoint dense_;
  std::vector<std::string> expert_files_;
};

}  // namespace samoyeds
