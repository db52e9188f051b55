// SPDX-License-Identifier: Apache-2.0
// The Samoyeds weight format: vector-wise N:M row selection on top of the hardware 2:4 pattern.
//
// A weight W [rows, cols] (nn.Linear layout: rows = output features, cols = input features) is cut
// into groups of M consecutive rows and segments of V consecutive columns. In every (group, segment)
// only N rows keep values; inside a kept row-segment every chunk of 4 consecutive columns keeps 2.
// Plain 2:4 mode keeps every row (no row selection). docs/format.md is the bit-exact specification
// of the three physical arrays (values, metadata, row_select) and of the padding rules.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "samoyeds/dtype.h"
#include "samoyeds/matrix.h"

namespace samoyeds {

// N:M:V parameters. Plain 2:4 is n = m = 1, v = 0 (one row per group, no segments).
struct SparsityPattern {
  int n = 1;
  int m = 2;
  int v = 128;

  static SparsityPattern vector_nm(int n, int m, int v);  // validated
  static SparsityPattern plain_2_4();
  // "N:M:V" (e.g. "1:2:128"), "N:M" (V = 128) or "2:4" (plain 2:4). Throws on anything else.
  static SparsityPattern parse(std::string_view text);

  bool has_row_selection() const { return m > 1; }
  std::string to_string() const;  // "1:2:128" or "2:4"
  double density() const { return 0.5 * n / m; }  // kept fraction of the logical weights
  void validate() const;  // throws unless plain 2:4 or 1 <= N < M <= 8 with V a positive multiple of 32
  bool operator==(const SparsityPattern&) const = default;
};

// Sizes of the packed arrays for one matrix (all derived from pattern, rows, cols).
struct PackedGeometry {
  static constexpr std::int64_t kRowTile = 64;  // compressed rows are padded to the wgmma M
  static constexpr std::int64_t kColTile = 64;  // columns are padded to a multiple of 64

  std::int64_t rows = 0, cols = 0;       // logical
  std::int64_t num_groups = 0;           // ceil(rows / M)
  std::int64_t compressed_rows = 0;      // num_groups * N (plain 2:4: rows)
  std::int64_t compressed_rows_padded = 0;  // round_up(compressed_rows, 64)
  std::int64_t cols_padded = 0;          // round_up(cols, 64)
  std::int64_t num_segments = 0;         // ceil(cols_padded / V) (plain 2:4: 0)
  int select_bits = 0;                   // ceil(log2(M)) (plain 2:4: 0)

  std::int64_t num_values() const { return compressed_rows_padded * cols_padded / 2; }
  std::int64_t num_metadata_words() const { return compressed_rows_padded * cols_padded / 32; }
  std::int64_t num_select_words() const { return compressed_rows_padded / 32 * num_segments * select_bits; }
  std::int64_t values_bytes() const { return num_values() * 2; }
  std::int64_t metadata_bytes() const { return num_metadata_words() * 4; }
  std::int64_t select_bytes() const { return num_select_words() * 4; }
  std::int64_t total_bytes() const { return values_bytes() + metadata_bytes() + select_bytes(); }
  std::int64_t dense_bytes() const { return rows * cols * 2; }  // the same matrix dense in bf16/fp16
};
PackedGeometry packed_geometry(const SparsityPattern& pattern, std::int64_t rows, std::int64_t cols);

// One packed matrix. The arrays follow docs/format.md exactly; use the accessors below rather
// than re-deriving index arithmetic.
struct PackedMatrix {
  SparsityPattern pattern;
  DType dtype = DType::bf16;  // of the values: bf16 or fp16
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint16_t> values;      // [compressed_rows_padded, cols_padded / 2] bf16/fp16 bits
  std::vector<std::uint32_t> metadata;    // [compressed_rows_padded / 16, cols_padded / 32, 16] words
  std::vector<std::uint32_t> row_select;  // [compressed_rows_padded / 32, num_segments, select_bits]

  PackedGeometry geometry() const { return packed_geometry(pattern, rows, cols); }

  // Logical views of the physical arrays.
  // The two kept column positions (0..3, ascending) of chunk `chunk` (= column / 4) of compressed row `crow`.
  void chunk_positions(std::int64_t crow, std::int64_t chunk, int& first, int& second) const;
  // Row offset (0..M-1) inside its group of the logical row that compressed row `crow` feeds in `segment`.
  int selected_offset(std::int64_t crow, std::int64_t segment) const;
  // The logical row (may be >= rows for a padding row) that compressed row `crow` feeds for column `col`.
  std::int64_t logical_row(std::int64_t crow, std::int64_t col) const;
  float value(std::int64_t crow, std::int64_t value_col) const;  // values[crow][value_col] as float

  // Structural checks (sizes, two distinct ascending positions per chunk, N distinct ascending
  // offsets per group and segment, zero padding). Throws samoyeds::Error naming the first violation.
  void validate() const;
};

enum class PruningPolicy {
  magnitude,   // score |w|
  activation,  // Wanda-style score |w| * ||x_col||_2 over calibration activations
};
PruningPolicy parse_pruning_policy(std::string_view text);  // "magnitude" | "activation"
const char* pruning_policy_name(PruningPolicy policy);

struct PackOptions {
  PruningPolicy policy = PruningPolicy::magnitude;
  // For PruningPolicy::activation: ||x_col||_2 per input column (size cols), see column_norms().
  std::vector<float> column_norms;
};

// Prunes `dense` ([rows, cols] bf16 or fp16) to `pattern` and packs it. Deterministic: inside each
// chunk the 2 highest scores are kept (ties go to the lower column); in each (group, segment) the N
// rows with the highest summed score of their kept values are selected (ties go to the lower row).
// -0.0 is stored as +0.0. Throws on NaN/Inf weights, an fp32 input or an invalid pattern.
PackedMatrix pack(const Matrix& dense, const SparsityPattern& pattern, const PackOptions& options = {});

// The effective dense weight Ŵ [rows, cols] (same dtype as the values): the oracle for every kernel.
Matrix unpack(const PackedMatrix& packed);

// ||x_col||_2 of each column of calibration activations X [tokens, cols], for PruningPolicy::activation.
std::vector<float> column_norms(const Matrix& calibration);

}  // namespace samoyeds
