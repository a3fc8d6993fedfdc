// The last part of what a child wrote to a captured stream, bounded in size.
#pragma once

#include <cstddef>
#include <string>

namespace pi {

// Keeps the last `capacity` bytes appended, so a child flooding its output costs the parent a
// fixed amount of memory. Not thread-safe; not touched by Python.
class OutputTail {
 public:
  explicit OutputTail(size_t capacity = 64 * 1024) : capacity_(capacity) {}

  void append(const char* data, size_t size);

  // The last `maxLines` complete or partial lines, without a trailing newline; empty when
  // nothing was written. Valid UTF-8 whatever the child wrote (see peerText): a character cut
  // by the capacity is dropped, any other ill-formed byte shows as U+FFFD.
  std::string lastLines(size_t maxLines) const;

  // Bytes seen in all, including those no longer kept.
  size_t totalBytes() const { return total_; }

 private:
  size_t capacity_;
  std::string kept_;
  size_t total_ = 0;
};

}  // namespace pi
