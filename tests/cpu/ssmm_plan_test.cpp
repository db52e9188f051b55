// SPDX-License-Identifier: Apache-2.0
// Host-side argument checks of the GPU SSMM (no GPU needed: pointers are never dereferenced here).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

#include "kernels/tile_order.h"
#include "samoyeds/ssmm.h"

namespace samoyeds {
namespace {

gpu::SsmmArgs valid_args() {
  alignas(16) static const std::uint8_t fake[64] = {};
  gpu::SsmmArgs a;
  a.weight.pattern = SparsityPattern::parse("1:2:128");
  a.weight.rows = 1408;
  a.weight.cols = 2048;
  a.weight.values = reinterpret_cast<const std::uint16_t*>(fake);
  a.weight.metadata = reinterpret_cast<const std::uint32_t*>(fake);
  a.weight.row_select = reinterpret_cast<const std::uint32_t*>(fake);
  a.x = fake;
  a.num_x_rows = 10;
  a.num_tokens = 10;
  a.y = const_cast<std::uint8_t*>(fake);
  return a;
}

TEST(SsmmPlan, AcceptsSupportedCalls) {
  EXPECT_EQ(gpu::can_implement(valid_args(), gpu::SsmmPath::sm80), "");
  auto a = valid_args();
  a.weight.pattern = SparsityPattern::plain_2_4();
  a.weight.row_select = nullptr;
  EXPECT_EQ(gpu::can_implement(a, gpu::SsmmPath::sm80), "");
  a = valid_args();
  a.num_tokens = 0;
  a.num_x_rows = 0;
  a.x = nullptr;
  a.y = nullptr;
  EXPECT_EQ(gpu::can_implement(a, gpu::SsmmPath::sm80), "") << "L = 0 is a no-op";
  a.num_x_rows = 100;  // an expert with no tokens over a batch of 100: still a no-op
  EXPECT_EQ(gpu::can_implement(a, gpu::SsmmPath::sm80), "");
}

TEST(SsmmPlan, RejectsWithReasons) {
  auto expect_reason = [](gpu::SsmmArgs a, const char* needle) {
    const std::string reason = gpu::can_implement(a, gpu::SsmmPath::sm80);
    EXPECT_NE(reason.find(needle), std::string::npos) << "reason: '" << reason << "' lacks '" << needle << "'";
  };
  auto a = valid_args();
  a.weight.pattern = SparsityPattern::parse("2:4:64");
  expect_reason(a, "1:2:V");
  a = valid_args();
  a.weight.pattern = SparsityPattern::parse("1:2:96");
  expect_reason(a, "multiple of 64");
  a = valid_args();
  a.weight.cols = 2044;
  expect_reason(a, "multiple of 8");
  a = valid_args();
  a.x_dtype = DType::f16;
  expect_reason(a, "weights are bf16");
  a = valid_args();
  a.num_tokens = 3;
  expect_reason(a, "must equal num_x_rows");
  a = valid_args();
  a.weight.metadata = reinterpret_cast<const std::uint32_t*>(reinterpret_cast<const std::uint8_t*>(a.weight.metadata) + 4);
  expect_reason(a, "16-byte aligned");
  a = valid_args();
  static const std::int32_t token_list[10] = {};
  a.token_idx = token_list;
  a.num_x_rows = 0;
  expect_reason(a, "X has no rows");
  a = valid_args();
  a.epilogue = gpu::SsmmEpilogue::down_weighted;
  expect_reason(a, "slot_weight");
  a = valid_args();
  a.epilogue = gpu::SsmmEpilogue::gate_up;
  expect_reason(a, "up:");
  a = valid_args();
  a.y_dtype = DType::f32;
  a.epilogue = gpu::SsmmEpilogue::gate_up;
  a.up = a.weight;
  expect_reason(a, "y must be bf16");
  a = valid_args();
  a.weight.row_select = nullptr;
  expect_reason(a, "row_select");
  a = valid_args();  // gate and up packed differently: one kernel cannot walk both
  a.epilogue = gpu::SsmmEpilogue::gate_up;
  a.up = a.weight;
  a.up.pattern = SparsityPattern::plain_2_4();
  expect_reason(a, "same pattern");
  a.up.pattern = SparsityPattern::parse("1:2:256");
  expect_reason(a, "same pattern");
  a.up = a.weight;
  a.gate_linear = a.weight;
  a.gate_linear.pattern = SparsityPattern::plain_2_4();
  expect_reason(a, "gate_linear must be packed");
  a = valid_args();
  a.workspace = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(a.x) + 4);
  expect_reason(a, "workspace must be 16-byte aligned");
  EXPECT_EQ(gpu::can_implement(valid_args(), gpu::SsmmPath::sm90), "");
  a = valid_args();
  a.weight.pattern = SparsityPattern::parse("1:2:64");
  EXPECT_EQ(gpu::can_implement(a, gpu::SsmmPath::sm80), "");
  EXPECT_NE(gpu::can_implement(a, gpu::SsmmPath::sm90).find("multiple of 128"), std::string::npos);
}

}  // namespace
}  // namespace samoyeds

namespace samoyeds {
namespace {

TEST(SsmmPlan, BandedTileOrderVisitsEveryTileOnce) {
  struct Grid { int num_x, num_y, band; };
  for (const Grid g : {Grid{56, 32, 9}, Grid{16, 128, 9}, Grid{7, 5, 3}, Grid{1, 1, 1}, Grid{3, 10, 10}, Grid{5, 4, 7}, Grid{13, 17, 1}}) {
    SCOPED_TRACE(std::to_string(g.num_x) + " x " + std::to_string(g.num_y) + ", band " + std::to_string(g.band));
    std::set<std::pair<int, int>> seen;
    for (long long l = 0; l < static_cast<long long>(g.num_x) * g.num_y; ++l) {
      const kernels::TileCoord t = kernels::banded_tile(l, g.num_x, g.num_y, g.band);
      ASSERT_GE(t.x, 0);
      ASSERT_LT(t.x, g.num_x);
      ASSERT_GE(t.y, 0);
      ASSERT_LT(t.y, g.num_y);
      ASSERT_TRUE(seen.insert({t.x, t.y}).second) << "tile (" << t.x << ", " << t.y << ") twice, at " << l;
    }
  }
}

TEST(SsmmPlan, BandedTileOrderWalksTokenTilesFirst) {
  // band 1: row tiles fastest (the launch order of a plain grid).
  EXPECT_EQ(kernels::banded_tile(0, 56, 32, 1).x, 0);
  EXPECT_EQ(kernels::banded_tile(1, 56, 32, 1).x, 1);
  EXPECT_EQ(kernels::banded_tile(56, 56, 32, 1).y, 1);
  // band 9: positions 0..8 are token tiles 0..8 of row tile 0, then row tile 1.
  for (int l = 0; l < 9; ++l) {
    EXPECT_EQ(kernels::banded_tile(l, 56, 32, 9).x, 0);
    EXPECT_EQ(kernels::banded_tile(l, 56, 32, 9).y, l);
  }
  EXPECT_EQ(kernels::banded_tile(9, 56, 32, 9).x, 1);
  EXPECT_EQ(kernels::banded_tile(9, 56, 32, 9).y, 0);
  // The last band (token tiles 27..31) is 5 wide.
  const long long last_band = 3LL * 56 * 9;
  EXPECT_EQ(kernels::banded_tile(last_band + 5, 56, 32, 9).x, 1);
  EXPECT_EQ(kernels::banded_tile(last_band + 5, 56, 32, 9).y, 27);
}

TEST(SsmmPlan, TileTokensNarrowWhereWideTilesLeaveMostSmsIdle) {
  // The measured cases (H200, 132 SMs): narrow won where the wide grid was 6-23 CTAs at K <= 5760,
  // lost at 46-72 CTAs, and lost (or tied) at K >= 12288, where split-K fills the SMs.
  EXPECT_EQ(gpu::plan_tile_tokens(64, 1, 6, 2048, 64, 1, 132), 32);       // 1408 x 2048, L = 64
  EXPECT_EQ(gpu::plan_tile_tokens(256, 1, 6, 2048, 256, 1, 132), 32);
  EXPECT_EQ(gpu::plan_tile_tokens(1024, 1, 6, 2048, 1024, 1, 132), 128);  // 48 CTAs
  EXPECT_EQ(gpu::plan_tile_tokens(256, 1, 8, 1408, 256, 1, 132), 32);     // 2048 x 1408
  EXPECT_EQ(gpu::plan_tile_tokens(1024, 1, 8, 1408, 1024, 1, 132), 128);
  EXPECT_EQ(gpu::plan_tile_tokens(64, 1, 23, 2304, 64, 1, 132), 32);      // 5760 x 2304
  EXPECT_EQ(gpu::plan_tile_tokens(256, 1, 23, 2304, 256, 1, 132), 128);   // 46 CTAs
  EXPECT_EQ(gpu::plan_tile_tokens(256, 1, 9, 5760, 256, 1, 132), 32);     // 2304 x 5760: 18 CTAs
  EXPECT_EQ(gpu::plan_tile_tokens(1024, 1, 9, 5760, 1024, 1, 132), 128);
  EXPECT_EQ(gpu::plan_tile_tokens(256, 1, 12, 12288, 256, 1, 132), 128);  // 3072 x 12288: 24 CTAs, long K
  EXPECT_EQ(gpu::plan_tile_tokens(64, 1, 24, 16384, 64, 1, 132), 128);    // 6144 x 16384
  EXPECT_EQ(gpu::plan_tile_tokens(4096, 1, 56, 4096, 4096, 1, 132), 128);
  // A grouped call has a tile row per busy expert: 64 experts x 8 row tiles fill the SMs.
  EXPECT_EQ(gpu::plan_tile_tokens(96, 1, 8, 1408, 6144, 64, 132), 128);
  // Up to 32 tokens per expert, and three matrices, only have 32-token tiles; gate/up keeps 64.
  EXPECT_EQ(gpu::plan_tile_tokens(32, 1, 56, 4096, 32, 1, 132), 32);
  EXPECT_EQ(gpu::plan_tile_tokens(4096, 3, 56, 4096, 4096, 1, 132), 32);
  EXPECT_EQ(gpu::plan_tile_tokens(64, 2, 6, 2048, 64, 1, 132), 64);
}

TEST(SsmmPlan, TileBandBalancesWeightAndActivationBytes) {
  constexpr std::int64_t a1 = 18 * 1024, b128 = 128 * 256;  // one matrix: A + metadata, 128-token B
  EXPECT_EQ(gpu::plan_tile_band(56, 32, a1, b128, 132), 9);    // 14336 x 4096 at L = 4096: sqrt(132 x 0.5625)
  EXPECT_EQ(gpu::plan_tile_band(16, 128, a1, b128, 132), 9);   // 4096 x 14336: rows fastest gives 8 per wave
  EXPECT_EQ(gpu::plan_tile_band(6, 128, a1, b128, 132), 1);    // 1408 rows: 22 token tiles per wave already
  EXPECT_EQ(gpu::plan_tile_band(56, 2, a1, b128, 132), 1);     // one wave
  EXPECT_EQ(gpu::plan_tile_band(56, 4, a1, b128, 132), 4);     // the band never exceeds the token tiles
  EXPECT_EQ(gpu::plan_tile_band(56, 64, 2 * a1, 64 * 256, 132), 17);  // gate/up: two matrices, 64 tokens
  // Grouped: the band is capped at the experts' mean token tiles (bands need not align with the
  // experts' boundaries). Mixtral gate/up at T = 4096: 16 tiles of 64 per expert, so 16 instead of
  // 17; at T = 1024, 4 per expert.
  EXPECT_EQ(gpu::plan_tile_band(56, 136, 2 * a1, 64 * 256, 132, 16), 16);
  EXPECT_EQ(gpu::plan_tile_band(56, 40, 2 * a1, 64 * 256, 132, 4), 4);
  EXPECT_EQ(gpu::plan_tile_band(56, 400, a1, b128, 132, 1), 1);  // one tile per expert: rows fastest
  // Small experts (DeepSeek-MoE, 6-8 row tiles): rows fastest already holds 16-22 token tiles per wave.
  EXPECT_EQ(gpu::plan_tile_band(8, 192, a1, b128, 132, 3), 1);
  EXPECT_EQ(gpu::plan_tile_band(0, 64, a1, b128, 132), 1);
  EXPECT_EQ(gpu::plan_tile_band(56, 64, 0, b128, 132), 1);
}

TEST(SsmmPlan, TmaVariantOnlyForLargeExpertsWithFullTokenTiles) {
  EXPECT_TRUE(gpu::plan_tma_variant(1024, 2, 56, true));    // Mixtral gate/up, T = 4096
  EXPECT_TRUE(gpu::plan_tma_variant(1024, 1, 16, false));   // Mixtral down (compact A, no token list)
  EXPECT_FALSE(gpu::plan_tma_variant(1024, 1, 56, true));   // one matrix with a token list: the gather eats the gain
  EXPECT_FALSE(gpu::plan_tma_variant(512, 2, 6, true));     // DeepSeek-MoE gate/up: cp.async was 1.07-1.10x faster
  EXPECT_FALSE(gpu::plan_tma_variant(512, 1, 8, false));    // DeepSeek-MoE down
  EXPECT_FALSE(gpu::plan_tma_variant(127, 2, 56, true));    // no full token tile to multicast
  EXPECT_TRUE(gpu::plan_tma_variant(128, 2, 16, true));
  EXPECT_FALSE(gpu::plan_tma_variant(4096, 3, 56, false));  // three matrices (OpenMoE): no TMA variant
}

TEST(SsmmPlan, ClusterSizeKeepsPaddingSmall) {
  EXPECT_EQ(gpu::plan_cluster_size(56, 4), 4);  // Mixtral gate/up rows: 14 clusters of 4
  EXPECT_EQ(gpu::plan_cluster_size(23, 4), 4);  // 5760 rows: one padded CTA in 24
  EXPECT_EQ(gpu::plan_cluster_size(9, 4), 2);   // 2304 rows: 12 would waste a third, 10 a ninth
  EXPECT_EQ(gpu::plan_cluster_size(6, 4), 2);   // 1408 rows
  EXPECT_EQ(gpu::plan_cluster_size(3, 4), 1);   // 4 would pad a third, 2 a third
  EXPECT_EQ(gpu::plan_cluster_size(1, 4), 1);
  EXPECT_EQ(gpu::plan_cluster_size(0, 4), 1);
  EXPECT_EQ(gpu::plan_cluster_size(64, 1), 1);  // clusters off
  EXPECT_EQ(gpu::plan_cluster_size(64, 8), 8);
  EXPECT_EQ(gpu::plan_cluster_size(64, 6), 4);  // powers of two only
}

TEST(SsmmPlan, SplitKFillsWholeWaves) {
  // Plenty of output tiles: no split.
  EXPECT_EQ(gpu::plan_split_k(64, 128, 48, 1, 132, 64).splits, 1);
  // Mixtral down projection at decode: 16 row tiles x 1 token tile over 112 k-tiles. 8 splits are one
  // wave of 128 CTAs (14 k-tiles each); 16 splits would be two waves of 7.
  const auto down = gpu::plan_split_k(16, 1, 112, 1, 132, 64);
  EXPECT_EQ(down.splits, 8);
  EXPECT_EQ(down.k_tiles_per_split, 14);
  EXPECT_GE(down.splits * down.k_tiles_per_split, 112);
  // Mixtral gate/up at decode (2 busy experts x 56 row tiles = 112 CTAs): one unsplit wave beats
  // splits that spill into a second and third wave.
  EXPECT_EQ(gpu::plan_split_k(56, 2, 32, 1, 132, 64).splits, 1);
  // Few tiles: as many splits as one wave holds.
  EXPECT_EQ(gpu::plan_split_k(2, 1, 128, 1, 132, 64).splits, 32);  // 4 k-tiles each: the floor
  EXPECT_EQ(gpu::plan_split_k(12, 1, 96, 1, 132, 64).splits, 11);  // 132 CTAs of 9 k-tiles
  // Splits never cut a segment (V = 512: 4 k-tiles per segment) and keep >= 4 k-tiles each.
  const auto seg = gpu::plan_split_k(8, 1, 48, 4, 132, 64);
  EXPECT_EQ(seg.k_tiles_per_split % 4, 0);
  EXPECT_EQ(seg.splits, 12);
  // Short K: at most num_k_tiles / 4 splits.
  EXPECT_EQ(gpu::plan_split_k(6, 1, 16, 1, 132, 64).splits, 4);
  EXPECT_EQ(gpu::plan_split_k(6, 1, 3, 1, 132, 64).splits, 1);
  // The traffic bound wins: medium L (e.g. 256 tokens) must not split when partials outweigh weights.
  EXPECT_EQ(gpu::plan_split_k(56, 2, 32, 1, 132, 1).splits, 1);
  EXPECT_EQ(gpu::plan_split_k(16, 1, 112, 1, 132, 5).splits, 5);
  for (std::int64_t kt : {1, 5, 16, 45, 112, 128}) {
    const auto plan = gpu::plan_split_k(3, 1, kt, 1, 132, 64);
    EXPECT_GE(plan.splits * plan.k_tiles_per_split, kt) << kt;
    EXPECT_LT((plan.splits - 1) * plan.k_tiles_per_split, kt) << "no empty split for " << kt;
  }
}

// A single-matrix call of `L` slots on an H200 (132 SMs).
gpu::DecodeCall decode_call(std::int64_t M, std::int64_t K, std::int64_t L, int num_mats = 1) {
  gpu::DecodeCall c;
  c.num_mats = num_mats;
  c.tokens_per_expert = L;
  c.K = K;
  c.row_tiles = M / 2 / 32;  // 1:2 row selection
  c.num_tokens = L;
  c.busy_experts = 1;
  c.num_k_tiles = (K + 127) / 128;
  c.num_sms = 132;
  return c;
}

int tile_tokens(const gpu::DecodeCall& c) { return gpu::plan_decode(c).tile_tokens; }

TEST(SsmmPlan, DecodeKernelTakesOneMatrixOfFewSlotsAndShortK) {
  EXPECT_EQ(tile_tokens(decode_call(14336, 4096, 1)), 8);
  EXPECT_EQ(tile_tokens(decode_call(4096, gpu::kDecodeMaxK, 8)), 8);
  EXPECT_EQ(tile_tokens(decode_call(6144, 16384, 1)), 8);
  EXPECT_EQ(tile_tokens(decode_call(6144, gpu::kDecodeMaxK + 128, 1)), 0);  // unmeasured K: the wgmma kernel
  EXPECT_EQ(tile_tokens(decode_call(14336, 4096, 1, 2)), 0);  // gate/up: one CTA per SM
  EXPECT_EQ(tile_tokens(decode_call(14336, 4096, 0)), 0);
  EXPECT_EQ(tile_tokens(decode_call(14336, 4096, gpu::kDecodeMaxSlots + 1)), 0);
}

TEST(SsmmPlan, DecodeTileOfNineToSixteenSlots) {
  // 16-slot tiles where they fill the SMs unsplit (the shapes of 192 row tiles and more)...
  for (auto [M, K] : {std::pair<std::int64_t, std::int64_t>{12288, 3072}, {14336, 4096}, {16384, 6144}})
    EXPECT_EQ(tile_tokens(decode_call(M, K, 16)), 16) << M << "x" << K;
  // ... or where they fill them split and two 8-slot tiles would have to split too.
  EXPECT_EQ(tile_tokens(decode_call(3072, 12288, 16)), 16);
  EXPECT_EQ(tile_tokens(decode_call(2304, 5760, 13)), 16);
  // Two 8-slot tiles where they fill the SMs without a split (5760x2304: 180 CTAs) or make more CTAs
  // (1408x2048, 2048x1408: too few row tiles and k-tiles to fill the SMs either way).
  EXPECT_EQ(tile_tokens(decode_call(5760, 2304, 16)), 8);
  EXPECT_EQ(tile_tokens(decode_call(1408, 2048, 16)), 8);
  EXPECT_EQ(tile_tokens(decode_call(2048, 1408, 9)), 8);
  // More than one wave at two CTAs per SM: the wgmma kernel's larger tiles (DeepSeek-MoE's grouped down
  // projection at T = 128: 64 busy experts, 12 slots each).
  gpu::DecodeCall grouped = decode_call(2048, 1408, 12);
  grouped.num_tokens = 768;
  grouped.busy_experts = 64;
  EXPECT_EQ(tile_tokens(grouped), 0);
  grouped.tokens_per_expert = 1;  // at T = 1 the 8-slot tiles still take it
  EXPECT_EQ(tile_tokens(grouped), 8);
  EXPECT_EQ(tile_tokens(decode_call(65536, 4096, 16)), 0);
  // K = 16384 at more than 8 slots: the wgmma kernel (6144x16384 @ 9 / 16 in two 8-slot tiles took
  // 1.13 / 1.17x its time); K = 14336 takes 16-slot tiles (4096x14336 @ 9: 0.92x).
  EXPECT_EQ(tile_tokens(decode_call(6144, 16384, 16)), 0);
  EXPECT_EQ(tile_tokens(decode_call(6144, 16384, 9)), 0);
  EXPECT_EQ(tile_tokens(decode_call(4096, 14336, 9)), 16);
  EXPECT_EQ(tile_tokens(decode_call(4096, 14336, 8)), 8);
}

TEST(SsmmPlan, DecodeKernelPastSixteenSlotsOnlyForSmallWeights) {
  // 1408x2048 and 2048x1408 (352 blocks of 32 x 128) up to 128 slots, as long as one wave holds them.
  for (const std::int64_t L : {17, 24, 64, 128}) {
    EXPECT_NE(tile_tokens(decode_call(1408, 2048, L)), 0) << L;
    EXPECT_NE(tile_tokens(decode_call(2048, 1408, L)), 0) << L;
  }
  EXPECT_EQ(tile_tokens(decode_call(1408, 2048, gpu::kDecodeMaxSlotsSmallWeight + 1)), 0);
  EXPECT_EQ(tile_tokens(decode_call(1408, 2048, 256)), 0);
  // The one-wave bound still holds past 16 slots: 16 busy experts of 20 slots are 22 x 20 tiles of 16.
  gpu::DecodeCall grouped = decode_call(1408, 2048, 20);
  grouped.num_tokens = 320;
  grouped.busy_experts = 16;
  EXPECT_EQ(tile_tokens(grouped), 0);
  grouped.busy_experts = 4;  // 4 busy experts of 20: 22 x 5 tiles
  grouped.num_tokens = 80;
  EXPECT_NE(tile_tokens(grouped), 0);
  // Larger weights stay at 16 slots: their token tiles would re-read 7-21 MB each.
  EXPECT_EQ(tile_tokens(decode_call(5760, 2304, 24)), 0);
  EXPECT_EQ(tile_tokens(decode_call(2304, 5760, 17)), 0);
  EXPECT_EQ(tile_tokens(decode_call(3072, 12288, 64)), 0);
  // The knob's bound (SAMOYEDS_SSMM_DECODE_MAX_SLOTS): 16 restores the rule of v19.
  gpu::DecodeCall capped = decode_call(1408, 2048, 64);
  capped.max_slots = gpu::kDecodeMaxSlots;
  EXPECT_EQ(tile_tokens(capped), 0);
  capped.tokens_per_expert = capped.num_tokens = 16;
  EXPECT_EQ(tile_tokens(capped), 8);
}

TEST(SsmmPlan, DecodeSplitsOnlyUntilTwoCtasPerSm) {
  const gpu::ResidentClusters ideal = gpu::ideal_resident_clusters(132);
  // 12288x3072 (192 CTAs of 32 compressed rows, 24 k-tiles of 128 columns): the CTAs alone fill the SMs.
  EXPECT_EQ(gpu::plan_decode_split(192, 1, 24, ideal).splits, 1);
  // 3072x12288: 48 CTAs; 5 splits give 240 CTAs (two per SM would be 264) of 20 k-tiles each.
  const auto tall = gpu::plan_decode_split(48, 1, 96, ideal);
  EXPECT_EQ(tall.splits, 5);
  EXPECT_EQ(tall.k_tiles_per_split, 20);
  // Short K: kDecodeMinSplitKTiles k-tiles per split (one per warp of an 8-slot tile); 1408x2048 splits in two.
  EXPECT_EQ(gpu::plan_decode_split(22, 1, 16, ideal).splits, 2);
  EXPECT_EQ(gpu::plan_decode_split(22, 1, 15, ideal).splits, 1);
  // One cluster per tile: at most kDecodeMaxSplits, however few the tiles; and grids with more tiles
  // than two per SM.
  EXPECT_EQ(gpu::plan_decode_split(8, 1, 128, ideal).splits, gpu::kDecodeMaxSplits);
  EXPECT_EQ(gpu::plan_decode_split(448, 2, 32, ideal).splits, 1);
  EXPECT_EQ(gpu::plan_decode_split(0, 1, 64, ideal).splits, 1);
  for (std::int64_t kt : {1, 8, 9, 45, 96, 112, 128}) {
    const auto plan = gpu::plan_decode_split(8, 1, kt, ideal);
    EXPECT_GE(plan.splits * plan.k_tiles_per_split, kt) << kt;
    EXPECT_LT((plan.splits - 1) * plan.k_tiles_per_split, kt) << "no empty split for " << kt;
    EXPECT_LE(plan.splits, gpu::kDecodeMaxSplits) << kt;
    if (plan.splits > 1) EXPECT_GE(plan.k_tiles_per_split, gpu::kDecodeMinSplitKTiles) << kt;
  }
}

// The clusters an H200 holds at once (the decode kernel, 2026-12-02): a cluster sits within one GPC, so
// clusters of 3-8 CTAs leave some of the 264 CTA slots empty.
constexpr gpu::ResidentClusters kH200Resident = {0, 264, 132, 79, 62, 47, 39, 32, 30};

TEST(SsmmPlan, DecodeSplitGridsFitTheResidentClusters) {
  // 3072x12288: 48 clusters; 5 splits would need 48 clusters of 5 (47 fit), so 4 of 24 k-tiles.
  const auto tall = gpu::plan_decode_split(48, 1, 96, kH200Resident);
  EXPECT_EQ(tall.splits, 4);
  EXPECT_EQ(tall.k_tiles_per_split, 24);
  EXPECT_EQ(gpu::plan_decode_split(64, 1, 112, kH200Resident).splits, 3);  // 4096x14336: 64 > 62 clusters of 4
  EXPECT_EQ(gpu::plan_decode_split(36, 1, 45, kH200Resident).splits, 5);   // 2304x5760: 36 of 47
  EXPECT_EQ(gpu::plan_decode_split(44, 1, 16, kH200Resident).splits, 2);   // 1408x2048, two 8-slot tiles
  EXPECT_EQ(gpu::plan_decode_split(133, 1, 96, kH200Resident).splits, 1);  // not even two clusters of 2 per SM
  for (std::int64_t clusters = 1; clusters <= 300; ++clusters) {
    const auto plan = gpu::plan_decode_split(clusters, 1, 128, kH200Resident);
    if (plan.splits > 1) EXPECT_LE(clusters, kH200Resident[static_cast<std::size_t>(plan.splits)]) << clusters;
  }
  gpu::DecodeCall call = decode_call(4096, 14336, 1);
  call.resident = kH200Resident;
  EXPECT_EQ(gpu::plan_decode(call).split.splits, 3);
  // Whether the decode kernel takes a call does not depend on the table (the sm90 path queries the
  // device's only for calls it takes).
  for (const auto& [M, K] : {std::pair<std::int64_t, std::int64_t>{1408, 2048}, {2048, 1408}, {3072, 12288}, {12288, 3072}, {4096, 14336}, {6144, 16384}})
    for (const std::int64_t L : {1, 8, 9, 13, 16, 17, 64, 128})
      for (const int mats : {1, 2}) {
        gpu::DecodeCall c = decode_call(M, K, L, mats);
        const bool ideal = gpu::plan_decode(c).tile_tokens != 0;
        c.resident = kH200Resident;
        EXPECT_EQ(gpu::plan_decode(c).tile_tokens != 0, ideal) << M << "x" << K << " @ " << L << ", " << mats << " matrices";
      }
}

TEST(SsmmPlan, DecodePlanCarriesTheSplitOfItsTiles) {
  // 4096x14336 @ 1: 64 row tiles of one 8-slot tile, 112 k-tiles: 4 splits of 28.
  const gpu::DecodePlan tall = gpu::plan_decode(decode_call(4096, 14336, 1));
  EXPECT_EQ(tall.tile_tokens, 8);
  EXPECT_EQ(tall.split.splits, 4);
  EXPECT_EQ(tall.split.k_tiles_per_split, 28);
  // 3072x12288 @ 16 in 16-slot tiles: 48 CTAs split 5 ways.
  const gpu::DecodePlan wide = gpu::plan_decode(decode_call(3072, 12288, 16));
  EXPECT_EQ(wide.tile_tokens, 16);
  EXPECT_EQ(wide.split.splits, 5);
  // 1408x2048 @ 16 in two 8-slot tiles: 44 CTAs split 2 ways (16 k-tiles).
  const gpu::DecodePlan narrow = gpu::plan_decode(decode_call(1408, 2048, 16));
  EXPECT_EQ(narrow.tile_tokens, 8);
  EXPECT_EQ(narrow.split.splits, 2);
  // Not taken: no plan.
  const gpu::DecodePlan none = gpu::plan_decode(decode_call(14336, 4096, 1, 2));
  EXPECT_EQ(none.tile_tokens, 0);
  EXPECT_EQ(none.split.splits, 1);
  // The K bound at 9-16 slots is the caller's (a tuning knob): raised, 6144x16384 @ 16 takes the decode
  // kernel, in two 8-slot tiles (192 CTAs unsplit).
  gpu::DecodeCall long_k = decode_call(6144, 16384, 16);
  EXPECT_EQ(tile_tokens(long_k), 0);
  long_k.max_k_over_8_slots = gpu::kDecodeMaxK;
  EXPECT_EQ(tile_tokens(long_k), 8);
}

}  // namespace
}  // namespace samoyeds
