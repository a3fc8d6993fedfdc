// A clean, single-threaded process that forks isolated children on request: client and server.
#pragma once

#include <optional>
#include "runtime/child_main.h"
#include "runtime/child_process.h"
#include "runtime/deadline.h"
#include "runtime/unique_fd.h"

#include <kj/common.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pi {

// The fd numbers at which a spawned fork server finds its control socket and its lifeline.
constexpr int kForkServerControlFd = 102;
constexpr int kForkServerLifelineFd = 104;

// The parent's handle on its fork server: a process spawned from a fresh interpreter that holds
// no copy of the parent's memory and starts no threads, so what it forks is safe even when the
// parent has threads, and an untrusted child inherits none of the parent's secrets.
//
// The two talk over an anonymous SOCK_SEQPACKET socketpair (never a named socket); the fds a
// child needs travel with SCM_RIGHTS. The server never reaps a child until the parent asks,
// so a child's pid cannot be recycled while the parent still refers to it. Thread-safe: one
// request at a time. Not fork-safe: a copy in a forked process does nothing.
class ForkServerClient {
 public:
  // Spawns `argv`, a program that calls runForkServer(kForkServerControlFd, ...), and waits up
  // to `startTimeout` seconds for it to say it is ready. When it does not start, kills and
  // reaps it and throws a sentence saying why: what the server reported, or how it ended and
  // what its exit status means (kj FAILED; OVERLOADED when it did not answer in time).
  static std::shared_ptr<ForkServerClient> start(const std::vector<std::string>& argv,
                                                 double startTimeout);
  ~ForkServerClient();
  ForkServerClient(const ForkServerClient&) = delete;
  ForkServerClient& operator=(const ForkServerClient&) = delete;

  // Asks the server to fork a child that runs with `options` and gets these fds (-1 for
  // stdout/stderr: inherited from the server). Returns the child's pid. Throws (kj
  // DISCONNECTED) when the server is gone, saying why it stopped or how it ended; FAILED when it
  // could not fork.
  pid_t forkChild(const std::string& options, int socketFd, int crashFd, int stdoutFd,
                  int stderrFd, Deadline deadline);

  // Reaps `pid` (a child of the server) and returns its wait status; waits for it to exit
  // until `deadline` (null then). Throws (kj DISCONNECTED) when the server is gone.
  std::optional<int> reap(pid_t pid, Deadline deadline);

  pid_t serverPid() const { return server_.pid(); }
  // True while the server runs and its socket works.
  bool alive();

 private:
  ForkServerClient(ChildProcess server, UniqueFd control);
  void sendRequest(const std::string& bytes, const std::vector<int>& fds, Deadline deadline);
  std::string receiveReply(Deadline deadline);
  // Marks the server broken and throws (kj DISCONNECTED) "fork server (pid N) is gone: " and
  // `why`, or how it ended when `why` is empty.
  [[noreturn]] void throwGone(std::string why);

  std::mutex mutex_;
  pid_t owner_;
  ChildProcess server_;
  UniqueFd control_;
  UniqueFd lifeline_;  // write end of the server's lifeline
  bool broken_ = false;
};

// Runs in the fork server process; never returns. Serves fork and reap requests on `controlFd`
// until the parent closes it (or dies: the server has PR_SET_PDEATHSIG), then exits with 0. When
// it cannot start or has to stop, it sends the parent why (a kChildReasonPrefix datagram) and
// exits with kStartupFailed (kStartupParentGone when its parent is not there). For each
// fork, `childMain(options, setup)` runs in the new child (with the GIL, after the interpreter's
// fork hooks) and must not return; `setup` names the fds it received.
// `deathSignal`: also use PR_SET_PDEATHSIG (right only when the parent thread that spawned the
// server is its process's main thread); the lifeline at kForkServerLifelineFd is always armed.
[[noreturn]] void runForkServer(
    int controlFd, pid_t parentPid, bool deathSignal,
    const std::function<void(const std::string& options, const ChildSetup& setup)>& childMain);

}  // namespace pi
