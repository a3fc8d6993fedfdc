// How a child ended, as a value: pid, exit code or signal, core dump, what it printed as it died.
#include "runtime/termination.h"

#include "runtime/peer_text.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

namespace pi {

namespace {

// Markers the child's native crash handler writes around the C-level stack (child_main.cpp).
constexpr const char kNativeBegin[] = "--- native stack ---\n";
constexpr const char kNativeEnd[] = "--- end native stack ---\n";

void trimTrailing(std::string& text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
}

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

void Termination::setCrashReport(const std::string& rawReport) {
  // The child wrote the report: any bytes at all, and a crash may cut a character in half.
  std::string report = peerText(rawReport);
  childTraceback.clear();
  nativeTraceback.clear();
  size_t at = 0;
  for (;;) {
    size_t begin = report.find(kNativeBegin, at);
    if (begin == std::string::npos) {
      childTraceback += report.substr(at);
      break;
    }
    childTraceback += report.substr(at, begin - at);
    size_t body = begin + sizeof(kNativeBegin) - 1;
    size_t end = report.find(kNativeEnd, body);
    if (end == std::string::npos) {
      nativeTraceback += report.substr(body);
      break;
    }
    nativeTraceback += report.substr(body, end - body);
    at = end + sizeof(kNativeEnd) - 1;
  }
  while (!childTraceback.empty() && childTraceback.front() == '\n') childTraceback.erase(0, 1);
  trimTrailing(childTraceback);
  trimTrailing(nativeTraceback);
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

TerminationError::TerminationError(Termination termination, Kind kind, std::string detail)
    : termination_(std::move(termination)), kind_(kind), detail_(peerText(detail)) {}

void TerminationError::setCall(std::string call) { call_ = peerText(call); }

ClientStateError::ClientStateError(std::string message) : message_(peerText(message)) {}

}  // namespace pi
