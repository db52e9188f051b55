// SPDX-License-Identifier: Apache-2.0
// `samoyeds demo`: the main job. On a GPU with sparse tensor cores it compares the sparse MoE layer
// with the dense cuBLAS layer at real model sizes (bench/bench_moe.cu: validated, then timed); without
// one it runs a scaled-down layer on the CPU reference and checks it against a dense computation on Ŵ.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "cli.h"
#include "samoyeds/device.h"
#include "samoyeds/reference.h"
#if SAMOYEDS_WITH_CUDA
#include "bench/bench_moe.h"
#endif

namespace samoyeds::cli {

namespace {

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

// The first device with sparse tensor cores, or null (and a line saying why the CPU path runs).
const DeviceInfo* suitable_gpu(const std::vector<DeviceInfo>& devices) {
  for (const DeviceInfo& d : devices)
    if (d.has_sparse_tensor_cores()) return &d;
  std::printf("No suitable GPU: %s.\nThe accelerated path needs an NVIDIA GPU with sparse tensor cores (sm_80 or newer;\n"
              "H100/H200 for the fastest path). Running the CPU reference implementation instead.\n\n",
              devices.empty() ? cuda_status().c_str() : "the GPUs found are older than sm_80");
  return nullptr;
}

#if SAMOYEDS_WITH_CUDA
// The GPU main job: real-size Mixtral-8x7B and DeepSeek-MoE layers, sparse vs dense, validated first.
int run_gpu_demo(const Args& args, const DeviceInfo& gpu) {
  std::printf("GPU: %s (sm_%d%d, %d SMs). Whole MoE layers at their real sizes, routing included: the sparse\n"
              "layer (packed experts, %s) against the dense cuBLAS layer with the same routing, each output\n"
              "checked against the dense layer on the effective weights before it is timed.\n\n",
              gpu.name.c_str(), gpu.sm_major, gpu.sm_minor, gpu.num_sms, args.get("pattern").c_str());
  bench::MoeBenchOptions o;
  o.models = {"mixtral-8x7b", "deepseek-moe-16b"};
  if (args.has("model")) o.models = {find_model(args.get("model")).name};
  o.tokens = {1, 16, 128, 1024, 4096};
  if (args.has("tokens")) o.tokens = {args.get_int("tokens")};
  for (auto T : o.tokens)
    if (T < 1) throw UsageError{"--tokens must be at least 1 on the GPU"};
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.reps = 10;
  o.seed = static_cast<std::uint64_t>(args.get_int("seed"));
  const int status = bench::run_moe_bench(o);
  std::printf("\n%s. `samoyeds bench moe` runs more models and sizes; `samoyeds demo --cpu` the CPU reference.\n",
              status == 0 ? "All outputs matched the dense layer" : "Some outputs did NOT match (see above)");
  return status;
}
#endif

int run_demo(const Args& args) {
  const auto devices = cuda_devices();
  if (!args.flag("cpu")) {
    if (const DeviceInfo* gpu = suitable_gpu(devices)) {
#if SAMOYEDS_WITH_CUDA
      return run_gpu_demo(args, *gpu);
#endif
    }
  } else {
    std::printf("--cpu: running the CPU reference implementation.\n\n");
  }
  const ModelConfig& base = find_model(args.has("model") ? args.get("model") : "mixtral-8x7b");
  const std::int64_t H = args.get_int("hidden"), I = args.get_int("intermediate");
  const std::int64_t T = args.has("tokens") ? args.get_int("tokens") : 64;
  if (H < 1 || I < 1) throw UsageError{"--hidden and --intermediate must be positive"};
  if (T < 0) throw UsageError{"--tokens must be 0 or more"};
  const ModelConfig config = scaled_config(base, H, I);
  const SparsityPattern pattern = SparsityPattern::parse(args.get("pattern"));
  const auto seed = static_cast<std::uint64_t>(args.get_int("seed"));
  std::printf("MoE layer: %s structure scaled to H = %lld, I = %lld (E = %d, top_k = %d%s), T = %lld tokens,\n"
              "bf16, pattern %s, seed %llu.\n\n",
              base.display_name.c_str(), static_cast<long long>(H), static_cast<long long>(I), config.num_experts,
              config.top_k, config.num_shared_experts > 0 ? ", shared experts" : "", static_cast<long long>(T),
              pattern.to_string().c_str(), static_cast<unsigned long long>(seed));

  auto start = std::chrono::steady_clock::now();
  std::printf("[1/4] generating seeded weights ...");
  std::fflush(stdout);
  const DenseMoeWeights dense = synthetic_moe_weights(config, DType::bf16, seed);
  std::printf(" %.0f ms\n[2/4] pruning and packing the experts ...", elapsed_ms(start));
  std::fflush(stdout);
  start = std::chrono::steady_clock::now();
  const PackedMoeWeights packed = pack_moe_weights(config, dense, pattern);
  double dense_bytes = 0, packed_bytes = 0;
  auto count = [&](const PackedMatrix& m) {
    dense_bytes += static_cast<double>(m.geometry().dense_bytes());
    packed_bytes += static_cast<double>(m.geometry().total_bytes());
  };
  for (const PackedExpert& e : packed.experts) {
    count(e.gate), count(e.up), count(e.down);
    if (e.gate_linear) count(*e.gate_linear);
  }
  std::printf(" %.0f ms; expert weights %s packed vs %s dense (%.1f%%)\n", elapsed_ms(start),
              format_bytes(packed_bytes).c_str(), format_bytes(dense_bytes).c_str(), 100.0 * packed_bytes / dense_bytes);

  Matrix x(DType::bf16, T, H);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < H; ++h) x.set(t, h, normal(rng));

  std::printf("[3/4] MoE layer on the packed experts (CPU reference) ...");
  std::fflush(stdout);
  start = std::chrono::steady_clock::now();
  Routing routing;
  const Matrix y = reference::moe_layer(config, packed, x, &routing);
  std::printf(" %.0f ms\n[4/4] dense per-token computation on the effective weights W-hat ...", elapsed_ms(start));
  std::fflush(stdout);
  start = std::chrono::steady_clock::now();
  const Matrix y_dense = reference::moe_layer_dense(config, unpack_moe_weights(packed), x);
  std::printf(" %.0f ms\n\n", elapsed_ms(start));

  std::printf("tokens per expert:");
  for (int e = 0; e < config.num_experts; ++e) std::printf(" %lld", static_cast<long long>(routing.expert_size(e)));
  std::printf("\n");
  double max_err = 0, max_ref = 0, err2 = 0, ref2 = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < H; ++h) {
      const double a = y.get(t, h), b = y_dense.get(t, h);
      max_err = std::max(max_err, std::fabs(a - b));
      max_ref = std::max(max_ref, std::fabs(b));
      err2 += (a - b) * (a - b);
      ref2 += b * b;
    }
  if (T > 0) {
    std::printf("Y[0, 0:6] =");
    for (std::int64_t h = 0; h < std::min<std::int64_t>(6, H); ++h) std::printf(" %+.4f", y.get(0, h));
    std::printf("\n");
  }
  // Same routing and rounding points; only fp32 summation order differs (see tests/cpu/reference_moe_test.cpp).
  const double tolerance = 2e-2 * std::max(max_ref, 1e-3);
  const bool pass = max_err <= tolerance;
  std::printf("check: max |packed - dense| = %.3g (tolerance %.3g), relative error %.3g -> %s\n\n", max_err, tolerance,
              ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0, pass ? "PASS" : "FAIL");
  std::printf("The packed layer keeps %.0f%% of the expert weights (pattern %s) and reads only each expert's\n"
              "routed tokens. The accelerated path needs an NVIDIA GPU with sparse tensor cores (sm_80+).\n",
              100.0 * pattern.density(), pattern.to_string().c_str());
  return pass ? 0 : 1;
}

}  // namespace

Command demo_command() {
  return Command{
      "demo",
      "run one MoE layer with packed experts and check it against dense (the main job)",
      "Builds MoE layers with seeded synthetic weights, prunes and packs their experts into the Samoyeds\n"
      "format and runs them on random tokens. On a GPU with sparse tensor cores: the real Mixtral-8x7B and\n"
      "DeepSeek-MoE layers, sparse vs the dense cuBLAS layer, validated then timed (a table). Otherwise (or\n"
      "with --cpu): one scaled-down layer on the CPU reference, checked against a dense per-token\n"
      "computation on the effective weights.",
      {{"model", "NAME", "model (GPU: one real-size model instead of the two; CPU: the structure to scale; "
        "default mixtral-8x7b)", ""},
       {"hidden", "H", "CPU: hidden size of the scaled-down layer", "512"},
       {"intermediate", "I", "CPU: expert intermediate size of the scaled-down layer", "1792"},
       {"tokens", "T", "number of tokens (GPU default: 1, 16, 128, 1024, 4096; CPU default: 64)", ""},
       {"cpu", "", "run the CPU reference even when a GPU is present", ""},
       {"pattern", "N:M:V", "sparsity pattern", "1:2:128"},
       {"seed", "S", "random seed of weights and tokens", "2025"}},
      run_demo};
}

}  // namespace samoyeds::cli
