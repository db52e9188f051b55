// SPDX-License-Identifier: Apache-2.0
// Tests of the safetensors reader/writer: write -> read round trips, atomic writes, and one test
// per validation rule, each built from hand-written or corrupted bytes. The reader is the first
// thing that touches a downloaded checkpoint, so every rule needs a test that would catch its loss.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "samoyeds/error.h"
#include "samoyeds/safetensors.h"

namespace samoyeds {
namespace {

// An image with header `header` (unpadded) and `data`; `length` overrides the 8-byte header length.
std::vector<std::uint8_t> image(std::string_view header, std::vector<std::uint8_t> data = {},
                                std::uint64_t length = ~std::uint64_t{0}) {
  if (length == ~std::uint64_t{0}) length = header.size();
  std::vector<std::uint8_t> out(8 + header.size() + data.size());
  std::memcpy(out.data(), &length, 8);
  if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

// Expects from_bytes to throw an Error mentioning the label and `fragment`.
void expect_invalid(std::vector<std::uint8_t> bytes, std::string_view fragment) {
  try {
    SafetensorsFile::from_bytes(std::move(bytes), "bad.safetensors");
    ADD_FAILURE() << "accepted an invalid file (expected: " << fragment << ")";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("bad.safetensors"), std::string::npos) << error.message();
    EXPECT_NE(error.message().find(fragment), std::string::npos) << error.message();
  }
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "samoyeds_st_" + std::to_string(::getpid()) + "_" + name;
}

std::vector<std::uint8_t> iota_bytes(std::size_t size, std::uint8_t start = 1) {
  std::vector<std::uint8_t> out(size);
  for (std::size_t i = 0; i < size; ++i) out[i] = static_cast<std::uint8_t>(start + i * 7);
  return out;
}

// A writer over several dtypes, a 0-d tensor, an empty tensor and metadata.
struct Sample {
  std::vector<std::uint8_t> bf16 = iota_bytes(2 * 3 * 2);
  std::vector<std::uint8_t> f32 = iota_bytes(5 * 4, 3);
  std::vector<std::uint8_t> i64 = iota_bytes(8, 9);  // 0-d
  std::vector<std::uint8_t> u8 = iota_bytes(7, 11);
  std::vector<std::uint8_t> empty;
  std::vector<std::uint8_t> f64 = iota_bytes(2 * 8, 13);

  SafetensorsWriter writer() const {
    SafetensorsWriter w;
    w.add("layer.weight", "BF16", {2, 3}, bf16);
    w.add("norm", "F32", {5}, f32);
    w.add("step", "I64", {}, i64);
    w.add("bytes", "U8", {7}, u8);
    w.add("nothing", "F16", {0, 4}, empty);
    w.add("pair", "F64", {1, 2}, f64);
    w.set_metadata("format", "pt");
    w.set_metadata("note", "caf\xC3\xA9 \"quoted\"");
    return w;
  }

  void check(const SafetensorsFile& file) const {
    const std::vector<std::string> names = {"layer.weight", "norm", "step", "bytes", "nothing", "pair"};
    ASSERT_EQ(file.tensors().size(), names.size());
    for (std::size_t i = 0; i < names.size(); ++i) EXPECT_EQ(file.tensors()[i].name, names[i]);  // order added
    const TensorInfo& weight = file.tensor("layer.weight");
    EXPECT_EQ(weight.dtype, "BF16");
    EXPECT_EQ(weight.shape, (std::vector<std::int64_t>{2, 3}));
    EXPECT_EQ(weight.numel(), 6);
    const auto same = [&](std::string_view name, const std::vector<std::uint8_t>& expected) {
      const auto span = file.bytes(file.tensor(name));
      EXPECT_EQ(std::vector<std::uint8_t>(span.begin(), span.end()), expected) << name;
    };
    same("layer.weight", bf16);
    same("norm", f32);
    same("step", i64);
    same("bytes", u8);
    same("nothing", empty);
    same("pair", f64);
    EXPECT_TRUE(file.tensor("step").shape.empty());
    EXPECT_EQ(file.tensor("step").numel(), 1);
    EXPECT_EQ(file.tensor("nothing").numel(), 0);
    ASSERT_NE(file.metadata_value("format"), nullptr);
    EXPECT_EQ(*file.metadata_value("format"), "pt");
    EXPECT_EQ(*file.metadata_value("note"), "caf\xC3\xA9 \"quoted\"");
    EXPECT_EQ(file.metadata_value("absent"), nullptr);
    EXPECT_EQ(file.metadata().size(), 2u);
    EXPECT_EQ(file.find("absent"), nullptr);
  }
};

TEST(SafetensorsDType, Sizes) {
  EXPECT_EQ(safetensors_dtype_size("BF16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("F16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("F32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("F64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("U32"), 4u);
  EXPECT_EQ(safetensors_dtype_size("I64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("BOOL"), 1u);
  EXPECT_EQ(safetensors_dtype_size("F8_E4M3"), 1u);
  EXPECT_EQ(safetensors_dtype_size("F8_E5M2"), 1u);
  EXPECT_EQ(safetensors_dtype_size("U16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("I16"), 2u);
  EXPECT_EQ(safetensors_dtype_size("U64"), 8u);
  EXPECT_EQ(safetensors_dtype_size("I8"), 1u);
  EXPECT_EQ(safetensors_dtype_size("I32"), 4u);
  EXPECT_THROW(safetensors_dtype_size("bf16"), Error);  // case matters
  EXPECT_THROW(safetensors_dtype_size("F4"), Error);
  EXPECT_THROW(safetensors_dtype_size(""), Error);
}

TEST(SafetensorsRoundTrip, InMemory) {
  const Sample sample;
  const std::vector<std::uint8_t> bytes = sample.writer().serialize();
  std::uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), 8);
  EXPECT_EQ(header_bytes % 8, 0u) << "header must be padded so data starts 8-byte aligned";
  const SafetensorsFile file = SafetensorsFile::from_bytes(bytes);
  sample.check(file);
  EXPECT_EQ(file.path(), "<memory>");
  EXPECT_EQ(file.data_bytes(), bytes.size() - 8 - header_bytes);
}

TEST(SafetensorsRoundTrip, ThroughFileAndMove) {
  const Sample sample;
  const std::string path = temp_path("roundtrip.safetensors");
  sample.writer().write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  SafetensorsFile opened = SafetensorsFile::open(path);
  sample.check(opened);
  SafetensorsFile moved = std::move(opened);  // the mapping moves with it
  sample.check(moved);
  SafetensorsFile assigned = SafetensorsFile::from_bytes(Sample().writer().serialize());
  assigned = std::move(moved);
  sample.check(assigned);
  EXPECT_EQ(assigned.path(), path);
  // The writer's output is byte-identical to serialize().
  std::ifstream in(path, std::ios::binary);
  const std::vector<std::uint8_t> on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, sample.writer().serialize());
  std::filesystem::remove(path);
}

TEST(SafetensorsRoundTrip, EmptyFileAndOwnedData) {
  EXPECT_TRUE(SafetensorsFile::from_bytes(SafetensorsWriter().serialize()).tensors().empty());
  SafetensorsWriter writer;
  writer.add_owned("a", "U16", {3}, {1, 2, 3, 4, 5, 6});
  const SafetensorsWriter copy = writer;  // the copy must read its own buffers
  writer = SafetensorsWriter();
  const SafetensorsFile file = SafetensorsFile::from_bytes(copy.serialize());
  const auto span = file.bytes(file.tensor("a"));
  EXPECT_EQ(std::vector<std::uint8_t>(span.begin(), span.end()), (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6}));
}

TEST(SafetensorsRoundTrip, ReadsForeignUnpaddedHeader) {
  // Hand-written in the reference layout: unpadded header, metadata first, offsets out of order.
  const std::string header =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
      R"("a":{"shape":[2],"dtype":"I16","data_offsets":[0,4]}})";
  const SafetensorsFile file = SafetensorsFile::from_bytes(image(header, {1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "b");  // header order, not offset order
  EXPECT_EQ(file.bytes(file.tensor("b"))[1], 6);
  EXPECT_EQ(file.bytes(file.tensor("a"))[0], 1);
}

TEST(SafetensorsWrite, RejectsBadTensors) {
  const std::vector<std::uint8_t> four(4);
  SafetensorsWriter writer;
  writer.add("x", "F32", {1}, four);
  EXPECT_THROW(writer.add("x", "F32", {1}, four), Error);           // duplicate
  EXPECT_THROW(writer.add("", "F32", {1}, four), Error);            // empty name
  EXPECT_THROW(writer.add("__metadata__", "F32", {1}, four), Error);
  EXPECT_THROW(writer.add("y", "F31", {1}, four), Error);           // unknown dtype
  EXPECT_THROW(writer.add("y", "F32", {2}, four), Error);           // size mismatch
  EXPECT_THROW(writer.add("y", "F32", {-1}, four), Error);          // negative extent
  EXPECT_THROW(writer.add("y", "U8", {1ll << 62, 1ll << 62}, four), Error);  // overflow
  EXPECT_EQ(writer.num_tensors(), 1u);
  writer.set_metadata("k", "1");
  writer.set_metadata("k", "2");  // replaces
  const SafetensorsFile file = SafetensorsFile::from_bytes(writer.serialize());
  EXPECT_EQ(file.metadata().size(), 1u);
  EXPECT_EQ(*file.metadata_value("k"), "2");
  SafetensorsWriter bad_name;
  bad_name.add("bad\xFF", "F32", {1}, four);
  EXPECT_THROW(bad_name.serialize(), Error);  // names must be UTF-8
}

TEST(SafetensorsWrite, AtomicWriteReplacesAndCleansUp) {
  const std::string path = temp_path("atomic.safetensors");
  {
    std::ofstream old(path, std::ios::binary);
    old << "old contents";
  }
  const std::vector<std::uint8_t> data = iota_bytes(8);
  SafetensorsWriter writer;
  writer.add("t", "U8", {8}, data);
  writer.write(path);
  EXPECT_EQ(SafetensorsFile::open(path).tensors().size(), 1u);
  std::filesystem::remove(path);
  // A failing write (missing directory) throws and leaves no temporary file behind.
  const std::string missing_dir = ::testing::TempDir() + "samoyeds_no_such_dir_" + std::to_string(::getpid());
  EXPECT_THROW(writer.write(missing_dir + "/x.safetensors"), Error);
  EXPECT_FALSE(std::filesystem::exists(missing_dir));
  // A failing rename (target is a non-empty directory) removes the temporary file.
  const std::string dir_target = temp_path("dir_target");
  std::filesystem::create_directories(dir_target + "/inside");
  EXPECT_THROW(writer.write(dir_target), Error);
  EXPECT_FALSE(std::filesystem::exists(dir_target + ".tmp." + std::to_string(::getpid())));
  std::filesystem::remove_all(dir_target);
}

TEST(SafetensorsOpen, FileSystemErrors) {
  EXPECT_THROW(SafetensorsFile::open(temp_path("does_not_exist")), Error);
  EXPECT_THROW(SafetensorsFile::open(::testing::TempDir()), Error);  // a directory
  const std::string empty = temp_path("empty.safetensors");
  { std::ofstream out(empty, std::ios::binary); }
  try {
    SafetensorsFile::open(empty);
    ADD_FAILURE() << "accepted an empty file";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find(empty), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("too short"), std::string::npos) << error.message();
  }
  std::filesystem::remove(empty);
}

TEST(SafetensorsValidate, TooShort) {
  expect_invalid({}, "too short");
  expect_invalid({1, 0, 0, 0, 0, 0, 0}, "too short");
}

TEST(SafetensorsValidate, HeaderLength) {
  expect_invalid(image("", {}, 0), "header length is 0");
  expect_invalid(image("{}", {}, 200'000'000), "100 MB");
  expect_invalid(image("{}", {}, 3), "past the end");
  expect_invalid(image("{}", {}, ~std::uint64_t{0} - 1), "100 MB");
}

TEST(SafetensorsValidate, Truncated) {
  const std::vector<std::uint8_t> good = Sample().writer().serialize();
  ASSERT_NO_THROW(SafetensorsFile::from_bytes(good));
  expect_invalid({good.begin(), good.end() - 1}, "truncated");        // data cut short
  expect_invalid({good.begin(), good.begin() + 40}, "past the end");  // header cut short
  std::vector<std::uint8_t> longer = good;
  longer.push_back(0);
  expect_invalid(longer, "trailing bytes");
}

TEST(SafetensorsValidate, HeaderNotAnObject) {
  expect_invalid(image("[]"), "does not start with '{'");
  expect_invalid(image(" {}"), "does not start with '{'");
  expect_invalid(image("{\"a\":"), "not valid JSON");
  expect_invalid(image("{} {}"), "not valid JSON");
  expect_invalid(image("{\"a\":1,}"), "not valid JSON");
  expect_invalid(image(std::string_view("{}\0\0\0\0\0\0", 8)), "not valid JSON");
}

TEST(SafetensorsValidate, BadEntries) {
  expect_invalid(image(R"({"t":[1]})"), "not an object");
  expect_invalid(image(R"({"t":{"shape":[1],"data_offsets":[0,1]}})", {0}), "dtype");
  expect_invalid(image(R"({"t":{"dtype":1,"shape":[1],"data_offsets":[0,1]}})", {0}), "dtype");
  expect_invalid(image(R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", {0}), "shape");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", {0}), "shape");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", {0}), "shape");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", {0}), "non-negative");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1]}})", {0}), "data_offsets");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", {0}), "data_offsets");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}})", {0}), "data_offsets");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,-1]}})", {0}), "data_offsets");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"strides":[1]}})", {0}),
                 "unknown field");
}

TEST(SafetensorsValidate, UnknownDType) {
  expect_invalid(image(R"({"t":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", {0}), "unknown dtype \"Q4\"");
}

TEST(SafetensorsValidate, ShapeOverflow) {
  expect_invalid(image(R"({"t":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})"),
                 "overflows");
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[9223372036854775807,2],"data_offsets":[0,0]}})"),
                 "overflows");
}

TEST(SafetensorsValidate, BeginAfterEnd) {
  expect_invalid(image(R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}})", {0, 0}), "begin > end");
}

TEST(SafetensorsValidate, WrongSpanSize) {
  expect_invalid(image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", {0, 0, 0, 0}), "needs 8");
}

TEST(SafetensorsValidate, OverlappingOffsets) {
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                       iota_bytes(6)),
                 "overlaps");
  // Two names aliasing the very same bytes are an overlap too.
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                       R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                       iota_bytes(4)),
                 "overlaps");
}

TEST(SafetensorsValidate, Hole) {
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                       iota_bytes(6)),
                 "hole");
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", iota_bytes(3)), "hole");
}

TEST(SafetensorsValidate, LastEndMustMatchFileSize) {
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", iota_bytes(3)), "trailing");
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", iota_bytes(3)), "truncated");
}

TEST(SafetensorsValidate, DuplicateNames) {
  expect_invalid(image(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                       iota_bytes(2)),
                 "appears twice");
}

TEST(SafetensorsValidate, Metadata) {
  expect_invalid(image(R"({"__metadata__":{"k":1}})"), "is not a string");
  expect_invalid(image(R"({"__metadata__":{"k":null}})"), "is not a string");
  expect_invalid(image(R"({"__metadata__":["k"]})"), "__metadata__ must be an object");
  expect_invalid(image(R"({"__metadata__":"k"})"), "__metadata__ must be an object");
  expect_invalid(image(R"({"__metadata__":{},"__metadata__":{}})"), "appears twice");
}

TEST(SafetensorsLookup, ErrorsNameFileAndTensor) {
  const SafetensorsFile file = SafetensorsFile::from_bytes(Sample().writer().serialize(), "sample.safetensors");
  try {
    file.tensor("model.missing");
    FAIL() << "no error for a missing tensor";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("sample.safetensors"), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("model.missing"), std::string::npos) << error.message();
  }
  TensorInfo foreign;
  foreign.name = "foreign";
  foreign.begin = 0;
  foreign.end = file.data_bytes() + 1;
  EXPECT_THROW(file.bytes(foreign), Error);
}

// Random corruption never crashes the reader: it either validates or throws samoyeds::Error.
TEST(SafetensorsFuzz, CorruptedBytesThrowOrValidate) {
  const std::vector<std::uint8_t> good = Sample().writer().serialize();
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    std::vector<std::uint8_t> bytes = good;
    const int num_flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < num_flips; ++i) {
      const std::size_t at = rng() % std::min<std::size_t>(bytes.size(), 8 + 200);  // mostly the header
      bytes[at] = static_cast<std::uint8_t>(rng());
    }
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    try {
      const SafetensorsFile file = SafetensorsFile::from_bytes(bytes);
      for (const TensorInfo& info : file.tensors()) {
        ASSERT_LE(info.end, file.data_bytes());
        ASSERT_EQ(file.bytes(info).size(), info.end - info.begin);
      }
    } catch (const Error&) {
      // rejected: fine
    }
  }
}

}  // namespace
}  // namespace samoyeds
