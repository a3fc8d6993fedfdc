// The embedded interpreter of the fuzz targets that decode Python values (proxy/).
#pragma once

#include <pybind11/embed.h>

#include <cstdlib>

namespace pi::fuzz {

// Starts the interpreter once, for the whole run, and keeps the GIL on this (the only) thread.
// Python allocates with malloc (PYTHONMALLOC=malloc), not from its own arenas, so that
// AddressSanitizer sees every object and LeakSanitizer can tell a leaked one: the interpreter is
// never finalized, so what it still holds stays reachable. Call from LLVMFuzzerInitialize.
inline void startPython() {
  ::setenv("PYTHONMALLOC", "malloc", 1);
  ::setenv("PYTHONHASHSEED", "0", 1);  // a crash reproduces with the same set and dict order
  static pybind11::scoped_interpreter* interpreter = new pybind11::scoped_interpreter(false);
  (void)interpreter;
}

}  // namespace pi::fuzz
