// Cap'n Proto stream framing of one message: sizes checked against limits.h before allocating.
#pragma once

#include <optional>
#include <capnp/message.h>
#include <kj/array.h>
#include <kj/common.h>
#include <kj/vector.h>

#include <cstddef>
#include <cstdint>

namespace pi {

// The sizes of one frame, known from its header alone.
struct FrameSize {
  size_t headerBytes;  // segment table, padded to a word
  size_t totalBytes;   // header plus segments; a multiple of 8
};

// Reads the frame header at the start of `prefix`. Returns null while `prefix` is too short to
// tell the sizes. Throws (kj FAILED) when the header asks for more segments than kMaxSegments or
// more bytes than kMaxMessageBytes, so a hostile size never reaches an allocator.
std::optional<FrameSize> peekFrameSize(kj::ArrayPtr<const kj::byte> prefix);

// One received frame. Owns its words; reading it applies our ReaderOptions (traversal and nesting
// limits), so an over-deep or amplifying message throws (kj FAILED) when it is read.
class IncomingFrame {
 public:
  // `words` holds exactly one whole frame whose sizes `peekFrameSize` returned as `size`.
  IncomingFrame(kj::Array<capnp::word> words, FrameSize size);
  KJ_DISALLOW_COPY(IncomingFrame);
  IncomingFrame(IncomingFrame&&) = default;
  IncomingFrame& operator=(IncomingFrame&&) = default;

  capnp::MessageReader& reader() { return *reader_; }

  template <typename T>
  typename T::Reader getRoot() { return reader_->getRoot<T>(); }

  size_t totalBytes() const { return words_.size() * sizeof(capnp::word); }

 private:
  kj::Array<capnp::word> words_;
  kj::Array<kj::ArrayPtr<const capnp::word>> segments_;
  kj::Own<capnp::MessageReader> reader_;
};

// The ReaderOptions an incoming frame of `frameWords` words (header included) is read with: the
// traversal limit in proportion to the frame (see kTraversalWordsPerFrameWord), the nesting
// limit kNestingLimit.
capnp::ReaderOptions readerOptions(size_t frameWords);

// The bytes of one outgoing frame as pieces for writev: the header, then each segment. Refers to
// the builder's segments, so the builder must outlive it and must not change meanwhile.
class OutgoingFrame {
 public:
  explicit OutgoingFrame(capnp::MessageBuilder& message);
  KJ_DISALLOW_COPY(OutgoingFrame);

  kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces() const { return pieces_; }
  size_t totalBytes() const { return totalBytes_; }

 private:
  kj::Array<uint32_t> header_;
  kj::Vector<kj::ArrayPtr<const kj::byte>> pieces_;
  size_t totalBytes_ = 0;
};

// Test helper and slow path: one frame as a single contiguous array.
kj::Array<capnp::word> frameToWords(capnp::MessageBuilder& message);

}  // namespace pi
