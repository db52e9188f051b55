// SPDX-License-Identifier: Apache-2.0
// safetensors reader (mmap, fully validated before any byte is handed out) and writer (atomic).
// Checkpoints come from outside the project, so the reader trusts nothing: every offset, shape and
// dtype is checked against the file before tensors() returns. The layout is the Hugging Face one:
// u64 little-endian header length N, N bytes of JSON, then the data buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace samoyeds {

// Bytes per element of a safetensors dtype string: "BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2",
// "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
// "I64", "U64", "F64", "C64". Throws on anything else (sub-byte F4/F6 types are not supported).
std::size_t safetensors_dtype_size(std::string_view dtype);

struct TensorInfo {
  std::string name;
  std::string dtype;                // safetensors dtype string, e.g. "BF16"
  std::vector<std::int64_t> shape;  // row-major; [] is a 0-d tensor (one element)
  std::uint64_t begin = 0, end = 0; // byte span relative to the start of the data buffer
  std::int64_t numel() const;       // product of shape (1 for 0-d)
};

// A validated, read-only safetensors file. Move-only; the byte spans it hands out stay valid for
// its lifetime. Spans are not necessarily aligned (the format only guarantees it for files whose
// header length is a multiple of 8): copy with memcpy rather than casting.
class SafetensorsFile {
 public:
  // Maps `path` read-only (POSIX mmap) and validates it.
  static SafetensorsFile open(const std::string& path);
  // Validates an in-memory image (tests, fuzzing); `label` stands in for the path in messages.
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, std::string label = "<memory>");

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // header order
  const TensorInfo* find(std::string_view name) const;                 // nullptr when absent
  const TensorInfo& tensor(std::string_view name) const;               // throws naming file and tensor
  std::span<const std::uint8_t> bytes(const TensorInfo& info) const;   // the tensor's data
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const std::string* metadata_value(std::string_view key) const;       // nullptr when absent
  const std::string& path() const { return path_; }
  std::uint64_t data_bytes() const { return data_bytes_; }             // size of the data buffer

 private:
  SafetensorsFile() = default;
  void release() noexcept;
  void parse_and_validate();

  std::string path_;
  void* mapping_ = nullptr;  // mmap'ed file when opened from a path
  std::size_t mapping_bytes_ = 0;
  std::vector<std::uint8_t> owned_;  // the image when built from bytes
  const std::uint8_t* image_ = nullptr;
  std::size_t image_bytes_ = 0;
  std::uint64_t data_start_ = 0;  // 8 + header length
  std::uint64_t data_bytes_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// Builds a safetensors file. Tensors are written in the order added, contiguously, after a header
// padded with spaces to a multiple of 8 bytes (so the data buffer starts 8-byte aligned).
class SafetensorsWriter {
 public:
  // Zero-copy: keeps a reference to `data`, which must stay alive and unchanged until the last
  // write()/serialize() call. Checks the name (non-empty, not "__metadata__", not already added),
  // the dtype, the shape and that data.size() == numel * dtype size.
  void add(std::string name, std::string dtype, std::vector<std::int64_t> shape,
           std::span<const std::uint8_t> data);
  // Same checks; the writer takes ownership of `data` (no lifetime rule for the caller).
  void add_owned(std::string name, std::string dtype, std::vector<std::int64_t> shape,
                 std::vector<std::uint8_t> data);
  // Adds or replaces one `__metadata__` entry.
  void set_metadata(std::string key, std::string value);

  std::size_t num_tensors() const { return entries_.size(); }

  // The whole file image in memory.
  std::vector<std::uint8_t> serialize() const;
  // Atomic: writes `path + ".tmp.<pid>"`, fsyncs, renames over `path`. On any failure the
  // temporary file is removed, `path` is untouched, and samoyeds::Error is thrown.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::span<const std::uint8_t> data;
    std::size_t owned_idx = static_cast<std::size_t>(-1);  // into owned_ when add_owned() was used
  };
  void add_entry(std::string name, std::string dtype, std::vector<std::int64_t> shape,
                 std::span<const std::uint8_t> data, std::size_t owned_idx);
  std::span<const std::uint8_t> entry_data(const Entry& entry) const;
  std::string header() const;  // JSON, padded to a multiple of 8

  std::vector<Entry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::vector<std::vector<std::uint8_t>> owned_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace samoyeds
