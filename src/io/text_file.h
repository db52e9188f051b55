// SPDX-License-Identifier: Apache-2.0
// Whole small text files (JSON manifests and indexes), read and written with errors naming the file.
#pragma once

#include <cstdint>
#include <string>

namespace samoyeds::detail {

// The file's bytes; throws when it is missing, unreadable or larger than `max_bytes`.
std::string read_text_file(const std::string& path, std::uintmax_t max_bytes);
// Creates or replaces the file with `text`.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace samoyeds::detail
