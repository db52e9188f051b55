// SPDX-License-Identifier: Apache-2.0
// Whole-model runs on the GPU (`samoyeds run`, `samoyeds maxbatch`).
//
// Weights: synthetic ones are made on the device (gpu::Model::synthetic: seconds for a real-size
// model); a checkpoint is read on the host and uploaded. The dense baseline runs the same weights
// (its experts are Ŵ unpacked on the device) through cuBLAS.
// Check before timing: the candidate's first layer against the other path's on the same prompts
// (one layer, so both paths route every token identically; deeper, a near-tie in a later router
// may flip between the two paths and the logits legitimately diverge). Logits must agree within
// 2^-5 max|logit| per element.
// Timing: a warm-up prefill and decode (which also captures the decode graph), then the timed
// prefill of B x P tokens (host clock around the step, synchronised) and G - 1 timed greedy decode
// steps (G tokens per sequence in all, the first coming from the prefill). Peak memory is measured
// with cudaMemGetInfo: free memory before the model is built minus the lowest free memory seen.
#include "bench/run_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "bench/bench_util.h"
#include "kernels/attention_cudnn.h"
#include "kernels/cuda_check.h"
#include "samoyeds/convert.h"
#include "samoyeds/gpu_model.h"

namespace samoyeds::bench {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::size_t free_now() {
  std::size_t free_bytes = 0, total = 0;
  gpu::device_memory(free_bytes, total);
  return free_bytes;
}

double gb(double bytes) { return bytes / 1e9; }

// `--gpu-memory`: holds the device memory above `cap_gb` in one allocation for the whole run, so the
// build, the plan and every later allocation see a card of that size (an 80 GB H100, which reports
// ~85.5 GB, on an H200). The held block is never touched: it costs nothing but its capacity.
class MemoryCap {
 public:
  explicit MemoryCap(double cap_gb) {
    std::size_t free_bytes = 0;
    gpu::device_memory(free_bytes, total_);
    if (cap_gb <= 0) return;
    const auto target = static_cast<std::size_t>(cap_gb * 1e9);
    SAMOYEDS_CHECK(target < total_, "--gpu-memory ", cap_gb, " GB: this GPU has only ", gb(static_cast<double>(total_)),
                   " GB; give a smaller size");
    const std::size_t hold = total_ - target;
    SAMOYEDS_CHECK(hold < free_bytes, "--gpu-memory ", cap_gb, " GB: holding the other ", gb(static_cast<double>(hold)),
                   " GB needs that much free, but only ", gb(static_cast<double>(free_bytes)),
                   " GB is (another process holds memory); give a larger size");
    SAMOYEDS_CUDA_CHECK(cudaMalloc(&held_, hold));
    std::printf("  emulating a GPU of %.2f GB: %.2f GB of this one's %.2f GB held for the whole run\n", cap_gb,
                gb(static_cast<double>(hold)), gb(static_cast<double>(total_)));
    total_ = target;
    capped_ = true;
  }
  MemoryCap(const MemoryCap&) = delete;
  MemoryCap& operator=(const MemoryCap&) = delete;
  ~MemoryCap() {
    if (held_) cudaFree(held_);
  }
  std::size_t total() const { return total_; }  // the emulated card's total (the real one without a cap)
  bool capped() const { return capped_; }

 private:
  void* held_ = nullptr;
  std::size_t total_ = 0;
  bool capped_ = false;
};

// A built model and what it holds on the device.
struct Built {
  std::optional<gpu::Model> model;
  std::size_t resident_bytes = 0;  // measured: free memory before the build minus after
  double build_s = 0;
};

Built build(const ModelRunOptions& o, bool dense, int layers) {
  const char* label = dense ? "dense baseline" : "Samoyeds";
  gpu::ModelOptions options;
  options.dense = dense;
  Built b;
  const std::size_t free_before = free_now();
  const auto start = std::chrono::steady_clock::now();
  try {
    if (o.checkpoint.empty()) {
      b.model.emplace(gpu::Model::synthetic(o.config, layers, DType::bf16, o.pattern, o.seed, options,
                                            [&](int done, int total) {
                                              std::printf("\r  building %s: layer %d/%d", label, done, total);
                                              std::fflush(stdout);
                                            }));
      std::printf("\n");
    } else {
      std::printf("  loading %s from %s ...\n", label, o.checkpoint.c_str());
      const ModelWeights weights = ConvertedCheckpoint::open(o.checkpoint).model(layers);
      b.model.emplace(o.config, weights, options);
    }
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find("out of memory") != std::string::npos)
      SAMOYEDS_FAIL(o.config.display_name, " (", layers, " layers, ", label, ") does not fit in GPU memory (",
                    gb(static_cast<double>(free_before)), " GB free): run a prefix with --layers N");
    throw;
  }
  b.build_s = seconds_since(start);
  b.resident_bytes = free_before - free_now();
  return b;
}

// Layers the check runs: through the first MoE layer (DeepSeek-MoE and OpenMoE start dense), where
// both paths still route every token identically.
int check_layers(const ModelConfig& c) { return c.moe_layers().front() + 1; }

// The candidate's first layers against the other path's: false (and a message) on disagreement.
bool check_first_layers(gpu::Model& candidate, gpu::Model& other, std::uint64_t seed) {
  const int B = 4;
  const std::int64_t P = 32;
  const int keep_a = candidate.active_layers(), keep_b = other.active_layers();
  const int layers = std::min(check_layers(candidate.config()), candidate.num_layers());
  candidate.set_active_layers(layers);
  other.set_active_layers(layers);
  candidate.start(B, P);
  other.start(B, P);
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, candidate.config().vocab_size, seed);
  const Matrix a = candidate.forward(prompt, true), b = other.forward(prompt, true);
  candidate.stop();
  other.stop();
  candidate.set_active_layers(keep_a);
  other.set_active_layers(keep_b);
  double max_ref = 0, max_err = 0;
  for (std::int64_t r = 0; r < b.rows(); ++r)
    for (std::int64_t v = 0; v < b.cols(); ++v) max_ref = std::max(max_ref, std::fabs(static_cast<double>(b.get(r, v))));
  for (std::int64_t r = 0; r < b.rows(); ++r)
    for (std::int64_t v = 0; v < b.cols(); ++v) {
      const double err = std::fabs(static_cast<double>(a.get(r, v)) - b.get(r, v));
      max_err = std::isfinite(err) ? std::max(max_err, err) : INFINITY;
    }
  const bool ok = max_ref > 0 && max_err <= std::ldexp(max_ref, -5);
  std::printf("  check: layers 0-%d (through the first MoE layer), Samoyeds vs dense on %d x %lld tokens: max |diff| %.4g "
              "(max |logit| %.4g): %s\n", layers - 1, B, static_cast<long long>(P), max_err, max_ref, ok ? "agree" : "DISAGREE");
  return ok;
}

struct RunResult {
  double prefill_s = 0, decode_s = 0;
  std::size_t peak_bytes = 0;
  std::vector<std::int32_t> tokens;  // sequence 0's generated tokens
};

RunResult run_once(Built& built, std::int64_t B, const ModelRunOptions& o, bool graph, const char* label) {
  gpu::Model& m = *built.model;
  const std::int64_t P = o.prompt_len, G = o.gen_len;
  const std::size_t free_before = free_now();
  m.start(static_cast<int>(B), P + G);
  std::size_t lowest_free = free_now();
  const std::vector<std::int32_t> prompt = random_token_ids(B * P, m.config().vocab_size, o.seed + 1000 + static_cast<std::uint64_t>(B));
  const int steps = static_cast<int>(G - 1);
  const int chunk = std::max(1, steps / 10);  // decode calls of `chunk` steps: progress between them

  // Warm-up: cuBLAS heuristics, lazy kernel attributes and the decode graph.
  std::vector<std::int32_t> next = m.prefill(prompt);
  if (steps > 0) m.decode(next, std::min(chunk, steps), graph);
  m.clear();

  RunResult r;
  auto start = std::chrono::steady_clock::now();
  next = m.prefill(prompt);
  r.prefill_s = seconds_since(start);
  r.tokens.push_back(next[0]);
  start = std::chrono::steady_clock::now();
  for (int done = 0; done < steps;) {
    const int n = std::min(chunk, steps - done);
    const std::vector<std::int32_t> picked = m.decode(next, n, graph);
    for (int s = 0; s < n; ++s) r.tokens.push_back(picked[static_cast<std::size_t>(s * B)]);
    next.assign(picked.end() - B, picked.end());
    done += n;
    std::printf("\r  %s, batch %lld: decode step %d/%d", label, static_cast<long long>(B), done, steps);
    std::fflush(stdout);
  }
  r.decode_s = seconds_since(start);
  if (steps > 0) std::printf("\n");
  lowest_free = std::min(lowest_free, free_now());
  r.peak_bytes = built.resident_bytes + (free_before - lowest_free);
  m.stop();
  return r;
}

}  // namespace

int run_model(const ModelRunOptions& o) {
  const ModelConfig& c = o.config;
  const int layers = o.layers == 0 ? c.num_layers : o.layers;
  const std::string device = device_name(), run_commit = commit(), date = today();
  std::printf("samoyeds run: %s, %s, %d of %d layers, prompt %lld, %lld generated tokens per sequence, %s%s, commit %s, %s\n",
              device.c_str(), c.display_name.c_str(), layers, c.num_layers, static_cast<long long>(o.prompt_len),
              static_cast<long long>(o.gen_len), o.checkpoint.empty() ? "synthetic weights " : "checkpoint ",
              o.checkpoint.empty() ? o.pattern.to_string().c_str() : o.checkpoint.c_str(), run_commit.c_str(), date.c_str());
  const MemoryCap cap(o.gpu_memory_gb);

  // Candidate(s): ours unless --dense; with --compare also the baseline, side by side.
  std::optional<Built> ours, dense;
  if (!o.dense) ours = build(o, false, layers);
  if (o.dense || o.compare) dense = build(o, true, layers);
  for (const auto* b : {&ours, &dense})
    if (*b)
      std::printf("  %s: weights %.2f GB on the device (%.2f GB resident with routers and cuBLAS workspaces), built in %.1f s\n",
                  (*b)->model->dense() ? "dense baseline" : "Samoyeds", gb(static_cast<double>((*b)->model->weight_bytes())),
                  gb(static_cast<double>((*b)->resident_bytes)), (*b)->build_s);

  // The check: against the other path's first layers (a twin of those layers when that path is not built).
  {
    Built& candidate = ours ? *ours : *dense;
    std::optional<Built> twin_storage;
    Built* other = ours && dense ? &*dense : nullptr;
    if (!other) {
      ModelRunOptions one = o;
      twin_storage = build(one, !candidate.model->dense(), std::min(layers, check_layers(o.config)));
      other = &*twin_storage;
    }
    if (!check_first_layers(*candidate.model, *other->model, o.seed + 7)) {
      std::fprintf(stderr, "samoyeds run: the Samoyeds and the dense paths disagree; no timings are reported\n");
      return 1;
    }
  }

  std::FILE* jsonl = nullptr;
  if (!o.out_path.empty()) {
    jsonl = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(jsonl, "cannot open --out file '", o.out_path, "' for appending");
  }
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(jsonl, jsonl ? &std::fclose : nullptr);

  const std::string attention = kernels::attention_backend_summary();
  std::printf("attention (both paths): %s\n", attention.c_str());
  std::printf("\n%-9s %6s | %11s %12s | %12s %10s | %8s | %s\n", "path", "batch", "prefill ms", "prefill tok/s",
              "decode tok/s", "TPOT ms", "peak GB", "x dense (prefill, decode)");
  std::vector<double> prefill_ratios, decode_ratios;
  for (const std::int64_t B : o.batches) {
    std::optional<RunResult> a, b;
    if (ours) a = run_once(*ours, B, o, o.graph, "Samoyeds");
    if (dense) b = run_once(*dense, B, o, false, "dense");
    const double prefill_tokens = static_cast<double>(B * o.prompt_len), decode_tokens = static_cast<double>(B * (o.gen_len - 1));
    auto line = [&](const char* path, const RunResult& r, const RunResult* base) {
      std::printf("%-9s %6lld | %11.2f %12.0f | %12.1f %10.3f | %8.2f |", path, static_cast<long long>(B), 1e3 * r.prefill_s,
                  prefill_tokens / r.prefill_s, decode_tokens > 0 ? decode_tokens / r.decode_s : 0.0,
                  o.gen_len > 1 ? 1e3 * r.decode_s / static_cast<double>(o.gen_len - 1) : 0.0, gb(static_cast<double>(r.peak_bytes)));
      if (base) std::printf(" %.2fx, %.2fx", base->prefill_s / r.prefill_s, o.gen_len > 1 ? base->decode_s / r.decode_s : 0.0);
      std::printf("\n");
    };
    if (a) line("samoyeds", *a, b ? &*b : nullptr);
    if (b) line("dense", *b, nullptr);
    if (a && b) {
      prefill_ratios.push_back(b->prefill_s / a->prefill_s);
      if (o.gen_len > 1) decode_ratios.push_back(b->decode_s / a->decode_s);
    }
    if (jsonl) {
      for (int phase = 0; phase < 2; ++phase) {
        if (phase == 1 && o.gen_len <= 1) continue;
        const RunResult& main = a ? *a : *b;
        const double steps = static_cast<double>(o.gen_len - 1);
        const double t = phase == 0 ? main.prefill_s * 1e6 : main.decode_s * 1e6 / steps;  // per step for decode
        Record r = run_record("model", device, run_commit, date);
        r.add("dtype", "bf16").add("pattern", o.checkpoint.empty() ? o.pattern.to_string() : std::string("checkpoint"))
            .add("model", c.name).add("phase", phase == 0 ? "prefill" : "decode")
            .add("kernel", a ? (o.graph ? "samoyeds_graph" : "samoyeds") : "dense_cublas")
            .add("batch", B).add("prompt_len", o.prompt_len).add("gen_len", o.gen_len)
            .add("layers", static_cast<std::int64_t>(layers)).add("time_us", t)
            .add("tokens_per_s", phase == 0 ? prefill_tokens / main.prefill_s : decode_tokens / main.decode_s)
            .add("peak_bytes", static_cast<std::int64_t>(main.peak_bytes)).add("attention", attention);
        if (cap.capped()) r.add("gpu_memory_bytes", static_cast<std::int64_t>(cap.total()));
        if (a && b) {
          const double bt = phase == 0 ? b->prefill_s * 1e6 : b->decode_s * 1e6 / steps;
          r.add("baseline", "dense_cublas").add("baseline_time_us", bt)
              .add("baseline_peak_bytes", static_cast<std::int64_t>(b->peak_bytes)).add("speedup", bt / t);
        }
        std::fprintf(jsonl, "%s\n", r.json().c_str());
      }
    }
    if (a) {
      std::printf("  sequence 0 generated:");
      for (const std::int32_t t : a->tokens) std::printf(" %d", t);
      std::printf("\n");
    }
  }
  if (!prefill_ratios.empty()) {
    std::printf("geomean speedup vs dense: prefill %.3fx", geomean(prefill_ratios));
    if (!decode_ratios.empty()) std::printf(", decode %.3fx", geomean(decode_ratios));
    std::printf(" over %zu batch sizes\n", prefill_ratios.size());
  }
  return 0;
}

int max_batch(const ModelRunOptions& o) {
  const ModelConfig& c = o.config;
  const int layers = o.layers == 0 ? c.num_layers : o.layers;
  const std::int64_t capacity = o.prompt_len + o.gen_len;
  const std::string device = device_name(), run_commit = commit(), date = today();
  std::printf("samoyeds maxbatch: %s, %s, %d of %d layers, prompt %lld + %lld generated tokens, commit %s, %s\n",
              device.c_str(), c.display_name.c_str(), layers, c.num_layers, static_cast<long long>(o.prompt_len),
              static_cast<long long>(o.gen_len), run_commit.c_str(), date.c_str());
  std::FILE* jsonl = nullptr;
  if (!o.out_path.empty()) {
    jsonl = std::fopen(o.out_path.c_str(), "a");
    SAMOYEDS_CHECK(jsonl, "cannot open --out file '", o.out_path, "' for appending");
  }
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(jsonl, jsonl ? &std::fclose : nullptr);
  const MemoryCap cap(o.gpu_memory_gb);

  std::vector<bool> paths;
  if (!o.dense) paths.push_back(false);
  if (o.dense || o.compare) paths.push_back(true);
  std::vector<std::int64_t> found;
  for (const bool dense : paths) {
    const char* label = dense ? "dense" : "Samoyeds";
    std::optional<Built> built;
    try {
      built = build(o, dense, layers);
    } catch (const Error& e) {
      std::printf("  %s: %s\n  %s: largest batch 0 (the weights do not fit)\n", label, e.what(), label);
      found.push_back(0);
      continue;
    }
    gpu::Model& m = *built->model;
    // Plan: the largest B whose caches and workspace fit in what is free, less a margin for cuBLAS,
    // the decode graph and allocator granularity (1 % of the device plus 512 MB).
    const std::size_t free_bytes = free_now();
    const std::size_t margin = cap.total() / 100 + (std::size_t{512} << 20);
    const std::size_t budget = free_bytes > margin ? free_bytes - margin : 0;
    auto needed = [&](std::int64_t B) { return m.kv_cache_bytes(static_cast<int>(B), capacity) + m.workspace_bytes(static_cast<int>(B), capacity); };
    std::int64_t lo = 0, hi = 65535;
    while (lo < hi) {
      const std::int64_t mid = (lo + hi + 1) / 2;
      if (needed(mid) <= budget) lo = mid; else hi = mid - 1;
    }
    std::printf("  %s: weights %.2f GB, %.2f GB free; planned batch %lld (KV cache %.2f GB + workspace %.2f GB)\n", label,
                gb(static_cast<double>(m.weight_bytes())), gb(static_cast<double>(free_bytes)), static_cast<long long>(lo),
                gb(static_cast<double>(m.kv_cache_bytes(static_cast<int>(lo), capacity))),
                gb(static_cast<double>(m.workspace_bytes(static_cast<int>(lo), capacity))));
    // Confirm with a run (prefill + every decode step); step down 2 % at a time if it does not fit.
    std::int64_t B = lo;
    std::optional<RunResult> result;
    while (B > 0 && !result) {
      try {
        result = run_once(*built, B, o, !dense && o.graph, label);
      } catch (const Error& e) {
        const std::string what = e.what();
        if (what.find("out of memory") == std::string::npos) throw;
        cudaGetLastError();
        m.stop();
        std::printf("  %s: batch %lld ran out of memory; trying %lld\n", label, static_cast<long long>(B),
                    static_cast<long long>(B * 98 / 100));
        B = B * 98 / 100;
      }
    }
    if (result)
      std::printf("  %s: largest batch %lld, confirmed by a run (prefill %.1f ms, decode %.0f tokens/s), peak %.2f GB\n",
                  label, static_cast<long long>(B), 1e3 * result->prefill_s,
                  o.gen_len > 1 ? static_cast<double>(B * (o.gen_len - 1)) / result->decode_s : 0.0,
                  gb(static_cast<double>(result->peak_bytes)));
    found.push_back(result ? B : 0);
    if (jsonl && result) {
      Record r = run_record("maxbatch", device, run_commit, date);
      r.add("dtype", "bf16")
          .add("pattern", o.checkpoint.empty() ? o.pattern.to_string() : std::string("checkpoint")).add("model", c.name)
          .add("kernel", dense ? "dense_cublas" : "samoyeds").add("batch", B).add("prompt_len", o.prompt_len)
          .add("gen_len", o.gen_len).add("layers", static_cast<std::int64_t>(layers))
          .add("peak_bytes", static_cast<std::int64_t>(result->peak_bytes))
          .add("weight_bytes", static_cast<std::int64_t>(m.weight_bytes()));
      if (cap.capped()) r.add("gpu_memory_bytes", static_cast<std::int64_t>(cap.total()));
      std::fprintf(jsonl, "%s\n", r.json().c_str());
    }
  }
  if (found.size() == 2) {
    if (found[1] > 0) std::printf("largest batch: Samoyeds %lld vs dense %lld: %.2fx\n", static_cast<long long>(found[0]),
                                  static_cast<long long>(found[1]), static_cast<double>(found[0]) / static_cast<double>(found[1]));
    else std::printf("largest batch: Samoyeds %lld; the dense model does not fit at all\n", static_cast<long long>(found[0]));
  }
  return 0;
}

}  // namespace samoyeds::bench
