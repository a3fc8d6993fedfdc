// Fixed maxima for reading a message a hostile peer wrote, in one place.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pi {

// Largest frame (header plus segments) a reader accepts. Checked against the frame header before
// anything is allocated. Larger payloads must travel out of band.
constexpr size_t kMaxMessageBytes = size_t{512} << 20;

// Bytes values at least this large travel out of band, in a sealed memfd (Value.buffer).
constexpr size_t kBufferThresholdBytes = size_t{1} << 20;

// Bytes values at least this large stay in the sender's memory and the receiver copies them from
// there (Buffer.address), when it can read the sender: one process_vm_readv instead of the four
// copies of an inline value (encode, send, receive, decode). Measured, a bytes value from the
// child, one call (median of 300): 4 to 32 KiB inline 27-32 us and a span no faster; 64 KiB
// inline 66 us, span 35 us; 1 MiB inline (before spans) 700 us, span 160 us. From the parent,
// whose objects are in 4 KiB pages (medians of 800 calls over 16 children): 48 KiB to 128 KiB
// even (18-33 us either way), 192 KiB inline 297 us, span 42 us; 1 MiB - 1 inline 1.8 ms, span
// 0.2 ms. So one threshold serves both directions.
constexpr size_t kRemoteSpanThresholdBytes = size_t{64} << 10;

// Out-of-band bytes (Buffer.size: memfds and spans alike) are what a peer can make the reader
// allocate at the cost of a few bytes of frame, so they are bounded three ways, each checked
// before anything is allocated: per buffer, per message (summed over every buffer it carries,
// checked when the frame arrives), and per connection over the messages being decoded at once
// (decoding one may wait for others: a proxy dict key is hashed by a call to the peer, a span
// the OS refused is fetched again). Legitimate traffic is far below: the largest values we
// measure and test are 64 MiB arrays and bytes (bench/, tests/python/test_bulk_transfer.py), a
// few of them in one answer. 1 GiB per message is 16 of those; what a hostile child can make the
// parent hold at once is then 2 GiB, given back when its message fails. A larger value must
// cross in pieces (the sender refuses it with a ValueError that says so).

// The largest out-of-band buffer a reader accepts.
constexpr uint64_t kMaxBufferBytes = uint64_t{1} << 30;

// The most out-of-band bytes one message may carry, over all its buffers. A sender refuses to
// encode more (ValueError); a receiver that is sent more ends the connection (ProtocolError).
constexpr uint64_t kMaxMessageBufferBytes = uint64_t{1} << 30;
static_assert(kMaxBufferBytes <= kMaxMessageBufferBytes, "a buffer must fit in its message");

// The most out-of-band bytes of the messages one connection is decoding at once (nested), so
// that a message whose decoding waits for another (the answer to a fetchBuffer of one of its
// spans, up to the same size) still fits.
constexpr uint64_t kMaxDecodingBufferBytes = 2 * kMaxMessageBufferBytes;

// Most file descriptors one frame may carry; more received than frames claim is a protocol
// error.
constexpr uint32_t kMaxFrameFds = 64;

// Most segments one frame may have. Our writers use a handful; the limit bounds the header.
constexpr uint32_t kMaxSegments = 512;

// capnp ReaderOptions: words a reader may traverse in one message. A well-formed message reads
// each of its words once per pass, and our decoders make one pass (a few words more for the
// envelope), so the limit follows the frame: kTraversalWordsPerFrameWord words for each word of
// it plus kTraversalSlackWords, never more than kTraversalLimitWords. Pointers that alias make a
// small message read like a large one: under the absolute limit alone, a 21 KiB frame whose
// lists all point at one list decoded as 27 million values in the parent (and a 72 KiB one
// would make 89 million before reaching the limit); bound by its own size, a frame reads as at
// most 8 times itself.
constexpr uint64_t kTraversalLimitWords = 4 * (kMaxMessageBytes / 8);
constexpr uint64_t kTraversalWordsPerFrameWord = 8;
constexpr uint64_t kTraversalSlackWords = 1024;

// capnp ReaderOptions: how deep the struct/list nesting of one message may go. One level of
// Python nesting costs two capnp levels for a list (the list, the Value) and three for a dict or
// an exception's args (the entry list, the entry, the Value), plus a few for the envelope; so a
// value at kMaxValueDepth always fits.
constexpr int kNestingLimit = 3 * 100 + 16;

// How deep a Python value may nest when it crosses by value (lists in lists ...). Deeper values,
// including self-referencing containers, are refused with a clear error on the sending side.
constexpr int kMaxValueDepth = 100;
static_assert(kNestingLimit >= 3 * kMaxValueDepth + 16, "a value at the depth limit must be readable");

// Standard values (Value.standard) are rebuilt from their fields, so each field a peer can make
// large is bounded, keeping what one costs to rebuild small and fixed: a value over a bound
// crosses by reference instead. Measured here: a Decimal of 2^16 digits parses in 0.3 ms, a
// Fraction of two 2^16-bit terms normalizes (its gcd) in 8 ms; _byvalue.py bounds a Fraction
// the same way.

// The most bytes of text in one standard value (a path, a timezone's name).
constexpr size_t kMaxStandardTextBytes = size_t{1} << 16;

// The most digits in a Decimal's coefficient (or a NaN's payload).
constexpr size_t kMaxDecimalDigits = size_t{1} << 16;

// The largest |exponent| of a Decimal: the decimal module's own (MAX_EMAX on 64 bits).
constexpr int64_t kMaxDecimalExponent = 999999999999999999;

// The most bits in a Fraction's numerator or denominator.
constexpr size_t kMaxFractionBits = size_t{1} << 16;

}  // namespace pi
