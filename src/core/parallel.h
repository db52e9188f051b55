// SPDX-License-Identifier: Apache-2.0
// parallel_for: split [0, n) into contiguous chunks over the machine's threads. Each index is
// handled by exactly one thread, so results written per index are deterministic.
#pragma once

#include <cstdint>
#include <functional>

namespace samoyeds::detail {

// Runs body(begin, end) on disjoint ranges covering [0, n). Ranges are at least `grain` long.
// Exceptions thrown by body are rethrown on the calling thread (the first one wins).
void parallel_for(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body);

int num_threads();  // SAMOYEDS_NUM_THREADS if set, else std::thread::hardware_concurrency()

}  // namespace samoyeds::detail
