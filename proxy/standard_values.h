// Immutable standard values (datetime, Decimal, Fraction, UUID, paths, enum members, numpy
// scalars and dtypes) <-> capnp StandardValue: by value, rebuilt without running the sender's code.
#pragma once

#include "protocol/isolation.capnp.h"

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <unordered_map>

namespace pi {

namespace py = pybind11;

class CodecPeer;

// Which standard types cross by value, and how (isolation.capnp, StandardValue). Part of one
// ValueCodec; requires the GIL.
//
// Every class comes from the process's own `sys.modules`, read as dicts: nothing is ever
// imported (an import searches sys.path, which may hold a directory the child can write), no
// attribute lookup runs a `__getattr__`, and a module that is not a real module (a proxy that
// import_isolated put in sys.modules) counts as absent. process_isolation imports datetime,
// decimal, fractions, uuid and pathlib itself (for byvalue), so those are there on both sides;
// enum classes and numpy are the program's.
class StandardValues {
 public:
  // `peer` must outlive this object.
  explicit StandardValues(CodecPeer& peer) : peer_(peer) {}

  // When `object` is of exactly one of the standard types (and within the bounds of
  // protocol/limits.h), writes it into `out` as a standard value and returns true; otherwise
  // writes nothing and returns false (it crosses by reference). May run the object's own type's
  // methods (str of a path, Decimal.as_tuple), never a subclass's. Throws py::error_already_set
  // when one of those fails.
  bool encode(py::handle object, wire::Value::Builder out);

  // Makes the object `in` describes. Throws (kj FAILED) for a value a well-behaved peer would
  // not send: a field out of range, a dtype outside the grammar, an `original` that is not a
  // ref or back, a standard class this process does not have.
  py::object decode(wire::StandardValue::Reader in);

  // True when `text` is a dtype string (dtype.str) of the fixed grammar in isolation.capnp's
  // NumpyScalar (`scalar`) or NumpyDtype. Public for the tests.
  static bool isDtypeString(std::string_view text, bool scalar);

 private:
  // The classes, found in sys.modules once each (held, so a pointer compare is enough).
  struct Classes {
    bool datetimeFound = false;
    void* datetimeApi = nullptr;  // PyDateTime_CAPI*, from the module's capsule
    py::object decimal, fraction, uuid, safeUuid, purePosixPath, pureWindowsPath, posixPath;
    py::object enumType;                     // enum.EnumType
    py::object numpyGeneric, numpyDtype;     // numpy.generic, numpy.dtype
    py::object numpyScalar;                  // numpy's multiarray.scalar(dtype, bytes)
  };

  // Looks up the classes not found yet. Cheap once everything is found (a numpy-less program
  // pays one dict lookup per call).
  void refresh();
  bool encodeDatetime(PyObject* o, PyTypeObject* type, wire::Value::Builder out);
  bool encodeEnumMember(PyObject* o, PyTypeObject* type, wire::Value::Builder out);
  bool encodeNumpy(PyObject* o, PyTypeObject* type, wire::Value::Builder out);
  py::object decodeEnumMember(wire::EnumMember::Reader in);
  py::object decodeNumpyScalar(wire::NumpyScalar::Reader in);
  py::object decodeNumpyDtype(wire::NumpyDtype::Reader in);
  // The object `original` names (a ref or a back), for a value this side cannot rebuild; when
  // `use` is false, resolved only so that the peer's send is counted and released.
  py::object original(wire::Value::Reader original, bool use);
  py::object dtypeFor(std::string_view text);
  const void* datetimeApi();

  CodecPeer& peer_;
  Classes classes_;
  std::unordered_map<std::string, py::object> dtypes_;  // np.dtype(text), a few kept
};

}  // namespace pi
