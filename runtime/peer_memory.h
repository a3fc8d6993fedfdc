// Copying bytes out of a peer's memory (process_vm_readv), with the checks a hostile child needs.
#pragma once

#include "runtime/unique_fd.h"

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace pi {

// Reads the memory of one peer process: how one side takes a large value the other left in its
// own memory (wire `Buffer.address`) with one copy. The parent reads its child; a child reads its
// parent when the parent offered it (Setup.parentPid). The addresses come from the peer, which
// may be hostile: a range it does not have mapped readable is an error (never a crash here), and
// the only memory ever written is the caller's destination.
//
// Pid reuse: the pid must name a process that cannot have been reaped before construction (an
// unreaped child of this process, or of a fork server that reaps only when asked; or a process
// whose identity the caller checks after construction, as a child checks its parent with the
// setup's probe token), and a pidfd taken at construction is checked after every read: a read
// that overlapped the peer's exit may have come from a recycled pid, so it counts as the peer
// gone.
//
// Errors are kj exceptions: FAILED for a range the peer does not have (unmapped, unreadable,
// shorter than it claimed), DISCONNECTED when the peer has ended. The OS refusing the read as a
// whole (EPERM: the peer made itself non-dumpable, another user, a security module) is not an
// error but Access::kRefused: the caller falls back to another way of getting the bytes.
//
// Needs no GIL; not thread-safe (callers serialize). Not fork-safe: a forked copy must abandon().
class PeerMemory {
 public:
  enum class Access { kDone, kRefused };

  // Reads nothing: usable() is false.
  PeerMemory() = default;
  // Reads the memory of `pid` (see the pid reuse note above).
  explicit PeerMemory(pid_t pid);

  PeerMemory(PeerMemory&&) = default;
  PeerMemory& operator=(PeerMemory&&) = default;
  PeerMemory(const PeerMemory&) = delete;
  PeerMemory& operator=(const PeerMemory&) = delete;

  bool usable() const { return pid_ > 0; }

  // Checks, with one tiny read, that the first and the last byte of [address, address + size)
  // are readable: cheap validation of a peer's claim before the caller allocates `size` bytes.
  // `size` must be at least 1.
  Access probe(uint64_t address, uint64_t size);

  // Copies [address, address + size) into `into` (`size` bytes the caller owns). A range that
  // is only partly readable throws FAILED; `into` then holds an unspecified prefix.
  Access read(uint64_t address, void* into, size_t size);

  // Stops reading: closes the pidfd. usable() becomes false.
  void close();
  // Like close(), but leaves the pidfd open: for a copy inherited across fork, whose fd number
  // may by now belong to something else.
  void abandon();

 private:
  // Throws DISCONNECTED when the pidfd says the peer has exited.
  void checkAlive() const;

  pid_t pid_ = -1;
  UniqueFd pidfd_;  // -1 when the kernel has no pidfd_open (then reads are not re-checked)
};

}  // namespace pi
