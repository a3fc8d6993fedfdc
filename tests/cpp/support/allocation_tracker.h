// Test helper: the largest single heap allocation made while a tracker is alive.
#pragma once

#include <cstddef>

namespace pi::test {

// Linking allocation_tracker.cpp replaces the global operator new of the test program. While an
// AllocationTracker exists, it records the largest size any thread asked operator new for, so a
// test can show that a hostile size was refused before it reached an allocator. Not nestable.
class AllocationTracker {
 public:
  AllocationTracker();
  ~AllocationTracker();
  AllocationTracker(const AllocationTracker&) = delete;
  AllocationTracker& operator=(const AllocationTracker&) = delete;

  size_t largest() const;
};

}  // namespace pi::test
