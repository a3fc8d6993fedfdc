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
// In the parent (Role::kParent) the peer is an untrusted child, so the dispatcher refuses what
// would let it reach beyond the objects the parent handed it: `import`, `callByName` and
// `byvalue`, and attribute access to names starting with an underscore (which would lead to
// `__globals__`, `__code__`, `__subclasses__` and from there to everything). `fetchBuffer` it
// passes on to the endpoint, which answers it only for a span the parent sent and still holds.
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

  // The items the last iterBatch on export `id` returned (empty when none).
  py::list lastBatch(uint64_t id) const;
  // Export `id` was dropped: forget what was kept for it.
  void forget(uint64_t id);

 private:
  ValueCodec& codec_;
  ExportTable& exports_;
  Role role_;
  // Export id of an iterator -> the exception it raised part-way through an iterBatch.
  std::unordered_map<uint64_t, py::object> pendingIterErrors_;
  // Export id of an iterator -> the items its last iterBatch returned, to put unread ones back.
  std::unordered_map<uint64_t, py::list> lastBatches_;
};

}  // namespace pi
