// Tests runtime/peer_text.cpp: the child's bytes as valid UTF-8, ill-formed parts replaced.
#include "runtime/peer_text.h"

#include <gtest/gtest.h>

#include <string>

namespace pi {
namespace {

const std::string kR = "\xEF\xBF\xBD";  // U+FFFD

TEST(PeerText, LeavesWellFormedTextAsItIs) {
  std::string text = std::string("plain, ") + "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x8D" +
                     std::string(1, '\0') + "after a NUL \xF4\x8F\xBF\xBF";
  EXPECT_EQ(peerText(text), text);
  EXPECT_EQ(peerText(""), "");
}

TEST(PeerText, ReplacesEachStrayOrImpossibleByteWithOneReplacementCharacter) {
  EXPECT_EQ(peerText("a\xFF" "b"), "a" + kR + "b");
  EXPECT_EQ(peerText("\x80\xBF"), kR + kR);        // continuation bytes with no lead
  EXPECT_EQ(peerText("\xC0\xAF"), kR + kR);        // C0 and C1 start only overlong forms
  EXPECT_EQ(peerText("\xF5\x80\x80\x80"), kR + kR + kR + kR);  // past U+10FFFF
}

TEST(PeerText, ReplacesATruncatedSequenceWithOneReplacementCharacter) {
  EXPECT_EQ(peerText("x\xE2\x82"), "x" + kR);      // cut at the end
  EXPECT_EQ(peerText("\xE2\x82(x"), kR + "(x");    // cut by an ASCII byte, which is kept
  EXPECT_EQ(peerText("\xF0\x9F\x90"), kR);
}

TEST(PeerText, RefusesOverlongFormsSurrogatesAndCodePointsPastTheLast) {
  // As Python's 'replace': the lead starts no valid sequence with that second byte, so the
  // lead alone is one subpart and each continuation byte another.
  EXPECT_EQ(peerText("\xE0\x80\x80"), kR + kR + kR);
  EXPECT_EQ(peerText("\xED\xA0\x80"), kR + kR + kR);  // U+D800
  EXPECT_EQ(peerText("\xF0\x80\x80\x80"), kR + kR + kR + kR);
  EXPECT_EQ(peerText("\xF4\x90\x80\x80"), kR + kR + kR + kR);
}

}  // namespace
}  // namespace pi
