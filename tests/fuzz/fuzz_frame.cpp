// Fuzz target: the frame header and the message a child sends (protocol/framing, and
// runtime/channel reading a byte stream of frames off the socket).
//
// The input is the byte stream a child writes. Each input is read three ways:
//   1. peekFrameSize on prefixes of it: sizes never disagree between a prefix and the whole, and
//      stay within limits.h;
//   2. when it holds a whole frame, IncomingFrame reads it with our ReaderOptions and every field
//      of its wire::Message is visited (the union's active member, every list element, text);
//   3. the whole input goes through a Unix socket into a Channel, which returns frames until the
//      peer's end closes: each frame is visited too.
// Refusals are kj exceptions (FAILED, or DISCONNECTED at the end of the stream); anything else,
// a sanitizer report, an fd left open or a size out of the limits is a bug.
#include "protocol/framing.h"
#include "protocol/isolation.capnp.h"
#include "protocol/limits.h"
#include "runtime/channel.h"
#include "runtime/unique_fd.h"
#include "support/fuzz_support.h"
#include "support/traverse.h"

#include <capnp/schema.h>
#include <kj/debug.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>

namespace {

using pi::FrameSize;


std::optional<FrameSize> peek(kj::ArrayPtr<const kj::byte> bytes, bool& refused) {
  try {
    refused = false;
    return pi::peekFrameSize(bytes);
  } catch (kj::Exception& e) {
    pi::fuzz::expectPeerError(e);
    refused = true;
    return std::nullopt;
  }
}

void checkSize(const FrameSize& size) {
  if (size.totalBytes % 8 != 0 || size.headerBytes % 8 != 0) pi::fuzz::fail("size not in words");
  if (size.headerBytes < 8 || size.headerBytes >= size.totalBytes) {
    pi::fuzz::fail("header size out of range");
  }
  if (size.totalBytes > pi::kMaxMessageBytes) pi::fuzz::fail("frame over kMaxMessageBytes");
}

uint64_t visitFrame(pi::IncomingFrame& frame) {
  auto root = frame.reader().getRoot<capnp::DynamicStruct>(capnp::Schema::from<pi::wire::Message>());
  return pi::fuzz::traverse(root);
}

void readDirectly(kj::ArrayPtr<const kj::byte> input) {
  bool refused = false;
  auto whole = peek(input, refused);
  if (whole) checkSize(*whole);
  // A prefix that tells the sizes tells the same ones; a refused header is refused as soon as
  // the part that breaks the limits is there, never accepted by a longer prefix.
  for (size_t length : {size_t{4}, size_t{8}, input.size() / 2}) {
    if (length > input.size()) continue;
    bool prefixRefused = false;
    auto part = peek(input.slice(0, length), prefixRefused);
    if (part && whole && (part->totalBytes != whole->totalBytes ||
                          part->headerBytes != whole->headerBytes)) {
      pi::fuzz::fail("a prefix and the whole input disagree on the frame size");
    }
    if (part && refused) pi::fuzz::fail("a prefix was accepted but the whole input refused");
    if (prefixRefused && !refused) pi::fuzz::fail("a prefix was refused but the whole accepted");
  }
  if (!whole || whole->totalBytes > input.size()) return;
  auto words = kj::heapArray<capnp::word>(whole->totalBytes / 8);
  memcpy(words.begin(), input.begin(), whole->totalBytes);
  try {
    pi::IncomingFrame frame(kj::mv(words), *whole);
    if (frame.totalBytes() != whole->totalBytes) pi::fuzz::fail("frame size changed");
    visitFrame(frame);
    // The typed accessors the endpoint uses read the same bytes.
    auto message = frame.getRoot<pi::wire::Message>();
    (void)message.which();
    (void)message.getFdCount();
  } catch (kj::Exception& e) {
    pi::fuzz::expectPeerError(e);
  }
}

void readThroughChannel(kj::ArrayPtr<const kj::byte> input) {
  int sockets[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) {
    pi::fuzz::fail("socketpair failed");
  }
  pi::UniqueFd child(sockets[1]);
  int buffer = int(std::max<size_t>(input.size() * 2, 4096));
  ::setsockopt(child.get(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
  size_t done = 0;
  while (done < input.size()) {
    ssize_t n = ::send(child.get(), input.begin() + done, input.size() - done,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;  // the rest does not fit: the stream ends early, which is fine too
    done += size_t(n);
  }
  child.reset();  // the child is gone: the channel sees EOF after the bytes
  pi::Channel channel{pi::UniqueFd(sockets[0])};
  // Every frame is at least 16 bytes, so the loop ends; the deadline only guards a hang.
  for (size_t frames = 0; frames <= input.size() / 16 + 1; ++frames) {
    try {
      auto frame = channel.receive(pi::Deadline::after(5));
      visitFrame(frame);
    } catch (kj::Exception& e) {
      pi::fuzz::expectPeerError(e);
      if (e.getType() == kj::Exception::Type::OVERLOADED) {
        pi::fuzz::fail("the channel waited for bytes although the peer had closed");
      }
      return;
    }
  }
  pi::fuzz::fail("the channel returned more frames than the input can hold");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fdBaseline = pi::fuzz::lowestFreeFd();
  auto input = kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size);
  readDirectly(input);
  // A header that claims far more than the input holds makes the channel allocate the claimed
  // frame (up to kMaxMessageBytes) before its body arrives, which under AddressSanitizer costs a
  // millisecond of shadow poisoning an input; the direct read covers those headers, and
  // fuzz_rings the channel's handling of them.
  bool refused = false;
  auto first = peek(input, refused);
  if (!first || first->totalBytes <= 4 * input.size() + 4096) readThroughChannel(input);
  pi::fuzz::checkNoFdLeak(fdBaseline);
  return 0;
}
