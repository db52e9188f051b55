// SPDX-License-Identifier: Apache-2.0
#include "io/text_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "samoyeds/error.h"

namespace samoyeds::detail {

std::string read_text_file(const std::string& path, std::uintmax_t max_bytes) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  SAMOYEDS_CHECK(!ec, "cannot read the size of '", path, "': ", ec.message());
  SAMOYEDS_CHECK(size <= max_bytes, "'", path, "' is ", size, " bytes; at most ", max_bytes, " expected");
  std::ifstream in(path, std::ios::binary);
  SAMOYEDS_CHECK(in.good(), "cannot open '", path, "' for reading");
  std::ostringstream text;
  text << in.rdbuf();
  SAMOYEDS_CHECK(!in.bad(), "reading '", path, "' failed");
  return text.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  SAMOYEDS_CHECK(out.good(), "cannot create '", path, "'");
  out << text;
  out.close();
  SAMOYEDS_CHECK(out.good(), "writing '", path, "' failed");
}

}  // namespace samoyeds::detail
