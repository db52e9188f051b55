// SPDX-License-Identifier: Apache-2.0
// The stream-K work split (src/kernels/stream_k.h): what every CTA computes and what the finisher of
// each tile reads must be the same pieces, cover every granule once, and use at most two workspace
// slots per CTA, none of them twice.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kernels/stream_k.h"

namespace samoyeds {
namespace {

using kernels::StreamK;
using kernels::StreamKPiece;

std::string describe(const StreamK& s) {
  return std::to_string(s.num_tiles) + " tiles x " + std::to_string(s.granules_per_tile) + " granules over " +
         std::to_string(s.num_ctas) + " CTAs";
}

// Every CTA's run, walked piece by piece as the kernel will.
std::vector<std::vector<StreamKPiece>> runs_of(const StreamK& s) {
  std::vector<std::vector<StreamKPiece>> runs(static_cast<std::size_t>(s.num_ctas));
  for (int c = 0; c < s.num_ctas; ++c) {
    for (long long x = s.begin(c); x < s.begin(c + 1);) {
      const StreamKPiece p = s.piece_at(c, x);
      runs[static_cast<std::size_t>(c)].push_back(p);
      x = p.tile * s.granules_per_tile + p.end;
    }
  }
  return runs;
}

void check_split(const StreamK& s) {
  SCOPED_TRACE(describe(s));
  // Runs: contiguous, in order, balanced within one granule, none empty.
  const long long share = s.total() / s.num_ctas;
  ASSERT_EQ(s.begin(0), 0);
  ASSERT_EQ(s.begin(s.num_ctas), s.total());
  for (int c = 0; c < s.num_ctas; ++c) {
    const long long size = s.begin(c + 1) - s.begin(c);
    ASSERT_TRUE(size == share || size == share + 1) << "CTA " << c << " has " << size << " granules";
  }
  for (long long x = 0; x < s.total(); ++x) {
    const int c = s.owner(x);
    ASSERT_TRUE(c >= 0 && c < s.num_ctas && s.begin(c) <= x && x < s.begin(c + 1)) << "owner of granule " << x;
  }
  // The CTAs' pieces: inside one tile each, non-empty, whole-tile pieces without a slot, at most two
  // slots per CTA (2c for the run's first piece, 2c + 1 for its last), no slot used twice.
  const auto runs = runs_of(s);
  std::map<long long, std::vector<StreamKPiece>> by_tile;
  std::set<int> slots;
  std::vector<int> covered(static_cast<std::size_t>(s.total()), 0);
  for (int c = 0; c < s.num_ctas; ++c) {
    const auto& run = runs[static_cast<std::size_t>(c)];
    ASSERT_FALSE(run.empty());
    for (std::size_t i = 0; i < run.size(); ++i) {
      const StreamKPiece& p = run[i];
      ASSERT_TRUE(p.tile >= 0 && p.tile < s.num_tiles && 0 <= p.first && p.first < p.end && p.end <= s.granules_per_tile);
      const bool whole = p.first == 0 && p.end == s.granules_per_tile;
      if (whole) {
        EXPECT_EQ(p.slot, -1) << "CTA " << c << " piece " << i;
      } else {
        EXPECT_TRUE(i == 0 || i + 1 == run.size()) << "a partial piece inside CTA " << c << "'s run";
        EXPECT_EQ(p.slot, 2 * c + (i == 0 ? 0 : 1)) << "CTA " << c << " piece " << i;
        EXPECT_TRUE(slots.insert(p.slot).second) << "slot " << p.slot << " written twice";
      }
      for (long long g = p.first; g < p.end; ++g) ++covered[static_cast<std::size_t>(p.tile * s.granules_per_tile + g)];
      by_tile[p.tile].push_back(p);
    }
  }
  for (long long x = 0; x < s.total(); ++x) ASSERT_EQ(covered[static_cast<std::size_t>(x)], 1) << "granule " << x;
  // What the finisher of each tile reads: the same pieces, in k order, from the slots they were written to.
  for (long long t = 0; t < s.num_tiles; ++t) {
    const auto& written = by_tile[t];
    ASSERT_EQ(s.parts_of(t), static_cast<int>(written.size())) << "tile " << t;
    long long next = 0;
    for (int k = 0; k < s.parts_of(t); ++k) {
      const StreamKPiece p = s.part(t, k);
      EXPECT_EQ(p.tile, t);
      EXPECT_EQ(p.first, next) << "tile " << t << " part " << k;
      EXPECT_EQ(p.first, written[static_cast<std::size_t>(k)].first);
      EXPECT_EQ(p.end, written[static_cast<std::size_t>(k)].end);
      EXPECT_EQ(p.slot, written[static_cast<std::size_t>(k)].slot);
      EXPECT_EQ(p.slot == -1, s.parts_of(t) == 1);
      next = p.end;
    }
    EXPECT_EQ(next, s.granules_per_tile) << "tile " << t;
  }
}

TEST(StreamK, DecodeShapes) {
  // Mixtral gate/up at T = 1 (56 row tiles x 2 experts, 32 k-tiles), down (16 x 2, 112 k-tiles),
  // DeepSeek's experts, V = 512 granules, and the machine sizes of H100 PCIe / SXM.
  for (const int sms : {114, 132})
    for (const auto& [tiles, granules] : std::vector<std::pair<long long, long long>>{
             {112, 32}, {32, 112}, {6 * 11, 16}, {56 * 2, 8}, {1, 32}, {1, 1}, {131, 1}, {133, 1}, {264, 3}})
      check_split(StreamK{tiles, granules, static_cast<int>(std::min<long long>(sms, tiles * granules))});
}

TEST(StreamK, RandomShapes) {
  std::mt19937_64 rng(20261201);
  for (int trial = 0; trial < 400; ++trial) {
    const long long tiles = 1 + static_cast<long long>(rng() % 300);
    const long long granules = 1 + static_cast<long long>(rng() % 130);
    const long long most = std::min<long long>(tiles * granules, 300);
    const int ctas = 1 + static_cast<int>(rng() % static_cast<std::uint64_t>(most));
    SCOPED_TRACE("seed 20261201, trial " + std::to_string(trial));
    check_split(StreamK{tiles, granules, ctas});
    if (HasFatalFailure()) return;
  }
}

// The finisher's sums in k order reproduce the sum over the whole tile for integer-valued partials
// (exact in fp32), whoever finishes: the order is fixed by the split, not by arrival.
TEST(StreamK, PartsSumToTheTile) {
  const StreamK s{112, 32, 132};
  std::mt19937 rng(7);
  std::vector<float> granule_value(static_cast<std::size_t>(s.total()));
  for (float& v : granule_value) v = static_cast<float>(static_cast<int>(rng() % 2001) - 1000);
  std::map<int, float> slot_value;
  std::map<long long, float> direct;
  for (int c = 0; c < s.num_ctas; ++c) {
    for (long long x = s.begin(c); x < s.begin(c + 1);) {
      const StreamKPiece p = s.piece_at(c, x);
      float sum = 0.0f;
      for (long long g = p.first; g < p.end; ++g) sum += granule_value[static_cast<std::size_t>(p.tile * s.granules_per_tile + g)];
      (p.slot < 0 ? direct[p.tile] : slot_value[p.slot]) = sum;
      x = p.tile * s.granules_per_tile + p.end;
    }
  }
  for (long long t = 0; t < s.num_tiles; ++t) {
    float want = 0.0f;
    for (long long g = 0; g < s.granules_per_tile; ++g) want += granule_value[static_cast<std::size_t>(t * s.granules_per_tile + g)];
    float got = 0.0f;
    if (s.parts_of(t) == 1) {
      got = direct.at(t);
    } else {
      for (int k = 0; k < s.parts_of(t); ++k) got += slot_value.at(s.part(t, k).slot);
    }
    EXPECT_EQ(got, want) << "tile " << t;
  }
}

}  // namespace
}  // namespace samoyeds
