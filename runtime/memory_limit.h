// Limits(memory=...) in the child: the address space it maps when the limit is applied, plus
// the bytes it may add.
#pragma once

#include <cstdint>

namespace pi {

// What applyMemoryLimit set in this process (all zero before it ran).
struct AppliedMemoryLimit {
  uint64_t mapped = 0;  // bytes of address space mapped when the limit was applied
  uint64_t added = 0;   // the bytes asked for (Limits.memory)
  uint64_t limit = 0;   // RLIMIT_AS set: mapped + added, capped by the hard limit
};

// Sets RLIMIT_AS (soft and hard) to the address space this process maps now (/proc/self/statm)
// plus `addedBytes`, never above the current hard limit, so a limit means the same in a child
// of a parent that maps a lot (threads' arenas, big libraries) as in a small one. Remembers what
// it set for reportStartupFailure. Returns the limit set. Call in the child only (it cannot be
// raised again). Throws (kj FAILED) when /proc/self/statm cannot be read or setrlimit fails.
uint64_t applyMemoryLimit(uint64_t addedBytes);

// What applyMemoryLimit set, for messages. Async-signal-safe.
const AppliedMemoryLimit& appliedMemoryLimit();

}  // namespace pi
