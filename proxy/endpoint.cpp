// One end of a connection, the same code on both sides: calls, nested dispatch, releases.
#include "proxy/endpoint.h"

#include "proxy/proxy_object.h"
#include "proxy/remote_error.h"
#include "proxy/specials.h"
#include "protocol/limits.h"
#include "runtime/child_main.h"
#include "runtime/peer_text.h"
#include "runtime/process_id.h"
#include "runtime/shared_rings.h"
#include "runtime/termination.h"

#include <capnp/message.h>
#include <kj/debug.h>
#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

namespace pi {

namespace {

constexpr size_t kScratchWords = 1024;
// Messages larger than this are written with the GIL released.
constexpr size_t kReleaseGilForSendBytes = 64 * 1024;
// How long the child has to answer after the user interrupted a call.
constexpr double kInterruptGraceSeconds = 2.0;
// How often a parent's wait wakes up to run Python signal handlers.
constexpr int kSignalCheckMillis = 100;

// A kj description, which may quote what the peer sent, as valid UTF-8.
std::string kjDescription(const kj::Exception& e) { return peerText(e.getDescription().cStr()); }

bool wantsTraceback(const py::error_already_set& error, wire::Op op) {
  if (error.matches(PyExc_StopIteration) || error.matches(PyExc_StopAsyncIteration)) return false;
  if (op == wire::Op::GETATTR && error.matches(PyExc_AttributeError)) return false;
  return true;
}

std::string attrString(py::handle object, const char* name, const std::string& fallback) {
  PyObject* value = PyObject_GetAttrString(object.ptr(), name);
  if (value == nullptr || !PyUnicode_Check(value)) {
    PyErr_Clear();
    Py_XDECREF(value);
    return fallback;
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(value, &size);
  std::string out = data ? std::string(data, size_t(size)) : fallback;
  if (data == nullptr) PyErr_Clear();
  Py_DECREF(value);
  return out;
}

// What _PyType_Lookup(type, name) finds (a borrowed reference, or null), found without its
// method cache: a miss there writes a cache entry and drops a reference to the name it evicts,
// and in a freshly forked child each such write copies a page. describeType makes a hundred
// lookups per type, so it walks the MRO's dicts instead, which only reads them.
PyObject* lookupInMro(PyTypeObject* type, PyObject* name) {
  PyObject* mro = type->tp_mro;
  if (mro == nullptr || !PyTuple_Check(mro)) return _PyType_Lookup(type, name);
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
    PyObject* base = PyTuple_GET_ITEM(mro, i);
    if (!PyType_Check(base)) continue;
#if PY_VERSION_HEX >= 0x030C0000
    // Static builtin types keep their dict in the interpreter state, not in tp_dict.
    PyObject* dict = PyType_GetDict(reinterpret_cast<PyTypeObject*>(base));
    if (dict == nullptr) continue;
    PyObject* found = PyDict_GetItemWithError(dict, name);
    Py_DECREF(dict);  // the type keeps its dict, and the dict what was found
#else
    PyObject* dict = reinterpret_cast<PyTypeObject*>(base)->tp_dict;  // borrowed: no write
    if (dict == nullptr) continue;
    PyObject* found = PyDict_GetItemWithError(dict, name);
#endif
    if (found != nullptr) return found;
    if (PyErr_Occurred()) PyErr_Clear();  // as in _PyType_Lookup: an error means not found
  }
  return nullptr;
}

// "Type: message" of a Python error, made without pybind11's error_already_set::what(), which
// recurses without end when str() of the error fails (as it does at the recursion limit).
std::string describeError(const py::error_already_set& error) {
  std::string out = Py_TYPE(error.value().ptr())->tp_name;
  PyObject* text = PyObject_Str(error.value().ptr());
  const char* utf8 = text != nullptr ? PyUnicode_AsUTF8(text) : nullptr;
  if (utf8 != nullptr) out += std::string(": ") + utf8;
  if (utf8 == nullptr) PyErr_Clear();
  Py_XDECREF(text);
  return out;
}

// A text field of a peer's message (a name, a doc string), as valid UTF-8 whatever it holds.
std::string readerText(capnp::Text::Reader text) {
  return peerText(std::string_view(text.cStr(), text.size()));
}

// Builtin iterator types over containers: next() has no side effects beyond advancing, so the
// peer may fetch their items in batches.
bool isBatchIterator(PyTypeObject* type) {
  // Static types, or (3.12 on: the deque iterators) a C extension's immutable heap type, which
  // no class statement can make.
#ifdef Py_TPFLAGS_IMMUTABLETYPE
  constexpr unsigned long kImmutable = Py_TPFLAGS_IMMUTABLETYPE;
#else
  constexpr unsigned long kImmutable = 0;
#endif
  if ((type->tp_flags & Py_TPFLAGS_HEAPTYPE) && !(type->tp_flags & kImmutable)) return false;
  static const char* const kNames[] = {
      "list_iterator", "list_reverseiterator", "tuple_iterator", "range_iterator",
      "longrange_iterator", "set_iterator", "dict_keyiterator", "dict_valueiterator",
      "dict_itemiterator", "dict_reversekeyiterator", "dict_reversevalueiterator",
      "dict_reverseitemiterator", "bytes_iterator", "bytearray_iterator", "str_iterator",
      "str_ascii_iterator", "_collections._deque_iterator",
      "_collections._deque_reverse_iterator", "collections._deque_iterator",
      "collections._deque_reverse_iterator", "odict_iterator", "odict_keyiterator",
      "odict_valueiterator", "odict_itemiterator"};
  for (const char* name : kNames) {
    if (strcmp(type->tp_name, name) == 0) return true;
  }
  return false;
}

// Nesting between the two processes, bounded on both sides (issue 11). A call that the peer
// answers by calling back, which calls the peer again, and so on, stacks one request and one
// served request per level on each side's C stack, and nothing in the interpreter counts most of
// that. The guard counts the levels of the calling thread (its requests and the requests it serves
// while it waits, over every connection) and, from the first nested level on, checks what is left
// of the thread's C stack: a level that would go too deep is a RecursionError in the innermost
// call, raised before anything is sent (a request) or answered to the peer (a served request), and
// both processes go on. The outermost level is never refused, so a thread with a small stack can
// always make a plain call. Levels are also bounded in number, by sys.getrecursionlimit() (a
// round trip is two: the request and the callback it serves), for nesting that uses little stack.
class NestingGuard {
 public:
  enum class Kind {
    kCall,      // a request this side sends: checked when the guard is made
    kCallback,  // a request of the peer served while this thread waits: checked by check()
    kUnchecked  // counted only (fetchBuffer, asked while an answer is decoded)
  };
  // Enters one level. Throws py::error_already_set (RecursionError) when a kCall would nest too
  // deep. Requires the GIL.
  explicit NestingGuard(Kind kind) : thread_(tThread_), kind_(kind), outer_(thread_.depth) {
    if (kind == Kind::kCall && outer_ > 0) check();
    ++thread_.depth;
  }
  ~NestingGuard() { thread_.depth = outer_; }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;

  // Throws as above when this level nests too deep; a kCallback guard is checked once the
  // request's arguments are decoded (so the peer's refs in them are counted and released).
  void check() {
    if (outer_ == 0 || kind_ == Kind::kUnchecked) return;
    int limit = Py_GetRecursionLimit();
    if (outer_ >= limit) {
      refuse("past sys.getrecursionlimit() (" + std::to_string(limit) + ")");
    }
    const ThreadState& stack = threadStack();
    auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    // Outside the bounds: running on a stack of its own (a coroutine library's); nothing to say.
    if (here > stack.low && here <= stack.high && here - stack.low < stack.margin) {
      refuse("with " + std::to_string((here - stack.low) / 1024) + " KiB left of the thread's " +
             std::to_string((stack.high - stack.low) / 1024) + " KiB C stack");
    }
  }
  // Whether check() refused this level.
  bool refused() const { return refused_; }

  // A new process (the child after fork) starts with nothing nested.
  static void reset() { tThread_.depth = 0; }

 private:
  // What is kept free of a thread's C stack (a quarter of it, within these bounds): what one
  // more level needs (the frames of a request, of the served request and of the interpreter
  // calling the callback: about 7 KiB in the parent, 12 KiB for the first level of a thread,
  // measured with tests/python/test_nesting.py) and what raising the RecursionError and
  // formatting its traceback on the way back up take. A 32 KiB thread (the least
  // threading.stack_size takes) can make plain calls but not nest.
  static constexpr size_t kMaxStackMargin = 256 * 1024;
  static constexpr size_t kMinStackMargin = 24 * 1024;

  // One per thread, found with one thread-local lookup per guard (in a shared library each
  // lookup is a call).
  struct ThreadState {
    int depth = 0;  // levels entered on this thread
    bool stackKnown = false;
    uintptr_t low = 0;  // lowest usable address of the thread's stack; 0 when unknown
    uintptr_t high = 0;
    size_t margin = 0;
  };

  // The calling thread's stack bounds, asked once per thread (for the main thread glibc reads
  // /proc/self/maps).
  const ThreadState& threadStack() {
    if (!thread_.stackKnown) {
      thread_.stackKnown = true;
      pthread_attr_t attributes;
      if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
        void* address = nullptr;
        size_t size = 0;
        if (pthread_attr_getstack(&attributes, &address, &size) == 0 && size > 0) {
          thread_.low = reinterpret_cast<uintptr_t>(address);
          thread_.high = thread_.low + size;
          thread_.margin = std::clamp(size / 4, kMinStackMargin, kMaxStackMargin);
        }
        pthread_attr_destroy(&attributes);
      }
    }
    return thread_;
  }

  [[noreturn]] void refuse(const std::string& why) {
    refused_ = true;
    std::string message =
        std::string(kind_ == Kind::kCall ? "a call to" : "a callback from") +
        " the other process would nest " + std::to_string(outer_ + 1) +
        " levels deep between the parent and its isolated child, " + why +
        ": the two processes call each other without end (a recursion across the boundary, or "
        "an operation the two sides keep handing back to each other)";
    PyErr_SetString(PyExc_RecursionError, message.c_str());
    throw py::error_already_set();
  }

  ThreadState& thread_;
  Kind kind_;
  int outer_;
  bool refused_ = false;

  static thread_local ThreadState tThread_;
};

thread_local NestingGuard::ThreadState NestingGuard::tThread_;

}  // namespace

// Holds the endpoint's I/O lock. Waiting for it releases the GIL, so a thread that holds the
// lock and needs the GIL to finish its call is never blocked by a thread waiting here.
class Endpoint::IoLock {
 public:
  explicit IoLock(Endpoint& endpoint) : lock_(endpoint.ioMutex_, std::try_to_lock) {
    if (!lock_.owns_lock()) {
      py::gil_scoped_release nogil;
      lock_.lock();
    }
  }

 private:
  std::unique_lock<std::recursive_mutex> lock_;
};

class Endpoint::EncodingScope {
 public:
  explicit EncodingScope(Endpoint& endpoint)
      : endpoint_(endpoint),
        outgoing_(endpoint.codec_.buffers()),
        pinMark_(endpoint.codec_.buffers().pinMark()) {
    endpoint_.outgoingFds_.push_back(&fds_);
  }
  ~EncodingScope() {
    endpoint_.outgoingFds_.pop_back();
    endpoint_.codec_.buffers().dropUnsentPins(pinMark_);  // none, once the message was sent
  }
  EncodingScope(const EncodingScope&) = delete;
  EncodingScope& operator=(const EncodingScope&) = delete;

  std::vector<UniqueFd>& fds() { return fds_; }
  uint64_t pinMark() const { return pinMark_; }

 private:
  Endpoint& endpoint_;
  BufferCodec::OutgoingMessage outgoing_;  // bounds the out-of-band bytes of this message
  std::vector<UniqueFd> fds_;
  uint64_t pinMark_;
};

void Endpoint::ReceivedFrame::finishDecoding() {
  if (number_ == 0) return;
  endpoint_->codec_.buffers().finishedDecoding(number_);
  auto& undecoded = endpoint_->undecoded_;
  auto found = std::find(undecoded.begin(), undecoded.end(), number_);
  if (found != undecoded.end()) undecoded.erase(found);
  number_ = 0;
}

uint64_t Endpoint::decodedFrames() const {
  if (undecoded_.empty()) return framesIn_;
  return *std::min_element(undecoded_.begin(), undecoded_.end()) - 1;
}

int Endpoint::attachFd(UniqueFd fd) {
  if (outgoingFds_.empty() || outgoingFds_.back()->size() >= kMaxFrameFds) return -1;
  outgoingFds_.back()->push_back(std::move(fd));
  return int(outgoingFds_.back()->size() - 1);
}

UniqueFd Endpoint::takeFd(uint32_t index) {
  KJ_REQUIRE(index < incomingFds_.size() && incomingFds_[index],
             "peer named a file descriptor its message does not carry", index);
  return std::move(incomingFds_[index]);
}

void Endpoint::setPeerPid(pid_t pid) { peerMemory_ = PeerMemory(pid); }

void Endpoint::setProxyOwner(py::handle owner) {
  if (owner.is_none()) {
    proxyOwner_ = py::object();
    return;
  }
  PyObject* ref = PyWeakref_NewRef(owner.ptr(), nullptr);
  if (ref == nullptr) throw py::error_already_set();
  proxyOwner_ = py::reinterpret_steal<py::object>(ref);
}

PyObject* Endpoint::proxyOwner() const {
  if (!proxyOwner_) return nullptr;
  PyObject* owner = PyObject_CallNoArgs(proxyOwner_.ptr());  // the referent, or None
  if (owner == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  if (owner == Py_None) {
    Py_DECREF(owner);
    return nullptr;
  }
  return owner;
}

PeerMemory::Access Endpoint::readPeerMemory(uint64_t address, uint64_t size, char* into) {
  // Runs without the GIL when `into` is set: nothing Python here.
  if (role_ == Role::kChild) {
    // The parent is trusted and keeps the span pinned until we have decoded its frame, so a read
    // that fails means something changed under us (the parent made itself non-dumpable, a
    // security module stepped in) or never worked: whatever the cause, ask for the bytes again
    // (fetchBuffer) rather than lose them. Only the parent's end is final.
    if (!peerMemory_.usable()) return PeerMemory::Access::kRefused;
    try {
      return into == nullptr ? peerMemory_.probe(address, size)
                             : peerMemory_.read(address, into, size_t(size));
    } catch (kj::Exception& e) {
      if (e.getType() == kj::Exception::Type::DISCONNECTED) throw;
      return PeerMemory::Access::kRefused;
    }
  }
  KJ_REQUIRE(peerMemory_.usable(), "peer sent a buffer in its own memory, which this side does "
             "not read", address, size);
  return into == nullptr ? peerMemory_.probe(address, size)
                         : peerMemory_.read(address, into, size_t(size));
}

bool Endpoint::probeParent(pid_t pid, uint64_t address, uint64_t token) {
  if (pid <= 0 || address == 0) return false;
  try {
    // The pidfd is taken before the read: if `pid` was someone else's by now, the token is not
    // there, and if the parent ends later, every read sees it (PeerMemory::checkAlive).
    PeerMemory parent(pid);
    uint64_t seen = 0;
    if (parent.read(address, &seen, sizeof(seen)) != PeerMemory::Access::kDone) return false;
    if (seen != token) return false;
    peerMemory_ = std::move(parent);
    return true;
  } catch (kj::Exception&) {
    return false;  // not mapped (a stale address), the parent gone: no spans from the parent
  }
}

py::object Endpoint::refetchSpan(uint64_t address, uint64_t size) {
  // We are in the middle of decoding one of the peer's messages, whose remaining fds the
  // answer's must not replace; that message stays undecoded (ReceivedFrame), so the peer keeps
  // its spans pinned across this request. The wait has the deadline of the call whose answer we
  // decode; a Ctrl-C during it cannot resume that decode, so it ends the connection (as a
  // protocol error).
  std::vector<UniqueFd> decodingFds = std::move(incomingFds_);
  incomingFds_.clear();
  KJ_DEFER(incomingFds_ = std::move(decodingFds));
  py::object address_ = py::int_(address);
  py::object size_ = py::int_(size);
  PyObject* args[] = {address_.ptr(), size_.ptr()};
  return request(wire::Op::FETCH_BUFFER, 0, "", CallArgs{args, 2, nullptr}, activeDeadline_);
}

Endpoint::ReceivedFrame Endpoint::arrived(IncomingFrame frame) {
  auto message = frame.getRoot<wire::Message>();
  countFrame(receivedFrames_, message.which());
  incomingFds_ = channel_.takeFds(message.getFdCount());
  // The peer's count of our frames, modulo 2^32, widened by how far it is behind our own count:
  // an honest peer is a few frames behind at most, never ahead.
  uint32_t behind = uint32_t(framesOut_) - message.getDecodedFrames();
  bool ahead = behind >= (uint32_t{1} << 31) || behind > framesOut_;
  // The child trusts the parent, and must: frames a child's own code wrote by hand count in the
  // parent's numbers but not in ours (the hostile-child tests do this).
  KJ_REQUIRE(!ahead || role_ == Role::kChild,
             "peer says it decoded more frames than were sent to it", message.getDecodedFrames(),
             framesOut_);
  codec_.buffers().releaseDecoded(ahead ? framesOut_ : framesOut_ - behind);
  uint64_t number = ++framesIn_;
  // Before any value of it is made: what its buffers would make this side allocate.
  codec_.buffers().admitFrame(number, ValueCodec::outOfBandBytes(message));
  undecoded_.push_back(number);
  return ReceivedFrame(*this, std::move(frame), number);
}

Endpoint::Endpoint(UniqueFd socket, Role role)
    : role_(role),
      ownerPid_(currentPid()),
      channel_(std::move(socket)),
      codec_(*this),
      dispatcher_(codec_, exports_, role),
      scratch_(kj::heapArray<capnp::word>(kScratchWords)) {
  memset(scratch_.begin(), 0, scratch_.asBytes().size());
  // The child leaves large values in its memory for the parent to copy (Buffer.address); the
  // parent does too once the child said it can read them (awaitHello).
  if (role_ == Role::kChild) codec_.buffers().setSendSpans(true);
  if (role_ == Role::kParent) {
    // Run Python signal handlers (Ctrl-C) while waiting for the child.
    channel_.setWaitHook(
        [] {
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        },
        kSignalCheckMillis);
  }
}

Endpoint::~Endpoint() {
  if (currentPid() != ownerPid_) {  // inherited across fork: not our fds
    channel_.abandon();
    peerMemory_.abandon();
  }
}

void Endpoint::ensureUsable() {
  if (currentPid() != ownerPid_) {
    throw ClientStateError("this object belongs to process " + std::to_string(ownerPid_) +
                           "; a forked copy of it cannot talk to its isolated child");
  }
  if (closed_ && lostError_ && !lostReported_) {
    lostReported_ = true;
    std::rethrow_exception(lostError_);
  }
  if (closed_) {
    // With a restart hook (restart='auto', the default context) module proxies carry on in a
    // new child, so the way on is to get the object again from its module.
    throw ClientStateError(endedSummary() + "; objects from it can no longer be used" +
                           (restartHook_ ? " (its modules carry on in a new child: get the "
                                           "object from them again)"
                                         : " (restart its context to go on)"));
  }
}

void Endpoint::noteLostDuring(const std::string& call) {
  if (lostDuring_.empty()) lostDuring_ = call;
}

std::string Endpoint::endedSummary() const {
  std::string summary = endedDescription_.empty() ? "the connection to the isolated child is closed"
                                                  : endedDescription_;
  if (!lostDuring_.empty()) summary += " during " + lostDuring_;
  return summary;
}

bool Endpoint::ownedHere() const { return currentPid() == ownerPid_; }

void Endpoint::close(const std::string& description) {
  if (closed_) return;
  closed_ = true;
  endedDescription_ = description;
  if (currentPid() != ownerPid_) return;  // inherited across fork: not our fd, not our objects
  channel_.close();
  peerMemory_.close();
  imports_.clear();
  exports_.clear();
  codec_.buffers().releasePins();
}

void Endpoint::fail(EndpointObserver::Loss loss, const std::string& detail) {
  if (!lostError_) {
    closed_ = true;
    channel_.close();
    peerMemory_.close();
    try {
      if (observer_ != nullptr) {
        observer_->connectionLost(loss, detail);
      }
      if (loss == EndpointObserver::Loss::kTimeout) {
        kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "call timed out", detail));
      }
      kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "connection to the peer lost", detail));
    } catch (...) {
      lostError_ = std::current_exception();
      lostReported_ = true;  // thrown to the caller of the failing call, just below
    }
    endedDescription_ = observer_ != nullptr ? observer_->endedDescription()
                                             : "the connection to the peer was lost: " + detail;
    imports_.clear();
    exports_.clear();  // may run finalizers; the endpoint is already marked closed
    codec_.buffers().releasePins();
  }
  std::rethrow_exception(lostError_);
}

void Endpoint::markLost(std::exception_ptr error, const std::string& description) {
  if (closed_) return;
  lostError_ = std::move(error);
  lostReported_ = false;
  close(description);
}

void Endpoint::adoptImport(uint64_t id, PyObject* fresh, PyObject* old) {
  imports_.replace(id, fresh, old);
}

void Endpoint::proxyDropped(uint64_t id, PyObject* proxy) {
  if (closed_ || currentPid() != ownerPid_) return;
  imports_.dropped(id, proxy);
}

void Endpoint::sendMessage(capnp::MessageBuilder& message, Deadline deadline,
                           EncodingScope* scope) {
  std::vector<int> rawFds;
  if (scope != nullptr && !scope->fds().empty()) {
    message.getRoot<wire::Message>().setFdCount(uint16_t(scope->fds().size()));
    for (auto& fd : scope->fds()) rawFds.push_back(fd.get());
  }
  uint32_t decoded = uint32_t(decodedFrames());  // modulo 2^32, as the schema says
  message.getRoot<wire::Message>().setDecodedFrames(decoded);
  // The spans this message carries stay pinned until the peer has decoded this frame.
  uint64_t number = ++framesOut_;
  if (scope != nullptr) codec_.buffers().sealPins(scope->pinMark(), number);
  kj::Vector<kj::ArrayPtr<const kj::byte>> pieces;
  OutgoingFrame frame(message);
  for (auto piece : frame.pieces()) pieces.add(piece);
  // Pending releases ride in the same write, *after* the message: the peer resolves the ids in
  // the message before it applies the release, so a proxy dropped while the message was being
  // made (the result of a call, an exception's remote half) can never release an id the
  // message still names.
  countFrame(sentFrames_, message.getRoot<wire::Message>().which());
  std::optional<capnp::MallocMessageBuilder> releaseMessage;
  std::optional<OutgoingFrame> releaseFrame;
  if (imports_.hasReleases()) {
    countFrame(sentFrames_, wire::Message::RELEASE);
    auto releases = imports_.takeReleases();
    releaseMessage.emplace();
    auto root = releaseMessage->initRoot<wire::Message>();
    root.setDecodedFrames(decoded);
    ++framesOut_;
    auto release = root.initRelease();
    auto ids = release.initIds(unsigned(releases.size()));
    auto counts = release.initCounts(unsigned(releases.size()));
    for (unsigned i = 0; i < releases.size(); ++i) {
      ids.set(i, releases[i].id);
      counts.set(i, releases[i].count);
    }
    releaseFrame.emplace(*releaseMessage);
    for (auto piece : releaseFrame->pieces()) pieces.add(piece);
  }
  try {
    auto fdArray = kj::arrayPtr(rawFds.data(), rawFds.size());
    if (frame.totalBytes() > kReleaseGilForSendBytes) {
      py::gil_scoped_release nogil;
      channel_.send(pieces, deadline, fdArray);
    } else {
      channel_.send(pieces, deadline, fdArray);
    }
  } catch (kj::Exception& e) {
    auto loss = EndpointObserver::Loss::kDisconnected;
    if (e.getType() == kj::Exception::Type::OVERLOADED) loss = EndpointObserver::Loss::kTimeout;
    // A peer that corrupted the ring we write into, or wrote junk on the socket.
    if (e.getType() == kj::Exception::Type::FAILED) loss = EndpointObserver::Loss::kProtocol;
    fail(loss, kjDescription(e));
  }
}

Endpoint::ReceivedFrame Endpoint::receive(Deadline deadline) {
  if (pendingFrame_) {
    ReceivedFrame frame = std::move(*pendingFrame_);
    pendingFrame_.reset();
    return frame;  // its fds were taken when it was read ahead
  }
  try {
    std::optional<IncomingFrame> frame;
    if (channel_.hasBufferedFrame()) {
      frame.emplace(channel_.receive(deadline));
    } else {
      py::gil_scoped_release nogil;
      frame.emplace(channel_.receive(deadline));
    }
    return arrived(std::move(*frame));
  } catch (kj::Exception& e) {
    auto loss = EndpointObserver::Loss::kDisconnected;
    if (e.getType() == kj::Exception::Type::OVERLOADED) {
      bool stale = !staleCalls_.empty() && staleDeadline_.expired();
      loss = stale ? EndpointObserver::Loss::kInterrupted : EndpointObserver::Loss::kTimeout;
    }
    if (e.getType() == kj::Exception::Type::FAILED) loss = EndpointObserver::Loss::kProtocol;
    fail(loss, kjDescription(e));
  }
}

py::object Endpoint::request(wire::Op op, uint64_t target, std::string_view name, CallArgs args,
                             Deadline deadline) {
  ensureUsable();
  // fetchBuffer is asked while an answer is being decoded, one level deeper at most, and refusing
  // it would leave that answer undecodable.
  NestingGuard nesting(op == wire::Op::FETCH_BUFFER ? NestingGuard::Kind::kUnchecked
                                                     : NestingGuard::Kind::kCall);
  IoLock lock(*this);
  ensureUsable();
  uint64_t callId = nextCallId_++;
  {
    EncodingScope scope(*this);
    std::optional<capnp::MallocMessageBuilder> message;
    bool usingScratch = !scratchInUse_;
    if (usingScratch) {
      message.emplace(scratch_);
      scratchInUse_ = true;
    } else {
      message.emplace();
    }
    KJ_DEFER(if (usingScratch) scratchInUse_ = false);
    auto request = message->initRoot<wire::Message>().initRequest();
    request.setCallId(callId);
    request.setOp(op);
    request.setTarget(target);
    request.setName(capnp::Text::Reader(name.data(), name.size()));
    size_t kwcount = args.kwnames ? size_t(PyTuple_GET_SIZE(args.kwnames)) : 0;
    auto positional = request.initArgs(unsigned(args.nargs));
    for (size_t i = 0; i < args.nargs; ++i) codec_.encode(args.args[i], positional[unsigned(i)]);
    if (kwcount > 0) {
      auto kwargs = request.initKwargs(unsigned(kwcount));
      for (size_t i = 0; i < kwcount; ++i) {
        Py_ssize_t size = 0;
        const char* key = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(args.kwnames, i), &size);
        if (key == nullptr) throw py::error_already_set();
        kwargs[unsigned(i)].setName(capnp::Text::Reader(key, size_t(size)));
        codec_.encode(args.args[args.nargs + i], kwargs[unsigned(i)].initValue());
      }
    }
    sendMessage(*message, deadline, &scope);
  }
  return awaitResponse(callId, deadline);
}

py::object Endpoint::awaitResponse(uint64_t callId, Deadline deadline) {
  Deadline outerDeadline = activeDeadline_;
  activeDeadline_ = deadline;
  KJ_DEFER(activeDeadline_ = outerDeadline);
  for (;;) {
    // While an interrupted call's answer is still owed, the child must deliver it by the grace
    // deadline, or it is taken to be stuck and killed.
    Deadline wait = staleCalls_.empty() ? deadline : deadline.earliest(staleDeadline_);
    std::optional<ReceivedFrame> frame;
    try {
      frame.emplace(receive(wait));
    } catch (py::error_already_set&) {
      // A Python signal handler raised (KeyboardInterrupt) while we waited. Raise it now; the
      // child gets SIGINT, and its answer to this call is discarded when it comes.
      if (observer_ != nullptr && !closed_) {
        observer_->interruptPeer();
        staleCalls_.insert(callId);
        staleDeadline_ = Deadline::after(kInterruptGraceSeconds);
      }
      throw;
    }
    py::object result;
    py::object error;
    try {
      auto message = frame->message();
      switch (message.which()) {
        case wire::Message::RESPONSE: {
          auto response = message.getResponse();
          uint64_t answered = response.getCallId();
          if (answered != callId) {
            KJ_REQUIRE(staleCalls_.erase(answered) == 1,
                       "peer answered a call that is not in flight", answered, callId);
            // The late answer to an interrupted call: decode (so its refs are counted and later
            // released) and drop. Its spans are not read: nothing wants their bytes.
            BufferCodec::SkipContents skip(codec_.buffers());
            try {
              if (response.isError()) {
                decodeError(codec_, response.getError());
              } else {
                codec_.decode(response.getValue());
              }
            } catch (py::error_already_set& e) {
              if (!e.matches(PyExc_RecursionError)) throw;
              // Too deep here to make its values: nothing wanted them.
            }
            continue;
          }
          if (response.isError()) {
            error = decodeError(codec_, response.getError());
          } else {
            result = codec_.decode(response.getValue());
          }
          frame->finishDecoding();
          break;
        }
        case wire::Message::REQUEST:
          serveRequest(message.getRequest(), *frame);
          if (lostError_) std::rethrow_exception(lostError_);
          if (closed_) ensureUsable();
          continue;
        case wire::Message::RELEASE:
          applyRelease(message.getRelease());
          continue;
        case wire::Message::GOODBYE:
          fail(EndpointObserver::Loss::kDisconnected, "peer said goodbye during a call");
        default:
          KJ_FAIL_REQUIRE("peer sent a message that is not valid during a call",
                          uint(message.which()));
      }
    } catch (kj::Exception& e) {
      // DISCONNECTED: the child ended while its memory was being read (Buffer.address).
      fail(e.getType() == kj::Exception::Type::DISCONNECTED ? EndpointObserver::Loss::kDisconnected
                                                            : EndpointObserver::Loss::kProtocol,
           kjDescription(e));
    } catch (py::error_already_set& e) {
      // Python's recursion limit, reached while making the answer's values, is this side's
      // limit (runaway nesting), not the peer's fault: the caller gets the RecursionError and
      // the connection stays as it was (the answer is consumed).
      if (e.matches(PyExc_RecursionError)) throw;
      fail(EndpointObserver::Loss::kProtocol,
           "peer sent a value that cannot be decoded: " + describeError(e));
    }
    applyBufferedReleases();
    if (error) raiseException(error);
    return result;
  }
}

void Endpoint::applyBufferedReleases() {
  // The peer writes its releases right after a response; apply those that already arrived, so
  // the objects are let go now rather than at the next call. Anything else is kept for the next
  // receive().
  try {
    while (!pendingFrame_ && !closed_ && channel_.hasBufferedFrame()) {
      ReceivedFrame frame = arrived(channel_.receive(Deadline::never()));
      auto message = frame.message();
      if (!message.isRelease()) {
        pendingFrame_.emplace(std::move(frame));  // still undecoded: its spans stay pinned
        return;
      }
      applyRelease(message.getRelease());
    }
  } catch (kj::Exception& e) {
    fail(EndpointObserver::Loss::kProtocol, kjDescription(e));
  }
}

void Endpoint::serveRequest(wire::Request::Reader request, ReceivedFrame& frame) {
  uint64_t callId = request.getCallId();
  wire::Op op = request.getOp();
  EncodingScope scope(*this);
  capnp::MallocMessageBuilder reply;
  auto response = reply.initRoot<wire::Message>().initResponse();
  response.setCallId(callId);
  NestingGuard nesting(NestingGuard::Kind::kCallback);
  auto encodeCurrentError = [&](const py::error_already_set& error) {
    try {
      // A refused level has no traceback, and little stack left to format one.
      encodeError(codec_, error, response.initError(),
                  !nesting.refused() && wantsTraceback(error, op));
    } catch (...) {
      auto out = response.initError();
      out.initType().setBuiltin("RuntimeError");
      out.initArgs(1)[0].setStr(kj::StringPtr("the error could not be sent").asBytes());
      out.setMessage("the error could not be sent");
    }
  };
  // The result lives until its response is sent: dropping a proxy in it earlier would queue a
  // release that the write puts ahead of the response naming the same object.
  DispatchResult result;
  try {
    result = dispatcher_.dispatch(request, [&frame, &nesting] {
      frame.finishDecoding();
      nesting.check();
    });
    if (result.pickled) {
      py::tuple parts = py::reinterpret_borrow<py::tuple>(result.value);
      std::string_view bytes = py::bytes(parts[0]);
      py::list buffers = py::reinterpret_borrow<py::list>(parts[1]);
      auto list = response.initValue().initList(unsigned(1 + buffers.size()));
      list[0].setPickled(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
      for (unsigned i = 0; i < buffers.size(); ++i) {
        Py_buffer view;
        if (PyObject_GetBuffer(buffers[i].ptr(), &view, PyBUF_CONTIG_RO) != 0) {
          throw py::error_already_set();
        }
        KJ_DEFER(PyBuffer_Release(&view));
        // The PickleBuffer holds its own export of the array: it is what a span pins.
        codec_.encodeBytesLike(buffers[i], static_cast<const char*>(view.buf), size_t(view.len),
                               list[i + 1]);
      }
    } else if (result.refetch) {
      // Only a span this side sent and still holds, exactly as sent: whatever a child asks, the
      // parent reads no other memory of its own for it.
      py::tuple span = py::reinterpret_borrow<py::tuple>(result.value);
      if (!codec_.buffers().encodePinned(span[0].cast<uint64_t>(), span[1].cast<uint64_t>(),
                                         response.initValue())) {
        PyErr_SetString(PyExc_PermissionError,
                        role_ == Role::kParent
                            ? "an isolated child may not ask the parent for memory it did not "
                              "send the child"
                            : "the parent asked again for a buffer this child is not holding");
        throw py::error_already_set();
      }
    } else {
      codec_.encode(result.value, response.initValue());
    }
  } catch (py::error_already_set& error) {
    frame.finishDecoding();
    if (role_ == Role::kChild && error.matches(PyExc_SystemExit)) exitForSystemExit(error);
    encodeCurrentError(error);
  } catch (py::builtin_exception& error) {
    frame.finishDecoding();
    error.set_error();
    py::error_already_set converted;
    encodeCurrentError(converted);
  } catch (kj::Exception& error) {
    frame.finishDecoding();
    if (codec_.buffers().sawBrokenBuffer()) {
      // The request carried a buffer that does not check out (memory the peer does not have,
      // an fd that is no sealed memfd, a size over the limit), or the peer ended while its
      // memory was read: not a malformed request to answer, the end of the connection.
      fail(error.getType() == kj::Exception::Type::DISCONNECTED
               ? EndpointObserver::Loss::kDisconnected
               : EndpointObserver::Loss::kProtocol,
           kjDescription(error));
    }
    PyErr_SetString(PyExc_RuntimeError,
                    ("malformed request: " + kjDescription(error)).c_str());
    py::error_already_set converted;
    encodeCurrentError(converted);
  } catch (TerminationError&) {
    throw;  // the connection is gone: nothing to answer
  } catch (ClientStateError&) {
    throw;
  } catch (std::exception& error) {
    // Anything else a handler threw (pybind11's casts, the standard library's): still an answer,
    // so that the peer's call ends and both ends stay in step.
    frame.finishDecoding();
    PyErr_SetString(PyExc_RuntimeError, (std::string("the request failed: ") + error.what()).c_str());
    py::error_already_set converted;
    encodeCurrentError(converted);
  }
  // The serve loop of a child serves without the I/O lock (Endpoint::serve): another thread may
  // be sending or waiting for an answer of its own.
  IoLock lock(*this);
  sendMessage(reply, Deadline::never(), &scope);
}

void Endpoint::applyRelease(wire::Release::Reader release) {
  auto ids = release.getIds();
  auto counts = release.getCounts();
  KJ_REQUIRE(ids.size() == counts.size(), "release lists differ in length");
  for (unsigned i = 0; i < ids.size(); ++i) {
    if (exports_.release(ids[i], counts[i])) dispatcher_.forget(ids[i]);
  }
}

void Endpoint::exitForSystemExit(const py::error_already_set& error) {
  // What the interpreter does with an uncaught SystemExit, minus the interpreter's shutdown
  // (the parent's atexit handlers must not run here): None is 0, an int is itself, anything
  // else is printed to stderr and is 1.
  int status = 0;
  PyObject* code = PyObject_GetAttrString(error.value().ptr(), "code");
  if (code == nullptr) {
    PyErr_Clear();
  } else if (code == Py_None) {
    status = 0;
  } else if (PyLong_Check(code)) {
    status = int(PyLong_AsLong(code));
    if (PyErr_Occurred()) {
      PyErr_Clear();
      status = 1;
    }
  } else {
    status = 1;
    PyObject* text = PyObject_Str(code);
    const char* utf8 = text != nullptr ? PyUnicode_AsUTF8(text) : nullptr;
    if (utf8 != nullptr) {
      // Straight to fd 2, so neither a broken sys.stderr nor a failed print changes the status.
      std::string line = std::string(utf8) + "\n";
      for (size_t done = 0; done < line.size();) {
        ssize_t n = ::write(2, line.data() + done, line.size() - done);
        if (n <= 0) break;
        done += size_t(n);
      }
    }
    PyErr_Clear();
    Py_XDECREF(text);
  }
  Py_XDECREF(code);
  flushPythonStdio();
  ::_exit(status & 0xff);
}

void Endpoint::serve() {
  NestingGuard::reset();  // forked from a thread that may have been in the middle of a callback
  bool readsParent = false;
  {
    // The parent's setup comes first: it says how frames travel from here on, and whether (and
    // where) we may read the parent's memory.
    ReceivedFrame frame = receive(Deadline::never());
    auto message = frame.message();
    KJ_REQUIRE(message.isSetup(), "the parent's first message is not setup");
    auto setup = message.getSetup();
    if (setup.getSharedRings()) {
      KJ_REQUIRE(incomingFds_.size() == 1, "setup names shared rings but carries no memfd");
      channel_.useRings(SharedRings::attach(std::move(incomingFds_[0]), RingSide::kChild));
    }
    incomingFds_.clear();
    readsParent = probeParent(pid_t(setup.getParentPid()), setup.getProbeAddress(),
                              setup.getProbeToken());
  }
  {
    capnp::MallocMessageBuilder message;
    auto hello = message.initRoot<wire::Message>().initHello();
    hello.setPid(::getpid());
    hello.setPythonVersion(Py_GetVersion());
    hello.setReadsParentMemory(readsParent);
    sendMessage(message, Deadline::never());
  }
  for (;;) {
    // A SIGINT meant for a call that has already finished must not hit the next one.
    if (PyErr_CheckSignals() != 0) PyErr_Clear();
    std::optional<ReceivedFrame> frame;
    {
      // Another thread of this child may have sent a request of its own (a callback from a
      // thread the module started) and be reading the frames until its answer comes: this loop
      // reads only while it holds the I/O lock, so the two never read the same connection at
      // once. It lets go before serving, so a request it serves may wait for such a thread.
      IoLock lock(*this);
      frame.emplace(receive(Deadline::never()));
    }
    auto message = frame->message();
    switch (message.which()) {
      case wire::Message::REQUEST:
        serveRequest(message.getRequest(), *frame);
        break;
      case wire::Message::RELEASE:
        applyRelease(message.getRelease());
        break;
      case wire::Message::GOODBYE:
        close("the parent said goodbye");
        return;
      default:
        KJ_FAIL_REQUIRE("parent sent a message that is not valid between calls");
    }
  }
}

void Endpoint::awaitHello(Deadline deadline, bool sharedRings, bool parentSpans) {
  IoLock lock(*this);
  {
    std::unique_ptr<SharedRings> rings;
    if (sharedRings) {
      try {
        rings = SharedRings::create();
      } catch (kj::Exception&) {
        // No memfd or no shared mapping here (a seccomp policy, an old kernel): the socket alone
        // carries the frames, which is slower but the same protocol.
      }
    }
    capnp::MallocMessageBuilder message;
    auto setup = message.initRoot<wire::Message>().initSetup();
    setup.setSharedRings(rings != nullptr);
    if (parentSpans) {
      // Where the child can find a token only this connection knows (Setup.probeAddress): it
      // reads it to learn whether it may read us, and that the pid is ours.
      if (::getrandom(&probeToken_, sizeof(probeToken_), GRND_NONBLOCK) !=
          ssize_t(sizeof(probeToken_))) {
        // No entropy yet (early boot): unique enough to tell this process from another.
        probeToken_ = (uint64_t(::getpid()) << 32) ^ uint64_t(reinterpret_cast<uintptr_t>(this)) ^
                      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
      }
      setup.setParentPid(int32_t(::getpid()));
      setup.setProbeAddress(uint64_t(reinterpret_cast<uintptr_t>(&probeToken_)));
      setup.setProbeToken(probeToken_);
    }
    EncodingScope scope(*this);
    if (rings) scope.fds().push_back(rings->takeFd());
    sendMessage(message, deadline, &scope);
    if (rings) channel_.useRings(std::move(rings));
  }
  ReceivedFrame frame = receive(deadline);
  try {
    auto message = frame.message();
    KJ_REQUIRE(message.isHello(), "child's first message is not hello");
    // Spans of our memory only to a child that was offered it and says it read the probe. (A
    // child that lies hurts only itself: it cannot read them.)
    if (parentSpans && message.getHello().getReadsParentMemory()) {
      codec_.buffers().setSendSpans(true);
    }
  } catch (kj::Exception& e) {
    fail(EndpointObserver::Loss::kProtocol, kjDescription(e));
  }
}

void Endpoint::sendGoodbye() {
  if (closed_ || currentPid() != ownerPid_) return;
  try {
    IoLock lock(*this);
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<wire::Message>();
    root.setDecodedFrames(uint32_t(decodedFrames()));
    root.setGoodbye();
    ++framesOut_;
    OutgoingFrame frame(message);
    countFrame(sentFrames_, wire::Message::GOODBYE);
    channel_.send(frame.pieces(), Deadline::after(1.0));
  } catch (...) {
    // Best effort: the caller kills the child anyway.
  }
}

void Endpoint::exportRef(py::handle object, wire::Ref::Builder ref) {
  uint64_t id = exports_.exportObject(object);
  ref.setId(id);
  PyTypeObject* type = Py_TYPE(object.ptr());
  uint64_t typeId = exports_.pin(reinterpret_cast<PyObject*>(type));
  ref.setTypeId(typeId);
  if (describedTypes_.count(typeId) == 0) {
    describeType(type, ref.initTypeInfo());
    describedTypes_.insert(typeId);
  }
  if (PyType_Check(object.ptr()) &&
      PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(object.ptr()),
                       reinterpret_cast<PyTypeObject*>(PyExc_BaseException))) {
    describeClass(object, ref.initClassInfo());
  }
}

void Endpoint::describeType(PyTypeObject* type, wire::TypeInfo::Builder info) {
  py::handle typeObject(reinterpret_cast<PyObject*>(type));
  info.setName(attrString(typeObject, "__qualname__", type->tp_name));
  info.setModule(attrString(typeObject, "__module__", "builtins"));
  std::vector<const char*> present;
  std::vector<const char*> blocked;
  size_t generatorMethods = 0;
  for (const SpecialMethod& special : kSpecialMethods) {
    py::object name = py::reinterpret_steal<py::object>(PyUnicode_InternFromString(special.name));
    PyObject* found = lookupInMro(type, name.ptr());
    if (found == Py_None) {
      blocked.push_back(special.name);
    } else if (found != nullptr) {
      present.push_back(special.name);
      if (isGeneratorMethod(special.name)) ++generatorMethods;
    }
  }
  if (generatorMethods != 3) {
    // send/throw/close only as a set (generators, coroutines): for any other type they are
    // ordinary attributes, read from the object like any other.
    present.erase(std::remove_if(present.begin(), present.end(),
                                 [](const char* name) { return isGeneratorMethod(name); }),
                  present.end());
  }
  auto specials = info.initSpecials(unsigned(present.size()));
  for (unsigned i = 0; i < present.size(); ++i) specials.set(i, present[i]);
  auto blockedOut = info.initBlocked(unsigned(blocked.size()));
  for (unsigned i = 0; i < blocked.size(); ++i) blockedOut.set(i, blocked[i]);
  uint32_t flags = 0;
  if (PyType_IsSubtype(type, &PyType_Type)) flags |= kTypeIsMetaclass;
  if (type->tp_hash == PyObject_HashNotImplemented) flags |= kTypeUnhashable;
  if (PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(PyExc_BaseException))) {
    flags |= kTypeIsException;
  }
  if (isBatchIterator(type)) flags |= kTypeBatchIterator;
  info.setFlags(flags);
}

void Endpoint::describeClass(py::handle cls, wire::ClassInfo::Builder info) {
  PyTypeObject* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  info.setName(attrString(cls, "__name__", type->tp_name));
  info.setQualname(attrString(cls, "__qualname__", type->tp_name));
  info.setModule(attrString(cls, "__module__", ""));
  info.setDoc(attrString(cls, "__doc__", ""));
  py::tuple bases = py::reinterpret_borrow<py::tuple>(type->tp_bases);
  auto out = info.initBases(unsigned(bases.size()));
  for (unsigned i = 0; i < bases.size(); ++i) codec_.encode(bases[i], out[i]);
}

void Endpoint::discardRef(wire::Ref::Reader ref) {
  uint64_t id = ref.getId();
  KJ_REQUIRE(id != 0, "peer sent a ref with id 0");
  if (ref.hasClassInfo()) {
    (void)importRef(ref);  // a class mirrored once, kept: nothing to release
    return;
  }
  learnType(ref);
  KJ_REQUIRE(proxyTypes_.count(ref.getTypeId()) != 0,
             "peer sent a ref of a type it never described", ref.getTypeId());
  imports_.releaseUnused(id);
}

void Endpoint::learnType(wire::Ref::Reader ref) {
  uint64_t typeId = ref.getTypeId();
  if (ref.hasTypeInfo() && proxyTypes_.count(typeId) == 0) {
    auto info = ref.getTypeInfo();
    std::vector<int> specials;
    for (auto name : info.getSpecials()) {
      int index = findSpecialMethod(std::string_view(name.cStr(), name.size()));
      if (index >= 0) specials.push_back(index);
    }
    std::vector<int> blocked;
    for (auto name : info.getBlocked()) {
      int index = findSpecialMethod(std::string_view(name.cStr(), name.size()));
      if (index >= 0) blocked.push_back(index);
    }
    py::object proxyType = makeProxyType(readerText(info.getName()), readerText(info.getModule()),
                                         specials, blocked, info.getFlags());
    proxyTypeIds_.emplace(proxyType.ptr(), typeId);
    proxyTypes_.emplace(typeId, std::move(proxyType));
  }
}

py::object Endpoint::importRef(wire::Ref::Reader ref) {
  uint64_t id = ref.getId();
  KJ_REQUIRE(id != 0, "peer sent a ref with id 0");
  uint64_t typeId = ref.getTypeId();
  learnType(ref);
  if (ref.hasClassInfo()) {
    auto found = mirrorClasses_.find(id);
    if (found != mirrorClasses_.end()) return found->second;
    return makeMirrorClass(id, ref.getClassInfo());
  }
  if (PyObject* existing = imports_.findAndCount(id)) {
    return py::reinterpret_steal<py::object>(existing);
  }
  auto type = proxyTypes_.find(typeId);
  KJ_REQUIRE(type != proxyTypes_.end(), "peer sent a ref of a type it never described", typeId);
  py::object proxy = newProxy(type->second, shared_from_this(), id);
  imports_.add(id, proxy.ptr());
  return proxy;
}

py::object Endpoint::makeMirrorClass(uint64_t id, wire::ClassInfo::Reader info) {
  std::vector<py::object> bases;
  for (auto base : info.getBases()) {
    py::object decoded = codec_.decode(base);
    if (PyType_Check(decoded.ptr()) &&
        PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(decoded.ptr()),
                         reinterpret_cast<PyTypeObject*>(PyExc_BaseException))) {
      bases.push_back(decoded);
    }
  }
  if (bases.empty()) bases.push_back(py::reinterpret_borrow<py::object>(PyExc_Exception));
  py::dict ns;
  ns["__module__"] = py::str(readerText(info.getModule()));
  ns["__qualname__"] = py::str(readerText(info.getQualname()));
  std::string doc = readerText(info.getDoc());
  ns["__doc__"] = doc.empty() ? py::object(py::none()) : py::object(py::str(doc));
  try {
    // Attributes the local class does not have are read from the remote exception.
    py::module_ errors = py::module_::import("process_isolation.errors");
    ns["__getattr__"] = errors.attr("_remote_exception_getattr");
    ns["__str__"] = errors.attr("_remote_exception_str");
  } catch (py::error_already_set&) {
    // Outside the package (the C++ tests): mirrors without attribute forwarding.
  }
  py::str name(readerText(info.getName()));
  py::handle typeType(reinterpret_cast<PyObject*>(&PyType_Type));
  py::object cls;
  // Builtin bases can clash in layout (OSError with KeyError): fall back to fewer bases.
  std::vector<std::vector<py::object>> attempts{bases};
  for (auto& base : bases) attempts.push_back({base});
  attempts.push_back({py::reinterpret_borrow<py::object>(PyExc_Exception)});
  for (auto& attempt : attempts) {
    py::tuple tuple(attempt.size());
    for (size_t i = 0; i < attempt.size(); ++i) tuple[i] = attempt[i];
    PyObject* made = PyObject_CallFunctionObjArgs(typeType.ptr(), name.ptr(), tuple.ptr(),
                                                  ns.ptr(), nullptr);
    if (made != nullptr) {
      cls = py::reinterpret_steal<py::object>(made);
      break;
    }
    PyErr_Clear();
  }
  KJ_REQUIRE(bool(cls), "could not mirror the peer's exception class");
  mirrorClasses_.emplace(id, cls);
  mirrorIds_.emplace(cls.ptr(), id);
  return cls;
}

py::object Endpoint::resolveBack(uint64_t id, uint32_t unread) {
  py::object object = py::reinterpret_borrow<py::object>(exports_.get(id));
  if (unread == 0) return object;
  // The peer had fetched items of this iterator it never used: put them back in front.
  py::list lastBatch = dispatcher_.lastBatch(id);
  KJ_REQUIRE(unread <= lastBatch.size(), "peer claims more unread items than it was sent", unread);
  py::list pending = lastBatch[py::slice(Py_ssize_t(lastBatch.size() - unread),
                                         Py_ssize_t(lastBatch.size()), 1)];
  return py::module_::import("itertools").attr("chain")(pending, object);
}

uint32_t Endpoint::unreadOf(py::handle object) {
  return isProxy(object) && proxyEndpoint(object) == this ? takeProxyUnread(object) : 0;
}

bool Endpoint::peerIdOf(py::handle object, uint64_t& id) {
  if (isProxy(object) && proxyEndpoint(object) == this) {
    id = proxyId(object);
    return true;
  }
  auto proxyType = proxyTypeIds_.find(object.ptr());
  if (proxyType != proxyTypeIds_.end()) {
    // type(proxy) goes home as the remote type it stands for.
    id = proxyType->second;
    return true;
  }
  auto found = mirrorIds_.find(object.ptr());
  if (found != mirrorIds_.end()) {
    id = found->second;
    return true;
  }
  if (PyExceptionInstance_Check(object.ptr()) &&
      mirrorIds_.count(reinterpret_cast<PyObject*>(Py_TYPE(object.ptr()))) != 0) {
    // An exception raised by the peer, going home: send the original, not a copy.
    PyObject* dict = PyObject_GenericGetDict(object.ptr(), nullptr);
    if (dict == nullptr) {
      PyErr_Clear();
      return false;
    }
    PyObject* remote = PyDict_GetItemString(dict, "_pi_remote");  // borrowed
    bool ours = remote != nullptr && isProxy(remote) && proxyEndpoint(remote) == this;
    if (ours) id = proxyId(remote);
    Py_DECREF(dict);
    return ours;
  }
  return false;
}

}  // namespace pi
