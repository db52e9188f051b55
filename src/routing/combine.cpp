// SPDX-License-Identifier: Apache-2.0
// The deterministic combine: each token gathers its own slot rows in rank order (a gather, not a
// scatter), so there are no atomics and the fp32 sum order is fixed; results are bitwise reproducible
// for any thread count, and the GPU twin can match them bit for bit.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/parallel.h"
#include "samoyeds/error.h"
#include "samoyeds/routing.h"

namespace samoyeds {

Matrix combine(const Matrix& slot_rows, const Routing& routing, const Matrix* shared, DType out_dtype) {
  routing.validate();
  SAMOYEDS_CHECK(slot_rows.rows() == routing.num_slots(), "combine: slot_rows has ", slot_rows.rows(),
                 " rows; it must have one per slot (num_slots = ", routing.num_slots(), ")");
  const std::int64_t num_tokens = routing.num_tokens;
  const std::int64_t hidden = slot_rows.cols();
  if (shared != nullptr) {
    SAMOYEDS_CHECK(shared->rows() == num_tokens && shared->cols() == hidden, "combine: shared is [", shared->rows(),
                   ", ", shared->cols(), "]; it must be [T, H] = [", num_tokens, ", ", hidden, "]");
  }

  Matrix out(out_dtype, num_tokens, hidden);  // [T, H]
  const int top_k = routing.top_k;
  detail::parallel_for(num_tokens, std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(1, hidden * top_k)),
                       [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> acc(static_cast<std::size_t>(hidden));  // [H] fp32
    std::vector<float> row(static_cast<std::size_t>(hidden));  // [H] fp32
    for (std::int64_t t = begin; t < end; ++t) {
      // The accumulator starts at +0.0f (so a dropped token gives +0, and -0 inputs give +0).
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = 0; j < top_k; ++j) {
        const std::int32_t s = routing.token_slot[static_cast<std::size_t>(t * top_k + j)];
        if (s < 0) continue;
        slot_rows.row_to_float(s, row.data());
        for (std::int64_t h = 0; h < hidden; ++h) acc[h] += row[h];
      }
      if (shared != nullptr) {
        shared->row_to_float(t, row.data());
        for (std::int64_t h = 0; h < hidden; ++h) acc[h] += row[h];
      }
      if (out_dtype == DType::f32) {
        std::copy(acc.begin(), acc.end(), out.float_data() + t * hidden);
      } else {
        std::uint16_t* dst = out.half_data() + t * hidden;
        for (std::int64_t h = 0; h < hidden; ++h) dst[h] = float_to_half(out_dtype, acc[h]);
      }
    }
  });
  return out;
}

}  // namespace samoyeds
