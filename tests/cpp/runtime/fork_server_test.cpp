// Tests runtime/fork_server.cpp without an interpreter: a fork server that cannot start or has
// to stop says why on its control socket and exits with a non-zero status.
#include "runtime/fork_server.h"

#include "runtime/startup_failure.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <string>

namespace pi {
namespace {

// One datagram from `fd`, waiting at most 10 s; empty at EOF or on timeout.
std::string receive(int fd) {
  pollfd pfd{fd, POLLIN, 0};
  if (::poll(&pfd, 1, 10000) != 1) return "";
  char buffer[8192];
  ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
  return n > 0 ? std::string(buffer, size_t(n)) : "";
}

// Forks a fork server on a SEQPACKET socketpair; with a lifeline at kForkServerLifelineFd when
// `lifeline` is true (this process holds its write end in `lifelineWrite`).
ChildProcess forkServer(UniqueFd& control, bool lifeline, UniqueFd& lifelineWrite) {
  int sockets[2], pipes[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets) != 0 ||
      ::pipe2(pipes, O_CLOEXEC) != 0) {
    throw std::runtime_error("socketpair/pipe2");
  }
  control.reset(sockets[0]);
  UniqueFd theirs(sockets[1]), lifelineRead(pipes[0]);
  lifelineWrite.reset(pipes[1]);
  pid_t parent = ::getpid();
  ChildProcess server = ChildProcess::fork([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(sockets[0]);  // the parent's ends (a spawned server never gets them)
    ::close(pipes[1]);
    if (lifeline) {
      ::dup2(pipes[0], kForkServerLifelineFd);
    } else {
      ::close(kForkServerLifelineFd);
    }
    runForkServer(theirs.get(), parent, false,
                  [](const std::string&, const ChildSetup&) { ::_exit(0); });
  });
  return server;
}

TEST(ForkServer, AServerWithoutItsLifelineSaysWhyAndExitsWithAFailure) {
  UniqueFd control, lifelineWrite;
  ChildProcess server = forkServer(control, false, lifelineWrite);
  std::string reason = receive(control.get());
  EXPECT_EQ(reason.rfind(kChildReasonPrefix, 0), 0u) << reason;
  EXPECT_NE(reason.find("cannot arm its lifeline"), std::string::npos) << reason;
  EXPECT_NE(reason.find("EBADF"), std::string::npos) << reason;
  auto ended = server.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(kStartupFailed));
}

TEST(ForkServer, AServerThatHasToStopSaysWhyAndExitsWithAFailureNotZero) {
  UniqueFd control, lifelineWrite;
  ChildProcess server = forkServer(control, true, lifelineWrite);
  ASSERT_EQ(receive(control.get()), "H");
  ASSERT_EQ(::send(control.get(), "R", 1, MSG_NOSIGNAL), 1);  // a reap request without a pid
  std::string reason = receive(control.get());
  EXPECT_EQ(reason.rfind(kChildReasonPrefix, 0), 0u) << reason;
  EXPECT_NE(reason.find("stopped: "), std::string::npos) << reason;
  EXPECT_NE(reason.find("too short"), std::string::npos) << reason;
  auto ended = server.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(kStartupFailed));
}

TEST(ForkServer, AServerWhoseParentClosesItsSocketExitsWithZero) {
  UniqueFd control, lifelineWrite;
  ChildProcess server = forkServer(control, true, lifelineWrite);
  ASSERT_EQ(receive(control.get()), "H");
  control.reset();
  auto ended = server.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(0));
}

}  // namespace
}  // namespace pi
