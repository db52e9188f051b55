// SPDX-License-Identifier: Apache-2.0
// Without CUDA the GPU model exists as API only: constructing one says why it cannot run.
#if !SAMOYEDS_WITH_CUDA
#include "samoyeds/device.h"
#include "samoyeds/error.h"
#include "samoyeds/gpu_model.h"

namespace samoyeds::gpu {

struct Model::Impl {};
Model::Model(const ModelConfig&, const ModelWeights&, const ModelOptions&) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU model is unavailable (", cuda_status(), ")");
}
Model Model::synthetic(const ModelConfig&, int, DType, const SparsityPattern&, std::uint64_t, const ModelOptions&,
                       const std::function<void(int, int)>&) {
  SAMOYEDS_FAIL("samoyeds was built without CUDA: the GPU model is unavailable (", cuda_status(), ")");
}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

void device_memory(std::size_t& free_bytes, std::size_t& total_bytes) {
  free_bytes = total_bytes = 0;
}

}  // namespace samoyeds::gpu
#endif
