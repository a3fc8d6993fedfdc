// Tests runtime/peer_memory.cpp: copying from a child's memory, and refusing what it does not have.
//
// The children are forks of the test program, so an address of ours names the same memory in
// them: each child writes its own pattern there after fork, and the test reads it back. Every
// child is owned by a ChildProcess (killed and reaped if a test fails early) and dies with us.
#include "runtime/peer_memory.h"

#include "runtime/child_process.h"
#include "support/kj_expect.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

namespace pi {
namespace {

using test::throwsKj;
constexpr double kPatience = 10;
constexpr auto kFailed = kj::Exception::Type::FAILED;
constexpr auto kDisconnected = kj::Exception::Type::DISCONNECTED;

// A pipe: the child says it is ready, then waits (with a deadline) until the test is done.
class Handshake {
 public:
  Handshake() {
    int up[2], down[2];
    if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2");
    }
    readyRead_.reset(up[0]);
    readyWrite_.reset(up[1]);
    doneRead_.reset(down[0]);
    doneWrite_.reset(down[1]);
  }
  // In the child: says it is ready, then waits until the parent closes its end (or kPatience).
  void readyThenWait() {
    char byte = 1;
    (void)!::write(readyWrite_.get(), &byte, 1);
    doneWrite_.reset();
    pollfd pfd{doneRead_.get(), POLLIN, 0};
    ::poll(&pfd, 1, int(kPatience * 1000));
  }
  // In the parent: true when the child said it was ready before the deadline.
  bool awaitReady() {
    readyWrite_.reset();
    doneRead_.reset();
    pollfd pfd{readyRead_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, int(kPatience * 1000)) != 1) return false;
    char byte;
    return ::read(readyRead_.get(), &byte, 1) == 1;
  }

 private:
  UniqueFd readyRead_, readyWrite_, doneRead_, doneWrite_;
};

// Forks a child that dies with its parent, runs `body`, then says it is ready and waits.
ChildProcess forkChild(Handshake& handshake, const std::function<void()>& body) {
  return ChildProcess::fork([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    rlimit noCore{0, 0};
    ::setrlimit(RLIMIT_CORE, &noCore);
    body();
    handshake.readyThenWait();
    ::_exit(0);
  });
}

uint64_t addressOf(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(PeerMemory, CopiesWhatAChildHasInItsMemory) {
  std::vector<char> buffer(3 << 20, 'p');  // the parent's copy says 'p'; the child's says 'c'
  Handshake handshake;
  auto child = forkChild(handshake, [&] {
    for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = char('c' + i % 7);
  });
  ASSERT_TRUE(handshake.awaitReady());
  PeerMemory memory(child.pid());
  ASSERT_TRUE(memory.usable());
  EXPECT_EQ(memory.probe(addressOf(buffer.data()), buffer.size()), PeerMemory::Access::kDone);
  std::vector<char> copy(buffer.size(), 0);
  ASSERT_EQ(memory.read(addressOf(buffer.data()), copy.data(), copy.size()),
            PeerMemory::Access::kDone);
  for (size_t i = 0; i < copy.size(); ++i) {
    ASSERT_EQ(copy[i], char('c' + i % 7)) << "at " << i;
  }
}

TEST(PeerMemory, CopiesWhatTheParentHasInItsMemory) {
  // The other direction (a child reading spans of its parent, Setup.parentPid): the child's copy
  // of the buffer says 'p', the parent's is rewritten after fork; the child must see the
  // parent's. Its exit status is the verdict.
  std::vector<char> buffer(1 << 20, 'p');
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  UniqueFd goRead(go[0]), goWrite(go[1]);
  pid_t parent = ::getpid();
  auto child = ChildProcess::fork([&] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    goWrite.reset();
    pollfd pfd{goRead.get(), POLLIN, 0};
    if (::poll(&pfd, 1, int(kPatience * 1000)) != 1) ::_exit(10);
    std::vector<char> copy(buffer.size(), 0);
    try {
      PeerMemory memory(parent);
      if (memory.read(addressOf(buffer.data()), copy.data(), copy.size()) !=
          PeerMemory::Access::kDone) {
        ::_exit(11);
      }
    } catch (...) {
      ::_exit(12);
    }
    for (size_t i = 0; i < copy.size(); ++i) {
      if (copy[i] != char('P' + i % 5)) ::_exit(13);
    }
    ::_exit(0);
  });
  goRead.reset();
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = char('P' + i % 5);
  char byte = 1;
  ASSERT_EQ(::write(goWrite.get(), &byte, 1), 1);
  auto ended = child.waitFor(Deadline::after(kPatience));
  if (!ended) ended = child.killAndReap();
  EXPECT_EQ(ended->exitCode, std::optional<int>(0))
      << "10: never told to read; 11: refused; 12: threw; 13: read the child's own copy";
}

TEST(PeerMemory, RefusesAnAddressTheChildDoesNotHave) {
  Handshake handshake;
  auto child = forkChild(handshake, [] {});
  ASSERT_TRUE(handshake.awaitReady());
  PeerMemory memory(child.pid());
  char into[16];
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(16, 16); }, "does not have"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.read(16, into, sizeof(into)); }, "does not have"));
  // Null, and ranges that wrap around the end of the address space.
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(0, 16); }, "cannot be in its memory"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(~uint64_t{0} - 4, 16); },
                       "cannot be in its memory"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.read(~uint64_t{0} - 4, into, 16); },
                       "cannot be in its memory"));
}

TEST(PeerMemory, RefusesARangeThatRunsPastTheChildsMemory) {
  // Three pages, the last one unreadable: a claim one byte too long must fail, in the probe
  // (before the reader allocates) and in the read.
  size_t page = size_t(::sysconf(_SC_PAGESIZE));
  char* pages = static_cast<char*>(
      ::mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(pages, MAP_FAILED);
  KJ_DEFER(::munmap(pages, 3 * page));
  ASSERT_EQ(::mprotect(pages + 2 * page, page, PROT_NONE), 0);
  Handshake handshake;
  auto child = forkChild(handshake, [&] { memset(pages, 'c', 2 * page); });
  ASSERT_TRUE(handshake.awaitReady());
  PeerMemory memory(child.pid());
  std::vector<char> into(3 * page);
  EXPECT_EQ(memory.probe(addressOf(pages), 2 * page), PeerMemory::Access::kDone);
  EXPECT_EQ(memory.read(addressOf(pages), into.data(), 2 * page), PeerMemory::Access::kDone);
  EXPECT_EQ(into[2 * page - 1], 'c');
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(addressOf(pages), 2 * page + 1); },
                       "ends outside"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.read(addressOf(pages), into.data(), 2 * page + 1); },
                       "longer than"));
  // A range that starts in the unreadable page.
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(addressOf(pages + 2 * page), 8); }));
}

TEST(PeerMemory, ReportsAChildThatHasEndedAsDisconnected) {
  std::vector<char> buffer(4096, 'p');
  auto child = ChildProcess::fork([] { ::_exit(0); });
  PeerMemory memory(child.pid());  // taken while the child may still run, as the parent does
  ASSERT_GE(child.pidfd(), 0) << "this kernel has no pidfd";
  pollfd pfd{child.pidfd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, int(kPatience * 1000)), 1) << "the child did not exit";
  // Exited but not reaped: its pid cannot have been reused, but its memory is gone.
  char into[16];
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { memory.probe(addressOf(buffer.data()), 16); }));
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { memory.read(addressOf(buffer.data()), into, 16); }));
  ASSERT_TRUE(child.waitFor(Deadline::after(kPatience)));
}

TEST(PeerMemory, SaysRefusedWhenTheChildMadeItselfNonDumpable) {
  // The reader must lack CAP_SYS_PTRACE (which reads any process): when we are root, a helper
  // process gives up root first (and then makes itself dumpable again, which changing its user
  // undid and its children would inherit). It reads a dumpable child (the control: readable) and
  // one that called PR_SET_DUMPABLE 0 (refused). Its exit status is the test's verdict.
  auto helper = ChildProcess::fork([] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::geteuid() == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
        ::_exit(10);
      }
    }
    ::prctl(PR_SET_DUMPABLE, 1);
    std::vector<char> buffer(4096, 'p');
    auto readTarget = [&](bool dumpable) -> int {
      Handshake handshake;
      auto target = forkChild(handshake, [&] { ::prctl(PR_SET_DUMPABLE, dumpable ? 1 : 0); });
      if (!handshake.awaitReady()) return 11;
      PeerMemory memory(target.pid());
      auto expected = dumpable ? PeerMemory::Access::kDone : PeerMemory::Access::kRefused;
      char into[16];
      int status = 0;
      try {
        int wrong = dumpable ? 12 : 13;
        if (memory.probe(addressOf(buffer.data()), 16) != expected) status = wrong;
        if (memory.read(addressOf(buffer.data()), into, 16) != expected) status = wrong;
      } catch (...) {
        status = 14;
      }
      target.killAndReap();
      return status;
    };
    int status = readTarget(true);
    ::_exit(status != 0 ? status : readTarget(false));
  });
  auto ended = helper.waitFor(Deadline::after(kPatience));
  if (!ended) ended = helper.killAndReap();
  EXPECT_EQ(ended->exitCode, std::optional<int>(0))
      << "10: could not give up root; 11: no target; 12: a dumpable child was not readable; "
         "13: a non-dumpable one was not refused; 14: threw";
}

TEST(PeerMemory, ADefaultOneReadsNothing) {
  PeerMemory memory;
  EXPECT_FALSE(memory.usable());
  char into[4];
  EXPECT_TRUE(throwsKj(kFailed, [&] { memory.probe(addressOf(into), 4); }));
}

}  // namespace
}  // namespace pi
