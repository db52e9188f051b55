// SPDX-License-Identifier: Apache-2.0
// Tokens: which rows of the token-major activations X [T, K] an expert product reads. A routed
// expert reads its token list (gathered while loading, never copied); a shared expert reads all rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "samoyeds/error.h"

namespace samoyeds {

class Tokens {
 public:
  static Tokens all(std::int64_t num_tokens) { return Tokens(num_tokens, {}, true); }
  // A view: the indices must outlive the Tokens (a temporary vector would dangle, hence the deleted overload).
  static Tokens list(std::span<const std::int32_t> token_idx) {
    return Tokens(static_cast<std::int64_t>(token_idx.size()), token_idx, false);
  }
  static Tokens list(std::vector<std::int32_t>&&) = delete;

  std::int64_t size() const { return size_; }  // L
  bool is_all() const { return all_; }
  std::span<const std::int32_t> indices() const { return idx_; }  // empty when is_all()
  std::int32_t operator[](std::int64_t j) const { return all_ ? static_cast<std::int32_t>(j) : idx_[static_cast<std::size_t>(j)]; }

  // Throws unless every index is in [0, num_rows) (and, for all(), size() == num_rows).
  void check_against(std::int64_t num_rows) const {
    if (all_) {
      SAMOYEDS_CHECK(size_ == num_rows, "Tokens::all(", size_, ") used with activations of ", num_rows, " rows");
      return;
    }
    for (std::size_t j = 0; j < idx_.size(); ++j) {
      SAMOYEDS_CHECK(idx_[j] >= 0 && idx_[j] < num_rows, "token index ", idx_[j], " at position ", j,
                     " is outside the activations' ", num_rows, " rows");
    }
  }

 private:
  Tokens(std::int64_t size, std::span<const std::int32_t> idx, bool all) : size_(size), idx_(idx), all_(all) {}
  std::int64_t size_;
  std::span<const std::int32_t> idx_;
  bool all_;
};

}  // namespace samoyeds
