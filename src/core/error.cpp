// SPDX-License-Identifier: Apache-2.0
#include "samoyeds/error.h"

#include <cstring>

namespace samoyeds {

namespace {
const char* short_path(const char* file) {
  // Keep the path from the project's own top folder on, so messages do not leak build paths.
  for (const char* part : {"/src/", "/include/", "/tools/", "/tests/", "/bench/"}) {
    if (const char* at = std::strstr(file, part)) return at + 1;
  }
  return file;
}
}  // namespace

Error::Error(const char* file, int line, const std::string& message)
    : std::runtime_error(std::string(short_path(file)) + ":" + std::to_string(line) + ": " + message),
      message_(message),
      file_(short_path(file)),
      line_(line) {}

namespace detail {
void throw_error(const char* file, int line, const std::string& message) {
  throw Error(file, line, message);
}
}  // namespace detail

}  // namespace samoyeds
