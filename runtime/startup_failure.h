// Why a child or a fork server could not start, in words: the child's side writes its reason to
// its crash pipe, the parent's side turns that and the exit status into a sentence.
#pragma once

#include "runtime/termination.h"

#include <string>

namespace pi {

// Exit statuses of a child (or a fork server) that could not start. A child says why on its
// crash pipe before it exits with one of them (reportStartupFailure); the parent puts that in
// its termination error (explainStartupFailure) and falls back to describeStartupStatus.
constexpr int kStartupFailed = 70;             // a step of the start-up failed
constexpr int kStartupParentGone = 71;         // the parent ended before the child could start
constexpr int kStartupBootstrapFailed = 72;    // the context's start-up code raised
constexpr int kStartupCannotLoadPackage = 73;  // a spawned interpreter cannot load the package
constexpr int kStartupMainReturned = 127;      // the child's main returned instead of serving

// Starts a line a child writes to its crash pipe to say, in words, why it is ending. Whatever
// follows up to the newline is the reason (one sentence without the final period).
constexpr char kChildReasonPrefix[] = "process_isolation child: ";

// Child side ------------------------------------------------------------------------------

// Where reports go from now on: `fd` (the child's crash pipe), or stderr when -1.
// Async-signal-safe.
void setStartupReportFd(int fd);

// Writes one line "process_isolation child: <what>[: <errno name> (<errno text>)]" and, when
// the failure ran out of memory (`error` is ENOMEM or `outOfMemory`) while applyMemoryLimit's
// limit is in force, a sentence naming that limit. `error` is an errno value or 0; newlines in
// `what` become spaces, and long text is cut at 4 KiB. Async-signal-safe.
void reportStartupFailure(const char* what, int error = 0, bool outOfMemory = false);

// Writes `text` as it is (a traceback, after the reason) where reports go. Async-signal-safe.
void writeStartupReport(const char* text);

// reportStartupFailure, then _exit(status). Async-signal-safe.
[[noreturn]] void failStartup(const char* what, int error, int status);

// Parent side -----------------------------------------------------------------------------

// What a start-up exit status means, as a clause ("it found its parent gone before it could
// start"); for a status that is not one of the above, says that it came from the child's
// interpreter or code.
std::string describeStartupStatus(int exitCode);

// Explains a child that ended during its start-up: moves the reasons the child wrote
// (kChildReasonPrefix lines) from `t.childTraceback` to the front of `t.reason`, or, when it
// wrote none and exited, puts describeStartupStatus there.
void explainStartupFailure(Termination& t);

}  // namespace pi
