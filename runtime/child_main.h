// The child right after fork: fd hygiene, death signal, crash pipe, then the serve loop.
#pragma once

#include "runtime/message_handler.h"

#include <sys/types.h>

namespace pi {

// Where the child's fds are before runChild moves them. Plain data, made before fork.
struct ChildSetup {
  int socketFd = -1;   // the child's end of the socketpair
  int crashFd = -1;    // write end of the crash pipe (faulthandler writes there)
  pid_t parentPid = 0; // getpid() of the parent, to detect a parent that died during fork
  int stdoutFd = -1;   // becomes the child's fd 1 when >= 0 (a pipe or a file); else inherited
  int stderrFd = -1;   // becomes the child's fd 2 when >= 0
};

// In the child after fork. Sets PR_SET_PDEATHSIG(SIGKILL) and exits if the parent is already
// gone; redirects stdout and stderr when the setup says so; moves the socket to fd 3 and the
// crash pipe to fd 4 and closes every other inherited fd but stdio; unblocks signals; points faulthandler at the crash pipe (all threads); calls
// `handler.serve`; flushes sys.stdout and sys.stderr; and leaves with _exit, so the parent's
// atexit handlers never run here. Requires the GIL (the interpreter's fork hooks have run).
[[noreturn]] void runChild(const ChildSetup& setup, MessageHandler& handler);

// The fd numbers the child's socket and crash pipe have once runChild has moved them.
constexpr int kChildSocketFd = 3;
constexpr int kChildCrashFd = 4;

}  // namespace pi
