// SPDX-License-Identifier: Apache-2.0
// `samoyeds bench peak`: the rate at which this GPU retires warp-level sparse MMAs
// (mma.sp.m16n8k32, the instruction of the portable sm_80 SSMM path) with every operand in
// registers: the ceiling that path can approach, to set its measured speed against. On sm_90 also
// the Hopper path's instruction, wgmma.mma_async.sp from shared memory, per N and issue pattern
// (pipelined, drained per k-tile, drained with the running-total update), and that loop fed by a ring of
// bulk-copied stages, with A from shared memory or from registers (bench_peak_ring.cu).
#pragma once

#include <string>

#include "samoyeds/dtype.h"

namespace samoyeds::bench {

struct PeakBenchOptions {
  DType dtype = DType::bf16;
  int reps = 20;
  std::string out_path;  // JSON Lines appended here ("" = none)
};

// Returns 0 when the MMAs produced the exact expected sums (then the rate is printed), else 1.
int run_peak_bench(const PeakBenchOptions& options);

// The ring cases (sm_90 only; bench_peak_ring.cu); same return convention.
int run_wgmma_ring_peaks(const PeakBenchOptions& options, int sms, const std::string& device_label, const std::string& run_commit,
                         const std::string& date);

}  // namespace samoyeds::bench
