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

  // MessageHandler
  int serve(UniqueFd socket) override;

 private:
  py::object bootstrap_;
};

}  // namespace pi
