// SPDX-License-Identifier: Apache-2.0
// Model configurations: the registry against the design table, lookup, MoE layer layout per family,
// config.json fixtures (tests/data/hf_configs) against the registry, and the errors for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "samoyeds/error.h"
#include "samoyeds/model_config.h"
#include "samoyeds/moe.h"

namespace samoyeds {
namespace {

const std::string kConfigDir = std::string(SAMOYEDS_TEST_DATA_DIR) + "/hf_configs";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string fixture(const std::string& name) { return read_text(kConfigDir + "/" + name + ".json"); }

// Runs `body`, which must throw samoyeds::Error whose message holds every one of `parts`.
void expect_error(const std::function<void()>& body, std::initializer_list<std::string> parts) {
  try {
    body();
    ADD_FAILURE() << "expected samoyeds::Error, nothing was thrown";
  } catch (const Error& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(e.message().find(part), std::string::npos) << "message lacks \"" << part << "\": " << e.message();
    }
  }
}

// A minimal valid Mixtral-style document with one field replaced or removed (value "" removes it).
std::string mixtral_json(const std::string& key = "", const std::string& value = "") {
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"model_type", "\"mixtral\""},   {"hidden_size", "64"},        {"intermediate_size", "96"},
      {"num_local_experts", "4"},      {"num_experts_per_tok", "2"}, {"num_hidden_layers", "2"},
      {"num_attention_heads", "4"},    {"num_key_value_heads", "2"}, {"vocab_size", "100"},
  };
  std::string out = "{";
  for (const auto& [k, v] : fields) {
    if (k == key && value.empty()) continue;
    out += (out.size() > 1 ? ", " : "") + ("\"" + k + "\": ") + (k == key ? value : v);
  }
  if (!key.empty() && std::none_of(fields.begin(), fields.end(), [&](const auto& f) { return f.first == key; })) {
    out += ", \"" + key + "\": " + value;
  }
  return out + "}";
}

// --- registry -------------------------------------------------------------------------------------

TEST(ModelRegistry, HasTheSevenModelsInOrder) {
  const std::vector<std::string> names = {"mixtral-8x7b",      "mixtral-8x22b",    "deepseek-moe-16b",
                                          "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b", "openmoe-8b",
                                          "openmoe-34b"};
  const std::vector<std::string> displays = {"Mixtral-8x7B",      "Mixtral-8x22B", "DeepSeek-MoE-16B",
                                             "Qwen1.5-MoE-A2.7B", "MiniCPM-MoE-8x2B", "OpenMoE-8B",
                                             "OpenMoE-34B"};
  const auto& registry = model_registry();
  ASSERT_EQ(registry.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(registry[i].name, names[i]);
    EXPECT_EQ(registry[i].display_name, displays[i]);
    EXPECT_NO_THROW(registry[i].validate()) << names[i];
  }
}

struct TableRow {
  const char* name;
  ModelFamily family;
  std::int64_t H, I;
  int E, top_k, shared;
  std::int64_t shared_width;
  int layers, moe_layers;
};

TEST(ModelRegistry, MatchesTheDesignTable) {
  const TableRow rows[] = {
      {"mixtral-8x7b", ModelFamily::mixtral, 4096, 14336, 8, 2, 0, 0, 32, 32},
      {"mixtral-8x22b", ModelFamily::mixtral, 6144, 16384, 8, 2, 0, 0, 56, 56},
      {"deepseek-moe-16b", ModelFamily::deepseek_moe, 2048, 1408, 64, 6, 2, 2 * 1408, 28, 27},
      {"qwen1.5-moe-a2.7b", ModelFamily::qwen2_moe, 2048, 1408, 60, 4, 1, 5632, 24, 24},
      {"minicpm-moe-8x2b", ModelFamily::minicpm_moe, 2304, 5760, 8, 2, 0, 0, 40, 40},
      {"openmoe-8b", ModelFamily::openmoe, 2048, 8192, 32, 2, 0, 0, 24, 4},
      {"openmoe-34b", ModelFamily::openmoe, 3072, 12288, 32, 2, 0, 0, 32, 8},
  };
  for (const TableRow& row : rows) {
    SCOPED_TRACE(row.name);
    const ModelConfig& m = find_model(row.name);
    EXPECT_EQ(m.family, row.family);
    EXPECT_EQ(m.hidden_size, row.H);
    EXPECT_EQ(m.intermediate_size, row.I);
    EXPECT_EQ(m.num_experts, row.E);
    EXPECT_EQ(m.top_k, row.top_k);
    EXPECT_EQ(m.num_shared_experts, row.shared);
    EXPECT_EQ(m.shared_intermediate_size, row.shared_width);
    EXPECT_EQ(m.num_layers, row.layers);
    EXPECT_EQ(m.num_moe_layers(), row.moe_layers);
  }
}

TEST(ModelRegistry, RoutingAndActivationPerFamily) {
  EXPECT_TRUE(find_model("mixtral-8x7b").renormalize);
  EXPECT_TRUE(find_model("minicpm-moe-8x2b").renormalize);
  EXPECT_FALSE(find_model("deepseek-moe-16b").renormalize);
  EXPECT_FALSE(find_model("qwen1.5-moe-a2.7b").renormalize);
  EXPECT_FALSE(find_model("openmoe-8b").renormalize);

  EXPECT_TRUE(find_model("qwen1.5-moe-a2.7b").shared_expert_sigmoid_gate);
  EXPECT_FALSE(find_model("deepseek-moe-16b").shared_expert_sigmoid_gate);
  EXPECT_TRUE(find_model("qwen1.5-moe-a2.7b").attention_bias);
  EXPECT_EQ(find_model("deepseek-moe-16b").dense_intermediate_size, 10944);

  for (const char* name : {"openmoe-8b", "openmoe-34b"}) {
    SCOPED_TRACE(name);
    const ModelConfig& m = find_model(name);
    EXPECT_TRUE(m.capacity_limited);
    EXPECT_EQ(m.capacity_factor, 2.0f);
    EXPECT_EQ(m.min_capacity, 4);
    EXPECT_EQ(m.activation, ExpertActivation::openmoe_swiglu);
    EXPECT_EQ(m.expert_gate_rows(), 2 * m.intermediate_size);
    EXPECT_TRUE(m.extra_dense_mlp);
    EXPECT_EQ(m.dense_intermediate_size, m.intermediate_size);
    EXPECT_EQ(m.head_dim, 128);
    EXPECT_EQ(m.softmax_scale(), 1.0);
  }
  const ModelConfig& mixtral = find_model("mixtral-8x7b");
  EXPECT_FALSE(mixtral.capacity_limited);
  EXPECT_EQ(mixtral.activation, ExpertActivation::silu_gated);
  EXPECT_EQ(mixtral.expert_gate_rows(), mixtral.intermediate_size);
  EXPECT_DOUBLE_EQ(mixtral.softmax_scale(), 1.0 / std::sqrt(128.0));

  const ModelConfig& minicpm = find_model("minicpm-moe-8x2b");
  EXPECT_EQ(minicpm.scale_emb, 12.0);
  EXPECT_EQ(minicpm.scale_depth, 1.4);
  EXPECT_EQ(minicpm.dim_model_base, 256);
  EXPECT_EQ(minicpm.head_dim, 64);
}

TEST(ModelRegistry, FindModelIsCaseInsensitiveAndTakesDisplayNames) {
  EXPECT_EQ(find_model("mixtral-8x7b").name, "mixtral-8x7b");
  EXPECT_EQ(find_model("MIXTRAL-8X22B").name, "mixtral-8x22b");
  EXPECT_EQ(find_model("DeepSeek-MoE-16B").name, "deepseek-moe-16b");
  EXPECT_EQ(find_model("qwen1.5-MoE-a2.7B").name, "qwen1.5-moe-a2.7b");
  EXPECT_EQ(find_model("OpenMoE-34B").name, "openmoe-34b");
  // The registry hands out stable references.
  EXPECT_EQ(&find_model("openmoe-8b"), &model_registry()[5]);
}

TEST(ModelRegistry, UnknownNameListsTheKnownNames) {
  expect_error([] { find_model("gpt-oss-20b"); },
               {"gpt-oss-20b", "mixtral-8x7b", "mixtral-8x22b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b",
                "minicpm-moe-8x2b", "openmoe-8b", "openmoe-34b"});
  expect_error([] { find_model(""); }, {"unknown model", "known models"});
}

TEST(ModelRegistry, NamesOfEnums) {
  EXPECT_STREQ(family_name(ModelFamily::mixtral), "mixtral");
  EXPECT_STREQ(family_name(ModelFamily::deepseek_moe), "deepseek_moe");
  EXPECT_STREQ(family_name(ModelFamily::qwen2_moe), "qwen2_moe");
  EXPECT_STREQ(family_name(ModelFamily::minicpm_moe), "minicpm_moe");
  EXPECT_STREQ(family_name(ModelFamily::openmoe), "openmoe");
  EXPECT_STREQ(activation_name(ExpertActivation::silu_gated), "silu_gated");
  EXPECT_STREQ(activation_name(ExpertActivation::openmoe_swiglu), "openmoe_swiglu");
}

// --- which layers are MoE -----------------------------------------------------------------------------

TEST(ModelConfigLayers, MixtralQwenMiniCPMAreMoEEverywhere) {
  for (const char* name : {"mixtral-8x7b", "mixtral-8x22b", "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b"}) {
    SCOPED_TRACE(name);
    const ModelConfig& m = find_model(name);
    for (int layer = 0; layer < m.num_layers; ++layer) EXPECT_TRUE(m.is_moe_layer(layer)) << layer;
  }
}

TEST(ModelConfigLayers, DeepSeekFirstLayerIsDense) {
  const ModelConfig& m = find_model("deepseek-moe-16b");
  EXPECT_FALSE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_dense_layer(0));
  for (int layer = 1; layer < 28; ++layer) EXPECT_TRUE(m.is_moe_layer(layer)) << layer;

  ModelConfig freq2 = m;  // moe_layer_freq 2: MoE where layer % 2 == 0, after the dense prefix
  freq2.moe_layer_interval = 2;
  EXPECT_EQ(freq2.moe_layers(), (std::vector<int>{2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26}));
}

TEST(ModelConfigLayers, OpenMoEEveryIntervalCountingFromOne) {
  EXPECT_EQ(find_model("openmoe-8b").moe_layers(), (std::vector<int>{5, 11, 17, 23}));
  EXPECT_EQ(find_model("openmoe-34b").moe_layers(), (std::vector<int>{3, 7, 11, 15, 19, 23, 27, 31}));
}

TEST(ModelConfigLayers, QwenSparseStepAndMlpOnlyLayers) {
  ModelConfig m = find_model("qwen1.5-moe-a2.7b");
  m.moe_layer_interval = 2;  // decoder_sparse_step 2: (layer + 1) % 2 == 0
  m.moe_layer_phase = 1;
  m.dense_layers = {3};
  m.dense_intermediate_size = 5632;
  EXPECT_FALSE(m.is_moe_layer(0));
  EXPECT_TRUE(m.is_moe_layer(1));
  EXPECT_FALSE(m.is_moe_layer(3));
  EXPECT_TRUE(m.is_moe_layer(5));
  EXPECT_EQ(m.num_moe_layers(), 11);
  EXPECT_NO_THROW(m.validate());
}

TEST(ModelConfigLayers, OutOfRangeLayerThrows) {
  const ModelConfig& m = find_model("mixtral-8x7b");
  expect_error([&] { m.is_moe_layer(32); }, {"layer 32", "32 layers"});
  expect_error([&] { m.is_moe_layer(-1); }, {"layer -1"});
}

// --- config.json fixtures ------------------------------------------------------------------------------

void expect_same_moe_fields(const ModelConfig& got, const ModelConfig& want) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.display_name, want.display_name);
  EXPECT_EQ(got.family, want.family);
  EXPECT_EQ(got.hidden_size, want.hidden_size);
  EXPECT_EQ(got.intermediate_size, want.intermediate_size);
  EXPECT_EQ(got.num_experts, want.num_experts);
  EXPECT_EQ(got.top_k, want.top_k);
  EXPECT_EQ(got.activation, want.activation);
  EXPECT_EQ(got.renormalize, want.renormalize);
  EXPECT_EQ(got.capacity_limited, want.capacity_limited);
  EXPECT_EQ(got.capacity_factor, want.capacity_factor);
  EXPECT_EQ(got.min_capacity, want.min_capacity);
  EXPECT_EQ(got.num_shared_experts, want.num_shared_experts);
  EXPECT_EQ(got.shared_intermediate_size, want.shared_intermediate_size);
  EXPECT_EQ(got.shared_expert_sigmoid_gate, want.shared_expert_sigmoid_gate);
  EXPECT_EQ(got.num_layers, want.num_layers);
  EXPECT_EQ(got.moe_layers(), want.moe_layers());
  EXPECT_EQ(got.dense_intermediate_size, want.dense_intermediate_size);
  EXPECT_EQ(got.extra_dense_mlp, want.extra_dense_mlp);
  EXPECT_EQ(got.num_attention_heads, want.num_attention_heads);
  EXPECT_EQ(got.num_kv_heads, want.num_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.rms_norm_eps, want.rms_norm_eps);
  EXPECT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.max_position_embeddings, want.max_position_embeddings);
  EXPECT_EQ(got.softmax_scale(), want.softmax_scale());
  EXPECT_EQ(got.attention_bias, want.attention_bias);
  EXPECT_EQ(got.tie_word_embeddings, want.tie_word_embeddings);
  EXPECT_EQ(got.scale_emb, want.scale_emb);
  EXPECT_EQ(got.scale_depth, want.scale_depth);
  EXPECT_EQ(got.dim_model_base, want.dim_model_base);
}

class ModelConfigFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelConfigFixture, ParsesToTheRegistryEntry) {
  const ModelConfig& want = find_model(GetParam());
  const ModelConfig got = parse_hf_config(fixture(GetParam()));  // names come from the shape match
  expect_same_moe_fields(got, want);
  EXPECT_TRUE(got == want) << "some field outside the checked list differs";
}

TEST_P(ModelConfigFixture, LoadsFromFileAndDirectory) {
  const ModelConfig& want = find_model(GetParam());
  EXPECT_TRUE(load_hf_config(kConfigDir + "/" + GetParam() + ".json") == want);

  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("samoyeds_model_config_" + GetParam());
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kConfigDir + "/" + GetParam() + ".json", dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_TRUE(load_hf_config(dir.string()) == want);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(ModelConfigParse, ModelConfigFixture,
                         ::testing::Values("mixtral-8x7b", "mixtral-8x22b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b",
                                           "minicpm-moe-8x2b", "openmoe-8b", "openmoe-34b"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string id;
                           for (char c : info.param) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return id;
                         });

TEST(ModelConfigParse, ExplicitNameTakesRegistryNamesOrAnyLabel) {
  EXPECT_EQ(parse_hf_config(fixture("mixtral-8x7b"), "Mixtral-8x7B").name, "mixtral-8x7b");
  const ModelConfig custom = parse_hf_config(fixture("mixtral-8x7b"), "My-Finetune");
  EXPECT_EQ(custom.name, "my-finetune");
  EXPECT_EQ(custom.display_name, "My-Finetune");
  // No name and no registry shape: "_name_or_path" gives it; else the family name.
  const ModelConfig small = parse_hf_config(mixtral_json("_name_or_path", "\"org/Tiny-Mixtral/\""));
  EXPECT_EQ(small.name, "tiny-mixtral");
  EXPECT_EQ(parse_hf_config(mixtral_json()).name, "mixtral");
}

TEST(ModelConfigParse, FamilyFromArchitecturesWhenModelTypeIsAbsent) {
  // The Samoyeds copies: no model_type, a "...Timer" class, one layer.
  const std::string minicpm = R"({"architectures": ["MiniCPMForCausalLMTimer"], "hidden_size": 2304,
      "intermediate_size": 5760, "num_attention_heads": 36, "num_hidden_layers": 1, "num_key_value_heads": 36,
      "vocab_size": 122753, "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4, "num_experts": 8,
      "num_experts_per_tok": 2, "rms_norm_eps": 1e-05, "max_position_embeddings": 4096})";
  const ModelConfig m = parse_hf_config(minicpm);
  EXPECT_EQ(m.family, ModelFamily::minicpm_moe);
  EXPECT_EQ(m.num_layers, 1);
  EXPECT_TRUE(m.renormalize);
  EXPECT_TRUE(m.tie_word_embeddings);  // MiniCPMConfig's default

  std::string mixtral = mixtral_json("model_type", "");
  mixtral.insert(1, R"("architectures": ["MixtralForCausalLMTimer"], )");
  EXPECT_EQ(parse_hf_config(mixtral).family, ModelFamily::mixtral);
}

TEST(ModelConfigParse, OpenMoEColossalAIExampleSpellings) {
  // ColossalAI's openmoe_8b_config.json: topk / capacity_factor_eval / min_capacity / gated, no model_type.
  const std::string text = R"({"architectures": ["OpenMoeForCausalLM"], "intermediate_size": 8192,
      "hidden_size": 2048, "num_hidden_layers": 24, "head_dim": 128, "num_attention_heads": 24,
      "layer_norm_epsilon": 1e-06, "vocab_size": 256384, "hidden_act": "swiglu", "num_experts": 32, "topk": 2,
      "capacity_factor_train": 1.25, "capacity_factor_eval": 2.0, "min_capacity": 4, "drop_tks": true,
      "gated": true, "moe_layer_interval": 6})";
  const ModelConfig got = parse_hf_config(text);
  expect_same_moe_fields(got, find_model("openmoe-8b"));
}

TEST(ModelConfigParse, OpenMoEWithoutDroppingIsNotCapacityLimited) {
  std::string text = fixture("openmoe-8b");
  const std::string from = "\"router_drop_tks\": true", to = "\"router_drop_tks\": false";
  text.replace(text.find(from), from.size(), to);
  const ModelConfig m = parse_hf_config(text);
  EXPECT_FALSE(m.capacity_limited);
  EXPECT_EQ(m.top_k, 2);
}

TEST(ModelConfigParse, QwenLayoutFieldsAndDenseWidth) {
  std::string text = fixture("qwen1.5-moe-a2.7b");
  const std::string from = "\"decoder_sparse_step\": 1";
  text.replace(text.find(from), from.size(), "\"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 3, 1]");
  const ModelConfig m = parse_hf_config(text);
  EXPECT_EQ(m.dense_layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(m.dense_intermediate_size, 5632);  // the config's intermediate_size, now used by dense layers
  EXPECT_EQ(m.moe_layers(), (std::vector<int>{5, 7, 9, 11, 13, 15, 17, 19, 21, 23}));
}

TEST(ModelConfigParse, RopeThetaFromRopeParameters) {
  std::string text = mixtral_json("rope_parameters", R"({"rope_type": "default", "rope_theta": 500000.0})");
  EXPECT_EQ(parse_hf_config(text).rope_theta, 500000.0);
}

TEST(ModelConfigParse, HeadDimDefaultsToHiddenOverHeads) {
  EXPECT_EQ(parse_hf_config(mixtral_json()).head_dim, 16);
  EXPECT_EQ(parse_hf_config(mixtral_json("head_dim", "32")).head_dim, 32);
  expect_error([] { parse_hf_config(mixtral_json("num_attention_heads", "6")); }, {"head_dim", "not a multiple"});
}

// --- errors ----------------------------------------------------------------------------------------------

TEST(ModelConfigParse, MissingRequiredFieldsAreNamed) {
  expect_error([] { parse_hf_config(mixtral_json("num_local_experts", "")); },
               {"mixtral", "required fields are missing", "\"num_local_experts\""});
  // Every missing field at once.
  expect_error([] { parse_hf_config(R"({"model_type": "deepseek", "hidden_size": 2048})"); },
               {"\"moe_intermediate_size\"", "\"n_routed_experts\"", "\"num_experts_per_tok\"", "\"num_hidden_layers\"",
                "\"num_attention_heads\"", "\"vocab_size\""});
  expect_error([] { parse_hf_config(R"({"architectures": ["OpenMoeForCausalLM"], "hidden_size": 2048})"); },
               {"openmoe", "\"router_topk\" or \"topk\"", "\"moe_layer_interval\"", "\"head_dim\""});
  // A dense layer needs the dense FFN width.
  std::string deepseek = fixture("deepseek-moe-16b");
  const std::string dense = "\"intermediate_size\": 10944,";
  deepseek.erase(deepseek.find(dense), dense.size());
  expect_error([&] { parse_hf_config(deepseek); }, {"\"intermediate_size\""});
}

TEST(ModelConfigParse, UnsupportedFamiliesAreRejected) {
  expect_error([] { parse_hf_config(R"({"model_type": "bert", "architectures": ["BertModel"]})"); },
               {"unsupported model family", "\"bert\"", "BertModel", "mixtral", "qwen2_moe", "OpenMoeForCausalLM"});
  expect_error([] { parse_hf_config(R"({"model_type": "deepseek_v2"})"); }, {"deepseek_v2", "latent attention"});
  expect_error([] { parse_hf_config(R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})"); },
               {"dense model"});
  expect_error([] { parse_hf_config("{}"); }, {"unsupported model family"});
  // MiniCPM without experts is the dense MiniCPM.
  std::string minicpm = fixture("minicpm-moe-8x2b");
  const std::string experts = "\"num_experts\": 8,";
  minicpm.erase(minicpm.find(experts), experts.size());
  expect_error([&] { parse_hf_config(minicpm); }, {"\"num_experts\""});
}

TEST(ModelConfigParse, WrongTypesNameTheField) {
  expect_error([] { parse_hf_config(mixtral_json("hidden_size", "\"64\"")); },
               {"\"hidden_size\"", "integer", "string"});
  expect_error([] { parse_hf_config(mixtral_json("num_local_experts", "4.5")); }, {"\"num_local_experts\"", "integer"});
  expect_error([] { parse_hf_config(mixtral_json("tie_word_embeddings", "\"false\"")); },
               {"\"tie_word_embeddings\"", "true or false"});
  expect_error([] { parse_hf_config(mixtral_json("rms_norm_eps", "[1e-5]")); }, {"\"rms_norm_eps\"", "number"});
  expect_error([] { parse_hf_config(mixtral_json("model_type", "7")); }, {"\"model_type\"", "string"});
  expect_error([] { parse_hf_config(mixtral_json("architectures", "\"MixtralForCausalLM\"")); },
               {"\"architectures\"", "array"});
  expect_error([] { parse_hf_config(mixtral_json("num_hidden_layers", "4294967296")); },
               {"\"num_hidden_layers\"", "32-bit"});
  expect_error([] { parse_hf_config("[1, 2]"); }, {"JSON object"});
  expect_error([] { parse_hf_config("{\"model_type\": \"mixtral\",}"); }, {"not valid JSON", "line 1"});
}

TEST(ModelConfigParse, InvalidValuesAreRejected) {
  expect_error([] { parse_hf_config(mixtral_json("num_experts_per_tok", "5")); }, {"top_k", "num_experts = 4", "5"});
  expect_error([] { parse_hf_config(mixtral_json("num_experts_per_tok", "0")); }, {"top_k"});
  expect_error([] { parse_hf_config(mixtral_json("hidden_size", "-64")); }, {"hidden_size"});
  expect_error([] { parse_hf_config(mixtral_json("num_key_value_heads", "3")); }, {"num_kv_heads"});
  expect_error([] { parse_hf_config(mixtral_json("rms_norm_eps", "0")); }, {"rms_norm_eps"});
  expect_error([] { parse_hf_config(mixtral_json("hidden_act", "\"gelu\"")); }, {"hidden_act", "gelu"});
  expect_error([] { parse_hf_config(mixtral_json("rope_scaling", R"({"type": "linear", "factor": 2.0})")); },
               {"rope_scaling", "linear"});
  std::string deepseek = fixture("deepseek-moe-16b");
  const std::string softmax = "\"scoring_func\": \"softmax\"";
  deepseek.replace(deepseek.find(softmax), softmax.size(), "\"scoring_func\": \"sigmoid\"");
  expect_error([&] { parse_hf_config(deepseek); }, {"scoring_func", "sigmoid"});
  std::string qwen = fixture("qwen1.5-moe-a2.7b");
  const std::string window = "\"use_sliding_window\": false";
  qwen.replace(qwen.find(window), window.size(), "\"use_sliding_window\": true");
  expect_error([&] { parse_hf_config(qwen); }, {"use_sliding_window"});
  std::string openmoe = fixture("openmoe-8b");
  const std::string act = "\"hidden_act\": \"swiglu\"";
  openmoe.replace(openmoe.find(act), act.size(), "\"hidden_act\": \"silu\"");
  expect_error([&] { parse_hf_config(openmoe); }, {"hidden_act", "swiglu"});
}

TEST(ModelConfigParse, LoadErrorsNameThePath) {
  expect_error([] { load_hf_config("/nonexistent/samoyeds/config.json"); }, {"/nonexistent/samoyeds/config.json"});
  expect_error([] { load_hf_config(""); }, {"empty"});
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "samoyeds_model_config_empty_dir";
  std::filesystem::create_directories(dir);
  expect_error([&] { load_hf_config(dir.string()); }, {"no config.json"});
  {
    std::ofstream out(dir / "config.json");
    out << mixtral_json("num_local_experts", "");
  }
  expect_error([&] { load_hf_config(dir.string()); }, {"config.json", "\"num_local_experts\""});
  std::filesystem::remove_all(dir);
}

// --- validate and describe --------------------------------------------------------------------------------

TEST(ModelConfigValidate, ClearErrorsForBadFields) {
  expect_error([] { ModelConfig().validate(); }, {"<unnamed>", "hidden_size"});
  ModelConfig base = find_model("deepseek-moe-16b");
  auto broken = [&](const std::function<void(ModelConfig&)>& edit, std::initializer_list<std::string> parts) {
    ModelConfig c = base;
    edit(c);
    expect_error([&] { c.validate(); }, parts);
  };
  broken([](ModelConfig& c) { c.top_k = 65; }, {"deepseek-moe-16b", "top_k", "65"});
  broken([](ModelConfig& c) { c.num_experts = 0; }, {"num_experts"});
  broken([](ModelConfig& c) { c.shared_intermediate_size = 0; }, {"shared_intermediate_size"});
  broken([](ModelConfig& c) { c.dense_intermediate_size = 0; }, {"dense", "dense_intermediate_size"});
  broken([](ModelConfig& c) { c.first_dense_layers = 28; }, {"no layer is an MoE layer"});
  broken([](ModelConfig& c) { c.moe_layer_phase = 1; }, {"moe_layer_phase"});
  broken([](ModelConfig& c) { c.dense_layers = {28}; }, {"dense_layers", "28"});
  broken([](ModelConfig& c) { c.num_kv_heads = 5; }, {"num_kv_heads"});
  broken([](ModelConfig& c) { c.head_dim = 0; }, {"head_dim"});
  broken([](ModelConfig& c) { c.rope_theta = std::nan(""); }, {"rope_theta"});
  broken([](ModelConfig& c) { c.hidden_size = std::int64_t{1} << 40; }, {"hidden_size"});
  broken([](ModelConfig& c) {
    c.num_shared_experts = 0;
    c.shared_intermediate_size = 0;
    c.shared_expert_sigmoid_gate = true;
  }, {"shared_expert_sigmoid_gate"});
  broken([](ModelConfig& c) {
    c.capacity_limited = true;
    c.capacity_factor = 0.0f;
  }, {"capacity_factor"});
  base = find_model("minicpm-moe-8x2b");
  broken([](ModelConfig& c) { c.dim_model_base = 0; }, {"MiniCPM", "dim_model_base"});
}

TEST(ModelConfigDescribe, SummarisesEveryModel) {
  for (const ModelConfig& m : model_registry()) {
    SCOPED_TRACE(m.name);
    const std::string text = describe(m);
    EXPECT_NE(text.find(m.display_name), std::string::npos);
    EXPECT_NE(text.find("E = " + std::to_string(m.num_experts)), std::string::npos);
    EXPECT_NE(text.find("top_k = " + std::to_string(m.top_k)), std::string::npos);
    EXPECT_GE(std::count(text.begin(), text.end(), '\n'), 7);
  }
  EXPECT_NE(describe(find_model("openmoe-8b")).find("4 MoE: 5, 11, 17, 23"), std::string::npos);
  EXPECT_NE(describe(find_model("deepseek-moe-16b")).find("27 MoE: 1-27"), std::string::npos);
  EXPECT_NE(describe(find_model("mixtral-8x7b")).find("176.2 M parameters per routed expert"), std::string::npos);
  expect_error([] { describe(ModelConfig()); }, {"hidden_size"});
}

TEST(HfConfigJson, RefusesWhatTheFamilyCannotExpress) {
  ModelConfig minicpm = find_model("minicpm-moe-8x2b");
  minicpm.dense_layers = {3};
  minicpm.dense_intermediate_size = 5760;
  EXPECT_THROW(hf_config_json(minicpm), Error);  // MiniCPM-MoE has no dense layers
  ModelConfig qwen = find_model("qwen1.5-moe-a2.7b");
  qwen.sliding_window = 64;
  EXPECT_THROW(hf_config_json(qwen), Error);
  ModelConfig mixtral = find_model("mixtral-8x7b");
  mixtral.scale_emb = 2.0;
  EXPECT_THROW(hf_config_json(mixtral), Error);
  EXPECT_NE(hf_config_json(find_model("mixtral-8x7b"), DType::f16).find("\"float16\""), std::string::npos);
  EXPECT_THROW(hf_config_json(find_model("mixtral-8x7b"), DType::f32), Error);
}

// hf_config_json writes what parse_hf_config reads back as the same config, for every family,
// at real and at changed sizes.
TEST(HfConfigJson, RoundTripsThroughTheParser) {
  for (const ModelConfig& model : model_registry()) {
    for (const bool scaled : {false, true}) {
      SCOPED_TRACE(model.name + (scaled ? " scaled" : ""));
      ModelConfig c = scaled ? scaled_config(model, 64, 48) : model;
      if (scaled) c.num_layers = 3;
      if (scaled && c.family == ModelFamily::openmoe) {  // keep a MoE layer among the three: layer 2
        c.moe_layer_interval = 3;
        c.moe_layer_phase = 2;
      }
      const ModelConfig back = parse_hf_config(hf_config_json(c), c.name);
      ModelConfig expected = c;
      expected.name = back.name;  // names come from the registry or the given label
      expected.display_name = back.display_name;
      EXPECT_EQ(back, expected) << hf_config_json(c);
    }
  }
}

}  // namespace
}  // namespace samoyeds
