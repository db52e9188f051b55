// SPDX-License-Identifier: Apache-2.0
// Replays the safetensors fuzz corpus (tests/data/fuzz/safetensors, grown by scripts/fuzz.sh): every
// input must parse or be rejected with samoyeds::Error — never another exception or a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/untrusted_safetensors.h"

namespace samoyeds {
namespace {

namespace fs = std::filesystem;

TEST(FuzzCorpus, EveryInputIsParsedOrRejectedCleanly) {
  const fs::path dir = fs::path(SAMOYEDS_TEST_DATA_DIR) / "fuzz" / "safetensors";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  std::size_t count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    SCOPED_TRACE(entry.path().filename().string());
    EXPECT_NO_THROW(fuzz::parse_untrusted_safetensors(bytes));
    ++count;
  }
  EXPECT_GE(count, 4u) << "the corpus starts from four seeds";
}

}  // namespace
}  // namespace samoyeds
