// SPDX-License-Identifier: Apache-2.0
// Hugging Face checkpoint directories: one safetensors file or index + shards, cross-checked.
#include "samoyeds/checkpoint.h"

#include <cstring>
#include <filesystem>

#include "io/json.h"
#include "io/tensor_dtype.h"
#include "io/file_util.h"
#include "samoyeds/error.h"

namespace samoyeds {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr std::uintmax_t kMaxIndexBytes = 64u << 20;  // real indexes are well under 1 MB

// A shard name from an index: a plain file name in the checkpoint directory, nothing that walks out.
void check_shard_name(const std::string& index_path, const std::string& name) {
  SAMOYEDS_CHECK(!name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
                     name != "." && name != "..",
                 index_path, ": shard \"", name, "\" is not a plain file name in the checkpoint directory");
}

}  // namespace

Matrix read_matrix(const SafetensorsFile& file, const TensorInfo& info, const std::string& where) {
  const std::optional<DType> matrix_dtype = detail::matrix_dtype_of(info.dtype);
  SAMOYEDS_CHECK(matrix_dtype.has_value(), where, ": tensor \"", info.name, "\" is ", info.dtype,
                 "; only BF16, F16 and F32 tensors can be read as matrices");
  const DType dtype = *matrix_dtype;
  SAMOYEDS_CHECK(info.shape.size() == 1 || info.shape.size() == 2, where, ": tensor \"", info.name, "\" has ",
                 info.shape.size(), " dimensions; a matrix needs 1 or 2");
  const std::int64_t rows = info.shape.size() == 2 ? info.shape[0] : 1;
  const std::int64_t cols = info.shape.back();
  Matrix m(dtype, rows, cols);
  const std::span<const std::uint8_t> bytes = file.bytes(info);
  SAMOYEDS_CHECK(bytes.size() == m.bytes(), where, ": tensor \"", info.name, "\" holds ", bytes.size(),
                 " bytes for ", m.bytes(), " expected");
  if (!bytes.empty()) std::memcpy(m.data(), bytes.data(), bytes.size());
  return m;
}

Checkpoint Checkpoint::open(const std::string& dir) {
  std::error_code ec;
  SAMOYEDS_CHECK(fs::is_directory(dir, ec), "checkpoint: '", dir, "' is not a directory");
  std::vector<std::string> shard_names;
  const fs::path index_path = fs::path(dir) / kIndexName;
  std::map<std::string, std::string> weight_map;  // tensor -> shard, from the index
  if (fs::exists(index_path, ec)) {
    const std::string where = index_path.string();
    json::Value index;
    try {
      index = json::parse(detail::read_text_file(index_path.string(), kMaxIndexBytes));
    } catch (const Error& e) {
      SAMOYEDS_FAIL(where, ": ", e.message());
    }
    const json::Value* map = index.find("weight_map");
    SAMOYEDS_CHECK(map && map->is_object(), where, ": no \"weight_map\" object");
    std::map<std::string, bool> shards;
    for (const auto& [tensor, shard] : map->as_object()) {
      SAMOYEDS_CHECK(shard.is_string(), where, ": weight_map[\"", tensor, "\"] is not a file name string");
      check_shard_name(where, shard.as_string());
      SAMOYEDS_CHECK(weight_map.emplace(tensor, shard.as_string()).second, where, ": tensor \"", tensor, "\" is listed twice");
      shards[shard.as_string()] = true;
    }
    SAMOYEDS_CHECK(!shards.empty(), where, ": the weight_map is empty");
    for (const auto& [name, unused] : shards) shard_names.push_back(name);
  } else if (fs::exists(fs::path(dir) / "model.safetensors", ec)) {
    shard_names.push_back("model.safetensors");
  } else {
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.is_regular_file() && entry.path().extension() == ".safetensors")
        shard_names.push_back(entry.path().filename().string());
    SAMOYEDS_CHECK(shard_names.size() == 1, "checkpoint '", dir, "': found ", shard_names.size(),
                   " .safetensors files and no ", kIndexName, "; a sharded checkpoint needs its index");
  }
  return load(dir, std::move(shard_names), weight_map);
}

Checkpoint Checkpoint::open_files(const std::string& dir, const std::vector<std::string>& file_names) {
  std::error_code ec;
  SAMOYEDS_CHECK(fs::is_directory(dir, ec), "checkpoint: '", dir, "' is not a directory");
  for (const std::string& name : file_names) check_shard_name(dir, name);
  return load(dir, file_names, {});
}

Checkpoint Checkpoint::load(const std::string& dir, std::vector<std::string> shard_names,
                            const std::map<std::string, std::string>& weight_map) {
  std::error_code ec;
  Checkpoint ckpt;
  ckpt.dir_ = dir;
  ckpt.shard_names_ = std::move(shard_names);

  for (std::size_t i = 0; i < ckpt.shard_names_.size(); ++i) {
    const fs::path path = fs::path(dir) / ckpt.shard_names_[i];
    SAMOYEDS_CHECK(fs::is_regular_file(path, ec), "checkpoint '", dir, "': shard '", ckpt.shard_names_[i],
                   "' is missing");
    ckpt.shards_.push_back(SafetensorsFile::open(path.string()));
    for (const TensorInfo& t : ckpt.shards_.back().tensors()) {
      const auto [it, fresh] = ckpt.where_.emplace(t.name, i);
      SAMOYEDS_CHECK(fresh, "checkpoint '", dir, "': tensor \"", t.name, "\" is in both '",
                     ckpt.shard_names_[it->second], "' and '", ckpt.shard_names_[i], "'");
      if (!weight_map.empty()) {
        const auto listed = weight_map.find(t.name);
        SAMOYEDS_CHECK(listed != weight_map.end(), "checkpoint '", dir, "': tensor \"", t.name, "\" of '",
                       ckpt.shard_names_[i], "' is not in ", kIndexName);
        SAMOYEDS_CHECK(listed->second == ckpt.shard_names_[i], "checkpoint '", dir, "': ", kIndexName, " puts \"",
                       t.name, "\" in '", listed->second, "' but it is in '", ckpt.shard_names_[i], "'");
      }
    }
  }
  for (const auto& [tensor, shard] : weight_map)
    SAMOYEDS_CHECK(ckpt.where_.count(tensor) == 1, "checkpoint '", dir, "': ", kIndexName, " lists \"", tensor,
                   "\" in '", shard, "', which does not hold it");
  return ckpt;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, shard] : where_) names.push_back(name);
  return names;
}

const SafetensorsFile& Checkpoint::file_of(std::string_view name) const {
  const auto it = where_.find(name);
  SAMOYEDS_CHECK(it != where_.end(), "checkpoint '", dir_, "' has no tensor \"", name, "\"");
  return shards_[it->second];
}

const TensorInfo& Checkpoint::info(std::string_view name) const { return file_of(name).tensor(name); }

Matrix Checkpoint::matrix(std::string_view name) const {
  const SafetensorsFile& file = file_of(name);
  return read_matrix(file, file.tensor(name), file.path());
}

}  // namespace samoyeds
