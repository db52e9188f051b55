// SPDX-License-Identifier: Apache-2.0
// Checkpoints: HF tensor names per family, opening single-file and sharded checkpoints (and every way
// an index can disagree with its shards), and `convert` on a tiny checkpoint of each family written
// here in that family's naming: packed matrices equal pack() of the originals, every other tensor is
// copied byte for byte, failures leave nothing behind.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/test_util.h"
#include "io/json.h"
#include "samoyeds/checkpoint.h"
#include "samoyeds/convert.h"
#include "samoyeds/hf_names.h"
#include "samoyeds/packed_file.h"
#include "samoyeds/reference.h"

namespace samoyeds {
namespace {

namespace fs = std::filesystem;
using testing::random_normal_matrix;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("samoyeds-ckpt-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::span<const std::uint8_t> bytes_of(const Matrix& m) {
  return {static_cast<const std::uint8_t*>(m.data()), m.bytes()};
}

const char* st_dtype(DType d) { return d == DType::bf16 ? "BF16" : d == DType::f16 ? "F16" : "F32"; }

TEST(HfNames, EveryFamilysExpertTensors) {
  const ModelConfig mixtral = find_model("mixtral-8x7b");
  EXPECT_EQ(router_tensor_name(mixtral, 3), "model.layers.3.block_sparse_moe.gate.weight");
  const MlpTensorNames m = expert_tensor_names(mixtral, 3, 7);
  EXPECT_EQ(m.gate, "model.layers.3.block_sparse_moe.experts.7.w1.weight");
  EXPECT_EQ(m.up, "model.layers.3.block_sparse_moe.experts.7.w3.weight");
  EXPECT_EQ(m.down, "model.layers.3.block_sparse_moe.experts.7.w2.weight");
  EXPECT_FALSE(shared_expert_tensor_names(mixtral, 3));

  const ModelConfig minicpm = find_model("minicpm-moe-8x2b");
  EXPECT_EQ(expert_tensor_names(minicpm, 0, 1).gate, "model.layers.0.mlp.experts.1.w1.weight");
  EXPECT_EQ(router_tensor_name(minicpm, 0), "model.layers.0.mlp.gate.weight");

  const ModelConfig qwen = find_model("qwen1.5-moe-a2.7b");
  EXPECT_EQ(expert_tensor_names(qwen, 2, 59).down, "model.layers.2.mlp.experts.59.down_proj.weight");
  EXPECT_EQ(shared_expert_tensor_names(qwen, 2)->up, "model.layers.2.mlp.shared_expert.up_proj.weight");
  EXPECT_EQ(*shared_gate_tensor_name(qwen, 2), "model.layers.2.mlp.shared_expert_gate.weight");

  const ModelConfig deepseek = find_model("deepseek-moe-16b");
  EXPECT_EQ(shared_expert_tensor_names(deepseek, 1)->gate, "model.layers.1.mlp.shared_experts.gate_proj.weight");
  EXPECT_FALSE(shared_gate_tensor_name(deepseek, 1));
  EXPECT_THROW(router_tensor_name(deepseek, 0), Error);  // layer 0 is dense
  EXPECT_THROW(expert_tensor_names(deepseek, 1, 64), Error);
  // OpenMoE: router and fused experts as ColossalAI names them; per-expert names are the converted ones.
  const ModelConfig& openmoe = find_model("openmoe-8b");
  EXPECT_EQ(router_tensor_name(openmoe, 5), "model.layers.5.mlp.gate_weight");
  EXPECT_EQ(openmoe_expert_tensor_names(openmoe, 11).wi_gate, "model.layers.11.mlp.experts.wi_gate");
  EXPECT_EQ(openmoe_expert_tensor_names(openmoe, 11).wo, "model.layers.11.mlp.experts.wo");
  EXPECT_EQ(expert_tensor_names(openmoe, 5, 3).gate_linear, "model.layers.5.mlp.experts.3.gate_linear.weight");
  EXPECT_EQ(layer_tensor_names(openmoe, 5).extra_mlp.down, "model.layers.5.extra_mlp.down_proj.weight");
  EXPECT_EQ(layer_tensor_names(openmoe, 5).extra_norm, "model.layers.5.pre_extra_mlp_layernorm.weight");
  EXPECT_TRUE(layer_tensor_names(openmoe, 4).extra_norm.empty());  // a dense layer
  EXPECT_THROW(expert_tensor_names(openmoe, 4, 0), Error);         // not a MoE layer
  EXPECT_THROW(openmoe_expert_tensor_names(find_model("mixtral-8x7b"), 0), Error);
}

// --- tiny checkpoints ----------------------------------------------------------------------------------

struct TinyCheckpoint {
  fs::path dir;
  ModelConfig config;
  std::map<std::string, Matrix> tensors;  // everything written
};

// `family_config`: a file of tests/data/hf_configs. H = 64, expert width 48 (dense and shared 96),
// 8 experts, 2 layers, written as `shards` files (with an index when more than one); routers and
// shared-expert gates in `router_dtype`.
TinyCheckpoint make_tiny_checkpoint(const std::string& family_config, const std::string& dir_name, int shards,
                                    std::uint64_t seed, DType router_dtype = DType::bf16) {
  // One 2-D tensor per expert matrix: OpenMoE's fused layout is written by write_synthetic_checkpoint.
  SAMOYEDS_CHECK(family_config.find("openmoe") == std::string::npos, "make_tiny_checkpoint: not for OpenMoE");
  json::Value cfg = json::parse(read_text(fs::path(SAMOYEDS_TEST_DATA_DIR) / "hf_configs" / (family_config + ".json")));
  auto set_if = [&](const char* key, std::int64_t value) {
    if (cfg.find(key)) cfg.set(key, json::Value(value));
  };
  cfg.set("hidden_size", json::Value(std::int64_t{64}));
  cfg.set("num_hidden_layers", json::Value(std::int64_t{2}));
  cfg.set("vocab_size", json::Value(std::int64_t{50}));
  cfg.set("num_attention_heads", json::Value(std::int64_t{4}));
  cfg.set("num_key_value_heads", json::Value(std::int64_t{4}));
  if (cfg.find("moe_intermediate_size")) {
    cfg.set("moe_intermediate_size", json::Value(std::int64_t{48}));
    cfg.set("intermediate_size", json::Value(std::int64_t{96}));
  } else {
    cfg.set("intermediate_size", json::Value(std::int64_t{48}));
  }
  set_if("shared_expert_intermediate_size", 96);
  set_if("num_local_experts", 8);
  set_if("n_routed_experts", 8);
  set_if("num_experts", 8);

  TinyCheckpoint t;
  t.dir = fresh_dir(dir_name);
  const std::string text = json::dump(cfg);
  write_text(t.dir / "config.json", text);
  t.config = parse_hf_config(text);
  const ModelConfig& c = t.config;
  const std::int64_t H = c.hidden_size;
  std::uint64_t next_seed = seed;
  auto add = [&](const std::string& name, std::int64_t rows, std::int64_t cols, DType dtype = DType::bf16) {
    t.tensors.emplace(name, random_normal_matrix(dtype, rows, cols, next_seed++, 0.05f));
  };
  add("model.embed_tokens.weight", c.vocab_size, H);
  add("lm_head.weight", c.vocab_size, H);
  add("model.norm.weight", 1, H);  // written 1-D below
  const std::int64_t q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerTensorNames n = layer_tensor_names(c, layer);
    add(n.q, q_dim, H);
    add(n.k, kv_dim, H);
    add(n.v, kv_dim, H);
    add(n.o, H, q_dim);
    add(n.input_norm, 1, H);
    add(n.post_attention_norm, 1, H);
    if (c.attention_bias) {
      add(n.q_bias, 1, q_dim);
      add(n.k_bias, 1, kv_dim);
      add(n.v_bias, 1, kv_dim);
    }
    if (!c.is_moe_layer(layer)) {
      add(n.dense_mlp.gate, c.dense_intermediate_size, H);
      add(n.dense_mlp.up, c.dense_intermediate_size, H);
      add(n.dense_mlp.down, H, c.dense_intermediate_size);
      continue;
    }
    add(router_tensor_name(c, layer), c.num_experts, H, router_dtype);
    for (int e = 0; e < c.num_experts; ++e) {
      const MlpTensorNames n = expert_tensor_names(c, layer, e);
      add(n.gate, c.intermediate_size, H);
      add(n.up, c.intermediate_size, H);
      add(n.down, H, c.intermediate_size);
    }
    if (const auto shared = shared_expert_tensor_names(c, layer)) {
      add(shared->gate, c.shared_intermediate_size, H);
      add(shared->up, c.shared_intermediate_size, H);
      add(shared->down, H, c.shared_intermediate_size);
    }
    if (const auto gate = shared_gate_tensor_name(c, layer)) add(*gate, 1, H, router_dtype);
  }
  add("model.rotary.inv_freq", 1, 8, DType::f32);

  std::vector<SafetensorsWriter> writers(static_cast<std::size_t>(shards));
  json::Value weight_map = json::Value::object();
  int i = 0;
  for (const auto& [name, m] : t.tensors) {
    const int s = i++ % shards;
    const bool vector = name.ends_with("norm.weight") || name.ends_with(".bias") || name.ends_with("inv_freq");
    writers[static_cast<std::size_t>(s)].add(name, st_dtype(m.dtype()),
                                             vector ? std::vector<std::int64_t>{m.cols()} : std::vector<std::int64_t>{m.rows(), m.cols()},
                                             bytes_of(m));
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, shards);
    weight_map.set(name, json::Value(shards == 1 ? std::string("model.safetensors") : std::string(file)));
  }
  for (int s = 0; s < shards; ++s) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, shards);
    writers[static_cast<std::size_t>(s)].write((t.dir / (shards == 1 ? "model.safetensors" : file)).string());
  }
  if (shards > 1) {
    json::Value index = json::Value::object();
    index.set("metadata", json::Value::object());
    index.set("weight_map", std::move(weight_map));
    write_text(t.dir / "model.safetensors.index.json", json::dump(index));
  }
  return t;
}

TEST(Checkpoint, OpensSingleFilesAndShards) {
  for (const int shards : {1, 3}) {
    SCOPED_TRACE(std::to_string(shards) + " shard(s)");
    const TinyCheckpoint t = make_tiny_checkpoint("mixtral-8x7b", "open-" + std::to_string(shards), shards, 1);
    const Checkpoint ckpt = Checkpoint::open(t.dir.string());
    EXPECT_EQ(ckpt.num_shards(), static_cast<std::size_t>(shards));
    EXPECT_EQ(ckpt.tensor_names().size(), t.tensors.size());
    for (const auto& [name, m] : t.tensors) {
      const Matrix read = ckpt.matrix(name);  // 1-D tensors come back as [1, n]
      ASSERT_EQ(read.rows(), m.rows()) << name;
      ASSERT_EQ(std::memcmp(read.data(), m.data(), m.bytes()), 0) << name;
    }
    EXPECT_THROW(ckpt.info("model.layers.9.nothing.weight"), Error);
    fs::remove_all(t.dir);
  }
}

TEST(Checkpoint, IndexMustAgreeWithShards) {
  const TinyCheckpoint t = make_tiny_checkpoint("mixtral-8x7b", "index", 2, 2);
  const fs::path index_path = t.dir / "model.safetensors.index.json";
  const std::string good = read_text(index_path);
  auto with_index = [&](const std::function<void(json::Value&)>& edit) {
    json::Value index = json::parse(good);
    edit(index);
    write_text(index_path, json::dump(index));
  };
  auto map_entry = [&](const char* tensor, const char* file) {
    with_index([&](json::Value& index) {
      json::Value map = index.at("weight_map");
      map.set(tensor, json::Value(std::string(file)));
      index.set("weight_map", std::move(map));
    });
  };
  map_entry("model.ghost.weight", "model-00001-of-00002.safetensors");
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // lists a tensor its shard lacks
  map_entry("model.norm.weight", "../elsewhere.safetensors");
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // walks out of the directory
  map_entry("model.ghost.weight", "model-00003-of-00003.safetensors");
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // missing shard
  map_entry("model.norm.weight", "model-00002-of-00002.safetensors");
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // in the other shard than the index says (if it moved)
  with_index([&](json::Value& index) {
    json::Value smaller = json::Value::object();
    bool dropped = false;
    for (const auto& [name, file] : index.at("weight_map").as_object()) {
      if (!dropped) {
        dropped = true;
        continue;
      }
      smaller.set(name, file);
    }
    index.set("weight_map", std::move(smaller));
  });
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // a shard holds a tensor the index omits
  write_text(index_path, "{\"weight_map\": 3}");
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);
  fs::remove(index_path);
  EXPECT_THROW(Checkpoint::open(t.dir.string()), Error);  // two shards, no index
  EXPECT_THROW(Checkpoint::open((t.dir / "config.json").string()), Error);  // not a directory
  fs::remove_all(t.dir);
}

// --- convert -----------------------------------------------------------------------------------------

void expect_converted(const TinyCheckpoint& t, const fs::path& out, const ConvertReport& report, const SparsityPattern& pattern,
                      const std::map<std::string, PackOptions>& options = {}) {
  const ModelConfig& c = t.config;
  const json::Value manifest = json::parse(read_text(out / "samoyeds.json"));
  EXPECT_EQ(manifest.at("pattern").as_string(), pattern.to_string());
  EXPECT_EQ(read_text(out / "config.json"), read_text(t.dir / "config.json"));
  std::map<std::string, bool> seen;
  std::size_t packed_count = 0;
  for (const json::Value& file : manifest.at("expert_files").as_array()) {
    const PackedFile packed = read_packed_file((out / file.as_string()).string());
    for (const auto& [name, matrix] : packed.matrices) {
      const Matrix& original = t.tensors.at(name + ".weight");
      const auto opt = options.find(name);
      const PackedMatrix expected = pack(original, pattern, opt == options.end() ? PackOptions{} : opt->second);
      EXPECT_EQ(matrix.values, expected.values) << name;
      EXPECT_EQ(matrix.metadata, expected.metadata) << name;
      EXPECT_EQ(matrix.row_select, expected.row_select) << name;
      seen[name + ".weight"] = true;
      ++packed_count;
    }
  }
  const auto expected_packed =
      static_cast<std::size_t>(3 * c.num_moe_layers() * (c.num_experts + (c.num_shared_experts > 0 ? 1 : 0)));
  EXPECT_EQ(packed_count, expected_packed);
  EXPECT_EQ(report.matrices.size(), expected_packed);
  for (const json::Value& file : manifest.at("dense_files").as_array()) {
    const SafetensorsFile dense = SafetensorsFile::open((out / file.as_string()).string());
    for (const TensorInfo& info : dense.tensors()) {
      const Matrix& original = t.tensors.at(info.name);
      ASSERT_EQ(dense.bytes(info).size(), original.bytes()) << info.name;
      EXPECT_EQ(std::memcmp(dense.bytes(info).data(), original.data(), original.bytes()), 0) << info.name;
      EXPECT_FALSE(seen.count(info.name)) << info.name << " is both packed and copied";
      seen[info.name] = true;
    }
  }
  EXPECT_EQ(seen.size(), t.tensors.size()) << "every tensor is packed or copied";
  EXPECT_EQ(report.copied_tensors, static_cast<std::int64_t>(t.tensors.size() - expected_packed));
  for (const ConvertedMatrix& m : report.matrices) {
    EXPECT_GT(m.relative_error, 0.0) << m.name;  // 75 % of each matrix is pruned
    EXPECT_LT(m.relative_error, 1.0) << m.name;
  }
  std::int64_t packed_bytes = 0, dense_bytes = 0;  // exact (tiny matrices are mostly row padding)
  for (const ConvertedMatrix& m : report.matrices) {
    packed_bytes += packed_geometry(pattern, m.rows, m.cols).total_bytes();
    dense_bytes += m.rows * m.cols * 2;
  }
  EXPECT_EQ(report.packed_expert_bytes, packed_bytes);
  EXPECT_EQ(report.dense_expert_bytes, dense_bytes);
}

class ConvertFamilies : public ::testing::TestWithParam<const char*> {};

TEST_P(ConvertFamilies, PacksEveryExpertAndCopiesTheRest) {
  const bool sharded = std::string(GetParam()) == "deepseek-moe-16b";
  const TinyCheckpoint t = make_tiny_checkpoint(GetParam(), std::string("convert-") + GetParam(), sharded ? 3 : 1, 11);
  const fs::path out = t.dir.string() + "-out";
  fs::remove_all(out);
  ConvertOptions o;
  o.in_dir = t.dir.string();
  o.out_dir = out.string();
  o.pattern = SparsityPattern::parse("1:2:32");
  std::vector<std::string> lines;
  o.progress = [&](const std::string& line) { lines.push_back(line); };
  const ConvertReport report = convert_checkpoint(o);
  expect_converted(t, out, report, o.pattern);
  EXPECT_GT(lines.size(), report.matrices.size());  // a line per matrix, per layer, per shard
  EXPECT_EQ(report.model, t.config.display_name);
  fs::remove_all(out);
  fs::remove_all(t.dir);
}

INSTANTIATE_TEST_SUITE_P(Families, ConvertFamilies,
                         ::testing::Values("mixtral-8x7b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b"));

TEST(Convert, FailureLeavesNothingAndExistingOutputIsKept) {
  const TinyCheckpoint t = make_tiny_checkpoint("mixtral-8x7b", "atomic", 1, 13);
  const fs::path out = t.dir.string() + "-out";
  fs::remove_all(out);
  ConvertOptions o;
  o.in_dir = t.dir.string();
  o.out_dir = out.string();

  // A checkpoint that lacks one expert matrix: error, no output, no temporary directory.
  {
    SafetensorsWriter writer;
    const std::string missing = expert_tensor_names(t.config, 1, 5).down;
    for (const auto& [name, m] : t.tensors)
      if (name != missing) writer.add(name, st_dtype(m.dtype()), {m.rows(), m.cols()}, bytes_of(m));
    writer.write((t.dir / "model.safetensors").string());
  }
  try {
    convert_checkpoint(o);
    ADD_FAILURE() << "a missing expert tensor must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("experts.5.w2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out));
  for (const auto& entry : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(entry.path().filename().string().find(out.filename().string() + ".tmp"), std::string::npos) << entry.path();

  // Restore the checkpoint; an existing output is not replaced without overwrite.
  {
    SafetensorsWriter writer;
    for (const auto& [name, m] : t.tensors) writer.add(name, st_dtype(m.dtype()), {m.rows(), m.cols()}, bytes_of(m));
    writer.write((t.dir / "model.safetensors").string());
  }
  fs::create_directories(out);
  write_text(out / "keep.txt", "mine");
  EXPECT_THROW(convert_checkpoint(o), Error);
  o.overwrite = true;
  EXPECT_THROW(convert_checkpoint(o), Error);  // --force replaces only an earlier conversion or an empty directory
  EXPECT_EQ(read_text(out / "keep.txt"), "mine");
  fs::remove(out / "keep.txt");
  convert_checkpoint(o);  // an empty directory: replaced
  write_text(out / "stale.txt", "from an earlier conversion");
  const ConvertReport report = convert_checkpoint(o);  // an earlier conversion: replaced
  EXPECT_FALSE(fs::exists(out / "stale.txt"));
  expect_converted(t, out, report, o.pattern);

  // "OUT/" is OUT; the output is never the input, inside it, or around it.
  o.out_dir = out.string() + "/";
  expect_converted(t, out, convert_checkpoint(o), o.pattern);
  o.out_dir = t.dir.string();
  EXPECT_THROW(convert_checkpoint(o), Error);
  o.out_dir = (t.dir / "inside").string();
  EXPECT_THROW(convert_checkpoint(o), Error);
  o.out_dir = t.dir.parent_path().string();
  EXPECT_THROW(convert_checkpoint(o), Error);
  EXPECT_TRUE(fs::exists(t.dir / "config.json"));
  fs::remove_all(out);
  fs::remove_all(t.dir);
}

TEST(Convert, ActivationPolicyUsesTheCalibrationNorms) {
  const TinyCheckpoint t = make_tiny_checkpoint("minicpm-moe-8x2b", "calib", 1, 17);
  const fs::path out = t.dir.string() + "-out";
  fs::remove_all(out);
  // Column norms per expert matrix: far from uniform, so they change the pruning.
  SafetensorsWriter calib;
  std::map<std::string, PackOptions> options;
  std::vector<Matrix> norms;
  std::uint64_t seed = 100;
  for (const int layer : t.config.moe_layers())
    for (int e = 0; e < t.config.num_experts; ++e) {
      const MlpTensorNames n = expert_tensor_names(t.config, layer, e);
      for (const std::string& tensor : {n.gate, n.up, n.down}) {
        const std::string name = tensor.substr(0, tensor.size() - 7);
        Matrix m = random_normal_matrix(DType::f32, 1, t.tensors.at(tensor).cols(), seed++);
        for (std::int64_t c = 0; c < m.cols(); ++c) m.set(0, c, std::fabs(m.get(0, c)) * 10.0f + 0.01f);
        PackOptions po;
        po.policy = PruningPolicy::activation;
        po.column_norms = m.to_float();
        options[name] = po;
        norms.push_back(std::move(m));
        calib.add(name + ".input_norm", "F32", {norms.back().cols()}, bytes_of(norms.back()));
      }
    }
  const fs::path calib_path = t.dir / "calib.safetensors";
  calib.write(calib_path.string());
  ConvertOptions o;
  o.in_dir = t.dir.string();
  o.out_dir = out.string();
  o.policy = PruningPolicy::activation;
  o.calibration_path = calib_path.string();
  const ConvertReport report = convert_checkpoint(o);
  // The calibration file sits in the input directory but is not a checkpoint shard: no effect there.
  expect_converted(t, out, report, o.pattern, options);
  fs::remove_all(out);

  o.calibration_path = (t.dir / "config.json").string();
  EXPECT_THROW(convert_checkpoint(o), Error);  // not a safetensors file
  EXPECT_FALSE(fs::exists(out));
  fs::remove_all(t.dir);
}

const SparsityPattern kTinyPattern = SparsityPattern::parse("1:2:32");

// Converts `t` into t.dir + "-out" (replacing an older output) with kTinyPattern; returns that directory.
fs::path convert_tiny(const TinyCheckpoint& t) {
  const fs::path out = t.dir.string() + "-out";
  fs::remove_all(out);
  ConvertOptions o;
  o.in_dir = t.dir.string();
  o.out_dir = out.string();
  o.pattern = kTinyPattern;
  convert_checkpoint(o);
  return out;
}

// A converted directory gives back exactly pack() of the original experts, and the same MoE layer.
TEST(ConvertedCheckpoint, MoeLayerEqualsThePackedOriginals) {
  for (const char* family : {"mixtral-8x7b", "qwen1.5-moe-a2.7b", "deepseek-moe-16b"}) {
    SCOPED_TRACE(family);
    const TinyCheckpoint t = make_tiny_checkpoint(family, std::string("reopen-") + family, 2, 19);
    const fs::path out = convert_tiny(t);
    const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
    const ModelConfig& c = ck.config();
    EXPECT_EQ(ck.pattern(), kTinyPattern);
    for (const int layer : c.moe_layers()) {
      SCOPED_TRACE("layer " + std::to_string(layer));
      const PackedMoeWeights w = ck.moe_layer(layer);
      DenseMoeWeights dense;
      dense.router = t.tensors.at(router_tensor_name(c, layer));
      auto mlp = [&](const MlpTensorNames& n) { return DenseExpert{t.tensors.at(n.gate), t.tensors.at(n.up), t.tensors.at(n.down), Matrix()}; };
      for (int e = 0; e < c.num_experts; ++e) dense.experts.push_back(mlp(expert_tensor_names(c, layer, e)));
      if (const auto shared = shared_expert_tensor_names(c, layer)) dense.shared = mlp(*shared);
      if (const auto gate = shared_gate_tensor_name(c, layer)) dense.shared_gate = t.tensors.at(*gate);
      const PackedMoeWeights expected = pack_moe_weights(c, dense, kTinyPattern);
      ASSERT_EQ(w.experts.size(), expected.experts.size());
      for (std::size_t e = 0; e < w.experts.size(); ++e) {
        EXPECT_EQ(w.experts[e].gate.values, expected.experts[e].gate.values) << e;
        EXPECT_EQ(w.experts[e].up.metadata, expected.experts[e].up.metadata) << e;
        EXPECT_EQ(w.experts[e].down.row_select, expected.experts[e].down.row_select) << e;
      }
      const Matrix x = random_normal_matrix(DType::bf16, 7, c.hidden_size, 20);
      const Matrix y = reference::moe_layer(c, w, x), y_expected = reference::moe_layer(c, expected, x);
      ASSERT_EQ(std::memcmp(y.data(), y_expected.data(), y.bytes()), 0);
    }
    if (c.is_dense_layer(0)) EXPECT_THROW(ck.moe_layer(0), Error);  // DeepSeek's first layer
    EXPECT_THROW(ck.moe_layer(c.num_layers), Error);
    fs::remove(out / "samoyeds.json");
    EXPECT_THROW(ConvertedCheckpoint::open(out.string()), Error);
    EXPECT_THROW(ConvertedCheckpoint::open(t.dir.string()), Error);  // an unconverted directory
    fs::remove_all(out);
    fs::remove_all(t.dir);
  }
}

// An fp32 router and shared gate (ColossalAI's OpenMoE routes in fp32) convert, stay fp32 in the
// converted directory and load rounded to the experts' dtype.
TEST(ConvertedCheckpoint, Fp32RoutersLoadRoundedToTheExpertsDtype) {
  const TinyCheckpoint t = make_tiny_checkpoint("qwen1.5-moe-a2.7b", "fp32-router", 1, 23, DType::f32);
  const fs::path out = convert_tiny(t);
  const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
  const ModelConfig& c = ck.config();
  for (const int layer : c.moe_layers()) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    const PackedMoeWeights w = ck.moe_layer(layer);
    const Matrix& router = t.tensors.at(router_tensor_name(c, layer));
    ASSERT_EQ(router.dtype(), DType::f32);
    ASSERT_EQ(w.router.dtype(), DType::bf16);
    ASSERT_FALSE(w.shared_gate.empty());
    EXPECT_EQ(w.shared_gate.dtype(), DType::bf16);
    for (std::int64_t r = 0; r < router.rows(); ++r)
      for (std::int64_t col = 0; col < router.cols(); ++col)
        ASSERT_EQ(w.router.get(r, col), round_to(DType::bf16, router.get(r, col))) << r << ", " << col;
    const Matrix x = random_normal_matrix(DType::bf16, 5, c.hidden_size, 24);
    EXPECT_EQ(reference::moe_layer(c, w, x).rows(), 5);
  }
  fs::remove_all(out);
  fs::remove_all(t.dir);
}

// The whole model from a converted directory computes what the same model built from the original
// tensors (experts packed with the same pattern) computes.
TEST(ConvertedCheckpoint, ModelEqualsTheOriginalTensorsPacked) {
  for (const char* family : {"qwen1.5-moe-a2.7b", "deepseek-moe-16b", "minicpm-moe-8x2b"}) {
    SCOPED_TRACE(family);
    const TinyCheckpoint t = make_tiny_checkpoint(family, std::string("model-") + family, 1, 29);
    const fs::path out = convert_tiny(t);
    const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
    const ModelConfig& c = ck.config();
    const ModelWeights converted = ck.model();

    ModelWeights expected;  // built from the original tensors
    expected.embedding = t.tensors.at(embedding_tensor_name(c));
    expected.final_norm = t.tensors.at(final_norm_tensor_name(c));
    if (!c.tie_word_embeddings) expected.lm_head = t.tensors.at(lm_head_tensor_name(c));
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerTensorNames n = layer_tensor_names(c, l);
      DecoderLayerWeights layer;
      layer.input_norm = t.tensors.at(n.input_norm);
      layer.post_attention_norm = t.tensors.at(n.post_attention_norm);
      layer.attention = {t.tensors.at(n.q), t.tensors.at(n.k), t.tensors.at(n.v), t.tensors.at(n.o), Matrix(), Matrix(), Matrix()};
      if (c.attention_bias) {
        layer.attention.q_bias = t.tensors.at(n.q_bias);
        layer.attention.k_bias = t.tensors.at(n.k_bias);
        layer.attention.v_bias = t.tensors.at(n.v_bias);
      }
      if (c.is_moe_layer(l)) {
        layer.moe = ck.moe_layer(l);  // equality with pack() of the originals: MoeLayerEqualsThePackedOriginals
      } else {
        layer.mlp = DenseExpert{t.tensors.at(n.dense_mlp.gate), t.tensors.at(n.dense_mlp.up), t.tensors.at(n.dense_mlp.down), Matrix()};
      }
      expected.layers.push_back(std::move(layer));
    }
    const std::vector<std::int32_t> ids = {1, 7, 42, 3}, sequence(4, 0);
    std::vector<reference::KvCache> a = reference::make_kv_caches(c, converted, 1, 8), b = reference::make_kv_caches(c, expected, 1, 8);
    const Matrix logits = reference::model_forward(c, converted, ids, sequence, a);
    const Matrix expected_logits = reference::model_forward(c, expected, ids, sequence, b);
    EXPECT_EQ(std::memcmp(logits.data(), expected_logits.data(), logits.bytes()), 0);
    EXPECT_EQ(ck.model(1).layers.size(), 1u);
    EXPECT_THROW(ck.model(c.num_layers + 1), Error);
    fs::remove_all(out);
    fs::remove_all(t.dir);
  }
}

// write_synthetic_checkpoint: the four per-expert-tensor families, sharded, reads back as the same config and converts,
// loads and runs.
TEST(SyntheticCheckpoint, EveryMappedFamilyConvertsAndRuns) {
  for (const char* family : {"mixtral-8x7b", "deepseek-moe-16b", "qwen1.5-moe-a2.7b", "minicpm-moe-8x2b"}) {
    SCOPED_TRACE(family);
    ModelConfig c = scaled_config(find_model(family), 64, 48);
    c.num_layers = 2;
    c.num_attention_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 40;
    const fs::path dir = fresh_dir(std::string("synth-") + family);
    fs::remove_all(dir);
    write_synthetic_checkpoint(c, dir.string() + "/", DType::bf16, 3, 64 << 10);  // 64 KiB shards: several; "DIR/" is DIR
    EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
    ModelConfig back = load_hf_config(dir.string());
    back.name = c.name;
    back.display_name = c.display_name;
    EXPECT_EQ(back, c);
    EXPECT_THROW(write_synthetic_checkpoint(c, dir.string(), DType::bf16, 3), Error);  // exists

    TinyCheckpoint t;  // only dir is used by convert_tiny
    t.dir = dir;
    const fs::path out = convert_tiny(t);
    const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
    const ModelWeights w = ck.model();
    std::vector<reference::KvCache> caches = reference::make_kv_caches(ck.config(), w, 1, 4);
    const Matrix logits = reference::model_forward(ck.config(), w, std::vector<std::int32_t>{1, 2, 3},
                                                   std::vector<std::int32_t>(3, 0), caches);
    for (std::int64_t v = 0; v < logits.cols(); ++v) ASSERT_TRUE(std::isfinite(logits.get(2, v)));
    fs::remove_all(out);
    fs::remove_all(dir);
  }
}

// OpenMoE: experts fused input-major ([E, H, 2I], [E, H, I], [E, I, H], applied as x @ w). Convert
// must pack the transposes of each expert's slices, the first I gate outputs as gate_linear and the
// second I as gate; the dense and extra MLPs split their [2I, H] gate_proj the same way.
TEST(SyntheticCheckpoint, OpenMoeFusedExpertsConvertLikeTheirSlices) {
  ModelConfig c = scaled_config(find_model("openmoe-8b"), 64, 48);
  c.num_layers = 2;
  c.moe_layer_interval = 2;  // layer 1 is MoE (with its extra MLP), layer 0 dense
  c.moe_layer_phase = 1;
  c.num_experts = 4;
  c.num_attention_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.vocab_size = 40;
  const fs::path dir = fresh_dir("synth-openmoe");
  fs::remove_all(dir);
  write_synthetic_checkpoint(c, dir.string(), DType::bf16, 5, 64 << 10);
  ModelConfig back = load_hf_config(dir.string());
  back.name = c.name;
  back.display_name = c.display_name;
  EXPECT_EQ(back, c);
  const Checkpoint hf = Checkpoint::open(dir.string());
  const std::int64_t H = 64, I = 48;
  EXPECT_EQ(hf.info("model.layers.1.mlp.experts.wi_gate").shape, (std::vector<std::int64_t>{4, H, 2 * I}));
  EXPECT_EQ(hf.info("model.layers.0.mlp.gate_proj.weight").shape, (std::vector<std::int64_t>{2 * I, H}));

  TinyCheckpoint t;
  t.dir = dir;
  const fs::path out = convert_tiny(t);
  const ConvertedCheckpoint ck = ConvertedCheckpoint::open(out.string());
  // Expert e's nn.Linear matrices, built here from the raw fused tensors: W[r][c] = fused[e][c][r0 + r].
  auto slice = [&](const std::string& name, int e, std::int64_t rows, std::int64_t cols, std::int64_t r0) {
    const TensorInfo& info = hf.info(name);
    const auto bytes = hf.file_of(name).bytes(info);
    const std::int64_t n = info.shape[2];
    Matrix m(DType::bf16, rows, cols);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t col = 0; col < cols; ++col) {
        std::uint16_t v;
        std::memcpy(&v, bytes.data() + ((e * cols + col) * n + r0 + r) * 2, 2);
        m.half_data()[r * cols + col] = v;
      }
    return m;
  };
  const PackedMoeWeights moe = ck.moe_layer(1);
  const SparsityPattern pattern = ck.pattern();
  for (int e = 0; e < 4; ++e) {
    SCOPED_TRACE("expert " + std::to_string(e));
    const PackedExpert& got = moe.experts[static_cast<std::size_t>(e)];
    ASSERT_TRUE(got.gate_linear.has_value());
    const std::string p = "model.layers.1.mlp.experts.";
    EXPECT_EQ(got.gate_linear->values, pack(slice(p + "wi_gate", e, I, H, 0), pattern).values);
    EXPECT_EQ(got.gate.values, pack(slice(p + "wi_gate", e, I, H, I), pattern).values);
    EXPECT_EQ(got.gate.metadata, pack(slice(p + "wi_gate", e, I, H, I), pattern).metadata);
    EXPECT_EQ(got.up.values, pack(slice(p + "wi_up", e, I, H, 0), pattern).values);
    EXPECT_EQ(got.down.values, pack(slice(p + "wo", e, H, I, 0), pattern).values);
    EXPECT_EQ(got.down.row_select, pack(slice(p + "wo", e, H, I, 0), pattern).row_select);
  }
  // The whole model: dense layer 0's MLP and layer 1's extra MLP split their gate_proj rows.
  const ModelWeights w = ck.model();
  const Matrix gate_proj = hf.matrix("model.layers.0.mlp.gate_proj.weight");  // [2I, H]
  ASSERT_TRUE(w.layers[0].mlp.has_value() && w.layers[1].extra_mlp.has_value());
  EXPECT_EQ(std::memcmp(w.layers[0].mlp->gate_linear.data(), gate_proj.data(), gate_proj.bytes() / 2), 0);
  EXPECT_EQ(std::memcmp(w.layers[0].mlp->gate.data(), static_cast<const std::uint8_t*>(gate_proj.data()) + gate_proj.bytes() / 2,
                        gate_proj.bytes() / 2), 0);
  EXPECT_FALSE(w.layers[1].extra_norm.empty());
  std::vector<reference::KvCache> caches = reference::make_kv_caches(ck.config(), w, 1, 4);
  const Matrix logits = reference::model_forward(ck.config(), w, std::vector<std::int32_t>{1, 2, 3},
                                                 std::vector<std::int32_t>(3, 0), caches);
  for (std::int64_t v = 0; v < logits.cols(); ++v) ASSERT_TRUE(std::isfinite(logits.get(2, v)));
  // The fused expert tensors are packed, not copied; everything else is.
  std::int64_t copied = 0;
  for (const auto& entry : fs::directory_iterator(out)) {
    if (entry.path().filename().string().rfind("dense-", 0) != 0) continue;
    const SafetensorsFile copied_file = SafetensorsFile::open(entry.path().string());
    for (const TensorInfo& info : copied_file.tensors()) {
      EXPECT_EQ(info.name.find(".mlp.experts."), std::string::npos) << info.name;
      ++copied;
    }
  }
  EXPECT_EQ(copied, static_cast<std::int64_t>(hf.tensor_names().size()) - 3);  // all but wi_gate, wi_up, wo
  fs::remove_all(out);
  fs::remove_all(dir);
}

// The command line end to end: `samoyeds convert`, then `samoyeds moe` on activations from a file,
// whose output equals the reference layer on pack() of the original experts.
TEST(CommandLine, ConvertThenMoeLayerOnAFile) {
  const TinyCheckpoint t = make_tiny_checkpoint("qwen1.5-moe-a2.7b", "cli", 1, 23);
  const fs::path out = t.dir.string() + "-out", x_path = t.dir / "x.safetensors", y_path = t.dir / "y.safetensors";
  fs::remove_all(out);
  const std::string cli = SAMOYEDS_CLI_PATH;
  auto run = [&](const std::string& arguments) {
    return std::system((cli + " " + arguments + " > " + (t.dir / "cli.log").string() + " 2>&1").c_str());
  };
  ASSERT_EQ(run("convert --in " + t.dir.string() + " --out " + out.string() + " --pattern 1:2:32"), 0) << read_text(t.dir / "cli.log");
  EXPECT_NE(read_text(t.dir / "cli.log").find("relative error"), std::string::npos);

  const Matrix x = random_normal_matrix(DType::bf16, 5, t.config.hidden_size, 24);
  SafetensorsWriter writer;
  writer.add("hidden_states", "BF16", {x.rows(), x.cols()}, bytes_of(x));
  writer.write(x_path.string());
  ASSERT_EQ(run("moe --checkpoint " + out.string() + " --layer 1 --input " + x_path.string() + " --output " + y_path.string() +
                " --device cpu"), 0)
      << read_text(t.dir / "cli.log");
  const SafetensorsFile y_file = SafetensorsFile::open(y_path.string());
  const Matrix y = read_matrix(y_file, y_file.tensor("y"), y_path.string());
  const Matrix expected = reference::moe_layer(t.config, ConvertedCheckpoint::open(out.string()).moe_layer(1), x);
  ASSERT_EQ(y.bytes(), expected.bytes());
  EXPECT_EQ(std::memcmp(y.data(), expected.data(), y.bytes()), 0);
  EXPECT_EQ(*y_file.metadata_value("samoyeds.layer"), "1");

  // The whole converted model generates (CPU reference).
  ASSERT_EQ(run("run --checkpoint " + out.string() + " --batch 2 --prompt-len 3 --gen-len 3 --device cpu"), 0)
      << read_text(t.dir / "cli.log");
  const std::string log = read_text(t.dir / "cli.log");
  EXPECT_NE(log.find("tokens/s"), std::string::npos) << log;
  std::istringstream generated(log.substr(log.find("generated:") + 10));
  std::vector<long> tokens;
  for (long id; generated >> id;) tokens.push_back(id);
  EXPECT_EQ(tokens.size(), 3u) << log;
  for (const long id : tokens) EXPECT_TRUE(id >= 0 && id < t.config.vocab_size) << id;
  EXPECT_NE(run("run --checkpoint " + out.string() + " --layers 9 --device cpu"), 0);
  EXPECT_NE(run("run --checkpoint " + out.string() + " --compare --device cpu"), 0);  // the dense baseline is GPU-only
  EXPECT_NE(run("run --checkpoint " + out.string() + " --batch 1,2 --device cpu"), 0);  // one size on the CPU
  EXPECT_NE(run("maxbatch --checkpoint " + out.string() + " --device cpu"), 0);       // needs a GPU
  EXPECT_NE(read_text(t.dir / "cli.log").find("needs an NVIDIA GPU"), std::string::npos) << read_text(t.dir / "cli.log");
  EXPECT_NE(run("run --checkpoint " + out.string() + " --batch 0 --device cpu"), 0);
  EXPECT_NE(run("run --checkpoint " + out.string() + " --batch= --device cpu"), 0);  // no size at all

  // Bad requests fail with a message and a non-zero status, and write nothing.
  fs::remove(y_path);
  EXPECT_NE(run("moe --checkpoint " + out.string() + " --layer 7 --input " + x_path.string() + " --output " + y_path.string()), 0);
  EXPECT_NE(run("moe --checkpoint " + t.dir.string() + " --layer 1 --input " + x_path.string() + " --output " + y_path.string()), 0);
  EXPECT_NE(run("convert --in " + t.dir.string() + " --out " + out.string()), 0);  // exists, no --force
  EXPECT_FALSE(fs::exists(y_path));
  fs::remove_all(out);
  fs::remove_all(t.dir);
}

}  // namespace
}  // namespace samoyeds
