// What the child runs after fork: the caller's bootstrap, then the serve loop.
#include "proxy/child_server.h"

#include "proxy/endpoint.h"
#include "proxy/huge_page_allocations.h"
#include "runtime/startup_failure.h"

#include <kj/debug.h>

#include <string>

namespace pi {

void reportBootstrapFailure(py::error_already_set& error) {
  bool outOfMemory = error.matches(PyExc_MemoryError);
  std::string traceback;
  try {
    py::object lines = py::module_::import("traceback")
                           .attr("format_exception")(error.type(), error.value(), error.trace());
    traceback = py::str("").attr("join")(lines).cast<std::string>();
  } catch (...) {
    // No memory left to format it (under a tight limit): the sentence below still goes out.
  }
  std::string what = "the context's start-up code raised ";
  try {
    what += py::str(error.type().attr("__name__")).cast<std::string>();
    std::string text = py::str(error.value()).cast<std::string>();
    if (!text.empty()) what += ": " + text;
  } catch (...) {
    what += "an exception";
  }
  reportStartupFailure(what.c_str(), 0, outOfMemory);
  if (!traceback.empty()) writeStartupReport(traceback.c_str());
  error.restore();
  PyErr_Print();  // and to stderr, as ever (a captured stderr keeps it too)
}

int ChildServer::serve(UniqueFd socket) {
  adviseHugePagesForLargeAllocations();  // still single-threaded: the bootstrap has not run
  if (bootstrap_ && !bootstrap_.is_none()) {
    try {
      bootstrap_();
    } catch (py::error_already_set& error) {
      if (error.matches(PyExc_SystemExit)) return 0;
      reportBootstrapFailure(error);
      return kStartupBootstrapFailed;
    }
  }
  auto endpoint = std::make_shared<Endpoint>(std::move(socket), Role::kChild);
  try {
    endpoint->serve();
  } catch (kj::Exception& e) {
    // The parent went away (DISCONNECTED): stop. Anything else ends the child with a reason.
    if (e.getType() == kj::Exception::Type::DISCONNECTED) return 0;
    std::string description = e.getDescription().cStr();
    reportStartupFailure(("it could not serve its parent: " + description).c_str(), 0,
                         description.find("ENOMEM") != std::string::npos ||
                             description.find("Cannot allocate memory") != std::string::npos);
    return kStartupFailed;
  }
  return 0;
}

}  // namespace pi
