// The byte stream to the peer: whole frames in and out over a Unix socket, with deadlines.
#pragma once

#include "protocol/framing.h"
#include "runtime/deadline.h"
#include "runtime/unique_fd.h"

#include <kj/array.h>
#include <kj/function.h>

#include <functional>
#include <memory>
#include <vector>

namespace pi {

class SharedRings;

// One end of a SOCK_STREAM Unix socket carrying framed messages. Does all I/O on the calling
// thread (no threads, no process-wide signal handlers); blocking waits honour a Deadline.
//
// Errors are kj exceptions whose type says how to react:
//   DISCONNECTED  the peer closed its end or reset the connection (EOF, ECONNRESET, EPIPE), or
//                 the peer process exited (see watchPeerExit);
//   OVERLOADED    the deadline passed;
//   FAILED        a frame header broke the limits in limits.h, or an unexpected socket error.
// A Channel is not thread-safe; callers serialize. It is not fork-safe: a forked child must not
// use its parent's Channel (build a new one on an fd that the child owns).
class Channel {
 public:
  // Takes ownership of a connected stream socket and switches it to blocking mode (receives
  // block with a timeout; sends are non-blocking per call).
  explicit Channel(UniqueFd socket);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Writes all of `pieces` (one or more frames) in order. Partial writes are resumed; waits for
  // buffer space until `deadline`. `fds` (borrowed; they must stay open until send returns)
  // travel with the first byte (SCM_RIGHTS), which must begin the frame that counts them.
  void send(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces, Deadline deadline,
            kj::ArrayPtr<const int> fds = nullptr);

  // Reads one whole frame, waiting until `deadline`. Bytes after it stay buffered for the next
  // call. The frame header is checked against the limits before its body is allocated.
  IncomingFrame receive(Deadline deadline);

  // Takes the next `count` file descriptors that arrived (in the order they were sent). Throws
  // (kj FAILED) when fewer arrived: the peer's frame claimed fds it did not send.
  std::vector<UniqueFd> takeFds(size_t count);

  // True when a whole frame is already buffered, so receive() will not block.
  bool hasBufferedFrame() const;

  // Called whenever a wait is interrupted by a signal (EINTR), and every `periodMillis` while a
  // wait goes on when periodMillis > 0. It may throw to abandon the wait (for example a
  // KeyboardInterrupt); the channel stays usable, but a frame may be left half-read, so callers
  // that abandon a receive must treat the stream as out of step.
  void setWaitHook(std::function<void()> hook, int periodMillis);

  // While waiting, also reads whatever arrives on `fd` (a non-blocking pipe the channel does
  // not own, such as the child's captured stderr) and hands it to `sink`, so the writer never
  // blocks on a full pipe. The sink runs on the waiting thread, without the GIL. The fd is
  // dropped from the set at EOF; it must stay open while it is in the set.
  void addDrain(int fd, std::function<void(const char*, size_t)> sink);
  // Forgets every drained fd (their owner is closing them).
  void clearDrains();

  // Also watches `pidfd`, a pidfd of the peer process (owned by the channel from now on): once
  // the peer has exited, a wait reads what is still buffered (on the socket and in the rings)
  // and then fails with DISCONNECTED, even while another process (a grandchild that inherited
  // the peer's end of the socket) keeps the connection open. Waits that poll see the exit at
  // once; the blocking receive, which is cheaper, sees it within kPeerExitCheckMillis.
  void watchPeerExit(UniqueFd pidfd);
  static constexpr int kPeerExitCheckMillis = 100;

  // Switches the channel to `rings` (shared memory, see SharedRings): from now on frames travel
  // through the rings, and the socket carries only wake-up bytes and the fds of frames (a
  // carrier byte with SCM_RIGHTS, sent before the frame that counts them). A peer that writes
  // anything else on the socket breaks the protocol (kj FAILED). Waiting for the peer first
  // polls the rings for a few microseconds, then sleeps on the socket, so EOF still says the peer
  // is gone (after the ring it wrote has been read to the end). Call it between frames: bytes
  // buffered from the socket other than wake-ups are an error. Both ends switch at the same
  // point of the stream (the parent right after it sends the frame carrying the memfd, the
  // child right after it reads that frame).
  void useRings(std::unique_ptr<SharedRings> rings);
  bool usesRings() const;

  // Shuts both directions down so the peer sees EOF; further sends and receives fail.
  void shutdown();

  // Shuts down and releases every fd the channel holds (the socket and Asio's own); further
  // use fails with DISCONNECTED. Drained fds are forgotten, not closed.
  void close();

  int fd() const;

  // Gives up every fd without closing any (leaking the bookkeeping). For a copy of a channel
  // inherited across fork, whose fd numbers may already belong to something else here.
  void abandon();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pi
