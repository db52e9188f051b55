// SPDX-License-Identifier: Apache-2.0
// safetensors reader and writer. The reader validates the header against the same rules as the
// reference implementation (huggingface/safetensors, tensor.rs) plus a few of its own (unknown
// entry fields, overflow guards) before exposing any tensor, so callers may copy spans blindly.
#include "samoyeds/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>

#include "io/json.h"
#include "samoyeds/error.h"

namespace samoyeds {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; a big-endian host would need byte swapping");

namespace {

// The reference implementation's limit; also bounds what we parse from an untrusted file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeSize {
  std::string_view name;
  std::size_t bytes;
};
constexpr DTypeSize kDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
    {"F8_E4M3FNUZ", 1}, {"F8_E5M2FNUZ", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2},
    {"I32", 4}, {"U32", 4}, {"F32", 4}, {"I64", 8}, {"U64", 8}, {"F64", 8}, {"C64", 8},
};

std::size_t find_dtype_size(std::string_view dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.name == dtype) return entry.bytes;
  }
  return 0;
}

// numel * element size, or false when either overflows (a hostile header could ask for 2^70 bytes).
bool checked_span_bytes(const std::vector<std::int64_t>& shape, std::size_t element_bytes, std::uint64_t& out) {
  std::uint64_t numel = 1;
  for (const std::int64_t extent : shape) {
    if (extent < 0) return false;
    const auto e = static_cast<std::uint64_t>(extent);
    if (e != 0 && numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / e) return false;
    numel *= e;
  }
  if (element_bytes != 0 && numel > std::numeric_limits<std::uint64_t>::max() / element_bytes) return false;
  out = numel * element_bytes;
  return true;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string errno_text(int error) { return std::strerror(error); }

}  // namespace

std::size_t safetensors_dtype_size(std::string_view dtype) {
  const std::size_t bytes = find_dtype_size(dtype);
  SAMOYEDS_CHECK(bytes != 0, "unknown safetensors dtype \"", dtype,
                 "\"; expected one of BOOL, U8, I8, F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, "
                 "I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64, C64");
  return bytes;
}

std::int64_t TensorInfo::numel() const {
  std::int64_t count = 1;
  for (const std::int64_t extent : shape) count *= extent;
  return count;
}

// ---- reader --------------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SAMOYEDS_CHECK(fd >= 0, "safetensors file '", path, "': cannot open: ", errno_text(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    SAMOYEDS_FAIL("safetensors file '", path, "': cannot stat: ", errno_text(error));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    SAMOYEDS_FAIL("safetensors file '", path, "': not a regular file");
  }
  const auto size = static_cast<std::uint64_t>(info.st_size);
  if (size < 8) {
    ::close(fd);
    SAMOYEDS_FAIL("safetensors file '", path, "': ", size,
                  " bytes is too short (needs at least the 8-byte header length); the file is truncated");
  }
  void* mapping = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_error = errno;
  ::close(fd);  // the mapping keeps the file alive
  SAMOYEDS_CHECK(mapping != MAP_FAILED, "safetensors file '", path, "': mmap failed: ", errno_text(map_error));
  file.mapping_ = mapping;
  file.mapping_bytes_ = static_cast<std::size_t>(size);
  file.image_ = static_cast<const std::uint8_t*>(mapping);
  file.image_bytes_ = file.mapping_bytes_;
  file.parse_and_validate();  // on throw, the destructor unmaps
  return file;
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<std::uint8_t> bytes, std::string label) {
  SafetensorsFile file;
  file.path_ = std::move(label);
  file.owned_ = std::move(bytes);
  file.image_ = file.owned_.data();
  file.image_bytes_ = file.owned_.size();
  file.parse_and_validate();
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this == &other) return *this;
  release();
  path_ = std::move(other.path_);
  mapping_ = std::exchange(other.mapping_, nullptr);
  mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
  owned_ = std::move(other.owned_);  // a vector move keeps its buffer, so image_ stays valid
  image_ = std::exchange(other.image_, nullptr);
  image_bytes_ = std::exchange(other.image_bytes_, 0);
  data_start_ = std::exchange(other.data_start_, 0);
  data_bytes_ = std::exchange(other.data_bytes_, 0);
  tensors_ = std::move(other.tensors_);
  index_ = std::move(other.index_);
  metadata_ = std::move(other.metadata_);
  other.tensors_.clear();
  other.index_.clear();
  other.metadata_.clear();
  return *this;
}

SafetensorsFile::~SafetensorsFile() { release(); }

void SafetensorsFile::release() noexcept {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
  mapping_ = nullptr;
  mapping_bytes_ = 0;
  owned_.clear();
  image_ = nullptr;
  image_bytes_ = 0;
}

void SafetensorsFile::parse_and_validate() {
  const std::string& where = path_;
  SAMOYEDS_CHECK(image_bytes_ >= 8, "safetensors file '", where, "': ", image_bytes_,
                 " bytes is too short (needs at least the 8-byte header length); the file is truncated");
  std::uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, image_, 8);
  SAMOYEDS_CHECK(header_bytes != 0, "safetensors file '", where, "': header length is 0; not a safetensors file");
  SAMOYEDS_CHECK(header_bytes <= kMaxHeaderBytes, "safetensors file '", where, "': header length ", header_bytes,
                 " exceeds the 100 MB limit; the file is corrupt or not a safetensors file");
  SAMOYEDS_CHECK(header_bytes <= image_bytes_ - 8, "safetensors file '", where, "': header length ", header_bytes,
                 " runs past the end of the file (", image_bytes_, " bytes); the file is truncated");
  data_start_ = 8 + header_bytes;
  data_bytes_ = image_bytes_ - data_start_;
  SAMOYEDS_CHECK(image_[8] == '{', "safetensors file '", where,
                 "': header does not start with '{'; not a safetensors file");

  const std::string_view header_text(reinterpret_cast<const char*>(image_ + 8), header_bytes);
  json::Value header;
  try {
    header = json::parse(header_text);
  } catch (const Error& error) {
    SAMOYEDS_FAIL("safetensors file '", where, "': header is not valid JSON: ", error.message());
  }
  SAMOYEDS_CHECK(header.is_object(), "safetensors file '", where, "': header is not a JSON object");

  for (const auto& [name, entry] : header.as_object()) {
    if (name == kMetadataKey) {
      SAMOYEDS_CHECK(entry.is_object(), "safetensors file '", where,
                     "': __metadata__ must be an object of string to string");
      for (const auto& [key, value] : entry.as_object()) {
        SAMOYEDS_CHECK(value.is_string(), "safetensors file '", where, "': __metadata__ value of \"", key,
                       "\" is not a string (safetensors metadata is string to string)");
        metadata_.emplace_back(key, value.as_string());
      }
      continue;
    }
    const std::string& tensor_name = name;  // lambdas capture no structured bindings before clang 16
    const auto bad = [&](auto&&... what) {
      SAMOYEDS_FAIL("safetensors file '", where, "': tensor \"", tensor_name, "\": ", what...);
    };
    if (!entry.is_object()) bad("entry is not an object with dtype, shape and data_offsets");
    for (const auto& member : entry.as_object()) {
      if (member.first != "dtype" && member.first != "shape" && member.first != "data_offsets") {
        bad("unknown field \"", member.first, "\" (expected dtype, shape, data_offsets)");
      }
    }
    TensorInfo info;
    info.name = name;

    const json::Value* dtype = entry.find("dtype");
    if (dtype == nullptr || !dtype->is_string()) bad("missing or non-string \"dtype\"");
    info.dtype = dtype->as_string();
    const std::size_t element_bytes = find_dtype_size(info.dtype);
    if (element_bytes == 0) bad("unknown dtype \"", info.dtype, "\"");

    const json::Value* shape = entry.find("shape");
    if (shape == nullptr || !shape->is_array()) bad("missing or non-array \"shape\"");
    for (const json::Value& extent : shape->as_array()) {
      if (!extent.is_integer() || extent.as_int() < 0) bad("shape entries must be non-negative integers");
      info.shape.push_back(extent.as_int());
    }

    const json::Value* offsets = entry.find("data_offsets");
    if (offsets == nullptr || !offsets->is_array() || offsets->as_array().size() != 2) {
      bad("missing \"data_offsets\" or not an array [begin, end]");
    }
    for (const json::Value& offset : offsets->as_array()) {
      if (!offset.is_integer() || offset.as_int() < 0) bad("data_offsets must be non-negative integers");
    }
    info.begin = static_cast<std::uint64_t>(offsets->as_array()[0].as_int());
    info.end = static_cast<std::uint64_t>(offsets->as_array()[1].as_int());
    if (info.begin > info.end) bad("data_offsets [", info.begin, ", ", info.end, "] has begin > end");

    std::uint64_t expected_bytes = 0;
    if (!checked_span_bytes(info.shape, element_bytes, expected_bytes)) {
      bad("shape ", shape_string(info.shape), " overflows the size of a file");
    }
    if (info.end - info.begin != expected_bytes) {
      bad("data_offsets [", info.begin, ", ", info.end, "] span ", info.end - info.begin, " bytes but shape ",
          shape_string(info.shape), " of ", info.dtype, " needs ", expected_bytes);
    }
    index_.emplace(info.name, tensors_.size());  // the JSON parser already rejected duplicate names
    tensors_.push_back(std::move(info));
  }

  // The spans must tile [0, data_bytes_) exactly: no overlap (aliasing), no hole (hidden data).
  std::vector<std::size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return tensors_[a].begin != tensors_[b].begin ? tensors_[a].begin < tensors_[b].begin
                                                  : tensors_[a].end < tensors_[b].end;
  });
  std::uint64_t expected_begin = 0;
  const TensorInfo* previous = nullptr;
  for (const std::size_t idx : order) {
    const TensorInfo& info = tensors_[idx];
    if (info.begin < expected_begin) {
      SAMOYEDS_FAIL("safetensors file '", where, "': tensor \"", info.name, "\" [", info.begin, ", ", info.end,
                    ") overlaps tensor \"", previous->name, "\" [", previous->begin, ", ", previous->end, ")");
    }
    if (info.begin > expected_begin) {
      SAMOYEDS_FAIL("safetensors file '", where, "': bytes [", expected_begin, ", ", info.begin,
                    ") of the data buffer belong to no tensor (a hole before tensor \"", info.name, "\")");
    }
    expected_begin = info.end;
    previous = &info;
  }
  SAMOYEDS_CHECK(expected_begin == data_bytes_, "safetensors file '", where, "': tensors end at data offset ",
                 expected_begin, " but the data buffer holds ", data_bytes_, " bytes (file size ", image_bytes_,
                 " - 8 - header ", header_bytes, "); the file is truncated or has trailing bytes");
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo* info = find(name);
  SAMOYEDS_CHECK(info != nullptr, "safetensors file '", path_, "' has no tensor \"", name, "\"");
  return *info;
}

std::span<const std::uint8_t> SafetensorsFile::bytes(const TensorInfo& info) const {
  SAMOYEDS_CHECK(info.begin <= info.end && info.end <= data_bytes_, "safetensors file '", path_, "': tensor \"",
                 info.name, "\" span [", info.begin, ", ", info.end, ") is outside the data buffer (", data_bytes_,
                 " bytes); pass a TensorInfo from this file's tensors()");
  return {image_ + data_start_ + info.begin, static_cast<std::size_t>(info.end - info.begin)};
}

const std::string* SafetensorsFile::metadata_value(std::string_view key) const {
  for (const auto& [name, value] : metadata_) {
    if (name == key) return &value;
  }
  return nullptr;
}

// ---- writer --------------------------------------------------------------------------------------

void SafetensorsWriter::add_entry(std::string name, std::string dtype, std::vector<std::int64_t> shape,
                                  std::span<const std::uint8_t> data, std::size_t owned_idx) {
  SAMOYEDS_CHECK(!name.empty(), "safetensors writer: tensor name must not be empty");
  SAMOYEDS_CHECK(name != kMetadataKey, "safetensors writer: \"__metadata__\" is reserved and cannot name a tensor");
  SAMOYEDS_CHECK(!index_.contains(name), "safetensors writer: tensor \"", name, "\" was already added");
  const std::size_t element_bytes = find_dtype_size(dtype);
  SAMOYEDS_CHECK(element_bytes != 0, "safetensors writer: tensor \"", name, "\": unknown dtype \"", dtype, "\"");
  std::uint64_t expected_bytes = 0;
  SAMOYEDS_CHECK(checked_span_bytes(shape, element_bytes, expected_bytes), "safetensors writer: tensor \"", name,
                 "\": shape ", shape_string(shape), " has a negative extent or overflows");
  SAMOYEDS_CHECK(data.size() == expected_bytes, "safetensors writer: tensor \"", name, "\": ", data.size(),
                 " data bytes but shape ", shape_string(shape), " of ", dtype, " needs ", expected_bytes);
  index_.emplace(name, entries_.size());
  entries_.push_back(Entry{std::move(name), std::move(dtype), std::move(shape), data, owned_idx});
}

void SafetensorsWriter::add(std::string name, std::string dtype, std::vector<std::int64_t> shape,
                            std::span<const std::uint8_t> data) {
  add_entry(std::move(name), std::move(dtype), std::move(shape), data, static_cast<std::size_t>(-1));
}

void SafetensorsWriter::add_owned(std::string name, std::string dtype, std::vector<std::int64_t> shape,
                                  std::vector<std::uint8_t> data) {
  owned_.push_back(std::move(data));
  try {
    add_entry(std::move(name), std::move(dtype), std::move(shape), owned_.back(), owned_.size() - 1);
  } catch (...) {
    owned_.pop_back();
    throw;
  }
}

void SafetensorsWriter::set_metadata(std::string key, std::string value) {
  for (auto& entry : metadata_) {
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

std::span<const std::uint8_t> SafetensorsWriter::entry_data(const Entry& entry) const {
  // Owned data is looked up by index so that a copied writer reads its own copy.
  if (entry.owned_idx != static_cast<std::size_t>(-1)) return owned_[entry.owned_idx];
  return entry.data;
}

std::string SafetensorsWriter::header() const {
  // Members are collected first and the object built once: set() per tensor would be quadratic.
  json::Value::Object members;
  members.reserve(entries_.size() + 1);
  if (!metadata_.empty()) {
    json::Value::Object metadata;
    for (const auto& [key, value] : metadata_) metadata.emplace_back(key, json::Value(value));
    members.emplace_back(std::string(kMetadataKey), json::Value::object(std::move(metadata)));
  }
  std::uint64_t offset = 0;
  for (const Entry& entry : entries_) {
    json::Value shape = json::Value::array();
    for (const std::int64_t extent : entry.shape) shape.push_back(json::Value(extent));
    const auto size = static_cast<std::uint64_t>(entry_data(entry).size());
    json::Value offsets = json::Value::array(
        {json::Value(static_cast<std::int64_t>(offset)), json::Value(static_cast<std::int64_t>(offset + size))});
    members.emplace_back(entry.name, json::Value::object({{"dtype", json::Value(entry.dtype)},
                                                          {"shape", std::move(shape)},
                                                          {"data_offsets", std::move(offsets)}}));
    offset += size;
  }
  const json::Value root = json::Value::object(std::move(members));
  std::string text = json::dump(root);  // throws on names/values that are not valid UTF-8
  text.append((8 - text.size() % 8) % 8, ' ');
  SAMOYEDS_CHECK(text.size() <= kMaxHeaderBytes, "safetensors writer: header of ", text.size(),
                 " bytes exceeds the 100 MB limit readers enforce; split the tensors over several files");
  return text;
}

std::vector<std::uint8_t> SafetensorsWriter::serialize() const {
  const std::string text = header();
  std::uint64_t total = 8 + text.size();
  for (const Entry& entry : entries_) total += entry_data(entry).size();
  std::vector<std::uint8_t> out(static_cast<std::size_t>(total));
  const std::uint64_t header_bytes = text.size();
  std::memcpy(out.data(), &header_bytes, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t at = 8 + text.size();
  for (const Entry& entry : entries_) {
    const auto data = entry_data(entry);
    if (!data.empty()) std::memcpy(out.data() + at, data.data(), data.size());
    at += data.size();
  }
  return out;
}

namespace {

// Removes the temporary file unless the write was committed (renamed into place).
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  int fd_ = -1;
  bool committed_ = false;

 private:
  std::string path_;
};

void write_all(int fd, const void* data, std::size_t size, const std::string& where) {
  const auto* at = static_cast<const std::uint8_t*>(data);
  while (size > 0) {
    // Linux writes at most ~2 GiB per call; loop for partial writes and EINTR.
    const std::size_t chunk = std::min<std::size_t>(size, std::size_t{1} << 30);
    const ssize_t written = ::write(fd, at, chunk);
    if (written < 0) {
      if (errno == EINTR) continue;
      SAMOYEDS_FAIL("safetensors writer: writing '", where, "' failed: ", errno_text(errno));
    }
    at += written;
    size -= static_cast<std::size_t>(written);
  }
}

}  // namespace

void SafetensorsWriter::write(const std::string& path) const {
  SAMOYEDS_CHECK(!path.empty(), "safetensors writer: output path is empty");
  const std::string text = header();  // validate before touching the file system
  TempFile temp(path + ".tmp." + std::to_string(::getpid()));
  temp.fd_ = ::open(temp.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SAMOYEDS_CHECK(temp.fd_ >= 0, "safetensors writer: cannot create '", temp.path(), "': ", errno_text(errno));
  const std::uint64_t header_bytes = text.size();
  write_all(temp.fd_, &header_bytes, 8, temp.path());
  write_all(temp.fd_, text.data(), text.size(), temp.path());
  for (const Entry& entry : entries_) {
    const auto data = entry_data(entry);
    write_all(temp.fd_, data.data(), data.size(), temp.path());
  }
  SAMOYEDS_CHECK(::fsync(temp.fd_) == 0, "safetensors writer: fsync of '", temp.path(), "' failed: ",
                 errno_text(errno));
  const int fd = std::exchange(temp.fd_, -1);
  SAMOYEDS_CHECK(::close(fd) == 0, "safetensors writer: closing '", temp.path(), "' failed: ", errno_text(errno));
  SAMOYEDS_CHECK(::rename(temp.path().c_str(), path.c_str()) == 0, "safetensors writer: renaming '", temp.path(),
                 "' to '", path, "' failed: ", errno_text(errno));
  temp.committed_ = true;
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  const std::size_t slash = path.find_last_of('/');
  const std::string directory = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace samoyeds
