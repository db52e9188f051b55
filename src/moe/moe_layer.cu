// SPDX-License-Identifier: Apache-2.0
// gpu::MoeLayer: the sparse MoE layer. Per forward, all on one stream, no host synchronisation:
//   MoeRouter (GEMM, softmax/top-k, lists) -> grouped gate/up SSMM -> grouped down SSMM (weighted)
//   -> shared experts -> combine. Grouped SSMM launches size their grids from T alone (the expert
// sizes stay on the device), so a fixed T replays from a CUDA graph.
#include <cmath>

#include "kernels/cuda_check.h"
#include "kernels/moe_routing.h"
#include "kernels/packed_device.h"
#include "model/random_weights.h"
#include "moe/moe_layer_impl.h"

namespace samoyeds::gpu {

DeviceExperts DeviceExperts::upload(const std::vector<const PackedExpert*>& experts) {
  auto stack = [&](auto member) {
    std::vector<const PackedMatrix*> matrices;
    for (const PackedExpert* e : experts) matrices.push_back(&member(*e));
    return DevicePackedMatrix(matrices);
  };
  DeviceExperts d;
  d.gate = stack([](const PackedExpert& e) -> const PackedMatrix& { return e.gate; });
  d.up = stack([](const PackedExpert& e) -> const PackedMatrix& { return e.up; });
  d.down = stack([](const PackedExpert& e) -> const PackedMatrix& { return e.down; });
  d.has_gate_linear = experts.front()->gate_linear.has_value();
  if (d.has_gate_linear) d.gate_linear = stack([](const PackedExpert& e) -> const PackedMatrix& { return *e.gate_linear; });
  return d;
}

DeviceExperts DeviceExperts::random(int count, std::int64_t H, std::int64_t I, bool gate_linear,
                                    const SparsityPattern& pattern, DType dtype, std::uint64_t seed) {
  DeviceExperts d;
  const float in_std = 2.0f / std::sqrt(static_cast<float>(H)), out_std = 2.0f / std::sqrt(static_cast<float>(I));
  auto make = [&](std::int64_t rows, std::int64_t cols, float stddev, std::uint64_t salt) {
    DevicePackedMatrix m(pattern, dtype, rows, cols, count);
    kernels::fill_random_packed(m.view(), stddev, seed * 8 + salt, nullptr);
    return m;
  };
  d.gate = make(I, H, in_std, 0);
  d.up = make(I, H, in_std, 1);
  d.down = make(H, I, out_std, 2);
  d.has_gate_linear = gate_linear;
  if (gate_linear) d.gate_linear = make(I, H, in_std, 3);
  SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());  // kernel faults surface here, not in a later forward
  return d;
}

std::vector<PackedExpert> DeviceExperts::download() const {
  std::vector<PackedExpert> experts;
  for (int e = 0; e < gate.view().num_stacked; ++e) {
    PackedExpert x{gate.download(e), up.download(e), down.download(e), std::nullopt};
    if (has_gate_linear) x.gate_linear = gate_linear.download(e);
    experts.push_back(std::move(x));
  }
  return experts;
}

std::size_t DeviceExperts::bytes() const {
  auto one = [](const DevicePackedMatrix& m) -> std::size_t {
    const PackedMatrixView& v = m.view();
    if (!v.values) return 0;
    return static_cast<std::size_t>(packed_geometry(v.pattern, v.rows, v.cols).total_bytes()) * v.num_stacked;
  };
  return one(gate) + one(up) + one(down) + one(gate_linear);
}

MoeLayer::MoeLayer(const ModelConfig& config, const PackedMoeWeights& weights, SsmmPath path) {
  check_moe_weights(config, weights);
  SAMOYEDS_CHECK(weights.router.dtype() == DType::bf16 || weights.router.dtype() == DType::f16,
                 "MoeLayer: weights must be bf16 or fp16");
  impl_ = std::make_unique<Impl>(config, weights.router, weights.shared_gate, path);
  std::vector<const PackedExpert*> experts;
  for (const PackedExpert& e : weights.experts) experts.push_back(&e);
  impl_->routed = DeviceExperts::upload(experts);
  if (weights.shared) impl_->shared = DeviceExperts::upload({&*weights.shared});
}

MoeLayer::MoeLayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MoeLayer MoeLayer::synthetic(const ModelConfig& config, DType dtype, const SparsityPattern& pattern, std::uint64_t seed,
                             SsmmPath path) {
  config.validate();
  pattern.validate();
  SAMOYEDS_CHECK(is_half_precision(dtype), "MoeLayer::synthetic: weights must be bf16 or fp16, got ", dtype_name(dtype));
  const std::int64_t H = config.hidden_size;
  // Router as synthetic_moe_weights draws it; Qwen's shared gate std 1/sqrt(H).
  const Matrix router = detail::random_matrix(dtype, config.num_experts, H, 4.0f / std::sqrt(static_cast<float>(H)), seed);
  const Matrix shared_gate = config.shared_expert_sigmoid_gate
                                 ? detail::random_matrix(dtype, 1, H, 1.0f / std::sqrt(static_cast<float>(H)), seed + 1)
                                 : Matrix{};
  auto impl = std::make_unique<Impl>(config, router, shared_gate, path);
  const bool openmoe = config.activation == ExpertActivation::openmoe_swiglu;
  impl->routed = DeviceExperts::random(config.num_experts, H, config.intermediate_size, openmoe, pattern, dtype, seed + 2);
  if (config.num_shared_experts > 0)
    impl->shared = DeviceExperts::random(1, H, config.shared_intermediate_size, openmoe, pattern, dtype, seed + 3);
  return MoeLayer(std::move(impl));
}

PackedMoeWeights MoeLayer::download() const {
  PackedMoeWeights w;
  w.router = impl_->router_weights;
  w.shared_gate = impl_->shared_gate_weights;
  w.experts = impl_->routed.download();
  if (impl_->shared) w.shared = std::move(impl_->shared->download().front());
  return w;
}
MoeLayer::~MoeLayer() = default;
MoeLayer::MoeLayer(MoeLayer&&) noexcept = default;
MoeLayer& MoeLayer::operator=(MoeLayer&&) noexcept = default;

const ModelConfig& MoeLayer::config() const { return impl_->config; }
DType MoeLayer::dtype() const { return impl_->dtype; }
std::size_t MoeLayer::weight_bytes() const {
  return impl_->routed.bytes() + (impl_->shared ? impl_->shared->bytes() : 0);
}

std::size_t MoeLayer::workspace_bytes(std::int64_t num_tokens) const {
  impl_->check_tokens(num_tokens);
  return impl_->layout(nullptr, num_tokens).total;
}

void MoeLayer::reserve(std::int64_t num_tokens) { impl_->own_workspace.ensure(workspace_bytes(num_tokens)); }

void MoeLayer::forward(const void* x, void* y, std::int64_t num_tokens, void* stream) {
  reserve(num_tokens);
  forward(x, y, num_tokens, impl_->own_workspace.ptr(), impl_->own_workspace.bytes(), stream);
}

void MoeLayer::forward(const void* x, void* y, std::int64_t T, void* workspace, std::size_t workspace_bytes,
                       void* stream_ptr) {
  Impl& m = *impl_;
  m.check_tokens(T);
  const std::size_t needed = this->workspace_bytes(T);
  SAMOYEDS_CHECK(T == 0 || (x && y), "MoeLayer::forward: x and y must be device pointers");
  SAMOYEDS_CHECK(reinterpret_cast<std::uintptr_t>(x) % 16 == 0 && reinterpret_cast<std::uintptr_t>(y) % 16 == 0,
                 "MoeLayer::forward: x and y must be 16-byte aligned");
  SAMOYEDS_CHECK(workspace_bytes >= needed && (needed == 0 || workspace), "MoeLayer::forward: the workspace has ",
                 workspace_bytes, " bytes; ", T, " tokens need ", needed, " (workspace_bytes(T))");
  SAMOYEDS_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0, "MoeLayer::forward: the workspace must be 256-byte aligned");
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const Impl::Layout l = m.layout(workspace, T);
  m.last = l.routing;
  m.last_stream = stream;
  m.has_forward = true;
  m.router.route(x, l.routing, stream);  // with T = 0 it only zeroes the expert offsets
  if (T == 0) return;

  Impl::Calls c = m.calls(l, x, T);
  for (SsmmArgs* args : {&c.gate_up, &c.down, &c.shared_gate_up, &c.shared_down}) {
    if (args->num_tokens == 0) continue;  // no shared experts
    args->workspace = l.split_workspace;
    args->workspace_bytes = l.split_bytes;
    ssmm(*args, stream, m.path);
  }
  kernels::combine(l.slot_rows, l.routing.token_slot, nullptr, m.shared ? l.shared_rows : nullptr, y, T,
                   m.config.top_k, m.config.hidden_size, m.dtype, stream);
}

Routing MoeLayer::last_routing() const {
  SAMOYEDS_CHECK(impl_->has_forward, "MoeLayer::last_routing: call forward first");
  return impl_->router.download(impl_->last, impl_->last_stream);
}

}  // namespace samoyeds::gpu
