// One table: request op -> handler that runs it on this side's objects.
#pragma once

#include "proxy/export_table.h"
#include "proxy/value_codec.h"
#include "protocol/isolation.capnp.h"

#include <pybind11/pybind11.h>

#include <functional>
#include <unordered_map>

namespace pi {

namespace py = pybind11;

// Whose requests a dispatcher serves. The parent serves a child it does not trust.
enum class Role { kParent, kChild };

// What an op produced.
struct DispatchResult {
  py::object value;
  bool pickled = false;  // `value` is (pickle bytes, [out-of-band PickleBuffer, ...]): sent as a
                         // list of Value.pickled and then one bytearray per buffer
  bool refetch = false;  // `value` is (address, size) of a span this side sent (fetchBuffer):
                         // sent as that buffer again (BufferCodec::encodePinned)
};

// Runs requests against the local objects in an export table. Requires the GIL.
//
// In the parent (Role::kParent) the peer is a child the parent does not trust, so the dispatcher
// refuses what would make the parent act on a name the child chose: `import` and `callByName`
// (the parent never imports a module or resolves a global by a name the child sent), and
// `byvalue` (the parent's objects are never pickled for the child). `fetchBuffer` it passes on
// to the endpoint, which answers it only for a span the parent sent and still holds.
// Everything else the child may do with the parent objects it was handed, as local code would,
// private and dunder attributes included (DESIGN.md, "Trust": an unconfined child can already do
// anything its user can). With `setDenyPrivate(true)`, for a confined (sandboxed) child, it also
// refuses attribute names starting with an underscore (which lead to `__globals__`, `__code__`,
// `__subclasses__` and from there to everything) and the introspection attributes of frames,
// tracebacks, code, generators and coroutines, as an AttributeError saying why (so `hasattr`
// probes behave), and every op but repr, str, hash, bool and compare on modules, frames,
// tracebacks and code objects, as a PermissionError.
class Dispatcher {
 public:
  Dispatcher(ValueCodec& codec, ExportTable& exports, Role role)
      : codec_(codec), exports_(exports), role_(role) {}

  // Decodes the request's target and arguments and runs its op. Calls `argumentsDecoded` (when
  // set) once the arguments are made, before the op runs: from then on nothing of the request's
  // frame is read. Throws py::error_already_set for an exception the op raised (to be sent back
  // as an Error), and kj FAILED for a request that names an unknown id or breaks the protocol.
  DispatchResult dispatch(wire::Request::Reader request,
                          const std::function<void()>& argumentsDecoded = {});

  Role role() const { return role_; }

  // Parent side: whether the child is confined (see the class comment). Off by default. Set it
  // before the first request is served (the context does, right after the child said hello).
  void setDenyPrivate(bool deny) { denyPrivate_ = deny; }
  bool deniesPrivate() const { return denyPrivate_; }

  // The items the last iterBatch on export `id` returned (empty when none).
  py::list lastBatch(uint64_t id) const;
  // Export `id` was dropped: forget what was kept for it.
  void forget(uint64_t id);

 private:
  ValueCodec& codec_;
  ExportTable& exports_;
  Role role_;
  bool denyPrivate_ = false;
  // Export id of an iterator -> the exception it raised part-way through an iterBatch.
  std::unordered_map<uint64_t, py::object> pendingIterErrors_;
  // Export id of an iterator -> the items its last iterBatch returned, to put unread ones back.
  std::unordered_map<uint64_t, py::list> lastBatches_;
};

}  // namespace pi
