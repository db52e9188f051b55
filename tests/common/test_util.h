// SPDX-License-Identifier: Apache-2.0
// Shared test helpers: seeded random matrices for the exact tier (small non-zero integers, exact in
// bf16/fp16 and in fp32 sums) and the realistic tier (normal data).
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "samoyeds/matrix.h"

namespace samoyeds::testing {

// Integers in [-range, range] without 0, so 2:4 choices never depend on zero ties.
inline Matrix random_int_matrix(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed, int range = 4) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(1, range);
  std::bernoulli_distribution sign(0.5);
  Matrix out(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out.set(r, c, static_cast<float>(sign(rng) ? dist(rng) : -dist(rng)));
  return out;
}

inline Matrix random_normal_matrix(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                                   float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  Matrix out(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out.set(r, c, dist(rng));
  return out;
}

inline std::string seed_trace(std::uint64_t seed) { return "seed = " + std::to_string(seed); }

}  // namespace samoyeds::testing
