// A Python exception crossing the connection: encoded from the raising side, raised on the other.
#pragma once

#include "proxy/value_codec.h"
#include "protocol/isolation.capnp.h"

#include <pybind11/pybind11.h>

namespace pi {

namespace py = pybind11;

// Describes the exception held by `error` in `out`: its class (by name for builtin classes, by
// reference otherwise), args, message, formatted traceback (omitted when `withTraceback` is
// false) and, for non-builtin classes, the exception object by reference. Requires the GIL.
void encodeError(ValueCodec& codec, const py::error_already_set& error, wire::Error::Builder out,
                 bool withTraceback);

// The exception an Error describes, made locally: the same builtin class, or the local mirror of
// a remote class; the same args; the remote traceback as its __cause__ (a
// process_isolation.errors.RemoteTraceback). Throws (kj FAILED) for an Error a well-behaved peer
// would not send.
py::object decodeError(ValueCodec& codec, wire::Error::Reader in);

// Sets `exception` as the current Python error and throws py::error_already_set.
[[noreturn]] void raiseException(py::handle exception);

}  // namespace pi
