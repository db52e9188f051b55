// SPDX-License-Identifier: Apache-2.0
// File helpers of the checkpoint code: small text files read and written durably (fsync), and
// directories built under a temporary sibling and renamed into place.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace samoyeds::detail {

// The file's bytes; throws when it is missing, unreadable or larger than `max_bytes`.
std::string read_text_file(const std::string& path, std::uintmax_t max_bytes);
// Creates or replaces the file with `text` and fsyncs it.
void write_text_file(const std::string& path, const std::string& text);
// fsyncs a directory (its entries: files created or renamed in it).
void fsync_directory(const std::filesystem::path& dir);

// `dir` without "." / ".." detours or a trailing separator ("out/" and "out" are the same directory).
std::filesystem::path normalized_dir(const std::string& dir);
// "<parent>/<name>.tmp.<pid>": where a directory is built before it is renamed to `dir` (normalized).
std::filesystem::path temporary_sibling(const std::filesystem::path& dir);
// true when `inner` is `outer` or lies below it (both made absolute and normalized first).
bool is_within(const std::filesystem::path& inner, const std::filesystem::path& outer);

}  // namespace samoyeds::detail
