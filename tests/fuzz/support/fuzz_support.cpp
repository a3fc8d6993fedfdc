// What every fuzz target shares (see fuzz_support.h).
#include "support/fuzz_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace pi::fuzz {

void fail(const char* what, const char* detail) {
  std::fprintf(stderr, "==fuzz== invariant broken: %s %s\n", what, detail);
  std::abort();
}

int lowestFreeFd() {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open /dev/null");
  ::close(fd);
  return fd;
}

void checkNoFdLeak(int baseline) {
  int lowest = lowestFreeFd();
  if (lowest <= baseline) return;
  char path[64];
  char target[256] = "";
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", baseline);
  ssize_t n = ::readlink(path, target, sizeof(target) - 1);
  if (n > 0) target[n] = 0;
  fail("an input leaked a file descriptor:", target);
}

void expectPeerError(const kj::Exception& e) {
  switch (e.getType()) {
    case kj::Exception::Type::FAILED:
    case kj::Exception::Type::DISCONNECTED:
    case kj::Exception::Type::OVERLOADED:
      return;
    default:
      fail("unexpected kj exception type", e.getDescription().cStr());
  }
}

}  // namespace pi::fuzz
