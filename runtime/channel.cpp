// The byte stream to the peer: whole frames in and out over a Unix socket, with deadlines.
#include "runtime/channel.h"

#include "protocol/limits.h"
#include "runtime/fd_passing.h"
#include "runtime/shared_rings.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <kj/debug.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace pi {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

// In ring mode the socket carries only single bytes that say "look at the rings": a wake-up, or
// the carrier of the fds (SCM_RIGHTS) of a frame that is about to appear in a ring. Any other
// byte is a protocol error.
constexpr kj::byte kWakeByte = 0;
constexpr kj::byte kFdsByte = 1;

// How long a side waiting for the peer polls the rings before it sleeps on the socket. A
// round trip through a sleeping peer costs tens of microseconds here (two wake-ups through the
// scheduler); a spinning peer answers in about one. The budget adapts to how long the peer
// takes (see Impl::learn): a wait longer than kMaxSpin halves it, down to kMinSpin; a wait that
// a full spin would have caught restores it.
constexpr std::chrono::nanoseconds kMaxSpin = std::chrono::microseconds(50);
constexpr std::chrono::nanoseconds kMinSpin = std::chrono::microseconds(2);
// A gap this long between two looks at the clock while polling means this thread lost its CPU
// to another task meanwhile (interrupts and a hypervisor's hiccups take tens of microseconds; a
// scheduler slice is milliseconds): the machine has more runnable work than CPUs, and a poller
// that keeps its CPU keeps others, the peer among them, from one. Polling then stops for
// kContendedWaits waits.
constexpr std::chrono::nanoseconds kPreemptionGap = std::chrono::microseconds(200);
constexpr int kContendedWaits = 200;
// Polling only pays while the peer runs. A running peer takes what we wrote within a
// microsecond or so; one that has not after this long is asleep or waiting for a CPU (on a
// machine busy with other work, where polling would keep it off ours), so we sleep instead. Not
// applied right after we woke the peer, which then needs a scheduler wake-up first.
constexpr std::chrono::nanoseconds kPeerLifeGrace = std::chrono::microseconds(5);

// Spinning only helps when the peer can run at the same time.
bool severalCpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set) > 1;
  return std::thread::hardware_concurrency() > 1;
}

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// The single place where a socket error becomes a typed kj exception.
[[noreturn]] void throwSocketError(const boost::system::error_code& ec, const char* what) {
  namespace error = boost::asio::error;
  if (ec == error::eof || ec == error::connection_reset || ec == error::broken_pipe ||
      ec == error::not_connected || ec == error::bad_descriptor || ec == error::shut_down) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "peer closed the connection", what,
                                         ec.message()));
  }
  kj::throwFatalException(KJ_EXCEPTION(FAILED, "socket error", what, ec.message()));
}

[[noreturn]] void throwPeerExited() {
  kj::throwFatalException(KJ_EXCEPTION(
      DISCONNECTED, "peer process exited (another process still holds its end of the connection)"));
}

// One non-blocking sendmsg of `batch`, with `fds` attached (SCM_RIGHTS) when there are any.
// Errors as Asio reports them (would_block when the socket buffer is full).
size_t sendSome(int socket, const std::vector<boost::asio::const_buffer>& batch,
                kj::ArrayPtr<const int> fds, boost::system::error_code& ec) {
  std::vector<iovec> iov;
  for (auto& piece : batch) iov.push_back(iovec{const_cast<void*>(piece.data()), piece.size()});
  msghdr msg{};
  msg.msg_iov = iov.data();
  msg.msg_iovlen = iov.size();
  FdControlBuffer control;
  attachFds(msg, control, fds);
  ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) {
    ec = boost::system::error_code(errno, boost::system::system_category());
    if (errno == EAGAIN || errno == EWOULDBLOCK) ec = boost::asio::error::would_block;
    return 0;
  }
  ec.clear();
  return size_t(n);
}

// A growable byte array whose bytes start out uninitialized (std::vector would zero them).
class ReadBuffer {
 public:
  explicit ReadBuffer(size_t size) : bytes_(new kj::byte[size]), size_(size) {}
  kj::byte* data() { return bytes_.get(); }
  size_t size() const { return size_; }
  // Grows to `size` bytes, keeping the first `keep`.
  void grow(size_t size, size_t keep) {
    std::unique_ptr<kj::byte[]> bigger(new kj::byte[size]);
    memcpy(bigger.get(), bytes_.get(), keep);
    bytes_ = std::move(bigger);
    size_ = size;
  }

 private:
  std::unique_ptr<kj::byte[]> bytes_;
  size_t size_;
};

}  // namespace

struct Channel::Impl {
  boost::asio::io_context io;
  boost::asio::local::stream_protocol::socket socket{io};
  // Received bytes not yet returned as frames: [begin, end) of buffer. Not zeroed: a forked
  // child's every written page is a copy-on-write fault, so only what is received is touched.
  ReadBuffer buffer{kReadChunk};
  size_t begin = 0;
  size_t end = 0;
  std::function<void()> waitHook;
  int hookPeriodMillis = 0;
  bool isShutdown = false;

  struct Drain {
    int fd;
    std::function<void(const char*, size_t)> sink;
  };
  std::vector<Drain> drains;

  // Reads what a drained fd has (it is non-blocking) into its sink; forgets it at EOF.
  void drainOne(size_t index) {
    char chunk[16384];
    for (;;) {
      ssize_t n = ::read(drains[index].fd, chunk, sizeof(chunk));
      if (n > 0) {
        drains[index].sink(chunk, size_t(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        drains.erase(drains.begin() + long(index));
      }
      return;
    }
  }

  // The peer process's pidfd (watchPeerExit), or empty; set once it was seen to have exited.
  UniqueFd peerPidfd;
  bool peerExited = false;

  // True once the watched peer process has exited (false when none is watched). One poll.
  bool checkPeerExited() {
    if (!peerExited && peerPidfd) {
      pollfd pfd{peerPidfd.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 0) > 0) peerExited = true;
    }
    return peerExited;
  }

  // Blocks until the socket is ready for `events`, the deadline passes (OVERLOADED), the hook
  // throws or the watched peer process has exited: then a wait for POLLOUT throws DISCONNECTED,
  // and a wait for POLLIN returns (with peerExited set), so the caller reads what is buffered.
  void wait(short events, const Deadline& deadline) {
    std::vector<pollfd> fds;
    auto lastHook = std::chrono::steady_clock::now();
    for (;;) {
      if (deadline.expired()) {
        kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "deadline passed while waiting for the peer"));
      }
      if (peerExited) {
        if (events & POLLOUT) throwPeerExited();
        return;
      }
      fds.assign(1, pollfd{socket.native_handle(), events, 0});
      for (auto& drain : drains) fds.push_back(pollfd{drain.fd, POLLIN, 0});
      size_t pidfdIndex = fds.size();
      if (peerPidfd) fds.push_back(pollfd{peerPidfd.get(), POLLIN, 0});
      int timeout = deadline.pollMillis(hookPeriodMillis > 0 && waitHook ? hookPeriodMillis
                                                                         : std::numeric_limits<int>::max());
      int n = ::poll(fds.data(), nfds_t(fds.size()), timeout);
      if (n > 0) {
        // Drain output pipes first, back to front so that erasing keeps indexes valid.
        for (size_t i = pidfdIndex; i-- > 1;) {
          if (fds[i].revents != 0) drainOne(i - 1);
        }
        if (fds[0].revents != 0) return;  // the socket is ready, or reports an error next call
        if (pidfdIndex < fds.size() && fds[pidfdIndex].revents != 0) {
          peerExited = true;
          continue;
        }
        // A child flooding its output must not starve the hook (Ctrl-C handling).
        if (waitHook && hookPeriodMillis > 0 &&
            std::chrono::steady_clock::now() - lastHook >= std::chrono::milliseconds(hookPeriodMillis)) {
          lastHook = std::chrono::steady_clock::now();
          waitHook();
        }
        continue;
      }
      if (n < 0) {
        int error = errno;
        KJ_REQUIRE(error == EINTR, "poll failed", strerror(error));
        if (waitHook) waitHook();
        continue;
      }
      if (waitHook && hookPeriodMillis > 0) {
        lastHook = std::chrono::steady_clock::now();
        waitHook();
      }
    }
  }

  size_t buffered() const { return end - begin; }

  // Descriptors received (SCM_RIGHTS) and not yet taken by a frame.
  std::vector<UniqueFd> receivedFds;

  // One recvmsg into [data, data + size), keeping any descriptors that come with it. Reports
  // errors like Asio's read_some (eof for an orderly shutdown).
  size_t readSome(kj::byte* data, size_t size, int flags, boost::system::error_code& ec) {
    iovec iov{data, size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    FdControlBuffer control;
    expectFds(msg, control);
    ssize_t n = ::recvmsg(socket.native_handle(), &msg, MSG_CMSG_CLOEXEC | flags);
    if (n < 0) {
      ec = boost::system::error_code(errno, boost::system::system_category());
      return 0;
    }
    collectFds(msg, receivedFds);
    if (msg.msg_flags & MSG_CTRUNC) {
      ec = boost::system::errc::make_error_code(boost::system::errc::message_size);
      return 0;
    }
    if (receivedFds.size() > kMaxFrameFds * 4) {
      ec = boost::system::errc::make_error_code(boost::system::errc::too_many_files_open);
      return 0;
    }
    if (n == 0 && size > 0) {
      ec = boost::asio::error::eof;
      return 0;
    }
    ec.clear();
    return size_t(n);
  }

  // Makes room for at least kReadChunk / 4 more bytes at the buffer tail.
  void makeRoom() {
    if (begin == end) begin = end = 0;
    if (buffer.size() - end < kReadChunk / 4) {
      memmove(buffer.data(), buffer.data() + begin, buffered());
      end -= begin;
      begin = 0;
      if (buffer.size() - end < kReadChunk / 4) buffer.grow(buffer.size() * 2, end);
    }
  }

  // Reads whatever is available (at least one byte) into the buffer tail.
  void fill(const Deadline& deadline) {
    makeRoom();
    end += receiveSome(buffer.data() + end, buffer.size() - end, deadline);
  }

  // Ring mode: moves what the ring holds now into the buffer, without waiting.
  void pullFromRing() {
    if (rings->available() == 0) return;
    makeRoom();
    size_t n = rings->read(buffer.data() + end, buffer.size() - end);
    end += n;
    if (n > 0 && rings->peerNeedsWakeForSpace()) wakePeer();
  }

  // The SO_RCVTIMEO now set on the socket, in milliseconds (-1: none, wait forever).
  int receiveTimeoutMillis = -1;

  // Reads at least one byte into [data, data + size), waiting until `deadline`.
  //
  // Without drained fds the wait is one blocking recvmsg, the cheapest wait there is (a failed
  // non-blocking read, a poll and a second read cost a round trip a good part of its time).
  // SO_RCVTIMEO bounds it by the deadline and the hook period; a signal interrupts it (EINTR),
  // and the hook runs. With drained fds, poll() watches them all.
  size_t receiveSome(kj::byte* data, size_t size, const Deadline& deadline) {
    return rings ? ringReceiveSome(data, size, deadline) : socketReceiveSome(data, size, deadline);
  }

  size_t socketReceiveSome(kj::byte* data, size_t size, const Deadline& deadline) {
    for (;;) {
      boost::system::error_code ec;
      size_t n;
      bool expired = deadline.expired();
      if (drains.empty() && !expired && !peerExited) {
        int cap = waitHook && hookPeriodMillis > 0 ? hookPeriodMillis
                                                    : std::numeric_limits<int>::max();
        // The blocking read cannot watch the pidfd: it wakes up to look at it now and then.
        if (peerPidfd) cap = std::min(cap, int(Channel::kPeerExitCheckMillis));
        int millis = deadline.pollMillis(cap);
        if (millis == 0) millis = 1;  // 0 would mean "no timeout" to SO_RCVTIMEO
        if (millis != receiveTimeoutMillis) {
          timeval tv{};
          if (millis > 0) {
            tv.tv_sec = millis / 1000;
            tv.tv_usec = (millis % 1000) * 1000;
          }
          ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
          receiveTimeoutMillis = millis;
        }
        n = readSome(data, size, 0, ec);
      } else {
        n = readSome(data, size, MSG_DONTWAIT, ec);
      }
      if (!ec) return n;
      if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
        // Nothing buffered is left: a peer process that has exited will send nothing more.
        if (peerExited) throwPeerExited();
        if (!drains.empty()) {
          wait(POLLIN, deadline);
          continue;
        }
        if (checkPeerExited()) continue;  // read once more without waiting, then fail
        if (deadline.expired()) {
          kj::throwFatalException(
              KJ_EXCEPTION(OVERLOADED, "deadline passed while waiting for the peer"));
        }
        if (waitHook && hookPeriodMillis > 0) waitHook();  // the hook period passed
        continue;
      }
      if (ec == boost::asio::error::interrupted) {
        if (waitHook) waitHook();
        continue;
      }
      throwSocketError(ec, "receive");
    }
  }

  // ---- ring mode ------------------------------------------------------------------------

  std::unique_ptr<SharedRings> rings;
  // The peer's end of the socket is closed (EOF while in ring mode): once the ring it writes is
  // empty, it is gone.
  bool peerClosed = false;
  bool canSpin = severalCpus();
  std::chrono::nanoseconds spinBudget = kMaxSpin;

  // Polls `ready` until it is true (returns true), or until the spin budget is spent or the
  // peer shows no sign of running (false).
  template <typename Ready>
  bool spin(Ready&& ready) {
    bool wokePeer = std::exchange(wokePeerLast, false);
    if (!canSpin || peerClosed) return false;
    if (contendedWaits > 0) {
      --contendedWaits;
      return false;
    }
    // Two processes on one CPU would only take it from each other: then each look at the ring
    // hands the CPU over (sched_yield) instead of pausing, so the peer runs at once. (Sleeping
    // instead costs two scheduler wake-ups a round trip and, as a woken task lands on its
    // waker's CPU, keeps the two together: 12-14 us a round trip against 1 us, measured with
    // bench/cpp's channelRoundTrip; 21 us against 10 us a Python call beside a busy loop.)
    int cpu = ::sched_getcpu();
    rings->publishCpu(cpu);
    auto start = std::chrono::steady_clock::now();
    auto last = start;
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
      if (rings->peerCpu() == cpu) {
        ::sched_yield();  // long enough to look at the clock after each
      } else {
        cpuRelax();
        if ((i & 63) != 0) continue;
      }
      auto now = std::chrono::steady_clock::now();
      if (now - last >= kPreemptionGap) {
        contendedWaits = kContendedWaits;
        return false;
      }
      last = now;
      auto spent = now - start;
      if (spent >= spinBudget) return false;
      if (spent >= kPeerLifeGrace && !wokePeer && rings->outgoingUnread() > 0) return false;
    }
  }
  // Waits left before polling is tried again after this thread was preempted while polling.
  int contendedWaits = 0;
  // Set when our last write had to wake the peer.
  bool wokePeerLast = false;

  // After a wait of `waited` ended: had a full spin caught it, spin fully next time; if not,
  // spin half as long (a peer that takes long to answer is not worth the CPU). Judging by the
  // whole wait, not by whether this spin caught it, lets a small budget grow back.
  void learn(std::chrono::steady_clock::duration waited) {
    spinBudget = waited <= kMaxSpin ? kMaxSpin : std::max(kMinSpin, spinBudget / 2);
  }

  // One wake-up byte for the peer. Best effort: a full socket buffer means wake-ups are already
  // queued, and a peer that is gone shows at our next wait.
  void wakePeer() {
    kj::byte wake = kWakeByte;
    ssize_t n = ::send(socket.native_handle(), &wake, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)n;
  }

  // The bytes read off the socket in ring mode must all be wake-ups or fd carriers.
  static void checkRingModeBytes(const kj::byte* bytes, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      KJ_REQUIRE(bytes[i] == kWakeByte || bytes[i] == kFdsByte,
                 "peer wrote to the socket outside the protocol (it carries only wake-ups while "
                 "the shared rings are in use)",
                 uint(bytes[i]));
    }
  }

  // Sleeps on the socket until a byte arrives (a wake-up or an fd carrier), the deadline passes
  // (OVERLOADED) or the wait hook throws. At EOF (or once the peer process has exited) it
  // returns, once, so that the caller looks at the rings a last time; after that it throws
  // DISCONNECTED.
  void sleepOnSocket(const Deadline& deadline) {
    if (peerClosed) {
      if (peerExited) throwPeerExited();
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "peer closed the connection"));
    }
    kj::byte bytes[256];
    size_t n = 0;
    try {
      n = socketReceiveSome(bytes, sizeof(bytes), deadline);
    } catch (kj::Exception& e) {
      if (e.getType() != kj::Exception::Type::DISCONNECTED) throw;
      peerClosed = true;
      return;
    }
    checkRingModeBytes(bytes, n);
  }

  // Reads what the socket holds now without waiting (fd carriers, wake-ups).
  void drainSocketNow() {
    kj::byte bytes[256];
    for (;;) {
      boost::system::error_code ec;
      size_t n = readSome(bytes, sizeof(bytes), MSG_DONTWAIT, ec);
      if (ec) {
        if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again ||
            ec == boost::asio::error::interrupted) {
          return;
        }
        if (ec == boost::asio::error::eof) {
          peerClosed = true;
          return;
        }
        throwSocketError(ec, "receive");
      }
      checkRingModeBytes(bytes, n);
    }
  }

  size_t ringReceiveSome(kj::byte* data, size_t size, const Deadline& deadline) {
    std::optional<std::chrono::steady_clock::time_point> waitStart;
    for (;;) {
      size_t n = rings->read(data, size);
      if (n > 0) {
        if (rings->peerNeedsWakeForSpace()) wakePeer();
        if (waitStart) learn(std::chrono::steady_clock::now() - *waitStart);
        return n;
      }
      if (!waitStart) waitStart = std::chrono::steady_clock::now();
      if (spin([this] { return rings->available() > 0; })) continue;
      if (rings->startWaitingForData()) {
        KJ_DEFER(rings->stopWaitingForData());
        sleepOnSocket(deadline);
      }
    }
  }

  // Waits until the ring we write has room.
  void waitForRingSpace(const Deadline& deadline) {
    if (rings->peerNeedsWakeForData()) wakePeer();  // it has to read for us to go on
    if (spin([this] { return rings->outgoingSpace() > 0; })) return;
    if (rings->startWaitingForSpace()) {
      KJ_DEFER(rings->stopWaitingForSpace());
      sleepOnSocket(deadline);
    }
  }

  void ringSend(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces, const Deadline& deadline,
                kj::ArrayPtr<const int> fds) {
    if (fds.size() > 0) {
      // The fds go first, so they are queued on the socket before the frame that counts them
      // can be read from the ring.
      kj::byte carrier = kFdsByte;
      kj::ArrayPtr<const kj::byte> piece(&carrier, 1);
      socketSend(kj::arrayPtr(&piece, 1), deadline, fds);
    }
    for (auto piece : pieces) {
      size_t done = 0;
      while (done < piece.size()) {
        size_t n = rings->write(piece.begin() + done, piece.size() - done);
        done += n;
        if (done < piece.size()) waitForRingSpace(deadline);
      }
    }
    wokePeerLast = rings->peerNeedsWakeForData();
    if (wokePeerLast) wakePeer();
  }

  // ---- the socket -----------------------------------------------------------------------

  void socketSend(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces, const Deadline& deadline,
                  kj::ArrayPtr<const int> fds) {
    std::vector<boost::asio::const_buffer> buffers;
    buffers.reserve(pieces.size());
    for (auto piece : pieces) {
      if (piece.size() > 0) buffers.emplace_back(piece.begin(), piece.size());
    }
    size_t first = 0;
    bool fdsSent = fds.size() == 0;
    while (first < buffers.size()) {
      boost::system::error_code ec;
      // Gather as many pieces as sendmsg takes at once (IOV_MAX is 1024 on Linux).
      size_t last = std::min(buffers.size(), first + 512);
      std::vector<boost::asio::const_buffer> batch(buffers.begin() + first, buffers.begin() + last);
      size_t n = sendSome(socket.native_handle(), batch,
                          fdsSent ? kj::ArrayPtr<const int>() : fds, ec);
      if (!ec && n > 0) fdsSent = true;
      if (ec) {
        if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
          wait(POLLOUT, deadline);
          continue;
        }
        if (ec == boost::asio::error::interrupted) continue;
        throwSocketError(ec, "send");
      }
      while (n > 0 && first < buffers.size()) {
        if (n >= buffers[first].size()) {
          n -= buffers[first].size();
          ++first;
        } else {
          buffers[first] += n;
          n = 0;
        }
      }
    }
  }

  // Reads exactly `size` bytes into `out`, first from the buffer, then straight from the socket.
  void readExactly(kj::byte* out, size_t size, const Deadline& deadline) {
    size_t fromBuffer = std::min(size, buffered());
    memcpy(out, buffer.data() + begin, fromBuffer);
    begin += fromBuffer;
    size_t done = fromBuffer;
    while (done < size) done += receiveSome(out + done, size - done, deadline);
  }
};

Channel::Channel(UniqueFd socket) : impl_(std::make_unique<Impl>()) {
  boost::system::error_code ec;
  impl_->socket.assign(boost::asio::local::stream_protocol(), socket.release(), ec);
  if (ec) throwSocketError(ec, "assign");
  // Blocking, for the blocking receive (see receiveSome); sends pass MSG_DONTWAIT.
  impl_->socket.non_blocking(false, ec);
  if (ec) throwSocketError(ec, "non_blocking");
  int flags = ::fcntl(impl_->socket.native_handle(), F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) {
    ::fcntl(impl_->socket.native_handle(), F_SETFL, flags & ~O_NONBLOCK);
  }
}

Channel::~Channel() = default;

namespace {

[[noreturn]] void throwClosed() {
  kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "channel was closed"));
}

}  // namespace

int Channel::fd() const { return impl_ ? impl_->socket.native_handle() : -1; }

void Channel::setWaitHook(std::function<void()> hook, int periodMillis) {
  if (!impl_) return;
  impl_->waitHook = std::move(hook);
  impl_->hookPeriodMillis = periodMillis;
}

void Channel::send(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces, Deadline deadline,
                   kj::ArrayPtr<const int> fds) {
  KJ_REQUIRE(fds.size() <= kMaxFrameFds, "too many fds for one frame");
  if (!impl_) throwClosed();
  if (impl_->isShutdown) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "channel was shut down"));
  }
  if (impl_->rings) {
    impl_->ringSend(pieces, deadline, fds);
  } else {
    impl_->socketSend(pieces, deadline, fds);
  }
}

std::vector<UniqueFd> Channel::takeFds(size_t count) {
  // In ring mode the fds were queued on the socket before their frame was published.
  if (impl_ && impl_->rings && count > impl_->receivedFds.size()) impl_->drainSocketNow();
  KJ_REQUIRE(impl_ != nullptr && count <= impl_->receivedFds.size(),
             "peer's frame claims file descriptors it did not send", count);
  std::vector<UniqueFd> out;
  auto& queue = impl_->receivedFds;
  std::move(queue.begin(), queue.begin() + long(count), std::back_inserter(out));
  queue.erase(queue.begin(), queue.begin() + long(count));
  return out;
}

bool Channel::hasBufferedFrame() const {
  if (!impl_) return false;
  if (impl_->rings && !impl_->isShutdown) impl_->pullFromRing();
  auto available = kj::arrayPtr(impl_->buffer.data() + impl_->begin, impl_->buffered());
  if (auto size = peekFrameSize(available)) { return size->totalBytes <= available.size(); }
  return false;
}

IncomingFrame Channel::receive(Deadline deadline) {
  if (!impl_) throwClosed();
  if (impl_->isShutdown) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "channel was shut down"));
  }
  for (;;) {
    auto available = kj::arrayPtr(impl_->buffer.data() + impl_->begin, impl_->buffered());
    if (auto size = peekFrameSize(available)) {
      auto words = kj::heapArray<capnp::word>(size->totalBytes / 8);
      impl_->readExactly(reinterpret_cast<kj::byte*>(words.begin()), size->totalBytes, deadline);
      return IncomingFrame(kj::mv(words), *size);
    }
    impl_->fill(deadline);
  }
}

void Channel::useRings(std::unique_ptr<SharedRings> rings) {
  if (!impl_) throwClosed();
  KJ_REQUIRE(rings != nullptr);
  // Nothing but wake-ups may have followed the last frame on the socket.
  Impl::checkRingModeBytes(impl_->buffer.data() + impl_->begin, impl_->buffered());
  impl_->begin = impl_->end = 0;
  impl_->rings = std::move(rings);
}

bool Channel::usesRings() const { return impl_ && impl_->rings; }

void Channel::shutdown() {
  if (!impl_ || impl_->isShutdown) return;
  impl_->isShutdown = true;
  boost::system::error_code ec;
  impl_->socket.shutdown(boost::asio::socket_base::shutdown_both, ec);  // best effort
}

void Channel::addDrain(int fd, std::function<void(const char*, size_t)> sink) {
  if (!impl_) return;
  impl_->drains.push_back(Impl::Drain{fd, std::move(sink)});
}

void Channel::clearDrains() {
  if (impl_) impl_->drains.clear();
}

void Channel::watchPeerExit(UniqueFd pidfd) {
  if (impl_) impl_->peerPidfd = std::move(pidfd);
}

void Channel::abandon() {
  if (!impl_) return;
  impl_->isShutdown = true;
  (void)impl_.release();  // deliberately leaked: destroying it would close fds that are not ours
}

void Channel::close() {
  if (!impl_) return;
  shutdown();
  impl_.reset();
}

}  // namespace pi
