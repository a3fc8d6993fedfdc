// Python value <-> capnp Value: by value for exact builtin kinds and standard value types, by
// reference for the rest.
#include "proxy/value_codec.h"

#include "protocol/limits.h"
#include "runtime/peer_text.h"

#include <kj/debug.h>

namespace pi {

namespace {

// New reference or error_already_set.
py::object steal(PyObject* object) {
  if (object == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(object);
}


kj::ArrayPtr<const kj::byte> utf8Of(py::handle object, py::object& keepAlive) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(object.ptr(), &size);
  if (data == nullptr) {
    // Lone surrogates: encode them as themselves, as the decoder expects.
    PyErr_Clear();
    keepAlive = steal(PyUnicode_AsEncodedString(object.ptr(), "utf-8", "surrogatepass"));
    return kj::arrayPtr(reinterpret_cast<const kj::byte*>(PyBytes_AS_STRING(keepAlive.ptr())),
                        size_t(PyBytes_GET_SIZE(keepAlive.ptr())));
  }
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size_t(size));
}

// Adds the out-of-band bytes of `value` (and everything in it) to `total`; returns false, with
// `total` over kMaxMessageBufferBytes, once it is over. Visits every value the decoders do
// (ValueCodec::decode, decodeError, the dispatcher's arguments, a mirrored class's bases).
bool addOutOfBand(wire::Value::Reader value, uint64_t& total);

bool addOutOfBand(capnp::List<wire::Value>::Reader values, uint64_t& total) {
  for (auto value : values) {
    if (!addOutOfBand(value, total)) return false;
  }
  return true;
}

bool addOutOfBand(wire::Value::Reader value, uint64_t& total) {
  switch (value.which()) {
    case wire::Value::BUFFER: {
      uint64_t size = value.getBuffer().getSize();
      // Each term is at most kMaxBufferBytes, so the sum cannot wrap.
      if (size > kMaxBufferBytes) size = kMaxBufferBytes + 1;
      total += size;
      return total <= kMaxMessageBufferBytes;
    }
    case wire::Value::LIST:
      return addOutOfBand(value.getList(), total);
    case wire::Value::TUPLE:
      return addOutOfBand(value.getTuple(), total);
    case wire::Value::SET:
      return addOutOfBand(value.getSet(), total);
    case wire::Value::FROZENSET:
      return addOutOfBand(value.getFrozenset(), total);
    case wire::Value::DICT:
      for (auto entry : value.getDict()) {
        if (!addOutOfBand(entry.getKey(), total) || !addOutOfBand(entry.getValue(), total)) {
          return false;
        }
      }
      return true;
    case wire::Value::EXCEPTION: {
      auto exception = value.getException();
      return (exception.getType().size() > 0 || addOutOfBand(exception.getCls(), total)) &&
             addOutOfBand(exception.getArgs(), total) &&
             addOutOfBand(exception.getOriginal(), total);
    }
    case wire::Value::SLICE: {
      auto slice = value.getSlice();
      return addOutOfBand(slice.getStart(), total) && addOutOfBand(slice.getStop(), total) &&
             addOutOfBand(slice.getStep(), total);
    }
    case wire::Value::STANDARD: {
      // The `original` of an enum member or numpy value is decoded too (a ref, whose class
      // info has values).
      auto standard = value.getStandard();
      switch (standard.which()) {
        case wire::StandardValue::ENUM_MEMBER:
          return addOutOfBand(standard.getEnumMember().getOriginal(), total);
        case wire::StandardValue::NUMPY_SCALAR:
          return addOutOfBand(standard.getNumpyScalar().getOriginal(), total);
        case wire::StandardValue::NUMPY_DTYPE:
          return addOutOfBand(standard.getNumpyDtype().getOriginal(), total);
        default:
          return true;
      }
    }
    case wire::Value::REF: {
      // A mirrored exception class's bases are decoded as values too.
      auto ref = value.getRef();
      return !ref.hasClassInfo() || addOutOfBand(ref.getClassInfo().getBases(), total);
    }
    default:
      return true;  // no values inside
  }
}

}  // namespace

OutOfBand ValueCodec::outOfBandBytes(wire::Message::Reader message) {
  OutOfBand counted;
  try {
    countOutOfBand(message, counted.bytes);
  } catch (kj::Exception&) {
    // Too deep, over the traversal limit, a bad pointer: its decoding fails too (answered as a
    // malformed request, or ending the connection), but perhaps only after buffers this walk
    // did not get to. BufferCodec refuses those.
    counted.complete = false;
  }
  return counted;
}

void ValueCodec::countOutOfBand(wire::Message::Reader message, uint64_t& total) {
  switch (message.which()) {
    case wire::Message::REQUEST: {
      auto request = message.getRequest();
      if (!addOutOfBand(request.getArgs(), total)) return;
      for (auto kwarg : request.getKwargs()) {
        if (!addOutOfBand(kwarg.getValue(), total)) return;
      }
      return;
    }
    case wire::Message::RESPONSE: {
      auto response = message.getResponse();
      if (response.isValue()) {
        (void)addOutOfBand(response.getValue(), total);
      } else {
        auto error = response.getError();
        (void)(addOutOfBand(error.getType(), total) && addOutOfBand(error.getArgs(), total) &&
               addOutOfBand(error.getException(), total));
      }
      return;
    }
    default:
      return;  // releases, hello, setup, goodbye: no values
  }
}

PeerMemory::Access CodecPeer::readPeerMemory(uint64_t address, uint64_t size, char* into) {
  (void)into;
  KJ_FAIL_REQUIRE("peer sent a buffer in its own memory, which this side does not read", address,
                  size);
}

py::object CodecPeer::refetchSpan(uint64_t address, uint64_t size) {
  KJ_FAIL_REQUIRE("this side cannot ask its peer for a buffer again", address, size);
}

py::object makeException(py::handle cls, py::handle args) {
  PyObject* made = PyObject_Call(cls.ptr(), args.ptr(), nullptr);
  if (made != nullptr && PyExceptionInstance_Check(made)) return steal(made);
  // Its constructor wants other arguments (UnicodeDecodeError, an __init__ of its own): make
  // it bare and give it the args.
  Py_XDECREF(made);
  PyErr_Clear();
  PyTypeObject* t = reinterpret_cast<PyTypeObject*>(cls.ptr());
  made = t->tp_new(t, args.ptr(), nullptr);
  if (made == nullptr) throw py::error_already_set();
  if (PyObject_SetAttrString(made, "args", args.ptr()) != 0) PyErr_Clear();
  return steal(made);
}

BuiltinTable::BuiltinTable() {
  // Read without writing to anything shared: every endpoint of a forked child builds one, and a
  // reference count written is a page copied. Static types (all of the interpreter's own
  // classes) live as long as the process and are held by pointer; anything else by reference.
  PyObject* builtins = PyImport_AddModule("builtins");  // borrowed
  PyObject* namespace_ = builtins != nullptr ? PyModule_GetDict(builtins) : nullptr;
  if (namespace_ == nullptr) throw py::error_already_set();
  Py_ssize_t position = 0;
  PyObject* key;
  PyObject* value;
  while (PyDict_Next(namespace_, &position, &key, &value)) {
    if (!PyType_Check(value) || !PyUnicode_Check(key) || !PyUnicode_IS_ASCII(key)) continue;
    std::string name(static_cast<const char*>(PyUnicode_DATA(key)),
                     size_t(PyUnicode_GET_LENGTH(key)));
    if (name.empty() || name[0] == '_') continue;
    bool isStatic = !(reinterpret_cast<PyTypeObject*>(value)->tp_flags & Py_TPFLAGS_HEAPTYPE);
    names_.emplace(value, name);
    objects_.emplace(name, isStatic ? Entry{value, py::object()}
                                    : Entry{value, py::reinterpret_borrow<py::object>(value)});
  }
  for (auto [name, object] : {std::pair<const char*, PyObject*>{"NotImplemented", Py_NotImplemented},
                              {"Ellipsis", Py_Ellipsis}}) {
    names_.emplace(object, name);
    objects_.emplace(name, Entry{object, py::object()});  // singletons of the interpreter
  }
}

const std::string* BuiltinTable::nameOf(py::handle object) const {
  auto found = names_.find(object.ptr());
  return found == names_.end() ? nullptr : &found->second;
}

py::handle BuiltinTable::lookup(const std::string& name) const {
  auto found = objects_.find(name);
  KJ_REQUIRE(found != objects_.end(), "peer named an unknown builtin", name);
  return found->second.object;
}

void ValueCodec::encode(py::handle object, wire::Value::Builder out, int depth) {
  if (depth > kMaxValueDepth) {
    throw py::value_error("a value sent to the other process nests deeper than " +
                          std::to_string(kMaxValueDepth) +
                          " levels (does a container contain itself?)");
  }
  PyObject* o = object.ptr();
  PyTypeObject* type = Py_TYPE(o);
  if (o == Py_None) {
    out.setNone();
  } else if (type == &PyBool_Type) {
    out.setBool(o == Py_True);
  } else if (type == &PyLong_Type) {
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      out.setInt(value);
    } else {
      encodeBigInt(object, out);
    }
  } else if (type == &PyFloat_Type) {
    out.setFloat(PyFloat_AS_DOUBLE(o));
  } else if (type == &PyUnicode_Type) {
    py::object keepAlive;
    out.setStr(utf8Of(object, keepAlive));
  } else if (type == &PyBytes_Type &&
             buffers_.encode(object, PyBytes_AS_STRING(o), size_t(PyBytes_GET_SIZE(o)),
                             wire::Buffer::Kind::BYTES, BufferCodec::Source::kImmutable, out)) {
    // sent out of band
  } else if (type == &PyByteArray_Type &&
             buffers_.encode(object, PyByteArray_AS_STRING(o), size_t(PyByteArray_GET_SIZE(o)),
                             wire::Buffer::Kind::BYTEARRAY, BufferCodec::Source::kMutable, out)) {
    // sent out of band
  } else if (type == &PyBytes_Type) {
    out.setBytes(kj::arrayPtr(reinterpret_cast<const kj::byte*>(PyBytes_AS_STRING(o)),
                              size_t(PyBytes_GET_SIZE(o))));
  } else if (type == &PyTuple_Type) {
    Py_ssize_t n = PyTuple_GET_SIZE(o);
    auto list = out.initTuple(unsigned(n));
    for (Py_ssize_t i = 0; i < n; ++i) encode(PyTuple_GET_ITEM(o, i), list[unsigned(i)], depth + 1);
  } else if (type == &PyList_Type) {
    // Snapshot the items: encoding an item may run code (type descriptions) that mutates the list.
    py::tuple items = steal(PyList_AsTuple(o));
    Py_ssize_t n = PyTuple_GET_SIZE(items.ptr());
    auto list = out.initList(unsigned(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      encode(PyTuple_GET_ITEM(items.ptr(), i), list[unsigned(i)], depth + 1);
    }
  } else if (type == &PyDict_Type) {
    py::list items = steal(PyDict_Items(o));
    Py_ssize_t n = PyList_GET_SIZE(items.ptr());
    auto entries = out.initDict(unsigned(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* pair = PyList_GET_ITEM(items.ptr(), i);
      encode(PyTuple_GET_ITEM(pair, 0), entries[unsigned(i)].initKey(), depth + 1);
      encode(PyTuple_GET_ITEM(pair, 1), entries[unsigned(i)].initValue(), depth + 1);
    }
  } else if (type == &PySet_Type || type == &PyFrozenSet_Type) {
    py::tuple items = steal(PySequence_Tuple(o));
    Py_ssize_t n = PyTuple_GET_SIZE(items.ptr());
    auto list = type == &PySet_Type ? out.initSet(unsigned(n)) : out.initFrozenset(unsigned(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      encode(PyTuple_GET_ITEM(items.ptr(), i), list[unsigned(i)], depth + 1);
    }
  } else if (type == &PyByteArray_Type) {
    out.setBytearray(kj::arrayPtr(reinterpret_cast<const kj::byte*>(PyByteArray_AS_STRING(o)),
                                  size_t(PyByteArray_GET_SIZE(o))));
  } else if (type == &PyComplex_Type) {
    auto complex = out.initComplex();
    complex.setReal(PyComplex_RealAsDouble(o));
    complex.setImag(PyComplex_ImagAsDouble(o));
  } else if (type == &PySlice_Type) {
    auto slice = out.initSlice();
    PySliceObject* s = reinterpret_cast<PySliceObject*>(o);
    encode(s->start, slice.initStart(), depth + 1);
    encode(s->stop, slice.initStop(), depth + 1);
    encode(s->step, slice.initStep(), depth + 1);
  } else if (PyExceptionInstance_Check(o) && builtins_.nameOf(reinterpret_cast<PyObject*>(type))) {
    auto exception = out.initException();
    exception.setType(*builtins_.nameOf(reinterpret_cast<PyObject*>(type)));
    PyObject* args = reinterpret_cast<PyBaseExceptionObject*>(o)->args;
    Py_ssize_t n = args && PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : 0;
    auto list = exception.initArgs(unsigned(n));
    for (Py_ssize_t i = 0; i < n; ++i) encode(PyTuple_GET_ITEM(args, i), list[unsigned(i)], depth + 1);
  } else {
    uint64_t peerId = 0;
    if (peer_.peerIdOf(object, peerId)) {
      out.setBack(peerId);
      if (uint32_t unread = peer_.unreadOf(object)) out.setUnread(unread);
    } else if (const std::string* name = builtins_.nameOf(object)) {
      out.setBuiltin(*name);
    } else if (standard_.encode(object, out)) {
      // an immutable standard value (datetime, Decimal, an enum member, ...)
    } else if (PyExceptionInstance_Check(o)) {
      // An exception of a non-builtin class: a real exception of the mirrored class there,
      // reading its other attributes from this one.
      auto exception = out.initException();
      encode(reinterpret_cast<PyObject*>(type), exception.initCls(), depth + 1);
      PyObject* args = reinterpret_cast<PyBaseExceptionObject*>(o)->args;
      Py_ssize_t n = args && PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : 0;
      auto list = exception.initArgs(unsigned(n));
      for (Py_ssize_t i = 0; i < n; ++i) {
        encode(PyTuple_GET_ITEM(args, i), list[unsigned(i)], depth + 1);
      }
      PyObject* text = PyObject_Str(o);
      if (text != nullptr && PyUnicode_Check(text)) {
        Py_ssize_t size = 0;
        const char* utf8 = PyUnicode_AsUTF8AndSize(text, &size);
        if (utf8 != nullptr) exception.setMessage(capnp::Text::Reader(utf8, size_t(size)));
      }
      PyErr_Clear();
      Py_XDECREF(text);
      peer_.exportRef(object, exception.initOriginal().initRef());
    } else {
      peer_.exportRef(object, out.initRef());
    }
  }
}

void ValueCodec::encodeBytesLike(py::handle owner, const char* data, size_t size,
                                 wire::Value::Builder out) {
  if (buffers_.encode(owner, data, size, wire::Buffer::Kind::BYTEARRAY,
                      BufferCodec::Source::kExported, out)) {
    return;
  }
  out.setBytearray(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size));
}

void ValueCodec::encodeBigInt(py::handle object, wire::Value::Builder out) {
  // Minimal two's complement: the magnitude's bits (of ~v for negatives) plus a sign bit.
  py::object magnitude = PyObject_RichCompareBool(object.ptr(), py::int_(0).ptr(), Py_LT) == 1
                             ? py::reinterpret_steal<py::object>(PyNumber_Invert(object.ptr()))
                             : py::reinterpret_borrow<py::object>(object);
  size_t bits = magnitude.attr("bit_length")().cast<size_t>();
  size_t length = bits / 8 + 1;
  py::bytes data = object.attr("to_bytes")(length, "little", py::arg("signed") = true);
  std::string_view view = data;
  out.setBigInt(kj::arrayPtr(reinterpret_cast<const kj::byte*>(view.data()), view.size()));
}

py::object ValueCodec::decodeBigInt(capnp::Data::Reader data) {
  KJ_REQUIRE(data.size() > 0, "peer sent an empty big integer");
  py::bytes bytes(reinterpret_cast<const char*>(data.begin()), data.size());
  return py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(&PyLong_Type))
      .attr("from_bytes")(bytes, "little", py::arg("signed") = true);
}

py::object ValueCodec::decode(wire::Value::Reader in) {
  switch (in.which()) {
    case wire::Value::NONE:
      return py::none();
    case wire::Value::BOOL:
      return py::bool_(in.getBool());
    case wire::Value::INT:
      return steal(PyLong_FromLongLong(in.getInt()));
    case wire::Value::BIG_INT:
      return decodeBigInt(in.getBigInt());
    case wire::Value::FLOAT:
      return steal(PyFloat_FromDouble(in.getFloat()));
    case wire::Value::COMPLEX: {
      auto c = in.getComplex();
      return steal(PyComplex_FromDoubles(c.getReal(), c.getImag()));
    }
    case wire::Value::STR: {
      auto data = in.getStr();
      return steal(PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(data.begin()),
                                        Py_ssize_t(data.size()), "surrogatepass"));
    }
    case wire::Value::BYTES: {
      auto data = in.getBytes();
      return steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data.begin()),
                                             Py_ssize_t(data.size())));
    }
    case wire::Value::BYTEARRAY: {
      auto data = in.getBytearray();
      return steal(PyByteArray_FromStringAndSize(reinterpret_cast<const char*>(data.begin()),
                                                 Py_ssize_t(data.size())));
    }
    case wire::Value::LIST: {
      auto items = in.getList();
      py::object list = steal(PyList_New(Py_ssize_t(items.size())));
      for (unsigned i = 0; i < items.size(); ++i) {
        PyList_SET_ITEM(list.ptr(), Py_ssize_t(i), decode(items[i]).release().ptr());
      }
      return list;
    }
    case wire::Value::TUPLE: {
      auto items = in.getTuple();
      py::object tuple = steal(PyTuple_New(Py_ssize_t(items.size())));
      for (unsigned i = 0; i < items.size(); ++i) {
        PyTuple_SET_ITEM(tuple.ptr(), Py_ssize_t(i), decode(items[i]).release().ptr());
      }
      return tuple;
    }
    case wire::Value::DICT: {
      py::object dict = steal(PyDict_New());
      for (auto entry : in.getDict()) {
        py::object key = decode(entry.getKey());
        py::object value = decode(entry.getValue());
        if (PyDict_SetItem(dict.ptr(), key.ptr(), value.ptr()) != 0) throw py::error_already_set();
      }
      return dict;
    }
    case wire::Value::SET:
    case wire::Value::FROZENSET: {
      bool frozen = in.which() == wire::Value::FROZENSET;
      auto items = frozen ? in.getFrozenset() : in.getSet();
      py::object set = steal(PySet_New(nullptr));
      for (auto item : items) {
        if (PySet_Add(set.ptr(), decode(item).ptr()) != 0) throw py::error_already_set();
      }
      return frozen ? steal(PyFrozenSet_New(set.ptr())) : set;
    }
    case wire::Value::REF:
      return peer_.importRef(in.getRef());
    case wire::Value::BACK:
      return peer_.resolveBack(in.getBack(), in.getUnread());
    case wire::Value::BUILTIN:
      return py::reinterpret_borrow<py::object>(
          builtins_.lookup(std::string(in.getBuiltin().cStr(), in.getBuiltin().size())));
    case wire::Value::PICKLED: {
      auto data = in.getPickled();
      return steal(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data.begin()),
                                             Py_ssize_t(data.size())));
    }
    case wire::Value::EXCEPTION: {
      auto in_ = in.getException();
      py::object cls;
      if (in_.getType().size() > 0) {
        cls = py::reinterpret_borrow<py::object>(
            builtins_.lookup(std::string(in_.getType().cStr(), in_.getType().size())));
      } else {
        cls = decode(in_.getCls());
      }
      KJ_REQUIRE(PyExceptionClass_Check(cls.ptr()), "peer sent an exception of a non-exception class");
      auto argsIn = in_.getArgs();
      py::tuple args = py::reinterpret_steal<py::tuple>(PyTuple_New(Py_ssize_t(argsIn.size())));
      for (unsigned i = 0; i < argsIn.size(); ++i) {
        PyTuple_SET_ITEM(args.ptr(), Py_ssize_t(i), decode(argsIn[i]).release().ptr());
      }
      py::object exception = makeException(cls, args);
      if (in_.hasOriginal() && in_.getOriginal().which() != wire::Value::NONE) {
        py::object original = decode(in_.getOriginal());
        if (PyObject_SetAttrString(exception.ptr(), "_pi_remote", original.ptr()) != 0) {
          PyErr_Clear();
        }
        py::str message(peerText(std::string_view(in_.getMessage().cStr(), in_.getMessage().size())));
        if (PyObject_SetAttrString(exception.ptr(), "_pi_message", message.ptr()) != 0) {
          PyErr_Clear();
        }
      }
      return exception;
    }
    case wire::Value::BUFFER:
      return buffers_.decode(in.getBuffer());
    case wire::Value::STANDARD:
      return standard_.decode(in.getStandard());
    case wire::Value::SLICE: {
      auto s = in.getSlice();
      py::object start = decode(s.getStart());
      py::object stop = decode(s.getStop());
      py::object step = decode(s.getStep());
      return steal(PySlice_New(start.ptr(), stop.ptr(), step.ptr()));
    }
  }
  KJ_FAIL_REQUIRE("peer sent a value of an unknown kind", uint(in.which()));
}

}  // namespace pi
