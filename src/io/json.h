// SPDX-License-Identifier: Apache-2.0
// A small, strict JSON reader and writer (RFC 8259) for config.json, safetensors headers and the
// benchmark's JSON Lines. Object member order is preserved; duplicate keys are rejected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace samoyeds::json {

class Value {
 public:
  enum class Kind { null, boolean, number, string, array, object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;

  Value() = default;  // null
  Value(bool b);
  Value(double number);
  Value(std::int64_t number);
  Value(int number) : Value(static_cast<std::int64_t>(number)) {}
  Value(std::string text);
  Value(const char* text) : Value(std::string(text)) {}
  static Value array(Array items = {});
  static Value object(Object members = {});

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::null; }
  bool is_number() const { return kind_ == Kind::number; }
  // A number parsed from an integer literal that fits in int64 (or built from an integer): exact.
  bool is_integer() const { return kind_ == Kind::number && integral_; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_array() const { return kind_ == Kind::array; }
  bool is_object() const { return kind_ == Kind::object; }

  // Typed access; each throws samoyeds::Error naming the expected and the actual kind.
  bool as_bool() const;
  double as_number() const;
  std::int64_t as_int() const;  // throws unless the number is integral and fits in int64
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  const Value* find(std::string_view key) const;  // member or nullptr (also nullptr for non-objects)
  const Value& at(std::string_view key) const;    // member; throws naming the missing key
  void set(std::string key, Value value);         // object only: replaces or appends
  void push_back(Value value);                    // array only

 private:
  Kind kind_ = Kind::null;
  bool bool_ = false;
  double number_ = 0.0;
  bool integral_ = false;
  std::int64_t int_ = 0;
  std::string string_;
  Array array_;
  Object object_;
};

// "null", "a boolean", "a number", "a string", "an array", "an object": for error messages.
const char* kind_name(Value::Kind kind);

// Parses a whole document. Throws samoyeds::Error with line:column and what was expected on bad
// input (trailing garbage, depth over 256, bad escapes, invalid UTF-8 surrogates, duplicate keys).
Value parse(std::string_view text);

// Compact serialisation (no spaces); integers print without a decimal point, other numbers with
// enough digits to round-trip; non-finite numbers are written as null.
std::string dump(const Value& value);

}  // namespace samoyeds::json
