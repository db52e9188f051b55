// SPDX-License-Identifier: Apache-2.0
// Synthetic Hugging Face-style checkpoints: every tensor of a mapped family, seeded, sharded.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "io/json.h"
#include "io/tensor_dtype.h"
#include "core/parallel.h"
#include "io/file_util.h"
#include "model/random_weights.h"
#include "samoyeds/checkpoint.h"
#include "samoyeds/hf_names.h"

namespace samoyeds {

namespace fs = std::filesystem;

namespace {

enum class Init { linear, norm, bias };

struct PlannedTensor {
  std::string name;
  std::vector<std::int64_t> shape;  // [rows, cols], [n] for norms and biases, [E, in, out] for OpenMoE's experts
  Init init;
  std::int64_t fan_in = 0;          // linear: std 1/sqrt(fan_in) (0: the last dimension)
};

std::vector<PlannedTensor> plan_tensors(const ModelConfig& c) {
  const std::int64_t H = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  std::vector<PlannedTensor> out;
  auto linear = [&](const std::string& name, std::int64_t rows, std::int64_t cols) { out.push_back({name, {rows, cols}, Init::linear}); };
  // OpenMoE's MLPs have a gate projection of twice the width (SwiGLU halves).
  const std::int64_t gate_factor = c.activation == ExpertActivation::openmoe_swiglu ? 2 : 1;
  auto mlp = [&](const MlpTensorNames& n, std::int64_t width) {
    linear(n.gate, gate_factor * width, H);
    linear(n.up, width, H);
    linear(n.down, H, width);
  };
  linear(embedding_tensor_name(c), c.vocab_size, H);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerTensorNames n = layer_tensor_names(c, layer);
    out.push_back({n.input_norm, {H}, Init::norm});
    linear(n.q, q_dim, H);
    linear(n.k, kv_dim, H);
    linear(n.v, kv_dim, H);
    linear(n.o, H, q_dim);
    if (c.attention_bias) {
      out.push_back({n.q_bias, {q_dim}, Init::bias});
      out.push_back({n.k_bias, {kv_dim}, Init::bias});
      out.push_back({n.v_bias, {kv_dim}, Init::bias});
    }
    out.push_back({n.post_attention_norm, {H}, Init::norm});
    if (!c.is_moe_layer(layer)) {
      mlp(n.dense_mlp, c.dense_intermediate_size);
      continue;
    }
    linear(router_tensor_name(c, layer), c.num_experts, H);
    if (c.family == ModelFamily::openmoe) {  // fused and input-major: [E, in, out]
      const std::int64_t E = c.num_experts, I = c.intermediate_size;
      const FusedExpertTensorNames fused = openmoe_expert_tensor_names(c, layer);
      out.push_back({fused.wi_gate, {E, H, 2 * I}, Init::linear, H});
      out.push_back({fused.wi_up, {E, H, I}, Init::linear, H});
      out.push_back({fused.wo, {E, I, H}, Init::linear, I});
      out.push_back({n.extra_norm, {H}, Init::norm});
      mlp(n.extra_mlp, c.dense_intermediate_size);
      continue;
    }
    for (int e = 0; e < c.num_experts; ++e) mlp(expert_tensor_names(c, layer, e), c.intermediate_size);
    if (const auto shared = shared_expert_tensor_names(c, layer)) mlp(*shared, c.shared_intermediate_size);
    if (const auto gate = shared_gate_tensor_name(c, layer)) linear(*gate, 1, H);
  }
  out.push_back({final_norm_tensor_name(c), {H}, Init::norm});
  if (!c.tie_word_embeddings) linear(lm_head_tensor_name(c), c.vocab_size, H);
  return out;
}

// Row r draws from its own generator (seed, r), so rows fill in parallel and the result does not
// depend on the thread count. Written straight into the bytes the shard writer takes over (one copy
// of a tensor in memory: OpenMoE-34B's fused wi_gate alone is ~10 GB).
std::vector<std::uint8_t> make_tensor(const PlannedTensor& t, DType dtype, std::uint64_t seed) {
  const std::int64_t cols = t.shape.back();
  std::int64_t rows = 1;
  for (std::size_t d = 0; d + 1 < t.shape.size(); ++d) rows *= t.shape[d];
  const float mean = t.init == Init::norm ? 1.0f : 0.0f;
  const float fan_in = static_cast<float>(t.fan_in > 0 ? t.fan_in : cols);
  const float stddev = t.init == Init::linear ? 1.0f / std::sqrt(fan_in) : 0.1f;
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(rows * cols) * 2);
  detail::parallel_for(rows, 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      std::mt19937_64 rng(seed * 1000003 + static_cast<std::uint64_t>(r));
      std::normal_distribution<float> normal(mean, stddev);
      std::uint8_t* row = bytes.data() + static_cast<std::size_t>(r * cols) * 2;
      for (std::int64_t c = 0; c < cols; ++c) {
        const std::uint16_t bits = float_to_half(dtype, normal(rng));
        std::memcpy(row + 2 * c, &bits, 2);
      }
    }
  });
  return bytes;
}

}  // namespace

void write_synthetic_checkpoint(const ModelConfig& config, const std::string& dir, DType dtype, std::uint64_t seed,
                                std::uint64_t max_shard_bytes, const std::function<void(const std::string&)>& progress) {
  SAMOYEDS_CHECK(is_half_precision(dtype), "synthetic checkpoints are bf16 or fp16, got ", dtype_name(dtype));
  SAMOYEDS_CHECK(max_shard_bytes >= 1, "the shard size must be positive");
  const std::string config_json = hf_config_json(config, dtype);  // validates
  const std::vector<PlannedTensor> tensors = plan_tensors(config);
  std::error_code ec;
  const fs::path target = detail::normalized_dir(dir);
  SAMOYEDS_CHECK(!fs::exists(target, ec), "synthetic checkpoint: '", dir, "' exists; choose a new directory");

  // Shards are planned up front so that their names can say "of N".
  std::vector<std::size_t> shard_of(tensors.size());
  std::size_t num_shards = 1;
  std::uint64_t bytes_in_shard = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    std::uint64_t bytes = dtype_size(dtype);
    for (const std::int64_t d : tensors[i].shape) bytes *= static_cast<std::uint64_t>(d);
    if (bytes_in_shard > 0 && bytes_in_shard + bytes > max_shard_bytes) {
      ++num_shards;
      bytes_in_shard = 0;
    }
    bytes_in_shard += bytes;
    shard_of[i] = num_shards - 1;
  }
  auto shard_name = [&](std::size_t s) {
    if (num_shards == 1) return std::string("model.safetensors");
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, num_shards);
    return std::string(name);
  };

  const fs::path tmp = detail::temporary_sibling(target);
  fs::remove_all(tmp, ec);
  SAMOYEDS_CHECK(fs::create_directories(tmp, ec), "synthetic checkpoint: cannot create '", tmp.string(), "': ", ec.message());
  try {
    json::Value weight_map = json::Value::object();
    SafetensorsWriter writer;
    std::size_t shard = 0;
    for (std::size_t i = 0; i <= tensors.size(); ++i) {
      if (i == tensors.size() || shard_of[i] != shard) {
        writer.write((tmp / shard_name(shard)).string());
        if (progress) progress("wrote " + shard_name(shard) + " (" + std::to_string(writer.num_tensors()) + " tensors)");
        writer = SafetensorsWriter();
        if (i == tensors.size()) break;
        shard = shard_of[i];
      }
      writer.add_owned(tensors[i].name, detail::safetensors_dtype_of(dtype), tensors[i].shape,
                       make_tensor(tensors[i], dtype, seed * 7919 + i));
      weight_map.set(tensors[i].name, json::Value(shard_name(shard)));
    }
    if (num_shards > 1) {
      json::Value index = json::Value::object();
      index.set("metadata", json::Value::object());
      index.set("weight_map", std::move(weight_map));
      detail::write_text_file((tmp / "model.safetensors.index.json").string(), json::dump(index));
    }
    detail::write_text_file((tmp / "config.json").string(), config_json);
    detail::fsync_directory(tmp);
    fs::rename(tmp, target);
    detail::fsync_directory(target.has_parent_path() ? target.parent_path() : fs::path("."));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace samoyeds
