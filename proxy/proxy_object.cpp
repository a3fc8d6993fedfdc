// The proxy type: a CPython type whose instances each stand for one object of the peer.
#include "proxy/proxy_object.h"

#include "proxy/endpoint.h"
#include "proxy/specials.h"
#include "runtime/termination.h"

#include <capnp/schema.h>
#include <pybind11/detail/exception_translation.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

namespace pi {

namespace {

// The instance layout. Standard layout, so offsetof is valid; the shared_ptr lives in raw
// storage and is constructed and destroyed by hand.
struct ProxyObject {
  PyObject_HEAD
  PyObject* weakrefs;
  PyObject* label;  // str or null
  PyObject* batch;  // items fetched ahead for a batch iterator (a list), or null
  Py_ssize_t batchIndex;
  uint32_t batchSize;
  bool batchEnded;
  bool isModule;
  uint64_t id;
  // What keeps the proxy's child alive while the proxy lives (the parent's IsolationContext, see
  // Endpoint::setProxyOwner), a strong reference visited by the garbage collector; or null.
  PyObject* owner;
  alignas(std::shared_ptr<Endpoint>) unsigned char endpointStorage[sizeof(std::shared_ptr<Endpoint>)];
};

ProxyObject* asProxy(PyObject* object) { return reinterpret_cast<ProxyObject*>(object); }

std::shared_ptr<Endpoint>& endpointOf(PyObject* object) {
  return *std::launder(reinterpret_cast<std::shared_ptr<Endpoint>*>(asProxy(object)->endpointStorage));
}

PyTypeObject gProxyBaseType;
thread_local double tThreadTimeout = -1;

std::string utf8(PyObject* str) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(str, &size);
  if (data == nullptr) {
    PyErr_Clear();
    return "?";
  }
  return std::string(data, size_t(size));
}

// A short, safe description of one argument for an error report: never calls into a proxy.
std::string describeArgument(PyObject* arg) {
  if (isProxy(arg)) return proxyLabel(arg);
  PyObject* text = PyObject_Repr(arg);
  if (text == nullptr) {
    PyErr_Clear();
    return std::string("<") + Py_TYPE(arg)->tp_name + ">";
  }
  std::string out = utf8(text);
  Py_DECREF(text);
  if (out.size() > 60) out = out.substr(0, 57) + "...";
  return out;
}

std::string describeCall(PyObject* self, wire::Op op, std::string_view name, CallArgs args) {
  std::string label = proxyLabel(self);
  std::string list;
  size_t kwcount = args.kwnames ? size_t(PyTuple_GET_SIZE(args.kwnames)) : 0;
  for (size_t i = 0; i < args.nargs + kwcount; ++i) {
    if (!list.empty()) list += ", ";
    if (i >= args.nargs) list += utf8(PyTuple_GET_ITEM(args.kwnames, i - args.nargs)) + "=";
    list += describeArgument(args.args[i]);
    if (list.size() > 200) {
      list = list.substr(0, 197) + "...";
      break;
    }
  }
  switch (op) {
    case wire::Op::CALL:
      return label + "(" + list + ")";
    case wire::Op::GETATTR:
      return label + "." + std::string(name);
    case wire::Op::SETATTR:
      return label + "." + std::string(name) + " = " + list;
    case wire::Op::DELATTR:
      return "del " + label + "." + std::string(name);
    case wire::Op::GETITEM:
      return label + "[" + list + "]";
    case wire::Op::CALL_METHOD:
    case wire::Op::SPECIAL:
    case wire::Op::COMPARE:
      return label + "." + std::string(name) + "(" + list + ")";
    default: {
      // The op's name as the schema spells it.
      auto enumerants = capnp::Schema::from<wire::Op>().getEnumerants();
      std::string opName = size_t(op) < enumerants.size()
                               ? enumerants[unsigned(op)].getProto().getName().cStr()
                               : "op";
      return opName + "(" + label + (list.empty() ? "" : ", " + list) + ")";
    }
  }
}

// Sends one op for `self` and returns a new reference, or null with a Python error set.
PyObject* forward(PyObject* self, wire::Op op, std::string_view name, CallArgs args) {
  for (int attempt = 0;; ++attempt) {
  try {
    if (!endpointOf(self)) throw ClientStateError("this proxy was replaced by a restart");
    Endpoint& endpoint = *endpointOf(self);
    double seconds = tThreadTimeout >= 0 ? tThreadTimeout : endpoint.defaultTimeout();
    return endpoint.request(op, asProxy(self)->id, name, args, Deadline::afterOrNever(seconds))
        .release()
        .ptr();
  } catch (const TerminationError& error) {
    TerminationError described = error;
    described.setCall(describeCall(self, op, name, args));
    if (endpointOf(self)) endpointOf(self)->noteLostDuring(described.call());
    try {
      throw described;
    } catch (...) {
      pybind11::detail::try_translate_exceptions();
    }
  } catch (const ClientStateError&) {
    // restart='auto': a module proxy of an ended child is re-imported in a new child, once.
    py::object hook = endpointOf(self) ? endpointOf(self)->restartHook() : py::object();
    if (attempt == 0 && asProxy(self)->isModule && hook) {
      try {
        if (hook(py::handle(self)).cast<bool>()) continue;
      } catch (...) {
        pybind11::detail::try_translate_exceptions();
        return nullptr;
      }
    }
    pybind11::detail::try_translate_exceptions();
  } catch (...) {
    pybind11::detail::try_translate_exceptions();
  }
  return nullptr;
  }
}

template <size_t I>
PyObject* specialMethod(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                        PyObject* kwnames) {
  constexpr SpecialMethod special = kSpecialMethods[I];
  return forward(self, special.op, special.name, CallArgs{args, size_t(nargs), kwnames});
}

template <size_t... I>
constexpr std::array<PyMethodDef, kSpecialMethodCount> makeSpecialDefs(
    std::index_sequence<I...>) {
  return {{PyMethodDef{kSpecialMethods[I].name,
                       reinterpret_cast<PyCFunction>(
                           reinterpret_cast<void (*)()>(&specialMethod<I>)),
                       METH_FASTCALL | METH_KEYWORDS, nullptr}...}};
}

std::array<PyMethodDef, kSpecialMethodCount> gSpecialDefs =
    makeSpecialDefs(std::make_index_sequence<kSpecialMethodCount>{});

// Names found on every proxy type that must still be read from the remote object.
bool isForwardedDunder(PyObject* name) {
  if (PyUnicode_GET_LENGTH(name) < 4 || PyUnicode_READ_CHAR(name, 0) != '_' ||
      PyUnicode_READ_CHAR(name, 1) != '_') {
    return false;
  }
  for (const char* forwarded : {"__doc__", "__module__", "__slots__"}) {
    if (PyUnicode_CompareWithASCIIString(name, forwarded) == 0) return true;
  }
  return false;
}

// Attributes whose value holds addresses in the owner's memory (numpy's array interfaces): read
// through a proxy they would have the reader's numpy build an array over whatever its own
// memory holds at that address, stale data or a crash. They are never forwarded, so numpy falls
// back to what a proxy can answer (`__array__`, the sequence protocol).
bool isAddressBearing(PyObject* name) {
  for (const char* attribute : {"__array_struct__", "__array_interface__",
                                "__cuda_array_interface__"}) {
    if (PyUnicode_CompareWithASCIIString(name, attribute) == 0) return true;
  }
  return false;
}

PyObject* proxyGetattro(PyObject* self, PyObject* name) {
  if (!PyUnicode_Check(name)) return PyObject_GenericGetAttr(self, name);
  if (isAddressBearing(name)) {
    PyErr_Format(PyExc_AttributeError,
                 "%s does not forward %U: its value holds addresses in the memory of the "
                 "process that owns the object",
                 proxyLabel(self).c_str(), name);
    return nullptr;
  }
  if (!isForwardedDunder(name) && _PyType_Lookup(Py_TYPE(self), name) != nullptr) {
    return PyObject_GenericGetAttr(self, name);
  }
  std::string attribute = utf8(name);
  PyObject* result = forward(self, wire::Op::GETATTR, attribute, {});
  if (result != nullptr && isProxy(result) && asProxy(result)->label == nullptr) {
    setProxyLabel(result, proxyLabel(self) + "." + attribute);
  }
  return result;
}

int proxySetattro(PyObject* self, PyObject* name, PyObject* value) {
  if (!PyUnicode_Check(name)) {
    PyErr_SetString(PyExc_TypeError, "attribute name must be a string");
    return -1;
  }
  std::string attribute = utf8(name);
  PyObject* result;
  if (value == nullptr) {
    result = forward(self, wire::Op::DELATTR, attribute, {});
  } else {
    PyObject* args[] = {value};
    result = forward(self, wire::Op::SETATTR, attribute, CallArgs{args, 1, nullptr});
  }
  if (result == nullptr) return -1;
  Py_DECREF(result);
  return 0;
}

// Text for the repr of a proxy whose child is gone (ended, terminated, another process's, or the
// proxy was replaced by a restart): what it stood for, and why it is dead.
PyObject* deadProxyRepr(PyObject* self) {
  Endpoint* endpoint = endpointOf(self).get();
  std::string why = endpoint == nullptr       ? "it was replaced by a restart"
                    : !endpoint->ownedHere() ? "it belongs to another process"
                                             : endpoint->endedSummary();
  // What the proxy stood for: the name it was reached by ("json", "mod.Point"), or its type.
  std::string what;
  if (asProxy(self)->label != nullptr) {
    what = utf8(asProxy(self)->label);
  } else {
    PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(self));
    for (const char* part : {"__module__", "__qualname__"}) {
      PyObject* text = PyObject_GetAttrString(type, part);
      if (text == nullptr) PyErr_Clear();
      if (!what.empty()) what += ".";
      what += text != nullptr && PyUnicode_Check(text) ? utf8(text) : "?";
      Py_XDECREF(text);
    }
    what += " object";
  }
  std::string text = "<dead proxy of " + what + ": " + why + ">";
  return PyUnicode_DecodeUTF8(text.data(), Py_ssize_t(text.size()), "replace");
}

// A proxy whose child is known to be gone has a repr all the same (debuggers, logs and the REPL
// show it): text saying so. A module proxy that restart='auto' brings back shows the module in
// its new child. A child found dead by this very repr is news: ProcessTerminationError.
PyObject* proxyRepr(PyObject* self) {
  Endpoint* before = endpointOf(self).get();
  bool knownDead = before == nullptr || !before->ownedHere() || before->closed();
  bool mayComeBack = knownDead && before != nullptr && before->ownedHere() &&
                     asProxy(self)->isModule && before->restartHook();
  if (knownDead && !mayComeBack) return deadProxyRepr(self);
  PyObject* result = forward(self, wire::Op::REPR, "", {});
  if (result == nullptr && knownDead && endpointOf(self).get() == before) {
    PyErr_Clear();  // it did not come back
    return deadProxyRepr(self);
  }
  return result;
}

PyObject* proxyStr(PyObject* self) { return forward(self, wire::Op::STR, "", {}); }

Py_hash_t proxyHash(PyObject* self) {
  PyObject* result = forward(self, wire::Op::HASH, "", {});
  if (result == nullptr) return -1;
  Py_hash_t h = PyLong_AsSsize_t(result);
  Py_DECREF(result);
  if (h == -1 && PyErr_Occurred()) return -1;
  return h == -1 ? -2 : h;
}

PyObject* proxyRichcompare(PyObject* self, PyObject* other, int op) {
  static const char* const kNames[] = {"__lt__", "__le__", "__eq__", "__ne__", "__gt__", "__ge__"};
  PyObject* args[] = {other};
  return forward(self, wire::Op::COMPARE, kNames[op], CallArgs{args, 1, nullptr});
}

PyObject* proxyDir(PyObject* self, PyObject*) { return forward(self, wire::Op::DIR, "", {}); }

PyObject* proxyFormat(PyObject* self, PyObject* spec) {
  PyObject* args[] = {spec};
  return forward(self, wire::Op::FORMAT, "", CallArgs{args, 1, nullptr});
}

PyObject* proxyReduceEx(PyObject* self, PyObject*) {
  PyErr_Format(PyExc_TypeError,
               "cannot pickle or copy a proxy of %s; use process_isolation.byvalue(proxy) to "
               "copy the remote object",
               proxyLabel(self).c_str());
  return nullptr;
}

// __next__ of proxies for builtin container iterators: items come in growing batches (16, 32,
// ... 4096) with one iterBatch request each, not one round trip per item.
PyObject* batchedNext(PyObject* self, PyObject*) {
  ProxyObject* proxy = asProxy(self);
  if (proxy->batch != nullptr && proxy->batchIndex < PyList_GET_SIZE(proxy->batch)) {
    PyObject* item = PyList_GET_ITEM(proxy->batch, proxy->batchIndex++);
    Py_INCREF(item);
    return item;
  }
  Py_CLEAR(proxy->batch);
  if (proxy->batchEnded) {
    PyErr_SetNone(PyExc_StopIteration);
    return nullptr;
  }
  proxy->batchSize = proxy->batchSize == 0 ? 16 : std::min<uint32_t>(proxy->batchSize * 2, 4096);
  PyObject* count = PyLong_FromUnsignedLong(proxy->batchSize);
  if (count == nullptr) return nullptr;
  PyObject* args[] = {count};
  PyObject* items = forward(self, wire::Op::ITER_BATCH, "", CallArgs{args, 1, nullptr});
  Py_DECREF(count);
  if (items == nullptr) return nullptr;
  if (!PyList_Check(items)) {
    Py_DECREF(items);
    PyErr_SetString(PyExc_TypeError, "the isolated child answered iterBatch with a non-list");
    return nullptr;
  }
  if (PyList_GET_SIZE(items) < Py_ssize_t(proxy->batchSize)) proxy->batchEnded = true;
  if (PyList_GET_SIZE(items) == 0) {
    Py_DECREF(items);
    PyErr_SetNone(PyExc_StopIteration);
    return nullptr;
  }
  proxy->batch = items;
  proxy->batchIndex = 1;
  PyObject* first = PyList_GET_ITEM(items, 0);
  Py_INCREF(first);
  return first;
}

PyMethodDef gBatchedNextDef = {"__next__", batchedNext, METH_NOARGS,
                               "next() of a remote builtin iterator, fetched in batches."};

Py_ssize_t unreadCount(ProxyObject* proxy) {
  return proxy->batch != nullptr ? PyList_GET_SIZE(proxy->batch) - proxy->batchIndex : 0;
}

// __length_hint__ of such proxies: what the remote iterator has left, plus what was fetched and
// not handed out yet.
PyObject* batchedLengthHint(PyObject* self, PyObject*) {
  PyObject* remote = forward(self, wire::Op::SPECIAL, "__length_hint__", {});
  if (remote == nullptr) return nullptr;
  PyObject* unread = PyLong_FromSsize_t(unreadCount(asProxy(self)));
  PyObject* total = unread != nullptr ? PyNumber_Add(remote, unread) : nullptr;
  Py_XDECREF(unread);
  Py_DECREF(remote);
  return total;
}

PyMethodDef gBatchedLengthHintDef = {"__length_hint__", batchedLengthHint, METH_NOARGS,
                                     "length_hint() of a remote iterator fetched in batches."};

PyMethodDef gBaseMethods[] = {
    {"__dir__", proxyDir, METH_NOARGS, "dir() of the remote object."},
    {"__format__", proxyFormat, METH_O, "format() of the remote object."},
    {"__reduce_ex__", proxyReduceEx, METH_O, "Proxies cannot be pickled; see byvalue()."},
    {nullptr, nullptr, 0, nullptr},
};

void proxyDealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  ProxyObject* proxy = asProxy(self);
  if (proxy->weakrefs != nullptr) PyObject_ClearWeakRefs(self);
  std::shared_ptr<Endpoint>& endpoint = endpointOf(self);
  if (endpoint) endpoint->proxyDropped(proxy->id, self);
  endpoint.~shared_ptr();
  Py_CLEAR(proxy->label);
  Py_CLEAR(proxy->batch);
  // Last: letting the owner go may end the child (its context's last reference).
  Py_CLEAR(proxy->owner);
  Py_TYPE(self)->tp_free(self);
}

// The references a garbage cycle can run through: the owner (a proxy kept in its own
// context's attributes) and the items fetched ahead (which may be proxies).
int proxyTraverse(PyObject* self, visitproc visit, void* arg) {
  ProxyObject* proxy = asProxy(self);
  Py_VISIT(proxy->owner);
  Py_VISIT(proxy->batch);
  return 0;
}

int proxyClear(PyObject* self) {
  ProxyObject* proxy = asProxy(self);
  Py_CLEAR(proxy->batch);
  proxy->batchIndex = 0;
  Py_CLEAR(proxy->owner);
  return 0;
}

}  // namespace

PyTypeObject* readyProxyBaseType() {
  PyTypeObject& t = gProxyBaseType;
  if (t.tp_flags & Py_TPFLAGS_READY) return &t;
  Py_SET_REFCNT(reinterpret_cast<PyObject*>(&t), 1);
  t.tp_name = "process_isolation.Proxy";
  t.tp_doc = "Base class of every proxy for an object living in an isolated child.";
  t.tp_basicsize = sizeof(ProxyObject);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC;
  t.tp_dealloc = proxyDealloc;
  t.tp_traverse = proxyTraverse;
  t.tp_clear = proxyClear;
  t.tp_free = PyObject_GC_Del;
  t.tp_getattro = proxyGetattro;
  t.tp_setattro = proxySetattro;
  t.tp_repr = proxyRepr;
  t.tp_str = proxyStr;
  t.tp_hash = proxyHash;
  t.tp_richcompare = proxyRichcompare;
  t.tp_methods = gBaseMethods;
  t.tp_weaklistoffset = offsetof(ProxyObject, weakrefs);
  t.tp_new = nullptr;
  if (PyType_Ready(&t) != 0) throw py::error_already_set();
  return &t;
}

py::object makeProxyType(const std::string& qualname, const std::string& module,
                         const std::vector<int>& specials, const std::vector<int>& blocked,
                         uint32_t flags) {
  py::dict ns;
  ns["__slots__"] = py::tuple();
  ns["__module__"] = py::str("isolated." + module);
  ns["__qualname__"] = py::str(qualname);
  ns["__doc__"] = py::str("Proxy for a " + module + "." + qualname +
                          " object living in an isolated child.");
  for (int index : specials) {
    PyMethodDef* def = &gSpecialDefs[size_t(index)];
    if ((flags & kTypeBatchIterator) && strcmp(kSpecialMethods[size_t(index)].name, "__next__") == 0) {
      def = &gBatchedNextDef;
    }
    if ((flags & kTypeBatchIterator) &&
        strcmp(kSpecialMethods[size_t(index)].name, "__length_hint__") == 0) {
      def = &gBatchedLengthHintDef;
    }
    PyObject* descriptor = PyDescr_NewMethod(&gProxyBaseType, def);
    if (descriptor == nullptr) throw py::error_already_set();
    ns[kSpecialMethods[size_t(index)].name] = py::reinterpret_steal<py::object>(descriptor);
  }
  for (int index : blocked) ns[kSpecialMethods[size_t(index)].name] = py::none();
  if (flags & kTypeUnhashable) ns["__hash__"] = py::none();
  std::string name = qualname.substr(qualname.rfind('.') == std::string::npos
                                         ? 0
                                         : qualname.rfind('.') + 1);
  if (name.empty()) name = "proxy";
  py::tuple bases = py::make_tuple(py::handle(reinterpret_cast<PyObject*>(&gProxyBaseType)));
  PyObject* type = PyObject_CallFunction(reinterpret_cast<PyObject*>(&PyType_Type), "sOO",
                                         name.c_str(), bases.ptr(), ns.ptr());
  if (type == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(type);
}

py::object newProxy(py::handle proxyType, std::shared_ptr<Endpoint> endpoint, uint64_t id) {
  PyTypeObject* type = reinterpret_cast<PyTypeObject*>(proxyType.ptr());
  PyObject* object = type->tp_alloc(type, 0);
  if (object == nullptr) throw py::error_already_set();
  ProxyObject* proxy = asProxy(object);
  new (proxy->endpointStorage) std::shared_ptr<Endpoint>(std::move(endpoint));
  proxy->id = id;
  proxy->label = nullptr;
  proxy->batch = nullptr;
  proxy->batchIndex = 0;
  proxy->batchSize = 0;
  proxy->batchEnded = false;
  proxy->isModule = false;
  proxy->owner = endpointOf(object)->proxyOwner();
  return py::reinterpret_steal<py::object>(object);
}

bool isProxy(py::handle object) { return PyObject_TypeCheck(object.ptr(), &gProxyBaseType); }

void dropProxiesFrom(py::handle mapping) {
  PyObject* dict = mapping.ptr();
  if (!PyDict_Check(dict)) throw py::type_error("dropProxiesFrom needs a dict");
  std::vector<std::pair<py::object, py::object>> found;  // (key, proxy), held while deleting
  Py_ssize_t position = 0;
  PyObject* key;
  PyObject* value;
  while (PyDict_Next(dict, &position, &key, &value)) {  // borrowed: no reference counts change
    if (isProxy(value)) {
      found.emplace_back(py::reinterpret_borrow<py::object>(key),
                         py::reinterpret_borrow<py::object>(value));
    }
  }
  for (auto& [name, proxy] : found) {
    // A finalizer run by an earlier deletion may have changed the dict: delete only what is
    // still there.
    PyObject* current = PyDict_GetItemWithError(dict, name.ptr());
    if (current == nullptr && PyErr_Occurred()) throw py::error_already_set();
    if (current == proxy.ptr() && PyDict_DelItem(dict, name.ptr()) != 0) {
      throw py::error_already_set();
    }
  }
}

Endpoint* proxyEndpoint(py::handle proxy) { return endpointOf(proxy.ptr()).get(); }

std::shared_ptr<Endpoint> proxyEndpointShared(py::handle proxy) {
  return endpointOf(proxy.ptr());
}

uint64_t proxyId(py::handle proxy) { return asProxy(proxy.ptr())->id; }

std::string proxyLabel(py::handle proxy) {
  ProxyObject* p = asProxy(proxy.ptr());
  if (p->label != nullptr) return utf8(p->label);
  PyObject* qualname = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(proxy.ptr())),
                                              "__qualname__");
  std::string name = qualname && PyUnicode_Check(qualname) ? utf8(qualname) : "object";
  if (qualname == nullptr) PyErr_Clear();
  Py_XDECREF(qualname);
  return "<" + name + " object>";
}

void setProxyLabel(py::handle proxy, const std::string& label) {
  ProxyObject* p = asProxy(proxy.ptr());
  PyObject* text = PyUnicode_DecodeUTF8(label.data(), Py_ssize_t(label.size()), "replace");
  if (text == nullptr) {
    PyErr_Clear();
    return;
  }
  Py_XSETREF(p->label, text);
}

uint32_t takeProxyUnread(py::handle proxy) {
  ProxyObject* p = asProxy(proxy.ptr());
  uint32_t unread = uint32_t(unreadCount(p));
  Py_CLEAR(p->batch);
  p->batchIndex = 0;
  p->batchEnded = false;
  return unread;
}

void setProxyIsModule(py::handle proxy) { asProxy(proxy.ptr())->isModule = true; }

void adoptProxy(py::handle old, py::handle fresh) {
  ProxyObject* o = asProxy(old.ptr());
  ProxyObject* f = asProxy(fresh.ptr());
  std::shared_ptr<Endpoint> endpoint = endpointOf(fresh.ptr());
  endpoint->adoptImport(f->id, fresh.ptr(), old.ptr());
  endpointOf(old.ptr()) = endpoint;
  o->id = f->id;
  std::swap(o->owner, f->owner);  // the new child's owner (the same context, in practice)
  endpointOf(fresh.ptr()).reset();  // inert: its deallocation releases nothing
  Py_CLEAR(o->batch);
}

double threadTimeout() { return tThreadTimeout; }
void setThreadTimeout(double seconds) { tThreadTimeout = seconds; }

}  // namespace pi
