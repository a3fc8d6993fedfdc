// Two one-way byte rings in one shared mapping: the fast path of a Channel.
#pragma once

#include "runtime/unique_fd.h"

#include <kj/common.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace pi {

// Which end of a connection a process is. The parent writes ring 0 and reads ring 1; the child
// writes ring 1 and reads ring 0.
enum class RingSide { kParent, kChild };

// A memfd mapped into both processes, holding two single-producer single-consumer byte rings,
// one per direction. Each ring carries the same byte stream the socket would (whole frames in
// capnp stream framing, back to back); the socket stays the wake-up line and the death detector
// (see Channel).
//
// Layout (docs/protocol.md, "Shared memory"): a 4 KiB control page (a header, then for each ring
// the writer's and the reader's cursor, each on a cache line of its own), then ring 0's bytes,
// then ring 1's. A cursor is a position (bytes ever written or read: 64 bits, only growing) and
// a "waiting" flag its owner raises before it sleeps on the socket.
//
// Trust: the parent creates the memfd and seals it against shrinking and growing, so a child can
// never truncate the mapping under the parent (which would be a SIGBUS). The parent keeps its own
// positions privately and only publishes them; every value it reads from the peer (the write
// position of the ring it reads, the read position of the ring it writes) is checked when used,
// so a peer scribbling on the mapping causes a kj FAILED exception, never an access outside the
// mapping. The peer can still write any bytes into the ring we read: callers copy them out once
// and parse only their private copy.
//
// Not thread-safe (the Channel's caller serializes). Mapped MADV_DONTFORK, so a process forked
// from either side has no copy of the mapping: nothing made before fork is used on both sides.
// A forked copy of this object must be leaked, not destroyed (its munmap could hit whatever now
// lives at that address): see Channel::abandon.
class SharedRings {
 public:
  // Bytes per ring unless the caller asks otherwise. Frames larger than a ring stream through it.
  static constexpr size_t kDefaultCapacity = size_t{512} << 10;
  static constexpr size_t kMinCapacity = size_t{4} << 10;
  static constexpr size_t kMaxCapacity = size_t{64} << 20;

  // Parent side: makes and maps a sealed memfd with two rings of `capacity` bytes (a power of two
  // in [kMinCapacity, kMaxCapacity]). Throws (kj FAILED) when the kernel refuses.
  static std::unique_ptr<SharedRings> create(size_t capacity = kDefaultCapacity);

  // Child side: maps the memfd the parent sent. Throws (kj FAILED) when it is not a sealed memfd
  // of the size and layout create() makes.
  static std::unique_ptr<SharedRings> attach(UniqueFd fd, RingSide side);

  ~SharedRings();
  SharedRings(const SharedRings&) = delete;
  SharedRings& operator=(const SharedRings&) = delete;

  // The memfd, to pass to the peer (the mapping does not need it). Empty after the first call.
  UniqueFd takeFd() { return std::move(fd_); }

  // Which end this is (create() makes the parent's end).
  RingSide side() const { return side_; }

  size_t capacity() const { return capacity_; }

  // Writing our outgoing ring. Copies as much of [data, data + size) as fits and publishes it;
  // returns how much (0 when the ring is full). Throws FAILED when the peer's read position is
  // impossible.
  size_t write(const kj::byte* data, size_t size);
  // Room left in our outgoing ring, and bytes of it the peer has not read yet. Throw like
  // write().
  size_t outgoingSpace();
  size_t outgoingUnread() { return capacity_ - outgoingSpace(); }

  // Reading our incoming ring: bytes available now, and a copy of up to `size` of them (which it
  // consumes). Throw FAILED when the peer's write position is impossible.
  size_t available();
  size_t read(kj::byte* out, size_t size);

  // The sleep protocol. Before a side sleeps on the socket waiting for data (or for space) it
  // raises its flag, then checks again (waitForData/waitForSpace with true return whether it
  // must still sleep); after waking it lowers the flag. After publishing (or consuming), the
  // other side asks peerNeedsWake* and, when true, sends one wake-up byte on the socket. The
  // flags and the positions are ordered with full fences on both sides, so a sleeper is always
  // either seen or sees the new bytes.
  bool startWaitingForData();   // true: still empty, go to sleep
  void stopWaitingForData();
  bool startWaitingForSpace();  // true: still full, go to sleep
  void stopWaitingForSpace();
  bool peerNeedsWakeForData();   // after write(): the peer sleeps waiting for our bytes
  bool peerNeedsWakeForSpace();  // after read(): the peer sleeps waiting for room to write

  // The CPU each side last waited on (a hint for whether polling can pay: two processes on
  // one CPU only take the CPU from each other). publishCpu() says ours; peerCpu() is what the
  // peer last said, or -1. A hostile peer can lie here; it only changes whether we poll.
  void publishCpu(int cpu);
  int peerCpu();

  struct Cursor;
  struct Control;

 private:
  SharedRings(UniqueFd fd, void* base, size_t mappedBytes, size_t capacity, RingSide side);
  Control& outgoing();
  Control& incoming();
  kj::byte* outgoingData();
  kj::byte* incomingData();

  UniqueFd fd_;
  void* base_;
  size_t mappedBytes_;
  size_t capacity_;
  RingSide side_;
  // The child trusts the parent, and code of its own may move its cursors (a test fixture that
  // speaks the protocol by hand, between the runtime's own reads and writes): it takes its own
  // positions from the mapping before each use. The parent never does.
  void adoptPublishedPositions();

  // Our own positions; the parent never reads them back from the shared mapping.
  uint64_t writePosition_ = 0;
  uint64_t readPosition_ = 0;
};

}  // namespace pi
