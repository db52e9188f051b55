// SPDX-License-Identifier: Apache-2.0
// ModelConfig: layer layout, validation, the registry of the seven evaluated models and describe().
// Every registry value is checked against a public config.json or modeling file (docs/models.md).
#include "samoyeds/model_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "samoyeds/error.h"

namespace samoyeds {

namespace {

// Kernels index rows and columns with 32-bit integers; larger sizes are a typo, not a model.
constexpr std::int64_t kMaxDim = std::numeric_limits<std::int32_t>::max();

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string label(const ModelConfig& c) {
  return "model config '" + (c.name.empty() ? std::string("<unnamed>") : c.name) + "'";
}

// "0-31", "5, 11, 17, 23", "1-27": consecutive runs collapse so 56-layer models stay on one line.
std::string format_layers(const std::vector<int>& layers) {
  if (layers.empty()) return "none";
  std::ostringstream out;
  for (std::size_t i = 0; i < layers.size();) {
    std::size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    if (i > 0) out << ", ";
    out << layers[i];
    if (j > i) out << "-" << layers[j];
    i = j + 1;
  }
  return out.str();
}

std::string human_count(double count) {
  char buffer[32];
  if (count >= 1e9) {
    std::snprintf(buffer, sizeof(buffer), "%.1f B", count / 1e9);
  } else if (count >= 1e6) {
    std::snprintf(buffer, sizeof(buffer), "%.1f M", count / 1e6);
  } else if (count >= 1e3) {
    std::snprintf(buffer, sizeof(buffer), "%.1f K", count / 1e3);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.0f", count);
  }
  return buffer;
}

std::string human_bytes(double bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f GB", bytes / 1e9);
  return buffer;
}

// --- the registry --------------------------------------------------------------------------------

ModelConfig mixtral(std::string name, std::string display_name, std::int64_t hidden_size,
                    std::int64_t intermediate_size, int num_layers, int num_attention_heads,
                    std::int64_t max_position_embeddings) {
  ModelConfig c;
  c.name = std::move(name);
  c.display_name = std::move(display_name);
  c.family = ModelFamily::mixtral;
  c.hidden_size = hidden_size;
  c.intermediate_size = intermediate_size;
  c.num_experts = 8;
  c.top_k = 2;
  c.renormalize = true;
  c.num_layers = num_layers;
  c.num_attention_heads = num_attention_heads;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 32000;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 1e6;
  c.max_position_embeddings = max_position_embeddings;
  return c;
}

ModelConfig deepseek_moe_16b() {
  ModelConfig c;
  c.name = "deepseek-moe-16b";
  c.display_name = "DeepSeek-MoE-16B";
  c.family = ModelFamily::deepseek_moe;
  c.hidden_size = 2048;
  c.intermediate_size = 1408;
  c.num_experts = 64;
  c.top_k = 6;
  c.renormalize = false;  // norm_topk_prob = false
  c.num_shared_experts = 2;
  c.shared_intermediate_size = 2 * 1408;
  c.num_layers = 28;
  c.first_dense_layers = 1;  // first_k_dense_replace
  c.dense_intermediate_size = 10944;
  c.num_attention_heads = 16;
  c.num_kv_heads = 16;
  c.head_dim = 128;
  c.vocab_size = 102400;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 4096;
  return c;
}

ModelConfig qwen15_moe_a27b() {
  ModelConfig c;
  c.name = "qwen1.5-moe-a2.7b";
  c.display_name = "Qwen1.5-MoE-A2.7B";
  c.family = ModelFamily::qwen2_moe;
  c.hidden_size = 2048;
  c.intermediate_size = 1408;
  c.num_experts = 60;
  c.top_k = 4;
  c.renormalize = false;  // norm_topk_prob = false
  c.num_shared_experts = 1;
  c.shared_intermediate_size = 5632;
  c.shared_expert_sigmoid_gate = true;
  c.num_layers = 24;
  c.num_attention_heads = 16;
  c.num_kv_heads = 16;
  c.head_dim = 128;
  c.vocab_size = 151936;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.max_position_embeddings = 8192;
  c.attention_bias = true;
  return c;
}

ModelConfig minicpm_moe_8x2b() {
  ModelConfig c;
  c.name = "minicpm-moe-8x2b";
  c.display_name = "MiniCPM-MoE-8x2B";
  c.family = ModelFamily::minicpm_moe;
  c.hidden_size = 2304;
  c.intermediate_size = 5760;
  c.num_experts = 8;
  c.top_k = 2;
  c.renormalize = true;
  c.num_layers = 40;
  c.num_attention_heads = 36;
  c.num_kv_heads = 36;
  c.head_dim = 64;
  c.vocab_size = 122753;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = true;
  c.scale_emb = 12.0;
  c.scale_depth = 1.4;
  c.dim_model_base = 256;
  return c;
}

ModelConfig openmoe(std::string name, std::string display_name, std::int64_t hidden_size,
                    std::int64_t intermediate_size, int num_layers, int moe_layer_interval) {
  ModelConfig c;
  c.name = std::move(name);
  c.display_name = std::move(display_name);
  c.family = ModelFamily::openmoe;
  c.hidden_size = hidden_size;
  c.intermediate_size = intermediate_size;
  c.num_experts = 32;
  c.top_k = 2;
  c.activation = ExpertActivation::openmoe_swiglu;
  c.renormalize = false;  // combine weights are the raw softmax probabilities
  c.capacity_limited = true;
  c.capacity_factor = 2.0f;
  c.min_capacity = 4;
  c.num_layers = num_layers;
  c.moe_layer_interval = moe_layer_interval;
  c.moe_layer_phase = moe_layer_interval - 1;
  c.dense_intermediate_size = intermediate_size;
  c.extra_dense_mlp = true;
  c.num_attention_heads = 24;
  c.num_kv_heads = 24;
  c.head_dim = 128;
  c.vocab_size = 256384;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 2048;
  c.attention_scale = 1.0;
  return c;
}

std::vector<ModelConfig> build_registry() {
  std::vector<ModelConfig> models = {
      mixtral("mixtral-8x7b", "Mixtral-8x7B", 4096, 14336, 32, 32, 32768),
      mixtral("mixtral-8x22b", "Mixtral-8x22B", 6144, 16384, 56, 48, 65536),
      deepseek_moe_16b(),
      qwen15_moe_a27b(),
      minicpm_moe_8x2b(),
      openmoe("openmoe-8b", "OpenMoE-8B", 2048, 8192, 24, 6),
      openmoe("openmoe-34b", "OpenMoE-34B", 3072, 12288, 32, 4),
  };
  for (const ModelConfig& m : models) m.validate();
  return models;
}

}  // namespace

// --- ModelConfig -----------------------------------------------------------------------------------

bool ModelConfig::is_moe_layer(int layer) const {
  SAMOYEDS_CHECK(layer >= 0 && layer < num_layers, label(*this), ": layer ", layer, " is out of range; the model has ",
                 num_layers, " layers (0..", num_layers - 1, ")");
  if (layer < first_dense_layers) return false;
  if (moe_layer_interval < 1 || layer % moe_layer_interval != moe_layer_phase) return false;
  return std::find(dense_layers.begin(), dense_layers.end(), layer) == dense_layers.end();
}

int ModelConfig::num_moe_layers() const {
  int count = 0;
  for (int layer = 0; layer < num_layers; ++layer) count += is_moe_layer(layer) ? 1 : 0;
  return count;
}

std::vector<int> ModelConfig::moe_layers() const {
  std::vector<int> layers;
  for (int layer = 0; layer < num_layers; ++layer) {
    if (is_moe_layer(layer)) layers.push_back(layer);
  }
  return layers;
}

std::int64_t ModelConfig::expert_gate_rows() const {
  return activation == ExpertActivation::openmoe_swiglu ? 2 * intermediate_size : intermediate_size;
}

double ModelConfig::softmax_scale() const {
  if (attention_scale > 0.0) return attention_scale;
  SAMOYEDS_CHECK(head_dim > 0, label(*this), ": head_dim must be positive to derive the attention scale, got ",
                 head_dim);
  return 1.0 / std::sqrt(static_cast<double>(head_dim));
}

void ModelConfig::validate() const {
  const std::string who = label(*this);
  auto check_dim = [&](std::int64_t value, const char* field) {
    SAMOYEDS_CHECK(value > 0 && value <= kMaxDim, who, ": ", field, " must be in [1, ", kMaxDim, "], got ", value);
  };
  auto check_positive_finite = [&](double value, const char* field) {
    SAMOYEDS_CHECK(std::isfinite(value) && value > 0.0, who, ": ", field, " must be a positive finite number, got ",
                   value);
  };

  // Routed experts.
  check_dim(hidden_size, "hidden_size (H)");
  check_dim(intermediate_size, "intermediate_size (I, one routed expert)");
  SAMOYEDS_CHECK(num_experts >= 1, who, ": num_experts (E) must be at least 1, got ", num_experts,
                 " (a model without routed experts is not an MoE model)");
  SAMOYEDS_CHECK(top_k >= 1 && top_k <= num_experts, who, ": top_k must be in [1, num_experts = ", num_experts,
                 "], got ", top_k);
  SAMOYEDS_CHECK(activation == ExpertActivation::silu_gated || activation == ExpertActivation::openmoe_swiglu, who,
                 ": activation has an unknown value ", static_cast<int>(activation));
  if (capacity_limited) {
    SAMOYEDS_CHECK(std::isfinite(capacity_factor) && capacity_factor > 0.0f, who,
                   ": capacity_factor must be a positive finite number when capacity_limited is set, got ",
                   capacity_factor);
    SAMOYEDS_CHECK(min_capacity >= 0, who, ": min_capacity must be >= 0, got ", min_capacity);
  }

  // Shared experts.
  SAMOYEDS_CHECK(num_shared_experts >= 0, who, ": num_shared_experts must be >= 0, got ", num_shared_experts);
  if (num_shared_experts > 0) {
    check_dim(shared_intermediate_size, "shared_intermediate_size (width of the fused shared expert)");
  } else {
    SAMOYEDS_CHECK(shared_intermediate_size == 0, who, ": shared_intermediate_size is ", shared_intermediate_size,
                   " but num_shared_experts is 0; set both or neither");
    SAMOYEDS_CHECK(!shared_expert_sigmoid_gate, who,
                   ": shared_expert_sigmoid_gate is set but there is no shared expert (num_shared_experts = 0)");
  }

  // Layer layout.
  SAMOYEDS_CHECK(num_layers >= 1, who, ": num_layers must be at least 1, got ", num_layers);
  SAMOYEDS_CHECK(first_dense_layers >= 0 && first_dense_layers <= num_layers, who,
                 ": first_dense_layers must be in [0, num_layers = ", num_layers, "], got ", first_dense_layers);
  SAMOYEDS_CHECK(moe_layer_interval >= 1, who, ": moe_layer_interval must be at least 1, got ", moe_layer_interval);
  SAMOYEDS_CHECK(moe_layer_phase >= 0 && moe_layer_phase < moe_layer_interval, who,
                 ": moe_layer_phase must be in [0, moe_layer_interval = ", moe_layer_interval, "), got ",
                 moe_layer_phase);
  for (int layer : dense_layers) {
    SAMOYEDS_CHECK(layer >= 0 && layer < num_layers, who, ": dense_layers names layer ", layer,
                   ", outside [0, num_layers = ", num_layers, ")");
  }
  const int moe_count = num_moe_layers();
  SAMOYEDS_CHECK(moe_count >= 1, who, ": no layer is an MoE layer (num_layers ", num_layers, ", first_dense_layers ",
                 first_dense_layers, ", moe_layer_interval ", moe_layer_interval, ", moe_layer_phase ", moe_layer_phase,
                 ", ", dense_layers.size(), " dense_layers)");
  SAMOYEDS_CHECK(dense_intermediate_size >= 0 && dense_intermediate_size <= kMaxDim, who,
                 ": dense_intermediate_size must be in [0, ", kMaxDim, "], got ", dense_intermediate_size);
  if (moe_count < num_layers) {
    SAMOYEDS_CHECK(dense_intermediate_size > 0, who, ": ", num_layers - moe_count,
                   " layers are dense but dense_intermediate_size is 0; set the FFN width of the dense layers");
  }
  if (extra_dense_mlp) {
    SAMOYEDS_CHECK(dense_intermediate_size > 0, who,
                   ": extra_dense_mlp is set but dense_intermediate_size is 0; set the extra MLP's width");
  }

  // Attention, embeddings, norms.
  SAMOYEDS_CHECK(num_attention_heads >= 1, who, ": num_attention_heads must be at least 1, got ", num_attention_heads);
  SAMOYEDS_CHECK(num_kv_heads >= 1 && num_kv_heads <= num_attention_heads && num_attention_heads % num_kv_heads == 0,
                 who, ": num_kv_heads must divide num_attention_heads = ", num_attention_heads, ", got ", num_kv_heads);
  check_dim(head_dim, "head_dim");
  check_dim(vocab_size, "vocab_size");
  check_positive_finite(rms_norm_eps, "rms_norm_eps");
  check_positive_finite(rope_theta, "rope_theta");
  check_dim(max_position_embeddings, "max_position_embeddings");
  SAMOYEDS_CHECK(sliding_window >= 0, who, ": sliding_window must be >= 0 (0 = full attention), got ", sliding_window);
  SAMOYEDS_CHECK(std::isfinite(attention_scale) && attention_scale >= 0.0, who,
                 ": attention_scale must be >= 0 (0 = 1/sqrt(head_dim)), got ", attention_scale);
  check_positive_finite(scale_emb, "scale_emb");
  SAMOYEDS_CHECK(std::isfinite(scale_depth) && scale_depth >= 0.0, who,
                 ": scale_depth must be >= 0 (0 = no residual scaling), got ", scale_depth);
  SAMOYEDS_CHECK(dim_model_base >= 0 && dim_model_base <= kMaxDim, who,
                 ": dim_model_base must be in [0, ", kMaxDim, "] (0 = no logit scaling), got ", dim_model_base);
  if (family == ModelFamily::minicpm_moe) {
    // MiniCPM always scales the residual branches and the logits; 0 would divide by zero there.
    SAMOYEDS_CHECK(scale_depth > 0.0 && dim_model_base > 0, who,
                   ": MiniCPM needs scale_depth > 0 and dim_model_base > 0, got ", scale_depth, " and ",
                   dim_model_base);
  }
}

// --- registry ----------------------------------------------------------------------------------------

const std::vector<ModelConfig>& model_registry() {
  static const std::vector<ModelConfig> models = build_registry();
  return models;
}

const ModelConfig& find_model(std::string_view name) {
  const std::string wanted = lower(name);
  std::string known;
  for (const ModelConfig& m : model_registry()) {
    if (wanted == m.name || wanted == lower(m.display_name)) return m;
    known += known.empty() ? "" : ", ";
    known += m.name;
  }
  SAMOYEDS_FAIL("unknown model '", name, "'; known models: ", known,
                " (names are case-insensitive; display names such as 'Mixtral-8x7B' work too)");
}

const char* family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::mixtral: return "mixtral";
    case ModelFamily::deepseek_moe: return "deepseek_moe";
    case ModelFamily::qwen2_moe: return "qwen2_moe";
    case ModelFamily::minicpm_moe: return "minicpm_moe";
    case ModelFamily::openmoe: return "openmoe";
  }
  SAMOYEDS_FAIL("unknown ModelFamily value ", static_cast<int>(family));
}

const char* activation_name(ExpertActivation activation) {
  switch (activation) {
    case ExpertActivation::silu_gated: return "silu_gated";
    case ExpertActivation::openmoe_swiglu: return "openmoe_swiglu";
  }
  SAMOYEDS_FAIL("unknown ExpertActivation value ", static_cast<int>(activation));
}

// --- describe ----------------------------------------------------------------------------------------

std::string describe(const ModelConfig& c) {
  c.validate();
  std::ostringstream out;
  const std::int64_t H = c.hidden_size, I = c.intermediate_size;
  out << c.display_name << " (" << c.name << "), family " << family_name(c.family) << "\n";

  out << "  routed experts : E = " << c.num_experts << ", top_k = " << c.top_k << ", H = " << H << ", I = " << I
      << ", activation " << activation_name(c.activation);
  if (c.activation == ExpertActivation::openmoe_swiglu) out << " (gate rows 2I = " << 2 * I << ")";
  out << "\n";

  out << "  router         : fp32 softmax over E, top-" << c.top_k << ", "
      << (c.renormalize ? "weights renormalised to sum 1" : "raw probabilities as weights");
  if (c.capacity_limited) {
    out << ", capacity factor " << c.capacity_factor << " (min " << c.min_capacity << ") with token dropping";
  }
  out << "\n";

  out << "  shared experts : ";
  if (c.num_shared_experts == 0) {
    out << "none";
  } else {
    out << c.num_shared_experts << ", fused width " << c.shared_intermediate_size << ", on every token";
    if (c.shared_expert_sigmoid_gate) out << ", output x sigmoid(gate . x)";
  }
  out << "\n";

  const std::vector<int> moe = c.moe_layers();
  out << "  layers         : " << c.num_layers << " (" << moe.size() << " MoE: " << format_layers(moe) << ")";
  if (static_cast<int>(moe.size()) < c.num_layers) out << ", dense FFN width " << c.dense_intermediate_size;
  out << "\n";
  if (c.extra_dense_mlp) {
    out << "  extra MLP      : every MoE layer adds RMSNorm + dense MLP of width " << c.dense_intermediate_size << "\n";
  }

  out << "  attention      : " << c.num_attention_heads << " heads, " << c.num_kv_heads << " KV heads, head_dim "
      << c.head_dim << ", RoPE theta " << c.rope_theta << ", max positions " << c.max_position_embeddings
      << ", softmax scale " << c.softmax_scale() << (c.attention_bias ? ", q/k/v bias" : "");
  if (c.sliding_window > 0) out << ", sliding window " << c.sliding_window;
  out << "\n";
  out << "  embeddings     : vocab " << c.vocab_size << ", " << (c.tie_word_embeddings ? "tied" : "untied")
      << " LM head, RMSNorm eps " << c.rms_norm_eps << "\n";
  if (c.family == ModelFamily::minicpm_moe) {
    out << "  MiniCPM scaling: scale_emb " << c.scale_emb << ", scale_depth " << c.scale_depth << ", dim_model_base "
        << c.dim_model_base << "\n";
  }

  // Parameter counts in double: the products of four int32-sized factors can exceed int64.
  const double per_expert = static_cast<double>(c.expert_gate_rows() + I) * H + static_cast<double>(H) * I;
  const double shared_gate_rows = c.activation == ExpertActivation::openmoe_swiglu
                                      ? 2.0 * static_cast<double>(c.shared_intermediate_size)
                                      : static_cast<double>(c.shared_intermediate_size);
  const double shared = (shared_gate_rows + 2.0 * static_cast<double>(c.shared_intermediate_size)) * H;
  const double routed_total = per_expert * c.num_experts * static_cast<double>(moe.size());
  const double shared_total = shared * static_cast<double>(moe.size());
  out << "  expert weights : " << human_count(per_expert) << " parameters per routed expert, "
      << human_count(routed_total) << " routed";
  if (c.num_shared_experts > 0) out << " + " << human_count(shared_total) << " shared";
  out << " (" << human_bytes(2.0 * (routed_total + shared_total)) << " in bf16)\n";
  return out.str();
}

}  // namespace samoyeds
