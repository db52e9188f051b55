// SPDX-License-Identifier: Apache-2.0
// Physical index functions of the Samoyeds format (docs/format.md §3) for the host code. The GPU
// kernels address the same words per thread and tile (their layouts are documented beside them);
// the exact-tier GPU tests check the two agree.
#pragma once

#include <cstdint>

namespace samoyeds::format_layout {

struct BitLocation {
  std::int64_t word;  // index into the uint32 array
  int shift;          // bit position of the field inside that word
};

// Metadata: one 32-bit word per (16-row tile, 32-column k-step, g = row % 8, half = which 16 columns).
// Bits [4j, 4j+4) describe chunk j of that half for row 16*tile + g; bits [16+4j, 16+4j+4) the same
// chunk for row 16*tile + g + 8. This is the per-thread register of mma.sp m16n8k32 and of
// wgmma.mma_async.sp m64nNk32 (bf16/fp16): lane l of a warp reads word 2*(l/4) + (l%2).
inline BitLocation metadata_location(std::int64_t crow, std::int64_t chunk, std::int64_t cols_padded) {
  const std::int64_t num_ksteps = cols_padded / 32;
  const std::int64_t tile = crow / 16;
  const std::int64_t row_in_tile = crow % 16;
  const std::int64_t kstep = chunk / 8;
  const std::int64_t chunk_in_step = chunk % 8;
  const std::int64_t half = chunk_in_step / 4;
  const std::int64_t word = (tile * num_ksteps + kstep) * 16 + (row_in_tile % 8) * 2 + half;
  const int shift = static_cast<int>((row_in_tile / 8) * 16 + (chunk_in_step % 4) * 4);
  return {word, shift};
}

// Row select: bit-planes of the in-group row offset. For 32 consecutive compressed rows and one
// segment there are select_bits words; word b holds bit b of the offset of row (crow % 32) at bit
// position crow % 32. Words are ordered [crow / 32][segment][b].
inline BitLocation select_location(std::int64_t crow, std::int64_t segment, int bit, std::int64_t num_segments,
                                   int select_bits) {
  const std::int64_t word = ((crow / 32) * num_segments + segment) * select_bits + bit;
  return {word, static_cast<int>(crow % 32)};
}

// The 4-bit code of a chunk: first position in the low 2 bits, second (larger) in the high 2 bits.
constexpr std::uint32_t chunk_code(int first, int second) {
  return static_cast<std::uint32_t>(first) | (static_cast<std::uint32_t>(second) << 2);
}
constexpr std::uint32_t kPaddingChunkCode = chunk_code(0, 1);   // positions (0, 1): 0b0100
constexpr std::uint32_t kPaddingMetadataWord = 0x44444444u;     // every nibble (0, 1)

}  // namespace samoyeds::format_layout
