// SPDX-License-Identifier: Apache-2.0
// Prefill attention through cuDNN's fused scaled-dot-product-attention graph (cudnn-frontend, header
// only; libcudnn.so.9 is opened at run time, so a machine without cuDNN runs our kernel instead).
// attention() (attention.h) calls it first for the passes it fits; docs/kernels/attention.md v3 has
// why and what it measured.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "kernels/attention.h"

namespace samoyeds::kernels {

// Which attention runs a pass: SAMOYEDS_ATTENTION = auto (default: cuDNN where it fits, else ours),
// ours, or cudnn (cuDNN or an error saying why not). Read once per process.
enum class AttentionBackend { automatic, ours, cudnn };
AttentionBackend attention_backend();

// One line for benchmarks and logs: which attention prefill passes get, and why ("cuDNN 91400 for
// prefill passes of >= 64 tokens", or "ours (cuDNN: <reason>)"). Loads cuDNN if that was not tried yet.
std::string attention_backend_summary();

// Fewest query tokens per sequence for which `auto` takes cuDNN: below one 64-row tile per sequence
// our kernel (and its split-KV decode path) has no tile to lose.
inline constexpr int kCudnnMinQueryTokens = 64;

// Whether cuDNN can take this pass: cuDNN built in and loadable, a host-known cached length shared by
// every sequence (args.cached_len >= 0), no sliding window, bf16/fp16 and head_dim 64 or 128. If
// not, `reason` says why. Does not build the graph.
bool cudnn_attention_fits(const AttentionArgs& args, std::string* reason);

// Runs the pass on `stream` through the cached cuDNN graph of its shape (built on first use, which
// takes the graph build's time: do not call it first inside a stream capture). Returns false, with
// the output untouched and `reason` set, when the installed cuDNN has no engine for the shape.
bool cudnn_attention(const AttentionArgs& args, cudaStream_t stream, std::string* reason);

}  // namespace samoyeds::kernels
