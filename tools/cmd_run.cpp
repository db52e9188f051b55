// SPDX-License-Identifier: Apache-2.0
// `samoyeds run`: greedy generation with a whole model (synthetic seeded weights or a converted
// checkpoint): prefill of a batch of prompts, then one token per sequence per step from the KV caches.
// This build runs it on the CPU reference (reference::model_forward); the GPU runner is not written yet.
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>

#include "cli.h"
#include "samoyeds/convert.h"
#include "samoyeds/reference.h"

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

int run_run(const Args& args) {
  if (args.has("model") == args.has("checkpoint"))
    throw UsageError{"give exactly one of --model NAME (synthetic seeded weights) or --checkpoint DIR (samoyeds convert output)"};
  const std::int64_t batch = args.get_int("batch"), prompt_len = args.get_int("prompt-len"), gen_len = args.get_int("gen-len");
  if (batch < 1 || prompt_len < 1 || gen_len < 1) throw UsageError{"--batch, --prompt-len and --gen-len must be at least 1"};
  constexpr std::int64_t kMaxBatch = 1 << 16, kMaxLength = 1 << 24;  // bounds before any arithmetic on them
  if (batch > kMaxBatch || prompt_len > kMaxLength || gen_len > kMaxLength)
    throw UsageError{"--batch is at most " + std::to_string(kMaxBatch) + ", --prompt-len and --gen-len at most " +
                     std::to_string(kMaxLength)};
  const std::int64_t layers_wanted = args.has("layers") ? args.get_int("layers") : 0;  // 0: every layer
  if (args.has("layers") && layers_wanted < 1) throw UsageError{"--layers must be at least 1"};
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
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<std::int32_t> token(0, static_cast<std::int32_t>(config.vocab_size - 1));
  std::vector<std::int32_t> ids, sequence;
  for (std::int64_t s = 0; s < batch; ++s)
    for (std::int64_t p = 0; p < prompt_len; ++p) ids.push_back(token(rng)), sequence.push_back(static_cast<std::int32_t>(s));

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

}  // namespace

Command run_command() {
  return Command{
      "run",
      "greedy generation with a whole model (CPU reference for now)",
      "Builds a model from synthetic seeded weights (--model, optionally --scale H,I and --layers N for a\n"
      "prefix) or loads a converted checkpoint (--checkpoint), prefills a batch of seeded random prompts,\n"
      "then generates one token per sequence per step from the KV caches (greedy). Prints prefill time,\n"
      "decode tokens/s, time per output token, weight and KV-cache bytes and sequence 0's tokens.\n"
      "This build runs on the CPU reference (slow at real sizes: use --scale/--layers); the GPU runner\n"
      "is not written yet.",
      {{"model", "NAME", "a registered model with synthetic weights", ""},
       {"checkpoint", "DIR", "a directory written by `samoyeds convert`", ""},
       {"scale", "H,I", "synthetic models: hidden and expert widths (e.g. 256,512)", ""},
       {"layers", "N", "run only the first N layers", ""},
       {"batch", "B", "sequences", "1"},
       {"prompt-len", "P", "prompt tokens per sequence", "8"},
       {"gen-len", "G", "tokens to generate per sequence", "8"},
       {"pattern", "N:M:V", "synthetic models: sparsity pattern of the experts", "1:2:128"},
       {"seed", "S", "random seed (weights and prompts)", "1"}},
      run_run};
}

}  // namespace samoyeds::cli
