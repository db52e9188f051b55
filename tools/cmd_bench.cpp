// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench kernel`: validated, side-by-side timings on the GPU (bench/bench_kernel.cu).
#include <cstdio>
#include <sstream>

#include "cli.h"
#include "samoyeds/device.h"
#if SAMOYEDS_WITH_CUDA
#include "bench/bench_kernel.h"
#endif

namespace samoyeds::cli {

namespace {

std::vector<std::pair<std::int64_t, std::int64_t>> parse_shapes(const std::string& text) {
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    const auto x = item.find('x');
    try {
      if (x == std::string::npos) throw std::invalid_argument(item);
      std::size_t used_m = 0, used_k = 0;
      const std::int64_t M = std::stoll(item.substr(0, x), &used_m), K = std::stoll(item.substr(x + 1), &used_k);
      if (used_m != x || used_k != item.size() - x - 1 || M < 1 || K < 1) throw std::invalid_argument(item);
      shapes.emplace_back(M, K);
    } catch (const std::exception&) {
      throw UsageError{"--shapes takes MxK pairs separated by commas (e.g. 14336x4096,4096x14336), got '" + item + "'"};
    }
  }
  return shapes;
}

int run_bench(const Args& args) {
  if (args.positional().size() != 1 || args.positional()[0] != "kernel")
    throw UsageError{"say what to benchmark: `samoyeds bench kernel` (the MoE layer and model benchmarks come later)"};
#if SAMOYEDS_WITH_CUDA
  if (cuda_devices().empty()) {
    std::fprintf(stderr, "samoyeds bench: needs an NVIDIA GPU: %s\n", cuda_status().c_str());
    return 1;
  }
  bench::KernelBenchOptions o;
  o.shapes = parse_shapes(args.get("shapes"));
  o.tokens = args.get_int_list("tokens");
  for (auto L : o.tokens)
    if (L < 1) throw UsageError{"--tokens must be positive"};
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.dtype = parse_dtype(args.get("dtype"));
  const std::string path = args.get("path");
  if (path == "auto") o.path = gpu::SsmmPath::automatic;
  else if (path == "sm80") o.path = gpu::SsmmPath::sm80;
  else if (path == "sm90") o.path = gpu::SsmmPath::sm90;
  else throw UsageError{"--path must be auto, sm80 or sm90, got '" + path + "'"};
  const std::string split = args.get("split");
  if (split != "auto" && split != "off") throw UsageError{"--split must be auto or off, got '" + split + "'"};
  o.split_k = split == "auto";
  o.reps = static_cast<int>(args.get_int("reps"));
  if (o.reps < 1) throw UsageError{"--reps must be at least 1"};
  o.seed = static_cast<std::uint64_t>(args.get_int("seed"));
  o.out_path = args.get("out");
  return bench::run_kernel_bench(o);
#else
  std::fprintf(stderr, "samoyeds bench: this build has no CUDA support (%s)\n", cuda_status().c_str());
  return 1;
#endif
}

}  // namespace

Command bench_command() {
  Command command{
      "bench",
      "validated GPU benchmarks against cuBLAS (bench kernel)",
      "bench kernel: our SSMM vs cuBLAS dense on the same routed tokens (with and without the gather copy),\n"
      "after checking every output element against cuBLAS on the effective weight. Prints a table and the\n"
      "geomean speedups; --out appends JSON Lines.",
      {{"shapes", "MxK,...", "weight shapes (M output features x K inputs)",
        "1408x2048,2048x1408,5760x2304,2304x5760,12288x3072,3072x12288,14336x4096,4096x14336,16384x6144,6144x16384"},
       {"tokens", "L,...", "tokens per expert", "1,16,64,256,1024,4096,16384"},
       {"pattern", "N:M:V", "sparsity pattern", "1:2:128"},
       {"dtype", "bf16|fp16", "element type", "bf16"},
       {"path", "auto|sm80|sm90", "kernel path", "auto"},
       {"split", "auto|off", "split-K for small problems (off: never, for comparisons)", "auto"},
       {"reps", "N", "timed repetitions per measurement (median reported)", "20"},
       {"seed", "S", "random seed", "1"},
       {"out", "FILE", "append JSON Lines records to FILE", ""}},
      run_bench};
  command.positional = "kernel";
  return command;
}

}  // namespace samoyeds::cli
