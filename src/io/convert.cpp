// SPDX-License-Identifier: Apache-2.0
// Checkpoint conversion: HF names -> packed expert files per MoE layer + the other tensors copied.
#include "samoyeds/convert.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "io/json.h"
#include "io/file_util.h"
#include "samoyeds/checkpoint.h"
#include "samoyeds/error.h"
#include "samoyeds/hf_names.h"
#include "samoyeds/model_config.h"
#include "samoyeds/packed_file.h"

namespace samoyeds {

namespace fs = std::filesystem;

double ConvertReport::mean_relative_error() const {
  if (matrices.empty()) return 0.0;
  double sum = 0.0;
  for (const ConvertedMatrix& m : matrices) sum += m.relative_error;
  return sum / static_cast<double>(matrices.size());
}

double ConvertReport::max_relative_error() const {
  double worst = 0.0;
  for (const ConvertedMatrix& m : matrices) worst = std::max(worst, m.relative_error);
  return worst;
}

namespace {

// `m` in `dtype` (rounded to nearest even from fp32; unchanged when it already is `dtype`).
Matrix rounded_to(Matrix m, DType dtype) {
  if (m.dtype() == dtype || m.dtype() != DType::f32) return m;
  Matrix out(dtype, m.rows(), m.cols());
  for (std::int64_t r = 0; r < m.rows(); ++r)
    for (std::int64_t c = 0; c < m.cols(); ++c) out.set(r, c, m.get(r, c));
  return out;
}

constexpr const char* kSuffix = ".weight";

std::string base_name(const std::string& tensor) { return tensor.substr(0, tensor.size() - std::string(kSuffix).size()); }

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

double relative_error(const Matrix& dense, const Matrix& effective) {
  double diff = 0.0, norm = 0.0;
  std::vector<float> w(static_cast<std::size_t>(dense.cols())), e(w.size());
  for (std::int64_t r = 0; r < dense.rows(); ++r) {
    dense.row_to_float(r, w.data());
    effective.row_to_float(r, e.data());
    for (std::size_t c = 0; c < w.size(); ++c) {
      const double d = static_cast<double>(w[c]) - e[c];
      diff += d * d;
      norm += static_cast<double>(w[c]) * w[c];
    }
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : 0.0;
}

struct ExpertMatrix {
  std::string name;  // the packed matrix's tensor name (HF's, or for OpenMoE the converted slice's)
  std::int64_t rows, cols;
  std::string tensor;  // the checkpoint tensor it comes from
  // OpenMoE: expert `expert` of a fused input-major tensor [E, cols, n] (applied as x @ w), rows
  // [row_begin, row_begin + rows) of that slice's transpose. -1: `tensor` is the [rows, cols] matrix.
  int expert = -1;
  std::int64_t row_begin = 0;
};

// Every expert matrix of MoE layer `layer` with the shape the config gives it.
std::vector<ExpertMatrix> layer_expert_matrices(const ModelConfig& config, int layer) {
  const std::int64_t H = config.hidden_size, I = config.intermediate_size;
  std::vector<ExpertMatrix> out;
  auto add_mlp = [&](const MlpTensorNames& names, std::int64_t width) {
    out.push_back({names.gate, width, H, names.gate});
    out.push_back({names.up, width, H, names.up});
    out.push_back({names.down, H, width, names.down});
  };
  if (config.family == ModelFamily::openmoe) {
    const FusedExpertTensorNames fused = openmoe_expert_tensor_names(config, layer);
    for (int e = 0; e < config.num_experts; ++e) {
      const MlpTensorNames n = expert_tensor_names(config, layer, e);
      out.push_back({n.gate_linear, I, H, fused.wi_gate, e, 0});  // the first I gate outputs multiply
      out.push_back({n.gate, I, H, fused.wi_gate, e, I});         // the second I go through SiLU
      out.push_back({n.up, I, H, fused.wi_up, e, 0});
      out.push_back({n.down, H, I, fused.wo, e, 0});
    }
    return out;
  }
  for (int e = 0; e < config.num_experts; ++e) add_mlp(expert_tensor_names(config, layer, e), config.intermediate_size);
  if (const auto shared = shared_expert_tensor_names(config, layer)) add_mlp(*shared, config.shared_intermediate_size);
  return out;
}

// The [rows, cols] nn.Linear matrix of an OpenMoE slice: out[r][c] = fused[expert][c][row_begin + r].
Matrix fused_slice(const Checkpoint& ckpt, const ExpertMatrix& m, DType dtype) {
  const TensorInfo& info = ckpt.info(m.tensor);
  SAMOYEDS_CHECK(info.shape.size() == 3 && m.expert < info.shape[0] && info.shape[1] == m.cols &&
                     m.row_begin + m.rows <= info.shape[2],
                 "convert: \"", m.tensor, "\" has shape ", shape_string(info.shape), "; cannot take expert ", m.expert,
                 "'s [", m.rows, ", ", m.cols, "] slice from it");
  const std::int64_t n = info.shape[2];
  // Byte pointer and memcpy: a tensor's data need not be 2-byte aligned in the file.
  const std::uint8_t* src = ckpt.file_of(m.tensor).bytes(info).data() + static_cast<std::int64_t>(m.expert) * m.cols * n * 2;
  Matrix out(dtype, m.rows, m.cols);
  std::uint16_t* dst = out.half_data();
  for (std::int64_t c = 0; c < m.cols; ++c)  // read each input row once, scatter into the columns
    for (std::int64_t r = 0; r < m.rows; ++r) std::memcpy(dst + r * m.cols + c, src + (c * n + m.row_begin + r) * 2, 2);
  return out;
}

std::vector<float> calibration_norms(const std::optional<SafetensorsFile>& calibration, const std::string& name,
                                     std::int64_t cols) {
  const std::string key = name + ".input_norm";
  const TensorInfo* info = calibration->find(key);
  SAMOYEDS_CHECK(info, "calibration file '", calibration->path(), "' has no tensor \"", key,
                 "\" (||x_col||_2 of the inputs of ", name, ")");
  const Matrix norms = read_matrix(*calibration, *info, calibration->path());
  SAMOYEDS_CHECK(norms.dtype() == DType::f32 && norms.rows() == 1 && norms.cols() == cols, "calibration tensor \"", key,
                 "\" must be F32 [", cols, "] or [1, ", cols, "]");
  return norms.to_float();
}

ConvertReport convert_into(const ConvertOptions& o, const fs::path& tmp) {
  auto say = [&](const std::string& line) {
    if (o.progress) o.progress(line);
  };
  const ModelConfig config = load_hf_config(o.in_dir);
  const Checkpoint ckpt = Checkpoint::open(o.in_dir);
  std::optional<SafetensorsFile> calibration;
  if (o.policy == PruningPolicy::activation) {
    SAMOYEDS_CHECK(!o.calibration_path.empty(), "convert: the activation policy needs a calibration file (--calib)");
    calibration.emplace(SafetensorsFile::open(o.calibration_path));
  }
  ConvertReport report;
  report.model = config.display_name;
  say("converting " + config.display_name + " (" + std::to_string(config.num_moe_layers()) + " MoE layers, " +
      std::to_string(ckpt.num_shards()) + " shard(s)) to pattern " + o.pattern.to_string() + ", " +
      pruning_policy_name(o.policy) + " pruning");

  std::set<std::string> packed_tensors;
  json::Value expert_files = json::Value::array();
  const std::vector<int> moe_layers = config.moe_layers();
  for (std::size_t li = 0; li < moe_layers.size(); ++li) {
    const int layer = moe_layers[li];
    PackedFile out;
    double layer_error = 0.0;
    const std::vector<ExpertMatrix> matrices = layer_expert_matrices(config, layer);
    // One half-precision dtype per layer: the experts'. The router and shared gate share it or are
    // F32 (ColossalAI's OpenMoE routes in fp32); an F32 one is copied as is and rounded to the
    // experts' dtype when the converted checkpoint is loaded (ConvertedCheckpoint::moe_layer).
    const std::string dtype = ckpt.info(matrices.front().tensor).dtype;
    auto check_dense = [&](const std::string& tensor, std::int64_t rows) {
      const TensorInfo& info = ckpt.info(tensor);
      const bool shape_ok = info.shape == std::vector<std::int64_t>{rows, config.hidden_size} ||
                            (rows == 1 && info.shape == std::vector<std::int64_t>{config.hidden_size});
      SAMOYEDS_CHECK(shape_ok && (info.dtype == dtype || info.dtype == "F32"), "convert: \"", tensor, "\" is ", info.dtype,
                     " ", shape_string(info.shape), " but layer ", layer, " needs ", dtype, " or F32 [", rows, ", ",
                     config.hidden_size, "] (the experts' dtype)");
    };
    check_dense(router_tensor_name(config, layer), config.num_experts);
    if (const auto gate = shared_gate_tensor_name(config, layer)) check_dense(*gate, 1);
    for (const ExpertMatrix& m : matrices) {
      const TensorInfo& info = ckpt.info(m.tensor);
      SAMOYEDS_CHECK(info.dtype == dtype, "convert: \"", m.tensor, "\" is ", info.dtype, " but the other experts of layer ",
                     layer, " are ", dtype, "; a layer's experts must share one dtype");
      SAMOYEDS_CHECK(info.dtype == "BF16" || info.dtype == "F16", "convert: \"", m.tensor, "\" is ", info.dtype,
                     "; expert weights must be BF16 or F16 (cast the checkpoint first)");
      if (m.expert < 0) {
        SAMOYEDS_CHECK(info.shape == (std::vector<std::int64_t>{m.rows, m.cols}), "convert: \"", m.tensor, "\" has shape ",
                       shape_string(info.shape), " but ", config.display_name, " needs [", m.rows, ", ", m.cols, "]");
      } else {
        // OpenMoE: [E, in, out] with out = 2I for wi_gate (whose rows this slice takes half of).
        const std::int64_t out_width = m.tensor == openmoe_expert_tensor_names(config, layer).wi_gate ? 2 * m.rows : m.rows;
        const std::vector<std::int64_t> want = {config.num_experts, m.cols, out_width};
        SAMOYEDS_CHECK(info.shape == want, "convert: \"", m.tensor, "\" has shape ", shape_string(info.shape), " but ",
                       config.display_name, " needs ", shape_string(want), " (experts fused, input-major)");
      }
      const DType matrix_dtype = info.dtype == "BF16" ? DType::bf16 : DType::f16;
      const Matrix dense = m.expert < 0 ? ckpt.matrix(m.tensor) : fused_slice(ckpt, m, matrix_dtype);
      PackOptions pack_options;
      pack_options.policy = o.policy;
      const std::string name = base_name(m.name);
      if (calibration) pack_options.column_norms = calibration_norms(calibration, name, m.cols);
      PackedMatrix packed = pack(dense, o.pattern, pack_options);
      const double error = relative_error(dense, unpack(packed));
      report.matrices.push_back({name, m.rows, m.cols, error});
      report.dense_expert_bytes += static_cast<std::int64_t>(dense.bytes());
      report.packed_expert_bytes += packed.geometry().total_bytes();
      layer_error += error;
      say("  " + name + " [" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + "]: relative error " +
          std::to_string(error));
      out.matrices.emplace(name, std::move(packed));
      packed_tensors.insert(m.tensor);
    }
    const std::string file_name = expert_file_name(layer);
    write_packed_file((tmp / file_name).string(), out);
    expert_files.push_back(json::Value(file_name));
    say("layer " + std::to_string(layer) + " (" + std::to_string(li + 1) + "/" + std::to_string(moe_layers.size()) +
        "): " + std::to_string(matrices.size()) + " matrices packed, mean relative error " +
        std::to_string(layer_error / static_cast<double>(matrices.size())));
  }

  // Everything else, shard by shard, byte for byte (the writer reads straight from the mapped input).
  json::Value dense_files = json::Value::array();
  for (std::size_t s = 0; s < ckpt.num_shards(); ++s) {
    SafetensorsWriter writer;
    for (const TensorInfo& t : ckpt.shard(s).tensors()) {
      if (packed_tensors.count(t.name)) continue;
      writer.add(t.name, t.dtype, t.shape, ckpt.shard(s).bytes(t));
    }
    if (writer.num_tensors() == 0) continue;
    const std::string file_name = "dense-" + ckpt.shard_names()[s];
    writer.write((tmp / file_name).string());
    report.copied_tensors += static_cast<std::int64_t>(writer.num_tensors());
    dense_files.push_back(json::Value(file_name));
    say("copied " + std::to_string(writer.num_tensors()) + " other tensors of " + ckpt.shard_names()[s]);
  }

  detail::write_text_file((tmp / "config.json").string(),
                          detail::read_text_file((fs::path(o.in_dir) / "config.json").string(), 16u << 20));
  json::Value manifest = json::Value::object();
  manifest.set("samoyeds_checkpoint_version", json::Value(std::string("1")));
  manifest.set("model", json::Value(config.display_name));
  manifest.set("pattern", json::Value(o.pattern.to_string()));
  manifest.set("policy", json::Value(std::string(pruning_policy_name(o.policy))));
  manifest.set("expert_files", std::move(expert_files));
  manifest.set("dense_files", std::move(dense_files));
  detail::write_text_file((tmp / "samoyeds.json").string(), json::dump(manifest) + "\n");
  return report;
}

}  // namespace

std::string expert_file_name(int layer) {
  char name[64];
  std::snprintf(name, sizeof(name), "experts-layer-%05d.safetensors", layer);
  return name;
}

ConvertReport convert_checkpoint(const ConvertOptions& o) {
  SAMOYEDS_CHECK(!o.in_dir.empty() && !o.out_dir.empty(), "convert: give the input and the output directory");
  const fs::path in = detail::normalized_dir(o.in_dir), out = detail::normalized_dir(o.out_dir);
  std::error_code ec;
  SAMOYEDS_CHECK(fs::is_directory(in, ec), "convert: '", o.in_dir, "' is not a checkpoint directory");
  SAMOYEDS_CHECK(!detail::is_within(out, in) && !detail::is_within(in, out), "convert: the output directory '",
                 o.out_dir, "' must not be the input directory, lie inside it, or contain it");
  if (fs::exists(out, ec)) {
    SAMOYEDS_CHECK(o.overwrite, "convert: '", o.out_dir,
                   "' exists; choose another output directory or allow replacing it (--force)");
    // --force replaces an earlier conversion or an empty directory, never anything else.
    SAMOYEDS_CHECK(fs::is_directory(out, ec) && (fs::exists(out / "samoyeds.json", ec) || fs::is_empty(out, ec)),
                   "convert: --force replaces only an earlier conversion (a directory with samoyeds.json) or an empty "
                   "directory; '", o.out_dir, "' is neither");
  }
  const fs::path tmp = detail::temporary_sibling(out);
  fs::remove_all(tmp, ec);
  SAMOYEDS_CHECK(fs::create_directories(tmp, ec), "convert: cannot create '", tmp.string(), "': ", ec.message());
  try {
    ConvertReport report = convert_into(o, tmp);
    detail::fsync_directory(tmp);
    if (fs::exists(out, ec)) fs::remove_all(out);  // an earlier conversion, with --force
    fs::rename(tmp, out);
    detail::fsync_directory(out.has_parent_path() ? out.parent_path() : fs::path("."));
    return report;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

// --- reading a converted directory --------------------------------------------------------------------

ConvertedCheckpoint ConvertedCheckpoint::open(const std::string& dir) {
  const fs::path manifest_path = fs::path(dir) / "samoyeds.json";
  std::error_code ec;
  SAMOYEDS_CHECK(fs::is_regular_file(manifest_path, ec), "'", dir,
                 "' is not a converted checkpoint (no samoyeds.json): run `samoyeds convert` on the Hugging Face directory");
  const std::string where = manifest_path.string();
  json::Value manifest;
  try {
    manifest = json::parse(detail::read_text_file(where, 16u << 20));
  } catch (const Error& e) {
    SAMOYEDS_FAIL(where, ": ", e.message());
  }
  auto field = [&](const char* key) -> const json::Value& {
    const json::Value* v = manifest.find(key);
    SAMOYEDS_CHECK(v, where, ": missing \"", key, "\"");
    return *v;
  };
  SAMOYEDS_CHECK(field("samoyeds_checkpoint_version").is_string() && field("samoyeds_checkpoint_version").as_string() == "1",
                 where, ": samoyeds_checkpoint_version must be \"1\" (this build reads version 1 only)");
  auto names = [&](const char* key) {
    std::vector<std::string> out;
    SAMOYEDS_CHECK(field(key).is_array(), where, ": \"", key, "\" must be an array of file names");
    for (const json::Value& v : field(key).as_array()) {
      SAMOYEDS_CHECK(v.is_string(), where, ": \"", key, "\" must hold file names");
      out.push_back(v.as_string());
    }
    return out;
  };
  ConvertedCheckpoint c;
  c.dir_ = dir;
  SAMOYEDS_CHECK(field("pattern").is_string(), where, ": \"pattern\" must be a string such as \"1:2:128\"");
  c.pattern_ = SparsityPattern::parse(field("pattern").as_string());
  c.expert_files_ = names("expert_files");
  c.config_ = load_hf_config(dir);
  c.dense_ = Checkpoint::open_files(dir, names("dense_files"));
  return c;
}

PackedMoeWeights ConvertedCheckpoint::moe_layer(int layer) const {
  const std::string file = expert_file_name(layer);
  SAMOYEDS_CHECK(config_.is_moe_layer(layer), config_.display_name, " layer ", layer, " is not a MoE layer (MoE layers: ",
                 config_.num_moe_layers(), ", the first is ", config_.moe_layers().front(), ")");
  SAMOYEDS_CHECK(std::find(expert_files_.begin(), expert_files_.end(), file) != expert_files_.end(), "'", dir_,
                 "': samoyeds.json lists no ", file);
  PackedFile packed = read_packed_file((fs::path(dir_) / file).string());
  auto take = [&](const std::string& tensor) {
    const std::string name = base_name(tensor);
    const auto it = packed.matrices.find(name);
    SAMOYEDS_CHECK(it != packed.matrices.end(), "'", dir_, "/", file, "' has no packed matrix \"", name, "\"");
    SAMOYEDS_CHECK(it->second.pattern == pattern_, "'", dir_, "/", file, "': \"", name, "\" is packed as ",
                   it->second.pattern.to_string(), " but samoyeds.json says ", pattern_.to_string());
    return std::move(it->second);
  };
  auto take_mlp = [&](const MlpTensorNames& n) {
    PackedExpert e{take(n.gate), take(n.up), take(n.down), std::nullopt};
    if (!n.gate_linear.empty()) e.gate_linear = take(n.gate_linear);
    return e;
  };
  PackedMoeWeights w;
  for (int e = 0; e < config_.num_experts; ++e) w.experts.push_back(take_mlp(expert_tensor_names(config_, layer, e)));
  if (const auto shared = shared_expert_tensor_names(config_, layer)) w.shared = take_mlp(*shared);
  // Routing runs in the experts' dtype: an fp32 router (or shared gate) is rounded to it, to nearest even.
  const DType expert_dtype = w.experts.front().gate.dtype;
  w.router = rounded_to(dense_.matrix(router_tensor_name(config_, layer)), expert_dtype);
  if (const auto gate = shared_gate_tensor_name(config_, layer)) w.shared_gate = rounded_to(dense_.matrix(*gate), expert_dtype);
  check_moe_weights(config_, w);
  return w;
}

DenseExpert ConvertedCheckpoint::dense_mlp(const MlpTensorNames& names) const {
  DenseExpert mlp{dense_.matrix(names.gate), dense_.matrix(names.up), dense_.matrix(names.down), Matrix()};
  if (config_.activation == ExpertActivation::openmoe_swiglu) {
    // OpenMoeMLP's gate_proj is [2I, H]: the first I outputs multiply, the second I go through SiLU.
    const Matrix fused = std::move(mlp.gate);
    const std::int64_t I = fused.rows() / 2;
    SAMOYEDS_CHECK(fused.rows() == 2 * mlp.up.rows(), "'", dir_, "': \"", names.gate, "\" has ", fused.rows(),
                   " rows; OpenMoE's gate_proj needs 2 x ", mlp.up.rows(), " (twice the up projection)");
    auto rows = [&](std::int64_t begin) {
      Matrix half(fused.dtype(), I, fused.cols());
      std::memcpy(half.data(),
                  static_cast<const std::uint8_t*>(fused.data()) + static_cast<std::size_t>(begin * fused.cols()) * dtype_size(fused.dtype()),
                  half.bytes());
      return half;
    };
    mlp.gate_linear = rows(0);
    mlp.gate = rows(I);
  }
  return mlp;
}

ModelWeights ConvertedCheckpoint::model(int num_layers) const {
  const int layers = num_layers == 0 ? config_.num_layers : num_layers;
  SAMOYEDS_CHECK(layers >= 1 && layers <= config_.num_layers, config_.display_name, " has ", config_.num_layers,
                 " layers; asked for ", num_layers);
  ModelWeights w;
  w.embedding = dense_.matrix(embedding_tensor_name(config_));
  w.final_norm = dense_.matrix(final_norm_tensor_name(config_));
  if (!config_.tie_word_embeddings) w.lm_head = dense_.matrix(lm_head_tensor_name(config_));
  for (int l = 0; l < layers; ++l) {
    const LayerTensorNames n = layer_tensor_names(config_, l);
    DecoderLayerWeights layer;
    layer.input_norm = dense_.matrix(n.input_norm);
    layer.post_attention_norm = dense_.matrix(n.post_attention_norm);
    layer.attention = {dense_.matrix(n.q), dense_.matrix(n.k), dense_.matrix(n.v), dense_.matrix(n.o), Matrix(), Matrix(), Matrix()};
    if (config_.attention_bias) {
      layer.attention.q_bias = dense_.matrix(n.q_bias);
      layer.attention.k_bias = dense_.matrix(n.k_bias);
      layer.attention.v_bias = dense_.matrix(n.v_bias);
    }
    if (config_.is_moe_layer(l)) {
      layer.moe = moe_layer(l);
      if (config_.extra_dense_mlp) {
        layer.extra_norm = dense_.matrix(n.extra_norm);
        layer.extra_mlp = dense_mlp(n.extra_mlp);
      }
    } else {
      layer.mlp = dense_mlp(n.dense_mlp);
    }
    w.layers.push_back(std::move(layer));
  }
  check_model(config_, w);
  return w;
}

}  // namespace samoyeds
