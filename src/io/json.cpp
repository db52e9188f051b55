// SPDX-License-Identifier: Apache-2.0
// Strict RFC 8259 JSON reader and compact writer. Strict because the inputs (safetensors headers,
// config.json, our own JSON Lines) come from files we do not control: anything the RFC does not
// allow is an error with a line and column, never a silent guess.
#include "io/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <system_error>
#include <unordered_set>

#include "samoyeds/error.h"

namespace samoyeds::json {

namespace {


constexpr int kMaxDepth = 256;
// Objects up to this size check duplicate keys by a linear scan; larger ones (safetensors headers
// with thousands of tensors) use a hash set so parsing stays linear.
constexpr std::size_t kLinearKeyScan = 16;

// Length of the UTF-8 sequence starting at text[pos] (1..4), or 0 when it is not well formed
// (overlong forms, UTF-16 surrogates and code points above U+10FFFF are not well formed).
std::size_t utf8_sequence_length(std::string_view text, std::size_t pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (pos + length > text.size()) return 0;
  if (byte(pos + 1) < low || byte(pos + 1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i) {
    if (byte(pos + i) < 0x80 || byte(pos + i) > 0xBF) return 0;
  }
  return length;
}

void append_utf8(std::string& out, std::uint32_t code_point) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value parse_document() {
    skip_whitespace();
    Value value = parse_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail("expected the end of the document, found ", describe_here());
    return value;
  }

 private:
  template <class... Args>
  [[noreturn]] void fail_at(std::size_t at, Args&&... args) const {
    // Line and column are computed only on error so the happy path does not track them.
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    SAMOYEDS_FAIL("JSON line ", line, ", column ", column, ": ", std::forward<Args>(args)...);
  }
  template <class... Args>
  [[noreturn]] void fail(Args&&... args) const {
    fail_at(pos_, std::forward<Args>(args)...);
  }

  std::string describe_here() const {
    if (pos_ >= text_.size()) return "the end of the input";
    const unsigned char c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
    char buffer[16];
    std::snprintf(buffer, sizeof(buffer), "byte 0x%02X", c);
    return buffer;
  }

  void skip_whitespace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  Value parse_value(int depth) {
    if (pos_ >= text_.size()) fail("expected a value, found the end of the input");
    switch (text_[pos_]) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Value(parse_string());
      case 't': expect_literal("true"); return Value(true);
      case 'f': expect_literal("false"); return Value(false);
      case 'n': expect_literal("null"); return Value();
      default:
        if (text_[pos_] == '-' || (text_[pos_] >= '0' && text_[pos_] <= '9')) return parse_number();
        fail("expected a value, found ", describe_here());
    }
  }

  void expect_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal) fail("expected '", literal, "'");
    pos_ += literal.size();
  }

  void check_depth(int depth) const {
    if (depth > kMaxDepth) fail("expected at most ", kMaxDepth, " nested arrays/objects");
  }

  Value parse_array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Value::Array items;
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return Value::array(std::move(items));
    }
    while (true) {
      skip_whitespace();
      items.push_back(parse_value(depth));
      skip_whitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        skip_whitespace();
        if (pos_ < text_.size() && text_[pos_] == ']') fail("expected a value after ',' (trailing commas are not JSON)");
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return Value::array(std::move(items));
      }
      fail("expected ',' or ']' in an array, found ", describe_here());
    }
  }

  Value parse_object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Value::Object members;
    std::unordered_set<std::string> seen;  // filled only once the object outgrows kLinearKeyScan
    skip_whitespace();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return Value::object(std::move(members));
    }
    while (true) {
      skip_whitespace();
      if (pos_ >= text_.size() || text_[pos_] != '"') {
        if (pos_ < text_.size() && text_[pos_] == '}' && !members.empty()) {
          fail("expected a member name after ',' (trailing commas are not JSON)");
        }
        fail("expected a member name (a string), found ", describe_here());
      }
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      bool duplicate = false;
      if (members.size() < kLinearKeyScan) {
        for (const auto& member : members) duplicate = duplicate || member.first == key;
      } else {
        if (seen.empty()) {
          for (const auto& member : members) seen.insert(member.first);
        }
        duplicate = !seen.insert(key).second;
      }
      if (duplicate) fail_at(key_pos, "expected unique member names, \"", key, "\" appears twice");
      skip_whitespace();
      if (pos_ >= text_.size() || text_[pos_] != ':') fail("expected ':' after a member name, found ", describe_here());
      ++pos_;
      skip_whitespace();
      Value value = parse_value(depth);
      members.emplace_back(std::move(key), std::move(value));
      skip_whitespace();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return Value::object(std::move(members));
      }
      fail("expected ',' or '}' in an object, found ", describe_here());
    }
  }

  std::uint32_t parse_hex4() {
    if (pos_ + 4 > text_.size()) fail("expected 4 hex digits after \\u");
    std::uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_];
      std::uint32_t digit = 0;
      if (c >= '0' && c <= '9') {
        digit = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        fail("expected a hex digit in a \\u escape, found ", describe_here());
      }
      code = code * 16 + digit;
      ++pos_;
    }
    return code;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("expected '\"' to close the string, found the end of the input");
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("expected no raw control characters in a string (escape ", describe_here(), ")");
      if (c == '\\') {
        parse_escape(out);
        continue;
      }
      const std::size_t length = utf8_sequence_length(text_, pos_);
      if (length == 0) fail("expected valid UTF-8 in a string, found ", describe_here());
      out.append(text_.substr(pos_, length));
      pos_ += length;
    }
  }

  void parse_escape(std::string& out) {
    const std::size_t escape_pos = pos_;
    ++pos_;  // backslash
    if (pos_ >= text_.size()) fail("expected an escape character after '\\'");
    const char c = text_[pos_++];
    switch (c) {
      case '"': out += '"'; return;
      case '\\': out += '\\'; return;
      case '/': out += '/'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: --pos_; fail("expected an escape character, one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u, found ", describe_here());
    }
    std::uint32_t code = parse_hex4();
    if (code >= 0xDC00 && code <= 0xDFFF) {
      fail_at(escape_pos, "expected a high surrogate before low surrogate \\u", std::hex, code);
    }
    if (code >= 0xD800 && code <= 0xDBFF) {
      if (text_.substr(pos_, 2) != "\\u") {
        fail_at(escape_pos, "expected a \\u low surrogate after high surrogate \\u", std::hex, code);
      }
      pos_ += 2;
      const std::uint32_t low = parse_hex4();
      if (low < 0xDC00 || low > 0xDFFF) {
        fail_at(escape_pos, "expected a low surrogate (\\uDC00..\\uDFFF) after high surrogate \\u", std::hex, code);
      }
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, code);
  }

  Value parse_number() {
    const std::size_t start = pos_;
    bool integral = true;
    if (text_[pos_] == '-') ++pos_;
    if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("expected a digit in a number, found ", describe_here());
    const std::size_t int_start = pos_;
    if (text_[pos_] == '0') {
      ++pos_;
      if (pos_ < text_.size() && is_digit(text_[pos_])) fail_at(int_start, "expected no leading zeros in a number");
    } else {
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    const std::size_t int_end = pos_;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("expected a digit after the decimal point, found ", describe_here());
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail("expected a digit in the exponent, found ", describe_here());
      while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    const bool negative = text_[start] == '-';
    // "-0" stays a double so that -0.0 survives a dump/parse round trip.
    if (integral && !(negative && int_end - int_start == 1 && text_[int_start] == '0')) {
      std::int64_t as_int = 0;
      const auto [end, error] = std::from_chars(first, last, as_int);
      if (error == std::errc() && end == last) return Value(as_int);
      // Out of int64 range: fall through to a (rounded) double.
    }
    double number = 0.0;
    const auto [end, error] = std::from_chars(first, last, number);
    if (error == std::errc::result_out_of_range) {
      if (overflows(start, int_start, int_end)) fail_at(start, "expected a number within the range of a double");
      number = negative ? -0.0 : 0.0;  // underflow: the nearest double is zero
    } else if (error != std::errc() || end != last) {
      fail_at(start, "expected a number");
    }
    return Value(number);
  }

  // After from_chars reported out of range: true when the magnitude is too large (not too small).
  bool overflows(std::size_t start, std::size_t int_start, std::size_t int_end) const {
    // Decimal exponent of the leading significant digit plus the explicit exponent.
    std::int64_t magnitude = 0;
    if (!(int_end - int_start == 1 && text_[int_start] == '0')) {
      magnitude = static_cast<std::int64_t>(int_end - int_start) - 1;
    } else {
      std::size_t i = int_end + 1;  // after '.'
      magnitude = -1;
      while (i < pos_ && text_[i] == '0') {
        --magnitude;
        ++i;
      }
    }
    const std::string_view number = text_.substr(start, pos_ - start);
    const std::size_t e = number.find_first_of("eE");
    if (e != std::string_view::npos) {
      std::size_t i = e + 1;
      bool negative = false;
      if (number[i] == '+' || number[i] == '-') negative = number[i++] == '-';
      std::int64_t exponent = 0;
      for (; i < number.size(); ++i) {
        exponent = std::min<std::int64_t>(exponent * 10 + (number[i] - '0'), std::int64_t{1} << 40);
      }
      magnitude += negative ? -exponent : exponent;
    }
    return magnitude > 0;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  std::string_view text_;
  std::size_t pos_ = 0;
};

void dump_string(const std::string& text, std::string& out) {
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // Validate so that dump never writes a document that parse() would reject.
      const std::size_t length = utf8_sequence_length(text, i);
      SAMOYEDS_CHECK(length != 0, "json::dump: string has invalid UTF-8 at byte ", i,
                     "; JSON text must be UTF-8");
      out.append(text, i, length);
      i += length;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

void dump_value(const Value& value, std::string& out) {
  switch (value.kind()) {
    case Value::Kind::null: out += "null"; return;
    case Value::Kind::boolean: out += value.as_bool() ? "true" : "false"; return;
    case Value::Kind::number: {
      char buffer[32];
      std::to_chars_result result{};
      if (value.is_integer()) {
        // Exact: a double cannot hold every int64.
        result = std::to_chars(buffer, buffer + sizeof(buffer), value.as_int());
      } else if (std::isfinite(value.as_number())) {
        result = std::to_chars(buffer, buffer + sizeof(buffer), value.as_number());  // shortest round trip
      } else {
        out += "null";
        return;
      }
      out.append(buffer, result.ptr);
      return;
    }
    case Value::Kind::string: dump_string(value.as_string(), out); return;
    case Value::Kind::array: {
      out += '[';
      bool first = true;
      for (const Value& item : value.as_array()) {
        if (!first) out += ',';
        first = false;
        dump_value(item, out);
      }
      out += ']';
      return;
    }
    case Value::Kind::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : value.as_object()) {
        if (!first) out += ',';
        first = false;
        dump_string(key, out);
        out += ':';
        dump_value(item, out);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

Value::Value(bool b) : kind_(Kind::boolean), bool_(b) {}
Value::Value(double number) : kind_(Kind::number), number_(number) {}
Value::Value(std::int64_t number)
    : kind_(Kind::number), number_(static_cast<double>(number)), integral_(true), int_(number) {}
Value::Value(std::string text) : kind_(Kind::string), string_(std::move(text)) {}

Value Value::array(Array items) {
  Value value;
  value.kind_ = Kind::array;
  value.array_ = std::move(items);
  return value;
}

Value Value::object(Object members) {
  // Construction is a public entry point too: keep the unique-key invariant that parse() enforces.
  if (members.size() <= kLinearKeyScan) {
    for (std::size_t i = 0; i < members.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        SAMOYEDS_CHECK(members[i].first != members[j].first, "JSON: object member \"", members[i].first,
                       "\" appears twice; member names must be unique");
      }
    }
  } else {
    std::unordered_set<std::string_view> seen;
    for (const auto& member : members) {
      SAMOYEDS_CHECK(seen.insert(member.first).second, "JSON: object member \"", member.first,
                     "\" appears twice; member names must be unique");
    }
  }
  Value value;
  value.kind_ = Kind::object;
  value.object_ = std::move(members);
  return value;
}

bool Value::as_bool() const {
  SAMOYEDS_CHECK(kind_ == Kind::boolean, "JSON: expected a boolean, got ", kind_name(kind_));
  return bool_;
}

double Value::as_number() const {
  SAMOYEDS_CHECK(kind_ == Kind::number, "JSON: expected a number, got ", kind_name(kind_));
  return number_;
}

std::int64_t Value::as_int() const {
  SAMOYEDS_CHECK(kind_ == Kind::number, "JSON: expected an integer, got ", kind_name(kind_));
  if (integral_) return int_;
  // 2^63 is exactly representable; the valid range is [-2^63, 2^63).
  constexpr double kLimit = 9223372036854775808.0;
  SAMOYEDS_CHECK(std::isfinite(number_) && std::trunc(number_) == number_ && number_ >= -kLimit && number_ < kLimit,
                 "JSON: expected an integer that fits in int64, got ", number_);
  return static_cast<std::int64_t>(number_);
}

const std::string& Value::as_string() const {
  SAMOYEDS_CHECK(kind_ == Kind::string, "JSON: expected a string, got ", kind_name(kind_));
  return string_;
}

const Value::Array& Value::as_array() const {
  SAMOYEDS_CHECK(kind_ == Kind::array, "JSON: expected an array, got ", kind_name(kind_));
  return array_;
}

const Value::Object& Value::as_object() const {
  SAMOYEDS_CHECK(kind_ == Kind::object, "JSON: expected an object, got ", kind_name(kind_));
  return object_;
}

const Value* Value::find(std::string_view key) const {
  if (kind_ != Kind::object) return nullptr;
  for (const auto& member : object_) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const Value& Value::at(std::string_view key) const {
  SAMOYEDS_CHECK(kind_ == Kind::object, "JSON: expected an object with member \"", key, "\", got ", kind_name(kind_));
  const Value* member = find(key);
  SAMOYEDS_CHECK(member != nullptr, "JSON: object has no member \"", key, "\"");
  return *member;
}

void Value::set(std::string key, Value value) {
  SAMOYEDS_CHECK(kind_ == Kind::object, "JSON: set(\"", key, "\") needs an object, got ", kind_name(kind_));
  for (auto& member : object_) {
    if (member.first == key) {
      member.second = std::move(value);
      return;
    }
  }
  object_.emplace_back(std::move(key), std::move(value));
}

void Value::push_back(Value value) {
  SAMOYEDS_CHECK(kind_ == Kind::array, "JSON: push_back needs an array, got ", kind_name(kind_));
  array_.push_back(std::move(value));
}

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::null: return "null";
    case Value::Kind::boolean: return "a boolean";
    case Value::Kind::number: return "a number";
    case Value::Kind::string: return "a string";
    case Value::Kind::array: return "an array";
    case Value::Kind::object: return "an object";
  }
  return "an unknown JSON value";
}

Value parse(std::string_view text) { return Parser(text).parse_document(); }

std::string dump(const Value& value) {
  std::string out;
  dump_value(value, out);
  return out;
}

}  // namespace samoyeds::json
