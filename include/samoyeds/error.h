// SPDX-License-Identifier: Apache-2.0
// Errors: every public entry point validates its arguments and throws samoyeds::Error with the file,
// line and a message that tells the user what to fix. Library code never calls exit().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace samoyeds {

class Error : public std::runtime_error {
 public:
  Error(const char* file, int line, const std::string& message);
  const std::string& message() const noexcept { return message_; }  // without the location
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace samoyeds

// SAMOYEDS_CHECK(cond, "message parts", value, ...): throws samoyeds::Error when cond is false.
#define SAMOYEDS_CHECK(cond, ...)                                                           \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      ::samoyeds::detail::throw_error(__FILE__, __LINE__, ::samoyeds::detail::concat(__VA_ARGS__)); \
    }                                                                                       \
  } while (0)

#define SAMOYEDS_FAIL(...) \
  ::samoyeds::detail::throw_error(__FILE__, __LINE__, ::samoyeds::detail::concat(__VA_ARGS__))
