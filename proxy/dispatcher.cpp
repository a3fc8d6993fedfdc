// One table: request op -> handler that runs it on this side's objects.
#include "proxy/dispatcher.h"

#include "proxy/specials.h"

#include <kj/debug.h>

#include <cstring>
#include <frameobject.h>
#include <string>
#include <unordered_map>
#include <utility>

namespace pi {

namespace {

py::object steal(PyObject* object) {
  if (object == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(object);
}

// Everything one handler needs, decoded from the request.
struct Call {
  py::object target;  // null for ops without a target; a strong reference for the op's life
  std::string name;
  py::tuple args;
  py::dict kwargs;
  Role role;
  bool denyPrivate = false;  // the parent serves a confined child (Dispatcher::setDenyPrivate)
  uint64_t targetId = 0;
  // Errors raised by iterators part-way through an iterBatch, owed on the next request.
  std::unordered_map<uint64_t, py::object>* pendingIterErrors;
  // The last batch each iterator returned.
  std::unordered_map<uint64_t, py::list>* lastBatches;

  py::handle arg(size_t i) const {
    KJ_REQUIRE(i < args.size(), "request has too few arguments", i);
    return args[i];
  }
  py::handle requireTarget() const {
    KJ_REQUIRE(target.ptr() != nullptr, "request needs a target");
    return target;
  }
};

[[noreturn]] void refuse(const std::string& what) {
  PyErr_SetString(PyExc_PermissionError, ("an isolated child may not " + what).c_str());
  throw py::error_already_set();
}

// Attribute names a confined child may not use on parent objects: private names, and the
// introspection attributes of frames, tracebacks, code, generators and coroutines, which lead to
// module globals and from there to everything.
bool isForbiddenAttribute(const std::string& name) {
  if (name.empty() || name[0] == '_') return true;
  for (const char* prefix : {"f_", "tb_", "co_", "gi_", "cr_", "ag_"}) {
    if (name.compare(0, strlen(prefix), prefix) == 0) return true;
  }
  return false;
}

// An AttributeError, not a PermissionError: a library probing `hasattr(obj, '_typ')` on a parent
// object in a confined child goes on as it would for an object without it.
void checkAttributeName(const Call& call) {
  if (call.role == Role::kParent && call.denyPrivate && isForbiddenAttribute(call.name)) {
    std::string kind = call.name.empty() || call.name[0] == '_' ? "private" : "introspection";
    PyErr_SetString(PyExc_AttributeError,
                    ("a confined child may not use the " + kind + " attribute '" + call.name +
                     "' of a parent object")
                        .c_str());
    throw py::error_already_set();
  }
}

// Parent objects a confined child may do no more with than print, hash and compare: modules,
// frames, tracebacks and code objects.
bool isSealedForChild(py::handle object) {
  PyObject* o = object.ptr();
  if (PyModule_Check(o) || PyFrame_Check(o) || PyTraceBack_Check(o) || PyCode_Check(o)) return true;
  return false;
}

py::object pyName(const Call& call) {
  return steal(PyUnicode_DecodeUTF8(call.name.data(), Py_ssize_t(call.name.size()), "strict"));
}

using Handler = DispatchResult (*)(Call& call);

DispatchResult opImport(Call& call) {
  if (call.role == Role::kParent) refuse("import a module in the parent");
  py::module_ sys = py::module_::import("sys");
  py::list path = sys.attr("path");
  if (call.args.size() > 0 && !call.args[0].is_none()) {
    KJ_REQUIRE(PyList_Check(call.args[0].ptr()), "import names its extra paths in a non-list");
    py::list extra = py::reinterpret_borrow<py::list>(call.args[0]);
    for (size_t i = extra.size(); i-- > 0;) {
      py::object entry = extra[i];
      if (!path.contains(entry)) path.insert(0, entry);
    }
  }
  return {py::module_::import("importlib").attr("import_module")(pyName(call))};
}

DispatchResult opGetattr(Call& call) {
  checkAttributeName(call);
  return {steal(PyObject_GetAttr(call.requireTarget().ptr(), pyName(call).ptr()))};
}

DispatchResult opSetattr(Call& call) {
  checkAttributeName(call);
  if (PyObject_SetAttr(call.requireTarget().ptr(), pyName(call).ptr(), call.arg(0).ptr()) != 0) {
    throw py::error_already_set();
  }
  return {py::none()};
}

DispatchResult opDelattr(Call& call) {
  checkAttributeName(call);
  if (PyObject_DelAttr(call.requireTarget().ptr(), pyName(call).ptr()) != 0) {
    throw py::error_already_set();
  }
  return {py::none()};
}

DispatchResult opCall(Call& call) {
  return {steal(PyObject_Call(call.requireTarget().ptr(), call.args.ptr(),
                              call.kwargs.size() ? call.kwargs.ptr() : nullptr))};
}

DispatchResult opCallMethod(Call& call) {
  checkAttributeName(call);
  py::object method = steal(PyObject_GetAttr(call.requireTarget().ptr(), pyName(call).ptr()));
  return {steal(PyObject_Call(method.ptr(), call.args.ptr(),
                              call.kwargs.size() ? call.kwargs.ptr() : nullptr))};
}

DispatchResult opRepr(Call& call) { return {steal(PyObject_Repr(call.requireTarget().ptr()))}; }
DispatchResult opStr(Call& call) { return {steal(PyObject_Str(call.requireTarget().ptr()))}; }

DispatchResult opDir(Call& call) {
  return {steal(PyObject_Dir(call.requireTarget().ptr()))};
}

DispatchResult opLen(Call& call) {
  Py_ssize_t n = PyObject_Length(call.requireTarget().ptr());
  if (n < 0) throw py::error_already_set();
  return {steal(PyLong_FromSsize_t(n))};
}

DispatchResult opGetitem(Call& call) {
  return {steal(PyObject_GetItem(call.requireTarget().ptr(), call.arg(0).ptr()))};
}

DispatchResult opSetitem(Call& call) {
  if (PyObject_SetItem(call.requireTarget().ptr(), call.arg(0).ptr(), call.arg(1).ptr()) != 0) {
    throw py::error_already_set();
  }
  return {py::none()};
}

DispatchResult opDelitem(Call& call) {
  if (PyObject_DelItem(call.requireTarget().ptr(), call.arg(0).ptr()) != 0) {
    throw py::error_already_set();
  }
  return {py::none()};
}

DispatchResult opContains(Call& call) {
  int r = PySequence_Contains(call.requireTarget().ptr(), call.arg(0).ptr());
  if (r < 0) throw py::error_already_set();
  return {py::bool_(r == 1)};
}

DispatchResult opIter(Call& call) { return {steal(PyObject_GetIter(call.requireTarget().ptr()))}; }

// Raises TypeError unless `target` is an iterator: PyIter_Next calls tp_iternext unchecked.
void requireIterator(py::handle target) {
  if (!PyIter_Check(target.ptr())) {
    PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator",
                 Py_TYPE(target.ptr())->tp_name);
    throw py::error_already_set();
  }
}

DispatchResult opNext(Call& call) {
  py::handle target = call.requireTarget();
  requireIterator(target);
  PyObject* item = Py_TYPE(target.ptr())->tp_iternext(target.ptr());
  if (item == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetNone(PyExc_StopIteration);
    throw py::error_already_set();
  }
  return {steal(item)};
}

DispatchResult opIterBatch(Call& call) {
  py::handle target = call.requireTarget();
  requireIterator(target);
  auto pending = call.pendingIterErrors->find(call.targetId);
  if (pending != call.pendingIterErrors->end()) {
    // The iterator raised after the items of the previous batch: raise it now, in order.
    py::object error = std::move(pending->second);
    call.pendingIterErrors->erase(pending);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
    throw py::error_already_set();
  }
  long count = PyLong_AsLong(call.arg(0).ptr());
  if (count == -1 && PyErr_Occurred()) throw py::error_already_set();
  KJ_REQUIRE(count > 0 && count <= 100000, "iterBatch asks for a bad count", count);
  py::list items;
  for (long i = 0; i < count; ++i) {
    PyObject* item = PyIter_Next(target.ptr());
    if (item == nullptr) {
      if (!PyErr_Occurred()) break;
      if (items.size() == 0) throw py::error_already_set();
      // Deliver the items first; the error comes with the next batch.
      py::error_already_set error;
      (*call.pendingIterErrors)[call.targetId] = error.value();
      break;
    }
    items.append(steal(item));
  }
  if (items.size() > 0) {
    (*call.lastBatches)[call.targetId] = items;
  } else {
    call.lastBatches->erase(call.targetId);
  }
  return {items};
}

// Applies the target type's own comparison slot, and nothing else: not the reflected method of
// the other operand and not the identity fallback, which PyObject_RichCompare would try next.
// The other operand of a forwarded comparison is usually the peer's object, a proxy here, whose
// reflected method would forward the comparison back to where it came from, and so on forever
// (issue 11). The side that asked does what Python does after a NotImplemented, locally.
DispatchResult opCompare(Call& call) {
  static const std::pair<const char*, int> kOps[] = {{"__lt__", Py_LT}, {"__le__", Py_LE},
                                                      {"__eq__", Py_EQ}, {"__ne__", Py_NE},
                                                      {"__gt__", Py_GT}, {"__ge__", Py_GE}};
  for (auto [name, op] : kOps) {
    if (call.name == name) {
      PyObject* target = call.requireTarget().ptr();
      PyObject* other = call.arg(0).ptr();
      richcmpfunc compare = Py_TYPE(target)->tp_richcompare;
      if (compare == nullptr) return {py::reinterpret_borrow<py::object>(Py_NotImplemented)};
      if (Py_EnterRecursiveCall(" in comparison") != 0) throw py::error_already_set();
      PyObject* result = compare(target, other, op);
      Py_LeaveRecursiveCall();
      return {steal(result)};
    }
  }
  KJ_FAIL_REQUIRE("request names an unknown comparison", call.name);
}

DispatchResult opBool(Call& call) {
  int r = PyObject_IsTrue(call.requireTarget().ptr());
  if (r < 0) throw py::error_already_set();
  return {py::bool_(r == 1)};
}

DispatchResult opHash(Call& call) {
  Py_hash_t h = PyObject_Hash(call.requireTarget().ptr());
  if (h == -1 && PyErr_Occurred()) throw py::error_already_set();
  return {steal(PyLong_FromSsize_t(h))};
}

DispatchResult opSpecial(Call& call) {
  KJ_REQUIRE(findSpecialMethod(call.name) >= 0, "request names an unknown special method",
             call.name);
  py::handle target = call.requireTarget();
  py::object name = pyName(call);
  // Looked up on the type, bound like the interpreter binds special methods.
  PyObject* descriptor = _PyType_Lookup(Py_TYPE(target.ptr()), name.ptr());  // borrowed
  if (descriptor == nullptr) {
    PyErr_Format(PyExc_TypeError, "'%.200s' object has no special method %U",
                 Py_TYPE(target.ptr())->tp_name, name.ptr());
    throw py::error_already_set();
  }
  py::object method = py::reinterpret_borrow<py::object>(descriptor);
  descrgetfunc get = Py_TYPE(descriptor)->tp_descr_get;
  if (get != nullptr) {
    method = steal(get(descriptor, target.ptr(),
                       reinterpret_cast<PyObject*>(Py_TYPE(target.ptr()))));
  }
  return {steal(PyObject_Call(method.ptr(), call.args.ptr(), nullptr))};
}

DispatchResult opIsinstance(Call& call) {
  int r = PyObject_IsInstance(call.arg(0).ptr(), call.requireTarget().ptr());
  if (r < 0) throw py::error_already_set();
  return {py::bool_(r == 1)};
}

DispatchResult opIssubclass(Call& call) {
  int r = PyObject_IsSubclass(call.arg(0).ptr(), call.requireTarget().ptr());
  if (r < 0) throw py::error_already_set();
  return {py::bool_(r == 1)};
}

DispatchResult opByvalue(Call& call) {
  if (call.role == Role::kParent) refuse("copy a parent object by value");
  // Protocol 5 with out-of-band buffers: large contiguous buffers (numpy arrays) are not copied
  // into the pickle but sent beside it, each in a sealed memfd (see Endpoint::serveRequest).
  py::list buffers;
  py::object dumps = py::module_::import("pickle").attr("dumps");
  py::object data = dumps(call.requireTarget(), 5, py::arg("buffer_callback") = buffers.attr("append"));
  return {py::make_tuple(data, buffers), true};
}

DispatchResult opFetchBuffer(Call& call) {
  // The payload itself is written by the endpoint, which holds the pinned spans and answers only
  // for one of those (in the parent: only what the parent sent this child).
  uint64_t address = call.arg(0).cast<uint64_t>();
  uint64_t size = call.arg(1).cast<uint64_t>();
  return {py::make_tuple(address, size), false, true};
}

DispatchResult opCallByName(Call& call) {
  if (call.role == Role::kParent) refuse("call a parent function by name");
  auto colon = call.name.find(':');
  KJ_REQUIRE(colon != std::string::npos, "callByName needs module:qualname", call.name);
  py::object object = py::module_::import("importlib").attr("import_module")(
      py::str(call.name.substr(0, colon)));
  std::string qualname = call.name.substr(colon + 1);
  size_t start = 0;
  while (start <= qualname.size()) {
    size_t dot = qualname.find('.', start);
    std::string part = qualname.substr(start, dot == std::string::npos ? std::string::npos
                                                                        : dot - start);
    object = object.attr(py::str(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return {steal(PyObject_Call(object.ptr(), call.args.ptr(),
                              call.kwargs.size() ? call.kwargs.ptr() : nullptr))};
}

DispatchResult opFormat(Call& call) {
  py::handle target = call.requireTarget();
  py::handle spec = call.arg(0);
  if (!PyUnicode_Check(spec.ptr())) {
    PyErr_Format(PyExc_TypeError, "format() argument 2 must be str, not %.200s",
                 Py_TYPE(spec.ptr())->tp_name);
    throw py::error_already_set();
  }
  return {steal(PyObject_Format(target.ptr(), spec.ptr()))};
}

struct OpEntry {
  wire::Op op;
  Handler handler;
};

// The table. Indexed by the op's number; the KJ_ASSERT in dispatch() keeps it in order.
constexpr OpEntry kHandlers[] = {
    {wire::Op::IMPORT, opImport},           {wire::Op::GETATTR, opGetattr},
    {wire::Op::SETATTR, opSetattr},         {wire::Op::DELATTR, opDelattr},
    {wire::Op::CALL, opCall},               {wire::Op::CALL_METHOD, opCallMethod},
    {wire::Op::REPR, opRepr},               {wire::Op::STR, opStr},
    {wire::Op::DIR, opDir},                 {wire::Op::LEN, opLen},
    {wire::Op::GETITEM, opGetitem},         {wire::Op::SETITEM, opSetitem},
    {wire::Op::DELITEM, opDelitem},         {wire::Op::CONTAINS, opContains},
    {wire::Op::ITER, opIter},               {wire::Op::NEXT, opNext},
    {wire::Op::COMPARE, opCompare},         {wire::Op::BOOL, opBool},
    {wire::Op::HASH, opHash},               {wire::Op::SPECIAL, opSpecial},
    {wire::Op::ISINSTANCE, opIsinstance},   {wire::Op::ISSUBCLASS, opIssubclass},
    {wire::Op::BYVALUE, opByvalue},         {wire::Op::CALL_BY_NAME, opCallByName},
    {wire::Op::FORMAT, opFormat},           {wire::Op::ITER_BATCH, opIterBatch},
    {wire::Op::FETCH_BUFFER, opFetchBuffer},
};

}  // namespace

py::list Dispatcher::lastBatch(uint64_t id) const {
  auto found = lastBatches_.find(id);
  return found == lastBatches_.end() ? py::list() : found->second;
}

void Dispatcher::forget(uint64_t id) {
  lastBatches_.erase(id);
  pendingIterErrors_.erase(id);
}

DispatchResult Dispatcher::dispatch(wire::Request::Reader request,
                                    const std::function<void()>& argumentsDecoded) {
  auto opNumber = size_t(request.getOp());
  if (opNumber >= sizeof(kHandlers) / sizeof(kHandlers[0])) {
    PyErr_Format(PyExc_NotImplementedError, "this side does not know request op %zu", opNumber);
    throw py::error_already_set();
  }
  const OpEntry& entry = kHandlers[opNumber];
  KJ_ASSERT(size_t(entry.op) == opNumber, "dispatch table out of order");

  Call call;
  call.role = role_;
  call.denyPrivate = denyPrivate_;
  call.targetId = request.getTarget();
  call.pendingIterErrors = &pendingIterErrors_;
  call.lastBatches = &lastBatches_;
  if (request.getTarget() != 0) {
    call.target = py::reinterpret_borrow<py::object>(exports_.get(request.getTarget()));
    if (role_ == Role::kParent && denyPrivate_ && isSealedForChild(call.target)) {
      auto op = request.getOp();
      bool harmless = op == wire::Op::REPR || op == wire::Op::STR || op == wire::Op::HASH ||
                      op == wire::Op::BOOL || op == wire::Op::COMPARE;
      if (!harmless) {
        refuse("look inside a module, frame, traceback or code object of the parent (the child "
               "is confined)");
      }
    }
  }
  auto name = request.getName();
  call.name.assign(name.cStr(), name.size());
  auto args = request.getArgs();
  call.args = py::reinterpret_steal<py::tuple>(PyTuple_New(Py_ssize_t(args.size())));
  for (unsigned i = 0; i < args.size(); ++i) {
    PyTuple_SET_ITEM(call.args.ptr(), Py_ssize_t(i), codec_.decode(args[i]).release().ptr());
  }
  for (auto kw : request.getKwargs()) {
    auto key = kw.getName();
    call.kwargs[py::str(key.cStr(), key.size())] = codec_.decode(kw.getValue());
  }
  if (argumentsDecoded) argumentsDecoded();
  return entry.handler(call);
}

}  // namespace pi
