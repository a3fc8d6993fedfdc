// Limits(memory=...) in the child: the address space it maps when the limit is applied, plus
// the bytes it may add.
#include "runtime/memory_limit.h"

#include <kj/debug.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

namespace pi {

namespace {

AppliedMemoryLimit gApplied;

// The first field of /proc/self/statm: the pages of address space mapped (VmSize), which is
// what RLIMIT_AS is checked against.
uint64_t mappedBytes() {
  int fd;
  KJ_SYSCALL(fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC));
  char text[128];
  ssize_t n;
  do {
    n = ::read(fd, text, sizeof(text) - 1);
  } while (n < 0 && errno == EINTR);
  int error = errno;
  ::close(fd);
  if (n < 0) KJ_FAIL_SYSCALL("read(/proc/self/statm)", error);
  uint64_t pages = 0;
  ssize_t i = 0;
  for (; i < n && text[i] >= '0' && text[i] <= '9'; ++i) {
    pages = pages * 10 + uint64_t(text[i] - '0');
  }
  KJ_REQUIRE(i > 0, "/proc/self/statm does not start with a number");
  return pages * uint64_t(::sysconf(_SC_PAGESIZE));
}

}  // namespace

uint64_t applyMemoryLimit(uint64_t addedBytes) {
  uint64_t mapped = mappedBytes();
  rlimit current;
  KJ_SYSCALL(::getrlimit(RLIMIT_AS, &current));
  uint64_t limit = mapped + addedBytes < mapped ? RLIM_INFINITY : mapped + addedBytes;
  if (current.rlim_max != RLIM_INFINITY && limit > current.rlim_max) limit = current.rlim_max;
  rlimit wanted{rlim_t(limit), rlim_t(limit)};
  KJ_SYSCALL(::setrlimit(RLIMIT_AS, &wanted), limit);
  gApplied = AppliedMemoryLimit{mapped, addedBytes, limit};
  return limit;
}

const AppliedMemoryLimit& appliedMemoryLimit() { return gApplied; }

}  // namespace pi
