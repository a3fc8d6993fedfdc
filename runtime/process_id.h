// This process's id without a system call per question.
#pragma once

#include <sys/types.h>

#include "runtime/unique_fd.h"

namespace pi {

// getpid(), cached and refreshed in the child after every fork() (pthread_atfork), so objects
// that must not act in a forked copy can check their owner on every call for free. Thread-safe.
pid_t currentPid();

// A close-on-exec pidfd for `pid` (pidfd_open), or an empty UniqueFd when the kernel has none
// (the process is gone, or pidfd_open is older than this kernel).
UniqueFd openPidfd(pid_t pid);

}  // namespace pi
