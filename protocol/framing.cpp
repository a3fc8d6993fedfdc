// Cap'n Proto stream framing of one message: sizes checked against limits.h before allocating.
#include <optional>
#include "protocol/framing.h"

#include "protocol/limits.h"

#include <kj/debug.h>

#include <cstring>

namespace pi {

namespace {

uint32_t readLittle32(const kj::byte* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

std::optional<FrameSize> peekFrameSize(kj::ArrayPtr<const kj::byte> prefix) {
  if (prefix.size() < 4) return std::nullopt;
  uint64_t segmentCount = uint64_t(readLittle32(prefix.begin())) + 1;
  KJ_REQUIRE(segmentCount <= kMaxSegments, "frame header names too many segments",
             segmentCount, kMaxSegments);
  size_t headerBytes = ((segmentCount + 1) * 4 + 7) & ~size_t{7};
  if (prefix.size() < 4 + segmentCount * 4) return std::nullopt;
  uint64_t bodyBytes = 0;
  for (uint64_t i = 0; i < segmentCount; ++i) {
    uint64_t words = readLittle32(prefix.begin() + 4 + 4 * i);
    KJ_REQUIRE(words > 0 || segmentCount == 1, "frame has an empty segment", i);
    bodyBytes += words * 8;
    KJ_REQUIRE(headerBytes + bodyBytes <= kMaxMessageBytes, "frame is larger than the limit",
               kMaxMessageBytes);
  }
  KJ_REQUIRE(bodyBytes > 0, "frame has no content");
  return FrameSize{headerBytes, headerBytes + bodyBytes};
}

capnp::ReaderOptions readerOptions(size_t frameWords) {
  capnp::ReaderOptions options;
  uint64_t words = uint64_t(frameWords);
  options.traversalLimitInWords =
      words > (kTraversalLimitWords - kTraversalSlackWords) / kTraversalWordsPerFrameWord
          ? kTraversalLimitWords
          : words * kTraversalWordsPerFrameWord + kTraversalSlackWords;
  options.nestingLimit = kNestingLimit;
  return options;
}

IncomingFrame::IncomingFrame(kj::Array<capnp::word> words, FrameSize size)
    : words_(kj::mv(words)) {
  KJ_REQUIRE(words_.size() * 8 == size.totalBytes, "frame buffer does not match its header");
  const kj::byte* bytes = reinterpret_cast<const kj::byte*>(words_.begin());
  uint32_t segmentCount = readLittle32(bytes) + 1;
  auto segments = kj::heapArrayBuilder<kj::ArrayPtr<const capnp::word>>(segmentCount);
  const capnp::word* next = words_.begin() + size.headerBytes / 8;
  for (uint32_t i = 0; i < segmentCount; ++i) {
    uint32_t count = readLittle32(bytes + 4 + 4 * i);
    segments.add(next, count);
    next += count;
  }
  KJ_ASSERT(next == words_.end());
  segments_ = segments.finish();
  reader_ = kj::heap<capnp::SegmentArrayMessageReader>(segments_, readerOptions(words_.size()));
}

OutgoingFrame::OutgoingFrame(capnp::MessageBuilder& message) {
  auto segments = message.getSegmentsForOutput();
  size_t headerWords32 = (segments.size() + 2) & ~size_t{1};  // count + sizes, padded to 8 bytes
  header_ = kj::heapArray<uint32_t>(headerWords32);
  header_[0] = uint32_t(segments.size() - 1);
  header_[headerWords32 - 1] = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    header_[i + 1] = uint32_t(segments[i].size());
  }
  pieces_.add(header_.asBytes());
  totalBytes_ = header_.asBytes().size();
  for (auto segment : segments) {
    pieces_.add(segment.asBytes());
    totalBytes_ += segment.asBytes().size();
  }
}

kj::Array<capnp::word> frameToWords(capnp::MessageBuilder& message) {
  OutgoingFrame frame(message);
  auto words = kj::heapArray<capnp::word>(frame.totalBytes() / 8);
  kj::byte* out = reinterpret_cast<kj::byte*>(words.begin());
  for (auto piece : frame.pieces()) {
    memcpy(out, piece.begin(), piece.size());
    out += piece.size();
  }
  return words;
}

}  // namespace pi
