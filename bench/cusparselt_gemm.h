// SPDX-License-Identifier: Apache-2.0
// cuSPARSELt 2:4 baseline for the kernel benchmark: Y[L, M] = X_g[L, K] · Ŵ[M, K]ᵀ with Ŵ compressed
// once by cuSPARSELt (NVIDIA's library for the hardware 2:4 pattern). Ŵ of our format is 2:4 in every
// row, so cuSPARSELt runs it as is: this is the "sparse weights, dense activations" point between
// cuBLAS dense and our dual-side kernel. cuSPARSELt is optional (found at configure time, see
// tools/CMakeLists.txt); this header does not include it, and without it every constructor throws
// samoyeds::Error("not built with cuSPARSELt ..."), so callers need no #if.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "samoyeds/dtype.h"

namespace samoyeds::bench {

// The library handle (one per process and device). Throws samoyeds::Error when the build has no
// cuSPARSELt or the library refuses the device.
class CusparseLt {
 public:
  static bool available();  // built with cuSPARSELt
  CusparseLt();
  ~CusparseLt();
  CusparseLt(const CusparseLt&) = delete;
  CusparseLt& operator=(const CusparseLt&) = delete;
  std::string version() const;  // of the loaded library, "0.10.0"

 private:
  friend class CusparseLtGemm;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One problem shape: descriptors, the compressed weight, the algorithm chosen by cuSPARSELt's own
// search and its workspace, all set up in the constructor so that run() is one cusparseLtMatmul.
// Throws samoyeds::Error with cuSPARSELt's error text when the shape is refused (16-bit types need
// dimensions that are multiples of 8 or 16, so small L can be refused) or Ŵ is not 2:4.
class CusparseLtGemm {
 public:
  // dtype bf16 or f16; w_hat: device [M, K] row-major, 2:4 along K in every row (read here only: the
  // compressed copy is kept). The algorithm search runs real products, so it takes the operands
  // x_g [L, K] and y [L, M] of later runs; y is overwritten. Synchronises `stream`.
  CusparseLtGemm(const CusparseLt& lib, DType dtype, std::int64_t M, std::int64_t K, std::int64_t L,
                 const void* w_hat, const void* x_g, void* y, cudaStream_t stream = nullptr);
  ~CusparseLtGemm();
  CusparseLtGemm(const CusparseLtGemm&) = delete;
  CusparseLtGemm& operator=(const CusparseLtGemm&) = delete;

  // x_g: device [L, K] row-major; y: device [L, M] row-major. Asynchronous on `stream`.
  void run(const void* x_g, void* y, cudaStream_t stream = nullptr) const;

  std::size_t compressed_bytes() const;  // cuSPARSELt's compressed Ŵ (values + metadata)
  std::size_t workspace_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace samoyeds::bench
