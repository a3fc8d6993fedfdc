// A Python exception crossing the connection: encoded from the raising side, raised on the other.
#include "proxy/remote_error.h"

#include "runtime/peer_text.h"

#include <kj/debug.h>

namespace pi {

namespace {

std::string safeStr(py::handle object) {
  PyObject* text = PyObject_Str(object.ptr());
  if (text == nullptr) {
    PyErr_Clear();
    return "<unprintable " + std::string(Py_TYPE(object.ptr())->tp_name) + ">";
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text, &size);
  std::string out = data ? std::string(data, size_t(size)) : std::string("<unprintable>");
  if (data == nullptr) PyErr_Clear();
  Py_DECREF(text);
  return out;
}

// The most of a formatted traceback one error carries, and how much of its start and end is kept
// when it is longer. A traceback holds the tracebacks of the levels below it in the other process
// (each remote error's __cause__), so without a bound a runaway nesting of n levels formats
// texts of n^2 lines on its way back up (1,187 levels: 19 s); its start (the innermost error,
// what went wrong) and its end (this side's own frames) are what a reader needs.
constexpr size_t kMaxTracebackBytes = 64 * 1024;
constexpr size_t kTracebackHeadBytes = 16 * 1024;

// `text` itself when it is short enough, else its first and last lines within the bound with a
// line that says how much was left out between them. Cuts only after a newline, so a UTF-8
// character is never split.
std::string boundedTraceback(std::string text) {
  if (text.size() <= kMaxTracebackBytes) return text;
  size_t head = text.rfind('\n', kTracebackHeadBytes);
  head = head == std::string::npos ? 0 : head + 1;
  size_t tailBytes = kMaxTracebackBytes - kTracebackHeadBytes;
  size_t tail = text.find('\n', text.size() - tailBytes);
  tail = tail == std::string::npos ? text.size() : tail + 1;
  if (tail <= head) return text;
  std::string cut = "[... " + std::to_string(tail - head) +
                    " bytes of this traceback left out: the tracebacks of the levels nested "
                    "between the two processes ...]\n";
  return text.substr(0, head) + cut + text.substr(tail);
}

py::object makeCause(const std::string& traceback) {
  try {
    py::object cls = py::module_::import("process_isolation.errors").attr("RemoteTraceback");
    return cls(py::str(traceback));
  } catch (py::error_already_set&) {
    return py::reinterpret_borrow<py::object>(PyExc_Exception)(py::str(traceback));
  }
}

}  // namespace

void encodeError(ValueCodec& codec, const py::error_already_set& error, wire::Error::Builder out,
                 bool withTraceback) {
  py::handle type = error.type();
  py::handle value = error.value();
  codec.encode(type, out.initType());
  bool builtin = codec.builtins().nameOf(type) != nullptr;
  py::object args = py::reinterpret_steal<py::object>(PyObject_GetAttrString(value.ptr(), "args"));
  if (!args || !PyTuple_Check(args.ptr())) {
    PyErr_Clear();
    args = py::tuple();
  }
  auto list = out.initArgs(unsigned(PyTuple_GET_SIZE(args.ptr())));
  for (unsigned i = 0; i < list.size(); ++i) {
    try {
      codec.encode(PyTuple_GET_ITEM(args.ptr(), i), list[i]);
    } catch (py::error_already_set&) {
      list[i].setStr(kj::StringPtr("<argument could not be sent>").asBytes());
    } catch (py::value_error&) {
      list[i].setStr(kj::StringPtr("<argument nests too deep to send>").asBytes());
    }
  }
  std::string message = safeStr(value);
  out.setMessage(message);
  if (withTraceback) {
    try {
      py::object format = py::module_::import("traceback").attr("format_exception");
      py::object lines = format(type, value, error.trace() ? error.trace() : py::none());
      out.setTraceback(boundedTraceback(py::str("").attr("join")(lines).cast<std::string>()));
    } catch (py::error_already_set&) {
      out.setTraceback(std::string(Py_TYPE(value.ptr())->tp_name) + ": " + message);
    }
  }
  if (!builtin) {
    codec.encode(value, out.initException());
  } else {
    out.initException().setNone();
  }
}

py::object decodeError(ValueCodec& codec, wire::Error::Reader in) {
  py::object type = codec.decode(in.getType());
  KJ_REQUIRE(PyType_Check(type.ptr()) &&
                 PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(type.ptr()),
                                  reinterpret_cast<PyTypeObject*>(PyExc_BaseException)),
             "peer reported an error whose class is not an exception class");
  auto argsIn = in.getArgs();
  py::tuple args = py::reinterpret_steal<py::tuple>(PyTuple_New(Py_ssize_t(argsIn.size())));
  for (unsigned i = 0; i < argsIn.size(); ++i) {
    PyTuple_SET_ITEM(args.ptr(), Py_ssize_t(i), codec.decode(argsIn[i]).release().ptr());
  }
  py::object exception;
  try {
    exception = makeException(type, args);
  } catch (py::error_already_set&) {
    PyErr_Clear();
    std::string message = peerText(std::string_view(in.getMessage().cStr(), in.getMessage().size()));
    exception = py::reinterpret_steal<py::object>(PyObject_CallFunction(
        PyExc_RuntimeError, "s#", message.c_str(), Py_ssize_t(message.size())));
    if (!exception) throw py::error_already_set();
  }
  if (in.hasException() && in.getException().which() != wire::Value::NONE) {
    py::object remote = codec.decode(in.getException());
    if (PyObject_SetAttrString(exception.ptr(), "_pi_remote", remote.ptr()) != 0) PyErr_Clear();
    // str() of the exception is the one the raising side made (its class may define __str__).
    py::str message(peerText(std::string_view(in.getMessage().cStr(), in.getMessage().size())));
    if (PyObject_SetAttrString(exception.ptr(), "_pi_message", message.ptr()) != 0) PyErr_Clear();
  }
  auto traceback = in.getTraceback();
  if (traceback.size() > 0) {
    py::object cause = makeCause(peerText(std::string_view(traceback.cStr(), traceback.size())));
    PyException_SetCause(exception.ptr(), cause.release().ptr());  // steals
  }
  return exception;
}

void raiseException(py::handle exception) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exception.ptr())), exception.ptr());
  throw py::error_already_set();
}

}  // namespace pi
