// One end of a connection, the same code on both sides: calls, nested dispatch, releases.
#pragma once

#include "proxy/dispatcher.h"
#include "proxy/export_table.h"
#include "proxy/import_table.h"
#include "proxy/value_codec.h"
#include "runtime/channel.h"
#include "runtime/deadline.h"

#include <kj/exception.h>
#include <pybind11/pybind11.h>

#include <array>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace pi {

namespace py = pybind11;

// Told when the connection fails, so the owner of the child can reap it and say how it ended.
class EndpointObserver {
 public:
  virtual ~EndpointObserver() = default;
  enum class Loss {
    kDisconnected,  // the peer closed the socket or reset it
    kProtocol,      // the peer sent something that breaks the protocol
    kTimeout,       // a call's deadline passed
    kInterrupted,   // the user interrupted a call and the peer did not stop in time
  };
  // The connection failed. Called once, with the GIL held. Throws the exception the caller should
  // see (a TerminationError).
  [[noreturn]] virtual void connectionLost(Loss loss, const std::string& detail) = 0;
  // Asks the peer to interrupt what it is doing (the parent's user pressed Ctrl-C).
  virtual void interruptPeer() = 0;
  // How the peer ended, as the subject of a sentence ("the isolated child (pid 12) has ended
  // (killed by SIGSEGV ...)"), for errors about later use and the repr of dead proxies.
  virtual std::string endedDescription() = 0;
};

// Positional arguments and keyword names laid out as in the vectorcall protocol: `args` holds
// `nargs` positional values followed by one value per name in the tuple `kwnames`.
struct CallArgs {
  PyObject* const* args = nullptr;
  size_t nargs = 0;
  PyObject* kwnames = nullptr;
};

// A symmetric endpoint. Owns the channel, the export table (our objects the peer holds) and the
// import table (the peer's objects we hold proxies for). Shared by the proxies it makes.
//
// Threads: any thread holding the GIL may call request(). Requests from different threads are
// serialized on one I/O lock (a thread waiting for it releases the GIL). A request's nested
// callbacks are served on the thread that made it. All methods require the GIL.
// Fork: an endpoint belongs to the process that made it; in another process every use raises
// ClientStateError and nothing is sent.
class Endpoint : public CodecPeer, public std::enable_shared_from_this<Endpoint> {
 public:
  Endpoint(UniqueFd socket, Role role);
  ~Endpoint() override;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Must outlive the endpoint or be reset to null first.
  void setObserver(EndpointObserver* observer) { observer_ = observer; }

  // Parent side: the child's pid (an unreaped child of this process, or of its fork server),
  // whose memory this endpoint then reads for the spans the child sends (Buffer.address).
  void setPeerPid(pid_t pid);

  // Sends a request and waits for its answer, serving the peer's requests meanwhile. Returns the
  // result; raises the peer's exception as a local one (py::error_already_set); throws
  // TerminationError when the connection fails, ClientStateError when it had already failed.
  // `deadline` bounds the whole wait (never() for none).
  py::object request(wire::Op op, uint64_t target, std::string_view name, CallArgs args,
                     Deadline deadline);

  // Child side: reads the parent's setup (and, when it offers the parent's memory, probes that
  // this process may read it), sends hello, then serves until the parent says goodbye or goes
  // away.
  void serve();
  // Parent side: sends the setup (with the shared rings when `sharedRings` is true and the
  // kernel gives us a memfd; see Setup in the schema), then waits for the child's hello. Throws
  // like request().
  // `parentSpans`: offer the child this process's memory (Setup.parentPid), so that large bytes
  // sent to it go as spans it copies itself, once it has said it can (Hello.readsParentMemory).
  // Offering it shows the child where things are in this process (an ASLR leak), and a child
  // that can read it can read all of it (docs/protocol.md): a context that confines an untrusted
  // child must pass false.
  void awaitHello(Deadline deadline, bool sharedRings = true, bool parentSpans = true);
  // True when frames travel through shared memory rather than the socket.
  bool usesSharedRings() const { return channel_.usesRings(); }
  // Whether large values this side sends go as spans of its own memory (Buffer.address), how
  // many such spans it holds pinned for the peer right now, and how many values it has sent out
  // of band each way. For tests and diagnostics.
  bool sendsSpans() { return codec_.buffers().sendsSpans(); }
  size_t pinnedSpans() { return codec_.buffers().pinCount(); }
  uint64_t spansSent() { return codec_.buffers().spansSent(); }
  uint64_t memfdsSent() { return codec_.buffers().memfdsSent(); }
  // Parent side: asks the child to exit. Best effort; never throws.
  void sendGoodbye();

  // Shuts the connection down without an error (the owner is terminating the child). Later use
  // raises ClientStateError saying `description` (what happened to the peer, as the subject of
  // a sentence: "the isolated child (pid 12) was terminated").
  void close(const std::string& description);
  bool closed() const { return closed_; }

  // The owner found the peer gone between calls: the next use throws `error` (once), later uses
  // ClientStateError with `description` (as for close()).
  void markLost(std::exception_ptr error, const std::string& description);

  // The call that was in flight when the connection was lost, as the proxy that made it
  // describes it ("buggy.dragons_here()"); the first one noted is kept, and later errors name it.
  void noteLostDuring(const std::string& call);
  // After the connection closed: how the peer ended, and during which call ("the isolated child
  // (pid 12) has ended (killed by SIGSEGV ...) during buggy.dragons_here()"). For the repr of a
  // dead proxy and ClientStateError.
  std::string endedSummary() const;
  // True when this process made the endpoint (a forked copy may not use it).
  bool ownedHere() const;

  // Parent side: refuse the child private attributes of parent objects and looks inside parent
  // modules, frames, tracebacks and code (Dispatcher::setDenyPrivate). For a confined child; set
  // before the first request.
  void setDenyPrivate(bool deny) { dispatcher_.setDenyPrivate(deny); }
  bool deniesPrivate() const { return dispatcher_.deniesPrivate(); }

  // The default deadline for requests, in seconds (< 0: none).
  double defaultTimeout() const { return defaultTimeout_; }
  void setDefaultTimeout(double seconds) { defaultTimeout_ = seconds; }

  // Called by a proxy's deallocator.
  void proxyDropped(uint64_t id, PyObject* proxy);

  Channel& channel() { return channel_; }

  // Called with a module proxy when that proxy is used after the peer ended; returns True when
  // it has re-pointed the proxy to a new child (restart='auto'). Null for none.
  void setRestartHook(py::object hook) { restartHook_ = std::move(hook); }
  const py::object& restartHook() const { return restartHook_; }

  // What every proxy made from now on keeps alive: the parent's IsolationContext, so that the
  // child (and what supervises it) lives while a proxy of it does, even when the user dropped
  // the context object. The endpoint itself holds only a weak reference (the context owns the
  // connection that owns this endpoint); each proxy holds a strong one that the garbage
  // collector sees, so a cycle through a proxy and its context is collected. `owner` must
  // support weak references; None for none. Requires the GIL.
  void setProxyOwner(py::handle owner);
  // The owner as a new reference, or null when there is none (or it is gone).
  PyObject* proxyOwner() const;

  // Makes `fresh`'s import-table entry belong to `old` (which takes over fresh's id): used when
  // a module proxy of an ended child is re-pointed to the module in a new child.
  void adoptImport(uint64_t id, PyObject* fresh, PyObject* old);

  // Frames sent and received so far, by the kind of Message they carry (indexed by
  // wire::Message::Which). For tests and diagnostics: how many round trips something costs.
  static constexpr size_t kFrameKinds = 8;
  using FrameCounts = std::array<uint64_t, kFrameKinds>;
  const FrameCounts& sentFrames() const { return sentFrames_; }
  const FrameCounts& receivedFrames() const { return receivedFrames_; }

  size_t exportCount() const { return exports_.size(); }
  size_t importCount() const { return imports_.size(); }
  Role role() const { return role_; }

  // Raises ClientStateError unless the endpoint can carry a new request from this process.
  void ensureUsable();

  // CodecPeer
  void exportRef(py::handle object, wire::Ref::Builder ref) override;
  py::object importRef(wire::Ref::Reader ref) override;
  void discardRef(wire::Ref::Reader ref) override;
  py::object resolveBack(uint64_t id, uint32_t unread) override;
  bool peerIdOf(py::handle object, uint64_t& id) override;
  uint32_t unreadOf(py::handle object) override;
  int attachFd(UniqueFd fd) override;
  UniqueFd takeFd(uint32_t index) override;
  PeerMemory::Access readPeerMemory(uint64_t address, uint64_t size, char* into) override;
  py::object refetchSpan(uint64_t address, uint64_t size) override;

 private:
  class IoLock;

  // Builds and caches the proxy type a ref describes (its typeInfo), the first time.
  void learnType(wire::Ref::Reader ref);

  // One frame from the peer, with its number (the peer's frames count from 1, in the order they
  // arrive). Until finishDecoding() or its end, the frame counts as not yet decoded: the frames
  // this side sends meanwhile leave it out of Message.decodedFrames, so the peer keeps the spans
  // it carries pinned. Call finishDecoding() as soon as the frame's values are made (before a
  // request's op runs: a callback that op makes lets the peer go of them).
  class ReceivedFrame {
   public:
    ReceivedFrame(Endpoint& endpoint, IncomingFrame frame, uint64_t number)
        : endpoint_(&endpoint), frame_(std::move(frame)), number_(number) {}
    ReceivedFrame(ReceivedFrame&& other) noexcept
        : endpoint_(other.endpoint_), frame_(std::move(other.frame_)), number_(other.number_) {
      other.number_ = 0;
    }
    ReceivedFrame& operator=(ReceivedFrame&&) = delete;
    ~ReceivedFrame() { finishDecoding(); }

    wire::Message::Reader message() { return frame_.getRoot<wire::Message>(); }
    void finishDecoding();

   private:
    Endpoint* endpoint_;
    IncomingFrame frame_;
    uint64_t number_;  // 0 once decoded
  };

  // The fds and the pins of one message being encoded (innermost last). While alive, attachFd()
  // adds to its fds, and the spans encoded are pinned for the frame sendMessage() sends with it;
  // pins of a message that was never sent are let go when it ends.
  class EncodingScope;

  py::object awaitResponse(uint64_t callId, Deadline deadline);
  void serveRequest(wire::Request::Reader request, ReceivedFrame& frame);
  void applyRelease(wire::Release::Reader release);
  void applyBufferedReleases();
  // Sends `message` (with the fds and pins of `scope`, when given) and any pending releases.
  void sendMessage(capnp::MessageBuilder& message, Deadline deadline,
                   EncodingScope* scope = nullptr);
  ReceivedFrame receive(Deadline deadline);
  // Numbers a frame just taken from the channel, takes its fds, and lets go of the spans the
  // peer says it has decoded (Message.decodedFrames). Throws kj FAILED for a parent's child that
  // claims more frames than were sent to it.
  ReceivedFrame arrived(IncomingFrame frame);
  // Message.decodedFrames for a frame sent now: the peer's frames up to the first one still
  // being decoded (or read ahead).
  uint64_t decodedFrames() const;
  // Child side: whether the parent's memory can be read at `address` (Setup.probeAddress) and
  // holds `token`; when it can, spans from the parent are read from `pid` from now on.
  bool probeParent(pid_t pid, uint64_t address, uint64_t token);
  [[noreturn]] void fail(EndpointObserver::Loss loss, const std::string& detail);
  [[noreturn]] void exitForSystemExit(const py::error_already_set& error);
  py::object makeMirrorClass(uint64_t id, wire::ClassInfo::Reader info);
  void describeType(PyTypeObject* type, wire::TypeInfo::Builder info);
  void describeClass(py::handle cls, wire::ClassInfo::Builder info);

  Role role_;
  pid_t ownerPid_;
  Channel channel_;
  ExportTable exports_;
  ImportTable imports_;
  ValueCodec codec_;
  Dispatcher dispatcher_;
  EndpointObserver* observer_ = nullptr;

  std::recursive_mutex ioMutex_;
  uint64_t nextCallId_ = 1;
  bool closed_ = false;
  std::exception_ptr lostError_;
  bool lostReported_ = false;
  std::string endedDescription_;
  std::string lostDuring_;  // see noteLostDuring
  // Calls the user interrupted whose answers are still owed, and when the child must have sent
  // them by.
  std::unordered_set<uint64_t> staleCalls_;
  // A frame read ahead (while looking for releases) that the next receive() returns.
  std::optional<ReceivedFrame> pendingFrame_;
  // The fds of the message being encoded (innermost encoding last), and of the one decoded.
  std::vector<std::vector<UniqueFd>*> outgoingFds_;
  std::vector<UniqueFd> incomingFds_;
  // Frames sent and received so far, and the numbers of received frames not yet decoded (a
  // handful at most: nested decodes, a frame read ahead). See Message.decodedFrames.
  uint64_t framesOut_ = 0;
  uint64_t framesIn_ = 0;
  std::vector<uint64_t> undecoded_;
  // The peer's memory, for the spans it sends: in the parent the child's (always), in the child
  // the parent's (when the parent offered it and the probe read it). Unusable otherwise.
  PeerMemory peerMemory_;
  // Parent side: 8 bytes the child's probe must find at their address (Setup.probeToken). Lives
  // as long as the endpoint, at a fixed address.
  uint64_t probeToken_ = 0;
  // The deadline of the call being waited for, for requests made while decoding its answer
  // (fetchBuffer).
  Deadline activeDeadline_;
  Deadline staleDeadline_;
  double defaultTimeout_ = -1;
  py::object restartHook_;
  py::object proxyOwner_;  // a weakref.ref, or null

  // Types whose TypeInfo the peer has been sent (ids in our export table).
  std::unordered_set<uint64_t> describedTypes_;
  // Proxy types for the peer's type ids, and back.
  std::unordered_map<uint64_t, py::object> proxyTypes_;
  std::unordered_map<PyObject*, uint64_t> proxyTypeIds_;
  // Local classes mirroring the peer's exception classes, both ways.
  std::unordered_map<uint64_t, py::object> mirrorClasses_;
  std::unordered_map<PyObject*, uint64_t> mirrorIds_;
  FrameCounts sentFrames_{};
  FrameCounts receivedFrames_{};
  void countFrame(FrameCounts& counts, wire::Message::Which which) {
    counts[size_t(which) < kFrameKinds ? size_t(which) : kFrameKinds - 1] += 1;
  }
  // Reused zeroed first segment for outgoing messages (see capnp::MallocMessageBuilder).
  kj::Array<capnp::word> scratch_;
  bool scratchInUse_ = false;
};

}  // namespace pi
