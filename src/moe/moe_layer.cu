// SPDX-License-Identifier: Apache-2.0
// gpu::MoeLayer: the sparse MoE layer. Per forward, all on one stream, no host synchronisation:
//   MoeRouter (GEMM, softmax/top-k, lists) -> grouped gate/up SSMM -> grouped down SSMM (weighted)
//   -> shared experts -> combine. Grouped SSMM launches size their grids from T alone (the expert
// sizes stay on the device), so a fixed T replays from a CUDA graph.
#include <algorithm>
#include <optional>

#include "kernels/cuda_check.h"
#include "kernels/moe_routing.h"
#include "moe/moe_router.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::gpu {

namespace {

// One expert MLP's matrices as stacks on the device (E matrices for the routed experts, 1 for the
// fused shared experts).
struct DeviceExperts {
  DevicePackedMatrix gate, up, down, gate_linear;
  bool has_gate_linear = false;

  static DeviceExperts upload(const std::vector<const PackedExpert*>& experts) {
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

  std::size_t bytes() const {
    auto one = [](const DevicePackedMatrix& m) -> std::size_t {
      const PackedMatrixView& v = m.view();
      if (!v.values) return 0;
      return static_cast<std::size_t>(packed_geometry(v.pattern, v.rows, v.cols).total_bytes()) * v.num_stacked;
    };
    return one(gate) + one(up) + one(down) + one(gate_linear);
  }
};


}  // namespace

struct MoeLayer::Impl {
  ModelConfig config;
  DType dtype;
  SsmmPath path;
  moe::MoeRouter router;
  DeviceExperts routed;
  std::optional<DeviceExperts> shared;
  moe::OwnedBuffer own_workspace;
  moe::RoutingBuffers last;  // of the last forward (for last_routing)
  cudaStream_t last_stream = nullptr;
  bool has_forward = false;

  Impl(const ModelConfig& c, const PackedMoeWeights& w, SsmmPath p)
      : config(c), dtype(w.router.dtype()), path(p), router(c, w.router, w.shared_gate) {
    std::vector<const PackedExpert*> experts;
    for (const PackedExpert& e : w.experts) experts.push_back(&e);
    routed = DeviceExperts::upload(experts);
    if (w.shared) shared = DeviceExperts::upload({&*w.shared});
  }

  // The SSMM calls of a forward with T tokens; pointers are filled from `b` and the layout (or left
  // null for sizing: the split-K workspace depends on shapes only).
  struct Calls {
    SsmmArgs gate_up, down, shared_gate_up, shared_down;
  };
  struct Layout {
    moe::RoutingBuffers routing;
    void* a = nullptr;            // [S, I] dtype: SiLU(gate) ⊙ up per slot
    void* slot_rows = nullptr;    // [S, H] dtype: weighted down output per slot
    void* shared_a = nullptr;     // [T, I_shared] dtype
    void* shared_rows = nullptr;  // [T, H] dtype
    void* split_workspace = nullptr;
    std::size_t split_bytes = 0;
    std::size_t total = 0;
  };

  Calls calls(const Layout& l, const void* x, std::int64_t T) const {
    const std::int64_t S = T * config.top_k;
    Calls c;
    c.gate_up.epilogue = SsmmEpilogue::gate_up;
    c.gate_up.weight = routed.gate.view();
    c.gate_up.up = routed.up.view();
    if (routed.has_gate_linear) c.gate_up.gate_linear = routed.gate_linear.view();
    c.gate_up.x = x;
    c.gate_up.num_x_rows = T;
    c.gate_up.x_dtype = c.gate_up.y_dtype = dtype;
    c.gate_up.token_idx = l.routing.slot_token;
    c.gate_up.num_tokens = S;
    c.gate_up.y = l.a;
    c.gate_up.expert_offsets = l.routing.expert_offsets;

    c.down.epilogue = SsmmEpilogue::down_weighted;
    c.down.weight = routed.down.view();
    c.down.x = l.a;
    c.down.num_x_rows = S;  // slot j reads row j of A: no list
    c.down.x_dtype = c.down.y_dtype = dtype;
    c.down.num_tokens = S;
    c.down.slot_weight = l.routing.slot_weight;
    c.down.y = l.slot_rows;
    c.down.expert_offsets = l.routing.expert_offsets;

    if (shared) {
      c.shared_gate_up.epilogue = SsmmEpilogue::gate_up;
      c.shared_gate_up.weight = shared->gate.view();
      c.shared_gate_up.up = shared->up.view();
      if (shared->has_gate_linear) c.shared_gate_up.gate_linear = shared->gate_linear.view();
      c.shared_gate_up.x = x;
      c.shared_gate_up.num_x_rows = c.shared_gate_up.num_tokens = T;
      c.shared_gate_up.x_dtype = c.shared_gate_up.y_dtype = dtype;
      c.shared_gate_up.y = l.shared_a;

      // Qwen2-MoE scales the shared output by its sigmoid gate (the routing's shared_weight); DeepSeek
      // adds it as is (the plain product).
      c.shared_down.epilogue = config.shared_expert_sigmoid_gate ? SsmmEpilogue::down_weighted : SsmmEpilogue::plain;
      c.shared_down.weight = shared->down.view();
      c.shared_down.x = l.shared_a;
      c.shared_down.num_x_rows = c.shared_down.num_tokens = T;
      c.shared_down.x_dtype = c.shared_down.y_dtype = dtype;
      c.shared_down.slot_weight = l.routing.shared_weight;
      c.shared_down.y = l.shared_rows;
    }
    return c;
  }

  Layout layout(void* base, std::int64_t T) const {
    moe::WorkspaceCarver carver(base);
    Layout l;
    const std::int64_t S = T * config.top_k, H = config.hidden_size;
    const std::size_t elem = dtype_size(dtype);
    l.routing = router.carve(carver, T);
    l.a = carver.take_bytes(static_cast<std::size_t>(S * config.intermediate_size) * elem);
    l.slot_rows = carver.take_bytes(static_cast<std::size_t>(S * H) * elem);
    if (shared) {
      l.shared_a = carver.take_bytes(static_cast<std::size_t>(T * config.shared_intermediate_size) * elem);
      l.shared_rows = carver.take_bytes(static_cast<std::size_t>(T * H) * elem);
    }
    // The products run one after another on one stream: they share one split-K scratch.
    const Calls c = calls(l, nullptr, T);
    l.split_bytes = std::max(ssmm_workspace_bytes(c.gate_up, path), ssmm_workspace_bytes(c.down, path));
    if (shared)
      l.split_bytes = std::max({l.split_bytes, ssmm_workspace_bytes(c.shared_gate_up, path),
                                ssmm_workspace_bytes(c.shared_down, path)});
    l.split_workspace = carver.take_bytes(l.split_bytes);
    l.total = carver.used();
    return l;
  }

  void check_tokens(std::int64_t T) const {
    SAMOYEDS_CHECK(T >= 0, "MoeLayer: num_tokens is ", T, "; it must be >= 0");
    SAMOYEDS_CHECK(T <= (std::int64_t{1} << 31) / config.top_k / 2, "MoeLayer: ", T,
                   " tokens give too many slots for int32 slot ids; call forward on fewer tokens at a time");
  }
};

MoeLayer::MoeLayer(const ModelConfig& config, const PackedMoeWeights& weights, SsmmPath path) {
  check_moe_weights(config, weights);
  SAMOYEDS_CHECK(weights.router.dtype() == DType::bf16 || weights.router.dtype() == DType::f16,
                 "MoeLayer: weights must be bf16 or fp16");
  impl_ = std::make_unique<Impl>(config, weights, path);
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
