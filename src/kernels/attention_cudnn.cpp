// SPDX-License-Identifier: Apache-2.0
// Prefill attention through cuDNN's SDPA graph (attention_cudnn.h). One graph per pass shape, built on
// first use and cached: [B, heads, n, d] queries over [B, kv_heads, cached + n, d] keys and values,
// read in place from our token-major tensors and the KV cache through strides, causal with the
// diagonal at the bottom right (query i sits at position cached + i). libcudnn.so.9 is opened at run
// time (the frontend's dynamic loading), so neither the build nor the library needs cuDNN installed.
#if defined(SAMOYEDS_WITH_CUDA)  // a CPU-only build has no attention at all
#include "kernels/attention_cudnn.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>

#include "samoyeds/error.h"

#if defined(SAMOYEDS_WITH_CUDNN)
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#include <dlfcn.h>

#include <cudnn_frontend.h>

#include <list>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/cuda_check.h"

// The frontend resolves every cuDNN entry point through this handle (dynamic loading).
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}
#endif

namespace samoyeds::kernels {

AttentionBackend attention_backend() {
  static const AttentionBackend backend = [] {
    const char* env = std::getenv("SAMOYEDS_ATTENTION");
    const std::string_view v = env ? env : "auto";
    if (v == "auto" || v.empty()) return AttentionBackend::automatic;
    if (v == "ours") return AttentionBackend::ours;
    if (v == "cudnn") return AttentionBackend::cudnn;
    SAMOYEDS_FAIL("SAMOYEDS_ATTENTION must be auto, ours or cudnn, got '", std::string(v), "'");
  }();
  return backend;
}

#if defined(SAMOYEDS_WITH_CUDNN)
namespace {

namespace fe = cudnn_frontend;

// The tensors' ids in a graph's variant pack.
enum : std::int64_t { kQ = 1, kK, kV, kO };

// Everything a graph is built for (the pointers are bound at each execution).
using GraphKey = std::tuple<int /*device*/, int /*B*/, int /*n*/, std::int64_t /*cached*/, int /*heads*/, int /*kv_heads*/,
                            int /*d*/, int /*dtype*/, std::int64_t /*capacity*/, std::uint32_t /*scale bits*/>;
struct GraphKeyHash {
  std::size_t operator()(const GraphKey& k) const {
    std::size_t h = 0;
    std::apply([&](const auto&... v) { ((h = h * 1000003u ^ std::hash<std::decay_t<decltype(v)>>{}(v)), ...); }, k);
    return h;
  }
};
struct CachedGraph {
  std::shared_ptr<fe::graph::Graph> graph;  // null: the installed cuDNN has no engine for the shape
  std::string unsupported;                  // why, when graph is null
  std::int64_t workspace_bytes = 0;
};

// Process-wide state behind one mutex: the library, a handle and a workspace per device, and the
// graphs of the most recent shapes (a long chunked prefill builds one per chunk).
struct CudnnState {
  std::mutex mutex;
  bool load_tried = false;
  std::string load_error;  // why cuDNN is not usable, once a load was tried (empty: it is)
  std::int64_t version = 0;  // cudnnGetVersion(), e.g. 91400, once loaded
  std::unordered_map<int, cudnnHandle_t> handles;
  std::unordered_map<int, std::pair<void*, std::size_t>> workspaces;
  std::list<GraphKey> lru;  // most recent first
  std::unordered_map<GraphKey, CachedGraph, GraphKeyHash> graphs;
  static constexpr std::size_t kMaxGraphs = 32;
};

CudnnState& state() {
  static CudnnState* s = new CudnnState;  // never destroyed: handles outlive static destructors' order
  return *s;
}

// dlopen's first success among `names` (its name in `opened`); `tried` collects the failures.
void* open_first(const std::vector<std::string>& names, std::string* opened, std::string* tried) {
  for (const std::string& name : names) {
    if (void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      *opened = name;
      return h;
    }
    const char* err = dlerror();
    *tried += "\n  " + name + ": " + (err ? err : "unknown error");
  }
  return nullptr;
}

// Opens cuDNN (and the CUDA runtime the frontend calls) once; false with the reason in
// state().load_error when it cannot be used. cuDNN: $SAMOYEDS_CUDNN_LIBRARY, else libcudnn.so.9 on
// the loader's path, else where the build found it (a pip wheel's copy is on no search path).
bool load_locked(CudnnState& s) {
  if (s.load_tried) return s.load_error.empty();
  s.load_tried = true;
  std::vector<std::string> cudnn_names;
  if (const char* env = std::getenv("SAMOYEDS_CUDNN_LIBRARY"); env && *env) cudnn_names.push_back(env);
  cudnn_names.push_back("libcudnn.so.9");
#if defined(SAMOYEDS_CUDNN_LIBRARY_HINT)
  cudnn_names.push_back(SAMOYEDS_CUDNN_LIBRARY_HINT);
#endif
  std::string opened, tried;
  fe::cudnn_dlhandle = open_first(cudnn_names, &opened, &tried);
  if (!fe::cudnn_dlhandle) {
    s.load_error = "cuDNN 9 could not be opened (install it, or name libcudnn.so.9 in SAMOYEDS_CUDNN_LIBRARY):" + tried;
    return false;
  }
  // The frontend opens a CUDA runtime of its own by name, trying major 12 before 13. Give it the one
  // this library runs on (the same instance when it is already loaded); a user's setting wins.
  if (!std::getenv("CUDNN_FRONTEND_CUDART_LIB_NAME")) {
    const std::string soname = "libcudart.so." + std::to_string(CUDART_VERSION / 1000);
    std::vector<std::string> cudart_names = {soname};
#if defined(SAMOYEDS_CUDART_DIR)
    cudart_names.push_back(std::string(SAMOYEDS_CUDART_DIR) + "/" + soname);
#endif
    tried.clear();
    if (!open_first(cudart_names, &opened, &tried)) {  // left open: the frontend's dlopen gets the same
      s.load_error = "the CUDA runtime cuDNN's frontend calls could not be opened:" + tried;
      return false;
    }
    setenv("CUDNN_FRONTEND_CUDART_LIB_NAME", opened.c_str(), 0);
  }
  try {
    const std::int64_t version = fe::detail::get_backend_version();
    if (version < 90000) {
      s.load_error = "cuDNN " + std::to_string(version) + " is older than 9.0";
      return false;
    }
    s.version = version;
  } catch (const std::exception& e) {
    s.load_error = std::string("cuDNN was opened but did not answer its version: ") + e.what();
    return false;
  }
  return true;
}

cudnnHandle_t handle_locked(CudnnState& s, int device) {
  auto it = s.handles.find(device);
  if (it != s.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t status = fe::detail::create_handle(&h);
  SAMOYEDS_CHECK(status == CUDNN_STATUS_SUCCESS, "attention (cuDNN): cudnnCreate failed with status ", static_cast<int>(status),
                 " on device ", device, "; run with SAMOYEDS_ATTENTION=ours to use our kernel");
  s.handles.emplace(device, h);
  return h;
}

CachedGraph build_graph(const AttentionArgs& a, cudnnHandle_t handle) {
  const std::int64_t B = a.num_sequences, h = a.num_heads, hk = a.num_kv_heads, n = a.tokens_per_sequence, d = a.head_dim;
  const std::int64_t s_kv = a.cached_len + n, cap = a.capacity;
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(a.dtype == DType::bf16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  // q, out: [B * n, heads, d], token t = b n + i. k, v: the cache [B, capacity, kv_heads, d], its first
  // cached + n positions.
  const std::vector<std::int64_t> q_dim = {B, h, n, d}, q_stride = {n * h * d, d, h * d, 1};
  const std::vector<std::int64_t> kv_dim = {B, hk, s_kv, d}, kv_stride = {cap * hk * d, d, hk * d, 1};
  auto q = graph->tensor(fe::graph::Tensor_attributes().set_name("q").set_uid(kQ).set_dim(q_dim).set_stride(q_stride));
  auto k = graph->tensor(fe::graph::Tensor_attributes().set_name("k").set_uid(kK).set_dim(kv_dim).set_stride(kv_stride));
  auto v = graph->tensor(fe::graph::Tensor_attributes().set_name("v").set_uid(kV).set_dim(kv_dim).set_stride(kv_stride));
  auto options = fe::graph::SDPA_attributes().set_name("prefill_attention").set_generate_stats(false).set_attn_scale(a.scale);
  if (a.cached_len == 0) options.set_causal_mask(true);
  else options.set_causal_mask_bottom_right(true);
  auto [o, stats] = graph->sdpa(q, k, v, options);
  (void)stats;
  o->set_output(true).set_uid(kO).set_dim(q_dim).set_stride(q_stride);

  CachedGraph out;
  auto status = graph->build(handle, {fe::HeurMode_t::A});
  if (status.is_bad()) {
    out.unsupported = status.get_message();
    return out;
  }
  std::int64_t ws = 0;
  auto ws_status = graph->get_workspace_size(ws);
  if (ws_status.is_bad()) {
    out.unsupported = ws_status.get_message();
    return out;
  }
  out.graph = std::move(graph);
  out.workspace_bytes = ws;
  return out;
}

// Why the pass's shape is not one cuDNN's graph takes, or null.
const char* shape_refusal(const AttentionArgs& a) {
  if (a.cached_len < 0) return "the cached length is not known on the host (a captured decode step)";
  if (a.window != 0) return "a sliding window (our kernel applies it)";
  if (a.dtype != DType::bf16 && a.dtype != DType::f16) return "not bf16 or fp16";
  if (a.head_dim != 64 && a.head_dim != 128) return "head_dim is not 64 or 128";
  if (a.cached_len + a.tokens_per_sequence > a.capacity) return "the keys would run past the cache capacity";
  return nullptr;
}

// The shape and the library, with the state's mutex held.
bool fits_locked(CudnnState& s, const AttentionArgs& a, std::string* reason) {
  const char* why = shape_refusal(a);
  if (!why && !load_locked(s)) {
    if (reason) *reason = s.load_error;
    return false;
  }
  if (why && reason) *reason = why;
  return !why;
}

}  // namespace

bool cudnn_attention_fits(const AttentionArgs& a, std::string* reason) {
  CudnnState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return fits_locked(s, a, reason);
}

std::string attention_backend_summary() {
  if (attention_backend() == AttentionBackend::ours) return "ours (SAMOYEDS_ATTENTION=ours)";
  CudnnState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!load_locked(s)) return "ours (cuDNN: " + s.load_error + ")";
  return "cuDNN " + std::to_string(s.version) + " for prefill passes" +
         (attention_backend() == AttentionBackend::cudnn ? std::string(" (SAMOYEDS_ATTENTION=cudnn)")
                                                         : " of >= " + std::to_string(kCudnnMinQueryTokens) + " tokens");
}

bool cudnn_attention(const AttentionArgs& a, cudaStream_t stream, std::string* reason) {
  CudnnState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!fits_locked(s, a, reason)) return false;
  int device = 0;
  SAMOYEDS_CUDA_CHECK(cudaGetDevice(&device));
  std::uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &a.scale, sizeof(scale_bits));
  const GraphKey key{device, a.num_sequences, a.tokens_per_sequence, a.cached_len, a.num_heads, a.num_kv_heads,
                     a.head_dim, static_cast<int>(a.dtype), a.capacity, scale_bits};
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SAMOYEDS_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  auto it = s.graphs.find(key);
  if (it == s.graphs.end()) {
    if (capturing) {  // building allocates and may synchronise: not inside a capture
      if (reason) *reason = "no cuDNN graph was built for this shape before the stream capture";
      return false;
    }
    CachedGraph built;
    try {
      built = build_graph(a, handle_locked(s, device));
    } catch (const std::exception& e) {  // the frontend throws for some failures it does not return
      built = CachedGraph{};
      built.unsupported = e.what();
    }
    if (s.graphs.size() >= CudnnState::kMaxGraphs) {
      s.graphs.erase(s.lru.back());
      s.lru.pop_back();
    }
    it = s.graphs.emplace(key, std::move(built)).first;
    s.lru.push_front(key);
  } else {
    s.lru.remove(key);
    s.lru.push_front(key);
  }
  const CachedGraph& g = it->second;
  if (!g.graph) {
    if (reason) *reason = "cuDNN has no engine for this shape: " + g.unsupported;
    return false;
  }
  auto& ws = s.workspaces[device];
  if (ws.second < static_cast<std::size_t>(g.workspace_bytes)) {
    if (capturing) {
      if (reason) *reason = "the cuDNN workspace would have to grow inside a stream capture";
      return false;
    }
    if (ws.first) SAMOYEDS_CUDA_CHECK(cudaFree(ws.first));  // synchronises: no earlier pass still reads it
    ws = {nullptr, 0};
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&ws.first, static_cast<std::size_t>(g.workspace_bytes)));
    ws.second = static_cast<std::size_t>(g.workspace_bytes);
  }
  cudnnHandle_t handle = handle_locked(s, device);
  const cudnnStatus_t set = fe::detail::set_stream(handle, stream);
  SAMOYEDS_CHECK(set == CUDNN_STATUS_SUCCESS, "attention (cuDNN): cudnnSetStream failed with status ", static_cast<int>(set));
  std::unordered_map<std::int64_t, void*> pack = {{kQ, const_cast<void*>(a.q)},
                                                  {kK, const_cast<void*>(a.k_cache)},
                                                  {kV, const_cast<void*>(a.v_cache)},
                                                  {kO, a.out}};
  auto status = g.graph->execute(handle, pack, ws.first);
  SAMOYEDS_CHECK(status.is_good(), "attention (cuDNN): executing the graph failed: ", status.get_message(),
                 "; run with SAMOYEDS_ATTENTION=ours to use our kernel");
  SAMOYEDS_CHECK_LAUNCH("cuDNN SDPA");
  return true;
}

#else  // built without cuDNN's frontend

bool cudnn_attention_fits(const AttentionArgs&, std::string* reason) {
  if (reason)
    *reason = "this build has no cuDNN path (configure found no cudnn-frontend headers; scripts/build.sh fetches them)";
  return false;
}

bool cudnn_attention(const AttentionArgs& a, cudaStream_t, std::string* reason) { return cudnn_attention_fits(a, reason); }

std::string attention_backend_summary() {
  std::string why;
  cudnn_attention_fits(AttentionArgs{}, &why);
  return "ours (cuDNN: " + why + ")";
}

#endif

}  // namespace samoyeds::kernels
#endif  // SAMOYEDS_WITH_CUDA
