// SPDX-License-Identifier: Apache-2.0
// Packed-expert files: Samoyeds-format matrices plus ordinary dense tensors in one file that any
// safetensors reader can open. Each packed matrix NAME is stored as the tensors NAME.values,
// NAME.metadata and (with row selection) NAME.row_select, described in __metadata__; the exact
// convention is docs/packed_file.md. Reading validates everything, down to PackedMatrix::validate().
#pragma once

#include <map>
#include <string>

#include "samoyeds/format.h"
#include "samoyeds/matrix.h"

namespace samoyeds {

class SafetensorsFile;

struct PackedFile {
  std::map<std::string, PackedMatrix> matrices;  // packed expert matrices by name
  std::map<std::string, Matrix> dense;           // other tensors (bf16/fp16/fp32), e.g. router weights
  std::map<std::string, std::string> metadata;   // user metadata; keys must not start with "samoyeds."
};

// The format version this build writes and the only one it reads.
inline constexpr const char* kPackedFileFormatVersion = "1";

// Writes `file` atomically (temporary file, fsync, rename). Validates every matrix first, so an
// invalid matrix never reaches the disk; throws on reserved metadata keys and colliding names.
void write_packed_file(const std::string& path, const PackedFile& file);

// Reads and fully validates a packed file (see docs/packed_file.md for the rules).
PackedFile read_packed_file(const std::string& path);
// The same from an already opened safetensors file (tests, in-memory images).
PackedFile read_packed_file(const SafetensorsFile& file);

}  // namespace samoyeds
