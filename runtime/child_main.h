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
  int lifelineFd = -1; // read end of a pipe only the parent process writes to, or -1: when the
                       // parent process ends (all its write ends close) the child gets SIGKILL
  bool deathSignal = true;  // also PR_SET_PDEATHSIG: only right when the thread that made the
                            // child lives as long as its process (the main thread), because
                            // the kernel sends it when that *thread* ends
};

// In the child after fork. Arms the lifeline (and PR_SET_PDEATHSIG(SIGKILL) when the setup says
// so) and exits if the parent is already gone; redirects stdout and stderr when the setup says
// so; moves the socket, the crash pipe and the lifeline above every fd the child inherited (close
// on exec), and puts /dev/null (close on exec) behind every inherited fd but stdio, so that file
// objects the child inherited keep working on a harmless fd and can never write into, or close,
// one of the library's; unblocks signals and resets the host's handlers (C-level, and in
// Python's table: SIGINT to default_int_handler, SIGTERM, SIGHUP, SIGUSR1, SIGALRM and SIGCHLD to
// SIG_DFL); points faulthandler at the crash pipe (all threads); calls `handler.serve`; flushes
// sys.stdout and sys.stderr; and leaves with _exit, so the parent's atexit handlers never run
// here. A step that fails says why on the crash pipe (startup_failure.h) and exits with
// kStartupFailed or kStartupParentGone. Requires the GIL (the interpreter's fork hooks have run).
[[noreturn]] void runChild(const ChildSetup& setup, MessageHandler& handler);

// Does once, in the process that forks children, what each child would otherwise do again at
// the cost of copy-on-write faults (about 65 on a typical interpreter): imports faulthandler,
// which stays in sys.modules (runChild enables it in the child, never here), and loads the
// unwinder that the child's crash handler calls backtrace() with. Cheap after the first call.
// Needs the GIL when the interpreter is initialized. Not async-signal-safe (call before fork).
void prepareToFork();

// Flushes sys.stdout and sys.stderr, ignoring errors (before a child's _exit). Needs the GIL.
void flushPythonStdio();

// Makes the process get SIGKILL as soon as every write end of the pipe `fd` reads from is
// closed (O_ASYNC with F_SETSIG), and exits (kStartupParentGone) at once if that has already
// happened; says why and exits (kStartupFailed) when it cannot arm it. Async-signal-safe; used by
// the child and by the fork server.
void armLifeline(int fd);

}  // namespace pi
