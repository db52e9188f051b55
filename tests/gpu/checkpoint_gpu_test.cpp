// SPDX-License-Identifier: Apache-2.0
// Converted checkpoints on the GPU: a synthetic Hugging Face checkpoint in a family's naming is
// written, converted, and its MoE layer and whole model run on the GPU against the CPU reference on
// the same converted weights. The layer check uses the reference on the GPU's routing (near ties may
// route differently; moe_layer_test.cpp has the rationale and the 2^-7 tolerance); the model config
// selects every expert (E = top_k), so the whole-model check cannot flip a choice either.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "samoyeds/checkpoint.h"
#include "samoyeds/convert.h"
#include "samoyeds/gpu_model.h"
#include "samoyeds/moe_layer.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("samoyeds-gpu-ckpt-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  return dir;
}

class ConvertedOnGpu : public ::testing::TestWithParam<const char*> {};

TEST_P(ConvertedOnGpu, LayerAndModelMatchReference) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  ModelConfig config = scaled_config(find_model(GetParam()), 256, 384);
  config.num_experts = config.top_k;
  config.num_layers = 2;
  config.vocab_size = 1001;
  config.num_attention_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 64;  // = H / heads, as the Hugging Face configs of these families imply
  config.validate();
  const std::uint64_t seed = 960;
  SCOPED_TRACE(testing::seed_trace(seed) + ", " + config.name);
  const fs::path hf = fresh_dir(std::string(GetParam()) + "-hf"), out = fresh_dir(std::string(GetParam()) + "-out");
  write_synthetic_checkpoint(config, hf.string(), DType::bf16, seed);
  ConvertOptions options;
  options.in_dir = hf.string();
  options.out_dir = out.string();
  convert_checkpoint(options);
  const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
  const ModelConfig& c = ck.config();

  // One MoE layer.
  const int layer = c.moe_layers().front();
  const PackedMoeWeights moe = ck.moe_layer(layer);
  gpu::MoeLayer gpu_layer(c, moe);
  const std::int64_t T = 37;
  const Matrix x = testing::random_normal_matrix(DType::bf16, T, c.hidden_size, seed + 1);
  testing::DeviceBuffer dx(x.data(), x.bytes()), dy(x.bytes());
  dy.poison();
  gpu_layer.forward(dx.get(), dy.get(), T);
  const Matrix want = reference::moe_layer_routed(c, moe, x, gpu_layer.last_routing());
  const auto got = dy.to_host<std::uint16_t>();
  double max_ref = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < c.hidden_size; ++h) max_ref = std::max(max_ref, std::fabs(double(want.get(t, h))));
  std::int64_t bad = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < c.hidden_size; ++h) {
      const double g = half_to_float(DType::bf16, got[static_cast<std::size_t>(t * c.hidden_size + h)]), w = want.get(t, h);
      if (!(std::fabs(g - w) <= std::ldexp(std::fabs(w), -7) + std::ldexp(max_ref, -7)) && bad++ < 3)
        ADD_FAILURE() << "layer output (" << t << ", " << h << "): got " << g << ", want " << w;
    }
  EXPECT_GT(max_ref, 0.0);

  // The whole model: every token's logits of a prefill of 2 x 21 tokens.
  const ModelWeights weights = ck.model();
  gpu::Model model(c, weights);
  const int B = 2;
  const std::int64_t P = 21;
  model.start(B, P);
  const std::vector<std::int32_t> ids = random_token_ids(B * P, c.vocab_size, seed + 2);
  std::vector<std::int32_t> sequence;
  for (int b = 0; b < B; ++b) sequence.insert(sequence.end(), P, b);
  const Matrix gpu_logits = model.forward(ids, true);
  std::vector<reference::KvCache> caches = reference::make_kv_caches(c, weights, B, P);
  const Matrix cpu_logits = reference::model_forward(c, weights, ids, sequence, caches);
  double logit_max = 0, worst = 0;
  for (std::int64_t r = 0; r < cpu_logits.rows(); ++r)
    for (std::int64_t v = 0; v < cpu_logits.cols(); ++v) logit_max = std::max(logit_max, std::fabs(double(cpu_logits.get(r, v))));
  for (std::int64_t r = 0; r < cpu_logits.rows(); ++r)
    for (std::int64_t v = 0; v < cpu_logits.cols(); ++v) {
      const double err = std::fabs(double(gpu_logits.get(r, v)) - cpu_logits.get(r, v));
      worst = std::isfinite(err) ? std::max(worst, err) : INFINITY;
    }
  EXPECT_GT(logit_max, 0.0);
  EXPECT_LE(worst, 0x1p-5 * logit_max) << "logits: max |gpu - cpu| " << worst << " of max |logit| " << logit_max;
  fs::remove_all(hf);
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(Families, ConvertedOnGpu, ::testing::Values("mixtral-8x7b", "qwen1.5-moe-a2.7b"),
                         [](const auto& info) { return std::string(info.param).substr(0, 4); });

}  // namespace
}  // namespace samoyeds
