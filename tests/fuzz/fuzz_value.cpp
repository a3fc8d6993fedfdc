// Fuzz target: the values a child sends, decoded in the parent's role (proxy/value_codec).
//
// The input is one frame as a child writes it. When it is a whole, readable wire::Message, every
// Value in it is decoded the way the parent's endpoint decodes them: a request's arguments and
// keyword arguments, a response's value, or an error's type, args and exception (its texts with
// replacement, as the parent reads child text). Each decode may only return a Python object or
// throw a kj exception (FAILED) or a Python error; a sanitizer report, a leak, an uncaught C++
// exception or a Python error left set is a bug.
//
// The CodecPeer stands for the parent's endpoint: refs the child exports become fresh local
// objects after their type info is read, `back` ids resolve in a small export table (an unknown
// id is refused), and the message carries no fds and no readable child memory (fuzz_buffer
// covers those).
#include "protocol/framing.h"
#include "protocol/isolation.capnp.h"
#include "proxy/value_codec.h"
#include "support/fuzz_python.h"
#include "support/fuzz_support.h"

#include <kj/debug.h>
#include <pybind11/eval.h>

#include <cstring>
#include <vector>

namespace {

namespace py = pybind11;

class ParentPeer : public pi::CodecPeer {
 public:
  ParentPeer() {
    // What the parent might have exported to the child: a list, an iterator, a function, a
    // class, a dict.
    py::dict scope;
    scope["__builtins__"] = py::module_::import("builtins");
    py::exec("exported = [[1, 2], iter([3, 4]), len, ValueError, {'k': 'v'}]", scope);
    for (auto object : scope["exported"]) exported_.push_back(py::reinterpret_borrow<py::object>(object));
  }

  void exportRef(py::handle, pi::wire::Ref::Builder) override {
    pi::fuzz::fail("decoding exported an object");
  }
  py::object importRef(pi::wire::Ref::Reader ref) override {
    KJ_REQUIRE(ref.getId() != 0, "peer sent a ref with id 0");
    if (ref.hasTypeInfo()) {
      auto info = ref.getTypeInfo();
      size_t seen = info.getName().size() + info.getModule().size();
      for (auto name : info.getSpecials()) seen += name.size();
      for (auto name : info.getBlocked()) seen += name.size();
      (void)seen;
    }
    if (ref.hasClassInfo()) {
      auto info = ref.getClassInfo();
      (void)info.getQualname();
      (void)info.getDoc();
    }
    return py::reinterpret_steal<py::object>(PyBaseObject_Type.tp_alloc(&PyBaseObject_Type, 0));
  }
  py::object resolveBack(uint64_t id, uint32_t) override {
    KJ_REQUIRE(id >= 1 && id <= exported_.size(), "peer named an object that is not exported", id);
    return exported_[id - 1];
  }
  bool peerIdOf(py::handle, uint64_t&) override { return false; }
  int attachFd(pi::UniqueFd) override { return -1; }
  pi::UniqueFd takeFd(uint32_t index) override {
    KJ_FAIL_REQUIRE("peer named a file descriptor its message does not carry", index);
  }

 private:
  std::vector<py::object> exported_;
};

ParentPeer* peer = nullptr;
pi::ValueCodec* codec = nullptr;

void decode(pi::wire::Value::Reader value) {
  try {
    py::object made = codec->decode(value);
    (void)made;
  } catch (kj::Exception& e) {
    pi::fuzz::expectPeerError(e);
  } catch (py::error_already_set&) {
    // A Python error for a value no well-behaved child sends (bad UTF-8 in an exception's
    // message, an unhashable key): the parent answers it with an error, which is fine.
  }
  if (PyErr_Occurred()) pi::fuzz::fail("a decode left a Python error set");
}

// Child text, as the parent reads it: UTF-8 with replacement.
void readText(capnp::Text::Reader text) {
  PyObject* made = PyUnicode_DecodeUTF8(text.cStr(), Py_ssize_t(text.size()), "replace");
  if (made == nullptr) pi::fuzz::fail("decoding with replacement failed");
  Py_DECREF(made);
}

void decodeMessage(pi::wire::Message::Reader message) {
  switch (message.which()) {
    case pi::wire::Message::REQUEST: {
      auto request = message.getRequest();
      readText(request.getName());
      for (auto arg : request.getArgs()) decode(arg);
      for (auto kwarg : request.getKwargs()) {
        readText(kwarg.getName());
        decode(kwarg.getValue());
      }
      break;
    }
    case pi::wire::Message::RESPONSE: {
      auto response = message.getResponse();
      if (response.isValue()) {
        decode(response.getValue());
      } else if (response.isError()) {
        auto error = response.getError();
        decode(error.getType());
        for (auto arg : error.getArgs()) decode(arg);
        decode(error.getException());
        readText(error.getMessage());
        readText(error.getTraceback());
      }
      break;
    }
    case pi::wire::Message::HELLO:
      readText(message.getHello().getPythonVersion());
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pi::fuzz::startPython();
  peer = new ParentPeer();
  codec = new pi::ValueCodec(*peer);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto input = kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size);
  try {
    auto frameSize = pi::peekFrameSize(input);
    if (!frameSize || frameSize->totalBytes > size) return 0;
    auto words = kj::heapArray<capnp::word>(frameSize->totalBytes / 8);
    memcpy(words.begin(), data, frameSize->totalBytes);
    pi::IncomingFrame frame(kj::mv(words), *frameSize);
    decodeMessage(frame.getRoot<pi::wire::Message>());
  } catch (kj::Exception& e) {
    pi::fuzz::expectPeerError(e);
  }
  return 0;
}
