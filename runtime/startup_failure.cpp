// Why a child or a fork server could not start, in words: the child's side writes its reason to
// its crash pipe, the parent's side turns that and the exit status into a sentence.
#include "runtime/startup_failure.h"

#include "runtime/memory_limit.h"

#include <string.h>
#include <unistd.h>

#include <cerrno>

namespace pi {

namespace {

int gReportFd = -1;

void writeAll(int fd, const char* at, size_t left) {
  while (left > 0) {
    ssize_t n = ::write(fd, at, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += n;
    left -= size_t(n);
  }
}

// A line built on the stack, cut short when full: no allocation, async-signal-safe.
class Line {
 public:
  void add(const char* text) {
    for (; *text != '\0' && size_ < sizeof(text_) - 1; ++text) {
      text_[size_++] = *text == '\n' ? ' ' : *text;
    }
  }
  void addNumber(uint64_t value) {
    char digits[24];
    size_t count = 0;
    do {
      digits[count++] = char('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (count > 0 && size_ < sizeof(text_) - 1) text_[size_++] = digits[--count];
  }
  // "412.5 MiB"
  void addMebibytes(uint64_t bytes) {
    uint64_t tenths = (bytes * 10 + (1 << 19)) >> 20;
    addNumber(tenths / 10);
    add(".");
    addNumber(tenths % 10);
    add(" MiB");
  }
  void end() { text_[size_++] = '\n'; }  // add() leaves room for it
  void writeTo(int fd) { writeAll(fd, text_, size_); }

 private:
  char text_[4096];
  size_t size_ = 0;
};

}  // namespace

void setStartupReportFd(int fd) { gReportFd = fd; }

void reportStartupFailure(const char* what, int error, bool outOfMemory) {
  int saved = errno;
  Line line;
  line.add(kChildReasonPrefix);
  line.add(what);
  if (error != 0) {
    const char* name = strerrorname_np(error);
    const char* text = strerrordesc_np(error);
    line.add(": ");
    if (name != nullptr) {
      line.add(name);
    } else {
      line.add("errno ");
      line.addNumber(uint64_t(error));
    }
    if (text != nullptr) {
      line.add(" (");
      line.add(text);
      line.add(")");
    }
  }
  const AppliedMemoryLimit& memory = appliedMemoryLimit();
  if ((outOfMemory || error == ENOMEM) && memory.limit != 0) {
    line.add(". It ran out of memory under Limits(memory=");
    line.addNumber(memory.added);
    line.add("), which lets it map ");
    line.addMebibytes(memory.added);
    line.add(" on top of the ");
    line.addMebibytes(memory.mapped);
    line.add(" it had when the limit was applied (RLIMIT_AS ");
    line.addMebibytes(memory.limit);
    line.add("): the limit is too small for the child to start; raise it");
  }
  line.end();
  line.writeTo(gReportFd >= 0 ? gReportFd : 2);
  errno = saved;
}

void writeStartupReport(const char* text) {
  writeAll(gReportFd >= 0 ? gReportFd : 2, text, strlen(text));
}

void failStartup(const char* what, int error, int status) {
  reportStartupFailure(what, error);
  ::_exit(status);
}

std::string describeStartupStatus(int exitCode) {
  switch (exitCode) {
    case 0:
      return "it exited before it was ready (did its start-up code call sys.exit()?)";
    case kStartupFailed:
      return "a step of its start-up failed (the child could not say which)";
    case kStartupParentGone:
      return "it found its parent gone before it could start";
    case kStartupBootstrapFailed:
      return "the context's start-up code raised an exception (the child's stderr shows the "
             "traceback)";
    case kStartupCannotLoadPackage:
      return "its interpreter cannot load process_isolation (its stderr says why)";
    case kStartupMainReturned:
      return "its start-up code returned instead of serving";
    default:
      return "code " + std::to_string(exitCode) +
             " is not one of process_isolation's start-up statuses (70-73, 127): it came from "
             "its interpreter or from code run at its start-up (its stderr may say more)";
  }
}

void explainStartupFailure(Termination& t) {
  std::string reasons;
  std::string rest;
  const std::string prefix = kChildReasonPrefix;
  size_t at = 0;
  const std::string& report = t.childTraceback;
  while (at < report.size()) {
    size_t end = report.find('\n', at);
    if (end == std::string::npos) end = report.size();
    std::string line = report.substr(at, end - at);
    if (line.compare(0, prefix.size(), prefix) == 0) {
      if (!reasons.empty()) reasons += "; ";
      reasons += line.substr(prefix.size());
    } else {
      rest += line;
      rest += '\n';
    }
    at = end + 1;
  }
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == ' ')) rest.pop_back();
  while (!rest.empty() && rest.front() == '\n') rest.erase(0, 1);
  t.childTraceback = rest;
  if (reasons.empty() && t.exitCode) reasons = describeStartupStatus(*t.exitCode);
  if (reasons.empty()) return;
  t.reason = t.reason.empty() ? reasons : reasons + "; " + t.reason;
}

}  // namespace pi
