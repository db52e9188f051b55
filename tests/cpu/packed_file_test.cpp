// SPDX-License-Identifier: Apache-2.0
// Tests of packed-expert files (docs/packed_file.md): bit-exact round trips for every pattern kind
// and odd shapes, the on-disk convention itself, and one corruption per reading/writing rule. The
// corrupt files are rebuilt tensor by tensor from a good one, so each test breaks exactly one rule.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "io/json.h"
#include "samoyeds/error.h"
#include "samoyeds/format.h"
#include "samoyeds/packed_file.h"
#include "samoyeds/safetensors.h"

namespace samoyeds {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "samoyeds_pf_" + std::to_string(::getpid()) + "_" + name;
}

Matrix random_matrix(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix out(dtype, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) out.set(r, c, normal(rng));
  }
  return out;
}

bool same_bytes(const Matrix& a, const Matrix& b) {
  return a.dtype() == b.dtype() && a.rows() == b.rows() && a.cols() == b.cols() && a.bytes() == b.bytes() &&
         (a.bytes() == 0 || std::memcmp(a.data(), b.data(), a.bytes()) == 0);
}

void expect_same_matrix(const PackedMatrix& expected, const PackedMatrix& actual) {
  EXPECT_EQ(actual.pattern, expected.pattern);
  EXPECT_EQ(actual.dtype, expected.dtype);
  EXPECT_EQ(actual.rows, expected.rows);
  EXPECT_EQ(actual.cols, expected.cols);
  EXPECT_TRUE(actual.values == expected.values) << "values differ";
  EXPECT_TRUE(actual.metadata == expected.metadata) << "metadata differ";
  EXPECT_TRUE(actual.row_select == expected.row_select) << "row_select differ";
}

void expect_same_file(const PackedFile& expected, const PackedFile& actual) {
  ASSERT_EQ(actual.matrices.size(), expected.matrices.size());
  for (const auto& [name, matrix] : expected.matrices) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(actual.matrices.contains(name));
    expect_same_matrix(matrix, actual.matrices.at(name));
  }
  ASSERT_EQ(actual.dense.size(), expected.dense.size());
  for (const auto& [name, matrix] : expected.dense) {
    ASSERT_TRUE(actual.dense.contains(name)) << name;
    EXPECT_TRUE(same_bytes(matrix, actual.dense.at(name))) << name;
  }
  EXPECT_EQ(actual.metadata, expected.metadata);
}

struct RoundTripCase {
  const char* pattern;
  DType dtype;
  std::int64_t rows, cols;
};

class PackedFileRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(PackedFileRoundTrip, BitExact) {
  const RoundTripCase c = GetParam();
  const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(c.rows * 7 + c.cols);
  SCOPED_TRACE(::testing::Message() << "pattern " << c.pattern << ", [" << c.rows << ", " << c.cols << "], seed "
                                    << seed);
  const SparsityPattern pattern = SparsityPattern::parse(c.pattern);
  PackedFile file;
  file.matrices["layers.0.w1"] = pack(random_matrix(c.dtype, c.rows, c.cols, seed), pattern);
  file.matrices["layers.0.w2"] = pack(random_matrix(c.dtype, c.cols, c.rows, seed + 1), pattern);  // transposed shape
  file.dense["router"] = random_matrix(DType::f32, 8, c.cols, seed + 2);
  file.dense["norm"] = random_matrix(DType::bf16, 1, c.cols, seed + 3);
  file.dense["embed"] = random_matrix(DType::f16, 5, 3, seed + 4);
  file.dense["empty"] = Matrix(DType::bf16, 0, 4);
  file.metadata["model"] = "test \xE2\x9C\x93";
  file.metadata["source"] = "{\"not\": \"parsed\"}";

  const std::string path = temp_path("roundtrip.safetensors");
  write_packed_file(path, file);
  const PackedFile read = read_packed_file(path);
  expect_same_file(file, read);

  // The on-disk convention (docs/packed_file.md §2-§3), seen through a plain safetensors reader.
  const SafetensorsFile raw = SafetensorsFile::open(path);
  const PackedGeometry g = packed_geometry(pattern, c.rows, c.cols);
  const TensorInfo& values = raw.tensor("layers.0.w1.values");
  EXPECT_EQ(values.dtype, c.dtype == DType::bf16 ? "BF16" : "F16");
  EXPECT_EQ(values.shape, (std::vector<std::int64_t>{g.compressed_rows_padded, g.cols_padded / 2}));
  const TensorInfo& metadata = raw.tensor("layers.0.w1.metadata");
  EXPECT_EQ(metadata.dtype, "U32");
  EXPECT_EQ(metadata.shape, (std::vector<std::int64_t>{g.compressed_rows_padded / 16, g.cols_padded / 32, 16}));
  if (pattern.has_row_selection()) {
    const TensorInfo& select = raw.tensor("layers.0.w1.row_select");
    EXPECT_EQ(select.dtype, "U32");
    EXPECT_EQ(select.shape,
              (std::vector<std::int64_t>{g.compressed_rows_padded / 32, g.num_segments, g.select_bits}));
  } else {
    EXPECT_EQ(raw.find("layers.0.w1.row_select"), nullptr);
  }
  EXPECT_EQ(raw.tensor("router").dtype, "F32");
  EXPECT_EQ(raw.tensor("norm").shape, (std::vector<std::int64_t>{1, c.cols}));
  ASSERT_NE(raw.metadata_value("samoyeds.format_version"), nullptr);
  EXPECT_EQ(*raw.metadata_value("samoyeds.format_version"), "1");
  const json::Value listing = json::parse(*raw.metadata_value("samoyeds.matrices"));
  const json::Value& entry = listing.at("layers.0.w1");
  EXPECT_EQ(entry.at("pattern").as_string(), pattern.to_string());
  EXPECT_EQ(entry.at("dtype").as_string(), dtype_name(c.dtype));
  EXPECT_EQ(entry.at("rows").as_int(), c.rows);
  EXPECT_EQ(entry.at("cols").as_int(), c.cols);
  EXPECT_EQ(*raw.metadata_value("model"), "test \xE2\x9C\x93");
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(PackedFile, PackedFileRoundTrip,
                         ::testing::Values(RoundTripCase{"1:2:128", DType::bf16, 1408, 2304},
                                           RoundTripCase{"1:2:128", DType::f16, 100, 96},
                                           RoundTripCase{"2:4:64", DType::bf16, 100, 96},
                                           RoundTripCase{"2:4:64", DType::f16, 1408, 96},
                                           RoundTripCase{"2:4", DType::bf16, 100, 2304},
                                           RoundTripCase{"2:4", DType::f16, 1408, 96},
                                           RoundTripCase{"3:8:256", DType::bf16, 13, 40}),
                         [](const ::testing::TestParamInfo<RoundTripCase>& info) {
                           std::string name = std::string(info.param.pattern) + "_" + dtype_name(info.param.dtype) +
                                              "_" + std::to_string(info.param.rows) + "x" +
                                              std::to_string(info.param.cols);
                           for (char& ch : name) ch = (ch == ':') ? '_' : ch;
                           return name;
                         });

TEST(PackedFileLayout, DocumentedExampleShapes) {
  // docs/packed_file.md §3: 1:2:128 bf16 1408 x 2048.
  PackedFile file;
  file.matrices["layers.0.experts.3.w1"] = pack(random_matrix(DType::bf16, 1408, 2048, 7), SparsityPattern::parse("1:2:128"));
  const std::string path = temp_path("example.safetensors");
  write_packed_file(path, file);
  const SafetensorsFile raw = SafetensorsFile::open(path);
  EXPECT_EQ(raw.tensor("layers.0.experts.3.w1.values").shape, (std::vector<std::int64_t>{704, 1024}));
  EXPECT_EQ(raw.tensor("layers.0.experts.3.w1.metadata").shape, (std::vector<std::int64_t>{44, 64, 16}));
  EXPECT_EQ(raw.tensor("layers.0.experts.3.w1.row_select").shape, (std::vector<std::int64_t>{22, 16, 1}));
  EXPECT_EQ(*raw.metadata_value("samoyeds.matrices"),
            R"({"layers.0.experts.3.w1":{"pattern":"1:2:128","dtype":"bf16","rows":1408,"cols":2048}})");
  std::filesystem::remove(path);
}

TEST(PackedFileEmpty, RoundTrip) {
  const std::string path = temp_path("empty.safetensors");
  write_packed_file(path, PackedFile{});
  const PackedFile read = read_packed_file(path);
  EXPECT_TRUE(read.matrices.empty());
  EXPECT_TRUE(read.dense.empty());
  EXPECT_TRUE(read.metadata.empty());
  std::filesystem::remove(path);
}

// ---- corruption ----------------------------------------------------------------------------------

// A small good file: matrix "m" (1:2:128), matrix "p" (plain 2:4), dense "router", user metadata.
std::vector<std::uint8_t> good_image() {
  PackedFile file;
  file.matrices["m"] = pack(random_matrix(DType::bf16, 100, 96, 42), SparsityPattern::parse("1:2:128"));
  file.matrices["p"] = pack(random_matrix(DType::f16, 70, 64, 43), SparsityPattern::plain_2_4());
  file.dense["router"] = random_matrix(DType::f32, 4, 96, 44);
  file.metadata["user"] = "yes";
  const std::string path = temp_path("good.safetensors");
  write_packed_file(path, file);
  std::vector<std::uint8_t> bytes;
  {
    const SafetensorsFile raw = SafetensorsFile::open(path);
    SafetensorsWriter writer;
    for (const TensorInfo& info : raw.tensors()) {
      const auto span = raw.bytes(info);
      writer.add_owned(info.name, info.dtype, info.shape, {span.begin(), span.end()});
    }
    for (const auto& [key, value] : raw.metadata()) writer.set_metadata(key, value);
    bytes = writer.serialize();
  }
  std::filesystem::remove(path);
  return bytes;
}

struct Tensor {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;
  bool drop = false;
};
using MetadataList = std::vector<std::pair<std::string, std::string>>;

// good_image() with `edit` applied to every tensor and `edit_metadata` to the metadata.
std::vector<std::uint8_t> corrupted(const std::function<void(Tensor&)>& edit,
                                    const std::function<void(MetadataList&)>& edit_metadata = {}) {
  const SafetensorsFile good = SafetensorsFile::from_bytes(good_image());
  SafetensorsWriter writer;
  for (const TensorInfo& info : good.tensors()) {
    const auto span = good.bytes(info);
    Tensor tensor{info.name, info.dtype, info.shape, {span.begin(), span.end()}};
    edit(tensor);
    if (!tensor.drop) writer.add_owned(tensor.name, tensor.dtype, tensor.shape, std::move(tensor.data));
  }
  MetadataList metadata = good.metadata();
  if (edit_metadata) edit_metadata(metadata);
  for (auto& [key, value] : metadata) writer.set_metadata(key, value);
  return writer.serialize();
}

void expect_unreadable(std::vector<std::uint8_t> bytes, std::initializer_list<std::string_view> fragments) {
  try {
    read_packed_file(SafetensorsFile::from_bytes(std::move(bytes), "corrupt.safetensors"));
    ADD_FAILURE() << "read a corrupt packed file";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("corrupt.safetensors"), std::string::npos) << error.message();
    for (const std::string_view fragment : fragments) {
      EXPECT_NE(error.message().find(fragment), std::string::npos) << "missing '" << fragment << "' in: "
                                                                   << error.message();
    }
  }
}

TEST(PackedFileCorrupt, GoodImageReads) {
  const PackedFile file = read_packed_file(SafetensorsFile::from_bytes(good_image()));
  EXPECT_EQ(file.matrices.size(), 2u);
  EXPECT_EQ(file.dense.size(), 1u);
  EXPECT_EQ(file.metadata.at("user"), "yes");
}

TEST(PackedFileCorrupt, TruncatedFile) {
  const std::string path = temp_path("truncated.safetensors");
  PackedFile file;
  file.matrices["m"] = pack(random_matrix(DType::bf16, 100, 96, 1), SparsityPattern::parse("1:2:128"));
  write_packed_file(path, file);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  try {
    read_packed_file(path);
    ADD_FAILURE() << "read a truncated file";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find(path), std::string::npos) << error.message();
    EXPECT_NE(error.message().find("truncated"), std::string::npos) << error.message();
  }
  std::filesystem::remove(path);
}

TEST(PackedFileCorrupt, MissingMetadataTensor) {
  expect_unreadable(corrupted([](Tensor& t) { t.drop = t.name == "m.metadata"; }),
                    {"matrix \"m\"", "no tensor \"m.metadata\""});
  expect_unreadable(corrupted([](Tensor& t) { t.drop = t.name == "m.row_select"; }), {"no tensor \"m.row_select\""});
  expect_unreadable(corrupted([](Tensor& t) { t.drop = t.name == "p.values"; }), {"no tensor \"p.values\""});
}

TEST(PackedFileCorrupt, WrongShape) {
  // Same bytes, different shape: only the shape check can notice.
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "m.values") t.shape = {t.shape[0] * 2, t.shape[1] / 2};
                    }),
                    {"tensor \"m.values\"", "has shape", "needs [64, 64]"});
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "m.metadata") t.shape = {t.shape[0] * t.shape[1] * t.shape[2]};
                    }),
                    {"tensor \"m.metadata\"", "has shape"});
}

TEST(PackedFileCorrupt, WrongDType) {
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "m.values") t.dtype = "F16";
                    }),
                    {"tensor \"m.values\" is F16", "needs BF16"});
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "p.metadata") t.dtype = "I32";
                    }),
                    {"tensor \"p.metadata\" is I32", "needs U32"});
}

TEST(PackedFileCorrupt, FormatVersion) {
  const auto set_version = [](std::string version) {
    return [version](MetadataList& list) {
      for (auto& [key, value] : list) {
        if (key == "samoyeds.format_version") value = version;
      }
    };
  };
  expect_unreadable(corrupted([](Tensor&) {}, set_version("2")), {"format version \"2\"", "reads version 1"});
  expect_unreadable(corrupted([](Tensor&) {}, [](MetadataList& list) { std::erase_if(list, [](const auto& kv) {
                      return kv.first == "samoyeds.format_version";
                    }); }),
                    {"not a Samoyeds packed file"});
  expect_unreadable(corrupted([](Tensor&) {}, [](MetadataList& list) { list.emplace_back("samoyeds.extra", "1"); }),
                    {"unknown reserved metadata key \"samoyeds.extra\""});
}

TEST(PackedFileCorrupt, MatrixListing) {
  const auto set_listing = [](std::string listing) {
    return [listing](MetadataList& list) {
      for (auto& [key, value] : list) {
        if (key == "samoyeds.matrices") value = listing;
      }
    };
  };
  const auto keep = [](Tensor&) {};
  expect_unreadable(corrupted(keep, set_listing("{")), {"samoyeds.matrices is not valid JSON"});
  expect_unreadable(corrupted(keep, set_listing("[]")), {"must be a JSON object"});
  const std::string p = R"("p":{"pattern":"2:4","dtype":"fp16","rows":70,"cols":64})";
  expect_unreadable(corrupted(keep, set_listing(R"({"m":{"pattern":"1:2:128","dtype":"bf16","rows":100},)" + p + "}")),
                    {"matrix \"m\"", "\"cols\""});
  expect_unreadable(
      corrupted(keep, set_listing(R"({"m":{"pattern":"1:2:128","dtype":"bf16","rows":100,"cols":96,"x":1},)" + p + "}")),
      {"unknown field \"x\""});
  expect_unreadable(corrupted(keep, set_listing(R"({"m":{"pattern":"1:2:128","dtype":"fp32","rows":100,"cols":96},)" + p + "}")),
                    {"bf16 or fp16"});
  expect_unreadable(corrupted(keep, set_listing(R"({"m":{"pattern":"1:9:128","dtype":"bf16","rows":100,"cols":96},)" + p + "}")),
                    {"matrix \"m\""});
  expect_unreadable(corrupted(keep, set_listing(R"({"m":{"pattern":"1:2:128","dtype":"bf16","rows":0,"cols":96},)" + p + "}")),
                    {"rows and cols"});
  // A declared size that disagrees with the tensors is a shape error.
  expect_unreadable(corrupted(keep, set_listing(R"({"m":{"pattern":"1:2:128","dtype":"bf16","rows":100,"cols":200},)" + p + "}")),
                    {"tensor \"m.values\"", "has shape"});
  // Dropping a matrix from the listing leaves its tensors unclaimed: they collide, not pass as dense.
  expect_unreadable(corrupted(keep, set_listing("{" + p + "}")), {"dense tensor \"m.metadata\" is U32"});
}

TEST(PackedFileCorrupt, UnclaimedTensors) {
  // A stray row_select next to a plain 2:4 matrix.
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "router") t.name = "p.row_select";
                    }),
                    {"\"p.row_select\"", "collides", "\"p\""});
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "router") t.name = "m";
                    }),
                    {"collides"});
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "router") t.shape = {4 * 96};
                    }),
                    {"dense tensor \"router\"", "2-D"});
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "router") t.dtype = "I32";
                    }),
                    {"dense tensor \"router\" is I32"});
}

TEST(PackedFileCorrupt, EqualChunkIndicesFailValidate) {
  // Every 2-bit field 01: each chunk in that word claims positions (1, 1).
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "m.metadata") {
                        const std::uint32_t word = 0x55555555u;
                        std::memcpy(t.data.data(), &word, 4);
                      }
                    }),
                    {"matrix \"m\" is corrupt", "distinct"});
  // Nonzero padding values are caught too.
  expect_unreadable(corrupted([](Tensor& t) {
                      if (t.name == "p.values") {
                        t.data[t.data.size() - 1] = 0x3C;  // last value: a padding row
                      }
                    }),
                    {"matrix \"p\" is corrupt", "padding"});
}

TEST(PackedFileWrite, RejectsBadInput) {
  PackedFile file;
  file.matrices["m"] = pack(random_matrix(DType::bf16, 100, 96, 5), SparsityPattern::parse("2:4:64"));
  const std::string path = temp_path("rejected.safetensors");
  const auto expect_write_error = [&](const PackedFile& bad, std::string_view fragment) {
    try {
      write_packed_file(path, bad);
      ADD_FAILURE() << "wrote an invalid packed file";
    } catch (const Error& error) {
      EXPECT_NE(error.message().find(fragment), std::string::npos) << error.message();
    }
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  };
  PackedFile reserved = file;
  reserved.metadata["samoyeds.format_version"] = "7";
  expect_write_error(reserved, "reserved prefix");
  PackedFile collision = file;
  collision.dense["m.values"] = Matrix(DType::bf16, 1, 1);
  expect_write_error(collision, "collides");
  PackedFile row_select_collision = file;
  row_select_collision.matrices["p"] = pack(random_matrix(DType::bf16, 64, 64, 6), SparsityPattern::plain_2_4());
  row_select_collision.dense["p.row_select"] = Matrix(DType::bf16, 1, 1);
  expect_write_error(row_select_collision, "collides");
  PackedFile same_name = file;
  same_name.dense["m"] = Matrix(DType::f32, 1, 1);
  expect_write_error(same_name, "collides");
  PackedFile broken = file;
  broken.matrices["m"].values.pop_back();
  expect_write_error(broken, "matrix \"m\" is not a valid packed matrix");
  PackedFile equal_indices = file;
  equal_indices.matrices["m"].metadata[0] = 0x55555555u;
  expect_write_error(equal_indices, "distinct");
  PackedFile empty_name = file;
  empty_name.dense[""] = Matrix(DType::f32, 1, 1);
  expect_write_error(empty_name, "empty name");
  EXPECT_THROW(write_packed_file("", file), Error);
}

}  // namespace
}  // namespace samoyeds
