// What the child runs after fork: the caller's bootstrap, then the serve loop.
#include "proxy/child_server.h"

#include "proxy/endpoint.h"
#include "proxy/huge_page_allocations.h"

#include <kj/debug.h>

namespace pi {

namespace {

// Exit statuses of a child that could not start (the parent reports them).
constexpr int kBootstrapFailed = 72;

}  // namespace

int ChildServer::serve(UniqueFd socket) {
  adviseHugePagesForLargeAllocations();  // still single-threaded: the bootstrap has not run
  if (bootstrap_ && !bootstrap_.is_none()) {
    try {
      bootstrap_();
    } catch (py::error_already_set& error) {
      if (error.matches(PyExc_SystemExit)) return 0;
      error.restore();
      PyErr_Print();
      return kBootstrapFailed;
    }
  }
  auto endpoint = std::make_shared<Endpoint>(std::move(socket), Role::kChild);
  try {
    endpoint->serve();
  } catch (kj::Exception& e) {
    // The parent went away (DISCONNECTED) or broke the protocol: either way, stop.
    return e.getType() == kj::Exception::Type::DISCONNECTED ? 0 : 70;
  }
  return 0;
}

}  // namespace pi
