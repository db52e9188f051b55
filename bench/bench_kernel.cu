// SPDX-License-Identifier: Apache-2.0
// Kernel benchmark. Per (M, K) and tokens per expert L: X has T = 4L rows (capped at 65536) of which
// the expert's L distinct rows are routed to it (ascending, as routing lists them). Candidate: our
// SSMM on the packed weight, gathering inside the kernel. Baselines on the same tokens: cuBLAS dense
// GEMM on the dense weight with X_g = X[idx] given ("cublas"), and gather + GEMM ("cublas+gather");
// when the build found cuSPARSELt (bench/cusparselt_gemm.h), its 2:4 product on Ŵ, compressed and
// tuned once per case outside the timing ("cusparselt", "cusparselt+gather"): sparse weights with
// dense, pre-gathered activations, the point between cuBLAS and our dual-side kernel.
// Validation first: our output against cuBLAS on Ŵ over every element (2 bf16 units + 2^-10 max).
// cuSPARSELt is checked the same way before it is timed; a shape it refuses or an output that fails
// shows as n/a / INVALID in its columns only and never invalidates our kernel's case.
#include "bench/bench_kernel.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench/bench_util.h"
#include "bench/cusparselt_gemm.h"
#include "core/parallel.h"
#include "kernels/cuda_check.h"

#define SAMOYEDS_CUBLAS_CHECK(call)                                                        \
  do {                                                                                     \
    const cublasStatus_t samoyeds_status_ = (call);                                        \
    SAMOYEDS_CHECK(samoyeds_status_ == CUBLAS_STATUS_SUCCESS, #call " failed with status ", \
                   static_cast<int>(samoyeds_status_));                                    \
  } while (0)

namespace samoyeds::bench {

namespace {

// X_g[j, :] = X[idx[j], :] with 16-byte copies (K % 8 == 0).
__global__ void gather_rows(const uint4* x, const std::int32_t* idx, uint4* x_g, std::int64_t L, std::int64_t K8) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < L * K8;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t j = i / K8, c = i % K8;
    x_g[i] = x[static_cast<std::int64_t>(idx[j]) * K8 + c];
  }
}


Matrix random_weight(DType dtype, std::int64_t M, std::int64_t K, std::uint64_t seed) {
  Matrix w(dtype, M, K);
  detail::parallel_for(M, 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      std::mt19937_64 rng(seed * 1000003 + static_cast<std::uint64_t>(r));
      std::normal_distribution<float> normal(0.0f, 0.02f);
      std::uint16_t* row = w.half_data() + r * K;
      for (std::int64_t c = 0; c < K; ++c) row[c] = float_to_half(dtype, normal(rng));
    }
  });
  return w;
}

std::vector<std::int32_t> routed_tokens(std::int64_t L, std::int64_t T, std::uint64_t seed) {
  std::vector<std::int32_t> all(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) all[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t);
  std::mt19937_64 rng(seed);
  for (std::int64_t j = 0; j < L; ++j) {  // partial Fisher-Yates: L distinct rows
    std::uniform_int_distribution<std::int64_t> pick(j, T - 1);
    std::swap(all[static_cast<std::size_t>(j)], all[static_cast<std::size_t>(pick(rng))]);
  }
  all.resize(static_cast<std::size_t>(L));
  std::sort(all.begin(), all.end());
  return all;
}

void gemm(cublasHandle_t handle, DType dtype, const void* w, const void* x_g, void* y, std::int64_t M, std::int64_t K,
          std::int64_t L) {
  // Y[L, M] (row-major) = X_g[L, K] * W[M, K]^T  ==  column-major Y^T = W^T^T ... : C[M x L] = op(W)[M x K] * X_g^T[K x L]
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType type = dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  SAMOYEDS_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(M), static_cast<int>(L),
                                     static_cast<int>(K), &alpha, w, type, static_cast<int>(K), x_g, type,
                                     static_cast<int>(K), &beta, y, type, static_cast<int>(M), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

struct Validation {
  bool ok = true;
  double max_err = 0, max_ref = 0;
};

Validation validate(const Buffer& ours, const Buffer& ref, DType dtype, std::int64_t n) {
  std::vector<std::uint16_t> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(a.data(), ours.ptr, a.size() * 2, cudaMemcpyDeviceToHost));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(b.data(), ref.ptr, b.size() * 2, cudaMemcpyDeviceToHost));
  Validation v;
  for (std::size_t i = 0; i < b.size(); ++i) v.max_ref = std::max(v.max_ref, static_cast<double>(std::fabs(half_to_float(dtype, b[i]))));
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = half_to_float(dtype, a[i]), y = half_to_float(dtype, b[i]);
    const double err = std::fabs(x - y);
    v.max_err = std::isfinite(err) ? std::max(v.max_err, err) : INFINITY;
    if (!(err <= std::ldexp(std::fabs(y), -7) + std::ldexp(v.max_ref, -10))) v.ok = false;
  }
  return v;
}

// The cuSPARSELt baseline of one case: timed only when the library takes the shape and its output
// matches cuBLAS on Ŵ; otherwise `note` says why (printed in its table columns, no JSON record).
struct SparseBaseline {
  bool timed = false;
  std::string note;
  Timing t, t_gather;  // X_g given; gather + product
};

}  // namespace

int run_kernel_bench(const KernelBenchOptions& o) {
  const std::string device = device_name(), run_commit = commit(), date = today();
  std::FILE* jsonl = nullptr;
  if (!o.out_path.empty()) {
    jsonl = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(jsonl, "cannot open --out file '", o.out_path, "' for appending");
  }
  cublasHandle_t handle;
  SAMOYEDS_CUBLAS_CHECK(cublasCreate(&handle));
  Timer timer;
  const gpu::SsmmPath path = gpu::resolve_path(o.path);
  std::printf("samoyeds bench kernel: %s, %s, pattern %s, path %s%s, commit %s, %s\n", device.c_str(),
              dtype_name(o.dtype), o.pattern.to_string().c_str(), gpu::path_name(path), o.split_k ? "" : " (no split-K)",
              run_commit.c_str(), date.c_str());
  // One handle for the whole run; without it (no cuSPARSELt in this build, or the library refuses the
  // device) the baseline is off and its columns are left out.
  std::unique_ptr<CusparseLt> csl_lib;
  try {
    csl_lib = std::make_unique<CusparseLt>();
    std::printf("cuSPARSELt %s baseline: 2:4 on W-hat, compressed and algorithm-searched once per case\n",
                csl_lib->version().c_str());
  } catch (const Error& e) {
    std::printf("cuSPARSELt baseline: off (%s)\n", e.message().c_str());
  }
  std::printf("%7s %7s %6s | %10s %10s %10s | %8s %8s %8s | %6s %6s", "M", "K", "L", "ours us", "cublas us",
              "+gather us", "ours TF", "ours GB/s", "dense TF", "x cub", "x c+g");
  if (csl_lib) std::printf(" | %13s %6s %7s", "cuSPARSELt us", "x csl", "x csl+g");
  std::printf("\n");
  std::map<std::string, std::vector<double>> speedups;
  bool all_valid = true;
  for (const auto& [M, K] : o.shapes) {
    std::fprintf(stderr, "  preparing %lld x %lld: weights, pruning, packing ...\n", static_cast<long long>(M),
                 static_cast<long long>(K));
    const Matrix w = random_weight(o.dtype, M, K, o.seed + static_cast<std::uint64_t>(M * 7 + K));
    const PackedMatrix packed = pack(w, o.pattern);
    const Matrix w_hat = unpack(packed);
    const gpu::DevicePackedMatrix d_packed(packed);
    Buffer d_w(w.bytes()), d_w_hat(w_hat.bytes());
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(d_w.ptr, w.data(), w.bytes(), cudaMemcpyHostToDevice));
    SAMOYEDS_CUDA_CHECK(cudaMemcpy(d_w_hat.ptr, w_hat.data(), w_hat.bytes(), cudaMemcpyHostToDevice));
    const double packed_bytes = static_cast<double>(packed.geometry().total_bytes());

    for (std::int64_t L : o.tokens) {
      const std::int64_t T = std::max<std::int64_t>(L, std::min<std::int64_t>(4 * L, 65536));
      Buffer d_x(static_cast<std::size_t>(T * K) * 2), d_xg(static_cast<std::size_t>(L * K) * 2);
      Buffer d_y(static_cast<std::size_t>(L * M) * 2), d_ref(static_cast<std::size_t>(L * M) * 2);
      fill_normal(d_x.ptr, T * K, o.seed + static_cast<std::uint64_t>(L), 1.0f, o.dtype == DType::bf16);
      const auto idx = routed_tokens(L, T, o.seed + static_cast<std::uint64_t>(L) * 31);
      Buffer d_idx(idx.size() * 4);
      SAMOYEDS_CUDA_CHECK(cudaMemcpy(d_idx.ptr, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));

      gpu::SsmmArgs args;
      args.weight = d_packed.view();
      args.x = d_x.ptr;
      args.x_dtype = o.dtype;
      args.num_x_rows = T;
      args.token_idx = static_cast<const std::int32_t*>(d_idx.ptr);
      args.num_tokens = L;
      args.y = d_y.ptr;
      args.y_dtype = o.dtype;
      const std::size_t workspace_bytes = o.split_k ? gpu::ssmm_workspace_bytes(args, path) : 0;
      Buffer d_workspace(workspace_bytes);
      args.workspace = d_workspace.ptr;
      args.workspace_bytes = workspace_bytes;
      auto ours = [&] { gpu::ssmm(args, nullptr, path); };
      auto do_gather = [&] {
        gather_rows<<<1024, 256>>>(static_cast<const uint4*>(d_x.ptr), static_cast<const std::int32_t*>(d_idx.ptr),
                                   static_cast<uint4*>(d_xg.ptr), L, K / 8);
        SAMOYEDS_CHECK_LAUNCH("gather_rows");
      };
      auto dense = [&] { gemm(handle, o.dtype, d_w.ptr, d_xg.ptr, d_ref.ptr, M, K, L); };
      auto dense_gather = [&] { do_gather(); dense(); };

      // Validate: ours vs cuBLAS on Ŵ, every element, outputs poisoned first.
      SAMOYEDS_CUDA_CHECK(cudaMemset(d_y.ptr, 0xFF, static_cast<std::size_t>(L * M) * 2));
      do_gather();
      gemm(handle, o.dtype, d_w_hat.ptr, d_xg.ptr, d_ref.ptr, M, K, L);
      ours();
      SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
      const Validation v = validate(d_y, d_ref, o.dtype, L * M);
      if (!v.ok) {
        all_valid = false;
        std::printf("%7lld %7lld %6lld | INVALID: max |ours - cublas(W-hat)| = %.4g of max %.4g; not timed\n",
                    static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(L), v.max_err, v.max_ref);
        continue;
      }
      const Timing t_ours = timer.time(ours, o.reps);
      const Timing t_dense = timer.time(dense, o.reps);
      const Timing t_dense_gather = timer.time(dense_gather, o.reps);

      // cuSPARSELt on Ŵ, validated like ours against cuBLAS on Ŵ (the timed cuBLAS runs above wrote
      // the dense W's product into d_ref, so the reference is made again).
      SparseBaseline csl;
      if (csl_lib) {
        do_gather();
        gemm(handle, o.dtype, d_w_hat.ptr, d_xg.ptr, d_ref.ptr, M, K, L);
        try {
          Buffer d_y_csl(static_cast<std::size_t>(L * M) * 2);  // [L, M] cuSPARSELt's output
          const CusparseLtGemm sparse(*csl_lib, o.dtype, M, K, L, d_w_hat.ptr, d_xg.ptr, d_y_csl.ptr);
          SAMOYEDS_CUDA_CHECK(cudaMemset(d_y_csl.ptr, 0xFF, static_cast<std::size_t>(L * M) * 2));
          sparse.run(d_xg.ptr, d_y_csl.ptr);
          SAMOYEDS_CUDA_CHECK(cudaDeviceSynchronize());
          const Validation vc = validate(d_y_csl, d_ref, o.dtype, L * M);
          if (!vc.ok) {
            char text[160];
            std::snprintf(text, sizeof(text), "INVALID: max |cusparselt - cublas(W-hat)| = %.4g of max %.4g; not timed",
                          vc.max_err, vc.max_ref);
            csl.note = text;
          } else {
            csl.t = timer.time([&] { sparse.run(d_xg.ptr, d_y_csl.ptr); }, o.reps);
            csl.t_gather = timer.time([&] { do_gather(); sparse.run(d_xg.ptr, d_y_csl.ptr); }, o.reps);
            csl.timed = true;
          }
        } catch (const Error& e) {
          csl.note = "n/a (" + e.message() + ")";
        }
      }

      const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(K) * static_cast<double>(L);
      const double act_bytes = static_cast<double>(L) * static_cast<double>(K + M) * 2.0;
      const double ours_bytes = packed_bytes + act_bytes + static_cast<double>(L) * 4.0;  // minimum that must move
      const double dense_bytes = static_cast<double>(M) * static_cast<double>(K) * 2.0 + act_bytes;
      // 2:4 compressed Ŵ: M·K/2 values of 2 bytes, and 2 bits of position per value.
      const double sparse_bytes = static_cast<double>(M) * static_cast<double>(K) * (1.0 + 1.0 / 8.0) + act_bytes;
      const double x_cub = t_dense.median_us / t_ours.median_us, x_gather = t_dense_gather.median_us / t_ours.median_us;
      speedups["cublas"].push_back(x_cub);
      speedups["cublas+gather"].push_back(x_gather);
      std::printf("%7lld %7lld %6lld | %10.1f %10.1f %10.1f | %8.1f %8.0f %8.1f | %6.2f %6.2f", static_cast<long long>(M),
                  static_cast<long long>(K), static_cast<long long>(L), t_ours.median_us, t_dense.median_us,
                  t_dense_gather.median_us, flops / t_ours.median_us * 1e-6, ours_bytes / t_ours.median_us * 1e-3,
                  flops / t_dense.median_us * 1e-6, x_cub, x_gather);
      if (csl.timed) {
        const double x_csl = csl.t.median_us / t_ours.median_us, x_csl_gather = csl.t_gather.median_us / t_ours.median_us;
        speedups["cusparselt"].push_back(x_csl);
        speedups["cusparselt+gather"].push_back(x_csl_gather);
        std::printf(" | %13.1f %6.2f %7.2f", csl.t.median_us, x_csl, x_csl_gather);
      } else if (csl_lib) {
        std::printf(" | %s", csl.note.c_str());
      }
      std::printf("\n");
      std::fflush(stdout);
      if (jsonl) {
        std::vector<std::tuple<const char*, Timing, double>> baselines = {{"cublas", t_dense, dense_bytes},
                                                                          {"cublas+gather", t_dense_gather, dense_bytes}};
        if (csl.timed) {
          baselines.emplace_back("cusparselt", csl.t, sparse_bytes);
          baselines.emplace_back("cusparselt+gather", csl.t_gather, sparse_bytes);
        }
        for (const auto& [name, timing, baseline_bytes] : baselines) {
          Record r = run_record("kernel", device, run_commit, date);
          r.add("dtype", dtype_name(o.dtype)).add("pattern", o.pattern.to_string()).add("epilogue", "plain")
              .add("M", M).add("K", K).add("L", L).add("T", T)
              .add("kernel", std::string("samoyeds_") + gpu::path_name(path)).add("time_us", t_ours.median_us)
              .add("p10_us", t_ours.p10_us).add("p90_us", t_ours.p90_us).add("tflops", flops / t_ours.median_us * 1e-6)
              .add("gbps", ours_bytes / t_ours.median_us * 1e-3).add("baseline", name)
              .add("baseline_time_us", timing.median_us).add("baseline_tflops", flops / timing.median_us * 1e-6)
              .add("baseline_gbps", baseline_bytes / timing.median_us * 1e-3).add("speedup", timing.median_us / t_ours.median_us)
              .add("max_abs_err", v.max_err).add("reps", static_cast<std::int64_t>(o.reps))
              .add("workspace_bytes", static_cast<std::int64_t>(workspace_bytes));
          std::fprintf(jsonl, "%s\n", r.json().c_str());
        }
      }
    }
  }
  for (const auto& [name, values] : speedups)
    std::printf("geomean speedup vs %-17s %.3fx over %zu cases\n", name.c_str(), geomean(values), values.size());
  if (jsonl) std::fclose(jsonl);
  cublasDestroy(handle);
  if (!all_valid) std::printf("some cases FAILED validation; their timings are not reported\n");
  return all_valid ? 0 : 1;
}

}  // namespace samoyeds::bench
