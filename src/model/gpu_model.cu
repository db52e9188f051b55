// SPDX-License-Identifier: Apache-2.0
// gpu::Model: the decoder stack on one stream. A pass runs nb sequences x n new tokens (T = nb * n):
//   embed -> per layer: RMSNorm -> QKV GEMM (fp32 out) -> bias + RoPE + cache append -> attention
//   -> O GEMM -> residual -> RMSNorm -> MoE layer | dense MLP -> residual [-> OpenMoE extra MLP]
//   -> (the sequences' last tokens) final norm -> LM head GEMM (fp32 logits) -> greedy argmax
//   -> seq_len += n.
// Positions come from seq_len on the device, so the same enqueued work is valid for every decode
// step: the sparse path captures one step into a CUDA graph and replays it. The activation buffers
// of a pass are carved from one workspace sized by start(); all MoE layers share one workspace.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>

#include "kernels/attention.h"
#include "kernels/cuda_check.h"
#include "kernels/decoder_ops.h"
#include "kernels/packed_device.h"
#include "kernels/skinny_xwt.h"
#include "model/random_weights.h"
#include "moe/moe_router.h"
#include "moe/workspace.h"
#include "samoyeds/gpu_model.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::gpu {

namespace {

constexpr int kAttentionSplits = 16;  // at most this many key-range splits per attention call

std::int64_t q_dim(const ModelConfig& c) { return c.num_attention_heads * c.head_dim; }
std::int64_t kv_dim(const ModelConfig& c) { return c.num_kv_heads * c.head_dim; }

// A weight on the device; upload() copies host matrices back to back (row blocks of one array).
struct DeviceWeight {
  moe::OwnedBuffer buffer;
  void* ptr() const { return buffer.ptr(); }
  std::size_t bytes() const { return buffer.bytes(); }
  void upload(std::initializer_list<const Matrix*> parts) {
    std::size_t total = 0;
    for (const Matrix* m : parts) total += m->bytes();
    if (total == 0) return;
    buffer.ensure(total);
    std::size_t at = 0;
    for (const Matrix* m : parts) {
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(static_cast<std::uint8_t*>(buffer.ptr()) + at, m->data(), m->bytes(),
                                     cudaMemcpyHostToDevice));
      at += m->bytes();
    }
  }
  void random(std::int64_t count, float mean, float stddev, DType dtype, std::uint64_t seed) {
    buffer.ensure(static_cast<std::size_t>(count) * dtype_size(dtype));
    kernels::fill_random_normal(buffer.ptr(), count, mean, stddev, dtype, seed, nullptr);
  }
};

// A dense gated MLP (DeepSeek's dense first layer, OpenMoE's extra MLP): gate|up(|gate_linear) stacked.
struct DenseMlp {
  DeviceWeight gate_up;  // [num_mats * I, H]
  DeviceWeight down;     // [H, I]
  std::int64_t width = 0;
  int num_mats = 2;
};

struct Layer {
  DeviceWeight input_norm, post_norm;  // [H]
  DeviceWeight qkv;                    // [q_dim + 2 kv_dim, H]
  DeviceWeight qkv_bias;               // [q_dim + 2 kv_dim] or empty
  DeviceWeight o;                      // [H, q_dim]
  std::optional<MoeLayer> moe;
  std::optional<DenseMoeLayer> dense_moe;
  std::optional<DenseMlp> mlp;
  DeviceWeight extra_norm;             // OpenMoE
  std::optional<DenseMlp> extra_mlp;
};

// Activation buffers of one pass of up to `tokens` tokens over up to `sequences` sequences.
struct PassBuffers {
  std::int32_t* token_ids = nullptr;  // [tokens]
  void* x = nullptr;                  // [tokens, H] the residual stream
  void* normed = nullptr;             // [tokens, H]
  void* branch = nullptr;             // [tokens, H] attention / FFN output
  float* qkv = nullptr;               // [tokens, q_dim + 2 kv_dim] fp32
  void* q = nullptr;                  // [tokens, q_dim]
  void* attended = nullptr;           // [tokens, q_dim]
  void* attention_partials = nullptr; // split-KV partials (kernels::attention_workspace_bytes)
  std::size_t attention_partials_bytes = 0;
  void* mlp_gu = nullptr;             // [tokens, 3 I_dense]
  void* mlp_a = nullptr;              // [tokens, I_dense]
  void* moe_workspace = nullptr;
  std::size_t moe_workspace_bytes = 0;
  void* last_rows = nullptr;          // [sequences, H]
  void* last_normed = nullptr;        // [sequences, H]
  float* logits = nullptr;            // [sequences, vocab] fp32
  std::int32_t* next_tokens = nullptr;  // [sequences]
  std::int32_t* seq_len = nullptr;      // [sequences]
  std::int32_t* step = nullptr;         // [1]
  std::size_t total = 0;
};

}  // namespace

struct Model::Impl {
  ModelConfig config;
  DType dtype = DType::bf16;
  ModelOptions options;
  std::deque<Layer> layers;  // deque: layers hold device buffers and never move
  DeviceWeight embedding;   // [vocab, H]
  DeviceWeight final_norm;  // [H]
  DeviceWeight lm_head;     // [vocab, H], empty when tied
  std::size_t moe_bytes = 0;  // experts (and routers) of every layer, counted at construction

  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;

  // State of start().
  int num_sequences = 0;
  std::int64_t capacity = 0, length = 0;
  std::int64_t pass_tokens = 0;  // tokens per pass the workspace holds
  moe::OwnedBuffer kv;           // [layers][2][B, capacity, kv_heads, d]
  moe::OwnedBuffer workspace;
  PassBuffers buffers;
  moe::OwnedBuffer all_logits;   // [T, vocab] fp32, for forward(all_logits)
  moe::OwnedBuffer history;      // [steps, B] int32, for decode()
  std::int64_t history_steps = 0;
  cudaGraphExec_t decode_graph = nullptr;
  int active_layers = 0;  // layers a pass runs (all unless set_active_layers)
  // A step that failed part-way may have advanced some sequences' device-side lengths: until clear()
  // or start(), no further step runs (the host's `length` no longer describes the caches).
  bool needs_clear = false;
  moe::OwnedBuffer step_ids;     // [B * n] int32: a step's token ids, copied once per step

  Impl(const ModelConfig& c, DType d, const ModelOptions& o) : config(c), dtype(d), options(o) {
    config.validate();
    SAMOYEDS_CHECK(options.max_step_tokens >= 1, "gpu::Model: max_step_tokens must be at least 1");
    const char* reason = nullptr;
    SAMOYEDS_CHECK(kernels::attention_supported(static_cast<int>(c.head_dim), c.num_attention_heads, c.num_kv_heads, 1,
                                                d, &reason),
                   "gpu::Model: ", c.display_name, ": ", reason);
    SAMOYEDS_CHECK(c.hidden_size % 8 == 0 && c.hidden_size <= 8192, "gpu::Model: H = ", c.hidden_size,
                   " must be a multiple of 8 and at most 8192 (the GPU RMSNorm keeps a row in registers)");
    SAMOYEDS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    SAMOYEDS_CUBLAS_CHECK(cublasCreate(&cublas));
    // A fixed cuBLAS workspace: nothing allocates inside a step, so a step can be captured.
    constexpr std::size_t kCublasWorkspaceBytes = 32u << 20;
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&cublas_workspace, kCublasWorkspaceBytes));
    SAMOYEDS_CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_workspace, kCublasWorkspaceBytes));
    SAMOYEDS_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  }
  ~Impl() {
    if (decode_graph) cudaGraphExecDestroy(decode_graph);
    if (cublas) cublasDestroy(cublas);
    cudaFree(cublas_workspace);
    if (stream) cudaStreamDestroy(stream);
  }

  float branch_scale() const {
    return config.scale_depth > 0.0 ? static_cast<float>(config.scale_depth / std::sqrt(static_cast<double>(config.num_layers)))
                                    : 1.0f;
  }

  std::size_t weight_bytes() const {
    std::size_t bytes = embedding.bytes() + final_norm.bytes() + lm_head.bytes() + moe_bytes;
    for (const Layer& l : layers) {
      bytes += l.input_norm.bytes() + l.post_norm.bytes() + l.qkv.bytes() + l.qkv_bias.bytes() + l.o.bytes() +
               l.extra_norm.bytes();
      for (const auto* mlp : {&l.mlp, &l.extra_mlp})
        if (*mlp) bytes += (*mlp)->gate_up.bytes() + (*mlp)->down.bytes();
    }
    return bytes;
  }

  // --- workspace -----------------------------------------------------------------------------------

  std::int64_t dense_width() const {
    std::int64_t w = 0;
    for (const Layer& l : layers)
      for (const auto* mlp : {&l.mlp, &l.extra_mlp})
        if (*mlp) w = std::max(w, (*mlp)->width);
    return w;
  }

  // One workspace serves every MoE layer (they run one after another, all of one shape) and every pass
  // of up to T tokens. A layer's need is not monotonic in the token count (the split-K plan, and with
  // it the fp32 partials, changes with it), so this is the largest need over 1..T tokens.
  std::size_t moe_workspace_for(std::int64_t T) const {
    const MoeLayer* sparse = nullptr;
    const DenseMoeLayer* dense_layer = nullptr;
    for (const Layer& l : layers) {
      if (l.moe && !sparse) sparse = &*l.moe;
      if (l.dense_moe && !dense_layer) dense_layer = &*l.dense_moe;
    }
    std::size_t bytes = 0;
    if (dense_layer) bytes = dense_layer->workspace_bytes(T);  // no split-K: grows with T
    if (sparse)
      for (std::int64_t t = 1; t <= T; ++t) bytes = std::max(bytes, sparse->workspace_bytes(t));
    return bytes;
  }

  PassBuffers carve(void* base, std::int64_t T, int B) const {
    moe::WorkspaceCarver c(base);
    const std::int64_t H = config.hidden_size;
    const std::size_t e = dtype_size(dtype);
    auto half = [&](std::int64_t count) { return c.take_bytes(static_cast<std::size_t>(count) * e); };
    PassBuffers b;
    b.token_ids = c.take<std::int32_t>(T);
    b.x = half(T * H);
    b.normed = half(T * H);
    b.branch = half(T * H);
    b.qkv = c.take<float>(T * (q_dim(config) + 2 * kv_dim(config)));
    b.q = half(T * q_dim(config));
    b.attended = half(T * q_dim(config));
    // Split-KV partials for steps of up to 128 tokens (decode); larger steps have CTAs enough unsplit.
    b.attention_partials_bytes = kernels::attention_workspace_bytes(std::min<std::int64_t>(T, 128) * config.num_attention_heads,
                                                                    static_cast<int>(config.head_dim), kAttentionSplits);
    b.attention_partials = c.take_bytes(b.attention_partials_bytes);
    const std::int64_t width = dense_width();
    if (width > 0) {
      b.mlp_gu = half(T * 3 * width);
      b.mlp_a = half(T * width);
    }
    b.moe_workspace_bytes = moe_workspace_for(T);
    b.moe_workspace = c.take_bytes(b.moe_workspace_bytes);
    b.last_rows = half(static_cast<std::int64_t>(B) * H);
    b.last_normed = half(static_cast<std::int64_t>(B) * H);
    b.logits = c.take<float>(static_cast<std::int64_t>(B) * config.vocab_size);
    b.next_tokens = c.take<std::int32_t>(B);
    b.seq_len = c.take<std::int32_t>(B);
    b.step = c.take<std::int32_t>(1);
    b.total = c.used();
    return b;
  }

  // Tokens per pass: max_step_tokens, or fewer when the caches cannot hold that many.
  std::int64_t pass_tokens_for(int B, std::int64_t cap) const {
    return std::min<std::int64_t>(options.max_step_tokens, static_cast<std::int64_t>(B) * cap);
  }

  std::size_t workspace_bytes(int B, std::int64_t cap) const {
    return carve(nullptr, pass_tokens_for(B, cap), B).total;
  }

  std::size_t kv_bytes(int B, std::int64_t cap) const {
    return static_cast<std::size_t>(layers.size()) * 2 * static_cast<std::size_t>(B) * static_cast<std::size_t>(cap) *
           static_cast<std::size_t>(kv_dim(config)) * dtype_size(dtype);
  }

  void* cache(int layer, int which, int first_sequence) const {  // which: 0 keys, 1 values
    const std::size_t per_tensor = kv_bytes(num_sequences, capacity) / layers.size() / 2;
    const std::size_t sequence_bytes = static_cast<std::size_t>(capacity) * kv_dim(config) * dtype_size(dtype);
    return static_cast<std::uint8_t*>(kv.ptr()) + (static_cast<std::size_t>(layer) * 2 + which) * per_tensor +
           static_cast<std::size_t>(first_sequence) * sequence_bytes;
  }

  void drop_graph() {
    if (decode_graph) SAMOYEDS_CUDA_CHECK(cudaGraphExecDestroy(decode_graph));
    decode_graph = nullptr;
  }

  void stop() {
    drop_graph();
    SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
    kv.release();
    workspace.release();
    all_logits.release();
    history.release();
    step_ids.release();
    history_steps = 0;
    num_sequences = 0;
    capacity = length = 0;
    pass_tokens = 0;
    buffers = PassBuffers{};
    needs_clear = false;
  }

  void start(int B, std::int64_t cap) {
    SAMOYEDS_CHECK(B >= 1 && B <= 65535, "gpu::Model::start: num_sequences must be in [1, 65535], got ", B);
    SAMOYEDS_CHECK(cap >= 1 && cap <= INT32_MAX, "gpu::Model::start: capacity must be in [1, 2^31), got ", cap);
    stop();  // the old caches go before the new ones are allocated
    try {
      const std::int64_t tokens = pass_tokens_for(B, cap);
      kv.ensure(kv_bytes(B, cap));
      workspace.ensure(carve(nullptr, tokens, B).total);
      // Committed only now: a failed allocation leaves the model stopped, not half started.
      num_sequences = B;
      capacity = cap;
      pass_tokens = tokens;
      buffers = carve(workspace.ptr(), pass_tokens, B);
    } catch (...) {
      stop();
      throw;
    }
    clear();
  }

  void clear() {
    SAMOYEDS_CHECK(num_sequences > 0, "gpu::Model: call start() first");
    SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(buffers.seq_len, 0, sizeof(std::int32_t) * num_sequences, stream));
    // Zeroed caches: a kernel bug that read an unwritten position would see zeros, not stale keys.
    SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(kv.ptr(), 0, kv_bytes(num_sequences, capacity), stream));
    length = 0;
    needs_clear = false;
  }

  void check_usable(const char* who) const {
    SAMOYEDS_CHECK(num_sequences > 0, who, ": call start(num_sequences, capacity) first");
    SAMOYEDS_CHECK(!needs_clear, who, ": an earlier step failed part-way; call clear() or start() before the next one");
  }

  // --- one pass ------------------------------------------------------------------------------------

  // y [T, N] = x [T, K] · w [N, K]^T for the attention projections: at decode sizes (T <= 8) our
  // skinny kernel (cuBLAS split the O projection over K and added a reduce: 15.6 µs for 7.8 µs of
  // weight bytes, docs/model.md), cuBLAS otherwise. Both paths of the comparison run this.
  void project(const void* w, const void* x, void* y, DType y_dtype, std::int64_t N, std::int64_t T, std::int64_t K) {
    if (T <= kSkinnyProjectionTokens && kernels::skinny_xwt_fits(x, w, K)) {
      kernels::skinny_xwt(x, w, y, y_dtype, T, N, K, dtype, stream);
    } else {
      moe::gemm_xwt(cublas, dtype, w, x, y, y_dtype, N, T, K);
    }
  }
  static constexpr std::int64_t kSkinnyProjectionTokens = 8;  // one token tile: each weight row read once

  void mlp_forward(const DenseMlp& mlp, const void* x, void* y, std::int64_t T) {
    moe::gemm_xwt(cublas, dtype, mlp.gate_up.ptr(), x, buffers.mlp_gu, dtype, mlp.num_mats * mlp.width, T,
                  config.hidden_size);
    kernels::silu_mul(buffers.mlp_gu, buffers.mlp_a, nullptr, T, mlp.width, mlp.num_mats, dtype, stream);
    moe::gemm_xwt(cublas, dtype, mlp.down.ptr(), buffers.mlp_a, y, dtype, config.hidden_size, T, mlp.width);
  }

  // A sublayer's residual add not yet applied to buffers.x: x += scale * buffers.branch. The add is
  // fused into the next norm (one pass over x instead of two launches and three).
  struct PendingResidual {
    bool pending = false;
    float scale = 1.0f;
  };

  // normed = rms_norm(x) with `weight`, after the pending residual add if there is one.
  void add_and_norm(PendingResidual& residual, const void* weight, std::int64_t T) {
    PassBuffers& b = buffers;
    const std::int64_t H = config.hidden_size;
    if (residual.pending) {
      kernels::add_residual_rms_norm(b.x, b.branch, residual.scale, weight, b.normed, T, H, config.rms_norm_eps, 1.0f, dtype,
                                     stream);
    } else {
      kernels::rms_norm(b.x, weight, b.normed, T, H, config.rms_norm_eps, 1.0f, dtype, stream);
    }
    residual.pending = false;
  }

  // Leaves the layer's last residual add pending in `residual` (the next layer's norm applies it).
  void layer_forward(int index, int s0, int nb, int n, std::int64_t cached_len, PendingResidual& residual) {
    Layer& l = layers[static_cast<std::size_t>(index)];
    const std::int64_t T = static_cast<std::int64_t>(nb) * n, H = config.hidden_size;
    const float scale = branch_scale();
    PassBuffers& b = buffers;
    add_and_norm(residual, l.input_norm.ptr(), T);
    project(l.qkv.ptr(), b.normed, b.qkv, DType::f32, q_dim(config) + 2 * kv_dim(config), T, H);
    kernels::QkvRopeArgs r;
    r.qkv = b.qkv;
    r.bias = l.qkv_bias.ptr();
    r.q_out = b.q;
    r.k_cache = cache(index, 0, s0);
    r.v_cache = cache(index, 1, s0);
    r.seq_len = b.seq_len + s0;
    r.num_sequences = nb;
    r.tokens_per_sequence = n;
    r.num_heads = config.num_attention_heads;
    r.num_kv_heads = config.num_kv_heads;
    r.head_dim = static_cast<int>(config.head_dim);
    r.capacity = capacity;
    r.rope_theta = config.rope_theta;
    r.dtype = dtype;
    kernels::qkv_rope_append(r, stream);
    kernels::AttentionArgs a;
    a.q = b.q;
    a.k_cache = r.k_cache;
    a.v_cache = r.v_cache;
    a.out = b.attended;
    a.seq_len = r.seq_len;
    a.num_sequences = nb;
    a.tokens_per_sequence = n;
    a.num_heads = config.num_attention_heads;
    a.num_kv_heads = config.num_kv_heads;
    a.head_dim = static_cast<int>(config.head_dim);
    a.capacity = capacity;
    a.window = config.sliding_window;
    a.scale = static_cast<float>(config.softmax_scale());
    a.dtype = dtype;
    a.cached_len = cached_len;
    a.max_splits = kAttentionSplits;
    a.workspace_bytes = b.attention_partials_bytes;
    const std::int64_t partial_rows = static_cast<std::int64_t>(a.workspace_bytes / ((config.head_dim + 2) * sizeof(float)));
    a.partial_o = static_cast<float*>(b.attention_partials);
    a.partial_ml = a.partial_o + partial_rows * config.head_dim;
    kernels::attention(a, stream);
    project(l.o.ptr(), b.attended, b.branch, dtype, H, T, q_dim(config));
    residual = {true, scale};

    add_and_norm(residual, l.post_norm.ptr(), T);
    if (l.moe) l.moe->forward(b.normed, b.branch, T, b.moe_workspace, b.moe_workspace_bytes, stream);
    else if (l.dense_moe) l.dense_moe->forward(b.normed, b.branch, T, b.moe_workspace, b.moe_workspace_bytes, stream);
    else mlp_forward(*l.mlp, b.normed, b.branch, T);
    residual = {true, scale};
    if (l.extra_mlp) {
      add_and_norm(residual, l.extra_norm.ptr(), T);
      mlp_forward(*l.extra_mlp, b.normed, b.branch, T);
      residual = {true, 1.0f};
    }
  }

  float final_scale() const {
    return config.dim_model_base > 0
               ? static_cast<float>(config.dim_model_base) / static_cast<float>(config.hidden_size)
               : 1.0f;
  }
  const void* head() const { return config.tie_word_embeddings ? embedding.ptr() : lm_head.ptr(); }

  // One pass: sequences [s0, s0 + nb) each append n tokens whose ids are in buffers.token_ids. With
  // `last`, the pass ends these sequences' step: their logits and greedy next tokens are written.
  // With logits_all, every token's logits go there instead ([nb * n, vocab]). cached_len: the positions
  // each of these sequences holds before the pass when the host knows them (-1: a decode step, whose
  // lengths live on the device so that its captured graph stays valid).
  void pass(int s0, int nb, int n, bool last, float* logits_all, std::int64_t cached_len) {
    const std::int64_t T = static_cast<std::int64_t>(nb) * n, H = config.hidden_size;
    PassBuffers& b = buffers;
    kernels::embed(b.token_ids, embedding.ptr(), b.x, T, H, config.vocab_size, static_cast<float>(config.scale_emb),
                   dtype, nullptr, stream);  // ids were checked on the host or come from argmax
    PendingResidual residual;
    for (int l = 0; l < active_layers; ++l) layer_forward(l, s0, nb, n, cached_len, residual);
    // The last layer's add: x itself is read below (every token's row, or the last ones).
    if (residual.pending) kernels::add_residual(b.x, b.branch, b.x, T * H, residual.scale, dtype, stream);
    if (logits_all) {
      kernels::rms_norm(b.x, final_norm.ptr(), b.normed, T, H, config.rms_norm_eps, final_scale(), dtype, stream);
      moe::gemm_xwt(cublas, dtype, head(), b.normed, logits_all, DType::f32, config.vocab_size, T, H);
    }
    if (last) {
      const std::size_t row = static_cast<std::size_t>(s0) * H * dtype_size(dtype);
      void* rows = static_cast<std::uint8_t*>(b.last_rows) + row;
      void* normed = static_cast<std::uint8_t*>(b.last_normed) + row;
      float* logits = b.logits + static_cast<std::int64_t>(s0) * config.vocab_size;
      kernels::gather_last_tokens(b.x, rows, nb, n, H, dtype, stream);
      kernels::rms_norm(rows, final_norm.ptr(), normed, nb, H, config.rms_norm_eps, final_scale(), dtype, stream);
      moe::gemm_xwt(cublas, dtype, head(), normed, logits, DType::f32, config.vocab_size, nb, H);
      kernels::argmax_rows(logits, nb, config.vocab_size, b.next_tokens + s0, stream);
    }
    kernels::advance(b.seq_len + s0, nb, n, stream);
  }

  void check_step(std::size_t num_ids, std::int64_t& n) const {
    check_usable("gpu::Model");
    SAMOYEDS_CHECK(num_ids > 0 && num_ids % static_cast<std::size_t>(num_sequences) == 0, "gpu::Model: ", num_ids,
                   " token ids for ", num_sequences, " sequences; pass the same number n >= 1 for each ([B, n])");
    n = static_cast<std::int64_t>(num_ids / static_cast<std::size_t>(num_sequences));
    SAMOYEDS_CHECK(length + n <= capacity, "gpu::Model: ", n, " more tokens would make the sequences ", length + n,
                   " positions long; the KV cache holds ", capacity, " (start() with a larger capacity)");
  }

  void check_ids(std::span<const std::int32_t> ids) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      SAMOYEDS_CHECK(ids[i] >= 0 && ids[i] < config.vocab_size, "gpu::Model: token id ", ids[i], " (at ", i,
                     ") is not in [0, ", config.vocab_size, ")");
  }

  // A whole step on the host's token ids, in passes of at most pass_tokens tokens.
  void step(std::span<const std::int32_t> ids, float* logits_all) {
    std::int64_t n = 0;
    check_step(ids.size(), n);
    check_ids(ids);
    const int B = num_sequences;
    const std::int64_t chunk = std::min<std::int64_t>(n, pass_tokens);
    const int group = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(B, pass_tokens / chunk)));
    SAMOYEDS_CHECK(!logits_all || (chunk == n && group == B), "gpu::Model::forward: every token's logits need one pass: ",
                   static_cast<std::int64_t>(B) * n, " tokens exceed max_step_tokens = ", pass_tokens);
    // All ids to the device once; each pass takes its [nb, len] block with one 2-D device copy.
    step_ids.ensure(ids.size_bytes());
    auto* all_ids = static_cast<std::int32_t*>(step_ids.ptr());
    needs_clear = true;  // until every pass is queued: a throw leaves lengths the host does not know
    SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(all_ids, ids.data(), ids.size_bytes(), cudaMemcpyHostToDevice, stream));
    for (std::int64_t p0 = 0; p0 < n; p0 += chunk) {
      const int len = static_cast<int>(std::min(chunk, n - p0));
      for (int s0 = 0; s0 < B; s0 += group) {
        const int nb = std::min(group, B - s0);
        SAMOYEDS_CUDA_CHECK(cudaMemcpy2DAsync(buffers.token_ids, len * sizeof(std::int32_t), all_ids + s0 * n + p0,
                                              static_cast<std::size_t>(n) * sizeof(std::int32_t), len * sizeof(std::int32_t),
                                              nb, cudaMemcpyDeviceToDevice, stream));
        pass(s0, nb, len, p0 + len == n, logits_all, length + p0);
      }
    }
    // The host copy of `ids` may be reused by the caller as soon as this returns.
    SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
    needs_clear = false;
    length += n;
  }

  // --- decode --------------------------------------------------------------------------------------

  // One decode step from buffers.next_tokens (device): every sequence appends its next token.
  void enqueue_decode_step() {
    const int B = num_sequences;
    const int group = static_cast<int>(std::min<std::int64_t>(B, pass_tokens));
    for (int s0 = 0; s0 < B; s0 += group) {
      const int nb = std::min(group, B - s0);
      SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(buffers.token_ids, buffers.next_tokens + s0, sizeof(std::int32_t) * nb,
                                          cudaMemcpyDeviceToDevice, stream));
      pass(s0, nb, 1, true, nullptr, -1);
    }
    kernels::record_tokens(buffers.next_tokens, B, static_cast<std::int32_t*>(history.ptr()), buffers.step, stream);
  }
};

// --- construction ----------------------------------------------------------------------------------

namespace {

void upload_mlp(DenseMlp& out, const DenseExpert& mlp) {
  out.width = mlp.gate.rows();
  out.num_mats = mlp.gate_linear.empty() ? 2 : 3;
  if (out.num_mats == 2) out.gate_up.upload({&mlp.gate, &mlp.up});
  else out.gate_up.upload({&mlp.gate, &mlp.up, &mlp.gate_linear});
  out.down.upload({&mlp.down});
}

void random_mlp(DenseMlp& out, const ModelConfig& c, std::int64_t width, DType dtype, std::uint64_t seed) {
  const std::int64_t H = c.hidden_size;
  out.width = width;
  out.num_mats = c.activation == ExpertActivation::openmoe_swiglu ? 3 : 2;
  out.gate_up.random(out.num_mats * width * H, 0.0f, 1.0f / std::sqrt(static_cast<float>(H)), dtype, seed);
  out.down.random(H * width, 0.0f, 1.0f / std::sqrt(static_cast<float>(width)), dtype, seed + 1);
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->active_layers = static_cast<int>(impl_->layers.size()); }

Model::Model(const ModelConfig& config, const ModelWeights& weights, const ModelOptions& options) {
  check_model(config, weights);
  impl_ = std::make_unique<Impl>(config, weights.embedding.dtype(), options);
  Impl& m = *impl_;
  m.active_layers = static_cast<int>(weights.layers.size());
  m.embedding.upload({&weights.embedding});
  m.final_norm.upload({&weights.final_norm});
  if (!config.tie_word_embeddings) m.lm_head.upload({&weights.lm_head});
  for (const DecoderLayerWeights& w : weights.layers) {
    Layer& l = m.layers.emplace_back();
    l.input_norm.upload({&w.input_norm});
    l.post_norm.upload({&w.post_attention_norm});
    const AttentionWeights& a = w.attention;
    l.qkv.upload({&a.q, &a.k, &a.v});
    if (config.attention_bias) l.qkv_bias.upload({&a.q_bias, &a.k_bias, &a.v_bias});
    l.o.upload({&a.o});
    if (w.moe) {
      MoeLayer sparse(config, *w.moe, options.path);
      m.moe_bytes += sparse.weight_bytes() + w.moe->router.bytes() + w.moe->shared_gate.bytes();
      if (options.dense) {
        l.dense_moe.emplace(sparse);
        m.moe_bytes += l.dense_moe->weight_bytes() - sparse.weight_bytes();
      } else {
        l.moe.emplace(std::move(sparse));
      }
    } else {
      upload_mlp(l.mlp.emplace(), *w.mlp);
    }
    if (w.extra_mlp) {
      l.extra_norm.upload({&w.extra_norm});
      upload_mlp(l.extra_mlp.emplace(), *w.extra_mlp);
    }
  }
}

Model Model::synthetic(const ModelConfig& config, int num_layers, DType dtype, const SparsityPattern& pattern,
                       std::uint64_t seed, const ModelOptions& options, const std::function<void(int, int)>& progress) {
  config.validate();
  SAMOYEDS_CHECK(num_layers >= 1 && num_layers <= config.num_layers, config.display_name, " has ", config.num_layers,
                 " layers; asked for ", num_layers);
  SAMOYEDS_CHECK(is_half_precision(dtype), "gpu::Model::synthetic: bf16 or fp16, got ", dtype_name(dtype));
  auto impl = std::make_unique<Impl>(config, dtype, options);
  Impl& m = *impl;
  const std::int64_t H = config.hidden_size, V = config.vocab_size;
  const float in_std = 1.0f / std::sqrt(static_cast<float>(H));
  // Each weight draws from its own seed: seed * 64 + a per-layer, per-matrix salt.
  auto salt = [&](int layer, int what) { return (seed * 1024 + static_cast<std::uint64_t>(layer + 1)) * 64 + what; };
  m.embedding.random(V * H, 0.0f, 1.0f, dtype, salt(-1, 0));
  m.final_norm.random(H, 1.0f, 0.1f, dtype, salt(-1, 1));
  if (!config.tie_word_embeddings) m.lm_head.random(V * H, 0.0f, in_std, dtype, salt(-1, 2));
  const std::int64_t qkv_rows = q_dim(config) + 2 * kv_dim(config);
  for (int layer = 0; layer < num_layers; ++layer) {
    Layer& l = m.layers.emplace_back();
    l.input_norm.random(H, 1.0f, 0.1f, dtype, salt(layer, 0));
    l.post_norm.random(H, 1.0f, 0.1f, dtype, salt(layer, 1));
    l.qkv.random(qkv_rows * H, 0.0f, in_std, dtype, salt(layer, 2));
    if (config.attention_bias) l.qkv_bias.random(qkv_rows, 0.0f, 0.1f, dtype, salt(layer, 3));
    l.o.random(H * q_dim(config), 0.0f, 1.0f / std::sqrt(static_cast<float>(q_dim(config))), dtype, salt(layer, 4));
    if (config.is_moe_layer(layer)) {
      MoeLayer sparse = MoeLayer::synthetic(config, dtype, pattern, salt(layer, 5), options.path);
      m.moe_bytes += sparse.weight_bytes() + static_cast<std::size_t>(config.num_experts * H) * 2;
      if (options.dense) {
        l.dense_moe.emplace(sparse);
        m.moe_bytes += l.dense_moe->weight_bytes() - sparse.weight_bytes();
      } else {
        l.moe.emplace(std::move(sparse));
      }
      if (config.extra_dense_mlp) {
        l.extra_norm.random(H, 1.0f, 0.1f, dtype, salt(layer, 6));
        random_mlp(l.extra_mlp.emplace(), config, config.dense_intermediate_size, dtype, salt(layer, 7));
      }
    } else {
      random_mlp(l.mlp.emplace(), config, config.dense_intermediate_size, dtype, salt(layer, 8));
    }
    SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
    if (progress) progress(layer + 1, num_layers);
  }
  return Model(std::move(impl));
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const ModelConfig& Model::config() const { return impl_->config; }
int Model::num_layers() const { return static_cast<int>(impl_->layers.size()); }
bool Model::dense() const { return impl_->options.dense; }
DType Model::dtype() const { return impl_->dtype; }
std::size_t Model::weight_bytes() const { return impl_->weight_bytes(); }
std::size_t Model::kv_cache_bytes(int num_sequences, std::int64_t capacity) const {
  return impl_->kv_bytes(num_sequences, capacity);
}
std::size_t Model::workspace_bytes(int num_sequences, std::int64_t capacity) const {
  return impl_->workspace_bytes(num_sequences, capacity);
}
void Model::start(int num_sequences, std::int64_t capacity) { impl_->start(num_sequences, capacity); }
void Model::clear() { impl_->clear(); }
void Model::stop() { impl_->stop(); }
void Model::set_active_layers(int n) {
  SAMOYEDS_CHECK(n >= 1 && n <= num_layers(), "gpu::Model::set_active_layers: n must be in [1, ", num_layers(), "], got ", n);
  // Layers switched on later would lack the cached positions their predecessors already count.
  SAMOYEDS_CHECK(n <= impl_->active_layers || impl_->length == 0, "gpu::Model::set_active_layers: raising the layer count ",
                 "from ", impl_->active_layers, " to ", n, " needs empty sequences (clear() first)");
  if (n != impl_->active_layers) impl_->drop_graph();
  impl_->active_layers = n;
}
int Model::active_layers() const { return impl_->active_layers; }
int Model::num_sequences() const { return impl_->num_sequences; }
std::int64_t Model::capacity() const { return impl_->capacity; }
std::int64_t Model::length() const { return impl_->length; }
void Model::synchronize() const { SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(impl_->stream)); }

Matrix Model::forward(std::span<const std::int32_t> token_ids, bool all_logits) {
  Impl& m = *impl_;
  const std::int64_t V = m.config.vocab_size;
  const std::int64_t T = static_cast<std::int64_t>(token_ids.size());
  SAMOYEDS_CHECK(!all_logits || T <= m.pass_tokens || m.num_sequences == 0, "gpu::Model::forward: every token's logits ",
                 "need one pass: ", T, " tokens exceed max_step_tokens = ", m.pass_tokens);
  if (all_logits && m.num_sequences > 0) m.all_logits.ensure(static_cast<std::size_t>(T * V) * sizeof(float));
  m.step(token_ids, all_logits ? static_cast<float*>(m.all_logits.ptr()) : nullptr);
  const std::int64_t rows = all_logits ? T : m.num_sequences;
  Matrix logits(DType::f32, rows, V);
  SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(logits.data(), all_logits ? m.all_logits.ptr() : m.buffers.logits, logits.bytes(),
                                      cudaMemcpyDeviceToHost, m.stream));
  synchronize();
  return logits;
}

std::vector<std::int32_t> Model::prefill(std::span<const std::int32_t> token_ids) {
  Impl& m = *impl_;
  m.step(token_ids, nullptr);
  std::vector<std::int32_t> next(static_cast<std::size_t>(m.num_sequences));
  SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(next.data(), m.buffers.next_tokens, next.size() * sizeof(std::int32_t),
                                      cudaMemcpyDeviceToHost, m.stream));
  synchronize();
  return next;
}

std::vector<std::int32_t> Model::decode(std::span<const std::int32_t> tokens, int steps, bool use_graph) {
  Impl& m = *impl_;
  m.check_usable("gpu::Model::decode");
  SAMOYEDS_CHECK(static_cast<std::int64_t>(tokens.size()) == m.num_sequences, "gpu::Model::decode: ", tokens.size(),
                 " tokens for ", m.num_sequences, " sequences; pass one per sequence");
  SAMOYEDS_CHECK(steps >= 0, "gpu::Model::decode: steps must be >= 0, got ", steps);
  SAMOYEDS_CHECK(m.length + steps <= m.capacity, "gpu::Model::decode: ", steps, " steps would make the sequences ",
                 m.length + steps, " positions long; the KV cache holds ", m.capacity);
  SAMOYEDS_CHECK(!use_graph || !m.options.dense, "gpu::Model::decode: the dense path cannot be captured in a graph ",
                 "(cuBLAS needs the expert sizes on the host); pass use_graph = false");
  m.check_ids(tokens);
  const int B = m.num_sequences;
  std::vector<std::int32_t> picked(static_cast<std::size_t>(steps) * B);
  if (steps == 0) return picked;
  if (steps > m.history_steps) {
    m.drop_graph();  // a new history buffer moves the pointer the graph recorded
    m.history.ensure(static_cast<std::size_t>(steps) * B * sizeof(std::int32_t));
    m.history_steps = steps;
  }
  SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(m.buffers.next_tokens, tokens.data(), tokens.size_bytes(), cudaMemcpyHostToDevice,
                                      m.stream));
  SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(m.buffers.step, 0, sizeof(std::int32_t), m.stream));
  if (use_graph && !m.decode_graph) {
    cudaGraph_t graph = nullptr;
    SAMOYEDS_CUDA_CHECK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
    try {
      m.enqueue_decode_step();
    } catch (...) {
      cudaStreamEndCapture(m.stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    SAMOYEDS_CUDA_CHECK(cudaStreamEndCapture(m.stream, &graph));
    const cudaError_t made = cudaGraphInstantiate(&m.decode_graph, graph, 0);
    cudaGraphDestroy(graph);
    SAMOYEDS_CUDA_CHECK(made);
  }
  m.needs_clear = true;  // until every step is queued
  for (int s = 0; s < steps; ++s) {
    if (use_graph) SAMOYEDS_CUDA_CHECK(cudaGraphLaunch(m.decode_graph, m.stream));
    else m.enqueue_decode_step();
  }
  m.needs_clear = false;
  m.length += steps;
  SAMOYEDS_CUDA_CHECK(cudaMemcpyAsync(picked.data(), m.history.ptr(), picked.size() * sizeof(std::int32_t),
                                      cudaMemcpyDeviceToHost, m.stream));
  synchronize();
  return picked;
}

void device_memory(std::size_t& free_bytes, std::size_t& total_bytes) {
  SAMOYEDS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
}

}  // namespace samoyeds::gpu
