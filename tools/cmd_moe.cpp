// SPDX-License-Identifier: Apache-2.0
// `samoyeds moe`: one MoE layer of a converted checkpoint on activations from a safetensors file, so
// that anyone can check our layer against their own implementation (docs/checkpoints.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "cli.h"
#include "io/tensor_dtype.h"
#include "samoyeds/convert.h"
#include "samoyeds/device.h"
#include "samoyeds/moe_layer.h"
#include "samoyeds/reference.h"
#if SAMOYEDS_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace samoyeds::cli {

namespace {

#if SAMOYEDS_WITH_CUDA
// Y = the GPU layer on x; `routing` receives the GPU's routing (for the check against the reference).
Matrix moe_on_gpu(const ModelConfig& config, const PackedMoeWeights& weights, const Matrix& x, Routing& routing) {
  gpu::MoeLayer layer(config, weights);
  Matrix y(x.dtype(), x.rows(), x.cols());
  void* dx = nullptr;
  void* dy = nullptr;
  auto check = [&](cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    cudaFree(dx);
    cudaFree(dy);
    SAMOYEDS_FAIL("samoyeds moe: ", what, " failed: ", cudaGetErrorString(status));
  };
  const std::size_t bytes = std::max<std::size_t>(x.bytes(), 16);
  check(cudaMalloc(&dx, bytes), "cudaMalloc");
  check(cudaMalloc(&dy, bytes), "cudaMalloc");
  check(cudaMemcpy(dx, x.data(), x.bytes(), cudaMemcpyHostToDevice), "copying X to the GPU");
  layer.forward(dx, dy, x.rows());
  check(cudaMemcpy(y.data(), dy, y.bytes(), cudaMemcpyDeviceToHost), "copying Y from the GPU");
  routing = layer.last_routing();
  cudaFree(dx);
  cudaFree(dy);
  return y;
}
#endif

int run_moe_command(const Args& args) {
  for (const char* required : {"checkpoint", "layer", "input", "output"})
    if (!args.has(required)) throw UsageError{std::string("--") + required + " is required"};
  const bool on_gpu = device_is_gpu(args);
  if (args.flag("check") && !on_gpu) throw UsageError{"--check compares the GPU layer with the CPU reference: it needs a GPU"};
  const ConvertedCheckpoint ck = ConvertedCheckpoint::open(args.get("checkpoint"));
  const ModelConfig& config = ck.config();
  const std::int64_t layer = args.get_int("layer");
  if (layer < 0 || layer >= config.num_layers || !config.is_moe_layer(static_cast<int>(layer)))
    throw UsageError{"--layer " + std::to_string(layer) + " is not a MoE layer of " + config.display_name +
                     " (the first is " + std::to_string(config.moe_layers().front()) + ")"};
  const PackedMoeWeights weights = ck.moe_layer(static_cast<int>(layer));

  const SafetensorsFile input = SafetensorsFile::open(args.get("input"));
  const TensorInfo* info = nullptr;
  if (args.has("tensor")) {
    info = &input.tensor(args.get("tensor"));
  } else if (input.tensors().size() == 1) {
    info = &input.tensors().front();
  } else {
    throw UsageError{args.get("input") + " holds " + std::to_string(input.tensors().size()) +
                     " tensors: name the activations with --tensor"};
  }
  const Matrix x = read_matrix(input, *info, input.path());
  if (x.cols() != config.hidden_size || x.dtype() != weights.router.dtype())
    throw UsageError{"the activations \"" + info->name + "\" are " + dtype_name(x.dtype()) + " [" + std::to_string(x.rows()) +
                     ", " + std::to_string(x.cols()) + "]; layer " + std::to_string(layer) + " needs " +
                     dtype_name(weights.router.dtype()) + " [T, " + std::to_string(config.hidden_size) + "]"};

  const auto start = std::chrono::steady_clock::now();
  Matrix y;
  Routing gpu_routing;
#if SAMOYEDS_WITH_CUDA
  if (on_gpu) y = moe_on_gpu(config, weights, x, gpu_routing);
#endif
  if (!on_gpu) y = reference::moe_layer(config, weights, x);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const char* where = on_gpu ? "the GPU" : "the CPU reference";
  if (args.flag("check")) {
    // The reference on the GPU's routing: a near tie that the two routers break differently is not an error.
    const Matrix want = reference::moe_layer_routed(config, weights, x, gpu_routing);
    double max_ref = 0, max_err = 0;
    std::int64_t bad = 0;
    for (std::int64_t t = 0; t < want.rows(); ++t)
      for (std::int64_t h = 0; h < want.cols(); ++h) max_ref = std::max(max_ref, std::fabs(static_cast<double>(want.get(t, h))));
    for (std::int64_t t = 0; t < want.rows(); ++t)
      for (std::int64_t h = 0; h < want.cols(); ++h) {
        const double ref = want.get(t, h), err = std::fabs(static_cast<double>(y.get(t, h)) - ref);
        max_err = std::isfinite(err) ? std::max(max_err, err) : INFINITY;
        bad += !(err <= std::ldexp(std::fabs(ref), -7) + std::ldexp(max_ref, -7));
      }
    std::printf("check against the CPU reference (on the GPU's routing): max |diff| %.4g, max |y| %.4g, %lld elements "
                "outside 2^-7 |y| + 2^-7 max|y|\n", max_err, max_ref, static_cast<long long>(bad));
    if (bad) {
      std::fprintf(stderr, "samoyeds moe: the GPU layer disagrees with the CPU reference; nothing written\n");
      return 1;
    }
  }

  SafetensorsWriter writer;
  writer.add("y", detail::safetensors_dtype_of(y.dtype()), {y.rows(), y.cols()},
             {static_cast<const std::uint8_t*>(y.data()), y.bytes()});
  writer.set_metadata("samoyeds.model", config.display_name);
  writer.set_metadata("samoyeds.layer", std::to_string(layer));
  writer.set_metadata("samoyeds.pattern", ck.pattern().to_string());
  writer.set_metadata("samoyeds.computed_by",
                      on_gpu ? "GPU (samoyeds::gpu::MoeLayer)" : "CPU reference (samoyeds::reference::moe_layer)");
  writer.write(args.get("output"));
  std::printf("%s layer %lld: %lld tokens x %lld through %d experts (top-%d%s) on %s in %.3f s%s; "
              "wrote \"y\" to %s\n",
              config.display_name.c_str(), static_cast<long long>(layer), static_cast<long long>(x.rows()),
              static_cast<long long>(x.cols()), config.num_experts, config.top_k,
              config.num_shared_experts ? ", shared experts" : "", where, seconds,
              on_gpu ? " (upload included)" : "", args.get("output").c_str());
  return 0;
}

}  // namespace

Command moe_command() {
  return Command{
      "moe",
      "run one MoE layer of a converted checkpoint on activations from a file",
      "Reads activations X [T, H] (bf16/fp16, a safetensors file) and writes the layer's output Y [T, H]\n"
      "as tensor \"y\" of OUTPUT, with the model, layer and pattern in its metadata. The layer is the\n"
      "converted checkpoint's (routing, routed and shared experts, combine), computed on the GPU when\n"
      "there is one (gpu::MoeLayer), else by the CPU reference. --check (GPU) also computes the CPU\n"
      "reference on the GPU's routing and fails unless every element agrees within 2^-7 |y| + 2^-7 max|y|.",
      {{"checkpoint", "DIR", "a directory written by `samoyeds convert`", ""},
       {"layer", "L", "MoE layer index (0-based, as in the Hugging Face names)", ""},
       {"input", "FILE", "safetensors file with X [T, H]", ""},
       {"tensor", "NAME", "which tensor of the input is X (needed when it holds several)", ""},
       {"output", "FILE", "safetensors file to write (atomically)", ""},
       {"device", "auto|gpu|cpu", "where to run (auto: the GPU when there is one)", "auto"},
       {"check", "", "GPU: compare with the CPU reference before writing", ""}},
      run_moe_command};
}

}  // namespace samoyeds::cli
