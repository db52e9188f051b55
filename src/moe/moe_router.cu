// SPDX-License-Identifier: Apache-2.0
// MoeRouter: one product for the logits (ours at decode sizes and for few experts, else cuBLAS; Qwen2-MoE's
// shared-gate row rides along as logit E), then the routing kernels of kernels/moe_routing.cu. No host
// synchronisation in route().
#include "moe/moe_router.h"

#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_check.h"
#include "samoyeds/moe.h"

namespace samoyeds::moe {

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    detail::throw_error(file, line, std::string(call) + " failed: " + cublasGetStatusString(status));
}

void gemm_xwt(cublasHandle_t handle, DType dtype, const void* w, const void* x, void* y, DType y_dtype,
              std::int64_t M, std::int64_t N, std::int64_t K) {
  SAMOYEDS_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "gemm: dimensions beyond int32 (", M, ", ", N,
                 ", ", K, ")");
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType in_type = dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const cudaDataType out_type = y_dtype == DType::f32 ? CUDA_R_32F : in_type;
  SAMOYEDS_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(M), static_cast<int>(N),
                                     static_cast<int>(K), &alpha, w, in_type, static_cast<int>(K), x, in_type,
                                     static_cast<int>(K), &beta, y, out_type, static_cast<int>(M), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

MoeRouter::MoeRouter(const ModelConfig& config, const Matrix& router, const Matrix& shared_gate)
    : config_(config), dtype_(router.dtype()) {
  const std::int64_t H = config.hidden_size;
  SAMOYEDS_CHECK(router.rows() == config.num_experts && router.cols() == H, "router weight is [", router.rows(), ", ",
                 router.cols(), "]; ", config.display_name, " needs [", config.num_experts, ", ", H, "]");
  SAMOYEDS_CHECK(config.shared_expert_sigmoid_gate == !shared_gate.empty(),
                 "shared expert gate: given ", shared_gate.empty() ? "none" : "one", " but ", config.display_name,
                 config.shared_expert_sigmoid_gate ? " has one" : " has none");
  num_logits_ = config.num_experts + (config.shared_expert_sigmoid_gate ? 1 : 0);
  const std::size_t row_bytes = static_cast<std::size_t>(H) * 2;
  std::vector<std::uint8_t> host(row_bytes * static_cast<std::size_t>(num_logits_));  // [num_logits, H]
  std::memcpy(host.data(), router.data(), router.bytes());
  if (!shared_gate.empty()) std::memcpy(host.data() + router.bytes(), shared_gate.data(), row_bytes);
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&weight_, host.size()));
  // A fixed cuBLAS workspace: no allocation inside forward, so the layer can be captured in a graph.
  constexpr std::size_t kCublasWorkspaceBytes = 32u << 20;
  try {
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(weight_, host.data(), host.size(), cudaMemcpyHostToDevice));
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
    SAMOYEDS_CUBLAS_CHECK(cublasCreate(&cublas_));
    SAMOYEDS_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
  } catch (...) {
    release();
    throw;
  }
}

MoeRouter::~MoeRouter() { release(); }

void MoeRouter::release() {
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_workspace_) cudaFree(cublas_workspace_);
  if (weight_) cudaFree(weight_);
  cublas_ = nullptr;
  cublas_workspace_ = weight_ = nullptr;
}

RoutingBuffers MoeRouter::carve(WorkspaceCarver& carver, std::int64_t num_tokens) const {
  const std::int64_t T = num_tokens, k = config_.top_k;
  RoutingBuffers b;
  b.num_tokens = T;
  b.logits = carver.take<float>(T * num_logits_);
  b.topk_expert = carver.take<std::int32_t>(T * k);
  b.topk_weight = carver.take<float>(T * k);
  if (config_.shared_expert_sigmoid_gate) b.shared_weight = carver.take<float>(T);
  b.expert_offsets = carver.take<std::int32_t>(config_.num_experts + 1);
  b.slot_token = carver.take<std::int32_t>(T * k);
  b.slot_weight = carver.take<float>(T * k);
  b.token_slot = carver.take<std::int32_t>(T * k);
  return b;
}

namespace {
kernels::GpuRouting gpu_routing(const ModelConfig& config, std::int64_t num_tokens) {
  kernels::GpuRouting r;
  r.num_experts = config.num_experts;
  r.top_k = config.top_k;
  r.renormalize = config.renormalize;
  r.capacity_limited = config.capacity_limited;
  if (config.capacity_limited) r.capacity = expert_capacity(num_tokens, router_config(config));
  r.shared_gate = config.shared_expert_sigmoid_gate;
  return r;
}
}  // namespace

void MoeRouter::route(const void* x, const RoutingBuffers& b, cudaStream_t stream) {
  const std::int64_t T = b.num_tokens;
  const kernels::GpuRouting r = gpu_routing(config_, T);
  if (T > 0) {
    // [T, E(+1)]: our small-product kernel where cuBLAS is slow (kernels::router_kernel_wanted).
    if (kernels::router_kernel_wanted(T, num_logits_) && kernels::router_kernel_fits(x, weight_, config_.hidden_size)) {
      kernels::router_logits(x, weight_, b.logits, T, num_logits_, config_.hidden_size, dtype_, stream);
    } else {
      SAMOYEDS_CUBLAS_CHECK(cublasSetStream(cublas_, stream));
      gemm_xwt(cublas_, dtype_, weight_, x, b.logits, DType::f32, num_logits_, T, config_.hidden_size);
    }
  }
  kernels::route_and_build_lists(b.logits, T, r, b.topk_expert, b.topk_weight, b.shared_weight, b.expert_offsets,
                                 b.slot_token, b.slot_weight, b.token_slot, stream);
}

Routing MoeRouter::download(const RoutingBuffers& b, cudaStream_t stream) const {
  const std::int64_t T = b.num_tokens, k = config_.top_k;
  const int E = config_.num_experts;
  std::vector<std::int32_t> offsets(static_cast<std::size_t>(E + 1)), choices(static_cast<std::size_t>(T * k));
  std::vector<float> weights(static_cast<std::size_t>(T * k));
  SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(offsets.data(), b.expert_offsets, offsets.size() * 4, cudaMemcpyDeviceToHost));
  if (T > 0) {
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(choices.data(), b.topk_expert, choices.size() * 4, cudaMemcpyDeviceToHost));
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(weights.data(), b.topk_weight, weights.size() * 4, cudaMemcpyDeviceToHost));
  }
  // The lists are a function of the choices (docs/routing.md §1); rebuild them on the host and check
  // that the device built the same ones, so a caller never sees lists that disagree with the kernels'.
  Routing routing = routing_from_choices(T, E, config_.top_k, choices, weights);
  std::vector<std::int32_t> slot_token(routing.slot_token.size()), token_slot(routing.token_slot.size());
  std::vector<float> slot_weight(routing.slot_weight.size());
  if (!slot_token.empty()) {
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(slot_token.data(), b.slot_token, slot_token.size() * 4, cudaMemcpyDeviceToHost));
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(slot_weight.data(), b.slot_weight, slot_weight.size() * 4, cudaMemcpyDeviceToHost));
  }
  if (!token_slot.empty())
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(token_slot.data(), b.token_slot, token_slot.size() * 4, cudaMemcpyDeviceToHost));
  SAMOYEDS_CHECK(offsets == routing.expert_offsets && slot_token == routing.slot_token &&
                     slot_weight == routing.slot_weight && token_slot == routing.token_slot,
                 "MoE routing: the device lists disagree with the lists of its own choices (a routing kernel bug)");
  return routing;
}

}  // namespace samoyeds::moe
