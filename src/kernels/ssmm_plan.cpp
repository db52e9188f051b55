// SPDX-License-Identifier: Apache-2.0
// Host-side checks of an SSMM call (can_implement) and path resolution. Plain C++: builds and is
// tested without nvcc; the launchers in *.cu call these before launching.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "samoyeds/device.h"
#include "samoyeds/error.h"
#include "samoyeds/ssmm.h"

namespace samoyeds::gpu {

const char* epilogue_name(SsmmEpilogue epilogue) {
  switch (epilogue) {
    case SsmmEpilogue::plain: return "plain";
    case SsmmEpilogue::gate_up: return "gate_up";
    case SsmmEpilogue::down_weighted: return "down_weighted";
  }
  return "?";
}

const char* path_name(SsmmPath path) {
  switch (path) {
    case SsmmPath::automatic: return "automatic";
    case SsmmPath::sm90: return "sm90";
    case SsmmPath::sm80: return "sm80";
  }
  return "?";
}

namespace {

std::string check_weight(const char* name, const PackedMatrixView& w, DType x_dtype, SsmmPath path) {
  const std::string prefix = std::string(name) + ": ";
  if (!w.values || !w.metadata) return prefix + "values and metadata must be device pointers (upload with DevicePackedMatrix)";
  // Both paths copy values and metadata in 16-byte pieces (DevicePackedMatrix aligns them).
  if (reinterpret_cast<std::uintptr_t>(w.values) % 16 != 0 || reinterpret_cast<std::uintptr_t>(w.metadata) % 16 != 0)
    return prefix + "values and metadata must be 16-byte aligned (upload with DevicePackedMatrix)";
  if (w.rows < 1 || w.cols < 1) return prefix + "empty matrix";
  if (w.dtype != x_dtype) return prefix + "weights are " + dtype_name(w.dtype) + " but X is " + dtype_name(x_dtype);
  const SparsityPattern& p = w.pattern;
  if (p.has_row_selection()) {
    if (p.n != 1 || p.m != 2 || p.v % 64 != 0)
      return prefix + "the GPU kernels run pattern 1:2:V with V a multiple of 64 (e.g. 1:2:128) and plain 2:4; got " +
             p.to_string() + " (repack the weights)";
    if (path == SsmmPath::sm90 && p.v % 128 != 0)
      return prefix + "the sm90 path needs V a multiple of 128 (its k-tile); V = " + std::to_string(p.v) +
             " runs on the sm80 path";
    if (!w.row_select) return prefix + "row_select must be a device pointer for pattern " + p.to_string();
  }
  return "";
}

}  // namespace

std::string can_implement(const SsmmArgs& a, SsmmPath path) {
  if (!is_half_precision(a.x_dtype)) return std::string("X must be bf16 or fp16, got ") + dtype_name(a.x_dtype);
  if (std::string r = check_weight("weight", a.weight, a.x_dtype, path); !r.empty()) return r;
  const std::int64_t K = a.weight.cols;
  if (a.epilogue == SsmmEpilogue::gate_up) {
    if (std::string r = check_weight("up", a.up, a.x_dtype, path); !r.empty()) return r;
    if (a.up.rows != a.weight.rows || a.up.cols != K) return "up must have the shape of the gate weight [I, H]";
    // One kernel walks one segment grid and one padding geometry for all its matrices.
    if (!(a.up.pattern == a.weight.pattern))
      return "up is packed as " + a.up.pattern.to_string() + " but the gate as " + a.weight.pattern.to_string() +
             ": pack gate and up with the same pattern";
    if (a.gate_linear.values) {
      if (std::string r = check_weight("gate_linear", a.gate_linear, a.x_dtype, path); !r.empty()) return r;
      if (a.gate_linear.rows != a.weight.rows || a.gate_linear.cols != K) return "gate_linear must have the gate's shape [I, H]";
      if (!(a.gate_linear.pattern == a.weight.pattern)) return "gate_linear must be packed with the gate's pattern";
    }
  }
  const int num_experts = a.weight.num_stacked;
  if (num_experts < 1) return "weight.num_stacked is " + std::to_string(num_experts) + "; it must be >= 1";
  if (!a.expert_offsets && num_experts != 1)
    return "weight is a stack of " + std::to_string(num_experts) +
           " matrices: pass expert_offsets [E + 1] for a grouped launch (or a single matrix's view)";
  if (a.epilogue == SsmmEpilogue::gate_up &&
      (a.up.num_stacked != num_experts || (a.gate_linear.values && a.gate_linear.num_stacked != num_experts)))
    return "gate, up (and gate_linear) must be stacks of the same number of experts";
  if (K > (std::int64_t{1} << 30)) return "K = " + std::to_string(K) + " is larger than 2^30 columns";
  if (K % 8 != 0)
    return "K = " + std::to_string(K) + " is not a multiple of 8: X rows must start 16-byte aligned; pad K (zero columns)";
  if (a.num_x_rows < 0 || a.num_tokens < 0) return "negative token counts";
  if (a.num_tokens > (std::int64_t{1} << 31) - 1 || a.num_x_rows > (std::int64_t{1} << 31) - 1)
    return "more than 2^31 - 1 tokens";
  // L = 0 is a no-op (an expert without tokens), whether or not a list pointer is given.
  if (!a.token_idx && a.num_tokens != 0 && a.num_tokens != a.num_x_rows)
    return "without a token list the product reads all rows of X: num_tokens (" + std::to_string(a.num_tokens) +
           ") must equal num_x_rows (" + std::to_string(a.num_x_rows) + ")";
  if (a.num_tokens > 0) {
    if (!a.x || !a.y) return "x and y must be device pointers";
    // The sm90 producer reads X's row 0 for slots without a valid token (their outputs are not stored).
    if (a.num_x_rows == 0) return "token_idx lists " + std::to_string(a.num_tokens) + " tokens but X has no rows (num_x_rows = 0)";
    if (reinterpret_cast<std::uintptr_t>(a.x) % 16 != 0) return "x must be 16-byte aligned";
    if (reinterpret_cast<std::uintptr_t>(a.y) % 4 != 0) return "y must be 4-byte aligned";
    if (a.epilogue == SsmmEpilogue::down_weighted && !a.slot_weight) return "down_weighted needs slot_weight [L]";
    if (a.workspace && reinterpret_cast<std::uintptr_t>(a.workspace) % 16 != 0) return "workspace must be 16-byte aligned";
  }
  const bool y_ok = a.y_dtype == a.x_dtype || (a.epilogue == SsmmEpilogue::plain && a.y_dtype == DType::f32);
  if (!y_ok) return std::string("y must be ") + dtype_name(a.x_dtype) + (a.epilogue == SsmmEpilogue::plain ? " or fp32" : "");
  return "";
}

SplitPlan plan_split_k(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t num_k_tiles,
                       std::int64_t segment_k_tiles, int num_sms, std::int64_t max_splits) {
  SplitPlan plan;
  plan.k_tiles_per_split = num_k_tiles;
  const std::int64_t tiles = row_tiles * token_tiles;
  // Enough output tiles fill the machine on their own; splitting would only add workspace traffic.
  if (tiles <= 0 || num_k_tiles <= 0 || tiles >= num_sms || max_splits < 2) return plan;
  // The v4 kernel runs one CTA per SM, so CTAs run in waves of num_sms. Modelled time, in k-tiles of
  // one CTA: waves x (k-tiles per CTA + a fixed cost per wave for prologue, pipeline fill and epilogue)
  // + the reduce launch when split. A split count whose CTAs just overflow a wave loses most of that
  // wave (ncu, Mixtral gate/up at T = 1: 3 splits gave 2.55 waves and 81 % of the SMs active).
  // Splits keep at least 4 k-tiles (the ring fills) and never cut a segment.
  constexpr std::int64_t kWaveCost = 2, kReduceCost = 3;
  const std::int64_t most = std::max<std::int64_t>(1, std::min(num_k_tiles / 4, max_splits));
  const std::int64_t unit = std::max<std::int64_t>(1, segment_k_tiles);
  std::int64_t best_cost = -1;
  for (std::int64_t wanted = 1; wanted <= most; ++wanted) {
    std::int64_t per_split = (num_k_tiles + wanted - 1) / wanted;
    per_split = (per_split + unit - 1) / unit * unit;
    const std::int64_t splits = (num_k_tiles + per_split - 1) / per_split;
    const std::int64_t waves = (tiles * splits + num_sms - 1) / num_sms;
    const std::int64_t cost = waves * (per_split + kWaveCost) + (splits > 1 ? kReduceCost : 0);
    if (best_cost < 0 || cost < best_cost) {  // ties keep the fewer splits
      best_cost = cost;
      plan.k_tiles_per_split = per_split;
      plan.splits = static_cast<int>(splits);
    }
  }
  return plan;
}

DecodePlan plan_decode(const DecodeCall& c) {
  DecodePlan none;
  if (c.num_mats != 1 || c.tokens_per_expert < 1 || c.K > kDecodeMaxK) return none;
  // Past 16 slots the token tiles re-read the weight: only a small one, from L2 (v20).
  if (c.tokens_per_expert > kDecodeMaxSlots && (c.tokens_per_expert > c.max_slots || c.row_tiles * c.num_k_tiles > kDecodeSmallWeightBlocks))
    return none;
  const ResidentClusters resident = c.resident[1] > 0 ? c.resident : ideal_resident_clusters(c.num_sms);
  const auto token_tiles = [&](int tile) { return std::max((c.num_tokens + tile - 1) / tile, c.busy_experts); };
  const auto plan = [&](int tile) { return DecodePlan{tile, plan_decode_split(c.row_tiles, token_tiles(tile), c.num_k_tiles, resident)}; };
  if (c.tokens_per_expert <= 8) return plan(8);
  if (c.K > c.max_k_over_8_slots) return none;
  if (c.row_tiles * token_tiles(16) > 2 * static_cast<std::int64_t>(c.num_sms)) return none;
  const DecodePlan wide = plan(16), narrow = plan(8);
  const auto ctas = [&](const DecodePlan& d) { return c.row_tiles * token_tiles(d.tile_tokens) * d.split.splits; };
  if (ctas(wide) >= c.num_sms && wide.split.splits == 1) return wide;
  if (ctas(narrow) >= c.num_sms && narrow.split.splits == 1) return narrow;
  if (ctas(wide) >= c.num_sms) return wide;
  return ctas(narrow) > ctas(wide) ? narrow : wide;
}

ResidentClusters ideal_resident_clusters(int num_sms) {
  ResidentClusters resident{};
  for (int s = 1; s <= kDecodeMaxSplits; ++s) resident[s] = 2 * num_sms / s;
  return resident;
}

SplitPlan plan_decode_split(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t num_k_tiles, const ResidentClusters& resident) {
  SplitPlan plan;
  plan.k_tiles_per_split = num_k_tiles;
  const std::int64_t clusters = row_tiles * token_tiles;  // one per tile
  if (clusters <= 0 || num_k_tiles <= 0) return plan;
  std::int64_t wanted = std::min<std::int64_t>(num_k_tiles / kDecodeMinSplitKTiles, kDecodeMaxSplits);
  while (wanted >= 2 && clusters > resident[static_cast<std::size_t>(wanted)]) --wanted;
  if (wanted < 2) return plan;
  plan.k_tiles_per_split = (num_k_tiles + wanted - 1) / wanted;
  plan.splits = static_cast<int>((num_k_tiles + plan.k_tiles_per_split - 1) / plan.k_tiles_per_split);
  return plan;
}

int plan_tile_tokens(std::int64_t tokens_per_expert, int num_mats, std::int64_t row_tiles, std::int64_t K,
                     std::int64_t num_tokens, std::int64_t busy_experts, int num_sms) {
  if (tokens_per_expert <= 32 || num_mats >= 3) return 32;
  if (num_mats == 2) return 64;  // gate/up: not measured narrow yet (the kernel benchmark times one matrix)
  if (K > 8192) return 128;
  const std::int64_t wide_ctas = std::max<std::int64_t>(1, row_tiles) * std::max((num_tokens + 127) / 128, busy_experts);
  return wide_ctas * 4 < num_sms ? 32 : 128;
}

int plan_tile_band(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t a_tile_bytes,
                   std::int64_t b_tile_bytes, int num_sms, std::int64_t tiles_per_expert) {
  if (row_tiles <= 0 || token_tiles <= 1 || a_tile_bytes <= 0 || b_tile_bytes <= 0 || num_sms <= 0) return 1;
  if (row_tiles * token_tiles <= num_sms) return 1;  // one wave: every tile's bytes are read once anyway
  const double best = std::sqrt(static_cast<double>(num_sms) * static_cast<double>(a_tile_bytes) / static_cast<double>(b_tile_bytes));
  const std::int64_t shared = tiles_per_expert > 0 ? std::min(tiles_per_expert, token_tiles) : token_tiles;
  const std::int64_t band = std::clamp<std::int64_t>(std::llround(best), 1, shared);
  if (band <= 1) return 1;
  // Row tiles fastest already puts num_sms / row_tiles token tiles in each wave.
  if (num_sms / row_tiles >= band) return 1;
  return static_cast<int>(band);
}

bool plan_tma_variant(std::int64_t tokens_per_expert, int num_mats, std::int64_t row_tiles, bool token_list) {
  constexpr std::int64_t kMinTokensPerExpert = 128;  // below: no full token tile to multicast
  constexpr std::int64_t kMinRowTiles = 16;          // below: the gather and prologue outweigh the multicast
  if (num_mats > 2 || tokens_per_expert < kMinTokensPerExpert || row_tiles < kMinRowTiles) return false;
  return !token_list || num_mats == 2;
}

int plan_cluster_size(std::int64_t row_tiles, int max_cluster) {
  // Padded CTAs stream weights of rows that do not exist (zero-filled) and store nothing: pure loss,
  // so a cluster is only worth it when that loss stays small next to the L2 traffic multicast saves.
  for (int cluster = 8; cluster >= 2; cluster /= 2) {
    if (cluster > max_cluster || row_tiles < cluster) continue;
    const std::int64_t padded = (row_tiles + cluster - 1) / cluster * cluster;
    if ((padded - row_tiles) * 8 <= row_tiles) return cluster;
  }
  return 1;
}

}  // namespace samoyeds::gpu
