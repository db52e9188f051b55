// SPDX-License-Identifier: Apache-2.0
// The decode kernel's segment walk (kernels/strided_segment.h) against plain division: every segment
// length, start and stride a kernel can see (V / 128 k-tiles per segment, a warp's first k-tile of a
// split, the warp count as the stride).
#include <gtest/gtest.h>

#include <string>

#include "kernels/strided_segment.h"

namespace samoyeds {
namespace {

TEST(StridedSegment, MatchesDivisionAlongTheWalk) {
  for (int per_segment = 1; per_segment <= 9; ++per_segment)
    for (int first = 0; first <= 40; ++first)
      for (int step = 1; step <= 9; ++step) {
        SCOPED_TRACE("per_segment " + std::to_string(per_segment) + ", first " + std::to_string(first) + ", step " +
                     std::to_string(step));
        kernels::StridedSegment walk(per_segment, first, step);
        for (int i = 0; i < 60; ++i, walk.next()) {
          const int kt = first + step * i;
          ASSERT_EQ(walk.index, kt / per_segment) << "step " << i;
          ASSERT_EQ(walk.offset, kt % per_segment) << "step " << i;
        }
      }
}

}  // namespace
}  // namespace samoyeds
