// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench kernel|moe`: validated, side-by-side timings on the GPU (bench/bench_kernel.cu,
// bench/bench_moe.cu).
#include <cstdio>
#include <sstream>

#include "cli.h"
#include "samoyeds/device.h"
#include "samoyeds/model_config.h"
#if SAMOYEDS_WITH_CUDA
#include "bench/bench_kernel.h"
#include "bench/bench_moe.h"
#include "bench/bench_peak.h"
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

#if SAMOYEDS_WITH_CUDA
std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (item.empty()) throw UsageError{"--model takes registry names separated by commas, got '" + text + "'"};
    find_model(item);  // throws with the list of known models
    names.push_back(item);
  }
  return names;
}

gpu::SsmmPath parse_path(const std::string& path) {
  if (path == "auto") return gpu::SsmmPath::automatic;
  if (path == "sm80") return gpu::SsmmPath::sm80;
  if (path == "sm90") return gpu::SsmmPath::sm90;
  throw UsageError{"--path must be auto, sm80 or sm90, got '" + path + "'"};
}

std::vector<std::int64_t> positive_tokens(const Args& args, const char* fallback) {
  std::vector<std::int64_t> tokens;
  if (args.has("tokens")) {
    tokens = args.get_int_list("tokens");
  } else {
    std::stringstream stream(fallback);
    std::string item;
    while (std::getline(stream, item, ',')) tokens.push_back(std::stoll(item));
  }
  for (auto n : tokens)
    if (n < 1) throw UsageError{"--tokens must be positive"};
  return tokens;
}

int run_moe(const Args& args) {
  bench::MoeBenchOptions o;
  o.models = split_names(args.get("model"));
  o.tokens = positive_tokens(args, "1,16,128,1024,4096,16384");
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.dtype = parse_dtype(args.get("dtype"));
  o.path = parse_path(args.get("path"));
  const std::string graph = args.get("graph");
  if (graph != "on" && graph != "off") throw UsageError{"--graph must be on or off, got '" + graph + "'"};
  o.graph = graph == "on";
  o.reps = static_cast<int>(args.get_int("reps"));
  if (o.reps < 1) throw UsageError{"--reps must be at least 1"};
  o.seed = static_cast<std::uint64_t>(args.get_int("seed"));
  o.out_path = args.get("out");
  return bench::run_moe_bench(o);
}
#endif

int run_bench(const Args& args) {
  const std::vector<std::string>& what = args.positional();
  if (what.size() != 1 || (what[0] != "kernel" && what[0] != "moe" && what[0] != "peak"))
    throw UsageError{"say what to benchmark: `samoyeds bench kernel`, `samoyeds bench moe` or `samoyeds bench peak`"};
#if SAMOYEDS_WITH_CUDA
  if (cuda_devices().empty()) {
    std::fprintf(stderr, "samoyeds bench: needs an NVIDIA GPU: %s\n", cuda_status().c_str());
    return 1;
  }
  if (what[0] == "moe") return run_moe(args);
  if (what[0] == "peak") {
    bench::PeakBenchOptions o;
    o.dtype = parse_dtype(args.get("dtype"));
    o.reps = static_cast<int>(args.get_int("reps"));
    if (o.reps < 1) throw UsageError{"--reps must be at least 1"};
    o.out_path = args.get("out");
    return bench::run_peak_bench(o);
  }
  bench::KernelBenchOptions o;
  o.shapes = parse_shapes(args.get("shapes"));
  o.tokens = positive_tokens(args, "1,16,64,256,1024,4096,16384");
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.dtype = parse_dtype(args.get("dtype"));
  o.path = parse_path(args.get("path"));
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
      "validated GPU benchmarks against cuBLAS (bench kernel | bench moe), and the sparse MMA ceiling (bench peak)",
      "bench kernel: our SSMM vs cuBLAS dense on the same routed tokens (with and without the gather copy)\n"
      "and vs cuSPARSELt 2:4 on the effective weight (when the build found cuSPARSELt), after checking\n"
      "every output element against cuBLAS on the effective weight.\n"
      "bench moe: the whole sparse MoE layer (routing included) vs the dense cuBLAS layer with the same\n"
      "routing and combine, after checking every output element against the dense layer on the effective\n"
      "weights. Both print a table and the geomean speedups; --out appends JSON Lines.\n"
      "bench peak: the rate of warp-level mma.sp.m16n8k32 (the sm80 path's instruction) with operands in\n"
      "registers on every SM, after checking the sums: the ceiling for the portable path (--dtype, --reps);\n"
      "on sm_90 also wgmma.mma_async.sp.m64nNk32 (bf16) with A and B from shared memory for N = 64, 128, 256,\n"
      "pipelined, drained every k-tile, and drained with the running-total update: the Hopper path's ceilings.",
      {{"shapes", "MxK,...", "kernel: weight shapes (M output features x K inputs)",
        "1408x2048,2048x1408,5760x2304,2304x5760,12288x3072,3072x12288,14336x4096,4096x14336,16384x6144,6144x16384"},
       {"model", "NAME,...", "moe: registry models (samoyeds models lists them)", "mixtral-8x7b,deepseek-moe-16b"},
       {"tokens", "N,...", "kernel: tokens per expert L (default 1,16,64,256,1024,4096,16384); moe: tokens T per "
        "forward (default 1,16,128,1024,4096,16384)", ""},
       {"graph", "on|off", "moe: replay the sparse layer from a CUDA graph", "on"},
       {"pattern", "N:M:V", "sparsity pattern", "1:2:128"},
       {"dtype", "bf16|fp16", "element type", "bf16"},
       {"path", "auto|sm80|sm90", "kernel path", "auto"},
       {"split", "auto|off", "split-K for small problems (off: never, for comparisons)", "auto"},
       {"reps", "N", "timed repetitions per measurement (median reported)", "20"},
       {"seed", "S", "random seed", "1"},
       {"out", "FILE", "append JSON Lines records to FILE", ""}},
      run_bench};
  command.positional = "kernel|moe|peak";
  return command;
}

}  // namespace samoyeds::cli
