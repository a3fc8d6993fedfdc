// Python value <-> capnp Value: by value for exact builtin kinds and standard value types (see
// StandardValues), by reference for the rest.
#pragma once

#include "protocol/isolation.capnp.h"
#include "proxy/buffer_codec.h"
#include "proxy/standard_values.h"
#include "runtime/peer_memory.h"
#include "runtime/unique_fd.h"

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <unordered_map>

namespace pi {

namespace py = pybind11;

// What the codec needs from the connection it encodes for. The endpoint implements it.
class CodecPeer {
 public:
  virtual ~CodecPeer() = default;
  // Exports a local object that crosses by reference and describes it in `ref`.
  virtual void exportRef(py::handle object, wire::Ref::Builder ref) = 0;
  // The local stand-in (proxy, or mirrored exception class) for a ref the peer sent.
  virtual py::object importRef(wire::Ref::Reader ref) = 0;
  // Counts a ref the peer sent that this side does not use (a standard value's `original`, when
  // it rebuilt the value itself) and releases it with the next message, as importRef() and
  // dropping the proxy would, without making a proxy. Throws as importRef() does.
  virtual void discardRef(wire::Ref::Reader ref) { (void)importRef(ref); }
  // The local object a `back` value names. Throws (kj FAILED) for an id that is not exported.
  // `unread`: items of a batch-fetched iterator the peer did not use (see Value.unread).
  virtual py::object resolveBack(uint64_t id, uint32_t unread) = 0;
  // When `object` stands for a peer object on this connection, stores its peer id in `id`
  // (and in `unread`, for a batch-fetched iterator, how many fetched items it has not used).
  virtual bool peerIdOf(py::handle object, uint64_t& id) = 0;
  virtual uint32_t unreadOf(py::handle object) { (void)object; return 0; }
  // Sends `fd` with the message being encoded; returns its index in the message's fds. May
  // return -1 when this connection cannot carry fds (the codec then sends the bytes inline).
  virtual int attachFd(UniqueFd fd) = 0;
  // The fd at `index` of the message being decoded, taken (each index once). Throws (kj FAILED)
  // for an index the message does not have.
  virtual UniqueFd takeFd(uint32_t index) = 0;

  // Reads the peer's memory for a Buffer.address the peer sent (see PeerMemory): with `into`
  // null, probes that [address, address + size) looks readable; otherwise copies it into `into`.
  // Called without the GIL when `into` is set. Throws as PeerMemory does. The default throws
  // (kj FAILED): this side does not read its peer's memory.
  virtual PeerMemory::Access readPeerMemory(uint64_t address, uint64_t size, char* into);
  // Asks the peer for the payload of a Buffer.address in the message being decoded again, after
  // the OS refused the read (Op fetchBuffer); returns the value the peer answers with. Throws
  // like a request does. The default throws (kj FAILED).
  virtual py::object refetchSpan(uint64_t address, uint64_t size);
};

// The classes and singletons of the `builtins` module, which cross by name. Built from the
// running interpreter; a name the peer sends that is not in the table is refused.
class BuiltinTable {
 public:
  BuiltinTable();
  // The name for `object`, or null when it is not a builtin class or singleton.
  const std::string* nameOf(py::handle object) const;
  // The object for `name`. Throws (kj FAILED) for an unknown name.
  py::handle lookup(const std::string& name) const;

 private:
  struct Entry {
    PyObject* object;  // borrowed when `owner` is empty (static types, singletons)
    py::object owner;  // the reference that keeps a heap type alive, or empty
  };
  std::unordered_map<PyObject*, std::string> names_;
  std::unordered_map<std::string, Entry> objects_;
};

// An instance of exception class `cls` with `args`, even when the class's constructor wants
// other arguments (then made without calling __init__). Throws py::error_already_set.
py::object makeException(py::handle cls, py::handle args);

// Encodes and decodes values for one connection. Requires the GIL.
class ValueCodec {
 public:
  explicit ValueCodec(CodecPeer& peer) : peer_(peer), buffers_(peer), standard_(peer) {}

  // Writes `object` into `out`. Throws ValueError (py::value_error) when a by-value object nests
  // deeper than kMaxValueDepth (a container that contains itself, for one).
  void encode(py::handle object, wire::Value::Builder out, int depth = 0);

  // Makes the Python object `in` describes. Throws (kj FAILED or a Python error) for a value a
  // well-behaved peer would not send: bad UTF-8, an unknown builtin name, an unhashable dict key,
  // an unknown back id.
  py::object decode(wire::Value::Reader in);

  // The out-of-band bytes (Buffer.size) `message` carries, over all its values, for
  // BufferCodec::admitFrame. Reads only the message's structure, allocates nothing. The bytes
  // are more than kMaxMessageBufferBytes as soon as it knows the total is over that (any one
  // buffer over kMaxBufferBytes, too). Throws nothing: a message too malformed to walk to its
  // end (too deep, say) is not `complete`.
  static OutOfBand outOfBandBytes(wire::Message::Reader message);

  // Writes `size` bytes at `data` as a bytearray value: out of band when large (see
  // BufferCodec), inline otherwise. `owner` holds the memory through a buffer export (a
  // PickleBuffer), so it stays in place and keeps its size while `owner` lives; it may be pinned.
  void encodeBytesLike(py::handle owner, const char* data, size_t size, wire::Value::Builder out);

  const BuiltinTable& builtins() const { return builtins_; }
  BufferCodec& buffers() { return buffers_; }

 private:
  static void countOutOfBand(wire::Message::Reader message, uint64_t& total);
  void encodeBigInt(py::handle object, wire::Value::Builder out);
  py::object decodeBigInt(capnp::Data::Reader data);

  CodecPeer& peer_;
  BuiltinTable builtins_;
  BufferCodec buffers_;
  StandardValues standard_;
};

}  // namespace pi
