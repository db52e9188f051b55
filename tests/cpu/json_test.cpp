// SPDX-License-Identifier: Apache-2.0
// Tests of the strict JSON reader/writer: round trips, every rejection rule of RFC 8259 that the
// parser enforces, unicode escapes and number edge cases. The parser guards the safetensors header,
// so a lenient corner here would become a hole in the checkpoint validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "io/json.h"
#include "samoyeds/error.h"

namespace samoyeds::json {
namespace {

// Parses `text`, expecting an Error whose message contains `fragment` (and "expected").
void expect_rejected(std::string_view text, std::string_view fragment = "") {
  SCOPED_TRACE(::testing::Message() << "input: " << ::testing::PrintToString(std::string(text)));
  try {
    parse(text);
    ADD_FAILURE() << "parse accepted invalid JSON";
  } catch (const Error& error) {
    const std::string message = error.message();
    EXPECT_NE(message.find("expected"), std::string::npos) << message;
    EXPECT_NE(message.find("line "), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(JsonParse, Literals) {
  EXPECT_TRUE(parse("null").is_null());
  EXPECT_TRUE(parse("true").as_bool());
  EXPECT_FALSE(parse(" \t\r\nfalse \n").as_bool());
  expect_rejected("tru");
  expect_rejected("nul");
  expect_rejected("True");
  expect_rejected("NaN");
  expect_rejected("Infinity");
  expect_rejected("'a'");
}

TEST(JsonParse, RoundTripDocument) {
  const std::string text = R"( { "b" : [1, -2, 3.5, true, false, null, "x\n\"y\""],
                                  "a" : { "nested" : { } , "empty" : [ ] }, "z": -0.25e2 } )";
  const Value value = parse(text);
  const std::string compact = R"({"b":[1,-2,3.5,true,false,null,"x\n\"y\""],"a":{"nested":{},"empty":[]},"z":-25})";
  EXPECT_EQ(dump(value), compact);
  EXPECT_EQ(dump(parse(compact)), compact);
  // Member order is preserved, not sorted.
  ASSERT_EQ(value.as_object().size(), 3u);
  EXPECT_EQ(value.as_object()[0].first, "b");
  EXPECT_EQ(value.as_object()[2].first, "z");
  EXPECT_EQ(value.at("b").as_array()[2].as_number(), 3.5);
}

TEST(JsonParse, IntegerEdgeCases) {
  EXPECT_EQ(parse("0").as_int(), 0);
  EXPECT_EQ(parse("-7").as_int(), -7);
  EXPECT_TRUE(parse("42").is_integer());
  const Value max = parse("9223372036854775807");
  EXPECT_TRUE(max.is_integer());
  EXPECT_EQ(max.as_int(), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(dump(max), "9223372036854775807");  // exact, not via double
  const Value min = parse("-9223372036854775808");
  EXPECT_EQ(min.as_int(), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(dump(min), "-9223372036854775808");
  // Beyond int64: a (rounded) double, not an integer.
  const Value big = parse("9223372036854775808");
  EXPECT_FALSE(big.is_integer());
  EXPECT_EQ(big.as_number(), 9223372036854775808.0);
  EXPECT_THROW(big.as_int(), Error);
  // Integral doubles still convert; fractions do not.
  EXPECT_EQ(parse("1e3").as_int(), 1000);
  EXPECT_FALSE(parse("1e3").is_integer());
  EXPECT_EQ(parse("2.0").as_int(), 2);
  EXPECT_THROW(parse("2.5").as_int(), Error);
  EXPECT_THROW(parse("\"1\"").as_int(), Error);
}

TEST(JsonParse, FloatEdgeCases) {
  EXPECT_EQ(parse("0.1").as_number(), 0.1);
  EXPECT_EQ(parse("1E+2").as_number(), 100.0);
  EXPECT_EQ(parse("1e-2").as_number(), 0.01);
  EXPECT_EQ(parse("-0.0e0").as_number(), 0.0);
  const Value negative_zero = parse("-0");
  EXPECT_TRUE(std::signbit(negative_zero.as_number()));
  EXPECT_TRUE(std::signbit(parse(dump(negative_zero)).as_number()));
  EXPECT_EQ(parse("1.7976931348623157e308").as_number(), std::numeric_limits<double>::max());
  EXPECT_EQ(parse("4.9406564584124654e-324").as_number(), std::numeric_limits<double>::denorm_min());
  // Underflow rounds to zero; overflow is an error (JSON has no infinity).
  EXPECT_EQ(parse("1e-400").as_number(), 0.0);
  EXPECT_EQ(parse("0.0000001e-400").as_number(), 0.0);
  EXPECT_TRUE(std::signbit(parse("-1e-400").as_number()));
  expect_rejected("1e400", "range");
  expect_rejected("-123456789e999", "range");
}

TEST(JsonParse, RejectsMalformedNumbers) {
  expect_rejected("01", "leading zeros");
  expect_rejected("-01", "leading zeros");
  expect_rejected("00", "leading zeros");
  expect_rejected("[012]", "leading zeros");
  expect_rejected("1.");
  expect_rejected(".5");
  expect_rejected("+1");
  expect_rejected("-");
  expect_rejected("1e");
  expect_rejected("1e+");
  expect_rejected("0x10");
  expect_rejected("1.5.2");
}

TEST(JsonParse, RejectsTrailingCommas) {
  expect_rejected("[1,2,]", "trailing comma");
  expect_rejected("{\"a\":1,}", "trailing comma");
  expect_rejected("[,]");
  expect_rejected("{,}");
  expect_rejected("[1,,2]");
}

TEST(JsonParse, RejectsStructuralErrors) {
  expect_rejected("", "end of the input");
  expect_rejected("   ", "end of the input");
  expect_rejected("[1 2]", "','");
  expect_rejected("{\"a\" 1}", "':'");
  expect_rejected("{\"a\":1 \"b\":2}", "','");
  expect_rejected("{a:1}", "member name");
  expect_rejected("{1:1}", "member name");
  expect_rejected("[1", "']'");
  expect_rejected("{\"a\":1", "'}'");
  expect_rejected("/* comment */ 1");
}

TEST(JsonParse, RejectsTrailingGarbage) {
  expect_rejected("{} x", "end of the document");
  expect_rejected("1 2", "end of the document");
  expect_rejected("[]]", "end of the document");
  expect_rejected(std::string_view("{}\0", 3), "end of the document");
}

TEST(JsonParse, RejectsDuplicateKeys) {
  expect_rejected(R"({"a":1,"b":2,"a":3})", "\"a\" appears twice");
  // Large objects take the hash-set path; check it too.
  std::string text = "{";
  for (int i = 0; i < 40; ++i) text += "\"k" + std::to_string(i) + "\":" + std::to_string(i) + ",";
  EXPECT_NO_THROW(parse(text.substr(0, text.size() - 1) + "}"));
  expect_rejected(text + "\"k3\":0}", "\"k3\" appears twice");
  // The same key in different objects is fine.
  EXPECT_NO_THROW(parse(R"({"a":{"a":1},"b":{"a":2}})"));
}

TEST(JsonParse, DepthLimit) {
  const auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_NO_THROW(parse(nested(256)));
  expect_rejected(nested(257), "256");
  std::string objects;
  for (int i = 0; i < 257; ++i) objects += "{\"a\":";
  objects += "1" + std::string(257, '}');
  expect_rejected(objects, "256");
  // A deep but hostile input is rejected without recursing past the limit.
  expect_rejected(std::string(100000, '['), "256");
}

TEST(JsonParse, ErrorMessageHasLineAndColumn) {
  try {
    parse("{\n  \"a\": 1,\n  \"b\": tru\n}");
    FAIL() << "accepted invalid JSON";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("line 3, column 8: expected 'true'"), std::string::npos) << error.message();
  }
}

TEST(JsonString, Escapes) {
  EXPECT_EQ(parse(R"("\" \\ \/ \b \f \n \r \t")").as_string(), "\" \\ / \b \f \n \r \t");
  expect_rejected(R"("\x")", "escape");
  expect_rejected(R"("\a")", "escape");
  expect_rejected("\"\\", "escape");
  expect_rejected("\"abc", "close the string");
}

TEST(JsonString, UnicodeEscapesProduceUtf8) {
  EXPECT_EQ(parse(R"("\u0041")").as_string(), "A");
  EXPECT_EQ(parse(R"("\u00e9")").as_string(), "\xC3\xA9");
  EXPECT_EQ(parse(R"("\u20AC")").as_string(), "\xE2\x82\xAC");
  EXPECT_EQ(parse(R"("\uFFFF")").as_string(), "\xEF\xBF\xBF");
  EXPECT_EQ(parse(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");  // U+1F600
  EXPECT_EQ(parse(R"("\uDBFF\uDFFF")").as_string(), "\xF4\x8F\xBF\xBF");  // U+10FFFF
  const std::string nul = parse(R"("a\u0000b")").as_string();
  EXPECT_EQ(nul, std::string("a\0b", 3));
  // Raw UTF-8 passes through unchanged.
  EXPECT_EQ(parse("\"gr\xC3\xBC\xC3\x9F \xF0\x9F\x98\x80\"").as_string(), "gr\xC3\xBC\xC3\x9F \xF0\x9F\x98\x80");
}

TEST(JsonString, RejectsBadSurrogatesAndHex) {
  expect_rejected(R"("\ud800")", "low surrogate");
  expect_rejected(R"("\ud800x")", "low surrogate");
  expect_rejected(R"("\ud800\u0041")", "low surrogate");
  expect_rejected(R"("\ud800\ud800")", "low surrogate");
  expect_rejected(R"("\udc00")", "high surrogate");
  expect_rejected(R"("\udfff\ud800")", "high surrogate");
  expect_rejected(R"("\u12G4")", "hex digit");
  expect_rejected(R"("\u12")", "hex digit");
  expect_rejected("\"\\u12", "hex digit");
}

TEST(JsonString, RejectsControlCharactersAndBadUtf8) {
  expect_rejected("\"a\nb\"", "control");
  expect_rejected("\"a\tb\"", "control");
  expect_rejected(std::string_view("\"a\0b\"", 5), "control");
  expect_rejected("\"\x1F\"", "control");
  expect_rejected("\"\xFF\"", "UTF-8");
  expect_rejected("\"\xC0\x80\"", "UTF-8");          // overlong NUL
  expect_rejected("\"\xE0\x80\xAF\"", "UTF-8");      // overlong '/'
  expect_rejected("\"\xED\xA0\x80\"", "UTF-8");      // UTF-8-encoded surrogate
  expect_rejected("\"\xF4\x90\x80\x80\"", "UTF-8");  // above U+10FFFF
  expect_rejected("\"\xC3\"", "UTF-8");              // truncated sequence
  expect_rejected("\"\x80\"", "UTF-8");              // lone continuation byte
  EXPECT_EQ(parse("\"\x7F\"").as_string(), "\x7F");  // DEL is not a control character in JSON
}

TEST(JsonDump, EscapesStrings) {
  EXPECT_EQ(dump(Value("q\"b\\n\n\x01\x1F\xC3\xA9/")), "\"q\\\"b\\\\n\\n\\u0001\\u001f\xC3\xA9/\"");
  EXPECT_EQ(dump(Value(std::string("a\0b", 3))), "\"a\\u0000b\"");
  EXPECT_THROW(dump(Value("\xFF")), Error);  // never write a document parse() would reject
  const std::string tricky = "\b\f\r\t\"\\\x7F\xF0\x9F\x98\x80";
  EXPECT_EQ(parse(dump(Value(tricky))).as_string(), tricky);
}

TEST(JsonDump, Numbers) {
  EXPECT_EQ(dump(Value(3)), "3");
  EXPECT_EQ(dump(Value(std::int64_t{-12345678901234})), "-12345678901234");
  EXPECT_EQ(dump(Value(0.1)), "0.1");
  EXPECT_EQ(dump(Value(2.0)), "2");
  EXPECT_EQ(dump(Value(1e300)), "1e+300");
  EXPECT_EQ(dump(Value(std::numeric_limits<double>::quiet_NaN())), "null");
  EXPECT_EQ(dump(Value(std::numeric_limits<double>::infinity())), "null");
  EXPECT_EQ(dump(Value(-std::numeric_limits<double>::infinity())), "null");
  // Every finite double survives dump -> parse exactly.
  for (const double x : {1.0 / 3.0, -2.5e-310, 6.02214076e23, std::numeric_limits<double>::max(),
                         std::numeric_limits<double>::denorm_min(), 0.30000000000000004}) {
    EXPECT_EQ(parse(dump(Value(x))).as_number(), x) << dump(Value(x));
  }
}

TEST(JsonValue, TypedAccessAndMutation) {
  Value object = Value::object();
  object.set("a", Value(1));
  object.set("b", Value("text"));
  object.set("a", Value(true));  // replaces in place
  EXPECT_EQ(dump(object), R"({"a":true,"b":"text"})");
  EXPECT_EQ(object.find("missing"), nullptr);
  EXPECT_THROW(object.at("missing"), Error);
  EXPECT_THROW(object.as_array(), Error);
  EXPECT_THROW(object.at("b").as_number(), Error);
  EXPECT_THROW(object.push_back(Value()), Error);
  Value array = Value::array();
  array.push_back(Value(1.5));
  array.push_back(Value::object());
  EXPECT_EQ(dump(array), "[1.5,{}]");
  EXPECT_EQ(array.find("a"), nullptr);
  EXPECT_THROW(array.at("a"), Error);
  EXPECT_THROW(array.set("a", Value()), Error);
  EXPECT_THROW(Value().as_bool(), Error);
  EXPECT_THROW(Value::object({{"x", Value(1)}, {"x", Value(2)}}), Error);
  try {
    Value(1).as_string();
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("expected a string, got a number"), std::string::npos) << error.message();
  }
}

// Random documents: dump -> parse -> dump is the identity.
Value random_value(std::mt19937_64& rng, int depth) {
  std::uniform_int_distribution<int> kind(0, depth > 4 ? 4 : 6);
  switch (kind(rng)) {
    case 0: return Value();
    case 1: return Value(rng() % 2 == 0);
    case 2: return Value(static_cast<std::int64_t>(rng()));
    case 3: {
      const double x = std::ldexp(static_cast<double>(rng() >> 11), static_cast<int>(rng() % 200) - 150);
      return Value(rng() % 2 ? -x : x);
    }
    case 4: {
      std::string text;
      const int length = static_cast<int>(rng() % 8);
      for (int i = 0; i < length; ++i) {
        static const char* pieces[] = {"a", "\"", "\\", "\n", "\x01", "\xC3\xA9", "\xF0\x9F\x98\x80", " "};
        text += pieces[rng() % 8];
      }
      return Value(text);
    }
    case 5: {
      Value array = Value::array();
      const int length = static_cast<int>(rng() % 5);
      for (int i = 0; i < length; ++i) array.push_back(random_value(rng, depth + 1));
      return array;
    }
    default: {
      Value object = Value::object();
      const int length = static_cast<int>(rng() % 5);
      for (int i = 0; i < length; ++i) object.set("k" + std::to_string(rng() % 10), random_value(rng, depth + 1));
      return object;
    }
  }
}

TEST(JsonRoundTrip, RandomDocuments) {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    const Value value = random_value(rng, 0);
    const std::string text = dump(value);
    ASSERT_EQ(dump(parse(text)), text);
  }
}

}  // namespace
}  // namespace samoyeds::json
