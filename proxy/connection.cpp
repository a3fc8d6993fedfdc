// The parent's side of one isolated child: start it, talk to it, and report how it ended.
#include "proxy/connection.h"

#include "proxy/child_server.h"
#include "runtime/child_main.h"
#include "runtime/peer_text.h"
#include "runtime/startup_failure.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace pi {

namespace {

// How long a child that closed its socket gets to finish dying before it is killed.
constexpr double kDisconnectGraceSeconds = 5.0;
// How long a timed-out child gets to write its traceback before it is killed.
constexpr double kTracebackGraceSeconds = 0.5;
// How long a quiet crash pipe must stay quiet, once the child has written to it, to count as
// finished.
constexpr double kQuietSeconds = 0.05;
// The most of the crash report the parent keeps.
constexpr size_t kMaxCrashReportBytes = 1 << 20;
// How many lines of captured output a termination report shows.
constexpr size_t kTailLines = 50;

}  // namespace

namespace {

// The fd the child gets for one output stream (-1: inherit), and the parent's read end when the
// stream is captured.
struct OutputFds {
  UniqueFd childEnd;
  UniqueFd parentEnd;
};

OutputFds openOutput(const OutputSpec& spec) {
  OutputFds fds;
  if (spec.mode == OutputSpec::Mode::kCapture) {
    int pipes[2];
    KJ_SYSCALL(::pipe2(pipes, O_CLOEXEC));
    fds.parentEnd.reset(pipes[0]);
    fds.childEnd.reset(pipes[1]);
    KJ_SYSCALL(::fcntl(fds.parentEnd.get(), F_SETFL, O_NONBLOCK));
  } else if (spec.mode == OutputSpec::Mode::kFile) {
    int fd;
    KJ_SYSCALL(fd = ::open(spec.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644),
               spec.path);
    fds.childEnd.reset(fd);
  }
  return fds;
}

}  // namespace

bool onMainThread() { return ::syscall(SYS_gettid) == ::getpid(); }

std::unique_ptr<Connection> Connection::launch(
    const std::function<ChildProcess(int socketFd, int crashFd, int stdoutFd, int stderrFd,
                                     int lifelineFd)>& makeChild,
    double startTimeout, const OutputSpec& stdoutSpec, const OutputSpec& stderrSpec,
    bool withLifeline, bool sharedRings, bool parentSpans) {
  int sockets[2];
  KJ_SYSCALL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets));
  UniqueFd parentSocket(sockets[0]);
  UniqueFd childSocket(sockets[1]);
  int pipes[2];
  KJ_SYSCALL(::pipe2(pipes, O_CLOEXEC));
  UniqueFd crashRead(pipes[0]);
  UniqueFd crashWrite(pipes[1]);
  OutputFds out = openOutput(stdoutSpec);
  OutputFds err = openOutput(stderrSpec);
  UniqueFd lifelineRead, lifelineWrite;
  if (withLifeline) {
    KJ_SYSCALL(::pipe2(pipes, O_CLOEXEC));
    lifelineRead.reset(pipes[0]);
    lifelineWrite.reset(pipes[1]);
  }

  ChildProcess child = makeChild(childSocket.get(), crashWrite.get(), out.childEnd.get(),
                                 err.childEnd.get(), lifelineRead.get());
  childSocket.reset();
  crashWrite.reset();
  out.childEnd.reset();
  err.childEnd.reset();
  lifelineRead.reset();
  KJ_SYSCALL(::fcntl(crashRead.get(), F_SETFL, O_NONBLOCK));

  std::unique_ptr<Connection> connection(
      new Connection(std::move(child), std::move(crashRead), std::move(parentSocket),
                     std::move(out.parentEnd), std::move(err.parentEnd)));
  connection->lifeline_ = std::move(lifelineWrite);
  try {
    connection->endpoint_->awaitHello(Deadline::afterOrNever(startTimeout), sharedRings,
                                     parentSpans);
  } catch (TerminationError& error) {
    // Why it could not start, in words (runtime/startup_failure.h), never a bare exit code.
    Termination explained = error.termination();
    explainStartupFailure(explained);
    TerminationError startup(explained, error.kind(), error.detail());
    startup.setCall("its start-up");
    throw startup;
  }
  return connection;
}

std::unique_ptr<Connection> Connection::start(py::object bootstrap, double startTimeout,
                                              const OutputSpec& stdoutSpec,
                                              const OutputSpec& stderrSpec, bool sharedRings,
                                              bool parentSpans) {
  ChildServer server(std::move(bootstrap));
  prepareToFork();
  return launch(
      [&](int socketFd, int crashFd, int stdoutFd, int stderrFd, int lifelineFd) {
        ChildSetup setup;
        setup.socketFd = socketFd;
        setup.crashFd = crashFd;
        setup.parentPid = ::getpid();
        setup.stdoutFd = stdoutFd;
        setup.stderrFd = stderrFd;
        setup.lifelineFd = lifelineFd;
        setup.deathSignal = onMainThread();
        return ChildProcess::fork([&] { runChild(setup, server); });
      },
      startTimeout, stdoutSpec, stderrSpec, /*withLifeline=*/true, sharedRings,
      parentSpans);
}

std::unique_ptr<Connection> Connection::spawn(const std::vector<std::string>& argv,
                                              double startTimeout, const OutputSpec& stdoutSpec,
                                              const OutputSpec& stderrSpec, bool sharedRings,
                                              bool parentSpans) {
  return launch(
      [&](int socketFd, int crashFd, int stdoutFd, int stderrFd, int lifelineFd) {
        std::vector<std::pair<int, int>> fds{{socketFd, kSpawnSocketFd},
                                             {crashFd, kSpawnCrashFd},
                                             {lifelineFd, kSpawnLifelineFd}};
        if (stdoutFd >= 0) fds.emplace_back(stdoutFd, 1);
        if (stderrFd >= 0) fds.emplace_back(stderrFd, 2);
        py::gil_scoped_release nogil;
        return ChildProcess::spawn(argv, fds);
      },
      startTimeout, stdoutSpec, stderrSpec, /*withLifeline=*/true, sharedRings,
      parentSpans);
}

std::unique_ptr<Connection> Connection::viaForkServer(std::shared_ptr<ForkServerClient> server,
                                                      const std::string& options,
                                                      double startTimeout,
                                                      const OutputSpec& stdoutSpec,
                                                      const OutputSpec& stderrSpec,
                                                      bool sharedRings, bool parentSpans) {
  // The fork server's children need no lifeline: their parent is the single-threaded server,
  // so PR_SET_PDEATHSIG is right for them, and the server has a lifeline of its own.
  return launch(
      [&](int socketFd, int crashFd, int stdoutFd, int stderrFd, int) {
        pid_t pid;
        {
          py::gil_scoped_release nogil;
          pid = server->forkChild(options, socketFd, crashFd, stdoutFd, stderrFd,
                                  Deadline::afterOrNever(startTimeout));
        }
        return ChildProcess::adopt(pid, server);
      },
      startTimeout, stdoutSpec, stderrSpec, /*withLifeline=*/false, sharedRings,
      parentSpans);
}

Connection::Connection(ChildProcess child, UniqueFd crashPipe, UniqueFd socket,
                       UniqueFd stdoutPipe, UniqueFd stderrPipe)
    : ownerPid_(::getpid()),
      child_(std::move(child)),
      crashPipe_(std::move(crashPipe)),
      stdoutPipe_(std::move(stdoutPipe)),
      stderrPipe_(std::move(stderrPipe)),
      endpoint_(std::make_shared<Endpoint>(std::move(socket), Role::kParent)) {
  endpoint_->setObserver(this);
  endpoint_->setPeerPid(child_.pid());
  // The child's death ends every wait for it, even while a process it started (which inherited
  // its socket) keeps the connection open. The channel gets a pidfd of its own: ours is closed
  // when the child is reaped, perhaps while another thread waits.
  if (child_.pidfd() >= 0) {
    int pidfd = ::fcntl(child_.pidfd(), F_DUPFD_CLOEXEC, 0);
    if (pidfd >= 0) endpoint_->channel().watchPeerExit(UniqueFd(pidfd));
  }
  // Captured output is read whenever the parent waits for the child, so a child writing a lot
  // never blocks on a full pipe, and only the tail is kept.
  if (stdoutPipe_) {
    endpoint_->channel().addDrain(stdoutPipe_.get(), [this](const char* data, size_t size) {
      stdoutTail_.append(data, size);
    });
  }
  if (stderrPipe_) {
    endpoint_->channel().addDrain(stderrPipe_.get(), [this](const char* data, size_t size) {
      stderrTail_.append(data, size);
    });
  }
}

void Connection::drainOutput() {
  char chunk[16384];
  for (auto [fd, tail] : {std::pair<int, OutputTail*>{stdoutPipe_.get(), &stdoutTail_},
                          {stderrPipe_.get(), &stderrTail_}}) {
    if (fd < 0) continue;
    for (;;) {
      ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n > 0) {
        tail->append(chunk, size_t(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;  // EOF, or nothing more for now (the pipe is non-blocking)
    }
  }
}

std::string Connection::outputTail(int stream, size_t lines) {
  drainOutput();
  return stream == 1 ? stdoutTail_.lastLines(lines) : stderrTail_.lastLines(lines);
}

Connection::~Connection() {
  endpoint_->setObserver(nullptr);
  if (::getpid() != ownerPid_) {
    // Inherited across fork: not our fds.
    crashPipe_.release();
    lifeline_.release();
    stdoutPipe_.release();
    stderrPipe_.release();
    endpoint_->close("this context belongs to another process");
    return;
  }
  try {
    terminate(0.5);
  } catch (...) {
    // Destructors do not throw; ChildProcess's own destructor kills and reaps as a last resort.
  }
  endpoint_->channel().clearDrains();  // the endpoint may outlive us; the pipes close now
}

bool Connection::alive() {
  if (termination_ || endpoint_->closed()) return false;
  if (auto t = child_.tryReap()) {
    Termination ended = finish(*t, Deadline::after(0));
    ended.reason = "it had ended between calls";
    termination_ = ended;
    endpoint_->markLost(
        std::make_exception_ptr(TerminationError(ended, TerminationError::Kind::kCrash, "")),
        endedDescription());
    return false;
  }
  return true;
}

std::string Connection::drainCrashPipe(Deadline deadline) {
  std::string report;
  char buffer[8192];
  for (;;) {
    ssize_t n = ::read(crashPipe_.get(), buffer, sizeof(buffer));
    if (n > 0) {
      if (report.size() < kMaxCrashReportBytes) report.append(buffer, size_t(n));
      continue;
    }
    if (n == 0) break;  // every writer is gone
    if (errno == EINTR) continue;
    if (errno != EAGAIN || deadline.expired()) break;
    // Once the child has started writing, a short pause means it has finished.
    Deadline wait = report.empty() ? deadline : deadline.earliest(Deadline::after(kQuietSeconds));
    pollfd pfd{crashPipe_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, wait.pollMillis()) <= 0) break;
  }
  return report;
}

Termination Connection::finish(Termination termination, Deadline crashReportDeadline) {
  if (crashPipe_) {
    std::string report;
    {
      py::gil_scoped_release nogil;
      report = drainCrashPipe(crashReportDeadline);
    }
    termination.setCrashReport(report);
  }
  drainOutput();
  termination.stdoutTail = stdoutTail_.lastLines(kTailLines);
  termination.stderrTail = stderrTail_.lastLines(kTailLines);
  return termination;
}

void Connection::connectionLost(Loss loss, const std::string& rawDetail) {
  std::string detail = peerText(rawDetail);  // it may quote what the child sent
  std::string accumulated;
  Termination t;
  TerminationError::Kind kind = TerminationError::Kind::kCrash;
  {
    py::gil_scoped_release nogil;
    switch (loss) {
      case Loss::kDisconnected: {
        if (auto ended = child_.waitFor(Deadline::after(kDisconnectGraceSeconds))) {
          t = *ended;
        } else {
          t = child_.killAndReap();
          t.reason = "it closed its connection but did not exit, so the parent killed it";
        }
        break;
      }
      case Loss::kProtocol:
        t = child_.killAndReap();
        t.reason = "it broke the protocol (" + detail + "), so the parent killed it";
        kind = TerminationError::Kind::kProtocol;
        break;
      case Loss::kTimeout:
        // Ask for every thread's traceback first: where was it stuck?
        child_.kill(SIGUSR2);
        accumulated = drainCrashPipe(Deadline::after(kTracebackGraceSeconds));
        t = child_.killAndReap();
        t.reason = "the call timed out, so the parent killed it";
        kind = TerminationError::Kind::kTimeout;
        break;
      case Loss::kInterrupted:
        t = child_.killAndReap();
        t.reason = "the call was interrupted and the child did not stop in time, so the parent "
                   "killed it";
        break;
    }
  }
  t = finish(t, Deadline::after(0.2));
  if (!accumulated.empty()) t.setCrashReport(accumulated + t.childTraceback);
  termination_ = t;
  endpoint_->close(endedDescription());
  throw TerminationError(t, kind, detail);
}

void Connection::interruptPeer() { child_.kill(SIGINT); }

std::string Connection::endedDescription() {
  std::string s = "the isolated child (pid " + std::to_string(child_.pid()) + ") has ended";
  if (termination_) s += " (" + termination_->describeEnding() + ")";
  return s;
}

void Connection::terminate(double graceSeconds) {
  if (termination_) return;
  if (!endpoint_->closed()) endpoint_->sendGoodbye();
  endpoint_->close("the isolated child (pid " + std::to_string(child_.pid()) +
                   ") was terminated");
  Termination t;
  {
    py::gil_scoped_release nogil;
    if (auto ended = child_.waitFor(Deadline::after(graceSeconds))) {
      t = *ended;
    } else {
      child_.kill(SIGTERM);
      if (auto ended2 = child_.waitFor(Deadline::after(1.0))) {
        t = *ended2;
      } else {
        t = child_.killAndReap();
      }
    }
  }
  termination_ = finish(t, Deadline::after(0));
}

}  // namespace pi
