// SPDX-License-Identifier: Apache-2.0
// CPU reference SSMM against dense products on the effective weight Ŵ: exact tier (small integers,
// fp32 output, bitwise equal) and the fused gate/up and weighted down epilogues.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "common/test_util.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

using testing::random_int_matrix;
using testing::random_normal_matrix;
using testing::seed_trace;

// Y[j, r] = sum_c Ŵ[r, c] * X[idx[j], c] in double (exact for the integer tier).
std::vector<double> dense_product(const Matrix& w_hat, const Matrix& x, const std::vector<std::int32_t>& idx) {
  std::vector<double> y(idx.size() * static_cast<std::size_t>(w_hat.rows()), 0.0);
  for (std::size_t j = 0; j < idx.size(); ++j)
    for (std::int64_t r = 0; r < w_hat.rows(); ++r) {
      double sum = 0.0;
      for (std::int64_t c = 0; c < w_hat.cols(); ++c) sum += static_cast<double>(w_hat.get(r, c)) * x.get(idx[j], c);
      y[j * static_cast<std::size_t>(w_hat.rows()) + static_cast<std::size_t>(r)] = sum;
    }
  return y;
}

struct Shape {
  const char* pattern;
  std::int64_t m, k, tokens;
};

class ReferenceSsmmExact : public ::testing::TestWithParam<Shape> {};

TEST_P(ReferenceSsmmExact, EqualsDenseProductOnEffectiveWeight) {
  const Shape s = GetParam();
  const std::uint64_t seed = 77 + static_cast<std::uint64_t>(s.m + s.k);
  SCOPED_TRACE(seed_trace(seed));
  const Matrix w = random_int_matrix(DType::bf16, s.m, s.k, seed);
  const Matrix x = random_int_matrix(DType::bf16, s.tokens, s.k, seed + 1);
  const PackedMatrix packed = pack(w, SparsityPattern::parse(s.pattern));
  const Matrix w_hat = unpack(packed);
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::vector<std::int32_t> idx;  // a gathered, unsorted list with a repeat
  for (std::int64_t t = s.tokens - 1; t >= 0; t -= 2) idx.push_back(static_cast<std::int32_t>(t));
  if (!idx.empty()) idx.push_back(idx.front());
  const Matrix y = reference::ssmm(packed, x, Tokens::list(idx), DType::f32);
  const auto expected = dense_product(w_hat, x, idx);
  ASSERT_EQ(y.rows(), static_cast<std::int64_t>(idx.size()));
  ASSERT_EQ(y.cols(), s.m);
  for (std::size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(y.float_data()[i], expected[i]) << "element " << i;
  // all tokens (dense activations)
  std::vector<std::int32_t> all(static_cast<std::size_t>(s.tokens));
  std::iota(all.begin(), all.end(), 0);
  const Matrix y_all = reference::ssmm(packed, x, Tokens::all(s.tokens), DType::f32);
  const auto expected_all = dense_product(w_hat, x, all);
  for (std::size_t i = 0; i < expected_all.size(); ++i) ASSERT_EQ(y_all.float_data()[i], expected_all[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceSsmmExact,
                         ::testing::Values(Shape{"1:2:128", 1408, 256, 7}, Shape{"1:2:256", 130, 1408, 5},
                                           Shape{"2:4:64", 101, 200, 3}, Shape{"2:4", 96, 70, 4},
                                           Shape{"1:2:128", 64, 128, 1}, Shape{"1:2:128", 64, 128, 0}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           std::string name = info.param.pattern;
                           for (char& ch : name) ch = ch == ':' ? '_' : ch;
                           return "p" + name + "_" + std::to_string(info.param.m) + "x" + std::to_string(info.param.k) +
                                  "_T" + std::to_string(info.param.tokens);
                         });

TEST(ReferenceSsmm, GateUpAndDownEpilogues) {
  const std::uint64_t seed = 2024;
  SCOPED_TRACE(seed_trace(seed));
  const std::int64_t H = 192, I = 160, T = 9;
  const auto pattern = SparsityPattern::parse("1:2:64");
  const PackedMatrix gate = pack(random_normal_matrix(DType::bf16, I, H, seed, 0.1f), pattern);
  const PackedMatrix up = pack(random_normal_matrix(DType::bf16, I, H, seed + 1, 0.1f), pattern);
  const PackedMatrix lin = pack(random_normal_matrix(DType::bf16, I, H, seed + 2, 0.1f), pattern);
  const PackedMatrix down = pack(random_normal_matrix(DType::bf16, H, I, seed + 3, 0.1f), pattern);
  const Matrix x = random_normal_matrix(DType::bf16, T, H, seed + 4);
  const std::vector<std::int32_t> idx = {8, 0, 3};
  const Matrix g = reference::ssmm(gate, x, Tokens::list(idx), DType::f32);
  const Matrix u = reference::ssmm(up, x, Tokens::list(idx), DType::f32);
  const Matrix l = reference::ssmm(lin, x, Tokens::list(idx), DType::f32);
  const Matrix a = reference::ssmm_gate_up(gate, up, x, Tokens::list(idx), DType::bf16);
  const Matrix a_openmoe = reference::ssmm_gate_up(gate, up, x, Tokens::list(idx), DType::bf16, &lin);
  for (std::int64_t j = 0; j < 3; ++j)
    for (std::int64_t i = 0; i < I; ++i) {
      const float expected = reference::silu(g.get(j, i)) * u.get(j, i);
      ASSERT_EQ(a.get(j, i), round_to(DType::bf16, expected)) << j << "," << i;
      ASSERT_EQ(a_openmoe.get(j, i), round_to(DType::bf16, expected * l.get(j, i))) << j << "," << i;
    }
  const std::vector<float> weights = {0.5f, 0.25f, 2.0f};
  const Matrix y = reference::ssmm_down_weighted(down, a, weights, DType::bf16);
  const Matrix plain = reference::ssmm(down, a, Tokens::all(3), DType::f32);
  for (std::int64_t j = 0; j < 3; ++j)
    for (std::int64_t h = 0; h < H; ++h)
      ASSERT_EQ(y.get(j, h), round_to(DType::bf16, weights[static_cast<std::size_t>(j)] * plain.get(j, h)));
  EXPECT_NEAR(reference::silu(1.0f), 0.7310586f, 1e-6);
  EXPECT_EQ(reference::silu(0.0f), 0.0f);
}

TEST(ReferenceSsmm, RejectsBadInputs) {
  const PackedMatrix w = pack(random_int_matrix(DType::bf16, 64, 128, 1), SparsityPattern::parse("1:2:128"));
  const Matrix x = random_int_matrix(DType::bf16, 4, 128, 2);
  const std::vector<std::int32_t> out_of_range = {0, 4};
  EXPECT_THROW(reference::ssmm(w, x, Tokens::list(out_of_range), DType::f32), Error);
  const std::vector<std::int32_t> negative = {-1};
  EXPECT_THROW(reference::ssmm(w, x, Tokens::list(negative), DType::f32), Error);
  EXPECT_THROW(reference::ssmm(w, random_int_matrix(DType::bf16, 4, 96, 3), Tokens::all(4), DType::f32), Error);
  EXPECT_THROW(reference::ssmm(w, random_int_matrix(DType::f16, 4, 128, 3), Tokens::all(4), DType::f32), Error);
  EXPECT_THROW(reference::ssmm(w, x, Tokens::all(3), DType::f32), Error);
  const std::vector<float> two_weights = {1.0f, 1.0f};
  EXPECT_THROW(reference::ssmm_down_weighted(w, x, two_weights, DType::bf16), Error);
  const PackedMatrix other = pack(random_int_matrix(DType::bf16, 32, 128, 4), SparsityPattern::parse("1:2:128"));
  EXPECT_THROW(reference::ssmm_gate_up(w, other, x, Tokens::all(4), DType::bf16), Error);
}

}  // namespace
}  // namespace samoyeds
