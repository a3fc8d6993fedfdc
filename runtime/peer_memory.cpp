// Copying bytes out of a peer's memory (process_vm_readv), with the checks a hostile child needs.
#include "runtime/peer_memory.h"

#include "runtime/process_id.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pi {

namespace {

// Largest piece one process_vm_readv copies here. The kernel silently shortens a request above
// MAX_RW_COUNT (just under 2 GiB) to that much, which would look like a short read; below it a
// short read always means the peer's range ended early.
constexpr size_t kMaxReadPiece = size_t{1} << 30;

// One process_vm_readv, EINTR retried. Returns the bytes copied, or -1 with errno.
ssize_t readv(pid_t pid, const iovec* local, unsigned long localCount, const iovec* remote,
              unsigned long remoteCount) {
  for (;;) {
    ssize_t n = ::process_vm_readv(pid, local, localCount, remote, remoteCount, 0);
    if (n >= 0 || errno != EINTR) return n;
  }
}

// Turns a failed process_vm_readv into kRefused or the matching kj exception.
PeerMemory::Access failure(int error, uint64_t address, uint64_t size) {
  switch (error) {
    case EPERM:
      return PeerMemory::Access::kRefused;
    case ESRCH:
      kj::throwFatalException(
          KJ_EXCEPTION(DISCONNECTED, "the peer ended before its memory was read"));
    case EFAULT:
      kj::throwFatalException(KJ_EXCEPTION(FAILED, "peer named memory it does not have", address,
                                           size));
    default:
      KJ_FAIL_SYSCALL("process_vm_readv", error, address, size);
  }
}

}  // namespace

PeerMemory::PeerMemory(pid_t pid) : pid_(pid), pidfd_(openPidfd(pid)) {
  KJ_REQUIRE(pid > 0, "no such peer process", pid);
}

void PeerMemory::checkAlive() const {
  if (!pidfd_) return;
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&pfd, 1, 0);
  } while (ready < 0 && errno == EINTR);
  if (ready > 0) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "the peer ended while its memory was read"));
  }
}

PeerMemory::Access PeerMemory::probe(uint64_t address, uint64_t size) {
  KJ_REQUIRE(usable(), "this side does not read its peer's memory");
  KJ_REQUIRE(size > 0 && address != 0 && address + size > address,
             "peer named a range that cannot be in its memory", address, size);
  char bytes[2];
  iovec local{bytes, sizeof(bytes)};
  iovec remote[2] = {{reinterpret_cast<void*>(address), 1},
                     {reinterpret_cast<void*>(address + size - 1), 1}};
  ssize_t n = readv(pid_, &local, 1, remote, 2);
  if (n < 0) return failure(errno, address, size);
  KJ_REQUIRE(n == 2, "peer named a range that ends outside its memory", address, size);
  return Access::kDone;
}

PeerMemory::Access PeerMemory::read(uint64_t address, void* into, size_t size) {
  KJ_REQUIRE(usable(), "this side does not read its peer's memory");
  KJ_REQUIRE(address != 0 && address + size >= address,
             "peer named a range that cannot be in its memory", address, size);
  size_t done = 0;
  while (done < size) {
    size_t piece = std::min(size - done, kMaxReadPiece);
    iovec local{static_cast<char*>(into) + done, piece};
    iovec remote{reinterpret_cast<void*>(address + done), piece};
    ssize_t n = readv(pid_, &local, 1, &remote, 1);
    if (n < 0) {
      int error = errno;
      // Refused half-way means the peer changed who may read it mid-copy: count it as unreadable.
      KJ_REQUIRE(error != EPERM || done == 0, "peer's memory could not be read to the end",
                 address, size, done);
      if (failure(error, address, size) == Access::kRefused) return Access::kRefused;
    }
    KJ_REQUIRE(size_t(n) == piece, "peer named a range longer than the memory it has", address,
               size, done + size_t(n));
    done += piece;
  }
  checkAlive();
  return Access::kDone;
}

void PeerMemory::close() {
  pidfd_.reset();
  pid_ = -1;
}

void PeerMemory::abandon() {
  pidfd_.release();
  pid_ = -1;
}

}  // namespace pi
