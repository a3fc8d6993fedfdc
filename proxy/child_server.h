// What the child runs after fork: the caller's bootstrap, then the serve loop.
#pragma once

#include "runtime/message_handler.h"

#include <pybind11/pybind11.h>

namespace pi {

namespace py = pybind11;

// The MessageHandler of a forked child: runs `bootstrap` (a Python callable taking no
// arguments, or None) and then serves the parent with a child-role Endpoint. Made in the parent
// before fork; used only in the child.
class ChildServer : public MessageHandler {
 public:
  explicit ChildServer(py::object bootstrap) : bootstrap_(std::move(bootstrap)) {}

  // MessageHandler. A bootstrap that raises ends the child with kStartupBootstrapFailed and its
  // reason and traceback on the crash pipe (reportBootstrapFailure); an error of the serve loop
  // other than the parent going away ends it with kStartupFailed and its description there.
  int serve(UniqueFd socket) override;

 private:
  py::object bootstrap_;
};

// In a child whose start-up code raised `error` (not SystemExit): writes why, and the Python
// traceback when it can be formatted, to the crash pipe (startup_failure.h), and prints the
// traceback to stderr. Needs the GIL.
void reportBootstrapFailure(py::error_already_set& error);

}  // namespace pi
