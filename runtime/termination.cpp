// How a child ended, as a value: pid, exit code or signal, core dump, what it printed as it died.
#include "runtime/termination.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

namespace pi {

namespace {

// Marker the child's native crash handler writes before the C-level stack.
constexpr const char kNativeMarker[] = "\n--- native stack ---\n";

}  // namespace

Termination Termination::fromWaitStatus(pid_t pid, int status) {
  Termination t;
  t.pid = pid;
  if (WIFEXITED(status)) {
    t.exitCode = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    t.signal = WTERMSIG(status);
    t.coreDumped = WCOREDUMP(status);
  }
  return t;
}

void Termination::setCrashReport(const std::string& report) {
  auto at = report.find(kNativeMarker);
  if (at == std::string::npos) {
    childTraceback = report;
    nativeTraceback.clear();
  } else {
    childTraceback = report.substr(0, at);
    nativeTraceback = report.substr(at + sizeof(kNativeMarker) - 1);
  }
  while (!childTraceback.empty() && (childTraceback.back() == '\n' || childTraceback.back() == ' ')) {
    childTraceback.pop_back();
  }
}

std::string Termination::describeEnding() const {
  if (signal) {
    std::string s = "killed by " + signalName(*signal);
    const char* text = strsignal(*signal);
    if (text != nullptr) s += std::string(" (") + text + ")";
    if (coreDumped) s += ", core dumped";
    return s;
  }
  if (exitCode) return "exited with code " + std::to_string(*exitCode);
  return "ended (its exit status could not be read)";
}

std::string signalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  if (abbrev != nullptr) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signal);
}

}  // namespace pi
