// SPDX-License-Identifier: Apache-2.0
// Without CUDA the GPU MoE layers exist as API only: constructing one says why it cannot run.
#if !SAMOYEDS_WITH_CUDA
#include "samoyeds/device.h"
#include "samoyeds/error.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::gpu {

struct MoeLayer::Impl {};
MoeLayer::MoeLayer(const ModelConfig&, const PackedMoeWeights&, SsmmPath) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU MoE layer is unavailable (", cuda_status(), ")");
}
MoeLayer MoeLayer::synthetic(const ModelConfig&, DType, const SparsityPattern&, std::uint64_t, SsmmPath) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU MoE layer is unavailable (", cuda_status(), ")");
}
MoeLayer::~MoeLayer() = default;
MoeLayer::MoeLayer(MoeLayer&&) noexcept = default;
MoeLayer& MoeLayer::operator=(MoeLayer&&) noexcept = default;

struct DenseMoeLayer::Impl {};
DenseMoeLayer::DenseMoeLayer(const ModelConfig&, const DenseMoeWeights&) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU MoE layer is unavailable (", cuda_status(), ")");
}
DenseMoeLayer::DenseMoeLayer(const MoeLayer&) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU MoE layer is unavailable (", cuda_status(), ")");
}
DenseMoeLayer::~DenseMoeLayer() = default;
DenseMoeLayer::DenseMoeLayer(DenseMoeLayer&&) noexcept = default;
DenseMoeLayer& DenseMoeLayer::operator=(DenseMoeLayer&&) noexcept = default;

}  // namespace samoyeds::gpu
#endif
