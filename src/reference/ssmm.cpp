// SPDX-License-Identifier: Apache-2.0
// CPU reference SSMM: products of packed weights with (gathered) activation rows, computed straight
// from the packed arrays (not from Ŵ), so tests that compare against a dense product on Ŵ check the
// format's meaning too. Summation order is fixed: per compressed row, per segment, ascending columns.
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "samoyeds/reference.h"

namespace samoyeds::reference {

namespace {

// A packed matrix decoded once per call: column and value of every stored element, and the
// logical row each compressed row feeds in each segment.
struct Decoded {
  PackedGeometry g;
  int n = 1;
  std::int64_t values_per_row = 0, chunks_per_segment = 0, num_segments = 1;
  std::vector<std::int32_t> column;     // [compressed_rows, cols_padded/2]
  std::vector<float> value;             // [compressed_rows, cols_padded/2]
  std::vector<std::int64_t> target_row; // [compressed_rows, num_segments], >= rows means padding
};

Decoded decode(const PackedMatrix& w) {
  w.validate();
  Decoded d;
  d.g = w.geometry();
  d.n = w.pattern.has_row_selection() ? w.pattern.n : 1;
  d.values_per_row = d.g.cols_padded / 2;
  d.num_segments = w.pattern.has_row_selection() ? d.g.num_segments : 1;
  d.chunks_per_segment = w.pattern.has_row_selection() ? w.pattern.v / 4 : d.g.cols_padded / 4;
  d.column.resize(static_cast<std::size_t>(d.g.compressed_rows * d.values_per_row));
  d.value.resize(d.column.size());
  d.target_row.resize(static_cast<std::size_t>(d.g.compressed_rows * d.num_segments));
  for (std::int64_t crow = 0; crow < d.g.compressed_rows; ++crow) {
    for (std::int64_t q = 0; q < d.g.cols_padded / 4; ++q) {
      int first = 0, second = 0;
      w.chunk_positions(crow, q, first, second);
      const std::size_t at = static_cast<std::size_t>(crow * d.values_per_row + 2 * q);
      d.column[at] = static_cast<std::int32_t>(4 * q + first);
      d.column[at + 1] = static_cast<std::int32_t>(4 * q + second);
      d.value[at] = w.value(crow, 2 * q);
      d.value[at + 1] = w.value(crow, 2 * q + 1);
    }
    for (std::int64_t s = 0; s < d.num_segments; ++s)
      d.target_row[static_cast<std::size_t>(crow * d.num_segments + s)] = w.logical_row(crow, s * d.chunks_per_segment * 4);
  }
  return d;
}

// out[rows] += Ŵ · x; x holds cols_padded floats (zero past cols).
void multiply(const Decoded& d, const float* x, float* out) {
  const std::int64_t num_chunks = d.g.cols_padded / 4;
  for (std::int64_t crow = 0; crow < d.g.compressed_rows; ++crow) {
    const std::int32_t* column = d.column.data() + crow * d.values_per_row;
    const float* value = d.value.data() + crow * d.values_per_row;
    for (std::int64_t s = 0; s < d.num_segments; ++s) {
      const std::int64_t row = d.target_row[static_cast<std::size_t>(crow * d.num_segments + s)];
      const std::int64_t q_end = std::min(num_chunks, (s + 1) * d.chunks_per_segment);
      float partial = 0.0f;
      for (std::int64_t i = 2 * s * d.chunks_per_segment; i < 2 * q_end; ++i) partial += value[i] * x[column[i]];
      if (row < d.g.rows) out[row] += partial;
    }
  }
}

// Calls body(j, products) for every token j with products[p] = Ŵ_p · X[tokens[j]] (fp32, [rows_p]).
template <class Body>
void for_each_token_product(std::span<const Decoded* const> matrices, const Matrix& x, const Tokens& tokens, Body&& body) {
  const std::int64_t cols_padded = matrices[0]->g.cols_padded;
  detail::parallel_for(tokens.size(), 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> x_row(static_cast<std::size_t>(cols_padded), 0.0f);  // zero past cols
    std::vector<std::vector<float>> products(matrices.size());
    for (std::int64_t j = begin; j < end; ++j) {
      x.row_to_float(tokens[j], x_row.data());
      for (std::size_t p = 0; p < matrices.size(); ++p) {
        products[p].assign(static_cast<std::size_t>(matrices[p]->g.rows), 0.0f);
        multiply(*matrices[p], x_row.data(), products[p].data());
      }
      body(j, products);
    }
  });
}

void check_activations(const char* what, const PackedMatrix& w, const Matrix& x, const Tokens& tokens) {
  SAMOYEDS_CHECK(is_half_precision(x.dtype()), what, ": activations must be bf16 or fp16, got ", dtype_name(x.dtype()));
  SAMOYEDS_CHECK(x.cols() == w.cols, what, ": activations have ", x.cols(), " columns but the weight [", w.rows, ", ",
                 w.cols, "] needs K = ", w.cols);
  SAMOYEDS_CHECK(x.dtype() == w.dtype, what, ": activations are ", dtype_name(x.dtype()), " but the weights are ",
                 dtype_name(w.dtype), "; use one dtype for both");
  tokens.check_against(x.rows());
}

void store_row(Matrix& out, std::int64_t j, const float* row) {
  if (out.dtype() == DType::f32) {
    std::copy(row, row + out.cols(), out.float_data() + j * out.cols());
    return;
  }
  std::uint16_t* dst = out.half_data() + j * out.cols();
  for (std::int64_t c = 0; c < out.cols(); ++c) dst[c] = float_to_half(out.dtype(), row[c]);
}

}  // namespace

float silu(float x) { return x / (1.0f + std::exp(-x)); }

Matrix ssmm(const PackedMatrix& w, const Matrix& x, const Tokens& tokens, DType out_dtype) {
  check_activations("ssmm", w, x, tokens);
  const Decoded d = decode(w);
  const Decoded* matrices[] = {&d};
  Matrix y(out_dtype, tokens.size(), w.rows);
  for_each_token_product(matrices, x, tokens, [&](std::int64_t j, const std::vector<std::vector<float>>& p) {
    store_row(y, j, p[0].data());
  });
  return y;
}

Matrix ssmm_gate_up(const PackedMatrix& gate, const PackedMatrix& up, const Matrix& x, const Tokens& tokens,
                    DType out_dtype, const PackedMatrix* gate_linear) {
  check_activations("ssmm_gate_up (gate)", gate, x, tokens);
  check_activations("ssmm_gate_up (up)", up, x, tokens);
  SAMOYEDS_CHECK(gate.rows == up.rows, "ssmm_gate_up: gate has ", gate.rows, " rows but up has ", up.rows,
                 "; both must be [I, H]");
  if (gate_linear) {
    check_activations("ssmm_gate_up (gate_linear)", *gate_linear, x, tokens);
    SAMOYEDS_CHECK(gate_linear->rows == gate.rows, "ssmm_gate_up: gate_linear has ", gate_linear->rows,
                   " rows but gate has ", gate.rows);
  }
  const Decoded dg = decode(gate), du = decode(up);
  const Decoded dl = gate_linear ? decode(*gate_linear) : Decoded{};
  std::vector<const Decoded*> matrices = {&dg, &du};
  if (gate_linear) matrices.push_back(&dl);
  Matrix a(out_dtype, tokens.size(), gate.rows);
  for_each_token_product(matrices, x, tokens, [&](std::int64_t j, const std::vector<std::vector<float>>& p) {
    std::vector<float> row(static_cast<std::size_t>(gate.rows));
    for (std::size_t i = 0; i < row.size(); ++i) {
      row[i] = silu(p[0][i]) * p[1][i];
      if (gate_linear) row[i] *= p[2][i];
    }
    store_row(a, j, row.data());
  });
  return a;
}

Matrix ssmm_down_weighted(const PackedMatrix& down, const Matrix& a, std::span<const float> slot_weight, DType out_dtype) {
  const Tokens tokens = Tokens::all(a.rows());
  check_activations("ssmm_down_weighted", down, a, tokens);
  SAMOYEDS_CHECK(static_cast<std::int64_t>(slot_weight.size()) == a.rows(), "ssmm_down_weighted: ", slot_weight.size(),
                 " slot weights for ", a.rows(), " rows of A; give one weight per row");
  const Decoded d = decode(down);
  const Decoded* matrices[] = {&d};
  Matrix y(out_dtype, a.rows(), down.rows);
  for_each_token_product(matrices, a, tokens, [&](std::int64_t j, const std::vector<std::vector<float>>& p) {
    std::vector<float> row(p[0]);
    for (float& value : row) value *= slot_weight[static_cast<std::size_t>(j)];
    store_row(y, j, row.data());
  });
  return y;
}

}  // namespace samoyeds::reference
