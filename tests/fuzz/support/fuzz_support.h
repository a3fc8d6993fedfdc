// What every fuzz target shares: the checks that turn a quiet resource leak into a crash report.
#pragma once

#include <kj/exception.h>

#include <cstddef>
#include <cstdint>

namespace pi::fuzz {

// Reports a broken invariant the sanitizers cannot see and aborts, which libFuzzer records as a
// crash with the input that caused it.
[[noreturn]] void fail(const char* what, const char* detail = "");

// The lowest fd number not in use: it grows when a run leaks descriptors.
int lowestFreeFd();

// Fails when the lowest free fd is above `baseline` (lowestFreeFd() when the input started): the
// input left a descriptor open. (Per input, because libFuzzer itself opens pipes between inputs,
// to the symbolizer that names newly covered functions.)
void checkNoFdLeak(int baseline);

// A kj exception a decoder may throw for bad input: FAILED (refused), DISCONNECTED and OVERLOADED
// (the peer went away or was too slow). Anything else, UNIMPLEMENTED for one, is a bug.
void expectPeerError(const kj::Exception& e);

}  // namespace pi::fuzz
