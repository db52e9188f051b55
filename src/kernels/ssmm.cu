// SPDX-License-Identifier: Apache-2.0
// gpu::ssmm: validates the call, picks the path (sm90 wgmma on Hopper when it can run the call, else
// the portable sm80 path) and launches. The kernels live in ssmm_sm80.cu and ssmm_sm90.cu.
#include <mutex>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/ssmm_common.cuh"

namespace samoyeds::kernels {

Params make_params(const gpu::SsmmArgs& a) {
  const PackedGeometry geometry = packed_geometry(a.weight.pattern, a.weight.rows, a.weight.cols);
  Params p{};
  const gpu::PackedMatrixView* mats[3] = {&a.weight, &a.up, &a.gate_linear};
  for (int m = 0; m < 3; ++m) {
    p.values[m] = mats[m]->values;
    p.metadata[m] = mats[m]->metadata;
    p.row_select[m] = mats[m]->row_select;
  }
  p.row_select_on = a.weight.pattern.has_row_selection();
  p.rows = a.weight.rows;
  p.compressed_rows_padded = geometry.compressed_rows_padded;
  p.K = a.weight.cols;
  p.K_padded = geometry.cols_padded;
  p.num_segments = static_cast<int>(geometry.num_segments);
  p.v = p.row_select_on ? a.weight.pattern.v : 0;
  p.x = static_cast<const std::uint16_t*>(a.x);
  p.num_x_rows = a.num_x_rows;
  p.token_idx = a.token_idx;
  p.L = a.num_tokens;
  p.slot_weight = a.slot_weight;
  p.y = a.y;
  p.y_f32 = a.y_dtype == DType::f32;
  p.splits = 1;     // the sm90 launcher plans split-K
  p.tile_band = 1;  // and the tile order
  p.a_by_tma = 0;   // and how A is copied
  p.expert_offsets = a.expert_offsets;
  p.num_experts = a.weight.num_stacked;
  p.values_stride = geometry.num_values();
  p.metadata_stride = geometry.num_metadata_words();
  p.select_stride = geometry.num_select_words();
  return p;
}

}  // namespace samoyeds::kernels

namespace samoyeds::gpu {

namespace {
bool current_device_is_hopper() {
  static std::once_flag once;
  static std::vector<int> major_of_device;
  std::call_once(once, [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    for (int d = 0; d < count; ++d) {
      int major = 0;
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d);
      major_of_device.push_back(major);
    }
  });
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device >= static_cast<int>(major_of_device.size())) return false;
  return major_of_device[static_cast<std::size_t>(device)] == 9;
}
}  // namespace

SsmmPath resolve_path(SsmmPath path) {
  if (path != SsmmPath::automatic) return path;
  return current_device_is_hopper() ? SsmmPath::sm90 : SsmmPath::sm80;
}

namespace {
// `automatic` falls back to the portable path for patterns the sm90 kernel does not take (V not a
// multiple of its 128-column k-tile; can_implement says the same). It looks at the pattern only, so
// workspace queries work before any buffer exists.
SsmmPath choose_path(const SsmmArgs& args, SsmmPath path) {
  const SsmmPath resolved = resolve_path(path);
  const SparsityPattern& pattern = args.weight.pattern;
  const bool sm90_takes = !pattern.has_row_selection() || pattern.v % 128 == 0;
  if (path == SsmmPath::automatic && resolved == SsmmPath::sm90 && !sm90_takes)
    return SsmmPath::sm80;
  return resolved;
}
}  // namespace

std::size_t ssmm_workspace_bytes(const SsmmArgs& args, SsmmPath path) {
  if (choose_path(args, path) != SsmmPath::sm90 || args.num_tokens == 0) return 0;
  return kernels::ssmm_sm90_workspace_bytes(args);
}

void ssmm(const SsmmArgs& args, void* stream, SsmmPath path) {
  const SsmmPath resolved = choose_path(args, path);
  if (std::string reason = can_implement(args, resolved); !reason.empty())
    SAMOYEDS_FAIL("ssmm (", epilogue_name(args.epilogue), ", path ", path_name(resolved), "): ", reason);
  SAMOYEDS_CHECK(resolved != SsmmPath::sm90 || current_device_is_hopper(),
                 "ssmm: the sm90 path needs an sm_90 GPU (H100/H200); use SsmmPath::sm80 or automatic");
  if (args.num_tokens == 0) return;
  const kernels::Params p = kernels::make_params(args);
  if (resolved == SsmmPath::sm90) {
    kernels::ssmm_sm90(args, p, static_cast<cudaStream_t>(stream));
  } else {
    kernels::ssmm_sm80(args, p, static_cast<cudaStream_t>(stream));
  }
}

}  // namespace samoyeds::gpu
