// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the safetensors reader and the packed-file reader (scripts/fuzz.sh builds and
// runs it; the corpus lives in tests/data/fuzz/safetensors and is replayed by a CPU test).
#include <cstddef>
#include <cstdint>

#include "fuzz/untrusted_safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  samoyeds::fuzz::parse_untrusted_safetensors({data, size});
  return 0;
}
