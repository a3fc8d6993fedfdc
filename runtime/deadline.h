// A point in time by which a blocking wait must give up, or none.
#pragma once

#include <chrono>
#include <limits>
#include <optional>

namespace pi {

// Value type. `Deadline::never()` waits forever; `Deadline::after(s)` gives up s seconds from now.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  static Deadline never() { return Deadline(); }
  static Deadline after(double seconds) {
    Deadline d;
    d.at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds < 0 ? 0 : seconds));
    return d;
  }
  // A negative or NaN value means no deadline.
  static Deadline afterOrNever(double seconds) {
    return seconds >= 0 ? after(seconds) : never();
  }

  bool isNever() const { return !at_; }
  bool expired() const { return at_ && Clock::now() >= *at_; }

  // Milliseconds left for poll(): -1 when there is no deadline, 0 once it has passed, and at
  // most `cap` so that a long wait wakes up now and then.
  int pollMillis(int cap = std::numeric_limits<int>::max()) const {
    if (!at_) return cap == std::numeric_limits<int>::max() ? -1 : cap;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*at_ - Clock::now()).count();
    if (left <= 0) return 0;
    return left > cap ? cap : int(left);
  }

  // The earlier of two deadlines.
  Deadline earliest(const Deadline& other) const {
    if (!at_) return other;
    if (!other.at_) return *this;
    return *at_ <= *other.at_ ? *this : other;
  }

 private:
  std::optional<Clock::time_point> at_;
};

}  // namespace pi
