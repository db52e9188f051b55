// SPDX-License-Identifier: Apache-2.0
// Device-side work on packed matrices that the host path would do too slowly at real model sizes:
// filling a stack with seeded random packed weights (random 2:4 positions, random row selections,
// normal values) and unpacking a stack to its effective dense weights Ŵ (for the dense baseline built
// from the same weights). Both follow docs/format.md exactly; the GPU tests check them against the
// host format code (validate() and unpack()).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "samoyeds/ssmm.h"

namespace samoyeds::kernels {

// Fills every matrix of the stack `view` points at (values, metadata and row_select, padding
// included) from `seed`: values normal(0, stddev) on kept positions of real rows and columns, +0.0 on
// padding. The same (shape, pattern, seed) gives the same bits.
void fill_random_packed(const gpu::PackedMatrixView& view, float stddev, std::uint64_t seed, cudaStream_t stream);

// dense [rows, cols] (dtype of the view) = Ŵ of matrix `index` of the stack.
void unpack_packed(const gpu::PackedMatrixView& view, int index, void* dense, cudaStream_t stream);

// count values of normal(mean, stddev) (bf16/fp16 bits) from `seed`: the dense synthetic weights.
void fill_random_normal(void* out, std::int64_t count, float mean, float stddev, DType dtype, std::uint64_t seed,
                        cudaStream_t stream);

}  // namespace samoyeds::kernels
