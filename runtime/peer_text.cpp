// Text that came from the child (its pipes, its messages) made safe to show: valid UTF-8.
#include "runtime/peer_text.h"

#include <cstdint>

namespace pi {

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// The length of the well-formed sequence at `at`, or 0 when it is ill-formed; then `*skip` is
// the length of its maximal ill-formed subpart (at least 1), which one U+FFFD replaces.
size_t sequenceAt(std::string_view bytes, size_t at, size_t* skip) {
  uint8_t lead = uint8_t(bytes[at]);
  size_t length;
  uint8_t low = 0x80, high = 0xBF;  // the range of the second byte (Unicode's table 3-7)
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing past U+10FFFF
  } else {
    *skip = 1;  // a continuation byte, or a byte no sequence starts with
    return 0;
  }
  for (size_t i = 1; i < length; ++i) {
    if (at + i >= bytes.size()) {
      *skip = i;
      return 0;
    }
    uint8_t next = uint8_t(bytes[at + i]);
    uint8_t min = i == 1 ? low : 0x80, max = i == 1 ? high : 0xBF;
    if (next < min || next > max) {
      *skip = i;
      return 0;
    }
  }
  return length;
}

}  // namespace

std::string peerText(std::string_view bytes) {
  // Most text is well-formed: check first, copy once.
  size_t at = 0;
  size_t skip = 0;
  while (at < bytes.size()) {
    size_t length = sequenceAt(bytes, at, &skip);
    if (length == 0) break;
    at += length;
  }
  if (at == bytes.size()) return std::string(bytes);
  std::string out(bytes.substr(0, at));
  out.reserve(bytes.size() + 8);
  while (at < bytes.size()) {
    size_t length = sequenceAt(bytes, at, &skip);
    if (length == 0) {
      out += kReplacement;
      at += skip;
    } else {
      out.append(bytes.data() + at, length);
      at += length;
    }
  }
  return out;
}

}  // namespace pi
