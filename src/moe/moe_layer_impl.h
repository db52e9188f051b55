// SPDX-License-Identifier: Apache-2.0
// Internals of gpu::MoeLayer shared by the sparse layer (moe_layer.cu) and the dense twin made from it
// (dense_moe_layer.cu): the device stacks of packed experts and the layer state.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "moe/moe_router.h"
#include "moe/workspace.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::gpu {

// One expert MLP's matrices as stacks on the device (E matrices for the routed experts, 1 for the
// fused shared experts).
struct DeviceExperts {
  DevicePackedMatrix gate, up, down, gate_linear;  // [n, I, H], [n, I, H], [n, H, I], [n, I, H] (OpenMoE)
  bool has_gate_linear = false;

  static DeviceExperts upload(const std::vector<const PackedExpert*>& experts);
  // `count` experts of width I filled on the device with seeded random packed weights (values with std
  // 2 / sqrt(fan_in): a quarter of the weights kept keeps the output scale of a dense 1 / sqrt(fan_in)).
  static DeviceExperts random(int count, std::int64_t H, std::int64_t I, bool gate_linear, const SparsityPattern& pattern,
                              DType dtype, std::uint64_t seed);
  std::vector<PackedExpert> download() const;  // host copies, one per stacked expert
  std::size_t bytes() const;
};

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

  // Host copies of the dense router and Qwen's shared gate ([E, H], [1, H] or empty): small, and what a
  // dense twin (DenseMoeLayer(const MoeLayer&)) or a download needs.
  Matrix router_weights, shared_gate_weights;

  // Experts are filled in by the caller (uploaded or generated on the device).
  Impl(const ModelConfig& c, const Matrix& router_w, const Matrix& shared_gate_w, SsmmPath p)
      : config(c), dtype(router_w.dtype()), path(p), router(c, router_w, shared_gate_w), router_weights(router_w),
        shared_gate_weights(shared_gate_w) {}

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
    // The products run one after another on one stream: they share one scratch (split-K partials, or
    // X in slot order for the TMA kernel).
    Calls c = calls(l, nullptr, T);
    // While sizing the routing arrays are null; the routed gate/up still reads X through a token list,
    // and its workspace (X gathered into slot order for the TMA kernel) depends on that.
    static const std::int32_t sizing_token_list = 0;
    if (!c.gate_up.token_idx) c.gate_up.token_idx = &sizing_token_list;
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


}  // namespace samoyeds::gpu
