// SPDX-License-Identifier: Apache-2.0
// Packed-expert files on top of safetensors (docs/packed_file.md). The reader treats the file as
// hostile: every tensor a matrix needs must be present with exactly the dtype and shape that
// packed_geometry() derives from the declared pattern and size, nothing may be left unclaimed, and
// each matrix must pass PackedMatrix::validate() before it is returned.
#include "samoyeds/packed_file.h"

#include <array>
#include <cstring>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include "io/json.h"
#include "io/tensor_dtype.h"
#include "samoyeds/error.h"
#include "samoyeds/safetensors.h"

namespace samoyeds {

namespace {

constexpr std::string_view kReservedPrefix = "samoyeds.";
constexpr const char* kVersionKey = "samoyeds.format_version";
constexpr const char* kMatricesKey = "samoyeds.matrices";
constexpr std::array<std::string_view, 3> kSuffixes = {".values", ".metadata", ".row_select"};
// Bounds the declared sizes so the geometry arithmetic cannot overflow on a hostile header.
constexpr std::int64_t kMaxExtent = std::int64_t{1} << 31;

using detail::safetensors_dtype_of;

template <class T>
std::span<const std::uint8_t> as_bytes(const std::vector<T>& items) {
  return {reinterpret_cast<const std::uint8_t*>(items.data()), items.size() * sizeof(T)};
}

struct ExpectedTensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
};

// The tensors matrix `name` occupies on disk, in file order.
std::vector<ExpectedTensor> expected_tensors(const std::string& name, const SparsityPattern& pattern, DType dtype,
                                             const PackedGeometry& g) {
  std::vector<ExpectedTensor> out;
  out.push_back({name + ".values", safetensors_dtype_of(dtype), {g.compressed_rows_padded, g.cols_padded / 2}});
  out.push_back({name + ".metadata", "U32", {g.compressed_rows_padded / 16, g.cols_padded / 32, 16}});
  if (pattern.has_row_selection()) {
    out.push_back({name + ".row_select", "U32", {g.compressed_rows_padded / 32, g.num_segments, g.select_bits}});
  }
  return out;
}

// The matrix a dense tensor name would shadow, or nullptr: "X" itself or "X.values"-style names.
const std::string* colliding_matrix(const std::string& dense_name, const std::set<std::string, std::less<>>& matrices,
                                    std::string& storage) {
  if (matrices.contains(dense_name)) {
    storage = dense_name;
    return &storage;
  }
  for (const std::string_view suffix : kSuffixes) {
    if (dense_name.size() > suffix.size() && dense_name.ends_with(suffix)) {
      storage = dense_name.substr(0, dense_name.size() - suffix.size());
      if (matrices.contains(storage)) return &storage;
    }
  }
  return nullptr;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

template <class T>
std::vector<T> copy_words(std::span<const std::uint8_t> bytes) {
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());  // spans may be unaligned
  return out;
}

// Parses one entry of samoyeds.matrices into an empty PackedMatrix (pattern, dtype, rows, cols).
PackedMatrix parse_matrix_entry(const std::string& where, const std::string& name, const json::Value& entry) {
  const auto bad = [&](auto&&... what) {
    SAMOYEDS_FAIL("packed file '", where, "': matrix \"", name, "\" in samoyeds.matrices: ", what...);
  };
  if (!entry.is_object()) bad("expected an object {pattern, dtype, rows, cols}");
  for (const auto& member : entry.as_object()) {
    if (member.first != "pattern" && member.first != "dtype" && member.first != "rows" && member.first != "cols") {
      bad("unknown field \"", member.first, "\" (expected pattern, dtype, rows, cols)");
    }
  }
  const json::Value* pattern = entry.find("pattern");
  const json::Value* dtype = entry.find("dtype");
  const json::Value* rows = entry.find("rows");
  const json::Value* cols = entry.find("cols");
  if (pattern == nullptr || !pattern->is_string()) bad("missing or non-string \"pattern\"");
  if (dtype == nullptr || !dtype->is_string()) bad("missing or non-string \"dtype\"");
  if (rows == nullptr || !rows->is_integer()) bad("missing or non-integer \"rows\"");
  if (cols == nullptr || !cols->is_integer()) bad("missing or non-integer \"cols\"");
  PackedMatrix matrix;
  try {
    matrix.pattern = SparsityPattern::parse(pattern->as_string());
    matrix.dtype = parse_dtype(dtype->as_string());
  } catch (const Error& error) {
    bad(error.message());
  }
  if (!is_half_precision(matrix.dtype)) bad("dtype must be bf16 or fp16, got \"", dtype->as_string(), "\"");
  matrix.rows = rows->as_int();
  matrix.cols = cols->as_int();
  if (matrix.rows < 1 || matrix.rows > kMaxExtent || matrix.cols < 1 || matrix.cols > kMaxExtent) {
    bad("rows and cols must be in [1, 2^31], got [", matrix.rows, ", ", matrix.cols, "]");
  }
  return matrix;
}

}  // namespace

void write_packed_file(const std::string& path, const PackedFile& file) {
  SAMOYEDS_CHECK(!path.empty(), "write_packed_file: output path is empty");
  std::set<std::string, std::less<>> matrix_names;
  for (const auto& [name, matrix] : file.matrices) {
    SAMOYEDS_CHECK(!name.empty(), "write_packed_file '", path, "': a packed matrix has an empty name");
    try {
      matrix.validate();
    } catch (const Error& error) {
      SAMOYEDS_FAIL("write_packed_file '", path, "': matrix \"", name, "\" is not a valid packed matrix: ",
                    error.message());
    }
    matrix_names.insert(name);
  }
  for (const auto& [name, dense] : file.dense) {
    SAMOYEDS_CHECK(!name.empty(), "write_packed_file '", path, "': a dense tensor has an empty name");
    std::string storage;
    const std::string* owner = colliding_matrix(name, matrix_names, storage);
    SAMOYEDS_CHECK(owner == nullptr, "write_packed_file '", path, "': dense tensor \"", name,
                   "\" collides with the tensors of packed matrix \"", *owner, "\"; rename one of them");
  }
  for (const auto& [key, value] : file.metadata) {
    SAMOYEDS_CHECK(!key.starts_with(kReservedPrefix), "write_packed_file '", path, "': metadata key \"", key,
                   "\" uses the reserved prefix \"samoyeds.\"; choose another key");
  }

  SafetensorsWriter writer;
  json::Value::Object listing;  // samoyeds.matrices, in name order
  for (const auto& [name, matrix] : file.matrices) {
    const PackedGeometry g = matrix.geometry();
    // Zero-copy: the writer references the matrices' vectors, which outlive writer.write().
    const std::array<std::span<const std::uint8_t>, 3> data = {as_bytes(matrix.values), as_bytes(matrix.metadata),
                                                               as_bytes(matrix.row_select)};
    const std::vector<ExpectedTensor> tensors = expected_tensors(name, matrix.pattern, matrix.dtype, g);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      writer.add(tensors[i].name, tensors[i].dtype, tensors[i].shape, data[i]);
    }
    listing.emplace_back(name, json::Value::object({{"pattern", json::Value(matrix.pattern.to_string())},
                                                    {"dtype", json::Value(dtype_name(matrix.dtype))},
                                                    {"rows", json::Value(matrix.rows)},
                                                    {"cols", json::Value(matrix.cols)}}));
  }
  for (const auto& [name, dense] : file.dense) {
    writer.add(name, safetensors_dtype_of(dense.dtype()), {dense.rows(), dense.cols()},
               {static_cast<const std::uint8_t*>(dense.data()), dense.bytes()});
  }
  writer.set_metadata(kVersionKey, kPackedFileFormatVersion);
  writer.set_metadata(kMatricesKey, json::dump(json::Value::object(std::move(listing))));
  for (const auto& [key, value] : file.metadata) writer.set_metadata(key, value);
  writer.write(path);
}

PackedFile read_packed_file(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  return read_packed_file(file);
}

PackedFile read_packed_file(const SafetensorsFile& file) {
  const std::string& where = file.path();
  PackedFile out;

  const std::string* version = file.metadata_value(kVersionKey);
  SAMOYEDS_CHECK(version != nullptr, "packed file '", where,
                 "': no samoyeds.format_version metadata; not a Samoyeds packed file (convert the checkpoint first)");
  SAMOYEDS_CHECK(*version == kPackedFileFormatVersion, "packed file '", where, "': format version \"", *version,
                 "\" is not supported; this build reads version ", kPackedFileFormatVersion,
                 " (re-convert the checkpoint or upgrade samoyeds)");
  const std::string* listing = file.metadata_value(kMatricesKey);
  SAMOYEDS_CHECK(listing != nullptr, "packed file '", where, "': no samoyeds.matrices metadata");
  for (const auto& [key, value] : file.metadata()) {
    if (!key.starts_with(kReservedPrefix)) {
      out.metadata.emplace(key, value);
    } else {
      SAMOYEDS_CHECK(key == kVersionKey || key == kMatricesKey, "packed file '", where, "': unknown reserved metadata key \"",
                     key, "\" for format version ", kPackedFileFormatVersion);
    }
  }
  json::Value matrices;
  try {
    matrices = json::parse(*listing);
  } catch (const Error& error) {
    SAMOYEDS_FAIL("packed file '", where, "': samoyeds.matrices is not valid JSON: ", error.message());
  }
  SAMOYEDS_CHECK(matrices.is_object(), "packed file '", where, "': samoyeds.matrices must be a JSON object");

  std::set<std::string, std::less<>> matrix_names;
  std::set<std::string, std::less<>> claimed;
  for (const auto& [name, entry] : matrices.as_object()) {
    SAMOYEDS_CHECK(!name.empty(), "packed file '", where, "': samoyeds.matrices lists a matrix with an empty name");
    PackedMatrix matrix = parse_matrix_entry(where, name, entry);
    PackedGeometry g;
    try {
      g = matrix.geometry();
    } catch (const Error& error) {
      SAMOYEDS_FAIL("packed file '", where, "': matrix \"", name, "\": ", error.message());
    }
    const std::vector<ExpectedTensor> tensors = expected_tensors(name, matrix.pattern, matrix.dtype, g);
    std::array<std::span<const std::uint8_t>, 3> data{};
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const ExpectedTensor& expected = tensors[i];
      const TensorInfo* info = file.find(expected.name);
      SAMOYEDS_CHECK(info != nullptr, "packed file '", where, "': matrix \"", name, "\" (", matrix.pattern.to_string(),
                     ", [", matrix.rows, ", ", matrix.cols, "]) has no tensor \"", expected.name, "\"");
      SAMOYEDS_CHECK(info->dtype == expected.dtype, "packed file '", where, "': tensor \"", expected.name, "\" is ",
                     info->dtype, " but matrix \"", name, "\" needs ", expected.dtype);
      SAMOYEDS_CHECK(info->shape == expected.shape, "packed file '", where, "': tensor \"", expected.name,
                     "\" has shape ", shape_string(info->shape), " but matrix \"", name, "\" (",
                     matrix.pattern.to_string(), ", [", matrix.rows, ", ", matrix.cols, "]) needs ",
                     shape_string(expected.shape));
      data[i] = file.bytes(*info);
      claimed.insert(expected.name);
    }
    matrix.values = copy_words<std::uint16_t>(data[0]);    // [compressed_rows_padded, cols_padded/2] bf16/fp16
    matrix.metadata = copy_words<std::uint32_t>(data[1]);  // [compressed_rows_padded/16, cols_padded/32, 16]
    if (matrix.pattern.has_row_selection()) {
      matrix.row_select = copy_words<std::uint32_t>(data[2]);  // [compressed_rows_padded/32, num_segments, select_bits]
    }
    try {
      matrix.validate();
    } catch (const Error& error) {
      SAMOYEDS_FAIL("packed file '", where, "': matrix \"", name, "\" is corrupt: ", error.message());
    }
    matrix_names.insert(name);
    out.matrices.emplace(name, std::move(matrix));
  }

  for (const TensorInfo& info : file.tensors()) {
    if (claimed.contains(info.name)) continue;
    std::string storage;
    const std::string* owner = colliding_matrix(info.name, matrix_names, storage);
    SAMOYEDS_CHECK(owner == nullptr, "packed file '", where, "': tensor \"", info.name,
                   "\" is not part of packed matrix \"", *owner, "\" (", out.matrices.at(*owner).pattern.to_string(),
                   ") but its name collides with it");
    const std::optional<DType> matrix_dtype = detail::matrix_dtype_of(info.dtype);
    SAMOYEDS_CHECK(matrix_dtype.has_value(), "packed file '", where, "': dense tensor \"", info.name, "\" is ", info.dtype,
                     "; dense tensors must be BF16, F16 or F32");
    const DType dtype = *matrix_dtype;
    SAMOYEDS_CHECK(info.shape.size() == 2, "packed file '", where, "': dense tensor \"", info.name, "\" has shape ",
                   shape_string(info.shape), "; dense tensors must be 2-D");
    Matrix dense(dtype, info.shape[0], info.shape[1]);
    const std::span<const std::uint8_t> bytes = file.bytes(info);
    if (!bytes.empty()) std::memcpy(dense.data(), bytes.data(), bytes.size());  // sizes checked by the reader
    out.dense.emplace(info.name, std::move(dense));
  }
  return out;
}

}  // namespace samoyeds
