// Text that came from the child (its pipes, its messages) made safe to show: valid UTF-8.
#pragma once

#include <string>
#include <string_view>

namespace pi {

// `bytes` as valid UTF-8: every ill-formed sequence (a stray continuation byte, a truncated or
// overlong sequence, an encoded surrogate, a code point past U+10FFFF) becomes U+FFFD, one per
// maximal ill-formed subpart, as Python's 'replace' error handler decodes it. Well-formed text
// comes back unchanged (NUL bytes included).
//
// The child is untrusted and its bytes are arbitrary, while Python's str (and pybind11's
// conversion of std::string) decodes strictly: everything the child wrote that the parent keeps
// as text (crash reports, output tails, descriptions quoting its messages, names and messages in
// its frames) goes through here once, where it enters, so no later conversion can fail.
std::string peerText(std::string_view bytes);

}  // namespace pi
