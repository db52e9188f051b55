// Packs a small matrix through the installed library and checks the round trip.
#include <cstdio>

#include "samoyeds/format.h"

int main() {
  samoyeds::Matrix dense(samoyeds::DType::bf16, 8, 64);
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 64; ++c) dense.set(r, c, static_cast<float>((r * 64 + c) % 7 + 1));
  const auto packed = samoyeds::pack(dense, samoyeds::SparsityPattern::parse("1:2:32"));
  packed.validate();
  const samoyeds::Matrix effective = samoyeds::unpack(packed);
  int kept = 0;
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 64; ++c) kept += effective.get(r, c) != 0.0f;
  std::printf("kept %d of %d weights\n", kept, 8 * 64);
  return kept == 8 * 64 / 4 ? 0 : 1;
}
