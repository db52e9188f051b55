// SPDX-License-Identifier: Apache-2.0
// Host-side argument checks of the GPU SSMM (no GPU needed: pointers are never dereferenced here).
#include <gtest/gtest.h>

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
  EXPECT_EQ(gpu::can_implement(valid_args(), gpu::SsmmPath::sm90), "");
  a = valid_args();
  a.weight.pattern = SparsityPattern::parse("1:2:64");
  EXPECT_EQ(gpu::can_implement(a, gpu::SsmmPath::sm80), "");
  EXPECT_NE(gpu::can_implement(a, gpu::SsmmPath::sm90).find("multiple of 128"), std::string::npos);
}

}  // namespace
}  // namespace samoyeds
