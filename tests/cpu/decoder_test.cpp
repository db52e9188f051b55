// SPDX-License-Identifier: Apache-2.0
// The CPU reference decoder layer: RMSNorm and RoPE against their formulas, attention against a
// direct computation in double, grouped-query heads against expanded ones, the KV cache across
// calls (prefill then decode equals one pass), independent sequences in one batch, every family's
// residual details, and bad inputs.
#include <algorithm>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "common/test_util.h"
#include "samoyeds/decoder.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::random_normal_matrix;
using testing::seed_trace;

const SparsityPattern kPattern = SparsityPattern::parse("1:2:64");

// Every family at a size a CPU runs in milliseconds: H = 64, I = 48, 4 query heads of 16, and as
// many key/value heads as the family shares (GQA families keep 2).
ModelConfig small_config(const char* name) {
  ModelConfig c = scaled_config(find_model(name), 64, 48);
  c.num_kv_heads = c.num_kv_heads < c.num_attention_heads ? 2 : 4;
  c.num_attention_heads = 4;
  c.head_dim = 16;
  c.validate();
  return c;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  if (a.dtype() != b.dtype() || a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (std::int64_t r = 0; r < a.rows(); ++r)
    for (std::int64_t c = 0; c < a.cols(); ++c)
      if (a.get(r, c) != b.get(r, c) && !(std::isnan(a.get(r, c)) && std::isnan(b.get(r, c)))) return false;
  return true;
}

Matrix rows_of(const Matrix& x, std::int64_t first, std::int64_t count) {
  Matrix out(x.dtype(), count, x.cols());
  for (std::int64_t r = 0; r < count; ++r)
    for (std::int64_t c = 0; c < x.cols(); ++c) out.set(r, c, x.get(first + r, c));
  return out;
}

TEST(ReferenceDecoder, RmsNormMatchesFormula) {
  const std::uint64_t seed = 3;
  SCOPED_TRACE(seed_trace(seed));
  const Matrix x = random_normal_matrix(DType::f32, 5, 24, seed);
  const Matrix w = random_normal_matrix(DType::f32, 1, 24, seed + 1);
  const Matrix y = reference::rms_norm(x, w, 1e-5);
  for (std::int64_t t = 0; t < x.rows(); ++t) {
    double mean_square = 0.0;
    for (std::int64_t c = 0; c < x.cols(); ++c) mean_square += static_cast<double>(x.get(t, c)) * x.get(t, c);
    mean_square /= static_cast<double>(x.cols());
    for (std::int64_t c = 0; c < x.cols(); ++c) {
      const double expected = x.get(t, c) / std::sqrt(mean_square + 1e-5) * w.get(0, c);
      EXPECT_NEAR(y.get(t, c), expected, 1e-5 * (1.0 + std::fabs(expected))) << "t = " << t << ", c = " << c;
    }
  }
}

TEST(ReferenceDecoder, RopeIsARotationThatDependsOnRelativePosition) {
  const std::uint64_t seed = 5;
  SCOPED_TRACE(seed_trace(seed));
  const Matrix qk = random_normal_matrix(DType::f32, 2, 32, seed);
  auto rotated = [&](int row, std::int64_t position) {
    std::vector<float> v(32);
    qk.row_to_float(row, v.data());
    reference::rope(v, position, 10000.0);
    return v;
  };
  auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
    return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
  };
  std::vector<float> original(32);
  qk.row_to_float(0, original.data());
  EXPECT_EQ(rotated(0, 0), original);  // position 0: identity
  EXPECT_NEAR(dot(rotated(0, 77), rotated(0, 77)), dot(original, original), 1e-4);  // norm kept
  // <rope(q, p), rope(k, r)> depends on p - r only.
  const double near = dot(rotated(0, 5), rotated(1, 2)), far = dot(rotated(0, 1003), rotated(1, 1000));
  EXPECT_NEAR(near, far, 1e-3 * (1.0 + std::fabs(near)));
  // The first pair turns by exactly the position in radians (frequency 1).
  const std::vector<float> one = rotated(0, 1);
  EXPECT_NEAR(one[0], original[0] * std::cos(1.0) - original[16] * std::sin(1.0), 1e-6);
  EXPECT_NEAR(one[16], original[16] * std::cos(1.0) + original[0] * std::sin(1.0), 1e-6);
}

// Causal attention of one sequence computed directly in double from the same (fp32) weights.
std::vector<double> direct_attention(const ModelConfig& c, const AttentionWeights& w, const Matrix& x, std::int64_t t_out) {
  const std::int64_t d = c.head_dim, T = x.rows();
  auto project = [&](const Matrix& m, const Matrix& bias, std::int64_t t) {
    std::vector<double> out(static_cast<std::size_t>(m.rows()));
    for (std::int64_t r = 0; r < m.rows(); ++r) {
      double s = bias.empty() ? 0.0 : bias.get(0, r);
      for (std::int64_t k = 0; k < m.cols(); ++k) s += static_cast<double>(m.get(r, k)) * x.get(t, k);
      out[static_cast<std::size_t>(r)] = s;
    }
    return out;
  };
  auto rotate = [&](std::vector<double>& v, std::int64_t heads, std::int64_t position) {
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < d / 2; ++i) {
        const double angle = static_cast<double>(position) * std::pow(c.rope_theta, -2.0 * i / static_cast<double>(d));
        double& a = v[static_cast<std::size_t>(h * d + i)];
        double& b = v[static_cast<std::size_t>(h * d + i + d / 2)];
        const double x1 = a, x2 = b;
        a = x1 * std::cos(angle) - x2 * std::sin(angle);
        b = x2 * std::cos(angle) + x1 * std::sin(angle);
      }
  };
  std::vector<std::vector<double>> keys, values;
  for (std::int64_t t = 0; t < T; ++t) {
    keys.push_back(project(w.k, w.k_bias, t));
    rotate(keys.back(), c.num_kv_heads, t);
    values.push_back(project(w.v, w.v_bias, t));
  }
  std::vector<double> q = project(w.q, w.q_bias, t_out);
  rotate(q, c.num_attention_heads, t_out);
  const std::int64_t first = c.sliding_window > 0 ? std::max<std::int64_t>(0, t_out - c.sliding_window + 1) : 0;
  std::vector<double> attended(static_cast<std::size_t>(c.num_attention_heads * d), 0.0);
  for (std::int64_t h = 0; h < c.num_attention_heads; ++h) {
    const std::int64_t kv = h / (c.num_attention_heads / c.num_kv_heads);
    std::vector<double> p;
    for (std::int64_t j = first; j <= t_out; ++j) {
      double s = 0.0;
      for (std::int64_t i = 0; i < d; ++i)
        s += q[static_cast<std::size_t>(h * d + i)] * keys[static_cast<std::size_t>(j)][static_cast<std::size_t>(kv * d + i)];
      p.push_back(s * c.softmax_scale());
    }
    const double top = *std::max_element(p.begin(), p.end());
    double sum = 0.0;
    for (double& v : p) sum += (v = std::exp(v - top));
    for (std::int64_t j = first; j <= t_out; ++j)
      for (std::int64_t i = 0; i < d; ++i)
        attended[static_cast<std::size_t>(h * d + i)] +=
            p[static_cast<std::size_t>(j - first)] / sum * values[static_cast<std::size_t>(j)][static_cast<std::size_t>(kv * d + i)];
  }
  std::vector<double> out(static_cast<std::size_t>(c.hidden_size), 0.0);
  for (std::int64_t r = 0; r < c.hidden_size; ++r)
    for (std::int64_t k = 0; k < w.o.cols(); ++k) out[static_cast<std::size_t>(r)] += w.o.get(r, k) * attended[static_cast<std::size_t>(k)];
  return out;
}

AttentionWeights random_attention(const ModelConfig& c, DType dtype, std::uint64_t seed) {
  const std::int64_t q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const float s = 1.0f / std::sqrt(static_cast<float>(c.hidden_size));
  AttentionWeights w{random_normal_matrix(dtype, q_dim, c.hidden_size, seed, s),
                     random_normal_matrix(dtype, kv_dim, c.hidden_size, seed + 1, s),
                     random_normal_matrix(dtype, kv_dim, c.hidden_size, seed + 2, s),
                     random_normal_matrix(dtype, c.hidden_size, q_dim, seed + 3, 0.25f), Matrix(), Matrix(), Matrix()};
  if (c.attention_bias) {
    w.q_bias = random_normal_matrix(dtype, 1, q_dim, seed + 4, 0.1f);
    w.k_bias = random_normal_matrix(dtype, 1, kv_dim, seed + 5, 0.1f);
    w.v_bias = random_normal_matrix(dtype, 1, kv_dim, seed + 6, 0.1f);
  }
  return w;
}

class AttentionFamilies : public ::testing::TestWithParam<const char*> {};

TEST_P(AttentionFamilies, MatchesDirectComputationInDouble) {
  for (const std::int64_t window : {std::int64_t{0}, std::int64_t{3}}) {
    ModelConfig c = small_config(GetParam());
    c.sliding_window = window;
    const std::uint64_t seed = 17;
    SCOPED_TRACE(seed_trace(seed) + ", sliding window " + std::to_string(window));
    const AttentionWeights w = random_attention(c, DType::f32, seed);
    const Matrix x = random_normal_matrix(DType::f32, 9, c.hidden_size, seed + 9);
    reference::KvCache cache(c, 1, 16);
    const std::vector<std::int32_t> sequence(9, 0);
    const Matrix y = reference::attention(c, w, x, sequence, cache);
    EXPECT_EQ(cache.length(0), 9);
    for (std::int64_t t = 0; t < x.rows(); ++t) {
      const std::vector<double> expected = direct_attention(c, w, x, t);
      for (std::int64_t h = 0; h < c.hidden_size; ++h)
        ASSERT_NEAR(y.get(t, h), expected[static_cast<std::size_t>(h)], 2e-5 * (1.0 + std::fabs(expected[static_cast<std::size_t>(h)])))
            << "token " << t << ", column " << h;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, AttentionFamilies,
                         ::testing::Values("mixtral-8x7b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b", "openmoe-8b"));

TEST(ReferenceDecoder, GroupedQueryHeadsEqualExpandedHeads) {
  const ModelConfig gqa = small_config("mixtral-8x7b");  // 4 query heads share 2 key/value heads
  ASSERT_EQ(gqa.num_kv_heads, 2);
  ModelConfig mha = gqa;
  mha.num_kv_heads = 4;
  const std::uint64_t seed = 23;
  SCOPED_TRACE(seed_trace(seed));
  const AttentionWeights w = random_attention(gqa, DType::bf16, seed);
  AttentionWeights expanded = w;  // key/value head h/2 copied to head h
  expanded.k = Matrix(DType::bf16, 4 * gqa.head_dim, gqa.hidden_size);
  expanded.v = Matrix(DType::bf16, 4 * gqa.head_dim, gqa.hidden_size);
  for (std::int64_t r = 0; r < 4 * gqa.head_dim; ++r) {
    const std::int64_t from = (r / gqa.head_dim / 2) * gqa.head_dim + r % gqa.head_dim;
    for (std::int64_t c = 0; c < gqa.hidden_size; ++c) {
      expanded.k.set(r, c, w.k.get(from, c));
      expanded.v.set(r, c, w.v.get(from, c));
    }
  }
  const Matrix x = random_normal_matrix(DType::bf16, 6, gqa.hidden_size, seed + 1);
  const std::vector<std::int32_t> sequence(6, 0);
  reference::KvCache gqa_cache(gqa, 1, 8), mha_cache(mha, 1, 8);
  EXPECT_TRUE(bitwise_equal(reference::attention(gqa, w, x, sequence, gqa_cache),
                            reference::attention(mha, expanded, x, sequence, mha_cache)));
}

class DecoderFamilies : public ::testing::TestWithParam<const char*> {};

// Prefill of 5 tokens, then 3 decode steps, equals the 8 tokens in one call (bitwise), for a dense
// and a MoE layer of each family.
TEST_P(DecoderFamilies, PrefillThenDecodeEqualsOnePass) {
  const ModelConfig c = small_config(GetParam());
  const std::uint64_t seed = 41;
  SCOPED_TRACE(seed_trace(seed));
  std::vector<int> layers = {c.moe_layers().front()};
  for (int l = 0; l < c.num_layers; ++l)
    if (c.is_dense_layer(l)) {
      layers.push_back(l);
      break;
    }
  for (const int layer : layers) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    const DecoderLayerWeights w = synthetic_decoder_layer(c, layer, DType::bf16, kPattern, seed);
    const Matrix x = random_normal_matrix(DType::bf16, 8, c.hidden_size, seed + 1);
    reference::KvCache one_cache(c, 1, 8), step_cache(c, 1, 8);
    const Matrix one_pass = reference::decoder_layer(c, layer, w, x, std::vector<std::int32_t>(8, 0), one_cache);
    const Matrix prefill = reference::decoder_layer(c, layer, w, rows_of(x, 0, 5), std::vector<std::int32_t>(5, 0), step_cache);
    EXPECT_TRUE(bitwise_equal(prefill, rows_of(one_pass, 0, 5)));
    for (std::int64_t t = 5; t < 8; ++t) {
      const Matrix step = reference::decoder_layer(c, layer, w, rows_of(x, t, 1), std::vector<std::int32_t>{0}, step_cache);
      EXPECT_TRUE(bitwise_equal(step, rows_of(one_pass, t, 1))) << "decode step at position " << t;
    }
    EXPECT_EQ(step_cache.length(0), 8);
  }
}

// Two sequences interleaved in one batch give what each gives alone.
TEST_P(DecoderFamilies, SequencesInOneBatchAreIndependent) {
  const ModelConfig c = small_config(GetParam());
  const std::uint64_t seed = 43;
  SCOPED_TRACE(seed_trace(seed));
  const int layer = c.moe_layers().front();
  const DecoderLayerWeights w = synthetic_decoder_layer(c, layer, DType::bf16, kPattern, seed);
  const Matrix x = random_normal_matrix(DType::bf16, 6, c.hidden_size, seed + 1);
  const std::vector<std::int32_t> sequence = {0, 1, 1, 0, 1, 0};
  reference::KvCache batch_cache(c, 2, 4);
  const Matrix batched = reference::decoder_layer(c, layer, w, x, sequence, batch_cache);
  for (int s = 0; s < 2; ++s) {
    std::vector<std::int64_t> rows;
    for (std::int64_t t = 0; t < 6; ++t)
      if (sequence[static_cast<std::size_t>(t)] == s) rows.push_back(t);
    Matrix alone_x(DType::bf16, static_cast<std::int64_t>(rows.size()), c.hidden_size), expected(DType::bf16, alone_x.rows(), c.hidden_size);
    for (std::size_t i = 0; i < rows.size(); ++i)
      for (std::int64_t h = 0; h < c.hidden_size; ++h) {
        alone_x.set(static_cast<std::int64_t>(i), h, x.get(rows[i], h));
        expected.set(static_cast<std::int64_t>(i), h, batched.get(rows[i], h));
      }
    reference::KvCache alone_cache(c, 1, 4);
    EXPECT_TRUE(bitwise_equal(reference::decoder_layer(c, layer, w, alone_x, std::vector<std::int32_t>(rows.size(), 0), alone_cache),
                              expected))
        << "sequence " << s;
  }
}

// OpenMoE is left out: its capacity routing drops tokens depending on the whole batch, so a token's
// result legitimately depends on the tokens beside it.
INSTANTIATE_TEST_SUITE_P(Families, DecoderFamilies,
                         ::testing::Values("mixtral-8x7b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b"));

// The residual stream composed from the public pieces: MiniCPM's branch scaling, DeepSeek's dense
// first layer, OpenMoE's extra MLP after the MoE block.
TEST(ReferenceDecoder, FamilyResidualDetails) {
  const std::uint64_t seed = 47;
  SCOPED_TRACE(seed_trace(seed));
  for (const char* name : {"minicpm-moe-8x2b", "deepseek-moe-16b", "openmoe-8b"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = small_config(name);
    const int layer = c.is_dense_layer(0) ? 0 : c.moe_layers().front();
    const DecoderLayerWeights w = synthetic_decoder_layer(c, layer, DType::bf16, kPattern, seed);
    EXPECT_EQ(w.moe.has_value(), c.is_moe_layer(layer));
    EXPECT_EQ(w.extra_mlp.has_value(), c.extra_dense_mlp && c.is_moe_layer(layer));
    const Matrix x = random_normal_matrix(DType::bf16, 4, c.hidden_size, seed + 1);
    const std::vector<std::int32_t> sequence(4, 0);
    reference::KvCache cache(c, 1, 4), manual_cache(c, 1, 4);
    const Matrix y = reference::decoder_layer(c, layer, w, x, sequence, cache);

    const float s = c.scale_depth > 0.0 ? static_cast<float>(c.scale_depth / std::sqrt(static_cast<double>(c.num_layers))) : 1.0f;
    auto add = [](const Matrix& a, const Matrix& b, float scale) {
      Matrix out(a.dtype(), a.rows(), a.cols());
      for (std::int64_t r = 0; r < a.rows(); ++r)
        for (std::int64_t k = 0; k < a.cols(); ++k) out.set(r, k, a.get(r, k) + scale * b.get(r, k));
      return out;
    };
    const Matrix h = add(x, reference::attention(c, w.attention, reference::rms_norm(x, w.input_norm, c.rms_norm_eps), sequence, manual_cache), s);
    const Matrix n = reference::rms_norm(h, w.post_attention_norm, c.rms_norm_eps);
    Matrix expected = add(h, w.moe ? reference::moe_layer(c, *w.moe, n) : reference::dense_mlp(*w.mlp, n), s);
    if (w.extra_mlp) expected = add(expected, reference::dense_mlp(*w.extra_mlp, reference::rms_norm(expected, w.extra_norm, c.rms_norm_eps)), 1.0f);
    EXPECT_TRUE(bitwise_equal(y, expected));
  }
  // MiniCPM really scales: scale 1.4 / sqrt(40) is not 1.
  EXPECT_GT(find_model("minicpm-moe-8x2b").scale_depth, 0.0);
}

TEST(ReferenceDecoder, RandomTokenIdsAreSeededAndInRange) {
  const std::vector<std::int32_t> a = random_token_ids(1000, 37, 5), b = random_token_ids(1000, 37, 5);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, random_token_ids(1000, 37, 6));
  EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](std::int32_t id) { return id >= 0 && id < 37; }));
  EXPECT_GT(std::count(a.begin(), a.end(), 36), 0);  // the top id is reachable
  EXPECT_TRUE(random_token_ids(0, 37, 5).empty());
  EXPECT_THROW(random_token_ids(4, 0, 5), Error);
  EXPECT_THROW(random_token_ids(-1, 37, 5), Error);
}

TEST(ReferenceDecoder, SyntheticWeightsAreSeededAndChecked) {
  const ModelConfig c = small_config("qwen1.5-moe-a2.7b");
  const DecoderLayerWeights a = synthetic_decoder_layer(c, 0, DType::bf16, kPattern, 7);
  const DecoderLayerWeights b = synthetic_decoder_layer(c, 0, DType::bf16, kPattern, 7);
  EXPECT_TRUE(bitwise_equal(a.attention.q, b.attention.q));
  EXPECT_TRUE(bitwise_equal(a.attention.q_bias, b.attention.q_bias));
  EXPECT_FALSE(bitwise_equal(a.attention.q, synthetic_decoder_layer(c, 1, DType::bf16, kPattern, 7).attention.q));
  // No expert of one layer reappears in the next (per-layer seed ranges do not overlap).
  const DecoderLayerWeights next = synthetic_decoder_layer(c, 1, DType::bf16, kPattern, 7);
  for (std::size_t e = 0; e < a.moe->experts.size(); ++e)
    for (std::size_t f = 0; f < next.moe->experts.size(); ++f)
      EXPECT_NE(a.moe->experts[e].gate.values, next.moe->experts[f].gate.values) << e << " vs " << f;
  EXPECT_NO_THROW(check_decoder_layer(c, 0, a));

  DecoderLayerWeights no_bias = a;
  no_bias.attention.k_bias = Matrix();
  EXPECT_THROW(check_decoder_layer(c, 0, no_bias), Error);  // Qwen2-MoE has q/k/v biases
  DecoderLayerWeights wrong_o = a;
  wrong_o.attention.o = Matrix(DType::bf16, c.hidden_size, 8);
  EXPECT_THROW(check_decoder_layer(c, 0, wrong_o), Error);

  const ModelConfig deepseek = small_config("deepseek-moe-16b");
  const DecoderLayerWeights dense = synthetic_decoder_layer(deepseek, 0, DType::bf16, kPattern, 7);
  EXPECT_TRUE(dense.mlp.has_value());
  EXPECT_THROW(check_decoder_layer(deepseek, 1, dense), Error);  // layer 1 is MoE
  EXPECT_THROW(synthetic_decoder_layer(deepseek, deepseek.num_layers, DType::bf16, kPattern, 7), Error);
  EXPECT_THROW(synthetic_decoder_layer(deepseek, 0, DType::f32, kPattern, 7), Error);
}

TEST(ReferenceDecoder, BadInputsAreRejected) {
  const ModelConfig c = small_config("mixtral-8x7b");
  const DecoderLayerWeights w = synthetic_decoder_layer(c, 0, DType::bf16, kPattern, 9);
  const Matrix x = random_normal_matrix(DType::bf16, 3, c.hidden_size, 10);
  reference::KvCache cache(c, 2, 4);
  EXPECT_THROW(reference::decoder_layer(c, 0, w, x, std::vector<std::int32_t>{0, 1}, cache), Error);     // 2 ids, 3 tokens
  EXPECT_THROW(reference::decoder_layer(c, 0, w, x, std::vector<std::int32_t>{0, 2, 1}, cache), Error);  // no sequence 2
  EXPECT_THROW(reference::decoder_layer(c, 0, w, random_normal_matrix(DType::bf16, 3, 8, 11), std::vector<std::int32_t>{0, 0, 0}, cache),
               Error);  // wrong H
  EXPECT_THROW(reference::decoder_layer(c, 0, w, random_normal_matrix(DType::f16, 3, c.hidden_size, 11),
                                        std::vector<std::int32_t>{0, 0, 0}, cache),
               Error);  // dtype differs from the weights
  EXPECT_EQ(cache.length(0), 0);  // nothing was appended by the rejected calls
  EXPECT_NO_THROW(reference::decoder_layer(c, 0, w, x, std::vector<std::int32_t>{0, 0, 0}, cache));
  EXPECT_THROW(reference::decoder_layer(c, 0, w, rows_of(x, 0, 2), std::vector<std::int32_t>{0, 0}, cache), Error);  // 5 > 4 positions
  EXPECT_EQ(cache.length(0), 3);
  EXPECT_THROW(reference::KvCache(c, 0, 4), Error);
  EXPECT_THROW(cache.key(0, 3), Error);  // not cached yet
  std::vector<float> odd_head(3);
  EXPECT_THROW(reference::rope(odd_head, 0, 10000.0), Error);
  EXPECT_THROW(reference::rms_norm(x, Matrix(DType::bf16, 1, 8), 1e-5), Error);
}

// --- whole model ---

ModelConfig small_model(const char* name) {
  ModelConfig c = small_config(name);
  c.vocab_size = 97;
  return c;
}

// Greedy generation with the KV caches (prefill, then one token per step) gives the logits and
// tokens of recomputing every sequence from scratch at each step, bitwise.
TEST(ReferenceModel, CachedGenerationEqualsRecomputation) {
  const std::uint64_t seed = 53;
  SCOPED_TRACE(seed_trace(seed));
  for (const char* name : {"mixtral-8x7b", "deepseek-moe-16b", "minicpm-moe-8x2b"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = small_model(name);
    const ModelWeights w = synthetic_model(c, 2, DType::bf16, kPattern, seed);
    std::vector<std::vector<std::int32_t>> text = {{3, 14, 15, 92, 65}, {35, 89, 79}};  // two prompts
    std::vector<reference::KvCache> caches = reference::make_kv_caches(c, w, 2, 16);
    std::vector<std::int32_t> ids, sequence;
    for (int s = 0; s < 2; ++s)
      for (const std::int32_t id : text[static_cast<std::size_t>(s)]) ids.push_back(id), sequence.push_back(s);
    Matrix logits = reference::model_forward(c, w, ids, sequence, caches);
    std::vector<std::int64_t> last = {4, 7};  // each sequence's last row in the prefill
    for (int step = 0; step < 4; ++step) {
      std::vector<std::int32_t> next_ids, next_sequence = {0, 1};
      for (int s = 0; s < 2; ++s) {
        // Recompute sequence s alone from scratch.
        std::vector<reference::KvCache> fresh = reference::make_kv_caches(c, w, 1, 16);
        const auto& tokens = text[static_cast<std::size_t>(s)];
        const Matrix full = reference::model_forward(c, w, tokens, std::vector<std::int32_t>(tokens.size(), 0), fresh);
        const std::int64_t row = last[static_cast<std::size_t>(s)];
        for (std::int64_t v = 0; v < c.vocab_size; ++v)
          ASSERT_EQ(logits.get(row, v), full.get(full.rows() - 1, v)) << "step " << step << ", sequence " << s << ", logit " << v;
        const std::int32_t token = reference::greedy(rows_of(full, full.rows() - 1, 1))[0];
        text[static_cast<std::size_t>(s)].push_back(token);
        next_ids.push_back(token);
      }
      logits = reference::model_forward(c, w, next_ids, next_sequence, caches);
      last = {0, 1};
    }
    EXPECT_EQ(caches[1].length(0), 5 + 4);
    EXPECT_EQ(caches[1].length(1), 3 + 4);
  }
}

// MiniCPM's embedding scale, logit divisor and tied LM head, composed from the public pieces.
TEST(ReferenceModel, MiniCpmScalingAndTiedHead) {
  const ModelConfig c = small_model("minicpm-moe-8x2b");
  ASSERT_TRUE(c.tie_word_embeddings);
  const std::uint64_t seed = 59;
  SCOPED_TRACE(seed_trace(seed));
  const ModelWeights w = synthetic_model(c, 1, DType::bf16, kPattern, seed);
  EXPECT_TRUE(w.lm_head.empty());
  const std::vector<std::int32_t> ids = {5, 60, 7}, sequence(3, 0);
  std::vector<reference::KvCache> caches = reference::make_kv_caches(c, w, 1, 4), manual_caches = reference::make_kv_caches(c, w, 1, 4);
  const Matrix logits = reference::model_forward(c, w, ids, sequence, caches);

  Matrix x(DType::bf16, 3, c.hidden_size);
  for (std::int64_t t = 0; t < 3; ++t)
    for (std::int64_t k = 0; k < c.hidden_size; ++k) x.set(t, k, w.embedding.get(ids[static_cast<std::size_t>(t)], k) * 12.0f);
  Matrix h = reference::rms_norm(reference::decoder_layer(c, 0, w.layers[0], x, sequence, manual_caches[0]), w.final_norm, c.rms_norm_eps);
  const float divisor = static_cast<float>(c.hidden_size) / static_cast<float>(c.dim_model_base);
  for (std::int64_t t = 0; t < 3; ++t) {
    std::vector<float> row(static_cast<std::size_t>(c.hidden_size));
    for (std::int64_t k = 0; k < c.hidden_size; ++k) row[static_cast<std::size_t>(k)] = round_to(DType::bf16, h.get(t, k) / divisor);
    for (std::int64_t v = 0; v < c.vocab_size; ++v) {
      float sum = 0.0f;
      for (std::int64_t k = 0; k < c.hidden_size; ++k) sum += w.embedding.get(v, k) * row[static_cast<std::size_t>(k)];
      ASSERT_EQ(logits.get(t, v), sum) << "token " << t << ", logit " << v;
    }
  }
  ModelWeights untied = w;
  untied.lm_head = w.embedding;
  EXPECT_THROW(check_model(c, untied), Error);
}

TEST(ReferenceModel, GreedyAndBadInputs) {
  Matrix logits(DType::f32, 3, 4);
  const float values[3][4] = {{0, 2, 2, 1}, {NAN, -1, -3, NAN}, {-5, -4, -4, -6}};
  for (int r = 0; r < 3; ++r)
    for (int v = 0; v < 4; ++v) logits.set(r, v, values[r][v]);
  EXPECT_EQ(reference::greedy(logits), (std::vector<std::int32_t>{1, 1, 1}));  // lowest index on ties, NaN never

  const ModelConfig c = small_model("mixtral-8x7b");
  const ModelWeights w = synthetic_model(c, 1, DType::bf16, kPattern, 61);
  std::vector<reference::KvCache> caches = reference::make_kv_caches(c, w, 1, 4);
  EXPECT_THROW(reference::model_forward(c, w, std::vector<std::int32_t>{97}, std::vector<std::int32_t>{0}, caches), Error);
  EXPECT_THROW(reference::model_forward(c, w, std::vector<std::int32_t>{1, 2}, std::vector<std::int32_t>{0}, caches), Error);
  std::vector<reference::KvCache> too_few;
  EXPECT_THROW(reference::model_forward(c, w, std::vector<std::int32_t>{1}, std::vector<std::int32_t>{0}, too_few), Error);
  EXPECT_THROW(synthetic_model(c, 0, DType::bf16, kPattern, 61), Error);
  EXPECT_THROW(synthetic_model(c, c.num_layers + 1, DType::bf16, kPattern, 61), Error);
}

}  // namespace
}  // namespace samoyeds
