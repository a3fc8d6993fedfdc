// Test environment that fails the run when a test leaves a child process or a file descriptor.
#include "support/leak_check.h"

#include <dirent.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace pi::test {

int openFdCount() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    ADD_FAILURE() << "opendir(/proc/self/fd): " << strerror(errno);
    return -1;
  }
  int count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory stream's own fd
}

void LeakCheck::SetUp() { fdsBefore_ = openFdCount(); }

void LeakCheck::TearDown() {
  EXPECT_EQ(openFdCount(), fdsBefore_) << "file descriptors leaked";
  int status = 0;
  pid_t pid = ::waitpid(-1, &status, WNOHANG);
  EXPECT_EQ(pid, -1) << (pid == 0 ? "a child process is still running"
                                  : "an exited child was never reaped: pid " + std::to_string(pid));
  if (pid == -1) {
    EXPECT_EQ(errno, ECHILD) << strerror(errno);
  }
}

}  // namespace pi::test
