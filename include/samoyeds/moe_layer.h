// SPDX-License-Identifier: Apache-2.0
// The MoE layer on the GPU, for every model family of the registry:
//   router GEMM -> softmax/top-k (family variant, OpenMoE capacity) -> per-expert token lists on the
//   device -> gate/up SSMM of all experts in one launch (gather in the kernel, SiLU·mul epilogue)
//   -> down SSMM of all experts in one launch (routing weight in the epilogue) -> shared experts
//   (DeepSeek: all tokens; Qwen2-MoE: sigmoid-gated) -> deterministic combine -> Y[T, H].
// MoeLayer runs on packed (Samoyeds-format) weights with no host synchronisation: for a fixed T the
// whole forward can be captured into a CUDA graph and replayed. DenseMoeLayer is the side-by-side
// baseline: the same routing and combine with cuBLAS expert products on dense weights; it reads the
// expert sizes back to the host once per forward (so it cannot be captured).
// No CUDA types here: device pointers are plain pointers, a stream is a `void*` (cudaStream_t).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "samoyeds/moe.h"
#include "samoyeds/routing.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::gpu {

class MoeLayer {
 public:
  // Uploads the layer (checks the weights against `config`). `path` selects the SSMM kernels.
  MoeLayer(const ModelConfig& config, const PackedMoeWeights& weights, SsmmPath path = SsmmPath::automatic);
  // Seeded random packed experts made on the device (random 2:4 positions and row selections, normal
  // values with std 2/sqrt(fan_in)) and a router drawn like synthetic_moe_weights': a real-size layer
  // in milliseconds, for timing and memory runs. These are not the pruning of dense weights.
  static MoeLayer synthetic(const ModelConfig& config, DType dtype, const SparsityPattern& pattern, std::uint64_t seed,
                            SsmmPath path = SsmmPath::automatic);
  ~MoeLayer();
  MoeLayer(MoeLayer&&) noexcept;
  MoeLayer& operator=(MoeLayer&&) noexcept;

  const ModelConfig& config() const;
  DType dtype() const;
  std::size_t weight_bytes() const;  // device bytes of the packed experts (router excluded)

  // Device workspace that forward() needs for exactly T tokens (256-byte granularity). Not monotonic
  // in T (the split-K partials depend on the plan for T): a workspace for calls of up to T tokens needs
  // the largest value over 1..T.
  std::size_t workspace_bytes(std::int64_t num_tokens) const;
  // Makes the layer's own workspace hold a call of T tokens, so forward() with T tokens does not
  // allocate (call it before capturing a graph of that size; other sizes may need more, see above).
  void reserve(std::int64_t num_tokens);
  // Y[T, H] = MoE(X[T, H]) on `stream`. x, y: device arrays of the layer dtype, 16-byte aligned.
  // Uses the layer's own workspace, grown (allocating) when T exceeds the reserved size.
  void forward(const void* x, void* y, std::int64_t num_tokens, void* stream = nullptr);
  // The same with caller-provided workspace (device, 256-byte aligned, >= workspace_bytes(T) bytes).
  void forward(const void* x, void* y, std::int64_t num_tokens, void* workspace, std::size_t workspace_bytes,
               void* stream);
  // The routing of the last forward, copied to the host (synchronises that stream); its workspace
  // must still be alive. For tests and tools.
  Routing last_routing() const;
  // Host copy of the weights (synchronises): checks of synthetic layers, dense twins on the host.
  PackedMoeWeights download() const;

 private:
  struct Impl;
  explicit MoeLayer(std::unique_ptr<Impl> impl);
  friend class DenseMoeLayer;
  std::unique_ptr<Impl> impl_;
};

class DenseMoeLayer {
 public:
  // Dense expert weights (e.g. the effective weights Ŵ = unpack_moe_weights(packed) for a like-for-
  // like comparison, or the original W).
  DenseMoeLayer(const ModelConfig& config, const DenseMoeWeights& weights);
  // The dense twin of a sparse layer: every expert's Ŵ unpacked on the device, the same router. Both
  // layers then route identically and differ only by the expert products.
  explicit DenseMoeLayer(const MoeLayer& sparse);
  ~DenseMoeLayer();
  DenseMoeLayer(DenseMoeLayer&&) noexcept;
  DenseMoeLayer& operator=(DenseMoeLayer&&) noexcept;

  std::size_t weight_bytes() const;
  std::size_t workspace_bytes(std::int64_t num_tokens) const;
  void reserve(std::int64_t num_tokens);
  // Synchronises `stream` once (expert sizes to the host) and returns after queuing the rest.
  void forward(const void* x, void* y, std::int64_t num_tokens, void* stream = nullptr);
  // The same with caller-provided workspace (device, 256-byte aligned, >= workspace_bytes(T) bytes), so
  // that the layers of a model can share one.
  void forward(const void* x, void* y, std::int64_t num_tokens, void* workspace, std::size_t workspace_bytes,
               void* stream);
  Routing last_routing() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace samoyeds::gpu
