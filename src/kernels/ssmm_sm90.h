// SPDX-License-Identifier: Apache-2.0
// Host-side hooks of the sm_90a SSMM path for tests (plain C++: no CUDA types).
#pragma once

#include "samoyeds/ssmm.h"

namespace samoyeds::kernels {

// Whether the sm90 path runs `args` (as given, workspace included) through the persistent TMA kernel.
bool ssmm_sm90_takes_persistent(const gpu::SsmmArgs& args);
// Overrides the SAMOYEDS_SSMM_PERSISTENT knob for this process: -1 the knob decides again, 0 / 1 the
// persistent kernel off / on wherever it applies.
void ssmm_sm90_set_persistent(int mode);
// Overrides the SAMOYEDS_SSMM_STREAM_K knob: -1 the knob decides again, 0 / 1 the stream-K kernel off /
// on wherever it applies.
void ssmm_sm90_set_stream_k(int mode);
// Whether the sm90 path runs `args` (as given, workspace included) through the stream-K kernel.
bool ssmm_sm90_takes_stream_k(const gpu::SsmmArgs& args);
// Overrides the SAMOYEDS_SSMM_DECODE knob: -1 the knob decides again, 0 / 1 the decode kernel
// (ssmm_decode.cu) off / on wherever it applies (gpu::plan_decode).
void ssmm_sm90_set_decode(int mode);
// Slots per tile of the decode kernel where the sm90 path runs `args` through it (8 or 16), else 0.
int ssmm_sm90_decode_tile_tokens(const gpu::SsmmArgs& args);
inline bool ssmm_sm90_takes_decode(const gpu::SsmmArgs& args) { return ssmm_sm90_decode_tile_tokens(args) != 0; }
// The CTAs (one cluster) that share each of the decode kernel's tiles for `args`, 0 where it does not take it.
int ssmm_sm90_decode_splits(const gpu::SsmmArgs& args);
// How many clusters of s decode-kernel CTAs the current device holds at once, for s = 1 ..
// gpu::kDecodeMaxSplits (index s; single CTAs at 1), as the kernels launch now: the bound of its split
// (gpu::plan_decode_split). Queried once per device.
gpu::ResidentClusters ssmm_decode_resident_clusters();

}  // namespace samoyeds::kernels
