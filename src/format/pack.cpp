// SPDX-License-Identifier: Apache-2.0
// Pruning + packing (dense -> Samoyeds format), unpacking to the effective weight Ŵ, and the
// structural validation of a packed matrix. Layout arithmetic lives in format/layout.h.
#include <algorithm>
#include <array>
#include <cmath>

#include "core/parallel.h"
#include "format/layout.h"
#include "samoyeds/format.h"

namespace samoyeds {

namespace layout = format_layout;

// --- logical accessors ---------------------------------------------------------------------------
// The *_at helpers take the geometry so hot loops (validate, unpack) compute it once.

namespace {

std::uint32_t chunk_code_at(const PackedMatrix& p, const PackedGeometry& g, std::int64_t crow, std::int64_t chunk) {
  const auto at = layout::metadata_location(crow, chunk, g.cols_padded);
  return (p.metadata[static_cast<std::size_t>(at.word)] >> at.shift) & 0xFu;
}

int selected_offset_at(const PackedMatrix& p, const PackedGeometry& g, std::int64_t crow, std::int64_t segment) {
  int offset = 0;
  for (int b = 0; b < g.select_bits; ++b) {
    const auto at = layout::select_location(crow, segment, b, g.num_segments, g.select_bits);
    offset |= static_cast<int>((p.row_select[static_cast<std::size_t>(at.word)] >> at.shift) & 1u) << b;
  }
  return offset;
}

std::int64_t logical_row_at(const PackedMatrix& p, const PackedGeometry& g, std::int64_t crow, std::int64_t col) {
  if (!p.pattern.has_row_selection()) return crow;
  return (crow / p.pattern.n) * p.pattern.m + selected_offset_at(p, g, crow, col / p.pattern.v);
}

}  // namespace

void PackedMatrix::chunk_positions(std::int64_t crow, std::int64_t chunk, int& first, int& second) const {
  const auto g = geometry();
  SAMOYEDS_CHECK(crow >= 0 && crow < g.compressed_rows_padded && chunk >= 0 && chunk < g.cols_padded / 4,
                 "chunk (", crow, ", ", chunk, ") is outside the packed matrix");
  const std::uint32_t code = chunk_code_at(*this, g, crow, chunk);
  first = static_cast<int>(code & 3u);
  second = static_cast<int>(code >> 2);
}

int PackedMatrix::selected_offset(std::int64_t crow, std::int64_t segment) const {
  if (!pattern.has_row_selection()) return 0;
  const auto g = geometry();
  SAMOYEDS_CHECK(crow >= 0 && crow < g.compressed_rows_padded && segment >= 0 && segment < g.num_segments,
                 "row-select entry (", crow, ", ", segment, ") is outside the packed matrix");
  return selected_offset_at(*this, g, crow, segment);
}

std::int64_t PackedMatrix::logical_row(std::int64_t crow, std::int64_t col) const {
  const auto g = geometry();
  SAMOYEDS_CHECK(crow >= 0 && crow < g.compressed_rows_padded && col >= 0 && col < g.cols_padded,
                 "(", crow, ", ", col, ") is outside the packed matrix");
  return logical_row_at(*this, g, crow, col);
}

float PackedMatrix::value(std::int64_t crow, std::int64_t value_col) const {
  const auto g = geometry();
  SAMOYEDS_CHECK(crow >= 0 && crow < g.compressed_rows_padded && value_col >= 0 && value_col < g.cols_padded / 2,
                 "value (", crow, ", ", value_col, ") is outside the packed matrix");
  return half_to_float(dtype, values[static_cast<std::size_t>(crow * (g.cols_padded / 2) + value_col)]);
}

// --- packing -------------------------------------------------------------------------------------

namespace {

struct ChunkChoice {
  std::uint8_t first = 0, second = 1;
};

// The two highest-scoring positions of a chunk, ascending; ties go to the lower position.
ChunkChoice choose_in_chunk(const std::array<float, 4>& score) {
  std::array<int, 4> order{0, 1, 2, 3};
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
  const int lo = std::min(order[0], order[1]);
  const int hi = std::max(order[0], order[1]);
  return {static_cast<std::uint8_t>(lo), static_cast<std::uint8_t>(hi)};
}

std::uint16_t canonical_bits(DType dtype, std::uint16_t bits) {
  return half_to_float(dtype, bits) == 0.0f ? std::uint16_t{0} : bits;  // -0.0 -> +0.0
}

}  // namespace

PackedMatrix pack(const Matrix& dense, const SparsityPattern& pattern, const PackOptions& options) {
  SAMOYEDS_CHECK(is_half_precision(dense.dtype()), "pack() needs bf16 or fp16 weights, got ",
                 dtype_name(dense.dtype()), "; convert the weights first");
  const PackedGeometry g = packed_geometry(pattern, dense.rows(), dense.cols());
  const bool by_activation = options.policy == PruningPolicy::activation;
  if (by_activation) {
    SAMOYEDS_CHECK(static_cast<std::int64_t>(options.column_norms.size()) == g.cols,
                   "activation pruning needs one calibration column norm per input column: got ",
                   options.column_norms.size(), " norms for ", g.cols, " columns");
    for (float norm : options.column_norms) {
      SAMOYEDS_CHECK(std::isfinite(norm) && norm >= 0.0f, "calibration column norms must be finite and >= 0, got ", norm);
    }
  }

  // Serial scan first, so the error names the first non-finite weight whatever the thread count.
  for (std::int64_t i = 0; i < g.rows * g.cols; ++i) {
    const float w = half_to_float(dense.dtype(), dense.half_data()[i]);
    SAMOYEDS_CHECK(std::isfinite(w), "weight [", i / g.cols, ", ", i % g.cols, "] is ", w, "; packing needs finite weights");
  }

  PackedMatrix packed;
  packed.pattern = pattern;
  packed.dtype = dense.dtype();
  packed.rows = g.rows;
  packed.cols = g.cols;
  packed.values.assign(static_cast<std::size_t>(g.num_values()), 0);
  packed.metadata.assign(static_cast<std::size_t>(g.num_metadata_words()), layout::kPaddingMetadataWord);
  packed.row_select.assign(static_cast<std::size_t>(g.num_select_words()), 0);

  const std::int64_t num_chunks = g.cols_padded / 4;
  const std::int64_t values_per_row = g.cols_padded / 2;
  const int n = pattern.n, m = pattern.m;
  const std::int64_t chunks_per_segment = pattern.has_row_selection() ? pattern.v / 4 : num_chunks;
  const std::int64_t num_segments = pattern.has_row_selection() ? g.num_segments : 1;
  const std::uint16_t* weights = dense.half_data();  // [rows, cols]

  // Groups are independent, but neighbouring groups share metadata words (16-row tiles) and
  // row-select words (32 rows). Threads therefore take whole tiles of 32 groups = 32*N compressed
  // rows, a multiple of both, so no two threads write the same word.
  const std::int64_t groups_per_tile = 32;
  const std::int64_t num_tiles = (g.num_groups + groups_per_tile - 1) / groups_per_tile;

  detail::parallel_for(num_tiles, 4, [&](std::int64_t tile_begin, std::int64_t tile_end) {
    std::vector<float> row_values(static_cast<std::size_t>(m * g.cols_padded));
    std::vector<float> row_scores(static_cast<std::size_t>(m * g.cols_padded));
    std::vector<ChunkChoice> choices(static_cast<std::size_t>(m * num_chunks));
    std::vector<double> segment_score(static_cast<std::size_t>(m * num_segments));
    const std::int64_t group_end = std::min(g.num_groups, tile_end * groups_per_tile);
    for (std::int64_t group = tile_begin * groups_per_tile; group < group_end; ++group) {
      // 1. widen the group's rows; padding rows and columns score below every real weight.
      for (int o = 0; o < m; ++o) {
        const std::int64_t row = group * m + o;
        for (std::int64_t c = 0; c < g.cols_padded; ++c) {
          float w = 0.0f, score = -1.0f;
          if (row < g.rows && c < g.cols) {
            w = half_to_float(dense.dtype(), weights[row * g.cols + c]);
            score = std::fabs(w) * (by_activation ? options.column_norms[static_cast<std::size_t>(c)] : 1.0f);
          }
          row_values[static_cast<std::size_t>(o * g.cols_padded + c)] = w;
          row_scores[static_cast<std::size_t>(o * g.cols_padded + c)] = score;
        }
      }
      // 2. 2:4 inside every chunk of every row, and each row's kept score per segment.
      std::fill(segment_score.begin(), segment_score.end(), 0.0);
      for (int o = 0; o < m; ++o) {
        const bool padding_row = group * m + o >= g.rows;
        for (std::int64_t q = 0; q < num_chunks; ++q) {
          std::array<float, 4> score;
          for (int p = 0; p < 4; ++p) score[p] = row_scores[static_cast<std::size_t>(o * g.cols_padded + 4 * q + p)];
          const ChunkChoice choice = choose_in_chunk(score);
          choices[static_cast<std::size_t>(o * num_chunks + q)] = choice;
          double& total = segment_score[static_cast<std::size_t>(o * num_segments + q / chunks_per_segment)];
          total = padding_row ? -1.0 : total + std::max(0.0f, score[choice.first]) + std::max(0.0f, score[choice.second]);
        }
      }
      // 3. per segment, the N best rows of the group (ties to the lower row), in ascending order.
      for (std::int64_t s = 0; s < num_segments; ++s) {
        // Row o is kept when fewer than N rows beat it (higher score, or equal score and lower row);
        // walking o upwards then yields the kept rows in ascending order.
        int i = 0;
        for (int o = 0; o < m; ++o) {
          const double mine = segment_score[static_cast<std::size_t>(o * num_segments + s)];
          int better = 0;
          for (int x = 0; x < m; ++x) {
            const double theirs = segment_score[static_cast<std::size_t>(x * num_segments + s)];
            better += theirs > mine || (theirs == mine && x < o);
          }
          if (better >= n) continue;
          const std::int64_t crow = group * n + i++;
          for (int b = 0; b < g.select_bits; ++b) {
            const auto at = layout::select_location(crow, s, b, g.num_segments, g.select_bits);
            packed.row_select[static_cast<std::size_t>(at.word)] |= static_cast<std::uint32_t>((o >> b) & 1) << at.shift;
          }
          const std::int64_t q_end = std::min(num_chunks, (s + 1) * chunks_per_segment);
          for (std::int64_t q = s * chunks_per_segment; q < q_end; ++q) {
            const ChunkChoice choice = choices[static_cast<std::size_t>(o * num_chunks + q)];
            const std::int64_t row = group * m + o;
            for (int k = 0; k < 2; ++k) {
              const std::int64_t c = 4 * q + (k == 0 ? choice.first : choice.second);
              const bool real = row < g.rows && c < g.cols;
              packed.values[static_cast<std::size_t>(crow * values_per_row + 2 * q + k)] =
                  real ? canonical_bits(dense.dtype(), weights[row * g.cols + c]) : std::uint16_t{0};
            }
            const auto at = layout::metadata_location(crow, q, g.cols_padded);
            std::uint32_t& word = packed.metadata[static_cast<std::size_t>(at.word)];
            word = (word & ~(0xFu << at.shift)) | (layout::chunk_code(choice.first, choice.second) << at.shift);
          }
        }
      }
    }
  });
  return packed;
}

// --- unpacking -----------------------------------------------------------------------------------

Matrix unpack(const PackedMatrix& packed) {
  packed.validate();
  const PackedGeometry g = packed.geometry();
  Matrix effective(packed.dtype, g.rows, g.cols);
  std::uint16_t* out = effective.half_data();  // [rows, cols]
  const std::int64_t num_chunks = g.cols_padded / 4;
  for (std::int64_t crow = 0; crow < g.compressed_rows; ++crow) {
    for (std::int64_t q = 0; q < num_chunks; ++q) {
      const std::int64_t row = logical_row_at(packed, g, crow, 4 * q);
      if (row >= g.rows) continue;
      const std::uint32_t code = chunk_code_at(packed, g, crow, q);
      const int first = static_cast<int>(code & 3u), second = static_cast<int>(code >> 2);
      for (int k = 0; k < 2; ++k) {
        const std::int64_t c = 4 * q + (k == 0 ? first : second);
        if (c < g.cols) out[row * g.cols + c] = packed.values[static_cast<std::size_t>(crow * (g.cols_padded / 2) + 2 * q + k)];
      }
    }
  }
  return effective;
}

// --- validation ----------------------------------------------------------------------------------

void PackedMatrix::validate() const {
  SAMOYEDS_CHECK(is_half_precision(dtype), "packed values must be bf16 or fp16, got ", dtype_name(dtype));
  const PackedGeometry g = geometry();
  SAMOYEDS_CHECK(static_cast<std::int64_t>(values.size()) == g.num_values(), "packed values hold ", values.size(),
                 " elements; pattern ", pattern.to_string(), " on [", rows, ", ", cols, "] needs ", g.num_values());
  SAMOYEDS_CHECK(static_cast<std::int64_t>(metadata.size()) == g.num_metadata_words(), "packed metadata holds ",
                 metadata.size(), " words; [", rows, ", ", cols, "] needs ", g.num_metadata_words());
  SAMOYEDS_CHECK(static_cast<std::int64_t>(row_select.size()) == g.num_select_words(), "packed row_select holds ",
                 row_select.size(), " words; pattern ", pattern.to_string(), " on [", rows, ", ", cols, "] needs ",
                 g.num_select_words());

  const std::int64_t num_chunks = g.cols_padded / 4;
  const std::int64_t values_per_row = g.cols_padded / 2;
  for (std::int64_t crow = 0; crow < g.compressed_rows_padded; ++crow) {
    const bool padding_crow = crow >= g.compressed_rows;
    for (std::int64_t q = 0; q < num_chunks; ++q) {
      const std::uint32_t code = chunk_code_at(*this, g, crow, q);
      const int first = static_cast<int>(code & 3u), second = static_cast<int>(code >> 2);
      SAMOYEDS_CHECK(first < second, "metadata of compressed row ", crow, ", chunk ", q, " holds positions (", first,
                     ", ", second, "); each chunk needs two distinct ascending positions");
      SAMOYEDS_CHECK(!padding_crow || code == layout::kPaddingChunkCode, "metadata of padding compressed row ", crow,
                     ", chunk ", q, " is not the padding code (0, 1)");
      const std::int64_t row = padding_crow ? g.rows : logical_row_at(*this, g, crow, 4 * q);
      for (int k = 0; k < 2; ++k) {
        const std::int64_t c = 4 * q + (k == 0 ? first : second);
        const std::uint16_t bits = values[static_cast<std::size_t>(crow * values_per_row + 2 * q + k)];
        if (row >= g.rows || c >= g.cols) {
          SAMOYEDS_CHECK(bits == 0, "padding value of compressed row ", crow, " at column ", c,
                         " is not +0.0; padding must be zero so kernels can compute over it");
        } else {
          SAMOYEDS_CHECK(std::isfinite(half_to_float(dtype, bits)), "value of compressed row ", crow, " at column ", c,
                         " is not finite");
        }
      }
    }
  }
  if (!pattern.has_row_selection()) return;
  for (std::int64_t s = 0; s < g.num_segments; ++s) {
    for (std::int64_t group = 0; group < g.num_groups; ++group) {
      int previous = -1;
      for (int i = 0; i < pattern.n; ++i) {
        const int offset = selected_offset_at(*this, g, group * pattern.n + i, s);
        SAMOYEDS_CHECK(offset > previous && offset < pattern.m, "row selection of group ", group, ", segment ", s,
                       " is not N = ", pattern.n, " distinct ascending offsets below M = ", pattern.m);
        previous = offset;
      }
    }
    for (std::int64_t crow = g.compressed_rows; crow < g.compressed_rows_padded; ++crow) {
      SAMOYEDS_CHECK(selected_offset_at(*this, g, crow, s) == 0, "row select of padding compressed row ", crow, " is not zero");
    }
  }
}

std::vector<float> column_norms(const Matrix& calibration) {
  SAMOYEDS_CHECK(calibration.rows() >= 1 && calibration.cols() >= 1,
                 "calibration activations must be [tokens, columns] with at least one token, got [",
                 calibration.rows(), ", ", calibration.cols(), "]");
  std::vector<double> sums(static_cast<std::size_t>(calibration.cols()), 0.0);
  std::vector<float> row(static_cast<std::size_t>(calibration.cols()));
  for (std::int64_t t = 0; t < calibration.rows(); ++t) {
    calibration.row_to_float(t, row.data());
    for (std::size_t c = 0; c < row.size(); ++c) {
      SAMOYEDS_CHECK(std::isfinite(row[c]), "calibration activation [", t, ", ", c, "] is not finite");
      sums[c] += static_cast<double>(row[c]) * row[c];
    }
  }
  std::vector<float> norms(sums.size());
  for (std::size_t c = 0; c < sums.size(); ++c) norms[c] = static_cast<float>(std::sqrt(sums[c]));
  return norms;
}

}  // namespace samoyeds
