// The parent's side of one isolated child: start it, talk to it, and report how it ended.
#pragma once

#include "proxy/endpoint.h"
#include "runtime/child_process.h"
#include "runtime/fork_server.h"
#include "runtime/output_tail.h"
#include "runtime/termination.h"

#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <string>

namespace pi {

namespace py = pybind11;

// The fd numbers a spawned child finds its socket and crash pipe at (runChild moves them on).
constexpr int kSpawnSocketFd = 100;
constexpr int kSpawnCrashFd = 101;
constexpr int kSpawnLifelineFd = 103;

// True when the calling thread is its process's main thread (so PR_SET_PDEATHSIG, which fires
// when the thread that made a child ends, is safe to use for that child).
bool onMainThread();

// Where a child's stdout or stderr goes.
struct OutputSpec {
  enum class Mode { kInherit, kCapture, kFile };
  Mode mode = Mode::kInherit;
  std::string path;  // for kFile: appended to, created if missing
};

// Owns the child process, its crash pipe and the endpoint that talks to it. When the connection
// fails it reaps the child, reads what the child's faulthandler wrote, and throws a
// TerminationError describing it. Requires the GIL for every method. Not fork-safe: a copy in a
// forked process refuses to act.
class Connection : public EndpointObserver {
 public:
  // Forks a child that runs `bootstrap()` (a Python callable, or None) and then serves; waits
  // up to `startTimeout` seconds for it to say hello. Throws TerminationError if it dies or
  // stalls on the way.
  // `sharedRings`: frames travel through shared memory rings (the socket stays the wake-up line
  // and the death detector), or, when false, through the socket alone. `parentSpans`: large
  // bytes go to the child as spans of this process's memory, which the child copies itself, when
  // it can (Endpoint::awaitHello); false keeps them in memfds and tells the child nothing of this
  // process's memory. A context that confines an untrusted child must pass false. The same for
  // spawn() and viaForkServer().
  static std::unique_ptr<Connection> start(py::object bootstrap, double startTimeout,
                                           const OutputSpec& stdoutSpec = {},
                                           const OutputSpec& stderrSpec = {},
                                           bool sharedRings = true, bool parentSpans = true);

  // Like start(), but the child is a fresh program: `argv` is run with posix_spawn and gets
  // its socket as fd kSpawnSocketFd, its crash pipe as kSpawnCrashFd, and its stdout/stderr
  // as the specs say. The program must call runChild (process_isolation._spawn does).
  static std::unique_ptr<Connection> spawn(const std::vector<std::string>& argv,
                                           double startTimeout, const OutputSpec& stdoutSpec = {},
                                           const OutputSpec& stderrSpec = {},
                                           bool sharedRings = true, bool parentSpans = true);

  // Like start(), but `server` forks the child; `options` are handed to the server's child
  // main (process_isolation._spawn reads them).
  static std::unique_ptr<Connection> viaForkServer(std::shared_ptr<ForkServerClient> server,
                                                   const std::string& options,
                                                   double startTimeout,
                                                   const OutputSpec& stdoutSpec = {},
                                                   const OutputSpec& stderrSpec = {},
                                                   bool sharedRings = true,
                                                   bool parentSpans = true);
  ~Connection() override;

  const std::shared_ptr<Endpoint>& endpoint() const { return endpoint_; }
  pid_t pid() const { return child_.pid(); }
  // True while the child runs and the connection is usable.
  bool alive();
  // How the child ended, once it has.
  const std::optional<Termination>& termination() const { return termination_; }

  // Says goodbye, waits up to `graceSeconds` for the child to exit, then SIGTERM, then SIGKILL;
  // reaps it. Idempotent.
  void terminate(double graceSeconds);

  // The last `lines` lines of a captured stream (1 = stdout, 2 = stderr); empty if not captured.
  std::string outputTail(int stream, size_t lines);

  // EndpointObserver
  [[noreturn]] void connectionLost(Loss loss, const std::string& detail) override;
  void interruptPeer() override;
  std::string endedDescription() override;

 private:
  Connection(ChildProcess child, UniqueFd crashPipe, UniqueFd socket, UniqueFd stdoutPipe,
             UniqueFd stderrPipe);
  static std::unique_ptr<Connection> launch(
      const std::function<ChildProcess(int socketFd, int crashFd, int stdoutFd, int stderrFd,
                                       int lifelineFd)>& makeChild,
      double startTimeout, const OutputSpec& stdoutSpec, const OutputSpec& stderrSpec,
      bool withLifeline, bool sharedRings, bool parentSpans);
  std::string drainCrashPipe(Deadline deadline);
  void drainOutput();
  Termination finish(Termination termination, Deadline crashReportDeadline);

  pid_t ownerPid_;
  ChildProcess child_;
  UniqueFd crashPipe_;
  UniqueFd lifeline_;    // write end of the child's lifeline; closed once the child is reaped
  UniqueFd stdoutPipe_;  // read ends of captured output, or empty
  UniqueFd stderrPipe_;
  OutputTail stdoutTail_;
  OutputTail stderrTail_;
  std::shared_ptr<Endpoint> endpoint_;
  std::optional<Termination> termination_;
};

}  // namespace pi
