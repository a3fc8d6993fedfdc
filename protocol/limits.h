// Fixed maxima for reading a message a hostile peer wrote, in one place.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pi {

// Largest frame (header plus segments) a reader accepts. Checked against the frame header before
// anything is allocated. Larger payloads must travel out of band.
constexpr size_t kMaxMessageBytes = size_t{512} << 20;

// Most segments one frame may have. Our writers use a handful; the limit bounds the header.
constexpr uint32_t kMaxSegments = 512;

// capnp ReaderOptions: words a reader may traverse in one message (a multiple of the largest
// message, so a well-formed message always fits while pointer tricks cannot amplify reads).
constexpr uint64_t kTraversalLimitWords = 4 * (kMaxMessageBytes / 8);

// capnp ReaderOptions: how deep the struct/list nesting of one message may go. One level of
// Python nesting (a list inside a list) costs two capnp levels.
constexpr int kNestingLimit = 256;

// How deep a Python value may nest when it crosses by value (lists in lists ...). Deeper values,
// including self-referencing containers, are refused with a clear error on the sending side.
constexpr int kMaxValueDepth = 100;

}  // namespace pi
