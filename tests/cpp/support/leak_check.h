// Test environment that fails the run when a test leaves a child process or a file descriptor.
#pragma once

#include <gtest/gtest.h>

namespace pi::test {

// The number of entries in /proc/self/fd (the directory's own fd excluded).
int openFdCount();

// Registered by the test main. Counts /proc/self/fd before the tests and after them, and checks
// that no child of this process is left (running or unreaped). ctest runs each test on its own,
// so a leak is charged to the test that caused it.
class LeakCheck : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

 private:
  int fdsBefore_ = 0;
};

}  // namespace pi::test
