// Tests runtime/child_process.cpp: fork, exit codes and signals, deadlines, kill and reap.
//
// No interpreter runs here, so ChildProcess::fork skips the Python fork hooks. Every child is
// owned by a ChildProcess, whose destructor kills and reaps it if a test fails early, and sets
// PR_SET_PDEATHSIG so it cannot outlive a crashed test program.
#include <optional>
#include "runtime/child_process.h"

#include "support/kj_expect.h"
#include "support/leak_check.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <stdexcept>

namespace pi {
namespace {

using test::secondsSince;
using Clock = std::chrono::steady_clock;
constexpr double kPatience = 10;

// Forks a child that dies with its parent, dumps no core, and runs `body` (then exits 0).
ChildProcess forkChild(const std::function<void()>& body) {
  return ChildProcess::fork([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    rlimit noCore{0, 0};
    ::setrlimit(RLIMIT_CORE, &noCore);
    body();
    ::_exit(0);
  });
}

// A pipe the child writes one byte to once it is ready.
class ReadySignal {
 public:
  ReadySignal() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_.reset(fds[0]);
    write_.reset(fds[1]);
  }
  // In the child.
  void signal() {
    char byte = 1;
    (void)!::write(write_.get(), &byte, 1);
  }
  // In the parent: true when the child signalled before the deadline.
  bool wait(double seconds) {
    write_.reset();
    pollfd pfd{read_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, int(seconds * 1000)) != 1) return false;
    char byte;
    return ::read(read_.get(), &byte, 1) == 1;
  }

 private:
  UniqueFd read_;
  UniqueFd write_;
};

Termination waitOrFail(ChildProcess& child) {
  if (auto t = child.waitFor(Deadline::after(kPatience))) { return *t; }
  ADD_FAILURE() << "child " << child.pid() << " did not end in time";
  return child.killAndReap();
}

TEST(ChildProcess, ReportsTheExitCodeOfAChildThatExits) {
  auto child = forkChild([] { ::_exit(3); });
  ASSERT_GT(child.pid(), 0);
  EXPECT_TRUE(child.running());
  Termination t = waitOrFail(child);
  EXPECT_EQ(t.pid, child.pid());
  ASSERT_TRUE(t.exitCode.has_value());
  EXPECT_EQ(*t.exitCode, 3);
  EXPECT_FALSE(t.signal.has_value());
  EXPECT_FALSE(child.running());
  if (auto stored = child.termination()) {
    EXPECT_EQ(stored->exitCode, std::optional<int>(3));
  } else {
    ADD_FAILURE() << "termination() is empty after the child was reaped";
  }
}

TEST(ChildProcess, ReportsSignalWhenChildSegfaults) {
  auto child = forkChild([] {
    ::signal(SIGSEGV, SIG_DFL);
    ::raise(SIGSEGV);
  });
  Termination t = waitOrFail(child);
  ASSERT_TRUE(t.signal.has_value());
  EXPECT_EQ(*t.signal, SIGSEGV);
  EXPECT_EQ(signalName(*t.signal), "SIGSEGV");
  EXPECT_FALSE(t.exitCode.has_value());
  EXPECT_FALSE(t.coreDumped);  // RLIMIT_CORE is 0 in the child
}

TEST(ChildProcess, ReportsSignalWhenChildAborts) {
  auto child = forkChild([] { std::abort(); });
  Termination t = waitOrFail(child);
  ASSERT_TRUE(t.signal.has_value());
  EXPECT_EQ(*t.signal, SIGABRT);
  EXPECT_EQ(signalName(*t.signal), "SIGABRT");
}

TEST(ChildProcess, ReportsSignalWhenChildIsKilled) {
  auto child = forkChild([] { ::raise(SIGKILL); });
  Termination t = waitOrFail(child);
  ASSERT_TRUE(t.signal.has_value());
  EXPECT_EQ(*t.signal, SIGKILL);
  EXPECT_EQ(signalName(*t.signal), "SIGKILL");
  EXPECT_EQ(t.describeEnding().rfind("killed by SIGKILL", 0), 0u) << t.describeEnding();
}

TEST(ChildProcess, ChildMainThatReturnsOrThrowsExitsWith127) {
  auto returns = ChildProcess::fork([] {});
  auto throws = ChildProcess::fork([] { throw std::runtime_error("in the child"); });
  EXPECT_EQ(waitOrFail(returns).exitCode, std::optional<int>(127));
  EXPECT_EQ(waitOrFail(throws).exitCode, std::optional<int>(127));
}

TEST(ChildProcess, WaitForReturnsNullWhenTheDeadlinePassesFirst) {
  auto child = forkChild([] {
    for (;;) ::pause();
  });
  auto start = Clock::now();
  EXPECT_TRUE(child.waitFor(Deadline::after(0.2)) == std::nullopt);
  double elapsed = secondsSince(start);
  EXPECT_GE(elapsed, 0.19);
  EXPECT_LT(elapsed, 2.0);
  EXPECT_TRUE(child.running());
  EXPECT_TRUE(child.tryReap() == std::nullopt);

  Termination t = child.killAndReap();
  EXPECT_EQ(t.signal, std::optional<int>(SIGKILL));
  EXPECT_FALSE(child.running());
}

TEST(ChildProcess, TerminateStopsAChildThatHonoursSigtermWithoutWaitingOutTheGrace) {
  ReadySignal ready;
  auto child = forkChild([&] {
    ready.signal();
    for (;;) ::pause();
  });
  ASSERT_TRUE(ready.wait(kPatience));
  auto start = Clock::now();
  Termination t = child.terminate(kPatience);
  EXPECT_LT(secondsSince(start), kPatience / 2);
  EXPECT_EQ(t.signal, std::optional<int>(SIGTERM));
  EXPECT_FALSE(child.running());
}

TEST(ChildProcess, TerminateKillsAChildThatIgnoresSigtermAfterTheGrace) {
  ReadySignal ready;
  auto child = forkChild([&] {
    ::signal(SIGTERM, SIG_IGN);
    ready.signal();
    for (;;) ::pause();
  });
  ASSERT_TRUE(ready.wait(kPatience));  // SIGTERM is ignored from here on
  auto start = Clock::now();
  Termination t = child.terminate(0.3);
  double elapsed = secondsSince(start);
  EXPECT_EQ(t.signal, std::optional<int>(SIGKILL));
  EXPECT_GE(elapsed, 0.29);
  EXPECT_LT(elapsed, 3.0);
  EXPECT_FALSE(child.running());
}

TEST(ChildProcess, DestructorKillsAndReapsARunningChild) {
  pid_t pid;
  {
    auto child = forkChild([] {
      ::signal(SIGTERM, SIG_IGN);
      for (;;) ::pause();
    });
    pid = child.pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  // Gone and reaped: no process, and no zombie left for us to collect.
  errno = 0;
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  int status;
  errno = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(ChildProcess, MoveAssignmentKillsAndReapsTheChildItReplaces) {
  auto child = forkChild([] {
    for (;;) ::pause();
  });
  pid_t first = child.pid();
  child = forkChild([] { ::_exit(5); });
  int status;
  errno = 0;
  EXPECT_EQ(::waitpid(first, &status, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_EQ(waitOrFail(child).exitCode, std::optional<int>(5));
}

TEST(ChildProcess, AMovedFromObjectNoLongerOwnsTheChild) {
  auto child = forkChild([] {
    for (;;) ::pause();
  });
  pid_t pid = child.pid();
  {
    ChildProcess moved(std::move(child));
    EXPECT_FALSE(child.running());
    EXPECT_TRUE(moved.running());
    child.kill(SIGKILL);  // must not reach the child
    EXPECT_TRUE(moved.waitFor(Deadline::after(0.05)) == std::nullopt);
    EXPECT_EQ(::kill(pid, 0), 0);
  }
  EXPECT_EQ(::kill(pid, 0), -1);  // `moved` killed and reaped it
}

TEST(ChildProcess, ACopyInheritedByAnotherForkedProcessDoesNotActOnTheChild) {
  auto sibling = forkChild([] {
    for (;;) ::pause();
  });
  pid_t siblingPid = sibling.pid();
  // A second child inherits `sibling`; destroying its copy there must not kill the sibling,
  // and killing through it must do nothing.
  auto other = forkChild([&] {
    ChildProcess inherited(std::move(sibling));
    inherited.kill(SIGKILL);
    bool reapedHere = inherited.tryReap() != std::nullopt;
    { ChildProcess dropped(std::move(inherited)); }
    if (reapedHere) ::_exit(2);
    ::_exit(::kill(siblingPid, 0) == 0 ? 0 : 1);
  });
  EXPECT_EQ(waitOrFail(other).exitCode, std::optional<int>(0));
  EXPECT_TRUE(sibling.running());
  EXPECT_TRUE(sibling.tryReap() == std::nullopt);
  EXPECT_EQ(sibling.killAndReap().signal, std::optional<int>(SIGKILL));
}

TEST(ChildProcess, KillAndTerminateAfterReapingReturnTheStoredTermination) {
  auto child = forkChild([] { ::_exit(4); });
  waitOrFail(child);
  child.kill(SIGKILL);  // a reaped pid may belong to someone else by now: must not be signalled
  EXPECT_EQ(child.terminate(0.1).exitCode, std::optional<int>(4));
  EXPECT_EQ(child.killAndReap().exitCode, std::optional<int>(4));
  if (auto t = child.tryReap()) {
    EXPECT_EQ(t->exitCode, std::optional<int>(4));
  } else {
    ADD_FAILURE() << "tryReap after reaping returned nothing";
  }
}

TEST(ChildProcess, ReportsAnUnknownEndingWhenSomeoneElseReapedTheChild) {
  auto child = forkChild([] { ::_exit(6); });
  int status;
  ASSERT_EQ(::waitpid(child.pid(), &status, 0), child.pid());  // a host's waitpid(-1), say
  Termination t = waitOrFail(child);
  EXPECT_EQ(t.pid, child.pid());
  EXPECT_FALSE(t.exitCode.has_value());
  EXPECT_FALSE(t.signal.has_value());
  EXPECT_FALSE(child.running());
  EXPECT_EQ(t.describeEnding(), "ended (its exit status could not be read)");
}

TEST(ChildProcess, LeavesNoFileDescriptorOpen) {
  int before = test::openFdCount();
  {
    auto exits = forkChild([] { ::_exit(0); });
    if (exits.pidfd() >= 0) {
      EXPECT_EQ(test::openFdCount(), before + 1);  // the pidfd, while the child is ours
    }
    waitOrFail(exits);
    EXPECT_EQ(test::openFdCount(), before);  // reaping closed it
  }
  {
    auto runs = forkChild([] {
      for (;;) ::pause();
    });
  }
  {
    auto terminated = forkChild([] {
      for (;;) ::pause();
    });
    terminated.terminate(kPatience);
  }
  {
    auto replaced = forkChild([] {
      for (;;) ::pause();
    });
    replaced = forkChild([] { ::_exit(0); });
  }
  EXPECT_EQ(test::openFdCount(), before);
}

TEST(ChildProcess, PidfdBecomesReadableWhenTheChildExits) {
  ReadySignal ready;
  auto child = forkChild([&] {
    ready.signal();
    for (;;) ::pause();
  });
  if (child.pidfd() < 0) GTEST_SKIP() << "this kernel has no pidfd_open";
  ASSERT_TRUE(ready.wait(kPatience));
  pollfd pfd{child.pidfd(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
  child.kill(SIGKILL);
  EXPECT_EQ(::poll(&pfd, 1, int(kPatience * 1000)), 1);
  EXPECT_EQ(waitOrFail(child).signal, std::optional<int>(SIGKILL));
}

}  // namespace
}  // namespace pi
