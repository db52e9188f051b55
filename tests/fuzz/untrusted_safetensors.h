// SPDX-License-Identifier: Apache-2.0
// What the safetensors fuzz target and its corpus regression test do with one untrusted input: parse
// it, touch every tensor's bytes, and read it as a packed file. samoyeds::Error is the only allowed
// failure; any other exception, a crash or a sanitizer report is a bug.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "samoyeds/error.h"
#include "samoyeds/packed_file.h"
#include "samoyeds/safetensors.h"

namespace samoyeds::fuzz {

inline void parse_untrusted_safetensors(std::span<const std::uint8_t> input) {
  try {
    const SafetensorsFile file =
        SafetensorsFile::from_bytes(std::vector<std::uint8_t>(input.begin(), input.end()), "<fuzz input>");
    std::uint32_t checksum = 0;
    for (const TensorInfo& t : file.tensors())
      for (const std::uint8_t b : file.bytes(t)) checksum = checksum * 31 + b;
    volatile std::uint32_t sink = checksum;
    (void)sink;
    (void)read_packed_file(file);  // most inputs are no packed file: an Error, like a bad header
  } catch (const Error&) {
  }
}

}  // namespace samoyeds::fuzz
