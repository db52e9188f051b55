// SPDX-License-Identifier: Apache-2.0
// CPU reference implementations: the oracle for every GPU kernel and the fallback without a GPU.
// Each function is the twin of one kernel and has its meaning exactly: fp32 arithmetic over bf16/fp16
// storage, results rounded once to the output dtype at the point where the kernel writes them.
#pragma once

#include <cstdint>
#include <span>

#include "samoyeds/format.h"
#include "samoyeds/matrix.h"
#include "samoyeds/moe.h"
#include "samoyeds/routing.h"
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

// --- whole MoE layer ---------------------------------------------------------------------------------

// One MoE layer on packed weights, the twin of the GPU layer: fp32 router logits and routing, per
// expert the gate/up product on its gathered tokens (A rounded to the dtype), the weighted down
// product per slot (rounded), shared experts on all tokens (Qwen2-MoE: weighted by the sigmoid
// gate), and the deterministic combine. x [T, H] -> Y [T, H] in x's dtype. `routing_out` receives the routing.
Matrix moe_layer(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x,
                 Routing* routing_out = nullptr);

// The same layer on a given routing (e.g. the GPU's own, so that a near-tie that the two routers
// break differently does not fail a comparison of the expert path). `routing` must be valid for x.
Matrix moe_layer_routed(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x,
                        const Routing& routing);

// The same layer as a straightforward per-token loop on dense weights (pass unpack_moe_weights(...)
// to get the packed layer's meaning): identical routing and rounding points, plain dot products.
Matrix moe_layer_dense(const ModelConfig& config, const DenseMoeWeights& weights, const Matrix& x,
                       Routing* routing_out = nullptr);

}  // namespace samoyeds::reference
