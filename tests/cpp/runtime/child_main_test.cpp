// Tests runtime/child_main.cpp without an interpreter: where runChild puts the child's fds, and
// what it says when it cannot start.
#include "runtime/child_main.h"

#include "runtime/child_process.h"
#include "runtime/startup_failure.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <string>

namespace pi {
namespace {

std::string readAll(int fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) text.append(buffer, size_t(n));
  return text;
}

std::string target(int fd) {
  char path[64], link[PATH_MAX];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(path, link, sizeof(link) - 1);
  return n < 0 ? "" : std::string(link, size_t(n));
}

// Checks, in the child, where runChild put things; exits 0 when all is right, else 1..n.
class PlacementCheck : public MessageHandler {
 public:
  PlacementCheck(int lowFd, int crashFd) : lowFd_(lowFd), crashFd_(crashFd) {}
  int serve(UniqueFd socket) override {
    int fd = socket.release();
    if (target(lowFd_) != "/dev/null") return 1;   // the inherited fd: /dev/null behind it
    if (fd <= lowFd_ || fd <= crashFd_) return 2;   // the socket: above every inherited fd
    if (target(fd).rfind("socket:", 0) != 0) return 3;
    if ((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0) return 4;
    if ((::fcntl(lowFd_, F_GETFD) & FD_CLOEXEC) == 0) return 5;
    if (::write(lowFd_, "x", 1) != 1) return 6;  // writing through it is harmless
    return 0;
  }

 private:
  int lowFd_, crashFd_;
};

class Nothing : public MessageHandler {
 public:
  int serve(UniqueFd) override { return 0; }
};

TEST(RunChild, PutsDevNullBehindInheritedFdsAndItsOwnFdsAboveThem) {
  int sockets[2], pipes[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  UniqueFd parentSocket(sockets[0]), childSocket(sockets[1]);
  UniqueFd crashRead(pipes[0]), crashWrite(pipes[1]);
  // A file of "the program", at a number below the library's fds.
  UniqueFd low(::open("/proc/self/status", O_RDONLY | O_CLOEXEC));
  ASSERT_GE(low.get(), 0);
  ChildSetup setup;
  setup.socketFd = childSocket.get();
  setup.crashFd = crashWrite.get();
  setup.parentPid = ::getpid();
  setup.deathSignal = true;
  PlacementCheck check(low.get(), crashWrite.get());
  ChildProcess child = ChildProcess::fork([&] { runChild(setup, check); });
  childSocket.reset();
  crashWrite.reset();
  auto ended = child.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(0)) << readAll(crashRead.get());
}

TEST(RunChild, AChildWhoseParentIsNotThereSaysSoAndExitsWithParentGone) {
  int sockets[2], pipes[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  UniqueFd parentSocket(sockets[0]), childSocket(sockets[1]);
  UniqueFd crashRead(pipes[0]), crashWrite(pipes[1]);
  ChildSetup setup;
  setup.socketFd = childSocket.get();
  setup.crashFd = crashWrite.get();
  setup.parentPid = 1;  // not its parent
  setup.deathSignal = false;
  Nothing nothing;
  ChildProcess child = ChildProcess::fork([&] { runChild(setup, nothing); });
  childSocket.reset();
  crashWrite.reset();
  std::string report = readAll(crashRead.get());
  auto ended = child.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(kStartupParentGone));
  EXPECT_EQ(report.rfind(kChildReasonPrefix, 0), 0u) << report;
  EXPECT_NE(report.find("its parent is not the process that started it"), std::string::npos);
}

TEST(ChildProcess, AChildMainThatReturnsSaysSoWhereReportsGo) {
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  UniqueFd read(pipes[0]), write(pipes[1]);
  int writeFd = write.get();
  ChildProcess child = ChildProcess::fork([&] { setStartupReportFd(writeFd); });
  write.reset();
  std::string report = readAll(read.get());
  auto ended = child.waitFor(Deadline::after(10));
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->exitCode, std::optional<int>(kStartupMainReturned));
  EXPECT_NE(report.find("returned or threw instead of serving"), std::string::npos) << report;
}

}  // namespace
}  // namespace pi
