// Tests protocol/framing.cpp: frame sizes from the header, limits before allocation, read limits.
#include <optional>
#include "protocol/framing.h"

#include "protocol/isolation.capnp.h"
#include "protocol/limits.h"
#include "support/allocation_tracker.h"
#include "support/kj_expect.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace pi {
namespace {

using test::throwsKj;
constexpr auto kFailed = kj::Exception::Type::FAILED;

// A frame header as bytes: the segment count minus one, then each size in words.
std::vector<kj::byte> headerOf(uint32_t countMinusOne, const std::vector<uint32_t>& sizes) {
  std::vector<uint32_t> words{countMinusOne};
  words.insert(words.end(), sizes.begin(), sizes.end());
  std::vector<kj::byte> bytes(words.size() * 4);
  memcpy(bytes.data(), words.data(), bytes.size());  // the host is little-endian, as the wire
  return bytes;
}

kj::ArrayPtr<const kj::byte> bytesOf(const std::vector<kj::byte>& bytes) {
  return kj::arrayPtr(bytes.data(), bytes.size());
}

kj::Array<capnp::word> copyOf(kj::ArrayPtr<const capnp::word> words) {
  auto copy = kj::heapArray<capnp::word>(words.size());
  memcpy(copy.begin(), words.begin(), words.asBytes().size());
  return copy;
}

// Parses a whole frame the way a receiver does: header first, then the frame.
IncomingFrame readFrame(kj::ArrayPtr<const capnp::word> words) {
  if (auto size = peekFrameSize(words.asBytes())) {
    EXPECT_EQ(size->totalBytes, words.asBytes().size());
    return IncomingFrame(copyOf(words), *size);
  }
  KJ_FAIL_ASSERT("peekFrameSize found no whole header in a whole frame");
}

void fillRequest(wire::Message::Builder message, int argCount) {
  auto request = message.initRequest();
  request.setCallId(42);
  request.setOp(wire::Op::CALL_METHOD);
  request.setTarget(7);
  request.setName("dragons_here");
  auto args = request.initArgs(unsigned(argCount));
  for (int i = 0; i < argCount; ++i) {
    if (i % 2 == 0) {
      args[unsigned(i)].setInt(-i);
    } else {
      std::string text(100, char('a' + i % 26));
      args[unsigned(i)].setStr(kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()),
                                            text.size()));
    }
  }
}

void expectRequest(wire::Message::Reader message, int argCount) {
  ASSERT_EQ(message.which(), wire::Message::REQUEST);
  auto request = message.getRequest();
  EXPECT_EQ(request.getCallId(), 42u);
  EXPECT_EQ(request.getOp(), wire::Op::CALL_METHOD);
  EXPECT_EQ(request.getTarget(), 7u);
  EXPECT_EQ(std::string(request.getName().cStr()), "dragons_here");
  auto args = request.getArgs();
  ASSERT_EQ(args.size(), unsigned(argCount));
  for (int i = 0; i < argCount; ++i) {
    if (i % 2 == 0) {
      ASSERT_EQ(args[unsigned(i)].which(), wire::Value::INT);
      EXPECT_EQ(args[unsigned(i)].getInt(), -i);
    } else {
      ASSERT_EQ(args[unsigned(i)].which(), wire::Value::STR);
      auto str = args[unsigned(i)].getStr();
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(str.begin()), str.size()),
                std::string(100, char('a' + i % 26)));
    }
  }
}

TEST(Framing, RoundTripsAMessageThroughOutgoingAndIncomingFrame) {
  capnp::MallocMessageBuilder message;
  fillRequest(message.initRoot<wire::Message>(), 4);

  OutgoingFrame outgoing(message);
  auto words = frameToWords(message);
  ASSERT_EQ(outgoing.totalBytes(), words.asBytes().size());

  // The pieces, laid end to end, are exactly frameToWords' bytes.
  std::vector<kj::byte> joined;
  for (auto piece : outgoing.pieces()) joined.insert(joined.end(), piece.begin(), piece.end());
  ASSERT_EQ(joined.size(), words.asBytes().size());
  EXPECT_EQ(memcmp(joined.data(), words.asBytes().begin(), joined.size()), 0);

  if (auto size = peekFrameSize(words.asBytes())) {
    EXPECT_EQ(size->headerBytes, 8u);  // one segment: count and size fill one word
    EXPECT_EQ(size->totalBytes, words.asBytes().size());
    IncomingFrame incoming(copyOf(words), *size);
    EXPECT_EQ(incoming.totalBytes(), words.asBytes().size());
    expectRequest(incoming.getRoot<wire::Message>(), 4);
  } else {
    FAIL() << "peekFrameSize returned null for a whole frame";
  }
}

TEST(Framing, RoundTripsAMessageOfManySegments) {
  // Small fixed-size segments force the message to spread over many of them.
  capnp::MallocMessageBuilder message(16, capnp::AllocationStrategy::FIXED_SIZE);
  fillRequest(message.initRoot<wire::Message>(), 40);
  size_t segmentCount = message.getSegmentsForOutput().size();
  ASSERT_GT(segmentCount, 3u);

  auto words = frameToWords(message);
  if (auto size = peekFrameSize(words.asBytes())) {
    EXPECT_EQ(size->headerBytes, ((segmentCount + 1) * 4 + 7) & ~size_t{7});
  } else {
    FAIL() << "peekFrameSize returned null for a whole frame";
  }
  auto incoming = readFrame(words);
  expectRequest(incoming.getRoot<wire::Message>(), 40);
}

TEST(Framing, PeekFrameSizeReturnsNullWhileTheHeaderIsTruncated) {
  for (uint32_t segments : {1u, 2u, 3u, 6u}) {
    std::vector<uint32_t> sizes(segments, 5);
    auto header = headerOf(segments - 1, sizes);
    size_t needed = 4 + 4 * segments;  // the count and every size
    for (size_t length = 0; length < needed; ++length) {
      EXPECT_TRUE(peekFrameSize(kj::arrayPtr(header.data(), length)) == std::nullopt)
          << segments << " segments, prefix of " << length << " bytes";
    }
    if (auto size = peekFrameSize(bytesOf(header))) {
      size_t headerBytes = (needed + 7) & ~size_t{7};
      EXPECT_EQ(size->headerBytes, headerBytes);
      EXPECT_EQ(size->totalBytes, headerBytes + segments * 5 * 8);
    } else {
      ADD_FAILURE() << segments << " segments: null for a complete header";
    }
  }
}

TEST(Framing, PeekFrameSizeRejectsMoreSegmentsThanTheLimitFromTheCountAlone) {
  // Only the first four bytes have arrived: the count alone must be refused.
  auto tooMany = headerOf(kMaxSegments, {});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(tooMany)); }));
  auto allOnes = headerOf(0xffffffffu, {});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(allOnes)); }));

  // Exactly kMaxSegments is allowed.
  auto atLimit = headerOf(kMaxSegments - 1, std::vector<uint32_t>(kMaxSegments, 1));
  if (auto size = peekFrameSize(bytesOf(atLimit))) {
    EXPECT_EQ(size->totalBytes, size->headerBytes + kMaxSegments * 8);
  } else {
    FAIL() << "null for a complete header of kMaxSegments segments";
  }
}

TEST(Framing, PeekFrameSizeRejectsATotalAboveTheLimitBeforeAllocating) {
  test::AllocationTracker allocations;
  // A single segment of 2^32-1 words: 32 GiB.
  auto huge = headerOf(0, {0xffffffffu});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(huge)); }, "larger"));
  // Many segments that are each allowed but add up to more than the limit (and would overflow
  // 32 bits when summed).
  auto summed = headerOf(3, {0x40000000u, 0x40000000u, 0x40000000u, 0x40000000u});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(summed)); }, "larger"));
  // The words of the body are never asked for.
  EXPECT_LT(allocations.largest(), size_t{1} << 20);

  // The limit itself is inclusive: header plus body of exactly kMaxMessageBytes.
  auto atLimit = headerOf(0, {uint32_t((kMaxMessageBytes - 8) / 8)});
  if (auto size = peekFrameSize(bytesOf(atLimit))) {
    EXPECT_EQ(size->totalBytes, kMaxMessageBytes);
  } else {
    FAIL() << "null for a complete header at the limit";
  }
  auto oneWordMore = headerOf(0, {uint32_t((kMaxMessageBytes - 8) / 8 + 1)});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(oneWordMore)); }));
}

TEST(Framing, PeekFrameSizeRejectsAFrameWithAnEmptySegment) {
  // A reader refuses an empty segment (and a frame with no content at all) instead of building
  // a reader over it. Our writers never produce one: a capnp builder leaves an empty segment only
  // when an orphan is truncated, and we use no orphans.
  auto emptySecond = headerOf(1, {4, 0});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(emptySecond)); }, "empty"));
  auto emptyOnly = headerOf(0, {0});
  EXPECT_TRUE(throwsKj(kFailed, [&] { (void)peekFrameSize(bytesOf(emptyOnly)); }));
}

TEST(Framing, IncomingFrameRejectsABufferThatDoesNotMatchItsHeader) {
  capnp::MallocMessageBuilder message;
  fillRequest(message.initRoot<wire::Message>(), 2);
  auto words = frameToWords(message);
  if (auto size = peekFrameSize(words.asBytes())) {
    FrameSize lying = *size;
    lying.totalBytes += 8;
    EXPECT_TRUE(throwsKj(kFailed, [&] { IncomingFrame frame(copyOf(words), lying); }));
  } else {
    FAIL() << "null for a whole frame";
  }
}

// Reads everything reachable in a message, as a receiver that looks at every field would.
void readEverything(IncomingFrame& frame) {
  auto root = frame.reader().getRoot<capnp::AnyPointer>();
  (void)root.targetSize();
  (void)kj::str(frame.getRoot<wire::Message>());
}

TEST(Framing, GarbageEitherThrowsOrParsesWithinTheLimits) {
  std::mt19937 random(20240611);
  int parsed = 0;
  int thrown = 0;
  for (int round = 0; round < 20000; ++round) {
    // Mostly plausible headers (few small segments), sometimes anything at all.
    uint32_t segments = random() % 4 == 0 ? uint32_t(random()) : uint32_t(random() % 3);
    size_t bodyWords = random() % 24;
    std::vector<uint32_t> sizes;
    for (uint32_t i = 0; i < std::min<uint32_t>(segments + 1, 4); ++i) {
      sizes.push_back(random() % 8 == 0 ? uint32_t(random()) : uint32_t(random() % 8));
    }
    auto bytes = headerOf(segments, sizes);
    if (bytes.size() % 8 != 0) bytes.resize(bytes.size() + 4, 0);
    for (size_t i = 0; i < bodyWords; ++i) {
      // Zero words, random words, and pointer-shaped words with small offsets and sizes.
      uint64_t word = 0;
      switch (random() % 4) {
        case 0: break;
        case 1: word = uint64_t(random()) << 32 | random(); break;
        default: {
          uint32_t low = uint32_t(int32_t(random() % 16) - 4) << 2 | uint32_t(random() % 4);
          uint32_t high = uint32_t(random() % 8) | uint32_t(random() % 4) << 16;
          word = uint64_t(high) << 32 | low;
        }
      }
      kj::byte wordBytes[8];
      memcpy(wordBytes, &word, 8);
      bytes.insert(bytes.end(), wordBytes, wordBytes + 8);
    }
    if (random() % 2) bytes.resize(random() % (bytes.size() + 1));  // cut anywhere

    try {
      if (auto size = peekFrameSize(bytesOf(bytes))) {
        ASSERT_LE(size->totalBytes, kMaxMessageBytes);
        ASSERT_EQ(size->totalBytes % 8, 0u);
        if (size->totalBytes > bytes.size()) continue;  // a reader would wait for more
        auto words = kj::heapArray<capnp::word>(size->totalBytes / 8);
        memcpy(words.begin(), bytes.data(), size->totalBytes);
        IncomingFrame frame(kj::mv(words), *size);
        readEverything(frame);
        ++parsed;
      }
    } catch (const kj::Exception&) {
      ++thrown;
    }
  }
  // Both outcomes happened, so the loop exercised the reader and not only the header check.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(thrown, 100);
}

// A Value that is `levels` lists deep, the innermost one empty.
void buildNestedLists(wire::Value::Builder value, int levels) {
  for (int i = 1; i < levels; ++i) value = value.initList(1)[0];
  value.initList(0);
}

int depthOf(wire::Value::Reader value) {
  int depth = 0;
  while (value.which() == wire::Value::LIST) {
    ++depth;
    auto list = value.getList();
    if (list.size() == 0) break;
    value = list[0];
  }
  return depth;
}

TEST(Framing, ReadingAMessageNestedDeeperThanTheLimitThrows) {
  capnp::MallocMessageBuilder deep;
  buildNestedLists(deep.initRoot<wire::Value>(), kNestingLimit + 10);
  auto deepFrame = readFrame(frameToWords(deep));
  EXPECT_TRUE(throwsKj(kFailed, [&] { depthOf(deepFrame.getRoot<wire::Value>()); },
                       "nested"));

  // The same shape within the limit reads to the bottom.
  capnp::MallocMessageBuilder shallow;
  buildNestedLists(shallow.initRoot<wire::Value>(), kNestingLimit / 4);
  auto shallowFrame = readFrame(frameToWords(shallow));
  EXPECT_EQ(depthOf(shallowFrame.getRoot<wire::Value>()), kNestingLimit / 4);
}

TEST(Framing, ReadingAPointerCycleThrows) {
  // Word 0 (the root pointer) points at a struct at word 1 with no data and one pointer; that
  // pointer points at its own struct, so the message "contains itself" forever.
  const uint64_t words[] = {
      uint64_t(2) << 32,      // header: one segment (count-1 = 0) of two words
      0x0001000000000000ull,  // struct pointer, offset 0, 0 data words, 1 pointer
      0x00010000fffffffcull,  // struct pointer, offset -1: back to its own struct
  };
  auto frameWords = kj::heapArray<capnp::word>(3);
  memcpy(frameWords.begin(), words, sizeof(words));

  auto frame = readFrame(frameWords);
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    (void)frame.reader().getRoot<capnp::AnyPointer>().targetSize();
  }));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    auto next = frame.reader().getRoot<capnp::AnyStruct>();
    for (int i = 0; i < 10 * kNestingLimit; ++i) {
      next = next.getPointerSection()[0].getAs<capnp::AnyStruct>();
    }
  }));
}

TEST(Framing, ReadingAMessageWhosePointersAliasOneBlobHitsTheTraversalLimit) {
  // A list of `count` Data pointers that all point at the same blob of `blobBytes`: a 1 MiB
  // message that reads like a 2 GiB one.
  constexpr size_t kBlobBytes = size_t{1} << 20;
  constexpr size_t kBlobWords = kBlobBytes / 8;
  constexpr size_t kCount = kTraversalLimitWords / kBlobWords + 2;
  capnp::MallocMessageBuilder message(unsigned(kCount + kBlobWords + 16));
  auto list = message.initRoot<capnp::List<capnp::Data>>(unsigned(kCount));
  list.init(0, unsigned(kBlobBytes));
  ASSERT_EQ(message.getSegmentsForOutput().size(), 1u);

  auto words = frameToWords(message);
  auto* segment = reinterpret_cast<uint64_t*>(words.begin() + 1);  // after the 8-byte header
  // segment[0] is the root list pointer; segment[1 + i] is element i's pointer.
  uint64_t first = segment[1];
  int32_t firstOffset = int32_t(uint32_t(first)) >> 2;
  int64_t blobAt = 1 + 1 + firstOffset;
  for (size_t i = 1; i < kCount; ++i) {
    int64_t offset = blobAt - int64_t(1 + i + 1);
    segment[1 + i] = (first & 0xffffffff00000000ull) | (uint32_t(offset) << 2) | 1u;
  }

  auto frame = readFrame(words);
  auto aliased = frame.reader().getRoot<capnp::List<capnp::Data>>();
  ASSERT_EQ(aliased.size(), kCount);
  // The first few reads see the one blob; reading all of them exceeds the traversal limit.
  EXPECT_EQ(aliased[1].begin(), aliased[0].begin());
  EXPECT_EQ(aliased[kCount / 2].size(), kBlobBytes);
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    size_t total = 0;
    for (auto data : aliased) total += data.size();
    ADD_FAILURE() << "read " << total << " bytes through aliased pointers";
  }));
}

TEST(Framing, ASmallMessageWhosePointersAliasOneListCannotReadLikeALargeOne) {
  // 1024 list pointers that all point at one list of 1024 words: a 16 KiB frame that reads like
  // an 8 MiB one (far below the absolute kTraversalLimitWords). The traversal limit follows the
  // frame's size, so reading it all throws; the same shape without aliasing reads in full.
  constexpr unsigned kCount = 1024;
  constexpr unsigned kItems = 1024;
  capnp::MallocMessageBuilder message(kCount + kItems + 16);
  auto lists = message.initRoot<capnp::List<capnp::List<uint64_t>>>(kCount);
  lists.init(0, kItems);
  ASSERT_EQ(message.getSegmentsForOutput().size(), 1u);
  auto words = frameToWords(message);
  auto* segment = reinterpret_cast<uint64_t*>(words.begin() + 1);  // after the 8-byte header
  uint64_t first = segment[1];
  int64_t listAt = 1 + 1 + (int32_t(uint32_t(first)) >> 2);
  for (size_t i = 1; i < kCount; ++i) {
    int64_t offset = listAt - int64_t(1 + i + 1);
    segment[1 + i] = (first & 0xffffffff00000000ull) | (uint32_t(offset) << 2) | 1u;
  }
  auto aliasedFrame = readFrame(words);
  auto aliased = aliasedFrame.reader().getRoot<capnp::List<capnp::List<uint64_t>>>();
  ASSERT_EQ(aliased.size(), kCount);
  EXPECT_EQ(aliased[kCount - 1].size(), kItems);  // a few reads see the one list
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    uint64_t items = 0;
    for (auto list : aliased) items += list.size();
    ADD_FAILURE() << "read " << items << " items through aliased pointers";
  }));

  // A message of the same size and shape with no aliasing: read in full, twice.
  capnp::MallocMessageBuilder honest(kCount + kItems * 2 + 16);
  auto plain = honest.initRoot<capnp::List<capnp::List<uint64_t>>>(kCount);
  for (unsigned i = 0; i < kCount; ++i) plain.init(i, i < kItems / 2 ? 1 : 0);
  auto honestFrame = readFrame(frameToWords(honest));
  for (int pass = 0; pass < 2; ++pass) {
    uint64_t items = 0;
    for (auto list : honestFrame.reader().getRoot<capnp::List<capnp::List<uint64_t>>>()) {
      items += list.size();
    }
    EXPECT_EQ(items, kItems / 2);
  }
}

}  // namespace
}  // namespace pi
