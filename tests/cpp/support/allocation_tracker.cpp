// Test helper: the largest single heap allocation made while a tracker is alive.
//
// Replaces the global operator new / delete of the program that links it (the array and nothrow
// forms of the standard library call these).
#include "support/allocation_tracker.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace pi::test {

namespace {

std::atomic<bool> tracking{false};
std::atomic<size_t> largestSize{0};

void record(size_t size) {
  if (!tracking.load(std::memory_order_relaxed)) return;
  size_t seen = largestSize.load(std::memory_order_relaxed);
  while (size > seen && !largestSize.compare_exchange_weak(seen, size)) {
  }
}

}  // namespace

AllocationTracker::AllocationTracker() {
  largestSize = 0;
  tracking = true;
}

AllocationTracker::~AllocationTracker() { tracking = false; }

size_t AllocationTracker::largest() const { return largestSize.load(); }

}  // namespace pi::test

void* operator new(size_t size) {
  pi::test::record(size);
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
