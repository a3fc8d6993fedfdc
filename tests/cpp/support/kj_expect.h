// Test helpers: assert that code throws a kj exception of a given type, and measure time.
#pragma once

#include <gtest/gtest.h>
#include <kj/exception.h>
#include <kj/string.h>

#include <chrono>
#include <string>

namespace pi::test {

// Success when `f()` throws a kj::Exception of `type` (and, when given, whose description
// contains `substring`). Any other exception propagates, so gtest reports it as unexpected.
template <typename F>
::testing::AssertionResult throwsKj(kj::Exception::Type type, F&& f,
                                    const std::string& substring = "") {
  try {
    f();
  } catch (const kj::Exception& e) {
    std::string description = e.getDescription().cStr();
    if (e.getType() != type) {
      return ::testing::AssertionFailure()
             << "threw kj " << kj::str(e.getType()).cStr() << " instead of "
             << kj::str(type).cStr() << ": " << kj::str(e).cStr();
    }
    if (!substring.empty() && description.find(substring) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "threw kj " << kj::str(type).cStr() << " but the description \"" << description
             << "\" lacks \"" << substring << "\"";
    }
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "did not throw (expected kj " << kj::str(type).cStr()
                                       << ")";
}

// Seconds elapsed since `start` on the steady clock.
inline double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace pi::test
