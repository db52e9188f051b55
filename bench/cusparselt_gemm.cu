// SPDX-License-Identifier: Apache-2.0
// cuSPARSELt 2:4 baseline (see cusparselt_gemm.h). Compiled in every CUDA build: without
// SAMOYEDS_WITH_CUSPARSELT (set by tools/CMakeLists.txt when the library is found) it is a stub whose
// constructors say the build has no cuSPARSELt.
//
// Layout. cuSPARSELt, like cuBLAS, is column-major here, so the row-major product
// Y[L, M] = X_g[L, K] · Ŵ[M, K]ᵀ is the column-major D[M x L] = op(A)[M x K] · B[K x L] with
//   A = Ŵ seen column-major as K x M (ld = K): Ŵ[m, k] is at m·K + k = A(k, m); op(A) = Aᵀ. The 2:4
//       groups of Ŵ run along k, the reduction dimension of op(A), which is what the sparse tensor
//       cores need, so cuSPARSELt's own check accepts Ŵ unchanged;
//   B = X_g seen column-major as K x L (ld = K): X_g[j, k] is at j·K + k = B(k, j);
//   D = Y seen column-major as M x L (ld = M): Y[j, m] is at j·M + m = D(m, j).
// All one-off work (pruning check, compression, algorithm search, workspace) is in the constructor,
// so that timing run() measures the library's product alone, as the cuBLAS baseline does.
#include "bench/cusparselt_gemm.h"

#include "kernels/cuda_check.h"
#include "samoyeds/error.h"

#if SAMOYEDS_WITH_CUSPARSELT
#include <cusparseLt.h>
#endif

namespace samoyeds::bench {

#if SAMOYEDS_WITH_CUSPARSELT

namespace {

// cusparseLtGetErrorName/String exist from 0.8.0 on; older releases borrowed cuSPARSE's, which would
// mean linking libcusparse for two strings, so the names are spelled out here.
std::string status_text(cusparseStatus_t status) {
#if CUSPARSELT_VERSION >= 800
  return detail::concat(cusparseLtGetErrorName(status), " (", cusparseLtGetErrorString(status), ")");
#else
  switch (status) {
    case CUSPARSE_STATUS_NOT_INITIALIZED: return "CUSPARSE_STATUS_NOT_INITIALIZED";
    case CUSPARSE_STATUS_ALLOC_FAILED: return "CUSPARSE_STATUS_ALLOC_FAILED";
    case CUSPARSE_STATUS_INVALID_VALUE: return "CUSPARSE_STATUS_INVALID_VALUE";
    case CUSPARSE_STATUS_ARCH_MISMATCH: return "CUSPARSE_STATUS_ARCH_MISMATCH";
    case CUSPARSE_STATUS_EXECUTION_FAILED: return "CUSPARSE_STATUS_EXECUTION_FAILED";
    case CUSPARSE_STATUS_INTERNAL_ERROR: return "CUSPARSE_STATUS_INTERNAL_ERROR";
    case CUSPARSE_STATUS_NOT_SUPPORTED: return "CUSPARSE_STATUS_NOT_SUPPORTED";
    case CUSPARSE_STATUS_INSUFFICIENT_RESOURCES: return "CUSPARSE_STATUS_INSUFFICIENT_RESOURCES";
    default: return detail::concat("cusparseStatus_t ", static_cast<int>(status));
  }
#endif
}

// "cusparseLtMatmul(&s.handle, ...)" -> "cusparseLtMatmul": the message ends up in a table cell.
std::string call_name(const char* call_text) {
  const std::string text(call_text);
  return text.substr(0, text.find('('));
}

}  // namespace

#define SAMOYEDS_CUSPARSELT_CHECK(call)                                                              \
  do {                                                                                               \
    const cusparseStatus_t samoyeds_status_ = (call);                                                \
    if (samoyeds_status_ != CUSPARSE_STATUS_SUCCESS)                                                 \
      ::samoyeds::detail::throw_error(__FILE__, __LINE__,                                            \
                                      call_name(#call) + " failed: " + status_text(samoyeds_status_)); \
  } while (0)

struct CusparseLt::Impl {
  cusparseLtHandle_t handle{};
  bool initialised = false;
  ~Impl() {
    if (initialised) cusparseLtDestroy(&handle);
  }
};

bool CusparseLt::available() { return true; }

CusparseLt::CusparseLt() : impl_(std::make_unique<Impl>()) {
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtInit(&impl_->handle));
  impl_->initialised = true;
}

CusparseLt::~CusparseLt() = default;

std::string CusparseLt::version() const {
  // Properties rather than cusparseLtGetVersion: its integer encoding changed in 0.10.
  int major = 0, minor = 0, patch = 0;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtGetProperty(MAJOR_VERSION, &major));
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtGetProperty(MINOR_VERSION, &minor));
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtGetProperty(PATCH_LEVEL, &patch));
  return detail::concat(major, ".", minor, ".", patch);
}

// Everything a plan needs, released in reverse order of creation; the flags say what exists, so a
// constructor that throws half-way releases exactly what it made.
struct CusparseLtGemm::Impl {
  const cusparseLtHandle_t* handle = nullptr;
  cusparseLtMatDescriptor_t a{}, b{}, c{};  // Ŵ (structured), X_g, Y (C and D share it)
  cusparseLtMatmulDescriptor_t matmul{};    // has no destroy function
  cusparseLtMatmulAlgSelection_t alg{};
  cusparseLtMatmulPlan_t plan{};
  bool have_a = false, have_b = false, have_c = false, have_alg = false, have_plan = false;
  void* compressed = nullptr;  // Ŵ in cuSPARSELt's compressed layout: M·K/2 values + metadata
  void* workspace = nullptr;   // workspace_bytes, for the chosen algorithm
  std::size_t compressed_bytes = 0, workspace_bytes = 0;

  ~Impl() {
    cudaFree(workspace);
    cudaFree(compressed);
    if (have_plan) cusparseLtMatmulPlanDestroy(&plan);
#if CUSPARSELT_VERSION >= 800  // before 0.8 an algorithm selection owned nothing
    if (have_alg) cusparseLtMatmulAlgSelectionDestroy(&alg);
#endif
    if (have_c) cusparseLtMatDescriptorDestroy(&c);
    if (have_b) cusparseLtMatDescriptorDestroy(&b);
    if (have_a) cusparseLtMatDescriptorDestroy(&a);
  }
};

CusparseLtGemm::CusparseLtGemm(const CusparseLt& lib, DType dtype, std::int64_t M, std::int64_t K, std::int64_t L,
                               const void* w_hat, const void* x_g, void* y, cudaStream_t stream)
    : impl_(std::make_unique<Impl>()) {
  SAMOYEDS_CHECK(dtype == DType::bf16 || dtype == DType::f16, "the cuSPARSELt baseline takes bf16 or fp16, not ",
                 dtype_name(dtype));
  SAMOYEDS_CHECK(M > 0 && K > 0 && L > 0, "the cuSPARSELt baseline needs positive M, K, L, got ", M, ", ", K, ", ", L);
  Impl& s = *impl_;
  s.handle = &lib.impl_->handle;
  const cudaDataType type = dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  constexpr std::uint32_t alignment = 16;  // bytes; every pointer passed here comes from cudaMalloc

  // Shapes and leading dimensions as in the layout note at the top of this file.
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtStructuredDescriptorInit(s.handle, &s.a, K, M, K, alignment, type,
                                                               CUSPARSE_ORDER_COL, CUSPARSELT_SPARSITY_50_PERCENT));
  s.have_a = true;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(s.handle, &s.b, K, L, K, alignment, type, CUSPARSE_ORDER_COL));
  s.have_b = true;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtDenseDescriptorInit(s.handle, &s.c, M, L, M, alignment, type, CUSPARSE_ORDER_COL));
  s.have_c = true;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulDescriptorInit(s.handle, &s.matmul, CUSPARSE_OPERATION_TRANSPOSE,
                                                           CUSPARSE_OPERATION_NON_TRANSPOSE, &s.a, &s.b, &s.c, &s.c,
                                                           CUSPARSE_COMPUTE_32F));
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulAlgSelectionInit(s.handle, &s.alg, &s.matmul, CUSPARSELT_MATMUL_ALG_DEFAULT));
  s.have_alg = true;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulPlanInit(s.handle, &s.plan, &s.matmul, &s.alg));
  s.have_plan = true;

  // Our pruning must already be what the hardware runs: a nonzero flag means some group of 4 along K
  // has more than 2 nonzeros, i.e. Ŵ is not the weight our kernel multiplies.
  {
    int* d_invalid = nullptr;  // [1] int, written by the check
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&d_invalid, sizeof(int)));
    // Measured (cuSPARSELt 0.8, H100): the check may leave the flag untouched for a valid matrix, so
    // it starts at 0 ("valid") and an invalid matrix sets it.
    SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(d_invalid, 0, sizeof(int), stream));
    int invalid = 1;
    const cusparseStatus_t status = cusparseLtSpMMAPruneCheck(s.handle, &s.matmul, w_hat, d_invalid, stream);
    const cudaError_t copied = status == CUSPARSE_STATUS_SUCCESS
                                   ? cudaMemcpyAsync(&invalid, d_invalid, sizeof(int), cudaMemcpyDeviceToHost, stream)
                                   : cudaSuccess;
    const cudaError_t synced = cudaStreamSynchronize(stream);
    cudaFree(d_invalid);
    SAMOYEDS_CUSPARSELT_CHECK(status);
    SAMOYEDS_CUDA_CHECK(copied);
    SAMOYEDS_CUDA_CHECK(synced);
    SAMOYEDS_CHECK(invalid == 0, "cusparseLtSpMMAPruneCheck: W-hat [", M, ", ", K,
                   "] is not 2:4 along K (cuSPARSELt reports ", invalid, ")");
  }

  std::size_t compress_scratch_bytes = 0;
  SAMOYEDS_CUSPARSELT_CHECK(
      cusparseLtSpMMACompressedSize(s.handle, &s.plan, &s.compressed_bytes, &compress_scratch_bytes));
  SAMOYEDS_CUDA_CHECK(cudaMalloc(&s.compressed, s.compressed_bytes));
  {
    void* scratch = nullptr;  // compress_scratch_bytes, only while compressing
    if (compress_scratch_bytes > 0) SAMOYEDS_CUDA_CHECK(cudaMalloc(&scratch, compress_scratch_bytes));
    const cusparseStatus_t status = cusparseLtSpMMACompress(s.handle, &s.plan, w_hat, s.compressed, scratch, stream);
    const cudaError_t synced = cudaStreamSynchronize(stream);
    cudaFree(scratch);
    SAMOYEDS_CUSPARSELT_CHECK(status);
    SAMOYEDS_CUDA_CHECK(synced);
  }

  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(s.handle, &s.plan, &s.workspace_bytes));
  if (s.workspace_bytes > 0) SAMOYEDS_CUDA_CHECK(cudaMalloc(&s.workspace, s.workspace_bytes));

  // The search times cuSPARSELt's candidate kernels (and split-K settings) on these operands and keeps
  // the fastest in the plan: the library at its best, picked once and outside our timing.
  const float alpha = 1.0f, beta = 0.0f;  // host scalars, fp32 as the compute type
  cudaStream_t streams[1] = {stream};
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulSearch(s.handle, &s.plan, &alpha, s.compressed, x_g, &beta, y, y,
                                                   s.workspace, streams, 1));
  SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
  // The chosen configuration may want more workspace than the default one the plan started with.
  std::size_t chosen_workspace_bytes = 0;
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmulGetWorkspace(s.handle, &s.plan, &chosen_workspace_bytes));
  if (chosen_workspace_bytes > s.workspace_bytes) {
    SAMOYEDS_CUDA_CHECK(cudaFree(s.workspace));
    s.workspace = nullptr;
    s.workspace_bytes = chosen_workspace_bytes;
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&s.workspace, s.workspace_bytes));
  }
}

CusparseLtGemm::~CusparseLtGemm() = default;

void CusparseLtGemm::run(const void* x_g, void* y, cudaStream_t stream) const {
  const Impl& s = *impl_;
  const float alpha = 1.0f, beta = 0.0f;
  cudaStream_t streams[1] = {stream};
  // beta = 0: C is not read, so it can be the output itself.
  SAMOYEDS_CUSPARSELT_CHECK(cusparseLtMatmul(s.handle, &s.plan, &alpha, s.compressed, x_g, &beta, y, y, s.workspace,
                                             streams, 1));
}

std::size_t CusparseLtGemm::compressed_bytes() const { return impl_->compressed_bytes; }
std::size_t CusparseLtGemm::workspace_bytes() const { return impl_->workspace_bytes; }

#else  // !SAMOYEDS_WITH_CUSPARSELT

namespace {
constexpr const char* kNotBuilt =
    "not built with cuSPARSELt (configure with -DSAMOYEDS_CUSPARSELT_ROOT=<dir with include/cusparseLt.h and "
    "lib/libcusparseLt.so*>, or pip install nvidia-cusparselt-cu13 for the python3 that CMake finds)";
}  // namespace

struct CusparseLt::Impl {};
struct CusparseLtGemm::Impl {};

bool CusparseLt::available() { return false; }
CusparseLt::CusparseLt() { SAMOYEDS_FAIL(kNotBuilt); }
CusparseLt::~CusparseLt() = default;
std::string CusparseLt::version() const { return "none"; }

CusparseLtGemm::CusparseLtGemm(const CusparseLt&, DType, std::int64_t, std::int64_t, std::int64_t, const void*,
                               const void*, void*, cudaStream_t) {
  SAMOYEDS_FAIL(kNotBuilt);
}
CusparseLtGemm::~CusparseLtGemm() = default;
void CusparseLtGemm::run(const void*, void*, cudaStream_t) const { SAMOYEDS_FAIL(kNotBuilt); }
std::size_t CusparseLtGemm::compressed_bytes() const { return 0; }
std::size_t CusparseLtGemm::workspace_bytes() const { return 0; }

#endif  // SAMOYEDS_WITH_CUSPARSELT

}  // namespace samoyeds::bench
