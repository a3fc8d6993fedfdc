// Tests runtime/termination.cpp: wait statuses, the crash report split, the one-line ending.
#include "runtime/termination.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

namespace pi {
namespace {

TEST(Termination, ReadsAnExitCodeFromAWaitStatus) {
  Termination t = Termination::fromWaitStatus(123, W_EXITCODE(3, 0));
  EXPECT_EQ(t.pid, 123);
  EXPECT_EQ(t.exitCode, std::optional<int>(3));
  EXPECT_FALSE(t.signal.has_value());
  EXPECT_FALSE(t.coreDumped);
  EXPECT_EQ(t.describeEnding(), "exited with code 3");
}

TEST(Termination, ReadsASignalAndCoreDumpFromAWaitStatus) {
  Termination t = Termination::fromWaitStatus(7, W_EXITCODE(0, SIGSEGV) | WCOREFLAG);
  EXPECT_FALSE(t.exitCode.has_value());
  EXPECT_EQ(t.signal, std::optional<int>(SIGSEGV));
  EXPECT_TRUE(t.coreDumped);
  EXPECT_EQ(t.describeEnding(), "killed by SIGSEGV (Segmentation fault), core dumped");

  Termination killed = Termination::fromWaitStatus(7, W_EXITCODE(0, SIGKILL));
  EXPECT_FALSE(killed.coreDumped);
  EXPECT_EQ(killed.describeEnding(), "killed by SIGKILL (Killed)");
}

TEST(Termination, DescribesAnEndingWhoseStatusIsUnknown) {
  Termination t;
  t.pid = 9;
  EXPECT_EQ(t.describeEnding(), "ended (its exit status could not be read)");
}

// What the child's crash handler writes (child_main.cpp): the native stack between markers,
// then faulthandler's Python traceback.
constexpr const char kCrashReport[] =
    "--- native stack ---\n"
    "libbuggy.so(dragons+0x11)[0x7f0000001234]\n"
    "python(main+0x22)[0x5678]\n"
    "--- end native stack ---\n"
    "Fatal Python error: Segmentation fault\n\n"
    "Current thread 0x01 (most recent call first):\n"
    "  File \"buggy.py\", line 3 in dragons_here\n\n";

TEST(Termination, SplitsTheCrashReportIntoNativeStackAndPythonTraceback) {
  Termination t;
  t.setCrashReport(kCrashReport);
  EXPECT_EQ(t.nativeTraceback,
            "libbuggy.so(dragons+0x11)[0x7f0000001234]\n"
            "python(main+0x22)[0x5678]");
  EXPECT_EQ(t.childTraceback,
            "Fatal Python error: Segmentation fault\n\n"
            "Current thread 0x01 (most recent call first):\n"
            "  File \"buggy.py\", line 3 in dragons_here");
}

TEST(Termination, KeepsANativeStackCutShortByTheCrash) {
  Termination t;
  t.setCrashReport("--- native stack ---\nframe one\nframe tw");
  EXPECT_EQ(t.nativeTraceback, "frame one\nframe tw");
  EXPECT_EQ(t.childTraceback, "");
}

TEST(Termination, KeepsAReportWithoutMarkersAsThePythonTraceback) {
  Termination t;
  t.setCrashReport(kCrashReport);
  t.setCrashReport("Traceback (most recent call last):\n  File \"x.py\", line 1\n \n\n");
  EXPECT_EQ(t.childTraceback, "Traceback (most recent call last):\n  File \"x.py\", line 1");
  EXPECT_EQ(t.nativeTraceback, "");  // nothing left over from the earlier report

  t.setCrashReport("");
  EXPECT_EQ(t.childTraceback, "");
  EXPECT_EQ(t.nativeTraceback, "");
}

TEST(Termination, NamesSignals) {
  EXPECT_EQ(signalName(SIGSEGV), "SIGSEGV");
  EXPECT_EQ(signalName(SIGABRT), "SIGABRT");
  EXPECT_EQ(signalName(SIGKILL), "SIGKILL");
  EXPECT_EQ(signalName(SIGTERM), "SIGTERM");
  EXPECT_EQ(signalName(77), "signal 77");
}

}  // namespace
}  // namespace pi
