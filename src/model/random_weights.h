// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the synthetic-weight generators and the weight checks of src/model.
#pragma once

#include <cstdint>
#include <string>

#include "samoyeds/error.h"
#include "samoyeds/moe.h"

namespace samoyeds::detail {

// Normal(0, stddev) elements from a seeded generator, row-major order.
Matrix random_matrix(DType dtype, std::int64_t rows, std::int64_t cols, float stddev, std::uint64_t seed);

// A gated MLP of `width` in the model's activation (OpenMoE: with a gate_linear half); std 1/sqrt(fan_in).
DenseExpert random_mlp(const ModelConfig& config, std::int64_t width, DType dtype, std::uint64_t seed);

// Throw, naming `what`, unless the matrix is [rows, cols] of `dtype`.
void check_shape(const std::string& what, const Matrix& m, std::int64_t rows, std::int64_t cols, DType dtype);
void check_shape(const std::string& what, const PackedMatrix& m, std::int64_t rows, std::int64_t cols, DType dtype);

inline bool has_gate_linear(const DenseExpert& e) { return !e.gate_linear.empty(); }
inline bool has_gate_linear(const PackedExpert& e) { return e.gate_linear.has_value(); }
inline const Matrix& gate_linear_of(const DenseExpert& e) { return e.gate_linear; }
inline const PackedMatrix& gate_linear_of(const PackedExpert& e) { return *e.gate_linear; }

// The shapes of one MLP (routed, shared or dense) of `width`, dense or packed.
template <class Mlp>
void check_mlp_shapes(const ModelConfig& config, const std::string& name, const Mlp& mlp, std::int64_t width, DType dtype) {
  const std::int64_t H = config.hidden_size;
  const bool openmoe = config.activation == ExpertActivation::openmoe_swiglu;
  check_shape(name + " gate", mlp.gate, width, H, dtype);
  check_shape(name + " up", mlp.up, width, H, dtype);
  check_shape(name + " down", mlp.down, H, width, dtype);
  SAMOYEDS_CHECK(has_gate_linear(mlp) == openmoe, name, openmoe ? " lacks" : " has", " a gate_linear half; ",
                 "only OpenMoE's SwiGLU MLPs (gate [2I, H] split in two) have one");
  if (openmoe) check_shape(name + " gate_linear", gate_linear_of(mlp), width, H, dtype);
}

}  // namespace samoyeds::detail
