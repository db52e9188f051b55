// SPDX-License-Identifier: Apache-2.0
// The Samoyeds format: pattern parsing, geometry, a hand-worked example, pack -> unpack against an
// independent test-side pruner, structural invariants, both policies, odd shapes, bad inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "common/test_util.h"
#include "format/layout.h"
#include "samoyeds/format.h"

namespace samoyeds {
namespace {

using testing::random_int_matrix;
using testing::random_normal_matrix;
using testing::seed_trace;

// --- an independent, deliberately plain implementation of the pruning rules (docs/format.md §4) --
Matrix reference_prune(const Matrix& w, const SparsityPattern& p, const std::vector<float>* norms = nullptr) {
  const std::int64_t rows = w.rows(), cols = w.cols();
  const std::int64_t cols_padded = (cols + 63) / 64 * 64;
  const int n = p.has_row_selection() ? p.n : 1, m = p.has_row_selection() ? p.m : 1;
  const std::int64_t v = p.has_row_selection() ? p.v : cols_padded;
  auto score = [&](std::int64_t r, std::int64_t c) -> float {
    if (r >= rows || c >= cols) return -1.0f;
    const float a = std::fabs(w.get(r, c));
    return norms ? a * (*norms)[static_cast<std::size_t>(c)] : a;
  };
  auto kept_in_chunk = [&](std::int64_t r, std::int64_t q, int position) {
    int better = 0;  // positions that beat `position` (higher score, or equal score and lower index)
    for (int o = 0; o < 4; ++o) {
      if (o == position) continue;
      const float so = score(r, 4 * q + o), sp = score(r, 4 * q + position);
      if (so > sp || (so == sp && o < position)) ++better;
    }
    return better < 2;
  };
  Matrix out(w.dtype(), rows, cols);
  const std::int64_t num_groups = (rows + m - 1) / m;
  for (std::int64_t group = 0; group < num_groups; ++group) {
    for (std::int64_t s0 = 0; s0 < cols_padded; s0 += v) {
      const std::int64_t s1 = std::min(cols_padded, s0 + v);
      std::vector<double> row_score(static_cast<std::size_t>(m), 0.0);
      for (int o = 0; o < m; ++o) {
        const std::int64_t r = group * m + o;
        if (r >= rows) { row_score[static_cast<std::size_t>(o)] = -1.0; continue; }
        for (std::int64_t c = s0; c < s1; ++c)
          if (kept_in_chunk(r, c / 4, static_cast<int>(c % 4))) row_score[static_cast<std::size_t>(o)] += std::max(0.0f, score(r, c));
      }
      for (int o = 0; o < m; ++o) {
        int better = 0;
        for (int x = 0; x < m; ++x) {
          if (x == o) continue;
          const double sx = row_score[static_cast<std::size_t>(x)], so = row_score[static_cast<std::size_t>(o)];
          if (sx > so || (sx == so && x < o)) ++better;
        }
        const std::int64_t r = group * m + o;
        if (better >= n || r >= rows) continue;
        for (std::int64_t c = s0; c < std::min(s1, cols); ++c) {
          if (!kept_in_chunk(r, c / 4, static_cast<int>(c % 4))) continue;
          const float value = w.get(r, c);
          out.set(r, c, value == 0.0f ? 0.0f : value);
        }
      }
    }
  }
  return out;
}

void expect_bitwise_equal(const Matrix& actual, const Matrix& expected) {
  ASSERT_EQ(actual.rows(), expected.rows());
  ASSERT_EQ(actual.cols(), expected.cols());
  ASSERT_EQ(actual.dtype(), expected.dtype());
  std::int64_t mismatches = 0;
  for (std::int64_t r = 0; r < actual.rows(); ++r) {
    for (std::int64_t c = 0; c < actual.cols(); ++c) {
      const auto a = actual.half_data()[r * actual.cols() + c], e = expected.half_data()[r * actual.cols() + c];
      if (a != e && mismatches++ < 5) ADD_FAILURE() << "mismatch at [" << r << ", " << c << "]: got bits " << a << ", want " << e;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// --- patterns and geometry -----------------------------------------------------------------------

TEST(FormatPattern, ParsesAndPrints) {
  EXPECT_EQ(SparsityPattern::parse("1:2:128"), SparsityPattern::vector_nm(1, 2, 128));
  EXPECT_EQ(SparsityPattern::parse("1:2"), SparsityPattern::vector_nm(1, 2, 128));
  EXPECT_EQ(SparsityPattern::parse("2:4:64").to_string(), "2:4:64");
  EXPECT_EQ(SparsityPattern::parse("7:8:512").to_string(), "7:8:512");
  const auto plain = SparsityPattern::parse("2:4");
  EXPECT_FALSE(plain.has_row_selection());
  EXPECT_EQ(plain.to_string(), "2:4");
  EXPECT_DOUBLE_EQ(plain.density(), 0.5);
  EXPECT_DOUBLE_EQ(SparsityPattern::parse("1:2:128").density(), 0.25);
}

TEST(FormatPattern, RejectsUnsupported) {
  for (const char* bad : {"1:1:0", "1:1:128", "2:2:128", "0:2:128", "1:9:128", "3:2:128", "1:2:100", "1:2:0", "1:2:-32", "abc", "1:2:128:4",
                          "1::128", "", "1:2:128x"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(SparsityPattern::parse(bad), Error);
  }
  try {
    SparsityPattern::parse("1:2:100");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 32"), std::string::npos) << e.what();
  }
}

TEST(FormatGeometry, MixtralExpertIsAbout29PercentOfDense) {
  const auto g = packed_geometry(SparsityPattern::parse("1:2:128"), 14336, 4096);
  EXPECT_EQ(g.compressed_rows, 7168);
  EXPECT_EQ(g.compressed_rows_padded, 7168);
  EXPECT_EQ(g.num_segments, 32);
  EXPECT_EQ(g.select_bits, 1);
  EXPECT_EQ(g.values_bytes(), 7168LL * 2048 * 2);
  EXPECT_EQ(g.metadata_bytes(), 7168LL * 4096 / 8);        // 2 bits per kept value
  EXPECT_EQ(g.select_bytes(), 7168LL * 32 / 8);            // 1 bit per compressed row and segment
  const double ratio = static_cast<double>(g.total_bytes()) / static_cast<double>(g.dense_bytes());
  EXPECT_NEAR(ratio, 0.2815, 0.001);
}

TEST(FormatGeometry, PadsOddShapes) {
  const auto g = packed_geometry(SparsityPattern::parse("2:4:64"), 1409, 70);
  EXPECT_EQ(g.num_groups, 353);                 // ceil(1409 / 4)
  EXPECT_EQ(g.compressed_rows, 706);
  EXPECT_EQ(g.compressed_rows_padded, 768);
  EXPECT_EQ(g.cols_padded, 128);
  EXPECT_EQ(g.num_segments, 2);
  EXPECT_EQ(g.select_bits, 2);
  const auto plain = packed_geometry(SparsityPattern::plain_2_4(), 5760, 2304);
  EXPECT_EQ(plain.compressed_rows, 5760);
  EXPECT_EQ(plain.num_segments, 0);
  EXPECT_EQ(plain.select_bytes(), 0);
  // V larger than the padded columns: one partial segment.
  EXPECT_EQ(packed_geometry(SparsityPattern::parse("1:2:512"), 64, 96).num_segments, 1);
  EXPECT_EQ(packed_geometry(SparsityPattern::parse("1:2:256"), 64, 1408).num_segments, 6);
  EXPECT_THROW(packed_geometry(SparsityPattern::parse("1:2:128"), 0, 64), Error);
  EXPECT_THROW(packed_geometry(SparsityPattern::parse("1:2:128"), 64, 0), Error);
}

// --- the hand-worked example of docs/format.md §5 --------------------------------------------------

TEST(FormatHandWorked, FourBySixtyFourWithOneTwoThirtyTwo) {
  // Rows 0..3 (groups {0,1}, {2,3}); 64 columns = segments [0,32) and [32,64), 16 chunks.
  Matrix w(DType::bf16, 4, 64);
  for (int q = 0; q < 16; ++q) {
    const float row0[4] = {4, 1, 3, 2};
    const float row1_seg0[4] = {1, 1, 1, 1}, row1_seg1[4] = {0, 9, 0, 8};
    const float row2[4] = {-1, -2, -3, -4}, row3[4] = {2, 2, 2, 2};
    for (int p = 0; p < 4; ++p) {
      w.set(0, 4 * q + p, q == 3 ? -0.0f : row0[p]);
      w.set(1, 4 * q + p, q < 8 ? row1_seg0[p] : row1_seg1[p]);
      w.set(2, 4 * q + p, row2[p]);
      w.set(3, 4 * q + p, row3[p]);
    }
  }
  const PackedMatrix packed = pack(w, SparsityPattern::parse("1:2:32"));

  // Group 0 keeps row 0 in segment 0 (49 > 16) and row 1 in segment 1 (136 > 56); group 1 keeps row 2.
  std::vector<std::uint32_t> expected_select = {0, 1, 0, 0};  // [crow/32 = 0..1][segment 0..1][bit 0]
  EXPECT_EQ(packed.row_select, expected_select);

  std::vector<std::uint32_t> expected_meta(static_cast<std::size_t>(64 / 16 * 2 * 16), 0x44444444u);
  expected_meta[0] = 0x44444888u;   // crow 0 chunks 0..3: (0,2) (0,2) (0,2) and (0,1) for the -0.0 chunk
  expected_meta[1] = 0x44448888u;   // crow 0 chunks 4..7: (0,2)
  expected_meta[2] = 0x4444EEEEu;   // crow 1 chunks 0..3: (2,3)
  expected_meta[3] = 0x4444EEEEu;
  expected_meta[16] = 0x4444DDDDu;  // crow 0 chunks 8..11 (k-step 1): (1,3) from row 1
  expected_meta[17] = 0x4444DDDDu;
  expected_meta[18] = 0x4444EEEEu;  // crow 1, k-step 1
  expected_meta[19] = 0x4444EEEEu;
  EXPECT_EQ(packed.metadata, expected_meta);

  const float expected_crow0[32] = {4, 3, 4, 3, 4, 3, 0, 0, 4, 3, 4, 3, 4, 3, 4, 3,
                                    9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8};
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(packed.value(0, i), expected_crow0[i]) << i;
    EXPECT_EQ(packed.value(1, i), (i % 2 == 0) ? -3.0f : -4.0f) << i;
  }
  EXPECT_EQ(packed.values[6], 0u) << "-0.0 must be stored as +0.0";
  for (int crow = 2; crow < 64; ++crow)
    for (int i = 0; i < 32; ++i) ASSERT_EQ(packed.value(crow, i), 0.0f);

  const Matrix effective = unpack(packed);
  for (int c = 0; c < 64; ++c) {
    const int q = c / 4, p = c % 4;
    EXPECT_EQ(effective.get(0, c), (c < 32 && q != 3 && (p == 0 || p == 2)) ? (p == 0 ? 4.0f : 3.0f) : 0.0f) << c;
    EXPECT_EQ(effective.get(1, c), (c >= 32 && (p == 1 || p == 3)) ? (p == 1 ? 9.0f : 8.0f) : 0.0f) << c;
    EXPECT_EQ(effective.get(2, c), p >= 2 ? (p == 2 ? -3.0f : -4.0f) : 0.0f) << c;
    EXPECT_EQ(effective.get(3, c), 0.0f) << c;
  }
  EXPECT_EQ(packed.logical_row(0, 0), 0);
  EXPECT_EQ(packed.logical_row(0, 40), 1);
  EXPECT_EQ(packed.logical_row(1, 40), 2);
}

// --- pack -> unpack against the test-side pruner ---------------------------------------------------

struct RoundTripCase {
  const char* pattern;
  std::int64_t rows, cols;
  DType dtype;
};

class FormatRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(FormatRoundTrip, UnpackEqualsPrunedMatrixBitForBit) {
  const auto& tc = GetParam();
  const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(tc.rows * 7 + tc.cols);
  SCOPED_TRACE(seed_trace(seed));
  const SparsityPattern pattern = SparsityPattern::parse(tc.pattern);
  for (bool integers : {true, false}) {
    const Matrix w = integers ? random_int_matrix(tc.dtype, tc.rows, tc.cols, seed)
                              : random_normal_matrix(tc.dtype, tc.rows, tc.cols, seed);
    const PackedMatrix packed = pack(w, pattern);
    EXPECT_NO_THROW(packed.validate());
    expect_bitwise_equal(unpack(packed), reference_prune(w, pattern));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FormatRoundTrip,
    ::testing::Values(RoundTripCase{"1:2:128", 256, 512, DType::bf16}, RoundTripCase{"1:2:128", 1408, 256, DType::bf16},
                      RoundTripCase{"1:2:128", 130, 2304, DType::f16}, RoundTripCase{"1:2:256", 96, 1408, DType::bf16},
                      RoundTripCase{"1:2:512", 64, 5760, DType::bf16}, RoundTripCase{"2:4:64", 101, 70, DType::bf16},
                      RoundTripCase{"3:8:32", 77, 96, DType::f16}, RoundTripCase{"1:3:96", 65, 200, DType::bf16},
                      RoundTripCase{"7:8:128", 9, 130, DType::bf16}, RoundTripCase{"2:4", 5760, 64, DType::bf16},
                      RoundTripCase{"2:4", 3, 5, DType::f16}, RoundTripCase{"1:2:32", 1, 1, DType::bf16}),
    [](const ::testing::TestParamInfo<RoundTripCase>& info) {
      std::string name = info.param.pattern;
      std::replace(name.begin(), name.end(), ':', '_');
      return "p" + name + "_" + std::to_string(info.param.rows) + "x" + std::to_string(info.param.cols) + "_" +
             dtype_name(info.param.dtype);
    });

// --- structural invariants, straight from the physical arrays ----------------------------------------

TEST(FormatInvariants, ExactlyNofMRowsAndTwoOfFour) {
  const std::uint64_t seed = 42;
  SCOPED_TRACE(seed_trace(seed));
  for (const char* text : {"1:2:128", "2:4:64", "3:8:256", "2:4"}) {
    SCOPED_TRACE(text);
    const auto pattern = SparsityPattern::parse(text);
    const Matrix w = random_int_matrix(DType::bf16, 200, 640, seed);  // no zeros: every kept value is non-zero
    const PackedMatrix packed = pack(w, pattern);
    const auto g = packed.geometry();
    const Matrix effective = unpack(packed);
    const int n = pattern.has_row_selection() ? pattern.n : 1, m = pattern.has_row_selection() ? pattern.m : 1;
    const std::int64_t v = pattern.has_row_selection() ? pattern.v : g.cols_padded;
    for (std::int64_t group = 0; group < g.num_groups; ++group) {
      for (std::int64_t s0 = 0; s0 < g.cols; s0 += v) {
        int rows_with_values = 0;
        for (int o = 0; o < m; ++o) {
          std::int64_t nonzero = 0;
          for (std::int64_t c = s0; c < std::min(g.cols, s0 + v); ++c) nonzero += effective.get(group * m + o, c) != 0.0f;
          if (nonzero > 0) {
            ++rows_with_values;
            EXPECT_EQ(nonzero, (std::min(g.cols, s0 + v) - s0) / 2) << "2 of every 4 columns in a kept row-segment";
          }
        }
        EXPECT_EQ(rows_with_values, n) << "group " << group << " segment start " << s0;
      }
    }
    for (std::int64_t crow = 0; crow < g.compressed_rows_padded; ++crow) {
      for (std::int64_t q = 0; q < g.cols_padded / 4; ++q) {
        int first = 0, second = 0;
        packed.chunk_positions(crow, q, first, second);
        ASSERT_LT(first, second);
      }
    }
  }
}

TEST(FormatPack, DeterministicAcrossThreadCounts) {
  const Matrix w = random_normal_matrix(DType::bf16, 1408, 512, 7);
  ::setenv("SAMOYEDS_NUM_THREADS", "1", 1);
  const PackedMatrix one = pack(w, SparsityPattern::parse("3:8:128"));
  ::setenv("SAMOYEDS_NUM_THREADS", "3", 1);
  const PackedMatrix three = pack(w, SparsityPattern::parse("3:8:128"));
  ::unsetenv("SAMOYEDS_NUM_THREADS");
  EXPECT_EQ(one.values, three.values);
  EXPECT_EQ(one.metadata, three.metadata);
  EXPECT_EQ(one.row_select, three.row_select);
}

TEST(FormatPack, TiesGoToTheLowerIndex) {
  Matrix w(DType::bf16, 2, 64);
  for (int c = 0; c < 64; ++c) {
    w.set(0, c, 1.0f);
    w.set(1, c, -1.0f);
  }
  const PackedMatrix packed = pack(w, SparsityPattern::parse("1:2:32"));
  for (std::int64_t q = 0; q < 16; ++q) {
    int first = 0, second = 0;
    packed.chunk_positions(0, q, first, second);
    EXPECT_EQ(first, 0);
    EXPECT_EQ(second, 1);
  }
  EXPECT_EQ(packed.selected_offset(0, 0), 0);
  EXPECT_EQ(packed.selected_offset(0, 1), 0);
}

TEST(FormatPack, AllZeroMatrixPacksToValidPadding) {
  const Matrix w(DType::f16, 33, 65);
  const PackedMatrix packed = pack(w, SparsityPattern::parse("1:2:128"));
  EXPECT_NO_THROW(packed.validate());
  for (auto bits : packed.values) ASSERT_EQ(bits, 0u);
  for (auto word : packed.metadata) ASSERT_EQ(word, format_layout::kPaddingMetadataWord);
}

TEST(FormatPack, ActivationPolicyFollowsCalibrationNorms) {
  // Row 0 is large on columns the calibration never activates; row 1 small on active columns.
  Matrix w(DType::bf16, 2, 64);
  for (int c = 0; c < 64; ++c) {
    w.set(0, c, c % 2 == 0 ? 8.0f : 0.5f);
    w.set(1, c, c % 2 == 1 ? 1.0f : 0.25f);
  }
  Matrix calibration(DType::bf16, 3, 64);
  for (int t = 0; t < 3; ++t)
    for (int c = 0; c < 64; ++c) calibration.set(t, c, c % 2 == 1 ? 2.0f : 0.01f);
  const auto pattern = SparsityPattern::parse("1:2:64");
  const PackedMatrix by_magnitude = pack(w, pattern);
  EXPECT_EQ(by_magnitude.selected_offset(0, 0), 0);
  PackOptions options;
  options.policy = PruningPolicy::activation;
  options.column_norms = column_norms(calibration);
  EXPECT_NEAR(options.column_norms[1], std::sqrt(12.0f), 1e-5);
  const PackedMatrix by_activation = pack(w, pattern, options);
  EXPECT_EQ(by_activation.selected_offset(0, 0), 1);
  int first = 0, second = 0;
  by_activation.chunk_positions(0, 0, first, second);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 3);
  const Matrix random = random_normal_matrix(DType::bf16, 150, 300, 99);
  const Matrix calib = random_normal_matrix(DType::bf16, 17, 300, 100);
  options.column_norms = column_norms(calib);
  expect_bitwise_equal(unpack(pack(random, SparsityPattern::parse("1:2:128"), options)),
                       reference_prune(random, SparsityPattern::parse("1:2:128"), &options.column_norms));
}

// --- bad inputs -------------------------------------------------------------------------------------

TEST(FormatErrors, BadInputsThrowClearErrors) {
  EXPECT_THROW(pack(Matrix(DType::f32, 4, 64), SparsityPattern::parse("1:2:128")), Error);
  Matrix nan_weights(DType::bf16, 4, 64);
  nan_weights.set(2, 5, std::nanf(""));
  try {
    pack(nan_weights, SparsityPattern::parse("1:2:128"));
    FAIL() << "NaN weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 5]"), std::string::npos) << e.what();
  }
  PackOptions options;
  options.policy = PruningPolicy::activation;
  options.column_norms = {1.0f, 2.0f};
  EXPECT_THROW(pack(Matrix(DType::bf16, 4, 64), SparsityPattern::parse("1:2:128"), options), Error);
  options.column_norms.assign(64, -1.0f);
  EXPECT_THROW(pack(Matrix(DType::bf16, 4, 64), SparsityPattern::parse("1:2:128"), options), Error);
  EXPECT_THROW(pack(Matrix(DType::bf16, 0, 64), SparsityPattern::parse("1:2:128")), Error);
  EXPECT_THROW(parse_pruning_policy("random"), Error);
  EXPECT_EQ(parse_pruning_policy("activation"), PruningPolicy::activation);
}

TEST(FormatErrors, ValidateCatchesCorruption) {
  const Matrix w = random_int_matrix(DType::bf16, 64, 128, 5);
  const PackedMatrix good = pack(w, SparsityPattern::parse("2:4:64"));
  {
    PackedMatrix bad = good;
    bad.metadata[3] = (bad.metadata[3] & ~0xFu) | format_layout::chunk_code(2, 2);  // equal positions
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;
    bad.metadata[0] = (bad.metadata[0] & ~0xFu) | format_layout::chunk_code(3, 1);  // descending
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;  // both compressed rows of group 0 select offset 3 in segment 0
    for (int b = 0; b < 2; ++b) bad.row_select[static_cast<std::size_t>(b)] |= 0x3u;
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;  // a value in a padding compressed row
    bad.values.back() = float_to_bf16(1.0f);
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;  // a padding compressed row with a non-padding chunk code
    bad.metadata.back() = 0x4444444Du;
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;
    bad.values.pop_back();
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;
    bad.row_select.push_back(0);
    EXPECT_THROW(bad.validate(), Error);
  }
  {
    PackedMatrix bad = good;
    bad.dtype = DType::f32;
    EXPECT_THROW(bad.validate(), Error);
  }
}

}  // namespace
}  // namespace samoyeds
