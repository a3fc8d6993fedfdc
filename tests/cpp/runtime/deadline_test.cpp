// Tests runtime/deadline.h: never, after, expiry, poll timeouts with a cap, the earlier of two.
#include "runtime/deadline.h"

#include <gtest/gtest.h>

#include <cmath>

namespace pi {
namespace {

TEST(Deadline, NeverExpiresAndWaitsForeverOrUntilTheCap) {
  Deadline never = Deadline::never();
  EXPECT_TRUE(never.isNever());
  EXPECT_FALSE(never.expired());
  EXPECT_EQ(never.pollMillis(), -1);
  EXPECT_EQ(never.pollMillis(100), 100);
}

TEST(Deadline, AfterCountsDownInWholeMillisecondsUpToTheCap) {
  Deadline soon = Deadline::after(5);
  EXPECT_FALSE(soon.isNever());
  EXPECT_FALSE(soon.expired());
  int left = soon.pollMillis();
  EXPECT_GT(left, 4000);
  EXPECT_LE(left, 5000);
  EXPECT_EQ(soon.pollMillis(100), 100);
}

TEST(Deadline, ANegativeOrZeroDelayHasAlreadyPassed) {
  for (double seconds : {0.0, -1.0}) {
    Deadline passed = Deadline::after(seconds);
    EXPECT_TRUE(passed.expired()) << seconds;
    EXPECT_EQ(passed.pollMillis(), 0) << seconds;  // poll() without blocking, never forever
  }
}

TEST(Deadline, AfterOrNeverTreatsNegativeAndNanAsNoDeadline) {
  EXPECT_TRUE(Deadline::afterOrNever(-1).isNever());
  EXPECT_TRUE(Deadline::afterOrNever(std::nan("")).isNever());
  EXPECT_FALSE(Deadline::afterOrNever(0).isNever());
  EXPECT_TRUE(Deadline::afterOrNever(0).expired());
}

TEST(Deadline, EarliestPicksTheSoonerDeadline) {
  Deadline near = Deadline::after(1);
  Deadline far = Deadline::after(100);
  EXPECT_LE(near.earliest(far).pollMillis(), 1000);
  EXPECT_LE(far.earliest(near).pollMillis(), 1000);
  EXPECT_LE(Deadline::never().earliest(near).pollMillis(), 1000);
  EXPECT_LE(near.earliest(Deadline::never()).pollMillis(), 1000);
  EXPECT_TRUE(Deadline::never().earliest(Deadline::never()).isNever());
}

}  // namespace
}  // namespace pi
