// SPDX-License-Identifier: Apache-2.0
// MoE layer benchmark. Per model (real sizes, synthetic seeded weights packed with magnitude pruning)
// and T: X [T, H] random normal; candidate = gpu::MoeLayer (replayed from a CUDA graph by default:
// decode sizes are launch-bound and the layer needs no host sync, so this is how it is meant to run);
// baseline = gpu::DenseMoeLayer on Ŵ (same router, lists and combine; one cuBLAS GEMM per expert and
// projection; one host sync per forward for the expert sizes, which its timing includes).
// Validation first: sparse Y against dense Y over every element (2^-7 |ref| + 2^-7 max|ref|: the two
// paths round A, the slot rows and Y in the dtype from different fp32 summation orders).
#include "bench/bench_moe.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bench/bench_util.h"
#include "kernels/cuda_check.h"
#include "samoyeds/model_config.h"
#include "samoyeds/moe.h"
#include "samoyeds/moe_layer.h"

namespace samoyeds::bench {

namespace {

struct Agreement {
  bool ok = true;
  double max_err = 0, max_ref = 0;
};

Agreement agree(const Buffer& ours, const Buffer& ref, DType dtype, std::int64_t n) {
  std::vector<std::uint16_t> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(a.data(), ours.ptr, a.size() * 2, cudaMemcpyDeviceToHost));
  SAMOYEDS_CUDA_CHECK(cudaMemcpy(b.data(), ref.ptr, b.size() * 2, cudaMemcpyDeviceToHost));
  Agreement g;
  for (auto v : b) g.max_ref = std::max(g.max_ref, static_cast<double>(std::fabs(half_to_float(dtype, v))));
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = half_to_float(dtype, a[i]), y = half_to_float(dtype, b[i]);
    const double err = std::fabs(x - y);
    g.max_err = std::isfinite(err) ? std::max(g.max_err, err) : INFINITY;
    if (!(err <= std::ldexp(std::fabs(y), -7) + std::ldexp(g.max_ref, -7))) g.ok = false;
  }
  return g;
}

// Useful multiply-adds x 2 of one forward: router, routed experts on their slots, shared experts.
double layer_flops(const ModelConfig& c, std::int64_t T) {
  const double mats = c.activation == ExpertActivation::openmoe_swiglu ? 4.0 : 3.0;
  const double H = static_cast<double>(c.hidden_size);
  double flops = 2.0 * T * c.num_experts * H;
  flops += 2.0 * T * c.top_k * mats * H * static_cast<double>(c.intermediate_size);
  flops += 2.0 * T * mats * H * static_cast<double>(c.shared_intermediate_size);
  return flops;
}

}  // namespace

int run_moe_bench(const MoeBenchOptions& o) {
  const std::string device = device_name(), run_commit = commit(), date = today();
  std::FILE* jsonl = nullptr;
  if (!o.out_path.empty()) {
    jsonl = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(jsonl, "cannot open --out file '", o.out_path, "' for appending");
  }
  Timer timer;
  const gpu::SsmmPath path = gpu::resolve_path(o.path);
  std::printf("samoyeds bench moe: %s, %s, pattern %s, path %s, sparse layer %s, commit %s, %s\n", device.c_str(),
              dtype_name(o.dtype), o.pattern.to_string().c_str(), gpu::path_name(path),
              o.graph ? "from a CUDA graph" : "launched directly", run_commit.c_str(), date.c_str());
  std::printf("%-18s %6s | %10s %10s | %8s %8s | %7s\n", "model", "T", "sparse us", "dense us", "sp TF", "dn TF", "speedup");
  std::vector<double> speedups;
  bool all_valid = true;
  cudaStream_t stream;
  SAMOYEDS_CUDA_CHECK(cudaStreamCreate(&stream));
  for (const std::string& name : o.models) {
    const ModelConfig& config = find_model(name);
    std::fprintf(stderr, "  %s: synthetic weights, pruning and packing (%d experts of %lld x %lld) ...\n",
                 config.display_name.c_str(), config.num_experts, static_cast<long long>(config.intermediate_size),
                 static_cast<long long>(config.hidden_size));
    PackedMoeWeights packed;
    {
      const DenseMoeWeights dense = synthetic_moe_weights(config, o.dtype, o.seed);
      packed = pack_moe_weights(config, dense, o.pattern);
    }
    std::fprintf(stderr, "  %s: uploading the sparse and the dense (effective weights) layers ...\n", config.display_name.c_str());
    gpu::MoeLayer sparse(config, packed, o.path);
    gpu::DenseMoeLayer dense(config, unpack_moe_weights(packed));
    const std::size_t sparse_bytes = sparse.weight_bytes(), dense_bytes = dense.weight_bytes();
    packed = PackedMoeWeights{};  // host memory back before the big T cases

    for (std::int64_t T : o.tokens) {
      const std::int64_t H = config.hidden_size;
      Buffer d_x(static_cast<std::size_t>(T * H) * 2), d_y(static_cast<std::size_t>(T * H) * 2),
          d_ref(static_cast<std::size_t>(T * H) * 2);
      fill_normal(d_x.ptr, T * H, o.seed + static_cast<std::uint64_t>(T), 1.0f, o.dtype == DType::bf16, stream);
      sparse.reserve(T);
      dense.reserve(T);

      // Validate: both layers from poisoned outputs, every element compared.
      SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(d_y.ptr, 0xFF, static_cast<std::size_t>(T * H) * 2, stream));
      SAMOYEDS_CUDA_CHECK(cudaMemsetAsync(d_ref.ptr, 0xFF, static_cast<std::size_t>(T * H) * 2, stream));
      sparse.forward(d_x.ptr, d_y.ptr, T, stream);
      dense.forward(d_x.ptr, d_ref.ptr, T, stream);
      SAMOYEDS_CUDA_CHECK(cudaStreamSynchronize(stream));
      const Agreement a = agree(d_y, d_ref, o.dtype, T * H);
      if (!a.ok) {
        all_valid = false;
        std::printf("%-18s %6lld | INVALID: max |sparse - dense(W-hat)| = %.4g of max %.4g; not timed\n",
                    config.name.c_str(), static_cast<long long>(T), a.max_err, a.max_ref);
        continue;
      }

      cudaGraphExec_t exec = nullptr;
      if (o.graph) {
        cudaGraph_t graph;
        SAMOYEDS_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        sparse.forward(d_x.ptr, d_y.ptr, T, stream);
        SAMOYEDS_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
        SAMOYEDS_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        SAMOYEDS_CUDA_CHECK(cudaGraphDestroy(graph));
      }
      auto run_sparse = [&] {
        if (exec) SAMOYEDS_CUDA_CHECK(cudaGraphLaunch(exec, stream));
        else sparse.forward(d_x.ptr, d_y.ptr, T, stream);
      };
      auto run_dense = [&] { dense.forward(d_x.ptr, d_ref.ptr, T, stream); };
      const Timing t_sparse = timer.time(run_sparse, o.reps, 3, stream);
      const Timing t_dense = timer.time(run_dense, o.reps, 3, stream);
      if (exec) SAMOYEDS_CUDA_CHECK(cudaGraphExecDestroy(exec));

      const double flops = layer_flops(config, T);
      const double speedup = t_dense.median_us / t_sparse.median_us;
      speedups.push_back(speedup);
      std::printf("%-18s %6lld | %10.1f %10.1f | %8.1f %8.1f | %7.2f\n", config.name.c_str(), static_cast<long long>(T),
                  t_sparse.median_us, t_dense.median_us, flops / t_sparse.median_us * 1e-6, flops / t_dense.median_us * 1e-6,
                  speedup);
      std::fflush(stdout);
      if (jsonl) {
        Record r = run_record("moe", device, run_commit, date);
        r.add("dtype", dtype_name(o.dtype)).add("pattern", o.pattern.to_string()).add("model", config.name)
            .add("T", T).add("M", config.intermediate_size).add("K", config.hidden_size)
            .add("L", T * config.top_k)  // routed slots of the layer
            .add("kernel", std::string("samoyeds_moe_") + gpu::path_name(path) + (o.graph ? "_graph" : ""))
            .add("time_us", t_sparse.median_us).add("p10_us", t_sparse.p10_us).add("p90_us", t_sparse.p90_us)
            .add("tflops", flops / t_sparse.median_us * 1e-6).add("baseline", "dense_cublas")
            .add("baseline_time_us", t_dense.median_us).add("baseline_tflops", flops / t_dense.median_us * 1e-6)
            .add("speedup", speedup).add("max_abs_err", a.max_err).add("reps", static_cast<std::int64_t>(o.reps))
            .add("weight_bytes", static_cast<std::int64_t>(sparse_bytes))
            .add("baseline_weight_bytes", static_cast<std::int64_t>(dense_bytes));
        std::fprintf(jsonl, "%s\n", r.json().c_str());
      }
    }
  }
  if (!speedups.empty())
    std::printf("geomean speedup vs dense_cublas %.3fx over %zu cases\n", geomean(speedups), speedups.size());
  cudaStreamDestroy(stream);
  if (jsonl) std::fclose(jsonl);
  if (!all_valid) std::printf("some cases FAILED validation; their timings are not reported\n");
  return all_valid ? 0 : 1;
}

}  // namespace samoyeds::bench
