// A forked child process: fork (with the interpreter's fork hooks), pid + pidfd, kill, reap.
#pragma once

#include <optional>
#include "runtime/deadline.h"
#include "runtime/termination.h"
#include "runtime/unique_fd.h"

#include <kj/common.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pi {

class ForkServerClient;

// Owns one child process. Reaps only its own pid (waitid on its pidfd, or waitpid(pid)); never
// touches SIGCHLD. The destructor kills (SIGKILL) and reaps a child that is still running, but
// only in the process that forked it: a copy of this object inherited by another forked process
// does nothing.
class ChildProcess {
 public:
  // Forks. In the child, runs `childMain`, which must not return (it ends with _exit); if it
  // returns or throws, the child says so (reportStartupFailure) and _exits with status
  // kStartupMainReturned (127). When the Python interpreter is
  // initialized the fork is bracketed with PyOS_BeforeFork / PyOS_AfterFork_Parent /
  // PyOS_AfterFork_Child, and the caller must hold the GIL.
  static ChildProcess fork(const std::function<void()>& childMain);

  // Starts `argv[0]` (a path) with `argv`, this process's environment, every signal at its
  // default disposition and none blocked. `fds` maps fds of this process to the numbers the new
  // program gets them as (the targets must differ from every source); all other fds are closed
  // on exec as usual (ours are O_CLOEXEC). Uses posix_spawn, so it is safe in a threaded parent.
  // Throws (kj FAILED) when the program cannot be started.
  static ChildProcess spawn(const std::vector<std::string>& argv,
                            const std::vector<std::pair<int, int>>& fds);

  // Takes charge of `pid`, a child of a fork server, whose exit status only `server` can read.
  static ChildProcess adopt(pid_t pid, std::shared_ptr<ForkServerClient> server);

  // Gives up the child without killing or reaping it (the fork server hands children out this
  // way); returns its pid.
  pid_t release();

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // A pidfd for the child (readable once it has exited), or -1 when the kernel has none.
  int pidfd() const { return pidfd_.get(); }
  // True until the child has been reaped.
  bool running() const { return !reaped_; }

  // Reaps the child if it has exited, without blocking.
  std::optional<Termination> tryReap();
  // Waits until the child exits or the deadline passes; reaps it if it exited.
  std::optional<Termination> waitFor(Deadline deadline);
  // Sends `signal` if the child has not been reaped. Never signals a reaped (recycled) pid.
  void kill(int signal);
  // SIGTERM, then SIGKILL if it is still running after `graceSeconds`; always reaps.
  Termination terminate(double graceSeconds);
  // SIGKILL and reap.
  Termination killAndReap();

  // The termination, once reaped.
  const std::optional<Termination>& termination() const { return termination_; }

 private:
  ChildProcess(pid_t pid, UniqueFd pidfd);
  Termination reapBlocking();

  pid_t pid_ = -1;
  pid_t owner_ = -1;  // getpid() of the process that forked the child
  std::shared_ptr<ForkServerClient> server_;  // set for children of a fork server
  UniqueFd pidfd_;
  bool reaped_ = true;
  std::optional<Termination> termination_;
};

}  // namespace pi
