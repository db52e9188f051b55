// SPDX-License-Identifier: Apache-2.0
// Stream-K work split for the SSMM kernels: integer math shared by the kernels and the host tests
// (docs/kernels/ssmm.md, next steps: decode's 112 gate/up tiles leave 20 of 132 SMs idle, and a
// split count that fills the machine cuts every tile into equal parts plus a reduce launch).
//
// The work is num_tiles output tiles of granules_per_tile granules each, laid end to end; a granule is
// the k-tiles of one row-selection segment (a partial sum must cover whole segments: the running-total
// update restarts at segment starts) or one k-tile without selection. CTA c computes the granules
// [begin(c), begin(c + 1)): equal shares within one granule, each a run of pieces, where a piece is the
// part of the run inside one tile. A piece that covers its tile whole is stored directly. A partial
// piece writes fp32 partials (logical rows, after the running-total conversion, as split-K does) into
// workspace slot 2c (the run's first piece) or 2c + 1 (its last); a reduce launch then sums each
// shared tile's parts in k order, part(t, 0) + part(t, 1) + ..., so the result does not depend on
// timing (no arrival counters, hence nothing to zero between calls). At most two slots per CTA: a run
// has one first and one last piece, and every piece between them is a whole tile.
#pragma once

#include "kernels/tile_order.h"  // SAMOYEDS_HOST_DEVICE

namespace samoyeds::kernels {

struct StreamKPiece {
  long long tile;   // output tile index (the order the grouped launch walks them)
  long long first;  // granules [first, end) of the tile
  long long end;
  int slot;         // workspace slot of a partial piece; -1 when the piece is the whole tile
};

// Requires num_tiles >= 1, granules_per_tile >= 1 and 1 <= num_ctas <= num_tiles * granules_per_tile
// (plan_stream_k clamps the CTA count so that no range is empty).
struct StreamK {
  long long num_tiles = 0;
  long long granules_per_tile = 0;
  int num_ctas = 0;

  SAMOYEDS_HOST_DEVICE long long total() const { return num_tiles * granules_per_tile; }
  // First granule of CTA c's run (c = num_ctas gives total()).
  SAMOYEDS_HOST_DEVICE long long begin(int cta) const { return static_cast<long long>(cta) * total() / num_ctas; }
  // The CTA whose run holds granule x: the largest c with begin(c) <= x, i.e. ceil((x + 1) C / total) - 1.
  SAMOYEDS_HOST_DEVICE int owner(long long x) const {
    return static_cast<int>(((x + 1) * num_ctas - 1) / total());
  }
  // How many CTAs compute a part of tile t (1: one CTA computes it whole).
  SAMOYEDS_HOST_DEVICE int parts_of(long long tile) const {
    return owner(tile * granules_per_tile + granules_per_tile - 1) - owner(tile * granules_per_tile) + 1;
  }
  // The piece of CTA c's run that starts at granule x (begin(c) <= x < begin(c + 1)); the next piece
  // starts at tile * granules_per_tile + end.
  SAMOYEDS_HOST_DEVICE StreamKPiece piece_at(int cta, long long x) const {
    const long long run_end = begin(cta + 1);
    const long long tile = x / granules_per_tile, tile_start = tile * granules_per_tile;
    const long long first = x - tile_start;
    const long long end = run_end - tile_start < granules_per_tile ? run_end - tile_start : granules_per_tile;
    const bool whole = first == 0 && end == granules_per_tile;
    return {tile, first, end, whole ? -1 : 2 * cta + (x == begin(cta) ? 0 : 1)};
  }
  // Part k (0 <= k < parts_of(t)) of tile t, as the CTA computing it sees it: what the finisher reads.
  SAMOYEDS_HOST_DEVICE StreamKPiece part(long long tile, int k) const {
    const long long tile_start = tile * granules_per_tile;
    const int cta = owner(tile_start) + k;  // every run holds at least one granule: owners are consecutive
    const long long run_begin = begin(cta);
    return piece_at(cta, run_begin > tile_start ? run_begin : tile_start);
  }
};

}  // namespace samoyeds::kernels
