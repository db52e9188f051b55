// SPDX-License-Identifier: Apache-2.0
// Which row-selection segment a strided walk of k-tiles is in: integer math shared by the decode
// kernel (ssmm_decode.cu, whose warps take every kWarps-th k-tile) and the host tests.
#pragma once

#include "kernels/tile_order.h"  // SAMOYEDS_HOST_DEVICE

namespace samoyeds::kernels {

// The segment of k-tiles first, first + step, ... (advanced with next()), per_segment k-tiles each,
// without a division per k-tile (a 64-bit division by the runtime segment length was ~100 instructions
// per k-tile and warp: docs/kernels/ssmm.md v17). Requires per_segment >= 1, first >= 0, step >= 1.
struct StridedSegment {
  int per_segment, offset, index, index_step, offset_step;
  SAMOYEDS_HOST_DEVICE StridedSegment(int kt_per_segment, int first, int step)
      : per_segment(kt_per_segment), offset(first % kt_per_segment), index(first / kt_per_segment),
        index_step(step / kt_per_segment), offset_step(step % kt_per_segment) {}
  SAMOYEDS_HOST_DEVICE void next() {
    index += index_step;
    offset += offset_step;
    if (offset >= per_segment) {
      offset -= per_segment;
      ++index;
    }
  }
};

}  // namespace samoyeds::kernels
