// SPDX-License-Identifier: Apache-2.0
// gpu::DenseMoeLayer: the baseline with the sparse layer's routing and combine and cuBLAS for the
// expert products, as a dense MoE engine without grouped kernels runs them: gather the routed rows,
// one GEMM per non-empty expert for gate|up (stacked [n*I, H]), SiLU·mul, one GEMM per expert for
// down, then the combine applies the routing weights. cuBLAS needs each expert's row count on the
// host, so forward() reads the expert offsets back once (one synchronisation per call).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/decoder_ops.h"
#include "kernels/half_math.cuh"
#include "kernels/moe_routing.h"
#include "kernels/packed_device.h"
#include "moe/moe_layer_impl.h"
#include "moe/moe_router.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::gpu {

namespace {

using kernels::narrow;
using kernels::widen;

// x_g[s, :] = x[slot_token[s], :] for s < *num_used (16-byte copies; H % 8 == 0).
__global__ void gather_rows(const uint4* x, const std::int32_t* slot_token, const std::int32_t* num_used, uint4* x_g,
                            std::int64_t row_chunks, std::int64_t num_slots) {
  const std::int64_t used = min(static_cast<std::int64_t>(*num_used), num_slots);
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < used * row_chunks;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t s = i / row_chunks, c = i % row_chunks;
    x_g[i] = x[static_cast<std::int64_t>(slot_token[s]) * row_chunks + c];
  }
}

// rows[t, :] = round(scale[t] * rows[t, :]) (Qwen2-MoE's sigmoid-gated shared expert).
template <class T>
__global__ void scale_rows(T* rows, const float* scale, std::int64_t num_rows, std::int64_t width) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < num_rows * width;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    rows[e] = narrow<T>(scale[e / width] * widen(rows[e]));
}

unsigned grid_for(std::int64_t n) { return static_cast<unsigned>(std::clamp<std::int64_t>((n + 255) / 256, 1, 8192)); }

// One expert MLP (or a stack of E) dense on the device: gate|up(|gate_linear) stacked per expert.
struct DenseStack {
  void* gate_up = nullptr;  // [E, n * I, H] dtype, n = 2 or 3
  void* down = nullptr;     // [E, H, I] dtype
  int num_mats = 2;
  std::int64_t width = 0;   // I
  DenseStack() = default;
  DenseStack(const DenseStack&) = delete;
  DenseStack& operator=(const DenseStack&) = delete;
  ~DenseStack() {
    cudaFree(gate_up);
    cudaFree(down);
  }
  void upload(const std::vector<const DenseExpert*>& experts) {
    const DenseExpert& first = *experts.front();
    num_mats = first.gate_linear.empty() ? 2 : 3;
    width = first.gate.rows();
    const std::size_t matrix_bytes = first.gate.bytes();  // [I, H] == [H, I] in bytes
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&gate_up, matrix_bytes * num_mats * experts.size()));
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&down, matrix_bytes * experts.size()));
    auto* gu = static_cast<std::uint8_t*>(gate_up);
    for (std::size_t e = 0; e < experts.size(); ++e) {
      const Matrix* parts[3] = {&experts[e]->gate, &experts[e]->up, &experts[e]->gate_linear};
      for (int m = 0; m < num_mats; ++m)
        SAMOYEDS_CUDA_CHECK(cudaMemcpy(gu + (e * num_mats + m) * matrix_bytes, parts[m]->data(), matrix_bytes,
                                       cudaMemcpyHostToDevice));
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(static_cast<std::uint8_t*>(down) + e * matrix_bytes, experts[e]->down.data(),
                                     matrix_bytes, cudaMemcpyHostToDevice));
    }
  }
  // Ŵ of every stacked expert, unpacked on the device (the dense twin of a sparse layer).
  void unpack(const DeviceExperts& experts) {
    const PackedMatrixView& g = experts.gate.view();
    const std::size_t count = static_cast<std::size_t>(g.num_stacked);
    num_mats = experts.has_gate_linear ? 3 : 2;
    width = g.rows;
    const std::size_t matrix_bytes = static_cast<std::size_t>(g.rows * g.cols) * 2;
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&gate_up, matrix_bytes * num_mats * count));
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&down, matrix_bytes * count));
    auto* gu = static_cast<std::uint8_t*>(gate_up);
    const DevicePackedMatrix* parts[3] = {&experts.gate, &experts.up, &experts.gate_linear};
    for (std::size_t e = 0; e < count; ++e) {
      for (int m = 0; m < num_mats; ++m)
        kernels::unpack_packed(parts[m]->view(), static_cast<int>(e), gu + (e * num_mats + m) * matrix_bytes, nullptr);
      kernels::unpack_packed(experts.down.view(), static_cast<int>(e), static_cast<std::uint8_t*>(down) + e * matrix_bytes,
                             nullptr);
    }
    SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::size_t bytes(std::int64_t H, std::size_t count) const {
    return static_cast<std::size_t>((num_mats + 1) * width * H) * 2 * count;
  }
};


}  // namespace

struct DenseMoeLayer::Impl {
  ModelConfig config;
  DType dtype;
  moe::MoeRouter router;
  DenseStack routed;
  std::optional<DenseStack> shared;
  moe::OwnedBuffer workspace;
  std::int32_t* host_offsets = nullptr;  // [E + 1] pinned
  moe::RoutingBuffers last;
  cudaStream_t last_stream = nullptr;
  bool has_forward = false;

  // Experts are filled in by the caller (uploaded or unpacked on the device).
  Impl(const ModelConfig& c, const Matrix& router_w, const Matrix& shared_gate_w)
      : config(c), dtype(router_w.dtype()), router(c, router_w, shared_gate_w) {
    SAMOYEDS_CUDA_CHECK(cudaMallocHost(&host_offsets, sizeof(std::int32_t) * (c.num_experts + 1)));
  }
  ~Impl() { cudaFreeHost(host_offsets); }

  struct Layout {
    moe::RoutingBuffers routing;
    void *x_g, *gu, *a, *slot_rows, *shared_gu, *shared_a, *shared_rows;
    std::size_t total;
  };
  Layout layout(void* base, std::int64_t T) const {
    moe::WorkspaceCarver carver(base);
    const std::int64_t S = T * config.top_k, H = config.hidden_size, I = config.intermediate_size;
    Layout l{};
    l.routing = router.carve(carver, T);
    l.x_g = carver.take_bytes(static_cast<std::size_t>(S * H) * 2);                    // [S, H]
    l.gu = carver.take_bytes(static_cast<std::size_t>(S * routed.num_mats * I) * 2);  // [S, n * I]
    l.a = carver.take_bytes(static_cast<std::size_t>(S * I) * 2);                     // [S, I]
    l.slot_rows = carver.take_bytes(static_cast<std::size_t>(S * H) * 2);             // [S, H]
    if (shared) {
      const std::int64_t Is = config.shared_intermediate_size;
      l.shared_gu = carver.take_bytes(static_cast<std::size_t>(T * shared->num_mats * Is) * 2);  // [T, n * I_shared]
      l.shared_a = carver.take_bytes(static_cast<std::size_t>(T * Is) * 2);                     // [T, I_shared]
      l.shared_rows = carver.take_bytes(static_cast<std::size_t>(T * H) * 2);                   // [T, H]
    }
    l.total = carver.used();
    return l;
  }

  void silu(const void* gu, void* a, const std::int32_t* rows_dev, std::int64_t rows, std::int64_t I, int num_mats,
            cudaStream_t stream) const {
    kernels::silu_mul(gu, a, rows_dev, rows, I, num_mats, dtype, stream);
  }
};

DenseMoeLayer::DenseMoeLayer(const ModelConfig& config, const DenseMoeWeights& weights) {
  check_moe_weights(config, weights);
  SAMOYEDS_CHECK(config.hidden_size % 8 == 0, "DenseMoeLayer: H = ", config.hidden_size, " must be a multiple of 8");
  impl_ = std::make_unique<Impl>(config, weights.router, weights.shared_gate);
  std::vector<const DenseExpert*> experts;
  for (const DenseExpert& e : weights.experts) experts.push_back(&e);
  impl_->routed.upload(experts);
  if (weights.shared) impl_->shared.emplace().upload({&*weights.shared});
}

DenseMoeLayer::DenseMoeLayer(const MoeLayer& sparse) {
  const MoeLayer::Impl& s = *sparse.impl_;
  SAMOYEDS_CHECK(s.config.hidden_size % 8 == 0, "DenseMoeLayer: H = ", s.config.hidden_size, " must be a multiple of 8");
  impl_ = std::make_unique<Impl>(s.config, s.router_weights, s.shared_gate_weights);
  impl_->routed.unpack(s.routed);
  if (s.shared) impl_->shared.emplace().unpack(*s.shared);
}
DenseMoeLayer::~DenseMoeLayer() = default;
DenseMoeLayer::DenseMoeLayer(DenseMoeLayer&&) noexcept = default;
DenseMoeLayer& DenseMoeLayer::operator=(DenseMoeLayer&&) noexcept = default;

std::size_t DenseMoeLayer::weight_bytes() const {
  const std::int64_t H = impl_->config.hidden_size;
  return impl_->routed.bytes(H, static_cast<std::size_t>(impl_->config.num_experts)) +
         (impl_->shared ? impl_->shared->bytes(H, 1) : 0);
}

std::size_t DenseMoeLayer::workspace_bytes(std::int64_t num_tokens) const {
  SAMOYEDS_CHECK(num_tokens >= 0 && num_tokens <= (std::int64_t{1} << 30) / impl_->config.top_k,
                 "DenseMoeLayer: num_tokens ", num_tokens, " out of range");
  return impl_->layout(nullptr, num_tokens).total;
}

void DenseMoeLayer::reserve(std::int64_t num_tokens) { impl_->workspace.ensure(workspace_bytes(num_tokens)); }

void DenseMoeLayer::forward(const void* x, void* y, std::int64_t T, void* stream) {
  reserve(T);
  forward(x, y, T, impl_->workspace.ptr(), impl_->workspace.bytes(), stream);
}

void DenseMoeLayer::forward(const void* x, void* y, std::int64_t T, void* workspace, std::size_t workspace_bytes,
                            void* stream_ptr) {
  Impl& m = *impl_;
  const std::size_t needed = this->workspace_bytes(T);
  SAMOYEDS_CHECK(T == 0 || (x && y), "DenseMoeLayer::forward: x and y must be device pointers");
  SAMOYEDS_CHECK(workspace_bytes >= needed && (needed == 0 || workspace), "DenseMoeLayer::forward: the workspace has ",
                 workspace_bytes, " bytes; ", T, " tokens need ", needed, " (workspace_bytes(T))");
  SAMOYEDS_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0,
                 "DenseMoeLayer::forward: the workspace must be 256-byte aligned");
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const Impl::Layout l = m.layout(workspace, T);
  m.last = l.routing;
  m.last_stream = stream;
  m.has_forward = true;
  m.router.route(x, l.routing, stream);
  if (T == 0) return;

  const ModelConfig& c = m.config;
  const std::int64_t S = T * c.top_k, H = c.hidden_size, I = c.intermediate_size;
  const int E = c.num_experts;
  cublasHandle_t cublas = m.router.cublas();
  SAMOYEDS_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(m.host_offsets, l.routing.expert_offsets, sizeof(std::int32_t) * (E + 1),
                                      cudaMemcpyDeviceToHost, stream));
  gather_rows<<<grid_for(S * H / 8), 256, 0, stream>>>(static_cast<const uint4*>(x), l.routing.slot_token,
                                                      l.routing.expert_offsets + E, static_cast<uint4*>(l.x_g), H / 8, S);
  SAMOYEDS_CHECK_LAUNCH("gather_rows");
  SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));  // the expert sizes, for the per-expert GEMMs

  const int n = m.routed.num_mats;
  const std::size_t w_bytes = static_cast<std::size_t>(I * H) * 2;
  auto at = [](void* base, std::int64_t elements) { return static_cast<std::uint8_t*>(base) + elements * 2; };
  for (int e = 0; e < E; ++e) {
    const std::int64_t begin = m.host_offsets[e], L = m.host_offsets[e + 1] - begin;
    if (L <= 0) continue;
    moe::gemm_xwt(cublas, m.dtype, static_cast<std::uint8_t*>(m.routed.gate_up) + e * n * w_bytes, at(l.x_g, begin * H),
                  at(l.gu, begin * n * I), m.dtype, n * I, L, H);
  }
  m.silu(l.gu, l.a, l.routing.expert_offsets + E, S, I, n, stream);
  for (int e = 0; e < E; ++e) {
    const std::int64_t begin = m.host_offsets[e], L = m.host_offsets[e + 1] - begin;
    if (L <= 0) continue;
    moe::gemm_xwt(cublas, m.dtype, static_cast<std::uint8_t*>(m.routed.down) + e * w_bytes, at(l.a, begin * I),
                  at(l.slot_rows, begin * H), m.dtype, H, L, I);
  }
  if (m.shared) {
    const std::int64_t Is = m.shared->width;
    const int ns = m.shared->num_mats;
    moe::gemm_xwt(cublas, m.dtype, m.shared->gate_up, x, l.shared_gu, m.dtype, ns * Is, T, H);
    m.silu(l.shared_gu, l.shared_a, nullptr, T, Is, ns, stream);
    moe::gemm_xwt(cublas, m.dtype, m.shared->down, l.shared_a, l.shared_rows, m.dtype, H, T, Is);
    if (l.routing.shared_weight) {
      if (m.dtype == DType::bf16)
        scale_rows<<<grid_for(T * H), 256, 0, stream>>>(static_cast<__nv_bfloat16*>(l.shared_rows), l.routing.shared_weight, T, H);
      else
        scale_rows<<<grid_for(T * H), 256, 0, stream>>>(static_cast<__half*>(l.shared_rows), l.routing.shared_weight, T, H);
      SAMOYEDS_CHECK_LAUNCH("scale_rows");
    }
  }
  kernels::combine(l.slot_rows, l.routing.token_slot, l.routing.slot_weight, m.shared ? l.shared_rows : nullptr, y, T,
                   c.top_k, H, m.dtype, stream);
}

Routing DenseMoeLayer::last_routing() const {
  SAMOYEDS_CHECK(impl_->has_forward, "DenseMoeLayer::last_routing: call forward first");
  return impl_->router.download(impl_->last, impl_->last_stream);
}

}  // namespace samoyeds::gpu
