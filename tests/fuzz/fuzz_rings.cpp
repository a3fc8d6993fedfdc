// Fuzz target: the shared rings as a hostile child sees them (runtime/shared_rings, and
// runtime/channel in ring mode).
//
// Each input is a script of child actions and parent operations on one fresh connection: a
// parent Channel switched to a new SharedRings, and the child's end played by this harness
// through its own mapping of the memfd and the other end of the socket. The child may write
// ring bytes (framed or not, within the free space or over it), publish any cursor value for
// the cursors it owns and for those it does not, raise or clear the waiting flags, and write any
// byte (with or without an fd) on the socket. The parent receives frames, sends frames and asks
// how much is buffered. At the end the child's socket closes and the parent reads until it sees
// the end. Every parent operation may only return or throw a kj exception (FAILED for a broken
// protocol, OVERLOADED when the zero deadline passes, DISCONNECTED at the end); a sanitizer
// report, a crash, a hang or a leaked fd is a bug.
#include "protocol/framing.h"
#include "protocol/isolation.capnp.h"
#include "runtime/channel.h"
#include "runtime/shared_rings.h"
#include "runtime/unique_fd.h"
#include "support/fuzz_support.h"
#include "support/traverse.h"

#include <capnp/message.h>
#include <capnp/schema.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <kj/debug.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <vector>

namespace {

// The layout docs/protocol.md ("Shared memory") gives, which a child relies on.
constexpr size_t kControlBytes = 4096;
constexpr size_t kRingControl = 64;
constexpr size_t kCursorBytes = 64;
constexpr size_t kCapacity = pi::SharedRings::kMinCapacity;  // wraps often


// The child's view of the shared mapping.
class HostileChild {
 public:
  HostileChild(int memfd, pi::UniqueFd socket) : socket_(std::move(socket)) {
    bytes_ = kControlBytes + 2 * kCapacity;
    base_ = static_cast<kj::byte*>(
        ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
    if (base_ == MAP_FAILED) pi::fuzz::fail("cannot map the rings as the child");
  }
  ~HostileChild() { ::munmap(base_, bytes_); }

  // ring 0: parent -> child, ring 1: child -> parent; cursor 0: writer, 1: reader.
  std::atomic<uint64_t>& position(int ring, int cursor) {
    return *reinterpret_cast<std::atomic<uint64_t>*>(
        base_ + kRingControl + 2 * kCursorBytes * ring + kCursorBytes * cursor);
  }
  std::atomic<uint32_t>& flag(int ring, int cursor, int which) {
    return *reinterpret_cast<std::atomic<uint32_t>*>(
        base_ + kRingControl + 2 * kCursorBytes * ring + kCursorBytes * cursor + 8 + 4 * which);
  }
  kj::byte* data(int ring) { return base_ + kControlBytes + ring * kCapacity; }

  // Writes `bytes` at the child's write position; with `honest`, only what fits.
  void write(const std::vector<uint8_t>& bytes, bool honest) {
    uint64_t written = position(1, 0).load();
    uint64_t read = position(1, 1).load();
    size_t room = honest ? size_t(kCapacity - std::min<uint64_t>(kCapacity, written - read))
                         : bytes.size();
    size_t n = std::min(room, bytes.size());
    for (size_t i = 0; i < n; ++i) data(1)[(written + i) & (kCapacity - 1)] = bytes[i];
    position(1, 0).store(written + n);
  }

  // Consumes what the parent wrote, as a well-behaved child does.
  void drain() { position(0, 1).store(position(0, 0).load()); }

  void sendByte(uint8_t byte, bool withFd) {
    iovec iov{&byte, 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    pi::UniqueFd fd;
    if (withFd) {
      fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* header = CMSG_FIRSTHDR(&msg);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(sizeof(int));
      int raw = fd.get();
      memcpy(CMSG_DATA(header), &raw, sizeof(int));
    }
    (void)::sendmsg(socket_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  void closeSocket() { socket_.reset(); }

 private:
  pi::UniqueFd socket_;
  kj::byte* base_;
  size_t bytes_;
};

// A small valid frame, for the parent to send and for the child to start from.
kj::Array<capnp::word> sampleFrame(uint64_t callId) {
  capnp::MallocMessageBuilder message;
  auto request = message.initRoot<pi::wire::Message>().initRequest();
  request.setCallId(callId);
  request.setOp(pi::wire::Op::GETATTR);
  request.setTarget(1);
  request.setName("attribute");
  return pi::frameToWords(message);
}

void visit(pi::IncomingFrame& frame) {
  pi::fuzz::traverse(
      frame.reader().getRoot<capnp::DynamicStruct>(capnp::Schema::from<pi::wire::Message>()));
}

// One parent operation; kj exceptions of the expected kinds are the parent refusing.
template <typename F>
void parent(F&& operation) {
  try {
    operation();
  } catch (kj::Exception& e) {
    pi::fuzz::expectPeerError(e);
  }
}

void run(FuzzedDataProvider& input) {
  auto rings = pi::SharedRings::create(kCapacity);
  pi::UniqueFd memfd = rings->takeFd();
  int sockets[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) {
    pi::fuzz::fail("socketpair failed");
  }
  HostileChild child(memfd.get(), pi::UniqueFd(sockets[1]));
  memfd.reset();
  pi::Channel channel{pi::UniqueFd(sockets[0])};
  channel.useRings(std::move(rings));
  auto sample = sampleFrame(7);
  auto sampleBytes = sample.asBytes();

  for (int step = 0; step < 48 && input.remaining_bytes() > 0; ++step) {
    switch (input.ConsumeIntegralInRange<int>(0, 11)) {
      case 0: {  // ring bytes from the input
        auto bytes = input.ConsumeBytes<uint8_t>(input.ConsumeIntegralInRange<size_t>(0, 2 * kCapacity));
        child.write(bytes, input.ConsumeBool());
        break;
      }
      case 1: {  // a valid frame, maybe cut short
        std::vector<uint8_t> bytes(sampleBytes.begin(), sampleBytes.end());
        bytes.resize(input.ConsumeIntegralInRange<size_t>(0, bytes.size()));
        child.write(bytes, true);
        break;
      }
      case 2:  // the child's write position: anywhere, or near the parent's read position
        child.position(1, 0).store(input.ConsumeBool()
                                       ? input.ConsumeIntegral<uint64_t>()
                                       : child.position(1, 1).load() +
                                             input.ConsumeIntegralInRange<int64_t>(-16, kCapacity + 16));
        break;
      case 3:  // the child's read position of the parent's ring
        child.position(0, 1).store(input.ConsumeBool()
                                       ? input.ConsumeIntegral<uint64_t>()
                                       : child.position(0, 0).load() +
                                             input.ConsumeIntegralInRange<int64_t>(-16, 16));
        break;
      case 4:  // the cursors the parent owns: the parent must not believe them
        child.position(input.ConsumeIntegralInRange<int>(0, 1), input.ConsumeBool() ? 1 : 0)
            .store(input.ConsumeIntegral<uint64_t>());
        break;
      case 5:  // waiting flags and cpu hints
        child.flag(input.ConsumeIntegralInRange<int>(0, 1), input.ConsumeIntegralInRange<int>(0, 1),
                   input.ConsumeIntegralInRange<int>(0, 1))
            .store(input.ConsumeIntegral<uint32_t>());
        break;
      case 6:  // a byte on the socket: a wake-up, an fd carrier, or anything
        child.sendByte(input.ConsumeIntegral<uint8_t>() % 4 == 0 ? input.ConsumeIntegral<uint8_t>()
                                                                  : input.ConsumeIntegralInRange<uint8_t>(0, 1),
                       input.ConsumeBool());
        break;
      case 7:
        child.drain();
        break;
      case 8:
        parent([&] {
          auto frame = channel.receive(pi::Deadline::after(0));
          visit(frame);
        });
        break;
      case 9:
        parent([&] {
          kj::ArrayPtr<const kj::byte> piece = sampleBytes;
          channel.send(kj::arrayPtr(&piece, 1), pi::Deadline::after(0));
        });
        break;
      case 10:
        parent([&] { (void)channel.hasBufferedFrame(); });
        break;
      case 11:
        parent([&] { (void)channel.takeFds(input.ConsumeIntegralInRange<size_t>(0, 3)); });
        break;
    }
  }
  // The child dies: the parent reads what is left and then sees the end, without waiting.
  child.closeSocket();
  for (int frames = 0;; ++frames) {
    if (frames > int(kCapacity / 16) + 8) pi::fuzz::fail("the parent read more frames than fit");
    try {
      auto frame = channel.receive(pi::Deadline::after(5));
      visit(frame);
    } catch (kj::Exception& e) {
      pi::fuzz::expectPeerError(e);
      if (e.getType() == kj::Exception::Type::OVERLOADED) {
        pi::fuzz::fail("the parent waited for a child whose socket had closed");
      }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fdBaseline = pi::fuzz::lowestFreeFd();
  FuzzedDataProvider input(data, size);
  run(input);
  pi::fuzz::checkNoFdLeak(fdBaseline);
  return 0;
}
