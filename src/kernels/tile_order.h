// SPDX-License-Identifier: Apache-2.0
// The order in which the SSMM kernels' CTAs visit their output tiles (row tile x, token tile y):
// integer math shared by the kernels and the host tests.
#pragma once

#ifndef SAMOYEDS_HOST_DEVICE
#if defined(__CUDACC__)
#define SAMOYEDS_HOST_DEVICE __host__ __device__
#else
#define SAMOYEDS_HOST_DEVICE
#endif
#endif

namespace samoyeds::kernels {

struct TileCoord {
  int x;  // row tile
  int y;  // token tile
};

// Maps launch position `linear` (CTAs start roughly in this order) over num_x x num_y tiles, in bands
// of `band` token tiles: inside a band the token tile moves fastest, then the row tile; the last band
// may be narrower. band = 1 is the plain row-tile-fastest order (also taken for band < 1). Bijective
// on [0, num_x * num_y).
SAMOYEDS_HOST_DEVICE inline TileCoord banded_tile(long long linear, int num_x, int num_y, int band) {
  if (band < 1) band = 1;
  const long long per_band = static_cast<long long>(num_x) * band;
  const int band_index = static_cast<int>(linear / per_band);
  const long long in_band = linear - band_index * per_band;
  const int y0 = band_index * band;
  const int width = num_y - y0 < band ? num_y - y0 : band;
  return {static_cast<int>(in_band / width), y0 + static_cast<int>(in_band % width)};
}

}  // namespace samoyeds::kernels
