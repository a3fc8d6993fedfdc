// A forked child process: fork (with the interpreter's fork hooks), pid + pidfd, kill, reap.
#include <optional>
#include "runtime/child_process.h"

#include "runtime/fork_server.h"
#include "runtime/process_id.h"
#include "runtime/startup_failure.h"

#include <Python.h>
#include <kj/debug.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

extern char** environ;

namespace pi {

namespace {

// How long a SIGKILLed child may take to exit before the parent stops waiting for it.
constexpr double kKilledExitSeconds = 10.0;

}  // namespace

ChildProcess ChildProcess::fork(const std::function<void()>& childMain) {
  bool python = Py_IsInitialized();
  if (python) PyOS_BeforeFork();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (python) PyOS_AfterFork_Child();
    try {
      childMain();
    } catch (...) {
    }
    failStartup("its start-up code returned or threw instead of serving", 0,
                kStartupMainReturned);
  }
  int error = errno;
  if (python) PyOS_AfterFork_Parent();
  if (pid < 0) {
    KJ_FAIL_SYSCALL("fork", error);
  }
  return ChildProcess(pid, openPidfd(pid));
}

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<int, int>>& fds) {
  KJ_REQUIRE(!argv.empty(), "spawn needs a program");
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  KJ_ASSERT(posix_spawn_file_actions_init(&actions) == 0);
  KJ_ASSERT(posix_spawnattr_init(&attributes) == 0);
  KJ_DEFER(posix_spawn_file_actions_destroy(&actions); posix_spawnattr_destroy(&attributes));
  for (auto [from, to] : fds) {
    for (auto [otherFrom, otherTo] : fds) {
      (void)otherTo;
      KJ_REQUIRE(to != otherFrom, "spawn fd targets must differ from every source", to);
    }
    KJ_ASSERT(posix_spawn_file_actions_adddup2(&actions, from, to) == 0);
  }
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int error = posix_spawn(&pid, argv[0].c_str(), &actions, &attributes, args.data(), environ);
  if (error != 0) KJ_FAIL_SYSCALL("posix_spawn", error, argv[0]);
  return ChildProcess(pid, openPidfd(pid));
}

ChildProcess::ChildProcess(pid_t pid, UniqueFd pidfd)
    : pid_(pid), owner_(::getpid()), pidfd_(std::move(pidfd)), reaped_(false) {}

ChildProcess ChildProcess::adopt(pid_t pid, std::shared_ptr<ForkServerClient> server) {
  ChildProcess child(pid, openPidfd(pid));
  child.server_ = std::move(server);
  return child;
}

pid_t ChildProcess::release() {
  reaped_ = true;
  pidfd_.reset();
  return pid_;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_),
      owner_(other.owner_),
      server_(std::move(other.server_)),
      pidfd_(std::move(other.pidfd_)),
      reaped_(std::exchange(other.reaped_, true)),
      termination_(kj::mv(other.termination_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (!reaped_ && owner_ == ::getpid()) killAndReap();
    pid_ = other.pid_;
    owner_ = other.owner_;
    server_ = std::move(other.server_);
    pidfd_ = std::move(other.pidfd_);
    reaped_ = std::exchange(other.reaped_, true);
    termination_ = kj::mv(other.termination_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (owner_ != ::getpid()) {
    pidfd_.release();  // inherited across fork: the fd number is not ours any more
    return;
  }
  if (!reaped_) {
    try {
      killAndReap();
    } catch (...) {
      // A destructor must not throw; the child was signalled, the kernel will clean up.
    }
  }
}

std::optional<Termination> ChildProcess::tryReap() {
  if (reaped_) return termination_;
  if (owner_ != ::getpid()) return std::nullopt;
  if (server_) {
    // Not our child: its pidfd says when it has exited, its fork server has the status.
    if (pidfd_) {
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 0) <= 0) return std::nullopt;
    }
    Termination t;
    t.pid = pid_;
    try {
      if (auto status = server_->reap(pid_, Deadline::after(pidfd_ ? 5.0 : 0.0))) {
        t = Termination::fromWaitStatus(pid_, *status);
      } else {
        return std::nullopt;
      }
    } catch (kj::Exception&) {
      // The server is gone; so is the child (it dies with the server). Its status is lost.
    }
    reaped_ = true;
    pidfd_.reset();
    termination_ = t;
    return termination_;
  }
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  reaped_ = true;
  pidfd_.reset();
  if (r < 0) {
    // ECHILD: someone else (a host's waitpid(-1)) reaped our child; its status is lost.
    Termination t;
    t.pid = pid_;
    termination_ = t;
  } else {
    termination_ = Termination::fromWaitStatus(pid_, status);
  }
  return termination_;
}

std::optional<Termination> ChildProcess::waitFor(Deadline deadline) {
  for (;;) {
    if (auto t = tryReap()) { return *t; }
    if (deadline.expired()) return std::nullopt;
    if (pidfd_) {
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      int n = ::poll(&pfd, 1, deadline.pollMillis(1000));
      if (n < 0 && errno != EINTR) KJ_FAIL_SYSCALL("poll(pidfd)", errno);
    } else {
      ::usleep(1000);  // no pidfd (old kernel): poll the status every millisecond
    }
  }
}

void ChildProcess::kill(int signal) {
  if (reaped_ || owner_ != ::getpid()) return;
  // The pid is ours (or held for us by the fork server) until we reap it: it cannot have been
  // recycled.
  ::kill(pid_, signal);
}

Termination ChildProcess::reapBlocking() {
  // After SIGKILL a child exits at once, unless it is stuck in an uninterruptible kernel wait
  // (a hung NFS read, a device): then give up waiting rather than hang the parent; the kernel
  // reaps it into a zombie of ours that a later tryReap() collects.
  if (auto t = waitFor(Deadline::after(kKilledExitSeconds))) return *t;
  Termination t;
  t.pid = pid_;
  t.signal = SIGKILL;
  t.reason = "it did not exit within " + std::to_string(int(kKilledExitSeconds)) +
             " s of SIGKILL (stuck in the kernel?)";
  return t;
}

Termination ChildProcess::terminate(double graceSeconds) {
  if (reaped_) {
    if (auto t = termination_) { return *t; }
  }
  kill(SIGTERM);
  if (auto t = waitFor(Deadline::after(graceSeconds))) { return *t; }
  return killAndReap();
}

Termination ChildProcess::killAndReap() {
  if (reaped_) {
    if (auto t = termination_) { return *t; }
  }
  kill(SIGKILL);
  return reapBlocking();
}

}  // namespace pi
