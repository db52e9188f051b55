// SPDX-License-Identifier: Apache-2.0
// The CPU reference decoder layer and model: RMSNorm, rotary embeddings, grouped-query attention over
// a KV cache, the MoE (or dense) FFN, the residual stream of every family, embeddings and the LM head
// (docs/model.md).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "samoyeds/reference.h"

namespace samoyeds::reference {

Matrix rms_norm(const Matrix& x, const Matrix& weight, double eps) {
  SAMOYEDS_CHECK(weight.rows() == 1 && weight.cols() == x.cols(), "rms_norm: weight is [", weight.rows(), ", ",
                 weight.cols(), "] but x has ", x.cols(), " columns: pass [1, ", x.cols(), "]");
  SAMOYEDS_CHECK(eps > 0.0, "rms_norm: eps must be positive, got ", eps);
  Matrix y(x.dtype(), x.rows(), x.cols());
  std::vector<float> w(static_cast<std::size_t>(x.cols()));
  weight.row_to_float(0, w.data());
  detail::parallel_for(x.rows(), 16, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> row(static_cast<std::size_t>(x.cols()));
    for (std::int64_t t = begin; t < end; ++t) {
      x.row_to_float(t, row.data());
      float sum_squares = 0.0f;
      for (const float v : row) sum_squares += v * v;
      const float inv = 1.0f / std::sqrt(sum_squares / static_cast<float>(x.cols()) + static_cast<float>(eps));
      for (std::int64_t c = 0; c < x.cols(); ++c)
        y.set(t, c, row[static_cast<std::size_t>(c)] * inv * w[static_cast<std::size_t>(c)]);
    }
  });
  return y;
}

void rope(std::span<float> head, std::int64_t position, double theta) {
  const std::size_t d = head.size();
  SAMOYEDS_CHECK(d % 2 == 0 && d > 0, "rope: the head dimension must be even, got ", d);
  SAMOYEDS_CHECK(position >= 0 && theta > 0.0, "rope: needs position >= 0 and theta > 0, got ", position, ", ", theta);
  const std::size_t half = d / 2;
  for (std::size_t i = 0; i < half; ++i) {
    // Angles in double: position x frequency loses digits in fp32 at long contexts.
    const double angle = static_cast<double>(position) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    const float x1 = head[i], x2 = head[i + half];
    head[i] = x1 * c - x2 * s;
    head[i + half] = x2 * c + x1 * s;
  }
}

// --- KvCache ------------------------------------------------------------------------------------------

KvCache::KvCache(const ModelConfig& config, int num_sequences, std::int64_t capacity)
    : capacity_(capacity), row_size_(config.num_kv_heads * config.head_dim) {
  SAMOYEDS_CHECK(num_sequences >= 1 && capacity >= 1, "KvCache: needs at least one sequence and one position, got ",
                 num_sequences, " sequences of ", capacity);
  SAMOYEDS_CHECK(row_size_ >= 1, "KvCache: ", config.display_name, " has no key/value heads");
  const double floats = 2.0 * num_sequences * static_cast<double>(capacity) * static_cast<double>(row_size_);
  SAMOYEDS_CHECK(floats < 4.0e9, "KvCache: ", num_sequences, " sequences x ", capacity, " positions x ", row_size_,
                 " values is too large for the CPU reference; use fewer sequences or positions");
  length_.assign(static_cast<std::size_t>(num_sequences), 0);
  const auto n = static_cast<std::size_t>(num_sequences) * static_cast<std::size_t>(capacity) * static_cast<std::size_t>(row_size_);
  keys_.assign(n, 0.0f);
  values_.assign(n, 0.0f);
}

std::int64_t KvCache::length(int sequence) const {
  SAMOYEDS_CHECK(sequence >= 0 && sequence < num_sequences(), "KvCache: sequence ", sequence, " is not in [0, ",
                 num_sequences(), ")");
  return length_[static_cast<std::size_t>(sequence)];
}

std::int64_t KvCache::index(int sequence, std::int64_t position) const {
  SAMOYEDS_CHECK(position >= 0 && position < length(sequence), "KvCache: position ", position, " of sequence ",
                 sequence, " is not cached (length ", length(sequence), ")");
  return (static_cast<std::int64_t>(sequence) * capacity_ + position) * row_size_;
}

const float* KvCache::key(int sequence, std::int64_t position) const {
  return keys_.data() + index(sequence, position);
}
const float* KvCache::value(int sequence, std::int64_t position) const {
  return values_.data() + index(sequence, position);
}

void KvCache::append(int sequence, std::span<const float> key, std::span<const float> value) {
  const std::int64_t at = length(sequence);
  SAMOYEDS_CHECK(at < capacity_, "KvCache: sequence ", sequence, " is full (", capacity_,
                 " positions); make the cache larger");
  SAMOYEDS_CHECK(static_cast<std::int64_t>(key.size()) == row_size_ && static_cast<std::int64_t>(value.size()) == row_size_,
                 "KvCache: rows must have ", row_size_, " values, got ", key.size(), " and ", value.size());
  const auto offset = static_cast<std::size_t>((static_cast<std::int64_t>(sequence) * capacity_ + at) * row_size_);
  std::copy(key.begin(), key.end(), keys_.begin() + static_cast<std::ptrdiff_t>(offset));
  std::copy(value.begin(), value.end(), values_.begin() + static_cast<std::ptrdiff_t>(offset));
  ++length_[static_cast<std::size_t>(sequence)];
}

// --- attention -------------------------------------------------------------------------------------

namespace {

// out[r] = round(W[r, :] . x + bias[r]) for every row r of W; fp32, ascending columns.
void linear(const Matrix& w, const Matrix& bias, const std::vector<float>& x, DType dtype, std::vector<float>& out) {
  out.resize(static_cast<std::size_t>(w.rows()));
  std::vector<float> w_row(static_cast<std::size_t>(w.cols()));
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    w.row_to_float(r, w_row.data());
    float sum = 0.0f;
    for (std::size_t c = 0; c < w_row.size(); ++c) sum += w_row[c] * x[c];
    if (!bias.empty()) sum += bias.get(0, r);
    out[static_cast<std::size_t>(r)] = round_to(dtype, sum);
  }
}

void check_tokens(const ModelConfig& config, const Matrix& x, std::span<const std::int32_t> sequence,
                  const KvCache& cache, const char* who) {
  SAMOYEDS_CHECK(x.cols() == config.hidden_size, who, ": x has ", x.cols(), " columns but ", config.display_name,
                 " has H = ", config.hidden_size);
  SAMOYEDS_CHECK(static_cast<std::int64_t>(sequence.size()) == x.rows(), who, ": ", sequence.size(),
                 " sequence ids for ", x.rows(), " tokens; pass one per token");
  SAMOYEDS_CHECK(cache.row_size() == config.num_kv_heads * config.head_dim, who, ": the cache rows have ",
                 cache.row_size(), " values but ", config.display_name, " needs ", config.num_kv_heads * config.head_dim);
  std::vector<std::int64_t> appended(static_cast<std::size_t>(cache.num_sequences()), 0);
  for (const std::int32_t s : sequence) {
    SAMOYEDS_CHECK(s >= 0 && s < cache.num_sequences(), who, ": sequence id ", s, " is not in [0, ",
                   cache.num_sequences(), ")");
    ++appended[static_cast<std::size_t>(s)];
  }
  for (int s = 0; s < cache.num_sequences(); ++s)
    SAMOYEDS_CHECK(cache.length(s) + appended[static_cast<std::size_t>(s)] <= cache.capacity(), who, ": sequence ", s,
                   " would reach ", cache.length(s) + appended[static_cast<std::size_t>(s)], " positions; the cache holds ",
                   cache.capacity());
}

}  // namespace

Matrix attention(const ModelConfig& config, const AttentionWeights& w, const Matrix& x,
                 std::span<const std::int32_t> sequence, KvCache& cache) {
  check_tokens(config, x, sequence, cache, "attention");
  SAMOYEDS_CHECK(w.q.cols() == x.cols() && w.q.dtype() == x.dtype(), "attention: weights are ", dtype_name(w.q.dtype()),
                 " [", w.q.rows(), ", ", w.q.cols(), "] but x is ", dtype_name(x.dtype()), " with ", x.cols(), " columns");
  const DType dtype = x.dtype();
  const std::int64_t d = config.head_dim, heads = config.num_attention_heads;
  const std::int64_t group = heads / config.num_kv_heads;  // query heads per key/value head
  const float scale = static_cast<float>(config.softmax_scale());
  Matrix attended(dtype, x.rows(), heads * d);  // [T, q_dim], before the output projection

  // Tokens in index order: each appends its key and value, then attends (the causal order).
  std::vector<float> x_row(static_cast<std::size_t>(x.cols())), q, k, v;
  std::vector<float> scores, out(static_cast<std::size_t>(d));
  for (std::int64_t t = 0; t < x.rows(); ++t) {
    const int s = sequence[static_cast<std::size_t>(t)];
    const std::int64_t position = cache.length(s);
    x.row_to_float(t, x_row.data());
    linear(w.q, w.q_bias, x_row, dtype, q);
    linear(w.k, w.k_bias, x_row, dtype, k);
    linear(w.v, w.v_bias, x_row, dtype, v);
    for (std::int64_t h = 0; h < heads; ++h) rope(std::span<float>(q.data() + h * d, static_cast<std::size_t>(d)), position, config.rope_theta);
    for (std::int64_t h = 0; h < config.num_kv_heads; ++h)
      rope(std::span<float>(k.data() + h * d, static_cast<std::size_t>(d)), position, config.rope_theta);
    for (float& value : q) value = round_to(dtype, value);
    for (float& value : k) value = round_to(dtype, value);
    cache.append(s, k, v);

    const std::int64_t first = config.sliding_window > 0 ? std::max<std::int64_t>(0, position - config.sliding_window + 1) : 0;
    scores.resize(static_cast<std::size_t>(position - first + 1));
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* qh = q.data() + h * d;
      const std::int64_t kv_offset = (h / group) * d;
      float max_score = -INFINITY;
      for (std::int64_t j = first; j <= position; ++j) {
        const float* kj = cache.key(s, j) + kv_offset;
        float dot = 0.0f;
        for (std::int64_t i = 0; i < d; ++i) dot += qh[i] * kj[i];
        scores[static_cast<std::size_t>(j - first)] = dot * scale;
        max_score = std::max(max_score, dot * scale);
      }
      float denominator = 0.0f;
      for (float& score : scores) {
        score = std::exp(score - max_score);
        denominator += score;
      }
      std::fill(out.begin(), out.end(), 0.0f);
      for (std::int64_t j = first; j <= position; ++j) {
        const float p = scores[static_cast<std::size_t>(j - first)] / denominator;
        const float* vj = cache.value(s, j) + kv_offset;
        for (std::int64_t i = 0; i < d; ++i) out[static_cast<std::size_t>(i)] += p * vj[i];
      }
      for (std::int64_t i = 0; i < d; ++i) attended.set(t, h * d + i, out[static_cast<std::size_t>(i)]);
    }
  }

  Matrix y(dtype, x.rows(), config.hidden_size);
  const Matrix no_bias;
  detail::parallel_for(x.rows(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> a_row(static_cast<std::size_t>(attended.cols())), o_row;
    for (std::int64_t t = begin; t < end; ++t) {
      attended.row_to_float(t, a_row.data());
      linear(w.o, no_bias, a_row, dtype, o_row);
      for (std::int64_t c = 0; c < y.cols(); ++c) y.set(t, c, o_row[static_cast<std::size_t>(c)]);
    }
  });
  return y;
}

// --- decoder layer -------------------------------------------------------------------------------------

namespace {

// round(residual + scale * branch), elementwise.
Matrix add_residual(const Matrix& residual, const Matrix& branch, float scale) {
  Matrix y(residual.dtype(), residual.rows(), residual.cols());
  for (std::int64_t t = 0; t < residual.rows(); ++t)
    for (std::int64_t c = 0; c < residual.cols(); ++c) y.set(t, c, residual.get(t, c) + scale * branch.get(t, c));
  return y;
}

}  // namespace

Matrix decoder_layer(const ModelConfig& config, int layer, const DecoderLayerWeights& weights, const Matrix& x,
                     std::span<const std::int32_t> sequence, KvCache& cache) {
  check_decoder_layer(config, layer, weights);
  SAMOYEDS_CHECK(x.dtype() == weights.input_norm.dtype(), "decoder_layer: x is ", dtype_name(x.dtype()),
                 " but the weights are ", dtype_name(weights.input_norm.dtype()));
  check_tokens(config, x, sequence, cache, "decoder_layer");
  // MiniCPM scales each residual branch (scale_depth / sqrt(layers)); the others add it as is.
  const float branch_scale =
      config.scale_depth > 0.0 ? static_cast<float>(config.scale_depth / std::sqrt(static_cast<double>(config.num_layers))) : 1.0f;
  const Matrix h = add_residual(
      x, attention(config, weights.attention, rms_norm(x, weights.input_norm, config.rms_norm_eps), sequence, cache),
      branch_scale);
  const Matrix normed = rms_norm(h, weights.post_attention_norm, config.rms_norm_eps);
  const Matrix ffn = weights.moe ? moe_layer(config, *weights.moe, normed) : dense_mlp(*weights.mlp, normed);
  Matrix y = add_residual(h, ffn, branch_scale);
  if (weights.extra_mlp) y = add_residual(y, dense_mlp(*weights.extra_mlp, rms_norm(y, weights.extra_norm, config.rms_norm_eps)), 1.0f);
  return y;
}

// --- whole model -------------------------------------------------------------------------------------

std::vector<KvCache> make_kv_caches(const ModelConfig& config, const ModelWeights& weights, int num_sequences,
                                    std::int64_t capacity) {
  std::vector<KvCache> caches;
  for (std::size_t l = 0; l < weights.layers.size(); ++l) caches.emplace_back(config, num_sequences, capacity);
  return caches;
}

Matrix model_forward(const ModelConfig& config, const ModelWeights& weights, std::span<const std::int32_t> token_ids,
                     std::span<const std::int32_t> sequence, std::vector<KvCache>& caches) {
  check_model(config, weights);
  SAMOYEDS_CHECK(caches.size() == weights.layers.size(), "model_forward: ", caches.size(), " caches for ",
                 weights.layers.size(), " layers; make them with make_kv_caches");
  SAMOYEDS_CHECK(token_ids.size() == sequence.size(), "model_forward: ", token_ids.size(), " tokens but ",
                 sequence.size(), " sequence ids");
  const DType dtype = weights.embedding.dtype();
  const auto T = static_cast<std::int64_t>(token_ids.size());
  Matrix x(dtype, T, config.hidden_size);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int32_t id = token_ids[static_cast<std::size_t>(t)];
    SAMOYEDS_CHECK(id >= 0 && id < config.vocab_size, "model_forward: token id ", id, " is not in [0, ",
                   config.vocab_size, ")");
    for (std::int64_t c = 0; c < config.hidden_size; ++c)
      x.set(t, c, weights.embedding.get(id, c) * static_cast<float>(config.scale_emb));
  }
  for (std::size_t l = 0; l < weights.layers.size(); ++l)
    x = decoder_layer(config, static_cast<int>(l), weights.layers[l], x, sequence, caches[l]);
  Matrix h = rms_norm(x, weights.final_norm, config.rms_norm_eps);
  if (config.dim_model_base > 0) {  // MiniCPM: hidden / (H / dim_model_base) before the LM head
    const float divisor = static_cast<float>(config.hidden_size) / static_cast<float>(config.dim_model_base);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < config.hidden_size; ++c) h.set(t, c, h.get(t, c) / divisor);
  }
  const Matrix& head = config.tie_word_embeddings ? weights.embedding : weights.lm_head;
  Matrix logits(DType::f32, T, config.vocab_size);
  detail::parallel_for(config.vocab_size, 64, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> h_row(static_cast<std::size_t>(config.hidden_size)), w_row(h_row.size());
    for (std::int64_t t = 0; t < T; ++t) {
      h.row_to_float(t, h_row.data());
      for (std::int64_t v = begin; v < end; ++v) {
        head.row_to_float(v, w_row.data());
        float sum = 0.0f;
        for (std::size_t c = 0; c < h_row.size(); ++c) sum += w_row[c] * h_row[c];
        logits.set(t, v, sum);
      }
    }
  });
  return logits;
}

std::vector<std::int32_t> greedy(const Matrix& logits) {
  std::vector<std::int32_t> next(static_cast<std::size_t>(logits.rows()), 0);
  for (std::int64_t t = 0; t < logits.rows(); ++t) {
    float best = -INFINITY;
    for (std::int64_t v = 0; v < logits.cols(); ++v)
      if (logits.get(t, v) > best) {
        best = logits.get(t, v);
        next[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(v);
      }
  }
  return next;
}

}  // namespace samoyeds::reference
