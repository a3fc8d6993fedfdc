// How a child ended, as a value: pid, exit code or signal, core dump, what it printed as it died.
#pragma once

#include <sys/types.h>

#include <exception>
#include <optional>
#include <string>

namespace pi {

// Value type describing the end of one child process.
struct Termination {
  pid_t pid = 0;
  std::optional<int> exitCode;   // set when the child exited
  std::optional<int> signal;     // set when a signal killed it
  bool coreDumped = false;
  std::string childTraceback;    // Python traceback(s) the child's faulthandler wrote, or empty
  std::string nativeTraceback;   // C-level stack of the crashing thread, or empty
  std::string reason;            // why the parent ended the child, when it did; else empty
  std::string stdoutTail;        // last lines of a captured stdout, or empty
  std::string stderrTail;        // last lines of a captured stderr, or empty

  // From a waitpid()/waitid() status word.
  static Termination fromWaitStatus(pid_t pid, int status);

  // Fills childTraceback and nativeTraceback from what the child wrote to its crash pipe (any
  // bytes: kept as valid UTF-8, see peerText).
  void setCrashReport(const std::string& report);

  // One line: "killed by SIGSEGV (Segmentation fault), core dumped" or "exited with code 3".
  std::string describeEnding() const;
};

// "SIGSEGV" for SIGSEGV; "signal 77" for numbers without a name.
std::string signalName(int signal);

// Thrown when the child ended (or was ended) while a call was in flight. Carries the
// Termination; the Python layer turns it into ProcessTerminationError exactly once.
class TerminationError : public std::exception {
 public:
  enum class Kind { kCrash, kProtocol, kTimeout };

  // `detail` may quote what the child sent: it is kept as valid UTF-8 (peerText).
  TerminationError(Termination termination, Kind kind, std::string detail);

  const Termination& termination() const { return termination_; }
  Kind kind() const { return kind_; }
  // Extra words for the report (the protocol violation, the timeout), or empty.
  const std::string& detail() const { return detail_; }
  // What was in flight, e.g. "buggy.dragons_here(3)"; filled in by the proxy that made the call.
  const std::string& call() const { return call_; }
  // Kept as valid UTF-8 (peerText): it quotes the call's arguments, cut to a length in bytes.
  void setCall(std::string call);
  const char* what() const noexcept override { return "isolated child terminated"; }

 private:
  Termination termination_;
  Kind kind_;
  std::string detail_;
  std::string call_;
};

// Thrown when a proxy or context is used after its child ended or was restarted.
class ClientStateError : public std::exception {
 public:
  // `message` may quote what the child sent: it is kept as valid UTF-8 (peerText).
  explicit ClientStateError(std::string message);
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

}  // namespace pi
