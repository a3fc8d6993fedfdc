// This process's id without a system call per question.
#pragma once

#include <sys/types.h>

namespace pi {

// getpid(), cached and refreshed in the child after every fork() (pthread_atfork), so objects
// that must not act in a forked copy can check their owner on every call for free. Thread-safe.
pid_t currentPid();

}  // namespace pi
