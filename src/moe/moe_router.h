// SPDX-License-Identifier: Apache-2.0
// The routing stage that the sparse and the dense MoE layers share: router GEMM (fp32 logits; ours or cuBLAS)
// -> softmax/top-k per family -> capacity dropping -> per-expert lists, all on one stream with no
// host synchronisation (kernels/moe_routing.h has the list layout; docs/routing.md the meaning).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/moe_routing.h"
#include "moe/workspace.h"
#include "samoyeds/model_config.h"
#include "samoyeds/routing.h"

namespace samoyeds::moe {

// The routing arrays of one forward call, carved from the layer's workspace.
struct RoutingBuffers {
  std::int64_t num_tokens = 0;   // T
  float* logits = nullptr;       // [T, E (+1: Qwen's shared-gate logit)] fp32
  std::int32_t* topk_expert = nullptr;  // [T, top_k] int32
  float* topk_weight = nullptr;         // [T, top_k] fp32
  float* shared_weight = nullptr;       // [T] fp32, Qwen2-MoE's sigmoid gate (else null)
  std::int32_t* expert_offsets = nullptr;  // [E + 1] int32
  std::int32_t* slot_token = nullptr;      // [T * top_k] int32
  float* slot_weight = nullptr;            // [T * top_k] fp32
  std::int32_t* token_slot = nullptr;      // [T, top_k] int32
};

class MoeRouter {
 public:
  // router [E, H] and shared_gate [1, H] (Qwen2-MoE; empty otherwise), of the layer dtype.
  MoeRouter(const ModelConfig& config, const Matrix& router, const Matrix& shared_gate);
  ~MoeRouter();
  MoeRouter(const MoeRouter&) = delete;
  MoeRouter& operator=(const MoeRouter&) = delete;

  RoutingBuffers carve(WorkspaceCarver& carver, std::int64_t num_tokens) const;
  // x [T, H] of the layer dtype (device). Everything stays on `stream`.
  void route(const void* x, const RoutingBuffers& buffers, cudaStream_t stream);
  // Host copy of the lists (synchronises `stream`): tests and the dense layer's expert sizes.
  Routing download(const RoutingBuffers& buffers, cudaStream_t stream) const;

  const ModelConfig& config() const { return config_; }
  cublasHandle_t cublas() const { return cublas_; }

 private:
  void release();
  ModelConfig config_;
  DType dtype_;
  int num_logits_ = 0;       // E, or E + 1 with the shared gate's row appended
  void* weight_ = nullptr;   // [num_logits, H] dtype
  void* cublas_workspace_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
};

// Checks a cuBLAS status like SAMOYEDS_CUDA_CHECK does a CUDA one.
void check_cublas(cublasStatus_t status, const char* call, const char* file, int line);
#define SAMOYEDS_CUBLAS_CHECK(call) ::samoyeds::moe::check_cublas((call), #call, __FILE__, __LINE__)

// C[M x N] (column-major, ldc = M) = op(A)[M x K] * B[K x N] with A = w row-major [M, K] and
// B = x row-major [N, K]: i.e. y[N, M] row-major = x[N, K] * w[M, K]^T. fp32 accumulation.
void gemm_xwt(cublasHandle_t handle, DType dtype, const void* w, const void* x, void* y, DType y_dtype,
              std::int64_t M, std::int64_t N, std::int64_t K);

}  // namespace samoyeds::moe
