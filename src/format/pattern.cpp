// SPDX-License-Identifier: Apache-2.0
// SparsityPattern parsing/validation and the packed geometry (sizes and padding of the arrays).
#include <charconv>
#include <string>

#include "samoyeds/format.h"

namespace samoyeds {

namespace {
std::int64_t round_up(std::int64_t value, std::int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

int parse_int(std::string_view text, std::string_view whole) {
  int value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  SAMOYEDS_CHECK(error == std::errc() && end == text.data() + text.size() && !text.empty(),
                 "bad sparsity pattern '", whole, "': '", text, "' is not a whole number; use N:M:V such as 1:2:128, or 2:4");
  return value;
}
}  // namespace

SparsityPattern SparsityPattern::vector_nm(int n, int m, int v) {
  SparsityPattern pattern{n, m, v};
  SAMOYEDS_CHECK(m > 1, "row selection ", n, ":", m, " keeps every row; use plain 2:4 (written \"2:4\") for that");
  pattern.validate();
  return pattern;
}

SparsityPattern SparsityPattern::plain_2_4() { return SparsityPattern{1, 1, 0}; }

SparsityPattern SparsityPattern::parse(std::string_view text) {
  if (text == "2:4") return plain_2_4();
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  SAMOYEDS_CHECK(parts.size() == 2 || parts.size() == 3, "bad sparsity pattern '", text,
                 "': use N:M:V (e.g. 1:2:128), N:M (V = 128) or 2:4 for plain 2:4 without row selection");
  const int n = parse_int(parts[0], text);
  const int m = parse_int(parts[1], text);
  const int v = parts.size() == 3 ? parse_int(parts[2], text) : 128;
  return vector_nm(n, m, v);
}

void SparsityPattern::validate() const {
  if (n == 1 && m == 1 && v == 0) return;  // plain 2:4
  SAMOYEDS_CHECK(n >= 1 && n < m && m <= 8, "unsupported row selection ", n, ":", m,
                 ": N:M needs 1 <= N < M <= 8 (or use plain 2:4)");
  SAMOYEDS_CHECK(v >= 32 && v % 32 == 0, "unsupported vector length V = ", v,
                 ": V must be a positive multiple of 32 (128 is the default)");
}

std::string SparsityPattern::to_string() const {
  if (!has_row_selection()) return "2:4";
  return std::to_string(n) + ":" + std::to_string(m) + ":" + std::to_string(v);
}

PackedGeometry packed_geometry(const SparsityPattern& pattern, std::int64_t rows, std::int64_t cols) {
  pattern.validate();
  SAMOYEDS_CHECK(rows >= 1 && cols >= 1, "a packed matrix needs at least one row and one column, got [", rows,
                 ", ", cols, "]");
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.num_groups = (rows + pattern.m - 1) / pattern.m;
  g.compressed_rows = g.num_groups * pattern.n;
  g.compressed_rows_padded = round_up(g.compressed_rows, PackedGeometry::kRowTile);
  g.cols_padded = round_up(cols, PackedGeometry::kColTile);
  if (pattern.has_row_selection()) {
    g.num_segments = (g.cols_padded + pattern.v - 1) / pattern.v;
    while ((1 << g.select_bits) < pattern.m) ++g.select_bits;
  }
  return g;
}

PruningPolicy parse_pruning_policy(std::string_view text) {
  if (text == "magnitude") return PruningPolicy::magnitude;
  if (text == "activation") return PruningPolicy::activation;
  SAMOYEDS_FAIL("unknown pruning policy '", text, "': use magnitude or activation");
}

const char* pruning_policy_name(PruningPolicy policy) {
  return policy == PruningPolicy::magnitude ? "magnitude" : "activation";
}

}  // namespace samoyeds
