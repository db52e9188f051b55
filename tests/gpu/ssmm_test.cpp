// SPDX-License-Identifier: Apache-2.0
// GPU SSMM kernels against the CPU reference twins (samoyeds/reference.h).
// Exact tier: integer data in [-4, 4] \ {0}, fp32 output; every sum is an integer below 2^24, so GPU
// and CPU must agree bit for bit. Realistic tier: normal data, bf16/fp16 output; both accumulate in
// fp32 and round once, so they differ by summation order only: |gpu - ref| <= 2^-7 |ref| + 2^-10 max|ref|
// (two units of bf16 rounding plus an absolute term for cancellation). Outputs are poisoned (NaN)
// before every launch, so an unwritten element fails. For large L only sampled slots are compared
// (first, last and random ones), so the CPU reference stays fast.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <tuple>

#include "common/test_util.h"
#include "gpu/gpu_util.h"
#include "kernels/ssmm_sm90.h"
#include "samoyeds/reference.h"
#include "samoyeds/ssmm.h"

namespace samoyeds {
namespace {

using testing::DeviceBuffer;
using testing::random_int_matrix;
using testing::random_normal_matrix;
using testing::seed_trace;

std::vector<std::int32_t> random_token_list(std::int64_t L, std::int64_t T, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> idx(static_cast<std::size_t>(L));
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(T - 1));
  for (auto& i : idx) i = pick(rng);  // unsorted, with repeats: the kernel must not assume order
  return idx;
}

// Slots to compare: all when L is small, else the first, last and 30 random ones.
std::vector<std::int64_t> sample_slots(std::int64_t L, std::uint64_t seed) {
  std::vector<std::int64_t> slots;
  if (L <= 72) {
    for (std::int64_t j = 0; j < L; ++j) slots.push_back(j);
    return slots;
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> pick(0, L - 1);
  slots = {0, L - 1, 63, 64};
  for (int i = 0; i < 30; ++i) slots.push_back(pick(rng));
  std::sort(slots.begin(), slots.end());
  slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
  return slots;
}

float element(const std::vector<std::uint16_t>& half, const std::vector<float>& f32, DType dtype, std::size_t at) {
  return dtype == DType::f32 ? f32[at] : half_to_float(dtype, half[at]);
}

bool on_hopper() {
  const auto devices = cuda_devices();
  int device = 0;
  cudaGetDevice(&device);
  return device < static_cast<int>(devices.size()) && devices[static_cast<std::size_t>(device)].is_hopper();
}

// The paths that can run `args` on this device: sm80 always, sm90 on Hopper when it takes the call.
std::vector<gpu::SsmmPath> paths_for(const gpu::SsmmArgs& args) {
  std::vector<gpu::SsmmPath> paths = {gpu::SsmmPath::sm80};
  if (on_hopper() && gpu::can_implement(args, gpu::SsmmPath::sm90).empty()) paths.push_back(gpu::SsmmPath::sm90);
  return paths;
}

// The sm90 decode kernel's override for one scope (-1: the knob decides; 0 / 1: off / on), restored
// on the way out, failed assertions included.
struct DecodeOverride {
  explicit DecodeOverride(int mode) { kernels::ssmm_sm90_set_decode(mode); }
  ~DecodeOverride() { kernels::ssmm_sm90_set_decode(-1); }
  DecodeOverride(const DecodeOverride&) = delete;
  DecodeOverride& operator=(const DecodeOverride&) = delete;
};

// The sm90 path's other small-L kernels for one scope: the decode kernel off (so its wgmma kernels run),
// and the stream-K kernel on when asked for.
struct Sm90Alternative {
  explicit Sm90Alternative(bool stream_k) : decode_off(0) { kernels::ssmm_sm90_set_stream_k(stream_k ? 1 : -1); }
  ~Sm90Alternative() { kernels::ssmm_sm90_set_stream_k(-1); }
  Sm90Alternative(const Sm90Alternative&) = delete;
  Sm90Alternative& operator=(const Sm90Alternative&) = delete;
  DecodeOverride decode_off;
};

struct Check {
  double max_err = 0, max_ref = 0;
  std::int64_t bad = 0, non_finite = 0;
};

// Compares GPU rows `slots` of y [L, M] with reference rows [slots.size(), M].
Check compare(const DeviceBuffer& y, DType dtype, std::int64_t M, const std::vector<std::int64_t>& slots,
              const Matrix& ref, bool exact) {
  const auto half = dtype == DType::f32 ? std::vector<std::uint16_t>{} : y.to_host<std::uint16_t>();
  const auto f32 = dtype == DType::f32 ? y.to_host<float>() : std::vector<float>{};
  Check c;
  for (std::size_t s = 0; s < slots.size(); ++s)
    for (std::int64_t r = 0; r < M; ++r) c.max_ref = std::max(c.max_ref, static_cast<double>(std::fabs(ref.get(static_cast<std::int64_t>(s), r))));
  for (std::size_t s = 0; s < slots.size(); ++s) {
    for (std::int64_t r = 0; r < M; ++r) {
      const float got = element(half, f32, dtype, static_cast<std::size_t>(slots[s] * M + r));
      const float want = ref.get(static_cast<std::int64_t>(s), r);
      if (!std::isfinite(got)) {
        if (c.non_finite++ < 3) ADD_FAILURE() << "non-finite output at slot " << slots[s] << ", row " << r;
        continue;
      }
      const double err = std::fabs(static_cast<double>(got) - want);
      c.max_err = std::max(c.max_err, err);
      const double tol = exact ? 0.0 : std::ldexp(std::fabs(want), -7) + std::ldexp(c.max_ref, -10);
      if (err > tol && c.bad++ < 3)
        ADD_FAILURE() << "slot " << slots[s] << ", row " << r << ": got " << got << ", want " << want << " (tol " << tol << ")";
    }
  }
  return c;
}

struct Problem {
  std::int64_t M, K;
  const char* pattern;
};

std::string label(const Problem& p) { return std::to_string(p.M) + "x" + std::to_string(p.K) + " " + p.pattern; }

// Cached packed weights (packing the largest shapes takes seconds on the CPU).
const PackedMatrix& cached_weight(const Problem& p, DType dtype, bool integers, std::uint64_t seed) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::string, int, bool, std::uint64_t>, PackedMatrix> cache;
  const auto key = std::make_tuple(p.M, p.K, std::string(p.pattern), static_cast<int>(dtype), integers, seed);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const Matrix w = integers ? random_int_matrix(dtype, p.M, p.K, seed) : random_normal_matrix(dtype, p.M, p.K, seed, 0.05f);
    it = cache.emplace(key, pack(w, SparsityPattern::parse(p.pattern))).first;
  }
  return it->second;
}

// --- exact tier: plain product, every issue shape and its transpose, L in {0, 1, 7, 64, 1000, 4096} ----

class SsmmExact : public ::testing::TestWithParam<Problem> {};

TEST_P(SsmmExact, PlainProductMatchesReferenceBitForBit) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Problem prob = GetParam();
  const std::uint64_t seed = 11 + static_cast<std::uint64_t>(prob.M * 3 + prob.K);
  SCOPED_TRACE(seed_trace(seed) + ", " + label(prob));
  const PackedMatrix& w = cached_weight(prob, DType::bf16, true, seed);
  const gpu::DevicePackedMatrix dw(w);
  const std::int64_t T = 4096 + 17;
  const Matrix x = random_int_matrix(DType::bf16, T, prob.K, seed + 1);
  DeviceBuffer dx(x.data(), x.bytes());
  for (std::int64_t L : {0, 1, 7, 13, 64, 1000, 4096}) {
    SCOPED_TRACE("L = " + std::to_string(L));
    const auto idx = random_token_list(L, T, seed + static_cast<std::uint64_t>(L));
    DeviceBuffer didx(idx);
    DeviceBuffer dy(static_cast<std::size_t>(L * prob.M) * sizeof(float));
    dy.poison();
    gpu::SsmmArgs args;
    args.weight = dw.view();
    args.x = dx.get();
    args.num_x_rows = T;
    args.token_idx = didx.as<std::int32_t>();
    args.num_tokens = L;
    args.y = dy.get();
    args.y_dtype = DType::f32;
    const auto slots = sample_slots(L, seed);
    std::vector<std::int32_t> sampled;
    for (auto j : slots) sampled.push_back(idx[static_cast<std::size_t>(j)]);
    const Matrix ref = reference::ssmm(w, x, Tokens::list(sampled), DType::f32);
    for (gpu::SsmmPath path : paths_for(args)) {
      // Unsplit, then (where the call would split K) with the workspace the path asks for.
      const std::size_t workspace_bytes = gpu::ssmm_workspace_bytes(args, path);
      DeviceBuffer workspace(workspace_bytes);
      for (bool split : {false, true}) {
        if (split && workspace_bytes == 0) continue;
        SCOPED_TRACE(std::string("path ") + gpu::path_name(path) + (split ? ", split-K" : ""));
        args.workspace = split ? workspace.get() : nullptr;
        args.workspace_bytes = split ? workspace_bytes : 0;
        dy.poison();
        gpu::ssmm(args, nullptr, path);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const Check c = compare(dy, DType::f32, prob.M, slots, ref, true);
        EXPECT_EQ(c.bad + c.non_finite, 0);
      }
      if (path == gpu::SsmmPath::sm90) {
        // Where the decode kernel takes the call (L <= 16, small weights to 128), also the wgmma kernel it replaces; then the
        // stream-K kernel, where it applies (32-token tiles, fewer tiles than SMs): every shape of 2304
        // rows or more at L = 1 and 7 (row tiles x granules >= 2 per SM).
        if ((L == 1 || L == 7) && prob.K <= gpu::kDecodeMaxK) EXPECT_TRUE(kernels::ssmm_sm90_takes_decode(args)) << "the decode kernel is not tested here";
        // L = 13: both tile widths of the decode kernel (gpu::plan_decode).
        if (L == 13 && prob.pattern == std::string("1:2:128") && (prob.M == 12288 || prob.M == 1408))
          EXPECT_EQ(kernels::ssmm_sm90_decode_tile_tokens(args), prob.M == 12288 ? 16 : 8) << "a decode tile width is not tested here";
        // L = 64: the decode kernel past 16 slots (small weights only, gpu::plan_decode), 8 token tiles.
        if (L == 64 && prob.pattern == std::string("1:2:128") && (prob.M == 1408 || prob.M == 2048))
          EXPECT_TRUE(kernels::ssmm_sm90_takes_decode(args)) << "the decode kernel past 16 slots is not tested here";
        // The decode kernel's split tiles (one cluster each) and its unsplit ones.
        if ((L == 1 || L == 13) && prob.pattern == std::string("1:2:128") && (prob.M == 3072 || prob.M == 12288))
          EXPECT_EQ(kernels::ssmm_sm90_decode_splits(args) > 1, prob.M == 3072) << "a decode split is not tested here";
        const bool decode_default = kernels::ssmm_sm90_takes_decode(args);
        for (const bool stream_k : {false, true}) {
          if (!stream_k && !decode_default) continue;
          const Sm90Alternative alternative(stream_k);
          DeviceBuffer alt_workspace(gpu::ssmm_workspace_bytes(args, path));
          args.workspace = alt_workspace.get();
          args.workspace_bytes = alt_workspace.bytes();
          const bool takes = !stream_k || kernels::ssmm_sm90_takes_stream_k(args);
          if (stream_k && (L == 1 || L == 7) && std::min(prob.M, prob.K) >= 2304) EXPECT_TRUE(takes) << "the stream-K kernel is not tested here";
          if (!takes) continue;
          SCOPED_TRACE(stream_k ? "path sm90, stream-K" : "path sm90, wgmma kernel");
          dy.poison();
          gpu::ssmm(args, nullptr, path);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          const Check c = compare(dy, DType::f32, prob.M, slots, ref, true);
          EXPECT_EQ(c.bad + c.non_finite, 0);
        }
      }
      args.workspace = nullptr;
      args.workspace_bytes = 0;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    IssueShapes, SsmmExact,
    ::testing::Values(Problem{1408, 2048, "1:2:128"}, Problem{2048, 1408, "1:2:128"}, Problem{5760, 2304, "1:2:128"},
                      Problem{2304, 5760, "1:2:128"}, Problem{12288, 3072, "1:2:128"}, Problem{3072, 12288, "1:2:128"},
                      Problem{14336, 4096, "1:2:128"}, Problem{4096, 14336, "1:2:128"}, Problem{16384, 6144, "1:2:128"},
                      Problem{6144, 16384, "1:2:128"}, Problem{1408, 2048, "2:4"}, Problem{5760, 2304, "2:4"},
                      Problem{2048, 1408, "1:2:256"}, Problem{14336, 4096, "1:2:512"}, Problem{100, 200, "1:2:64"},
                      Problem{1, 64, "1:2:128"}, Problem{130, 72, "2:4"}, Problem{300, 192, "1:2:128"}),
    [](const ::testing::TestParamInfo<Problem>& info) {
      std::string name = std::to_string(info.param.M) + "x" + std::to_string(info.param.K) + "_" + info.param.pattern;
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

// --- realistic tier: every epilogue, both dtypes, token lists and all tokens --------------------------

struct EpilogueCase {
  gpu::SsmmEpilogue epilogue;
  DType dtype;
  bool gate_linear;
  bool all_tokens;
  Problem prob;
};

class SsmmEpilogues : public ::testing::TestWithParam<EpilogueCase> {};

TEST_P(SsmmEpilogues, MatchesReferenceWithinTolerance) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const EpilogueCase ec = GetParam();
  const std::uint64_t seed = 500 + static_cast<std::uint64_t>(ec.prob.M + ec.prob.K) + static_cast<std::uint64_t>(ec.epilogue);
  SCOPED_TRACE(seed_trace(seed) + ", " + label(ec.prob));
  const PackedMatrix& w = cached_weight(ec.prob, ec.dtype, false, seed);
  const PackedMatrix& up = cached_weight(ec.prob, ec.dtype, false, seed + 1);
  const PackedMatrix& lin = cached_weight(ec.prob, ec.dtype, false, seed + 2);
  const gpu::DevicePackedMatrix dw(w), dup(up), dlin(lin);
  for (std::int64_t L : {1, 7, 13, 64, 1000}) {
    SCOPED_TRACE("L = " + std::to_string(L));
    const std::int64_t T = ec.all_tokens ? L : L + 5;
    const Matrix x = random_normal_matrix(ec.dtype, T, ec.prob.K, seed + 3 + static_cast<std::uint64_t>(L));
    DeviceBuffer dx(x.data(), x.bytes());
    const auto idx = ec.all_tokens ? std::vector<std::int32_t>{} : random_token_list(L, T, seed + 4);
    DeviceBuffer didx(idx);
    std::vector<float> weights(static_cast<std::size_t>(L));
    std::mt19937_64 rng(seed + 5);
    std::uniform_real_distribution<float> uni(0.05f, 1.0f);
    for (float& v : weights) v = uni(rng);
    DeviceBuffer dweights(weights);
    DeviceBuffer dy(static_cast<std::size_t>(L * ec.prob.M) * 2);
    dy.poison();
    gpu::SsmmArgs args;
    args.epilogue = ec.epilogue;
    args.weight = dw.view();
    if (ec.epilogue == gpu::SsmmEpilogue::gate_up) {
      args.up = dup.view();
      if (ec.gate_linear) args.gate_linear = dlin.view();
    }
    args.x = dx.get();
    args.x_dtype = ec.dtype;
    args.num_x_rows = T;
    args.token_idx = ec.all_tokens ? nullptr : didx.as<std::int32_t>();
    args.num_tokens = L;
    args.slot_weight = dweights.as<float>();
    args.y = dy.get();
    args.y_dtype = ec.dtype;

    const auto slots = sample_slots(L, seed);
    std::vector<std::int32_t> sampled;
    std::vector<float> sampled_weights;
    for (auto j : slots) {
      sampled.push_back(ec.all_tokens ? static_cast<std::int32_t>(j) : idx[static_cast<std::size_t>(j)]);
      sampled_weights.push_back(weights[static_cast<std::size_t>(j)]);
    }
    Matrix ref;
    if (ec.epilogue == gpu::SsmmEpilogue::plain) {
      ref = reference::ssmm(w, x, Tokens::list(sampled), ec.dtype);
    } else if (ec.epilogue == gpu::SsmmEpilogue::gate_up) {
      ref = reference::ssmm_gate_up(w, up, x, Tokens::list(sampled), ec.dtype, ec.gate_linear ? &lin : nullptr);
    } else {
      // down_weighted reads rows of X as A: gather the sampled rows, then the reference epilogue.
      Matrix a(ec.dtype, static_cast<std::int64_t>(sampled.size()), ec.prob.K);
      for (std::size_t s = 0; s < sampled.size(); ++s)
        for (std::int64_t k = 0; k < ec.prob.K; ++k) a.set(static_cast<std::int64_t>(s), k, x.get(sampled[s], k));
      ref = reference::ssmm_down_weighted(w, a, sampled_weights, ec.dtype);
    }
    for (gpu::SsmmPath path : paths_for(args)) {
      SCOPED_TRACE(std::string("path ") + gpu::path_name(path));
      DeviceBuffer workspace(gpu::ssmm_workspace_bytes(args, path));  // split-K where it helps
      args.workspace = workspace.get();
      args.workspace_bytes = workspace.bytes();
      dy.poison();
      gpu::ssmm(args, nullptr, path);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const Check c = compare(dy, ec.dtype, ec.prob.M, slots, ref, false);
      EXPECT_EQ(c.bad + c.non_finite, 0) << "max err " << c.max_err << " of max |ref| " << c.max_ref;
      EXPECT_GT(c.max_ref, 0.0);
      if (path == gpu::SsmmPath::sm90) {  // and the wgmma kernel the decode kernel replaces, and stream-K, where they apply
        const bool decode_default = kernels::ssmm_sm90_takes_decode(args);
        if (L <= 7 && ec.epilogue != gpu::SsmmEpilogue::gate_up && ec.prob.K <= gpu::kDecodeMaxK)
          EXPECT_TRUE(decode_default) << "the decode kernel is not tested here";
        for (const bool stream_k : {false, true}) {
          if (!stream_k && !decode_default) continue;
          const Sm90Alternative alternative(stream_k);
          DeviceBuffer alt_workspace(gpu::ssmm_workspace_bytes(args, path));
          args.workspace = alt_workspace.get();
          args.workspace_bytes = alt_workspace.bytes();
          if (stream_k && !kernels::ssmm_sm90_takes_stream_k(args)) continue;
          SCOPED_TRACE(stream_k ? "stream-K" : "wgmma kernel");
          dy.poison();
          gpu::ssmm(args, nullptr, path);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          const Check k = compare(dy, ec.dtype, ec.prob.M, slots, ref, false);
          EXPECT_EQ(k.bad + k.non_finite, 0) << "max err " << k.max_err << " of max |ref| " << k.max_ref;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, SsmmEpilogues,
    ::testing::Values(
        EpilogueCase{gpu::SsmmEpilogue::plain, DType::bf16, false, false, {1408, 2048, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::plain, DType::f16, false, true, {5760, 2304, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::bf16, false, false, {1408, 2048, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::f16, false, false, {5760, 2304, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::bf16, false, true, {2816, 2048, "1:2:128"}},
        // 16 row tiles: the smallest gate/up the TMA variant takes at L = 1000 (gpu::plan_tma_variant).
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::bf16, false, false, {4096, 2048, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::bf16, true, false, {1024, 2048, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::gate_up, DType::bf16, false, false, {1408, 2048, "2:4"}},
        EpilogueCase{gpu::SsmmEpilogue::down_weighted, DType::bf16, false, true, {2048, 1408, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::down_weighted, DType::f16, false, true, {2304, 5760, "1:2:128"}},
        EpilogueCase{gpu::SsmmEpilogue::down_weighted, DType::bf16, false, true, {4096, 14336, "2:4"}}),
    [](const ::testing::TestParamInfo<EpilogueCase>& info) {
      const auto& c = info.param;
      std::string name = std::string(gpu::epilogue_name(c.epilogue)) + "_" + dtype_name(c.dtype) +
                         (c.gate_linear ? "_openmoe" : "") + (c.all_tokens ? "_all" : "_list") + "_" +
                         std::to_string(c.prob.M) + "x" + std::to_string(c.prob.K) + "_" + c.prob.pattern;
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

// --- determinism, bad token indices, bad arguments -------------------------------------------------------

TEST(SsmmGpu, BitwiseReproducibleAcrossRuns) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Problem prob{1408, 2048, "1:2:128"};
  const PackedMatrix& w = cached_weight(prob, DType::bf16, false, 3);
  const gpu::DevicePackedMatrix dw(w);
  const Matrix x = random_normal_matrix(DType::bf16, 300, 2048, 4);
  DeviceBuffer dx(x.data(), x.bytes());
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = 300;
  args.num_tokens = 300;
  for (gpu::SsmmPath path : paths_for(args)) {
    // Unsplit, and with split-K where the call splits (its reduce sums across CTAs in a fixed order).
    for (std::int64_t L : {std::int64_t{300}, std::int64_t{8}}) {
      args.num_x_rows = L;
      args.num_tokens = L;
      DeviceBuffer dy(static_cast<std::size_t>(L) * 1408 * 2);  // [L, 1408] bf16
      dy.poison();
      args.y = dy.get();
      DeviceBuffer workspace(gpu::ssmm_workspace_bytes(args, path));
      args.workspace = workspace.get();
      args.workspace_bytes = workspace.bytes();
      SCOPED_TRACE(std::string("path ") + gpu::path_name(path) + ", L = " + std::to_string(L) +
                   (workspace.bytes() ? ", split-K" : ""));
      gpu::ssmm(args, nullptr, path);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const auto first = dy.to_host<std::uint16_t>();
      ASSERT_EQ(std::count(first.begin(), first.end(), std::uint16_t{0xFFFF}), 0) << "output left unwritten";
      dy.poison();
      gpu::ssmm(args, nullptr, path);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(first, dy.to_host<std::uint16_t>());
    }
  }
}

// Captures one sm90 call into a CUDA graph and replays it `replays` times, Y poisoned before each:
// `outs` gets what each replay stored. Call through ASSERT_NO_FATAL_FAILURE.
void replay_graph(const gpu::SsmmArgs& args, DeviceBuffer& dy, int replays, std::vector<std::vector<std::uint16_t>>& outs) {
  cudaStream_t stream = nullptr;
  SAMOYEDS_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  SAMOYEDS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  gpu::ssmm(args, stream, gpu::SsmmPath::sm90);
  SAMOYEDS_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  SAMOYEDS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  outs.clear();
  for (int replay = 0; replay < replays; ++replay) {
    dy.poison();
    SAMOYEDS_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    SAMOYEDS_ASSERT_CUDA(cudaStreamSynchronize(stream));
    outs.push_back(dy.to_host<std::uint16_t>());
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Two replays of the captured call must each store `expected`. Call through ASSERT_NO_FATAL_FAILURE.
void expect_graph_replays_store(const gpu::SsmmArgs& args, DeviceBuffer& dy, const std::vector<std::uint16_t>& expected) {
  std::vector<std::vector<std::uint16_t>> outs;
  ASSERT_NO_FATAL_FAILURE(replay_graph(args, dy, 2, outs));
  ASSERT_EQ(outs.size(), 2u);
  for (std::size_t replay = 0; replay < outs.size(); ++replay)
    EXPECT_EQ(outs[replay], expected) << "graph replay " << replay << " differs from the eager call";
}

// The sm90 epilogue stages a row-selected 16-bit tile through shared memory and stores 16-byte
// chunks when Y is 16-byte aligned and rows % 8 == 0, and otherwise stores 4-byte pairs: both must
// write the same bits, and nothing outside [L, M] (Y one pair off the alignment, guard bytes around).
TEST(SsmmGpu, StagedAndPairedEpiloguesStoreTheSameBits) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  if (!on_hopper()) GTEST_SKIP() << "the sm90 path needs a Hopper GPU";
  const DecodeOverride decode_off(0);  // 1408x2048 @ 100 would take the decode kernel, whose epilogue is not the subject
  const std::int64_t T = 1100;
  const Matrix x = random_normal_matrix(DType::bf16, T, 2048, 33);
  DeviceBuffer dx(x.data(), x.bytes());
  const auto idx = random_token_list(1000, T, 34);
  DeviceBuffer didx(idx);
  DeviceBuffer dweights(std::vector<float>(1000, 0.5f));
  // 1408 rows: the cp.async variant, a half-full last row tile; 4096: gate/up at L = 1000 takes the
  // TMA variant (16 row tiles, a token list, two matrices).
  for (const Problem prob : {Problem{1408, 2048, "1:2:128"}, Problem{4096, 2048, "1:2:128"}}) {
    const PackedMatrix& w = cached_weight(prob, DType::bf16, false, 31);
    const PackedMatrix& up = cached_weight(prob, DType::bf16, false, 32);
    const gpu::DevicePackedMatrix dw(w), dup(up);
    for (const gpu::SsmmEpilogue epilogue : {gpu::SsmmEpilogue::gate_up, gpu::SsmmEpilogue::down_weighted}) {
      for (const std::int64_t L : {std::int64_t{100}, std::int64_t{1000}}) {
        SCOPED_TRACE(seed_trace(31) + ", " + label(prob) + ", " + gpu::epilogue_name(epilogue) + ", L = " + std::to_string(L));
        gpu::SsmmArgs args;
        args.epilogue = epilogue;
        args.weight = dw.view();
        if (epilogue == gpu::SsmmEpilogue::gate_up) args.up = dup.view();
        args.x = dx.get();
        args.num_x_rows = T;
        args.token_idx = didx.as<std::int32_t>();
        args.num_tokens = L;
        args.slot_weight = dweights.as<float>();
        const std::size_t y_bytes = static_cast<std::size_t>(L * prob.M) * 2;
        DeviceBuffer dy(y_bytes + 32);  // guard bytes before and after either placement
        // Without a workspace the call runs unsplit through the cp.async variant, so both placements
        // take a paired-store epilogue; with the one it asks for it may take the TMA variant (or split).
        for (const bool with_workspace : {false, true}) {
          SCOPED_TRACE(with_workspace ? "with the workspace it asks for" : "without a workspace");
          std::vector<std::vector<std::uint16_t>> outs;
          for (const std::size_t offset : {std::size_t{16}, std::size_t{20}}) {  // 16-byte aligned, then 4-byte
            dy.poison();
            args.y = static_cast<std::uint8_t*>(dy.get()) + offset;
            ASSERT_EQ(gpu::can_implement(args, gpu::SsmmPath::sm90), "");
            DeviceBuffer workspace(with_workspace ? gpu::ssmm_workspace_bytes(args, gpu::SsmmPath::sm90) : 0);
            args.workspace = workspace.get();
            args.workspace_bytes = workspace.bytes();
            gpu::ssmm(args, nullptr, gpu::SsmmPath::sm90);
            ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
            const auto all = dy.to_host<std::uint16_t>();
            const std::size_t first = offset / 2, count = y_bytes / 2;
            for (std::size_t i = 0; i < all.size(); ++i)
              if (i < first || i >= first + count) ASSERT_EQ(all[i], 0xFFFF) << "written outside Y at element " << i;
            outs.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(first),
                              all.begin() + static_cast<std::ptrdiff_t>(first + count));
            EXPECT_EQ(std::count(outs.back().begin(), outs.back().end(), std::uint16_t{0xFFFF}), 0) << "output left unwritten";
          }
          EXPECT_EQ(outs[0], outs[1]) << "the staged (aligned Y) and the paired (4-byte aligned Y) epilogues differ";
        }
      }
    }
  }
}

// The persistent TMA kernel (each CTA takes many tiles from a counter, the epilogue handed to other
// warps) must store the bits of the one-CTA-per-tile TMA kernel: gate/up with a token list and the
// weighted down projection, grouped with empty and 1-token experts, 17 row tiles (the one-CTA kernel
// pads its last cluster of two), bf16 and fp16, a bad token index (NaN row), nothing written past the
// used slots; again from a CUDA graph, replayed twice (the counter is zeroed by the graph itself).
TEST(SsmmGpu, PersistentKernelStoresTheBitsOfOneCtaPerTile) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  if (!on_hopper()) GTEST_SKIP() << "the persistent kernel needs a Hopper GPU";
  const std::vector<std::int64_t> sizes = {300, 0, 129, 700, 1, 0, 64};
  std::vector<std::int32_t> offsets = {0};
  for (auto n : sizes) offsets.push_back(offsets.back() + static_cast<std::int32_t>(n));
  const std::int64_t used = offsets.back(), S = used + 3, T = 500;
  auto idx = random_token_list(S, T, 91);
  idx[5] = static_cast<std::int32_t>(T + 7);  // outside X: that slot's row must come out NaN in both kernels
  std::vector<float> slot_weight(static_cast<std::size_t>(S));
  for (std::size_t j = 0; j < slot_weight.size(); ++j) slot_weight[j] = 0.5f + 0.01f * static_cast<float>(j % 37);
  DeviceBuffer didx(idx), doffsets(offsets), dweight(slot_weight);
  for (const DType dtype : {DType::bf16, DType::f16}) {
    for (const gpu::SsmmEpilogue epilogue : {gpu::SsmmEpilogue::gate_up, gpu::SsmmEpilogue::down_weighted}) {
      const bool gate_up = epilogue == gpu::SsmmEpilogue::gate_up;
      const Problem prob{4352, gate_up ? 2048 : 1408, "1:2:128"};
      SCOPED_TRACE(seed_trace(92) + ", " + label(prob) + ", " + gpu::epilogue_name(epilogue) + ", " + dtype_name(dtype));
      std::vector<const PackedMatrix*> gates, ups;
      for (std::size_t e = 0; e < sizes.size(); ++e) {
        gates.push_back(&cached_weight(prob, dtype, false, 92 + 2 * e));
        ups.push_back(&cached_weight(prob, dtype, false, 93 + 2 * e));
      }
      const gpu::DevicePackedMatrix d_gates(gates), d_ups(ups);
      const std::int64_t x_rows = gate_up ? T : S;  // down: X rows are the slots
      const Matrix x = random_normal_matrix(dtype, x_rows, prob.K, 94);
      DeviceBuffer dx(x.data(), x.bytes()), dy(static_cast<std::size_t>(S * prob.M) * 2);
      gpu::SsmmArgs args;
      args.epilogue = epilogue;
      args.weight = d_gates.view();
      if (gate_up) args.up = d_ups.view();
      args.x = dx.get();
      args.x_dtype = args.y_dtype = dtype;
      args.num_x_rows = x_rows;
      args.token_idx = gate_up ? didx.as<std::int32_t>() : nullptr;
      args.num_tokens = S;
      args.slot_weight = dweight.as<float>();
      args.y = dy.get();
      args.expert_offsets = doffsets.as<std::int32_t>();
      ASSERT_EQ(gpu::can_implement(args, gpu::SsmmPath::sm90), "");
      kernels::ssmm_sm90_set_persistent(1);  // its workspace (the unit counter on top) serves both kernels
      DeviceBuffer workspace(gpu::ssmm_workspace_bytes(args, gpu::SsmmPath::sm90));
      args.workspace = workspace.get();
      args.workspace_bytes = workspace.bytes();
      std::vector<std::vector<std::uint16_t>> outs;
      for (const int persistent : {1, 0}) {
        kernels::ssmm_sm90_set_persistent(persistent);
        ASSERT_EQ(kernels::ssmm_sm90_takes_persistent(args), persistent == 1) << "the case does not reach the kernel under test";
        dy.poison();
        gpu::ssmm(args, nullptr, gpu::SsmmPath::sm90);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        outs.push_back(dy.to_host<std::uint16_t>());
      }
      kernels::ssmm_sm90_set_persistent(1);
      ASSERT_NO_FATAL_FAILURE(expect_graph_replays_store(args, dy, outs[0]));
      kernels::ssmm_sm90_set_persistent(-1);
      const auto& out = outs[0];
      const std::size_t used_elements = static_cast<std::size_t>(used * prob.M);
      EXPECT_EQ(std::count(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(used_elements), std::uint16_t{0xFFFF}), 0)
          << "output left unwritten";
      EXPECT_TRUE(std::all_of(out.begin() + static_cast<std::ptrdiff_t>(used_elements), out.end(),
                              [](std::uint16_t v) { return v == 0xFFFF; }))
          << "slots past expert_offsets[E] were written";
      if (gate_up) {
        const float bad = half_to_float(dtype, out[static_cast<std::size_t>(5 * prob.M)]);
        EXPECT_TRUE(std::isnan(bad)) << "the bad token's row is not NaN";
      }
      EXPECT_EQ(outs[0], outs[1]) << "the persistent and the one-CTA-per-tile kernels differ";
    }
  }
}

TEST(SsmmGpu, OutOfRangeTokenIndexGivesNaNRowNotGarbage) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Problem prob{128, 128, "1:2:128"};
  const gpu::DevicePackedMatrix dw(cached_weight(prob, DType::bf16, false, 8));
  const Matrix x = random_normal_matrix(DType::bf16, 4, 128, 9);
  DeviceBuffer dx(x.data(), x.bytes());
  const std::vector<std::int32_t> idx = {0, 4, -1, 3};  // 4 and -1 are outside X's rows
  DeviceBuffer didx(idx);
  DeviceBuffer dy(4 * 128 * sizeof(float));
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = 4;
  args.token_idx = didx.as<std::int32_t>();
  args.num_tokens = 4;
  args.y = dy.get();
  args.y_dtype = DType::f32;
  for (gpu::SsmmPath path : paths_for(args)) {
    SCOPED_TRACE(std::string("path ") + gpu::path_name(path));
    // NaN poison: the valid rows must be written (finite); finite poison: the bad rows must be NaN.
    dy.poison();
    gpu::ssmm(args, nullptr, path);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto y = dy.to_host<float>();
    dy.poison_finite();
    gpu::ssmm(args, nullptr, path);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto y_bad = dy.to_host<float>();
    for (int r = 0; r < 128; ++r) {
      EXPECT_TRUE(std::isfinite(y[static_cast<std::size_t>(r)]));
      EXPECT_TRUE(std::isnan(y_bad[static_cast<std::size_t>(128 + r)]));
      EXPECT_TRUE(std::isnan(y_bad[static_cast<std::size_t>(256 + r)]));
      EXPECT_TRUE(std::isfinite(y[static_cast<std::size_t>(384 + r)]));
    }
  }
}

// The stream-K kernel with bad token indices: their rows come out NaN (here every tile's parts go
// through the reduce: 9 tiles of 45 granules over 132 CTAs), the valid rows finite and equal to the
// classic kernel's within rounding; from a CUDA graph replayed twice as well (no state between calls).
TEST(SsmmGpu, StreamKOutOfRangeTokenGivesNaNRow) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  if (!on_hopper()) GTEST_SKIP() << "the stream-K kernel needs a Hopper GPU";
  const Problem prob{2304, 5760, "1:2:128"};
  const PackedMatrix& w = cached_weight(prob, DType::bf16, false, 61);
  const gpu::DevicePackedMatrix dw(w);
  const std::int64_t T = 6;
  const Matrix x = random_normal_matrix(DType::bf16, T, prob.K, 62);
  DeviceBuffer dx(x.data(), x.bytes());
  const std::vector<std::int32_t> idx = {0, 9, -1, 3, 5};  // 9 and -1 are outside X's rows
  DeviceBuffer didx(idx);
  const std::int64_t L = static_cast<std::int64_t>(idx.size());
  DeviceBuffer dy(static_cast<std::size_t>(L * prob.M) * 2);
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = T;
  args.token_idx = didx.as<std::int32_t>();
  args.num_tokens = L;
  args.y = dy.get();
  std::vector<std::vector<std::uint16_t>> outs;
  const DecodeOverride decode_off(0);  // both runs compare the wgmma kernels
  for (const int stream_k : {0, 1}) {
    kernels::ssmm_sm90_set_stream_k(stream_k);
    DeviceBuffer workspace(gpu::ssmm_workspace_bytes(args, gpu::SsmmPath::sm90));
    args.workspace = workspace.get();
    args.workspace_bytes = workspace.bytes();
    ASSERT_EQ(kernels::ssmm_sm90_takes_stream_k(args), stream_k == 1);
    dy.poison();
    gpu::ssmm(args, nullptr, gpu::SsmmPath::sm90);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    outs.push_back(dy.to_host<std::uint16_t>());
    if (stream_k == 1) ASSERT_NO_FATAL_FAILURE(expect_graph_replays_store(args, dy, outs.back()));
  }
  kernels::ssmm_sm90_set_stream_k(-1);
  for (std::int64_t j = 0; j < L; ++j) {
    const bool bad = idx[static_cast<std::size_t>(j)] < 0 || idx[static_cast<std::size_t>(j)] >= T;
    for (std::int64_t r = 0; r < prob.M; ++r) {
      const auto at = static_cast<std::size_t>(j * prob.M + r);
      const float classic = half_to_float(DType::bf16, outs[0][at]), streamed = half_to_float(DType::bf16, outs[1][at]);
      if (bad) {
        ASSERT_TRUE(std::isnan(streamed)) << "slot " << j << " (bad index), row " << r;
      } else {
        ASSERT_TRUE(std::isfinite(streamed)) << "slot " << j << ", row " << r;
        ASSERT_LE(std::fabs(streamed - classic), std::ldexp(std::fabs(classic), -7) + 1e-3f) << "slot " << j << ", row " << r;
      }
    }
  }
}

// Slots without a valid token (past L, or a bad index) may hold anything in B (the sm90 cp.async
// producer copies X's row 0 for a bad index and leaves the rows past L stale): whatever they hold
// must stay in those slots. Row 0 is NaN here and no
// valid slot names it; the valid slots must equal, bit for bit, the same call with row 0 finite.
// 1408 rows leave the last row tile half full (the producer skips the missing A rows); K = 1024 has
// enough k-tiles for the sm90 path to split K (6 CTAs), so the reduce sees the slots too.
TEST(SsmmGpu, NonFiniteRowZeroStaysOutOfOtherSlots) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  constexpr std::int64_t K = 1024;
  const Problem prob{1408, K, "1:2:128"};
  const gpu::DevicePackedMatrix dw(cached_weight(prob, DType::bf16, false, 21));
  Matrix x = random_normal_matrix(DType::bf16, 8, K, 22);
  const std::vector<std::int32_t> idx = {3, 5, 9, 1, 7};  // 9 is outside X's 8 rows; the tile's other slots are empty
  DeviceBuffer didx(idx);
  Matrix x_nan = x;
  for (std::int64_t c = 0; c < K; ++c) x_nan.set(0, c, std::numeric_limits<float>::quiet_NaN());
  DeviceBuffer dx(x.data(), x.bytes()), dx_nan(x_nan.data(), x_nan.bytes());
  const std::size_t y_count = idx.size() * 1408;
  DeviceBuffer dy(y_count * sizeof(float));
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = 8;
  args.token_idx = didx.as<std::int32_t>();
  args.num_tokens = static_cast<std::int64_t>(idx.size());
  args.y = dy.get();
  args.y_dtype = DType::f32;
  // The finite run starts from NaN poison (its valid slots must be written), the NaN run from a
  // finite fill (its bad-index slot must come out NaN).
  auto run = [&](const void* x_device, gpu::SsmmPath path, bool split, bool finite_poison) {
    args.x = x_device;
    args.workspace = nullptr;
    args.workspace_bytes = split ? gpu::ssmm_workspace_bytes(args, path) : 0;
    if (split && path == gpu::SsmmPath::sm90 && !kernels::ssmm_sm90_takes_decode(args))
      EXPECT_GT(args.workspace_bytes, 0u) << "the sm90 wgmma kernel no longer splits this call";
    DeviceBuffer workspace(std::max<std::size_t>(args.workspace_bytes, 16));
    args.workspace = split ? workspace.get() : nullptr;
    if (finite_poison) {
      dy.poison_finite();
    } else {
      dy.poison();
    }
    gpu::ssmm(args, nullptr, path);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return dy.to_host<float>();
  };
  for (gpu::SsmmPath path : paths_for(args))
    for (const int variant : {0, 1, 2, 3}) {  // bit 0: with workspace; bit 1: sm90 with the decode kernel off
      const bool split = variant & 1, wgmma = variant & 2;
      if (wgmma && path != gpu::SsmmPath::sm90) continue;
      const DecodeOverride decode(wgmma ? 0 : -1);
      SCOPED_TRACE(std::string("path ") + gpu::path_name(path) + (wgmma ? " (wgmma kernel)" : "") +
                   (split ? ", with workspace" : ", no workspace"));
      const std::vector<float> finite = run(dx.get(), path, split, false);
      const std::vector<float> with_nan = run(dx_nan.get(), path, split, true);
      for (std::size_t slot = 0; slot < idx.size(); ++slot)
        for (std::size_t r = 0; r < 1408; ++r) {
          const std::size_t at = slot * 1408 + r;
          if (idx[slot] >= 8) {
            EXPECT_TRUE(std::isnan(with_nan[at])) << "bad index, slot " << slot << " row " << r;
            continue;
          }
          ASSERT_TRUE(std::isfinite(with_nan[at])) << "slot " << slot << " row " << r << " (seeds 21, 22)";
          ASSERT_EQ(std::memcmp(&finite[at], &with_nan[at], sizeof(float)), 0) << "slot " << slot << " row " << r;
        }
    }
}

// The decode kernel's split is bounded by the clusters the device holds at once (a cluster sits within
// one GPC): the table the plan reads must be the device's, and the split grids it plans one wave.
TEST(SsmmGpu, DecodeSplitGridsAreOneWave) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  if (!on_hopper()) GTEST_SKIP() << "the decode kernel runs on sm_90a only";
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  const gpu::ResidentClusters resident = kernels::ssmm_decode_resident_clusters();
  for (int s = 1; s <= gpu::kDecodeMaxSplits; ++s) {
    std::printf("decode kernel: %d clusters of %d at once (%d CTAs of %d at two per SM)\n", resident[s], s, resident[s] * s, 2 * sms);
    EXPECT_GE(resident[s], 1) << s;
    EXPECT_LE(resident[s] * s, 2 * sms) << s;
  }
  EXPECT_EQ(resident[1], 2 * sms) << "two CTAs per SM";
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{3072, 12288}, {4096, 14336}, {1408, 2048}, {2304, 5760}};
  for (const auto& [M, K] : shapes)
    for (const std::int64_t L : {1, 16}) {
      gpu::SsmmArgs args;  // planned only: nothing is launched or read
      args.weight.pattern = SparsityPattern::parse("1:2:128");
      args.weight.rows = M;
      args.weight.cols = K;
      args.num_x_rows = L;
      args.num_tokens = L;
      const int splits = kernels::ssmm_sm90_decode_splits(args);
      if (splits <= 1) continue;
      const int tile_tokens = kernels::ssmm_sm90_decode_tile_tokens(args);
      const std::int64_t clusters = (M / 2 / 32) * ((L + tile_tokens - 1) / tile_tokens);
      EXPECT_LE(clusters, resident[splits]) << M << "x" << K << " @ " << L << ": " << splits << " splits";
    }
}

// The plan's table of resident clusters is queried at the first decode call of a process (ctest runs
// each test in a process of its own): that call may be inside a stream capture. Captured first, a
// split decode call must replay to what the same call stores eagerly.
TEST(SsmmGpu, DecodeSplitCapturedBeforeAnyEagerCall) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  if (!on_hopper()) GTEST_SKIP() << "the decode kernel runs on sm_90a only";
  const Problem prob{1408, 2048, "1:2:128"};  // 22 row tiles of 16 k-tiles: two splits at L = 1
  const gpu::DevicePackedMatrix dw(cached_weight(prob, DType::bf16, false, 71));
  const Matrix x = random_normal_matrix(DType::bf16, 1, prob.K, 72);
  DeviceBuffer dx(x.data(), x.bytes()), dy(static_cast<std::size_t>(prob.M) * 2);
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = 1;
  args.num_tokens = 1;
  args.y = dy.get();
  std::vector<std::vector<std::uint16_t>> replayed;  // captured first: the process's first sm90 call
  ASSERT_NO_FATAL_FAILURE(replay_graph(args, dy, 1, replayed));
  dy.poison();
  gpu::ssmm(args, nullptr, gpu::SsmmPath::sm90);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(replayed.at(0), dy.to_host<std::uint16_t>()) << "the captured call differs from the eager one";
  EXPECT_GT(kernels::ssmm_sm90_decode_splits(args), 1) << "the call no longer runs split on the decode kernel";
}

TEST(SsmmGpu, RejectsBadArguments) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const gpu::DevicePackedMatrix dw(cached_weight(Problem{128, 128, "1:2:128"}, DType::bf16, false, 8));
  DeviceBuffer dx(64 * 128 * 2), dy(64 * 128 * 4);
  gpu::SsmmArgs args;
  args.weight = dw.view();
  args.x = dx.get();
  args.num_x_rows = 64;
  args.num_tokens = 64;
  args.y = dy.get();
  args.x_dtype = DType::f16;  // weights are bf16
  EXPECT_THROW(gpu::ssmm(args), Error);
  args.x_dtype = DType::bf16;
  args.num_tokens = 32;  // no token list: must read all 64 rows
  EXPECT_THROW(gpu::ssmm(args), Error);
  args.num_tokens = 64;
  args.epilogue = gpu::SsmmEpilogue::gate_up;  // no up matrix
  EXPECT_THROW(gpu::ssmm(args), Error);
  args.epilogue = gpu::SsmmEpilogue::down_weighted;  // no slot weights
  EXPECT_THROW(gpu::ssmm(args), Error);
  const gpu::DevicePackedMatrix plain(pack(random_normal_matrix(DType::bf16, 128, 128, 2), SparsityPattern::plain_2_4()));
  args.epilogue = gpu::SsmmEpilogue::gate_up;  // up packed with another pattern than the gate
  args.up = plain.view();
  EXPECT_THROW(gpu::ssmm(args), Error);
  args.up = gpu::PackedMatrixView{};
  const gpu::DevicePackedMatrix unsupported(pack(random_normal_matrix(DType::bf16, 128, 128, 1), SparsityPattern::parse("2:4:64")));
  args.epilogue = gpu::SsmmEpilogue::plain;
  args.weight = unsupported.view();
  EXPECT_THROW(gpu::ssmm(args), Error);
}


// --- grouped launch: all experts of a layer in one call -----------------------------------------------

struct GroupedCase {
  gpu::SsmmEpilogue epilogue;
  bool integers;                     // exact tier (plain, fp32 output) or realistic tier
  Problem prob;
  std::vector<std::int64_t> sizes;   // slots per expert; the call's capacity adds 5 unused slots
  bool list;                         // token list (routed) or X rows = slots (the down projection)
  bool stream_k = false;             // the sm90 path must also take the stream-K kernel (decode sizes)
};

class SsmmGrouped : public ::testing::TestWithParam<GroupedCase> {};

// Expert e's slots must equal the single-matrix reference on its own token list; slots past the last
// expert's must stay untouched (poison), whatever the path and the split-K choice.
TEST_P(SsmmGrouped, EveryExpertMatchesItsOwnProduct) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const GroupedCase gc = GetParam();
  const int E = static_cast<int>(gc.sizes.size());
  const std::uint64_t seed = 71 + static_cast<std::uint64_t>(gc.prob.M + E);
  SCOPED_TRACE(seed_trace(seed) + ", " + label(gc.prob) + ", " + gpu::epilogue_name(gc.epilogue));
  const DType dtype = DType::bf16;
  const bool gate_up = gc.epilogue == gpu::SsmmEpilogue::gate_up;
  std::vector<const PackedMatrix*> gates, ups;
  for (int e = 0; e < E; ++e) {
    gates.push_back(&cached_weight(gc.prob, dtype, gc.integers, seed + 2 * e));
    ups.push_back(&cached_weight(gc.prob, dtype, gc.integers, seed + 2 * e + 1));
  }
  const gpu::DevicePackedMatrix d_gates(gates), d_ups(ups);
  std::vector<std::int32_t> offsets = {0};
  for (auto n : gc.sizes) offsets.push_back(offsets.back() + static_cast<std::int32_t>(n));
  const std::int64_t used = offsets.back(), S = used + 5;
  const std::int64_t T = gc.list ? 97 : S;
  const Matrix x = gc.integers ? random_int_matrix(dtype, T, gc.prob.K, seed + 100)
                               : random_normal_matrix(dtype, T, gc.prob.K, seed + 100);
  const auto idx = random_token_list(S, T, seed + 101);
  std::vector<float> slot_weight(static_cast<std::size_t>(S));
  for (std::size_t j = 0; j < slot_weight.size(); ++j) slot_weight[j] = 0.25f + 0.01f * static_cast<float>(j % 50);
  DeviceBuffer dx(x.data(), x.bytes()), didx(idx), doffsets(offsets), dweight(slot_weight);
  const DType y_dtype = gc.integers ? DType::f32 : dtype;
  DeviceBuffer dy(static_cast<std::size_t>(S * gc.prob.M) * dtype_size(y_dtype));
  gpu::SsmmArgs args;
  args.epilogue = gc.epilogue;
  args.weight = d_gates.view();
  if (gate_up) args.up = d_ups.view();
  args.x = dx.get();
  args.num_x_rows = T;
  args.token_idx = gc.list ? didx.as<std::int32_t>() : nullptr;
  args.num_tokens = S;
  args.slot_weight = dweight.as<float>();
  args.y = dy.get();
  args.y_dtype = y_dtype;
  args.expert_offsets = doffsets.as<std::int32_t>();

  // Reference per expert on its slots (all of them: the experts are small).
  Matrix ref(y_dtype == DType::f32 ? DType::f32 : dtype, used, gc.prob.M);
  std::vector<std::int64_t> slots;
  for (int e = 0; e < E; ++e) {
    std::vector<std::int32_t> tokens;
    std::vector<float> weights;
    for (std::int32_t j = offsets[e]; j < offsets[e + 1]; ++j) {
      tokens.push_back(gc.list ? idx[static_cast<std::size_t>(j)] : j);
      weights.push_back(slot_weight[static_cast<std::size_t>(j)]);
    }
    if (tokens.empty()) continue;
    Matrix part;
    if (gate_up) {
      part = reference::ssmm_gate_up(*gates[e], *ups[e], x, Tokens::list(tokens), y_dtype);
    } else if (gc.epilogue == gpu::SsmmEpilogue::down_weighted) {
      Matrix rows(dtype, static_cast<std::int64_t>(tokens.size()), gc.prob.K);
      for (std::size_t r = 0; r < tokens.size(); ++r)
        for (std::int64_t c = 0; c < gc.prob.K; ++c) rows.set(static_cast<std::int64_t>(r), c, x.get(tokens[r], c));
      part = reference::ssmm_down_weighted(*gates[e], rows, weights, y_dtype);
    } else {
      part = reference::ssmm(*gates[e], x, Tokens::list(tokens), y_dtype);
    }
    for (std::int64_t r = 0; r < part.rows(); ++r)
      for (std::int64_t c = 0; c < gc.prob.M; ++c) ref.set(offsets[e] + r, c, part.get(r, c));
  }
  for (std::int64_t j = 0; j < used; ++j) slots.push_back(j);

  for (gpu::SsmmPath path : paths_for(args)) {
    const std::size_t workspace_bytes = gpu::ssmm_workspace_bytes(args, path);
    DeviceBuffer workspace(workspace_bytes);
    for (bool split : {false, true}) {
      if (split && workspace_bytes == 0) continue;
      SCOPED_TRACE(std::string("path ") + gpu::path_name(path) + (split ? ", split-K" : ""));
      args.workspace = split ? workspace.get() : nullptr;
      args.workspace_bytes = split ? workspace_bytes : 0;
      dy.poison();
      gpu::ssmm(args, nullptr, path);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const Check c = compare(dy, y_dtype, gc.prob.M, slots, ref, gc.integers);
      EXPECT_EQ(c.bad + c.non_finite, 0);
      // The capacity's unused tail is never written.
      const auto bytes = dy.to_host<std::uint8_t>();
      const std::size_t tail_at = static_cast<std::size_t>(used * gc.prob.M) * dtype_size(y_dtype);
      EXPECT_TRUE(std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(tail_at), bytes.end(),
                              [](std::uint8_t b) { return b == 0xFF; }))
          << "slots past expert_offsets[E] were written";
    }
    if (path == gpu::SsmmPath::sm90) {  // the wgmma kernel the decode kernel replaces, and stream-K, where they apply
      const bool decode_default = kernels::ssmm_sm90_takes_decode(args);
      if (gc.stream_k && !gate_up) EXPECT_TRUE(decode_default) << "the case does not reach the decode kernel";
      for (const bool stream_k : {false, true}) {
        if (!stream_k && !decode_default) continue;
        SCOPED_TRACE(stream_k ? "path sm90, stream-K" : "path sm90, wgmma kernel");
        const Sm90Alternative alternative(stream_k);
        DeviceBuffer alt_workspace(gpu::ssmm_workspace_bytes(args, path));
        args.workspace = alt_workspace.get();
        args.workspace_bytes = alt_workspace.bytes();
        const bool takes = !stream_k || kernels::ssmm_sm90_takes_stream_k(args);
        if (stream_k && gc.stream_k) EXPECT_TRUE(takes) << "the case does not reach the stream-K kernel";
        if (!takes) continue;
        dy.poison();
        gpu::ssmm(args, nullptr, path);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const Check c = compare(dy, y_dtype, gc.prob.M, slots, ref, gc.integers);
        EXPECT_EQ(c.bad + c.non_finite, 0);
        const auto bytes = dy.to_host<std::uint8_t>();
        const std::size_t tail_at = static_cast<std::size_t>(used * gc.prob.M) * dtype_size(y_dtype);
        EXPECT_TRUE(std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(tail_at), bytes.end(),
                                [](std::uint8_t b) { return b == 0xFF; }))
            << "slots past expert_offsets[E] were written";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layers, SsmmGrouped,
    ::testing::Values(
        // Exact: uneven experts with empty ones in between, 1-token experts, a tile-crossing expert.
        GroupedCase{gpu::SsmmEpilogue::plain, true, {1408, 2048, "1:2:128"}, {3, 0, 70, 1, 0, 33}, true},
        GroupedCase{gpu::SsmmEpilogue::plain, true, {300, 192, "2:4"}, {0, 0, 129, 0}, true},
        // Decode-like: two busy experts of one token each (split-K territory).
        GroupedCase{gpu::SsmmEpilogue::plain, true, {1024, 4096, "1:2:128"}, {0, 1, 0, 1}, true},
        GroupedCase{gpu::SsmmEpilogue::gate_up, false, {1408, 2048, "1:2:128"}, {5, 0, 200, 1, 17, 0, 0, 64}, true},
        GroupedCase{gpu::SsmmEpilogue::down_weighted, false, {2048, 1408, "1:2:128"}, {5, 0, 200, 1, 17, 0, 0, 64}, false},
        GroupedCase{gpu::SsmmEpilogue::down_weighted, false, {1024, 4096, "1:2:128"}, {1, 0, 0, 1}, false},
        // Decode sizes, which must also take the stream-K kernel: 8 experts, 7 routed slots, empty experts
        // in between (the kernel walks the tile bound, 64 / 128 tiles, and skips the 32 / 64 past the real
        // count), granules shared between CTAs; 2:4 without selection.
        GroupedCase{gpu::SsmmEpilogue::plain, true, {2048, 4096, "1:2:128"}, {1, 0, 2, 0, 0, 1, 3, 0}, true, true},
        GroupedCase{gpu::SsmmEpilogue::gate_up, false, {2048, 4096, "1:2:128"}, {1, 0, 2, 0, 0, 1, 3, 0}, true, true},
        GroupedCase{gpu::SsmmEpilogue::down_weighted, false, {4096, 2048, "1:2:128"}, {1, 0, 2, 0, 0, 1, 3, 0}, false, true},
        GroupedCase{gpu::SsmmEpilogue::plain, true, {1024, 4096, "2:4"}, {1, 2, 0, 1}, true, true},
        // The decode kernel's 8-slot tiles (from the experts' mean) with an expert crossing tiles, an
        // empty one and 1-slot ones.
        GroupedCase{gpu::SsmmEpilogue::plain, true, {1408, 2048, "1:2:128"}, {12, 1, 0, 3}, true},
        GroupedCase{gpu::SsmmEpilogue::down_weighted, false, {2048, 1408, "1:2:128"}, {9, 1, 0, 4}, false}),
    [](const ::testing::TestParamInfo<GroupedCase>& info) {
      const auto& c = info.param;
      std::string name = std::string(gpu::epilogue_name(c.epilogue)) + "_" + std::to_string(c.prob.M) + "x" +
                         std::to_string(c.prob.K) + "_" + c.prob.pattern + "_E" + std::to_string(c.sizes.size()) + "_" +
                         std::to_string(info.index);
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

// Grouped offsets need not start at slot 0: the slots before expert 0's, like those past the last
// expert's, belong to no expert and must stay untouched, also where K is split (the reduce walks the
// slots, not the tiles) and through every sm90 kernel.
TEST(SsmmGpu, GroupedLeavesSlotsOutsideTheExpertsUntouched) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const Problem prob{1024, 4096, "1:2:128"};
  const std::uint64_t seed = 91;
  SCOPED_TRACE(seed_trace(seed));
  std::vector<const PackedMatrix*> experts;
  for (int e = 0; e < 4; ++e) experts.push_back(&cached_weight(prob, DType::bf16, true, seed + e));
  const gpu::DevicePackedMatrix stack(experts);
  const std::vector<std::int32_t> offsets = {3, 4, 4, 5, 7};  // slots 0-2 and 7-9 belong to no expert
  const std::int64_t S = 10, T = 16;
  const Matrix x = random_int_matrix(DType::bf16, T, prob.K, seed + 10);
  const auto idx = random_token_list(S, T, seed + 11);
  DeviceBuffer dx(x.data(), x.bytes()), didx(idx), doffsets(offsets);
  DeviceBuffer dy(static_cast<std::size_t>(S * prob.M) * sizeof(float));
  gpu::SsmmArgs args;
  args.weight = stack.view();
  args.x = dx.get();
  args.num_x_rows = T;
  args.token_idx = didx.as<std::int32_t>();
  args.num_tokens = S;
  args.y = dy.get();
  args.y_dtype = DType::f32;
  args.expert_offsets = doffsets.as<std::int32_t>();
  std::vector<std::int64_t> slots;
  Matrix ref(DType::f32, offsets.back() - offsets.front(), prob.M);
  for (int e = 0; e < 4; ++e)
    for (std::int32_t j = offsets[e]; j < offsets[e + 1]; ++j) {
      const std::vector<std::int32_t> token = {idx[static_cast<std::size_t>(j)]};
      const Matrix row = reference::ssmm(*experts[e], x, Tokens::list(token), DType::f32);
      for (std::int64_t r = 0; r < prob.M; ++r) ref.set(static_cast<std::int64_t>(slots.size()), r, row.get(0, r));
      slots.push_back(j);
    }
  for (gpu::SsmmPath path : paths_for(args))
    for (const int variant : {0, 1, 2, 3}) {  // bit 0: with workspace (split-K); bit 1: sm90 with the decode kernel off
      const bool split = variant & 1, wgmma = variant & 2;
      if (wgmma && path != gpu::SsmmPath::sm90) continue;
      const DecodeOverride decode(wgmma ? 0 : -1);
      SCOPED_TRACE(std::string("path ") + gpu::path_name(path) + (wgmma ? " (wgmma kernel)" : "") + (split ? ", split-K" : ""));
      const std::size_t workspace_bytes = split ? gpu::ssmm_workspace_bytes(args, path) : 0;
      if (split && path == gpu::SsmmPath::sm90) {
        if (kernels::ssmm_sm90_takes_decode(args)) {
          EXPECT_GT(kernels::ssmm_sm90_decode_splits(args), 1) << "the decode kernel no longer splits K here";
        } else {
          EXPECT_GT(workspace_bytes, 0u) << "the call no longer splits K";
        }
      }
      DeviceBuffer workspace(std::max<std::size_t>(workspace_bytes, 16));
      args.workspace = split ? workspace.get() : nullptr;
      args.workspace_bytes = workspace_bytes;
      dy.poison();
      gpu::ssmm(args, nullptr, path);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const Check c = compare(dy, DType::f32, prob.M, slots, ref, true);
      EXPECT_EQ(c.bad + c.non_finite, 0);
      const auto bytes = dy.to_host<std::uint8_t>();
      const std::size_t row_bytes = static_cast<std::size_t>(prob.M) * sizeof(float);
      EXPECT_TRUE(std::all_of(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(3 * row_bytes), [](std::uint8_t b) { return b == 0xFF; }))
          << "slots before expert_offsets[0] were written";
      EXPECT_TRUE(std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(7 * row_bytes), bytes.end(), [](std::uint8_t b) { return b == 0xFF; }))
          << "slots past expert_offsets[E] were written";
    }
}

TEST(SsmmGpu, GroupedRejectsStackWithoutOffsets) {
  SAMOYEDS_SKIP_WITHOUT_GPU();
  const PackedMatrix& w = cached_weight(Problem{128, 128, "1:2:128"}, DType::bf16, false, 8);
  const gpu::DevicePackedMatrix stack(std::vector<const PackedMatrix*>{&w, &w});
  DeviceBuffer dx(8 * 128 * 2), dy(8 * 128 * 2);
  gpu::SsmmArgs args;
  args.weight = stack.view();
  args.x = dx.get();
  args.num_x_rows = args.num_tokens = 8;
  args.y = dy.get();
  EXPECT_THROW(gpu::ssmm(args), Error);  // a stack needs expert_offsets
  const PackedMatrix other = pack(random_normal_matrix(DType::bf16, 64, 128, 3), SparsityPattern::parse("1:2:128"));
  EXPECT_THROW(gpu::DevicePackedMatrix(std::vector<const PackedMatrix*>{&w, &other}), Error);  // shapes differ
}

}  // namespace
}  // namespace samoyeds
