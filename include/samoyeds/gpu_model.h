// SPDX-License-Identifier: Apache-2.0
// The whole model on the GPU: embedding, decoder layers (RMSNorm, attention with RoPE and a KV cache,
// the MoE layer or a dense MLP, each family's residual details), final norm, LM head and greedy
// sampling. Same meaning as the CPU reference (reference::model_forward; docs/model.md), with the
// experts in the Samoyeds format (gpu::MoeLayer), or dense as Ŵ through cuBLAS for the baseline.
//
// Sequences advance together: B sequences, each step appends the same number n of tokens to every
// one (token ids [B, n], sequence-major). Prefill is one step with n = prompt length (run in passes of
// at most ModelOptions::max_step_tokens tokens); decode appends one token per sequence per step and,
// on the sparse path, replays one CUDA graph per step with no host work in between. The dense path
// reads the expert sizes back once per MoE layer (cuBLAS needs them on the host), so it runs eagerly.
// No CUDA types here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "samoyeds/decoder.h"
#include "samoyeds/matrix.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::gpu {

struct ModelOptions {
  bool dense = false;                   // experts as dense Ŵ with cuBLAS (the baseline), not packed
  SsmmPath path = SsmmPath::automatic;  // SSMM kernels of the sparse path
  std::int64_t max_step_tokens = 8192;  // tokens per forward pass; longer steps run in several passes
};

class Model {
 public:
  // Uploads host weights (synthetic_model or ConvertedCheckpoint::model; check_model runs first).
  // With options.dense the experts are unpacked to Ŵ on the device and run through cuBLAS.
  Model(const ModelConfig& config, const ModelWeights& weights, const ModelOptions& options = {});
  // Seeded random weights made on the device, for real sizes in seconds: experts by
  // MoeLayer::synthetic (random packed weights; the dense path unpacks the same ones to Ŵ), every
  // dense matrix normal with std 1/sqrt(fan_in) (embedding std 1), norms normal(1, 0.1). progress(done,
  // total) is called after each layer.
  static Model synthetic(const ModelConfig& config, int num_layers, DType dtype, const SparsityPattern& pattern,
                         std::uint64_t seed, const ModelOptions& options = {},
                         const std::function<void(int, int)>& progress = {});
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const ModelConfig& config() const;
  int num_layers() const;
  bool dense() const;
  DType dtype() const;
  std::size_t weight_bytes() const;  // device bytes of every weight

  // Device bytes that start(B, capacity) allocates: the KV caches, and the workspace of one pass.
  std::size_t kv_cache_bytes(int num_sequences, std::int64_t capacity) const;
  std::size_t workspace_bytes(int num_sequences, std::int64_t capacity) const;

  // Allocates KV caches for B sequences of `capacity` positions and the workspace; every sequence
  // starts empty. A later start() replaces both.
  void start(int num_sequences, std::int64_t capacity);
  void clear();  // every sequence empty again (the allocation and the decode graph stay)
  void stop();   // frees the KV caches and the workspace (start() again before the next step)
  int num_sequences() const;
  std::int64_t capacity() const;
  std::int64_t length() const;  // positions cached per sequence

  // Appends n = token_ids.size() / B tokens to every sequence and returns fp32 logits (host): those
  // of each sequence's last new token [B, vocab], or of every new token [B * n, vocab] with all_logits
  // (one pass only: B * n <= max_step_tokens).
  Matrix forward(std::span<const std::int32_t> token_ids, bool all_logits = false);
  // The same without logits on the host: returns each sequence's greedy next token [B].
  std::vector<std::int32_t> prefill(std::span<const std::int32_t> token_ids);
  // `steps` decode steps: step 0 appends tokens[b] to sequence b; each step picks every sequence's next
  // token greedily and the next step appends it. Returns the picked tokens [steps, B]. With use_graph
  // (sparse path only) every step replays one captured CUDA graph.
  std::vector<std::int32_t> decode(std::span<const std::int32_t> tokens, int steps, bool use_graph = true);
  void synchronize() const;

  // Runs only the first n layers from now on (1 <= n <= num_layers(); the KV caches of the others are
  // left alone): quick checks of a model too deep for its differences to stay small, e.g. the sparse
  // path against its dense twin on one layer, where both route identically.
  void set_active_layers(int n);
  int active_layers() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Free and total device memory now (cudaMemGetInfo), for planning and peak reports.
void device_memory(std::size_t& free_bytes, std::size_t& total_bytes);

}  // namespace samoyeds::gpu
