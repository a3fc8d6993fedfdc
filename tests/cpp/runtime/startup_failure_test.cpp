// Tests runtime/startup_failure.cpp (and the memory limit it names, runtime/memory_limit.cpp):
// a child's reason on its crash pipe, and the parent's words for it.
#include "runtime/startup_failure.h"

#include "runtime/child_process.h"
#include "runtime/memory_limit.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <string>

namespace pi {
namespace {

// What a pipe's writers wrote, once they have all closed it.
std::string readAll(UniqueFd& fd) {
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buffer, sizeof(buffer))) > 0) text.append(buffer, size_t(n));
  return text;
}

struct Pipe {
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
  UniqueFd read, write;
};

// Runs `body` in a forked child whose reports go to a pipe; returns what it wrote there and
// sets `status` to its exit status.
std::string reportsOf(const std::function<void()>& body, std::optional<int>* status = nullptr) {
  Pipe pipe;
  int writeFd = pipe.write.get();
  ChildProcess child = ChildProcess::fork([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    setStartupReportFd(writeFd);
    body();
    ::_exit(0);
  });
  pipe.write.reset();
  std::string text = readAll(pipe.read);
  auto ended = child.waitFor(Deadline::after(10));
  if (!ended) ended = child.killAndReap();
  if (status != nullptr) *status = ended->exitCode;
  return text;
}

TEST(StartupFailure, EveryStartUpStatusHasWordsThatAreNotTheBareNumber) {
  for (int status : {0, kStartupFailed, kStartupParentGone, kStartupBootstrapFailed,
                     kStartupCannotLoadPackage, kStartupMainReturned, 5}) {
    std::string words = describeStartupStatus(status);
    EXPECT_GT(words.size(), 20u) << status;
  }
  EXPECT_NE(describeStartupStatus(kStartupParentGone).find("parent gone"), std::string::npos);
  EXPECT_NE(describeStartupStatus(kStartupCannotLoadPackage).find("cannot load"),
            std::string::npos);
  EXPECT_NE(describeStartupStatus(5).find("code 5 is not one of"), std::string::npos);
}

TEST(StartupFailure, AReportNamesWhatFailedAndTheErrno) {
  std::optional<int> status;
  std::string text = reportsOf([] { failStartup("cannot do the thing", EBADF, 70); }, &status);
  EXPECT_EQ(status, std::optional<int>(70));
  EXPECT_EQ(text, std::string(kChildReasonPrefix) +
                      "cannot do the thing: EBADF (Bad file descriptor)\n");
}

TEST(StartupFailure, AReportIsOneLineEvenWhenWhatFailedHasNewlines) {
  std::string text = reportsOf([] { reportStartupFailure("two\nlines"); });
  EXPECT_EQ(text, std::string(kChildReasonPrefix) + "two lines\n");
}

TEST(StartupFailure, RunningOutOfMemoryUnderTheMemoryLimitNamesTheLimit) {
  std::string text = reportsOf([] {
    applyMemoryLimit(1 << 20);
    reportStartupFailure("cannot map its rings", ENOMEM);
  });
  EXPECT_NE(text.find("cannot map its rings: ENOMEM"), std::string::npos) << text;
  EXPECT_NE(text.find("under Limits(memory=1048576)"), std::string::npos) << text;
  EXPECT_NE(text.find("too small for the child to start"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1) << text;
}

TEST(StartupFailure, WithoutAMemoryLimitRunningOutOfMemoryNamesNoLimit) {
  std::string text = reportsOf([] { reportStartupFailure("cannot map its rings", ENOMEM); });
  EXPECT_EQ(text.find("Limits(memory="), std::string::npos) << text;
}

TEST(MemoryLimit, IsWhatTheProcessMapsPlusTheBytesAdded) {
  std::string text = reportsOf([] {
    uint64_t limit = applyMemoryLimit(64 << 20);
    const AppliedMemoryLimit& applied = appliedMemoryLimit();
    bool right = applied.limit == limit && applied.added == (64u << 20) &&
                 applied.mapped > 0 && limit == applied.mapped + applied.added;
    reportStartupFailure(right ? "right" : "wrong");
  });
  EXPECT_EQ(text, std::string(kChildReasonPrefix) + "right\n");
}

TEST(StartupFailure, ExplainingMovesTheChildsReasonsFromTheTracebackToTheReason) {
  Termination t;
  t.exitCode = kStartupBootstrapFailed;
  t.childTraceback = std::string(kChildReasonPrefix) + "the start-up code raised OSError\n" +
                     "Traceback (most recent call last):\n  File \"x.py\", line 1\nOSError\n";
  t.reason = "the parent killed it";
  explainStartupFailure(t);
  EXPECT_EQ(t.reason, "the start-up code raised OSError; the parent killed it");
  EXPECT_EQ(t.childTraceback,
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nOSError");
}

TEST(StartupFailure, ExplainingAChildThatSaidNothingGivesTheWordsForItsStatus) {
  Termination t;
  t.exitCode = kStartupParentGone;
  explainStartupFailure(t);
  EXPECT_EQ(t.reason, describeStartupStatus(kStartupParentGone));
  Termination killed;
  killed.signal = SIGKILL;
  explainStartupFailure(killed);
  EXPECT_EQ(killed.reason, "");
}

}  // namespace
}  // namespace pi
