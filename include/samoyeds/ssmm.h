// SPDX-License-Identifier: Apache-2.0
// SSMM on the GPU: products of packed (Samoyeds-format) weights with token-major activations, the
// activation rows gathered through an expert's token list while tiles load. Variants (epilogues):
//   plain          Y[j, :] = Ŵ · x_j
//   gate_up        A[j, :] = SiLU(Ŵ_gate · x_j) ⊙ (Ŵ_up · x_j) [⊙ (Ŵ_gate_linear · x_j)]
//   down_weighted  Y[j, :] = w_j · (Ŵ_down · x_j)
// with x_j = X[token_idx[j], :] (a routed expert) or X[j, :] (all tokens: shared experts).
// Each variant has a CPU twin in samoyeds/reference.h with the same meaning. No CUDA types here:
// device pointers are plain pointers and a stream is passed as `void*` (a cudaStream_t).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "samoyeds/format.h"

namespace samoyeds::gpu {

// A packed matrix whose arrays live in GPU memory (not owned), or a stack of `num_stacked` matrices of
// one shape and pattern (the experts of a layer): each array then holds the matrices back to back,
// matrix e starting e * (one matrix's element count) after matrix 0.
struct PackedMatrixView {
  SparsityPattern pattern;
  DType dtype = DType::bf16;
  std::int64_t rows = 0, cols = 0;
  const std::uint16_t* values = nullptr;    // [num_stacked, compressed_rows_padded, cols_padded/2]
  const std::uint32_t* metadata = nullptr;  // [num_stacked, compressed_rows_padded/16, cols_padded/32, 16]
  const std::uint32_t* row_select = nullptr;  // [num_stacked, compressed_rows_padded/32, num_segments, select_bits] or null (plain 2:4)
  int num_stacked = 1;
};

// Owns the GPU copy of a packed matrix or of a stack of them.
class DevicePackedMatrix {
 public:
  DevicePackedMatrix() = default;
  explicit DevicePackedMatrix(const PackedMatrix& host);  // validates, allocates and copies
  // A stack (view().num_stacked = stack.size() >= 1); every matrix must share dtype, shape and pattern.
  explicit DevicePackedMatrix(const std::vector<const PackedMatrix*>& stack);
  // A stack of `count` matrices allocated on the device and zero-filled (to be written by a kernel:
  // the seeded random weights of synthetic models).
  DevicePackedMatrix(const SparsityPattern& pattern, DType dtype, std::int64_t rows, std::int64_t cols, int count);
  // Host copy of matrix `index` of the stack (synchronises the device).
  PackedMatrix download(int index) const;
  ~DevicePackedMatrix();
  DevicePackedMatrix(DevicePackedMatrix&& other) noexcept;
  DevicePackedMatrix& operator=(DevicePackedMatrix&& other) noexcept;
  DevicePackedMatrix(const DevicePackedMatrix&) = delete;
  DevicePackedMatrix& operator=(const DevicePackedMatrix&) = delete;
  const PackedMatrixView& view() const { return view_; }

 private:
  void release();
  PackedMatrixView view_;
  void* allocation_ = nullptr;
};

enum class SsmmEpilogue { plain, gate_up, down_weighted };
const char* epilogue_name(SsmmEpilogue epilogue);

enum class SsmmPath {
  automatic,  // the fastest path this device supports
  sm90,       // wgmma.mma_async.sp (H100/H200)
  sm80,       // warp-level mma.sp (sm_80 and newer, Hopper included)
};
const char* path_name(SsmmPath path);

struct SsmmArgs {
  SsmmEpilogue epilogue = SsmmEpilogue::plain;
  PackedMatrixView weight;        // plain / down_weighted: W [M, K]; gate_up: W_gate [I, H]
  PackedMatrixView up;            // gate_up only: W_up [I, H]
  PackedMatrixView gate_linear;   // gate_up, OpenMoE only (values == nullptr when absent)
  const void* x = nullptr;        // [T, K] bf16/fp16, row-major
  std::int64_t num_x_rows = 0;    // T
  DType x_dtype = DType::bf16;
  const std::int32_t* token_idx = nullptr;  // [L] rows of X to use; nullptr: all T rows (L = T)
  std::int64_t num_tokens = 0;    // L (must equal T when token_idx is null)
  const float* slot_weight = nullptr;  // [L] fp32, down_weighted only
  void* y = nullptr;              // [L, M] row-major
  DType y_dtype = DType::bf16;    // x_dtype, or fp32 for the plain epilogue
  // Scratch: split-K partials (small L or few output rows; Hopper's decode kernel splits without any),
  // or on Hopper at large L the routed rows of X gathered into slot order for the TMA kernel.
  // ssmm_workspace_bytes() tells how much helps (it depends on whether token_idx is set, not on its
  // value). With less, the call still runs, unsplit, through the cp.async kernel. Device memory,
  // 16-byte aligned; not read across calls.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  // Grouped launch: every expert of a layer in one call. weight/up/gate_linear are stacks of E
  // matrices (num_stacked = E), and expert e computes the slots [expert_offsets[e], expert_offsets[e+1])
  // of the token list (or of X's rows without one), offsets clamped to [0, num_tokens). num_tokens is
  // the slot capacity (T * top_k); y, slot_weight and token_idx are indexed by slot. The offsets stay
  // on the device (no host synchronisation); empty experts cost nothing. Slots past offsets[E] are not
  // written. Offsets must be non-decreasing (routing builds them so); others are memory-safe but wrong.
  const std::int32_t* expert_offsets = nullptr;  // [E + 1] int32 device, or null: one matrix
};

// How a call splits its K loop across CTAs: the pure decision, host-tested (docs/kernels/ssmm.md).
struct SplitPlan {
  int splits = 1;               // CTAs sharing one output tile, each over a K range
  std::int64_t k_tiles_per_split = 0;
};
// row_tiles x token_tiles output tiles, num_k_tiles k-tiles, segments of segment_k_tiles k-tiles
// (splits never cut a segment), num_sms multiprocessors, and at most max_splits (the caller's
// traffic bound: the fp32 partials of all splits must stay small next to the weight bytes).
SplitPlan plan_split_k(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t num_k_tiles,
                       std::int64_t segment_k_tiles, int num_sms, std::int64_t max_splits);

// The decode kernel (kernels/ssmm_decode.cu, taken by the sm90 path where plan_decode says): CTAs of
// 32 compressed rows x 8 or 16 token slots, whose warps (8 for 8-slot tiles, 4 for 16) share the K
// range in k-tiles of kDecodeKTileColumns columns.
constexpr int kDecodeKTileColumns = 128;
// Its split of K across CTAs: a tile's split CTAs are one cluster (at most kDecodeMaxSplits = 8 CTAs,
// the portable cluster size) and add their partial sums in distributed shared memory, with no
// workspace and no reduce launch. The most splits whose grid the device holds in one wave
// (resident[s]: clusters of s CTAs resident at once, index 1 single CTAs; two CTAs per SM, fewer
// where a cluster must sit within one GPC), with at least kDecodeMinSplitKTiles k-tiles per split on
// average (the last split may hold fewer: 57 k-tiles split 7 ways are 6 x 9 + 3).
// row_tiles: compressed rows / 32; token_tiles: the grid's token tiles; num_k_tiles: ceil(K_padded / 128).
constexpr std::int64_t kDecodeMinSplitKTiles = 8;
constexpr int kDecodeMaxSplits = 8;
using ResidentClusters = std::array<int, kDecodeMaxSplits + 1>;
// Two CTAs per SM and no cluster constraint: 2 num_sms / s clusters of s.
ResidentClusters ideal_resident_clusters(int num_sms);
SplitPlan plan_decode_split(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t num_k_tiles, const ResidentClusters& resident);
// Slots per tile of the decode kernel (8 or 16) for a call, or 0 when the wgmma kernels take it.
// It takes one matrix (plain or down_weighted) of K <= kDecodeMaxK with at most kDecodeMaxSlots slots
// per expert (the mean over the busy experts of a grouped call), more for small weights:
// - at most 8 slots: 8-slot tiles;
// - 9-16 slots: only at K <= max_k_over_8_slots (kDecodeMaxKOver8Slots unless tuned), and where 16-slot
//   tiles make at most one wave of two CTAs per SM (a grouped call of many small experts, DeepSeek-MoE
//   at T = 128, ran 1.11x slower than on the wgmma kernel); then 16-slot tiles where they fill the SMs
//   unsplit, else 8-slot tiles where those do, else 16 where they fill the SMs at all, else whichever
//   makes more CTAs. Two 8-slot tiles read the weights twice but double the CTAs.
// - more than 16 slots (at most max_slots: kDecodeMaxSlotsSmallWeight unless tuned): only small weights,
//   at most kDecodeSmallWeightBlocks blocks of 32 compressed rows x 128 columns (~2.3 MB packed;
//   1408x2048 and 2048x1408 are 352 blocks), whose token tiles re-read them from L2 cheaply; then as
//   for 9-16 slots.
// Against the wgmma kernel (H200, kernel benchmark, time ratios, docs/kernels/ssmm.md v17-v20):
// - L = 1: 0.70-0.92 at K <= 3072, 0.92 at 4096x14336, 1.00 at 6144x16384;
// - L = 16: 16-slot tiles 0.87-0.98 on the shapes from 2304 rows up, two 8-slot tiles 0.66-0.85 on the
//   small ones; 4096x14336 at L = 9 / 16 0.92 / 0.96 (v19); at K = 16384 the rule's two 8-slot tiles
//   took 1.13-1.19x (6144x16384 at L = 9-16, v18-v19), hence the K bound;
// - L = 24-128 (v20): 0.65-0.93 on 1408x2048 and 2048x1408; on the larger weights mixed (5760x2304,
//   2304x5760: 0.90-1.17) or slower (3072x12288, 4096x14336: 1.18-1.32), hence the weight bound.
constexpr std::int64_t kDecodeMaxK = 16384;
constexpr std::int64_t kDecodeMaxKOver8Slots = 14336;
constexpr std::int64_t kDecodeMaxSlots = 16;
constexpr std::int64_t kDecodeMaxSlotsSmallWeight = 128;
constexpr std::int64_t kDecodeSmallWeightBlocks = 512;
struct DecodeCall {
  int num_mats = 1;
  std::int64_t tokens_per_expert = 0;  // mean over the busy experts
  std::int64_t K = 0;
  std::int64_t row_tiles = 0;          // compressed rows / 32
  std::int64_t num_tokens = 0;         // slots of the call
  std::int64_t busy_experts = 1;       // experts with at least one slot (1 for a single matrix)
  std::int64_t num_k_tiles = 0;        // ceil(K_padded / kDecodeKTileColumns)
  int num_sms = 0;
  std::int64_t max_k_over_8_slots = kDecodeMaxKOver8Slots;  // SAMOYEDS_SSMM_DECODE_WIDE_K
  std::int64_t max_slots = kDecodeMaxSlotsSmallWeight;      // SAMOYEDS_SSMM_DECODE_MAX_SLOTS
  ResidentClusters resident{};  // the device's (kernels::ssmm_decode_resident_clusters); zeros: ideal_resident_clusters
};
struct DecodePlan {
  int tile_tokens = 0;  // 0: the wgmma kernels take the call
  SplitPlan split;      // of the chosen tiles' grid
};
DecodePlan plan_decode(const DecodeCall& call);

// How many CTAs along the output rows share one token tile through TMA multicast (the sm90 kernel's
// large-L variant): the largest power of two <= max_cluster whose padding of the row-tile count (the
// grid must be a whole number of clusters) stays within an eighth of the tiles; 1 when none does.
int plan_cluster_size(std::int64_t row_tiles, int max_cluster);

// Whether the sm90 kernel's TMA variant (bulk tensor copies, B multicast across a cluster of row
// tiles) should take a call rather than the cp.async variant: only with at least 128 tokens per expert
// (full token tiles to multicast), at least 16 row tiles, and without a token list unless there are
// two matrices (gate/up). A token list costs the TMA variant a gather copy of X into slot order, which
// for one matrix ate its gain (14336x4096 @ 4096: +4 %; 1408x2048 @ 16384: -23 %; docs/kernels/ssmm.md
// v5). Small experts lose with it since v8 made the cp.async producer cheaper: DeepSeek-MoE's layer
// (6 and 8 row tiles) took 1.07-1.10x longer at T >= 4096 with it, while Mixtral's (56 and 16) ran
// 1-2 % faster (H200, docs/kernels/ssmm.md v8).
bool plan_tma_variant(std::int64_t tokens_per_expert, int num_mats, std::int64_t row_tiles, bool token_list);

// Tokens per output tile of the sm90 kernel: 32 when an expert's tokens fit in 32 or for three matrices
// (OpenMoE); else the wide tile (128 for one matrix, 64 for gate/up), except for one matrix of K <= 8192
// whose wide grid, row_tiles x max(ceil(num_tokens / 128), busy_experts) CTAs, is under a quarter of
// the SMs: there split-K has too few k-tiles (or too much partial traffic) to fill the SMs, and the
// four times as many 32-token CTAs took 0.73-0.86x of the wide tiles' time; at K >= 12288 split-K
// fills them and the narrow tiles' extra weight reads cost up to 1.35x (H200, 36 cases,
// docs/kernels/ssmm.md v7).
int plan_tile_tokens(std::int64_t tokens_per_expert, int num_mats, std::int64_t row_tiles, std::int64_t K,
                     std::int64_t num_tokens, std::int64_t busy_experts, int num_sms);

// How many token tiles the sm90 kernel's launch order walks before the next row tile
// (kernels/tile_order.h; 1 = row tiles fastest). A wave of num_sms CTAs then reads num_sms / band row
// tiles' weights and band token tiles' activations, a_tile_bytes and b_tile_bytes per k-tile each;
// their sum is smallest at band = sqrt(num_sms * a / b). Row tiles fastest streamed every weight from
// DRAM once per wave whenever a wave held fewer token tiles than that (docs/kernels/ssmm.md v7).
// Only token tiles of one weight matrix share A: a grouped launch passes its experts' mean token
// tiles as tiles_per_expert, which caps the band (<= 0: all token tiles share one matrix).
int plan_tile_band(std::int64_t row_tiles, std::int64_t token_tiles, std::int64_t a_tile_bytes,
                   std::int64_t b_tile_bytes, int num_sms, std::int64_t tiles_per_expert = 0);

// Workspace bytes that let `path` run `args` at its best (0 when it needs none).
std::size_t ssmm_workspace_bytes(const SsmmArgs& args, SsmmPath path = SsmmPath::automatic);

// Empty when `path` can run `args`, else the reason (names the argument and the fix).
std::string can_implement(const SsmmArgs& args, SsmmPath path);
// The path `automatic` resolves to on the current device.
SsmmPath resolve_path(SsmmPath path);
// Launches on `stream` (a cudaStream_t, nullptr = default stream). Throws samoyeds::Error for bad
// arguments or when no GPU/CUDA build is available; checks the launch. No host synchronisation.
void ssmm(const SsmmArgs& args, void* stream = nullptr, SsmmPath path = SsmmPath::automatic);

}  // namespace samoyeds::gpu
