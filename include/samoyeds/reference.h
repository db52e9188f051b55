// SPDX-License-Identifier: Apache-2.0
// CPU reference implementations: the oracle for every GPU kernel and the fallback without a GPU.
// Each function is the twin of one kernel and has its meaning exactly: fp32 arithmetic over bf16/fp16
// storage, results rounded once to the output dtype at the point where the kernel writes them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "samoyeds/decoder.h"
#include "samoyeds/format.h"
#include "samoyeds/matrix.h"
#include "samoyeds/moe.h"
#include "samoyeds/routing.h"
#include "samoyeds/tokens.h"

namespace samoyeds::reference {

// Plain product: Y[j, :] = Ŵ · X[tokens[j], :].  W [M, K] packed, X [T, K] -> Y [L, M] in out_dtype
// (fp32 for the exact tier).
Matrix ssmm(const PackedMatrix& w, const Matrix& x, const Tokens& tokens, DType out_dtype);

// Gate/up fused: A[j, :] = SiLU(Ŵ_gate · x_j) ⊙ (Ŵ_up · x_j), x_j = X[tokens[j], :]  -> A [L, I].
// With gate_linear (OpenMoE's gated SwiGLU): A[j, :] = (Ŵ_gate_linear · x_j) ⊙ SiLU(Ŵ_gate · x_j) ⊙ (Ŵ_up · x_j).
// SiLU and the products in fp32; A rounded once to out_dtype.
Matrix ssmm_gate_up(const PackedMatrix& gate, const PackedMatrix& up, const Matrix& x, const Tokens& tokens,
                    DType out_dtype, const PackedMatrix* gate_linear = nullptr);

// Down, weighted: Y[j, :] = slot_weight[j] · (Ŵ_down · A[j, :]).  A [L, I] -> Y [L, H], rounded once.
// The weight multiplies the fp32 product before rounding (the kernel's epilogue).
Matrix ssmm_down_weighted(const PackedMatrix& down, const Matrix& a, std::span<const float> slot_weight, DType out_dtype);

// SiLU(x) = x / (1 + e^-x) in fp32, as every kernel computes it.
float silu(float x);

// --- whole MoE layer ---------------------------------------------------------------------------------

// One MoE layer on packed weights, the twin of the GPU layer: fp32 router logits and routing, per
// expert the gate/up product on its gathered tokens (A rounded to the dtype), the weighted down
// product per slot (rounded), shared experts on all tokens (Qwen2-MoE: weighted by the sigmoid
// gate), and the deterministic combine. x [T, H] -> Y [T, H] in x's dtype. `routing_out` receives the routing.
Matrix moe_layer(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x,
                 Routing* routing_out = nullptr);

// The same layer on a given routing (e.g. the GPU's own, so that a near-tie that the two routers
// break differently does not fail a comparison of the expert path). `routing` must be valid for x.
Matrix moe_layer_routed(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x,
                        const Routing& routing);

// The same layer as a straightforward per-token loop on dense weights (pass unpack_moe_weights(...)
// to get the packed layer's meaning): identical routing and rounding points, plain dot products.
Matrix moe_layer_dense(const ModelConfig& config, const DenseMoeWeights& weights, const Matrix& x,
                       Routing* routing_out = nullptr);

// One dense MLP (DeepSeek's dense layers, OpenMoE's extra MLP) on every token: A = act(x) rounded to
// the dtype as in the experts, y = W_down A rounded once. x [T, H] -> [T, H].
Matrix dense_mlp(const DenseExpert& mlp, const Matrix& x);

// --- decoder layer (docs/model.md) -------------------------------------------------------------------

// y = x / sqrt(mean(x^2) + eps) * weight in fp32, rounded once to x's dtype. x [T, H], weight [1, H].
Matrix rms_norm(const Matrix& x, const Matrix& weight, double eps);

// Rotary embedding of one head in place, rotate-half convention: for i < d/2 with angle
// position * theta^(-2i/d), (x_i, x_{i+d/2}) -> (x_i cos - x_{i+d/2} sin, x_{i+d/2} cos + x_i sin).
void rope(std::span<float> head, std::int64_t position, double theta);

// One layer's key/value cache for `num_sequences` sequences of up to `capacity` positions each.
// Rows are kv_heads x head_dim values, already rounded to the layer's dtype (keys after RoPE).
class KvCache {
 public:
  KvCache(const ModelConfig& config, int num_sequences, std::int64_t capacity);
  int num_sequences() const { return static_cast<int>(length_.size()); }
  std::int64_t capacity() const { return capacity_; }
  std::int64_t row_size() const { return row_size_; }
  std::int64_t length(int sequence) const;  // positions cached so far: the next token's position
  const float* key(int sequence, std::int64_t position) const;
  const float* value(int sequence, std::int64_t position) const;
  // Appends one position; throws when the sequence is full or the row has the wrong size.
  void append(int sequence, std::span<const float> key, std::span<const float> value);

 private:
  std::int64_t index(int sequence, std::int64_t position) const;
  std::int64_t capacity_ = 0;
  std::int64_t row_size_ = 0;
  std::vector<std::int64_t> length_;
  std::vector<float> keys_, values_;  // [sequence][capacity][row_size]
};

// Causal grouped-query attention of the new tokens x [T, H] (already normalised). Token j belongs to
// sequence[j] and sits at the next position of that sequence: tokens are appended to `cache` in
// index order, and each attends to its sequence's cached positions up to and including its own (the
// last config.sliding_window of them when that is set). Projections rounded to the dtype, RoPE and
// softmax in fp32, attention output rounded, then the output projection rounded. -> [T, H].
Matrix attention(const ModelConfig& config, const AttentionWeights& weights, const Matrix& x,
                 std::span<const std::int32_t> sequence, KvCache& cache);

// One decoder layer: h = x + s * attention(rms_norm(x)); y = h + s * ffn(rms_norm(h)), where ffn is
// the MoE layer (moe_layer on the packed block) or the dense MLP, s = scale_depth / sqrt(num_layers)
// for MiniCPM and 1 otherwise; OpenMoE's MoE layers then add y + extra_mlp(rms_norm(y)). The residual
// stream is rounded to the dtype after each addition. x [T, H] -> [T, H].
Matrix decoder_layer(const ModelConfig& config, int layer, const DecoderLayerWeights& weights, const Matrix& x,
                     std::span<const std::int32_t> sequence, KvCache& cache);

// --- whole model ----------------------------------------------------------------------------------------

// The KV caches of every layer of `weights` for `num_sequences` sequences of up to `capacity` positions.
std::vector<KvCache> make_kv_caches(const ModelConfig& config, const ModelWeights& weights, int num_sequences,
                                    std::int64_t capacity);

// The model on new tokens: embedding rows of `token_ids` (MiniCPM: x scale_emb), every layer of
// `weights` with its cache, the final norm, (MiniCPM: / (H / dim_model_base)), the LM head. Token j
// belongs to sequence[j] (as in decoder_layer). -> logits [T, vocab] in fp32.
Matrix model_forward(const ModelConfig& config, const ModelWeights& weights, std::span<const std::int32_t> token_ids,
                     std::span<const std::int32_t> sequence, std::vector<KvCache>& caches);

// Greedy sampling: the index of each row's largest logit (the lowest index on ties; NaN never wins).
std::vector<std::int32_t> greedy(const Matrix& logits);

}  // namespace samoyeds::reference
