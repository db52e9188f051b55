// SPDX-License-Identifier: Apache-2.0
// The weights of one MoE layer, dense or packed, and how they are made: packed from dense with a
// pruning policy, unpacked to the effective dense weights Ŵ, or drawn synthetic from a seed.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "samoyeds/format.h"
#include "samoyeds/matrix.h"
#include "samoyeds/model_config.h"
#include "samoyeds/routing.h"

namespace samoyeds {

// One expert MLP: A = SiLU(W_gate x) ⊙ (W_up x) [⊙ (W_gate_linear x)], y = W_down A.
// OpenMoE's gate W_g [2I, H] is stored split: gate_linear = rows [0, I) (multiplies), gate = rows
// [I, 2I) (goes through SiLU), so every family runs the same fused gate/up product.
struct DenseExpert {
  Matrix gate;         // [I, H]
  Matrix up;           // [I, H]
  Matrix down;         // [H, I]
  Matrix gate_linear;  // [I, H] for OpenMoE, empty otherwise
};

struct PackedExpert {
  PackedMatrix gate;                        // [I, H]
  PackedMatrix up;                          // [I, H]
  PackedMatrix down;                        // [H, I]
  std::optional<PackedMatrix> gate_linear;  // [I, H] for OpenMoE
};

struct DenseMoeWeights {
  Matrix router;                      // [E, H]
  std::vector<DenseExpert> experts;   // E routed experts
  std::optional<DenseExpert> shared;  // the fused shared experts (DeepSeek-MoE, Qwen2-MoE), width I_shared
  Matrix shared_gate;                 // [1, H] Qwen2-MoE's sigmoid gate, empty otherwise
};

struct PackedMoeWeights {
  Matrix router;                       // [E, H], dense
  std::vector<PackedExpert> experts;   // E routed experts
  std::optional<PackedExpert> shared;  // packed too: the shared experts run the same kernels
  Matrix shared_gate;                  // [1, H] or empty
};

// The router settings of a model family.
RouterConfig router_config(const ModelConfig& config);

// `config` with hidden and expert widths replaced (shared and dense widths scaled alike), for tests
// and demos that need every family's structure at a size a CPU computes quickly.
ModelConfig scaled_config(const ModelConfig& config, std::int64_t hidden_size, std::int64_t intermediate_size);

// Seeded random weights of one MoE layer of `config` (normal, std 1/sqrt(fan_in); router std 1).
DenseMoeWeights synthetic_moe_weights(const ModelConfig& config, DType dtype, std::uint64_t seed);

// Throws unless the weights match `config` (counts, shapes, dtypes, OpenMoE split, shared gate).
void check_moe_weights(const ModelConfig& config, const DenseMoeWeights& weights);
void check_moe_weights(const ModelConfig& config, const PackedMoeWeights& weights);

// Magnitude pruning of every matrix (activation pruning needs per-projection calibration: pack()).
PackedMoeWeights pack_moe_weights(const ModelConfig& config, const DenseMoeWeights& weights,
                                  const SparsityPattern& pattern);
DenseMoeWeights unpack_moe_weights(const PackedMoeWeights& weights);  // effective weights Ŵ

}  // namespace samoyeds
