// SPDX-License-Identifier: Apache-2.0
// `samoyeds run` and `samoyeds maxbatch`: greedy generation with a whole model (synthetic seeded
// weights or a converted checkpoint): prefill of a batch of prompts, then one token per sequence per
// step from the KV caches. On a GPU it runs gpu::Model (bench/run_model.cu: the dense baseline, the
// check, peak memory, records); without one, the CPU reference (reference::model_forward).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>

#include "cli.h"
#include "samoyeds/convert.h"
#include "samoyeds/device.h"
#include "samoyeds/reference.h"
#if SAMOYEDS_WITH_CUDA
#include "bench/run_model.h"
#endif

namespace samoyeds::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::int64_t weight_bytes(const ModelWeights& w) {
  std::int64_t bytes = static_cast<std::int64_t>(w.embedding.bytes() + w.final_norm.bytes() + w.lm_head.bytes());
  auto mlp_bytes = [](const DenseExpert& e) {
    return static_cast<std::int64_t>(e.gate.bytes() + e.up.bytes() + e.down.bytes() + e.gate_linear.bytes());
  };
  auto packed_bytes = [](const PackedExpert& e) {
    return e.gate.geometry().total_bytes() + e.up.geometry().total_bytes() + e.down.geometry().total_bytes() +
           (e.gate_linear ? e.gate_linear->geometry().total_bytes() : 0);
  };
  for (const DecoderLayerWeights& l : w.layers) {
    const AttentionWeights& a = l.attention;
    bytes += static_cast<std::int64_t>(l.input_norm.bytes() + l.post_attention_norm.bytes() + a.q.bytes() + a.k.bytes() +
                                       a.v.bytes() + a.o.bytes() + a.q_bias.bytes() + a.k_bias.bytes() + a.v_bias.bytes() +
                                       l.extra_norm.bytes());
    if (l.mlp) bytes += mlp_bytes(*l.mlp);
    if (l.extra_mlp) bytes += mlp_bytes(*l.extra_mlp);
    if (l.moe) {
      bytes += static_cast<std::int64_t>(l.moe->router.bytes() + l.moe->shared_gate.bytes());
      for (const PackedExpert& e : l.moe->experts) bytes += packed_bytes(e);
      if (l.moe->shared) bytes += packed_bytes(*l.moe->shared);
    }
  }
  return bytes;
}

int run_on_cpu(const Args& args) {
  const std::vector<std::int64_t> batches = args.get_int_list("batch");
  if (batches.size() != 1) throw UsageError{"the CPU reference runs one --batch size at a time"};
  const std::int64_t batch = batches[0], prompt_len = args.get_int("prompt-len"), gen_len = args.get_int("gen-len");
  const std::int64_t layers_wanted = args.has("layers") ? args.get_int("layers") : 0;  // 0: every layer
  const auto seed = static_cast<std::uint64_t>(args.get_int("seed"));

  ModelConfig config;
  ModelWeights weights;
  const auto build_start = std::chrono::steady_clock::now();
  if (args.has("checkpoint")) {
    if (args.has("scale")) throw UsageError{"--scale applies to synthetic models only"};
    const ConvertedCheckpoint ck = ConvertedCheckpoint::open(args.get("checkpoint"));
    config = ck.config();
    if (layers_wanted < 0 || layers_wanted > config.num_layers)
      throw UsageError{"--layers must be in [1, " + std::to_string(config.num_layers) + "]"};
    std::printf("loading %s from %s ...\n", config.display_name.c_str(), args.get("checkpoint").c_str());
    weights = ck.model(static_cast<int>(layers_wanted));
  } else {
    config = model_from_args(args);
    if (layers_wanted < 0 || layers_wanted > config.num_layers)
      throw UsageError{"--layers must be in [1, " + std::to_string(config.num_layers) + "]"};
    const int layers = layers_wanted == 0 ? config.num_layers : static_cast<int>(layers_wanted);
    std::printf("building synthetic weights for %s (%d of %d layers, H = %lld, I = %lld) ...\n", config.display_name.c_str(),
                layers, config.num_layers, static_cast<long long>(config.hidden_size),
                static_cast<long long>(config.intermediate_size));
    weights = synthetic_model(config, layers, DType::bf16, SparsityPattern::parse(args.get("pattern")), seed);
  }
  if (prompt_len + gen_len > config.max_position_embeddings)
    throw UsageError{"--prompt-len + --gen-len = " + std::to_string(prompt_len + gen_len) + " exceeds " +
                     config.display_name + "'s " + std::to_string(config.max_position_embeddings) + " positions"};
  const double build_s = seconds_since(build_start);
  const int layers = static_cast<int>(weights.layers.size());

  std::vector<reference::KvCache> caches = reference::make_kv_caches(config, weights, static_cast<int>(batch), prompt_len + gen_len);
  std::vector<std::int32_t> ids = random_token_ids(batch * prompt_len, config.vocab_size, seed + 1), sequence;
  for (std::int64_t s = 0; s < batch; ++s) sequence.insert(sequence.end(), static_cast<std::size_t>(prompt_len), static_cast<std::int32_t>(s));

  std::printf("%s, %d layer(s), batch %lld, prompt %lld, generating %lld token(s), on the CPU reference\n",
              config.display_name.c_str(), layers, static_cast<long long>(batch), static_cast<long long>(prompt_len),
              static_cast<long long>(gen_len));
  auto start = std::chrono::steady_clock::now();
  const Matrix prefill_logits = reference::model_forward(config, weights, ids, sequence, caches);
  const double prefill_s = seconds_since(start);
  std::vector<std::int32_t> next(static_cast<std::size_t>(batch)), step_sequence(static_cast<std::size_t>(batch));
  for (std::int64_t s = 0; s < batch; ++s) {
    Matrix row(DType::f32, 1, config.vocab_size);
    for (std::int64_t v = 0; v < config.vocab_size; ++v) row.set(0, v, prefill_logits.get((s + 1) * prompt_len - 1, v));
    next[static_cast<std::size_t>(s)] = reference::greedy(row)[0];
    step_sequence[static_cast<std::size_t>(s)] = static_cast<std::int32_t>(s);
  }
  std::vector<std::int32_t> generated = {next[0]};  // sequence 0, for display
  start = std::chrono::steady_clock::now();
  for (std::int64_t step = 1; step < gen_len; ++step) {
    std::printf("\r  decode step %lld/%lld", static_cast<long long>(step), static_cast<long long>(gen_len - 1));
    std::fflush(stdout);
    next = reference::greedy(reference::model_forward(config, weights, next, step_sequence, caches));
    generated.push_back(next[0]);
  }
  const double decode_s = seconds_since(start);
  if (gen_len > 1) std::printf("\n");

  const double kv_bytes = 2.0 * layers * static_cast<double>(batch) * static_cast<double>(prompt_len + gen_len) *
                          static_cast<double>(config.num_kv_heads * config.head_dim) * 2.0;  // bf16 equivalent
  std::printf("weights %s (experts packed), KV cache %s (bf16 equivalent), built in %.1f s\n",
              format_bytes(static_cast<double>(weight_bytes(weights))).c_str(), format_bytes(kv_bytes).c_str(), build_s);
  std::printf("prefill %.1f ms (%lld tokens)", 1e3 * prefill_s, static_cast<long long>(batch * prompt_len));
  if (gen_len > 1)
    std::printf("; decode %.2f tokens/s, %.1f ms per output token", static_cast<double>(batch * (gen_len - 1)) / decode_s,
                1e3 * decode_s / static_cast<double>(gen_len - 1));
  std::ostringstream tokens;
  for (const std::int32_t t : generated) tokens << ' ' << t;
  std::printf("\nsequence 0 generated:%s\n", tokens.str().c_str());
  return 0;
}


// Bounds shared by the CPU and GPU runs, checked before any arithmetic on the sizes. maxbatch has no
// --batch (it finds the size), so only `run` checks the batch list.
void check_sizes(const Args& args, bool with_batch) {
  if (args.has("model") == args.has("checkpoint"))
    throw UsageError{"give exactly one of --model NAME (synthetic seeded weights) or --checkpoint DIR (samoyeds convert output)"};
  constexpr std::int64_t kMaxBatch = 65535, kMaxLength = 1 << 24;
  if (with_batch) {
    const std::vector<std::int64_t> batches = args.get_int_list("batch");
    if (batches.empty()) throw UsageError{"--batch needs at least one size"};
    for (const std::int64_t b : batches)
      if (b < 1 || b > kMaxBatch) throw UsageError{"--batch sizes must be in [1, " + std::to_string(kMaxBatch) + "]"};
  }
  const std::int64_t prompt_len = args.get_int("prompt-len"), gen_len = args.get_int("gen-len");
  if (prompt_len < 1 || gen_len < 1 || prompt_len > kMaxLength || gen_len > kMaxLength)
    throw UsageError{"--prompt-len and --gen-len must be in [1, " + std::to_string(kMaxLength) + "]"};
  if (args.has("layers") && args.get_int("layers") < 1) throw UsageError{"--layers must be at least 1"};
  const std::string graph = args.get("graph");
  if (graph != "on" && graph != "off") throw UsageError{"--graph must be on or off, got '" + graph + "'"};
  if (args.has("checkpoint") && args.has("pattern"))
    throw UsageError{"--pattern applies to synthetic models; a checkpoint keeps the pattern it was converted with"};
}

#if SAMOYEDS_WITH_CUDA
// --gpu-memory GB: a positive size in 10^9 bytes (the GPU runner checks it against the device).
double gpu_memory_gb(const Args& args) {
  const std::string text = args.get("gpu-memory");
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(value > 0) || !std::isfinite(value))
    throw UsageError{"--gpu-memory must be a positive size in GB (10^9 bytes), e.g. 85.5 for an 80 GB H100; got '" + text + "'"};
  return value;
}

bench::ModelRunOptions gpu_options(const Args& args) {
  bench::ModelRunOptions o;
  if (args.has("checkpoint")) {
    if (args.has("scale")) throw UsageError{"--scale applies to synthetic models only"};
    o.checkpoint = args.get("checkpoint");
    o.config = ConvertedCheckpoint::open(o.checkpoint).config();
  } else {
    o.config = model_from_args(args);
  }
  const std::int64_t layers = args.has("layers") ? args.get_int("layers") : 0;  // compared before narrowing
  if (layers < 0 || layers > o.config.num_layers)
    throw UsageError{"--layers must be in [1, " + std::to_string(o.config.num_layers) + "]"};
  o.layers = static_cast<int>(layers);
  o.batches = args.get_int_list("batch");
  o.prompt_len = args.get_int("prompt-len");
  o.gen_len = args.get_int("gen-len");
  if (o.prompt_len + o.gen_len > o.config.max_position_embeddings)
    throw UsageError{"--prompt-len + --gen-len = " + std::to_string(o.prompt_len + o.gen_len) + " exceeds " +
                     o.config.display_name + "'s " + std::to_string(o.config.max_position_embeddings) + " positions"};
  o.dense = args.flag("dense");
  o.compare = args.flag("compare");
  if (o.dense && o.compare) throw UsageError{"--dense runs the baseline alone and --compare runs both: give one"};
  o.graph = args.get("graph") == "on";  // on|off checked by check_sizes
  o.pattern = SparsityPattern::parse(args.get("pattern"));
  o.seed = static_cast<std::uint64_t>(args.get_int("seed"));
  o.out_path = args.get("out");
  if (args.has("gpu-memory")) o.gpu_memory_gb = gpu_memory_gb(args);
  return o;
}
#endif

int run_run(const Args& args) {
  check_sizes(args, true);
  if (!device_is_gpu(args)) {
    if (args.flag("dense") || args.flag("compare") || args.has("out") || args.has("gpu-memory"))
      throw UsageError{"--dense, --compare, --out and --gpu-memory need the GPU runner (a GPU machine)"};
    return run_on_cpu(args);
  }
#if SAMOYEDS_WITH_CUDA
  return bench::run_model(gpu_options(args));
#else
  SAMOYEDS_FAIL("this build has no CUDA support (", cuda_status(), ")");
#endif
}

int run_maxbatch(const Args& args) {
  check_sizes(args, false);
  if (!device_is_gpu(args)) {
    std::fprintf(stderr, "samoyeds maxbatch: needs an NVIDIA GPU: %s\n", cuda_status().c_str());
    return 1;
  }
#if SAMOYEDS_WITH_CUDA
  return bench::max_batch(gpu_options(args));
#else
  SAMOYEDS_FAIL("this build has no CUDA support (", cuda_status(), ")");
#endif
}

std::vector<Option> model_options(bool with_batch) {
  std::vector<Option> options = {
      {"model", "NAME", "a registered model with synthetic weights", ""},
      {"checkpoint", "DIR", "a directory written by `samoyeds convert`", ""},
      {"scale", "H,I", "synthetic models: hidden and expert widths (e.g. 256,512)", ""},
      {"layers", "N", "run only the first N layers", ""}};
  if (with_batch) options.push_back({"batch", "B[,B...]", "sequences (on a GPU a list runs each size)", "1"});
  std::vector<Option> rest = {
      {"prompt-len", "P", "prompt tokens per sequence", "128"},
      {"gen-len", "G", "tokens generated per sequence (the first by the prefill)", "32"},
      {"pattern", "N:M:V", "synthetic models: sparsity pattern of the experts", "1:2:128"},
      {"seed", "S", "random seed (weights and prompts)", "1"},
      {"dense", "", "GPU: the dense baseline alone (experts as W-hat through cuBLAS)", ""},
      {"compare", "", "GPU: Samoyeds and the dense baseline side by side, with ratios", ""},
      {"graph", "on|off", "GPU: decode steps of the Samoyeds path from CUDA graphs", "on"},
      {"out", "FILE", "GPU: append JSON Lines records to FILE", ""},
      {"gpu-memory", "GB", "GPU: run as if the GPU had GB (10^9 bytes) of memory, the rest held (85.5: an 80 GB H100)", ""},
      {"device", "auto|gpu|cpu", "where to run (auto: the GPU when there is one)", "auto"}};
  options.insert(options.end(), rest.begin(), rest.end());
  return options;
}

}  // namespace

Command run_command() {
  return Command{
      "run",
      "greedy generation with a whole model: prefill and decode speed, peak memory",
      "Builds a model from synthetic seeded weights (--model, optionally --scale H,I and --layers N for a\n"
      "prefix) or loads a converted checkpoint (--checkpoint), prefills a batch of seeded random prompts,\n"
      "then generates one token per sequence per step from the KV caches (greedy). Prints prefill time,\n"
      "decode tokens/s, time per output token (TPOT), peak GPU memory and sequence 0's tokens.\n"
      "On a GPU: synthetic weights are made on the device; decode steps replay a CUDA graph; --compare\n"
      "also runs the dense baseline on the same weights and prints the ratios; before any timing the\n"
      "first layer is checked against the other path. Without a GPU (or with --device cpu) it runs the\n"
      "CPU reference, one batch size (slow at real sizes: use --scale and --layers).",
      model_options(true), run_run};
}

Command maxbatch_command() {
  return Command{
      "maxbatch",
      "the largest batch that fits in GPU memory, planned and confirmed by a run",
      "Builds the model (--model or --checkpoint, --layers N for a prefix), plans the largest batch\n"
      "whose KV caches (prompt + generated positions) and workspace fit in the free GPU memory from exact\n"
      "sizes, then confirms it with a run (prefill and every decode step). --compare does the same for\n"
      "the dense baseline afterwards and prints the ratio; --dense runs the baseline alone.",
      model_options(false), run_maxbatch};
}

}  // namespace samoyeds::cli
