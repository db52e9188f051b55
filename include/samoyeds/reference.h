// SPDX-License-Identifier: Apache-2.0
// CPU reference implementations: the oracle for every GPU kernel and the fallback without a GPU.
// Each function is the twin of one kernel and has its meaning exactly: fp32 arithmetic over bf16/fp16
// storage, results rounded once to the output dtype at the point where the kernel writes them.
#pragma once

#include <cstdint>
#include <span>

#include "samoyeds/format.h"
#include "samoyeds/matrix.h"
#include "samoyeds/tokens.h"

namespace samoyeds::reference {

// Plain product: Y[j, :] = Ŵ · X[tokens[j], :].  W [M, K] packed, X [T, K] -> Y [L, M] in out_dtype
// (fp32 for the exact tier).
Matrix ssmm(const PackedMatrix& w, const Matrix& x, const Tokens& tokens, DType out_dtype);

// Gate/up fused: A[j, :] = SiLU(Ŵ_gate · x_j) ⊙ (Ŵ_up · x_j), x_j = X[tokens[j], :]  -> A [L, I].
// With gate_linear (OpenMoE's gated SwiGLU): A[j, :] = (Ŵ_gate_linear · x_j) ⊙ SiLU(Ŵ_gate · x_j) ⊙ (Ŵ_up · x_j).
// SiLU and the products in fp32; A rounded once to out_dtype.
Matrix ssmm_gate_up(const PackedMatrix& gate, const PackedMatrix& up, const Matrix& x, const Tokens& tokens,
                    DType out_dtype, const PackedMatrix* gate_linear = nullptr);

// Down, weighted: Y[j, :] = slot_weight[j] · (Ŵ_down · A[j, :]).  A [L, I] -> Y [L, H], rounded once.
// The weight multiplies the fp32 product before rounding (the kernel's epilogue).
Matrix ssmm_down_weighted(const PackedMatrix& down, const Matrix& a, std::span<const float> slot_weight, DType out_dtype);

// SiLU(x) = x / (1 + e^-x) in fp32, as every kernel computes it.
float silu(float x);

}  // namespace samoyeds::reference
