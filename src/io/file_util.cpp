// SPDX-License-Identifier: Apache-2.0
#include "io/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "samoyeds/error.h"

namespace samoyeds::detail {

namespace fs = std::filesystem;

std::string read_text_file(const std::string& path, std::uintmax_t max_bytes) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
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
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SAMOYEDS_CHECK(fd >= 0, "cannot create '", path, "'");
  std::size_t done = 0;
  bool ok = true;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  SAMOYEDS_CHECK(ok, "writing '", path, "' failed");
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SAMOYEDS_CHECK(fd >= 0, "cannot open directory '", dir.string(), "' to sync it");
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  SAMOYEDS_CHECK(ok, "syncing directory '", dir.string(), "' failed");
}

fs::path normalized_dir(const std::string& dir) {
  SAMOYEDS_CHECK(!dir.empty(), "empty directory name");
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

fs::path temporary_sibling(const fs::path& dir) {
  SAMOYEDS_CHECK(!dir.filename().empty() && dir.filename() != "." && dir.filename() != "..", "'", dir.string(),
                 "' does not name a directory that can be created");
  return dir.parent_path() / (dir.filename().string() + ".tmp." + std::to_string(::getpid()));
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(fs::absolute(inner, ec), ec).lexically_normal();
  const fs::path b = fs::weakly_canonical(fs::absolute(outer, ec), ec).lexically_normal();
  auto ai = a.begin(), bi = b.begin();
  for (; bi != b.end(); ++ai, ++bi) {
    if (bi->empty()) continue;  // a trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

}  // namespace samoyeds::detail
