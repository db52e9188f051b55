// SPDX-License-Identifier: Apache-2.0
// Hugging Face config.json -> ModelConfig for the five supported families. Absent optional fields take
// the defaults of the family's own config class, so a file means here what it means to transformers.
// Settings that would change the math but are not modelled (rope_scaling, sliding windows, other
// scoring functions) are rejected rather than ignored.
#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "io/json.h"
#include "samoyeds/error.h"
#include "samoyeds/model_config.h"

namespace samoyeds {

namespace {

using json::Value;

// A config.json is a few kilobytes; anything this large is most likely a weights file passed by mistake.
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}


// Typed access to the top-level members with errors that name the field. null counts as absent,
// as it does for transformers (e.g. "n_shared_experts": null, "head_dim": null).
class Fields {
 public:
  explicit Fields(const Value& root) : root_(root) {}

  const Value* find(std::string_view key) const {
    const Value* value = root_.find(key);
    return value != nullptr && !value->is_null() ? value : nullptr;
  }
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // The first present key of several spellings (OpenMoE's HF and ColossalAI configs differ); "" if none.
  std::string_view first_of(std::initializer_list<std::string_view> keys) const {
    for (std::string_view key : keys) {
      if (has(key)) return key;
    }
    return {};
  }

  std::int64_t int64(std::string_view key, std::int64_t fallback) const {
    const Value* value = find(key);
    if (value == nullptr) return fallback;
    SAMOYEDS_CHECK(value->is_number(), "config.json: field \"", key, "\" must be an integer, got ",
                   json::kind_name(value->kind()));
    try {
      return value->as_int();
    } catch (const Error&) {
      SAMOYEDS_FAIL("config.json: field \"", key, "\" must be an integer, got ", value->as_number());
    }
  }
  std::int64_t int64(std::string_view key) const {
    SAMOYEDS_CHECK(has(key), "config.json: required field \"", key, "\" is missing");
    return int64(key, 0);
  }

  int int32(std::string_view key, int fallback) const { return narrow(key, int64(key, fallback)); }
  int int32(std::string_view key) const { return narrow(key, int64(key)); }

  double number(std::string_view key, double fallback) const {
    const Value* value = find(key);
    if (value == nullptr) return fallback;
    SAMOYEDS_CHECK(value->is_number(), "config.json: field \"", key, "\" must be a number, got ",
                   json::kind_name(value->kind()));
    return value->as_number();
  }

  bool boolean(std::string_view key, bool fallback) const {
    const Value* value = find(key);
    if (value == nullptr) return fallback;
    SAMOYEDS_CHECK(value->kind() == Value::Kind::boolean, "config.json: field \"", key,
                   "\" must be true or false, got ", json::kind_name(value->kind()));
    return value->as_bool();
  }

  std::string string(std::string_view key, std::string fallback) const {
    const Value* value = find(key);
    if (value == nullptr) return fallback;
    SAMOYEDS_CHECK(value->is_string(), "config.json: field \"", key, "\" must be a string, got ",
                   json::kind_name(value->kind()));
    return value->as_string();
  }

  std::vector<std::string> strings(std::string_view key) const {
    std::vector<std::string> out;
    const Value* value = find(key);
    if (value == nullptr) return out;
    SAMOYEDS_CHECK(value->is_array(), "config.json: field \"", key, "\" must be an array of strings, got ",
                   json::kind_name(value->kind()));
    for (const Value& item : value->as_array()) {
      SAMOYEDS_CHECK(item.is_string(), "config.json: field \"", key, "\" must be an array of strings, but holds ",
                     kind_name(item.kind()));
      out.push_back(item.as_string());
    }
    return out;
  }

  std::vector<int> ints(std::string_view key) const {
    std::vector<int> out;
    const Value* value = find(key);
    if (value == nullptr) return out;
    SAMOYEDS_CHECK(value->is_array(), "config.json: field \"", key, "\" must be an array of integers, got ",
                   json::kind_name(value->kind()));
    for (const Value& item : value->as_array()) {
      SAMOYEDS_CHECK(item.is_number(), "config.json: field \"", key, "\" must be an array of integers, but holds ",
                     kind_name(item.kind()));
      std::int64_t number = 0;
      try {
        number = item.as_int();
      } catch (const Error&) {
        SAMOYEDS_FAIL("config.json: field \"", key, "\" must be an array of integers, but holds ", item.as_number());
      }
      out.push_back(narrow(key, number));
    }
    return out;
  }

  // Names every missing field at once, so one run tells the user everything to add.
  void require(ModelFamily family, std::initializer_list<std::initializer_list<std::string_view>> groups) const {
    std::string missing;
    for (const auto& spellings : groups) {
      bool found = false;
      for (std::string_view key : spellings) found = found || has(key);
      if (found) continue;
      missing += missing.empty() ? "" : ", ";
      std::string alternatives;
      for (std::string_view key : spellings) {
        alternatives += alternatives.empty() ? "" : " or ";
        alternatives.append("\"").append(key).append("\"");
      }
      missing += alternatives;
    }
    SAMOYEDS_CHECK(missing.empty(), "config.json (", family_name(family), "): required fields are missing: ", missing);
  }

 private:
  static int narrow(std::string_view key, std::int64_t value) {
    SAMOYEDS_CHECK(value >= INT_MIN && value <= INT_MAX, "config.json: field \"", key, "\" = ", value,
                   " does not fit in a 32-bit integer");
    return static_cast<int>(value);
  }

  const Value& root_;
};

bool starts_with_any(const std::vector<std::string>& names, std::string_view prefix) {
  return std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.starts_with(prefix); });
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out.empty() ? "none" : out;
}

// model_type decides when it names a supported family; architectures are the fallback because
// OpenMoE says "llama" and older MiniCPM files (and the Samoyeds copies) carry no model_type.
ModelFamily detect_family(const Fields& f) {
  const std::string model_type = f.string("model_type", "");
  const std::vector<std::string> architectures = f.strings("architectures");
  if (model_type == "mixtral") return ModelFamily::mixtral;
  if (model_type == "deepseek") return ModelFamily::deepseek_moe;
  if (model_type == "qwen2_moe") return ModelFamily::qwen2_moe;
  if (model_type == "minicpm") return ModelFamily::minicpm_moe;
  if (model_type == "openmoe") return ModelFamily::openmoe;
  const bool openmoe_fields = f.has("moe_layer_interval") && f.has("num_experts");
  if (starts_with_any(architectures, "OpenMoe") || (model_type == "llama" && openmoe_fields)) {
    return ModelFamily::openmoe;
  }
  if (model_type.empty()) {
    // Prefix match: the Samoyeds timing copies append "Timer" to the class name.
    if (starts_with_any(architectures, "MixtralForCausalLM")) return ModelFamily::mixtral;
    if (starts_with_any(architectures, "DeepseekForCausalLM")) return ModelFamily::deepseek_moe;
    if (starts_with_any(architectures, "Qwen2MoeForCausalLM")) return ModelFamily::qwen2_moe;
    if (starts_with_any(architectures, "MiniCPMForCausalLM")) return ModelFamily::minicpm_moe;
    if (openmoe_fields) return ModelFamily::openmoe;
  }
  std::string hint;
  if (model_type == "deepseek_v2" || model_type == "deepseek_v3") {
    hint = " (DeepSeek-V2/V3 use multi-head latent attention, which is not supported; DeepSeek-MoE has "
           "model_type \"deepseek\")";
  } else if (model_type == "llama" || model_type == "mistral" || model_type == "qwen2") {
    hint = " (a dense model: it has no routed experts)";
  }
  SAMOYEDS_FAIL("config.json: unsupported model family: model_type \"", model_type, "\", architectures [",
                join(architectures), "]", hint,
                ". Supported: \"mixtral\" (Mixtral), \"deepseek\" (DeepSeek-MoE), \"qwen2_moe\" (Qwen1.5-MoE / "
                "Qwen2-MoE), \"minicpm\" with num_experts (MiniCPM-MoE), and OpenMoeForCausalLM (OpenMoE)");
}

void check_hidden_act(const Fields& f, ModelFamily family, const char* expected) {
  const std::string act = f.string("hidden_act", expected);
  SAMOYEDS_CHECK(act == expected, "config.json (", family_name(family), "): hidden_act \"", act,
                 "\" is not supported; this family's experts use \"", expected, "\"");
}

// RoPE: "rope_theta" at the top level (transformers 4.x), else inside "rope_parameters" (5.x).
// Scaled variants (linear, dynamic, yarn, ...) change the positions' meaning and are not implemented.
double read_rope(const Fields& f, double fallback) {
  double theta = f.number("rope_theta", fallback);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const Value* rope = f.find(key);
    if (rope == nullptr) continue;
    SAMOYEDS_CHECK(rope->is_object(), "config.json: field \"", key, "\" must be an object or null, got ",
                   kind_name(rope->kind()));
    const Fields inner(*rope);
    const std::string type = inner.string("rope_type", inner.string("type", "default"));
    SAMOYEDS_CHECK(type == "default", "config.json: ", key, " of type \"", type,
                   "\" is not supported; only plain RoPE is implemented (set it to null for unscaled RoPE)");
    if (!f.has("rope_theta") && inner.has("rope_theta")) theta = inner.number("rope_theta", fallback);
  }
  return theta;
}

// Fields every family shares; per-family defaults are those of the family's config class.
struct CommonDefaults {
  int num_kv_heads;  // 0: same as num_attention_heads
  double rms_norm_eps;
  double rope_theta;
  std::int64_t max_position_embeddings;
  bool tie_word_embeddings;
};

void read_common(const Fields& f, const CommonDefaults& d, ModelConfig& c) {
  c.hidden_size = f.int64("hidden_size");
  c.num_layers = f.int32("num_hidden_layers");
  c.num_attention_heads = f.int32("num_attention_heads");
  c.vocab_size = f.int64("vocab_size");
  c.num_kv_heads = f.int32("num_key_value_heads", d.num_kv_heads > 0 ? d.num_kv_heads : c.num_attention_heads);
  if (f.has("head_dim")) {
    c.head_dim = f.int64("head_dim");
  } else {
    SAMOYEDS_CHECK(c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0,
                   "config.json: \"head_dim\" is missing and hidden_size ", c.hidden_size,
                   " is not a multiple of num_attention_heads ", c.num_attention_heads, "; add \"head_dim\"");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.rms_norm_eps = f.number("rms_norm_eps", d.rms_norm_eps);
  c.rope_theta = read_rope(f, d.rope_theta);
  c.max_position_embeddings = f.int64("max_position_embeddings", d.max_position_embeddings);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", d.tie_word_embeddings);
  c.attention_bias = f.boolean("attention_bias", false);
}

void parse_mixtral(const Fields& f, ModelConfig& c) {
  f.require(c.family, {{"hidden_size"}, {"intermediate_size"}, {"num_local_experts"}, {"num_experts_per_tok"},
                       {"num_hidden_layers"}, {"num_attention_heads"}, {"vocab_size"}});
  check_hidden_act(f, c.family, "silu");
  read_common(f, {8, 1e-5, 1e6, 4096 * 32, false}, c);  // MixtralConfig defaults
  c.intermediate_size = f.int64("intermediate_size");
  c.num_experts = f.int32("num_local_experts");
  c.top_k = f.int32("num_experts_per_tok");
  c.renormalize = true;  // MixtralSparseMoeBlock always divides by the top-k sum
  c.sliding_window = f.int64("sliding_window", 0);
}

void parse_deepseek(const Fields& f, ModelConfig& c) {
  f.require(c.family, {{"hidden_size"}, {"moe_intermediate_size"}, {"n_routed_experts"}, {"num_experts_per_tok"},
                       {"num_hidden_layers"}, {"num_attention_heads"}, {"vocab_size"}});
  check_hidden_act(f, c.family, "silu");
  read_common(f, {0, 1e-6, 10000.0, 2048, false}, c);  // DeepseekConfig defaults
  c.intermediate_size = f.int64("moe_intermediate_size");
  c.num_experts = f.int32("n_routed_experts");
  c.top_k = f.int32("num_experts_per_tok");
  c.renormalize = f.boolean("norm_topk_prob", false);
  const std::string scoring = f.string("scoring_func", "softmax");
  SAMOYEDS_CHECK(scoring == "softmax", "config.json (deepseek_moe): scoring_func \"", scoring,
                 "\" is not supported; DeepSeek-MoE routes with \"softmax\"");
  const std::string topk_method = f.string("topk_method", "greedy");
  SAMOYEDS_CHECK(topk_method == "greedy", "config.json (deepseek_moe): topk_method \"", topk_method,
                 "\" is not supported; only plain top-k (\"greedy\") is implemented");
  const double scaling = f.number("routed_scaling_factor", 1.0);
  SAMOYEDS_CHECK(scaling == 1.0, "config.json (deepseek_moe): routed_scaling_factor ", scaling,
                 " is not supported; DeepSeek-MoE uses 1.0");
  c.num_shared_experts = f.int32("n_shared_experts", 0);
  // The shared experts are one MLP of width n_shared x moe_intermediate_size (DeepseekMoE.shared_experts).
  c.shared_intermediate_size = static_cast<std::int64_t>(c.num_shared_experts) * c.intermediate_size;
  c.first_dense_layers = f.int32("first_k_dense_replace", 0);
  c.moe_layer_interval = f.int32("moe_layer_freq", 1);
  c.moe_layer_phase = 0;  // MoE when layer % moe_layer_freq == 0
}

void parse_qwen2_moe(const Fields& f, ModelConfig& c) {
  f.require(c.family, {{"hidden_size"}, {"moe_intermediate_size"}, {"num_experts"}, {"num_experts_per_tok"},
                       {"shared_expert_intermediate_size"}, {"num_hidden_layers"}, {"num_attention_heads"},
                       {"vocab_size"}});
  check_hidden_act(f, c.family, "silu");
  read_common(f, {0, 1e-6, 10000.0, 32768, false}, c);  // Qwen2MoeConfig defaults
  c.intermediate_size = f.int64("moe_intermediate_size");
  c.num_experts = f.int32("num_experts");
  c.top_k = f.int32("num_experts_per_tok");
  c.renormalize = f.boolean("norm_topk_prob", false);
  c.shared_intermediate_size = f.int64("shared_expert_intermediate_size");
  c.num_shared_experts = c.shared_intermediate_size > 0 ? 1 : 0;
  c.shared_expert_sigmoid_gate = c.num_shared_experts > 0;
  c.moe_layer_interval = f.int32("decoder_sparse_step", 1);
  c.moe_layer_phase = c.moe_layer_interval - 1;  // MoE when (layer + 1) % decoder_sparse_step == 0
  c.dense_layers = f.ints("mlp_only_layers");
  std::sort(c.dense_layers.begin(), c.dense_layers.end());
  c.dense_layers.erase(std::unique(c.dense_layers.begin(), c.dense_layers.end()), c.dense_layers.end());
  // Qwen2-MoE's q/k/v projections carry biases; newer files say so with "qkv_bias" (default true).
  c.attention_bias = f.boolean("qkv_bias", true);
  SAMOYEDS_CHECK(!f.boolean("use_sliding_window", false),
                 "config.json (qwen2_moe): use_sliding_window = true is not supported (per-layer sliding windows); "
                 "Qwen1.5-MoE uses full attention");
}

void parse_minicpm(const Fields& f, ModelConfig& c) {
  f.require(c.family, {{"hidden_size"}, {"intermediate_size"}, {"num_experts"}, {"num_experts_per_tok"},
                       {"num_hidden_layers"}, {"num_attention_heads"}, {"vocab_size"}});
  check_hidden_act(f, c.family, "silu");
  read_common(f, {0, 1e-6, 10000.0, 2048, true}, c);  // MiniCPMConfig defaults (it ties the LM head)
  c.intermediate_size = f.int64("intermediate_size");
  c.num_experts = f.int32("num_experts");
  c.top_k = f.int32("num_experts_per_tok");
  c.renormalize = true;  // MiniCPMMoE always divides by the top-k sum
  c.scale_emb = f.number("scale_emb", 1.0);
  c.scale_depth = f.number("scale_depth", 1.0);
  c.dim_model_base = f.int64("dim_model_base", 1);
}

void parse_openmoe(const Fields& f, ModelConfig& c) {
  // The HF checkpoints use router_* names; ColossalAI's own example configs use the short ones.
  f.require(c.family, {{"hidden_size"}, {"intermediate_size"}, {"num_experts"}, {"router_topk", "topk"},
                       {"moe_layer_interval"}, {"head_dim"}, {"num_hidden_layers"}, {"num_attention_heads"},
                       {"vocab_size"}});
  check_hidden_act(f, c.family, "swiglu");
  const std::string_view gated_key = f.first_of({"mlp_gated", "gated"});
  SAMOYEDS_CHECK(gated_key.empty() || f.boolean(gated_key, true), "config.json (openmoe): ", gated_key,
                 " = false is not supported; OpenMoE experts are gated (gate projection + up projection)");
  CommonDefaults defaults = {0, 1e-6, 10000.0, 2048, false};  // LlamaConfig defaults, as OpenMoE uses them
  defaults.rms_norm_eps = f.number("layer_norm_epsilon", defaults.rms_norm_eps);
  read_common(f, defaults, c);
  c.intermediate_size = f.int64("intermediate_size");
  c.num_experts = f.int32("num_experts");
  c.top_k = f.int32(f.first_of({"router_topk", "topk"}));
  c.activation = ExpertActivation::openmoe_swiglu;
  c.renormalize = false;  // Top2Router combines with the raw softmax probabilities
  // Dropping is the default; router_drop_tks = false keeps every token (ColossalAI then sizes capacity
  // to the busiest expert).
  const std::string_view drop_key = f.first_of({"router_drop_tks", "drop_tks"});
  c.capacity_limited = drop_key.empty() ? true : f.boolean(drop_key, true);
  if (c.capacity_limited) {
    const std::string_view factor_key = f.first_of({"router_capacity_factor_eval", "capacity_factor_eval"});
    c.capacity_factor = static_cast<float>(factor_key.empty() ? 2.0 : f.number(factor_key, 2.0));
    const std::string_view min_key = f.first_of({"router_min_capacity", "min_capacity"});
    c.min_capacity = min_key.empty() ? 4 : f.int32(min_key);
  }
  c.moe_layer_interval = f.int32("moe_layer_interval");
  c.moe_layer_phase = c.moe_layer_interval - 1;  // MoE when (layer + 1) % moe_layer_interval == 0
  // Dense layers and the extra MLP after each MoE layer are OpenMoeMLP(intermediate_size), same SwiGLU.
  c.dense_intermediate_size = c.intermediate_size;
  c.extra_dense_mlp = true;
  c.attention_scale = 1.0;  // OpenMoeAttention does not scale q.k by 1/sqrt(head_dim) (T5 style)
}

bool iequals(std::string_view a, std::string_view b) { return lower(a) == lower(b); }

bool same_shape(const ModelConfig& a, const ModelConfig& b) {
  return a.family == b.family && a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size &&
         a.num_experts == b.num_experts && a.top_k == b.top_k && a.num_layers == b.num_layers &&
         a.num_shared_experts == b.num_shared_experts && a.shared_intermediate_size == b.shared_intermediate_size;
}

void assign_names(const Fields& f, std::string name, ModelConfig& c) {
  const std::vector<ModelConfig>& registry = model_registry();
  if (!name.empty()) {
    for (const ModelConfig& m : registry) {
      if (iequals(name, m.name) || iequals(name, m.display_name)) {
        c.name = m.name;
        c.display_name = m.display_name;
        return;
      }
    }
    c.name = lower(name);
    c.display_name = std::move(name);
    return;
  }
  for (const ModelConfig& m : registry) {
    if (same_shape(c, m)) {
      c.name = m.name;
      c.display_name = m.display_name;
      return;
    }
  }
  std::string path = f.string("_name_or_path", "");
  while (!path.empty() && path.back() == '/') path.pop_back();
  const std::size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  c.display_name = base.empty() ? std::string(family_name(c.family)) : base;
  c.name = lower(c.display_name);
}

}  // namespace

ModelConfig parse_hf_config(std::string_view json_text, std::string name) {
  Value root;
  try {
    root = json::parse(json_text);
  } catch (const Error& e) {
    SAMOYEDS_FAIL("config.json is not valid JSON: ", e.message());
  }
  SAMOYEDS_CHECK(root.is_object(), "config.json: the document must be a JSON object, got ", kind_name(root.kind()));
  const Fields fields(root);
  ModelConfig c;
  c.family = detect_family(fields);
  switch (c.family) {
    case ModelFamily::mixtral: parse_mixtral(fields, c); break;
    case ModelFamily::deepseek_moe: parse_deepseek(fields, c); break;
    case ModelFamily::qwen2_moe: parse_qwen2_moe(fields, c); break;
    case ModelFamily::minicpm_moe: parse_minicpm(fields, c); break;
    case ModelFamily::openmoe: parse_openmoe(fields, c); break;
  }
  // Dense FFN width matters only when some layer is dense; "0 if none" keeps configs comparable.
  if (c.family == ModelFamily::deepseek_moe || c.family == ModelFamily::qwen2_moe) {
    c.dense_intermediate_size = 0;
    bool any_dense = c.first_dense_layers > 0 || !c.dense_layers.empty() || c.moe_layer_interval > 1;
    if (any_dense) {
      fields.require(c.family, {{"intermediate_size"}});
      c.dense_intermediate_size = fields.int64("intermediate_size");
    }
  }
  assign_names(fields, std::move(name), c);
  c.validate();
  return c;
}

ModelConfig load_hf_config(const std::string& path, std::string name) {
  namespace fs = std::filesystem;
  SAMOYEDS_CHECK(!path.empty(), "load_hf_config: the path is empty; pass a config.json file or its directory");
  std::error_code ec;
  fs::path file(path);
  if (fs::is_directory(file, ec)) {
    file /= "config.json";
    SAMOYEDS_CHECK(fs::exists(file, ec), "load_hf_config: directory '", path,
                   "' has no config.json; pass the model directory that holds it, or the file itself");
  }
  SAMOYEDS_CHECK(fs::is_regular_file(file, ec), "load_hf_config: '", file.string(),
                 "' does not exist or is not a regular file");
  const std::uintmax_t size = fs::file_size(file, ec);
  SAMOYEDS_CHECK(!ec, "load_hf_config: cannot read the size of '", file.string(), "': ", ec.message());
  SAMOYEDS_CHECK(size <= kMaxConfigBytes, "load_hf_config: '", file.string(), "' is ", size,
                 " bytes, too large for a config.json (did you pass a weights file?)");
  std::ifstream in(file, std::ios::binary);
  SAMOYEDS_CHECK(in.good(), "load_hf_config: cannot open '", file.string(), "' for reading");
  std::ostringstream text;
  text << in.rdbuf();
  SAMOYEDS_CHECK(!in.bad(), "load_hf_config: reading '", file.string(), "' failed");
  try {
    return parse_hf_config(text.str(), std::move(name));
  } catch (const Error& e) {
    SAMOYEDS_FAIL(file.string(), ": ", e.message());
  }
}

std::string hf_config_json(const ModelConfig& c, DType dtype) {
  c.validate();
  SAMOYEDS_CHECK(is_half_precision(dtype), "hf_config_json: torch_dtype must be bf16 or fp16, got ", dtype_name(dtype));
  Value j = Value::object();
  auto set = [&](const char* key, Value v) { j.set(key, std::move(v)); };
  auto integer = [](std::int64_t v) { return Value(v); };
  struct Names {
    ModelFamily family;
    const char* architecture;
    const char* model_type;
  };
  constexpr Names kNames[] = {{ModelFamily::mixtral, "MixtralForCausalLM", "mixtral"},
                              {ModelFamily::deepseek_moe, "DeepseekForCausalLM", "deepseek"},
                              {ModelFamily::qwen2_moe, "Qwen2MoeForCausalLM", "qwen2_moe"},
                              {ModelFamily::minicpm_moe, "MiniCPMForCausalLM", "minicpm"},
                              {ModelFamily::openmoe, "OpenMoeForCausalLM", "llama"}};  // OpenMoE says llama
  const Names* names = std::find_if(std::begin(kNames), std::end(kNames), [&](const Names& n) { return n.family == c.family; });
  Value architectures = Value::array();
  architectures.push_back(Value(names->architecture));
  set("architectures", std::move(architectures));
  set("model_type", Value(names->model_type));
  set("hidden_act", Value(c.family == ModelFamily::openmoe ? "swiglu" : "silu"));
  set("hidden_size", integer(c.hidden_size));
  set("num_hidden_layers", integer(c.num_layers));
  set("num_attention_heads", integer(c.num_attention_heads));
  set("num_key_value_heads", integer(c.num_kv_heads));
  set("head_dim", integer(c.head_dim));
  set("vocab_size", integer(c.vocab_size));
  set("rms_norm_eps", Value(c.rms_norm_eps));
  set("rope_theta", Value(c.rope_theta));
  set("max_position_embeddings", integer(c.max_position_embeddings));
  set("tie_word_embeddings", Value(c.tie_word_embeddings));
  set("torch_dtype", Value(dtype == DType::bf16 ? "bfloat16" : "float16"));
  if (c.family != ModelFamily::openmoe) set("num_experts_per_tok", integer(c.top_k));  // OpenMoE: router_topk
  auto require = [&](bool ok, const char* what) {
    SAMOYEDS_CHECK(ok, c.display_name, ": ", family_name(c.family), "'s config.json cannot express ", what);
  };
  // What no family but the one named writes: OpenMoE's activation, capacity routing, extra MLP and
  // attention scale; Mixtral's sliding window; MiniCPM's scalings.
  const bool openmoe = c.family == ModelFamily::openmoe;
  require(openmoe == (c.activation == ExpertActivation::openmoe_swiglu) && openmoe == c.extra_dense_mlp &&
              (openmoe ? c.attention_scale == 1.0 : (!c.capacity_limited && c.attention_scale == 0.0)),
          openmoe ? "a SiLU-gated MLP, no extra MLP or a scaled attention"
                  : "OpenMoE's activation, capacity routing, extra MLP or attention scale");
  require(c.family == ModelFamily::mixtral || c.sliding_window == 0, "a sliding window");
  require(c.family == ModelFamily::minicpm_moe || (c.scale_emb == 1.0 && c.scale_depth == 0.0 && c.dim_model_base == 0),
          "MiniCPM's embedding, residual or logit scaling");
  switch (c.family) {
    case ModelFamily::mixtral:
      require(c.renormalize && c.num_shared_experts == 0 && c.num_layers == c.num_moe_layers() && !c.attention_bias,
              "this routing or layer layout");
      set("intermediate_size", integer(c.intermediate_size));
      set("num_local_experts", integer(c.num_experts));
      set("sliding_window", c.sliding_window > 0 ? integer(c.sliding_window) : Value());
      break;
    case ModelFamily::deepseek_moe:
      require(c.shared_intermediate_size == static_cast<std::int64_t>(c.num_shared_experts) * c.intermediate_size,
              "a shared-expert width other than n_shared_experts x moe_intermediate_size");
      require(c.dense_layers.empty() && c.moe_layer_phase == 0, "this set of dense layers");
      set("moe_intermediate_size", integer(c.intermediate_size));
      if (c.dense_intermediate_size > 0) set("intermediate_size", integer(c.dense_intermediate_size));
      set("n_routed_experts", integer(c.num_experts));
      set("n_shared_experts", integer(c.num_shared_experts));
      set("norm_topk_prob", Value(c.renormalize));
      set("scoring_func", Value("softmax"));
      set("first_k_dense_replace", integer(c.first_dense_layers));
      set("moe_layer_freq", integer(c.moe_layer_interval));
      set("attention_bias", Value(c.attention_bias));
      break;
    case ModelFamily::qwen2_moe: {
      require(c.first_dense_layers == 0 && c.moe_layer_phase == c.moe_layer_interval - 1,
              "this set of dense layers");
      require(c.shared_expert_sigmoid_gate == (c.num_shared_experts > 0), "an ungated shared expert");
      set("moe_intermediate_size", integer(c.intermediate_size));
      if (c.dense_intermediate_size > 0) set("intermediate_size", integer(c.dense_intermediate_size));
      set("num_experts", integer(c.num_experts));
      set("shared_expert_intermediate_size", integer(c.shared_intermediate_size));
      set("norm_topk_prob", Value(c.renormalize));
      set("decoder_sparse_step", integer(c.moe_layer_interval));
      Value dense = Value::array();
      for (const int l : c.dense_layers) dense.push_back(integer(l));
      set("mlp_only_layers", std::move(dense));
      set("qkv_bias", Value(c.attention_bias));
      set("use_sliding_window", Value(false));
      break;
    }
    case ModelFamily::minicpm_moe:
      require(c.renormalize && c.num_shared_experts == 0 && !c.attention_bias, "this routing");
      require(c.num_layers == c.num_moe_layers(), "dense layers");
      set("intermediate_size", integer(c.intermediate_size));
      set("num_experts", integer(c.num_experts));
      set("scale_emb", Value(c.scale_emb));
      set("scale_depth", Value(c.scale_depth));
      set("dim_model_base", integer(c.dim_model_base));
      break;
    case ModelFamily::openmoe:
      require(!c.renormalize && c.num_shared_experts == 0 && !c.attention_bias && c.first_dense_layers == 0 &&
                  c.dense_layers.empty() && c.moe_layer_phase == c.moe_layer_interval - 1 &&
                  c.dense_intermediate_size == c.intermediate_size,
              "this routing, layer layout or dense MLP width");
      set("intermediate_size", integer(c.intermediate_size));
      set("num_experts", integer(c.num_experts));
      set("router_topk", integer(c.top_k));
      set("moe_layer_interval", integer(c.moe_layer_interval));
      set("mlp_gated", Value(true));
      set("router_drop_tks", Value(c.capacity_limited));
      if (c.capacity_limited) {
        set("router_capacity_factor_eval", Value(static_cast<double>(c.capacity_factor)));
        set("router_min_capacity", integer(c.min_capacity));
      }
      break;
  }
  return json::dump(j);
}

}  // namespace samoyeds
