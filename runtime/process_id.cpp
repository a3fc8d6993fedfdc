// This process's id without a system call per question.
#include "runtime/process_id.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace pi {

namespace {

std::atomic<pid_t> gPid{0};
std::once_flag gRegistered;

void refresh() { gPid.store(::getpid(), std::memory_order_relaxed); }

}  // namespace

pid_t currentPid() {
  std::call_once(gRegistered, [] {
    refresh();
    ::pthread_atfork(nullptr, nullptr, refresh);
  });
  return gPid.load(std::memory_order_relaxed);
}

UniqueFd openPidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  int fd = int(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return UniqueFd(fd);
  }
#endif
  return UniqueFd();
}

}  // namespace pi
