// Value.buffer: large bytes-like values out of band (sealed memfds, or spans of sender memory).
#pragma once

#include "protocol/isolation.capnp.h"

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pi {

namespace py = pybind11;

class CodecPeer;

// What the buffers of one message would make the receiver allocate (ValueCodec::outOfBandBytes).
struct OutOfBand {
  uint64_t bytes = 0;     // the sum of their sizes
  bool complete = true;   // false: the message could not be walked to its end
};

// Sends and receives the payload of large bytes-like values beside the frame rather than in it.
// Two ways (see Buffer in protocol/isolation.capnp):
//   - a memfd the sender writes once and seals; the receiver maps it and copies it once. Either
//     direction.
//   - a span: the value stays where it is in the sender's memory and the receiver copies it with
//     one process_vm_readv straight into the new object. The child sends spans to the parent
//     always; the parent sends them to a child that said it can read the parent's memory
//     (Hello.readsParentMemory). The sender pins each span's owner until the receiver says it has
//     decoded the frame the span rode in (Message.decodedFrames: the endpoint seals each pin with
//     its frame's number, sealPins(), and lets go with releaseDecoded()). If the receiver cannot
//     read a span, it asks for the bytes again (Op fetchBuffer, encodePinned()) and gets a memfd,
//     and the sender sends no more spans on this connection.
//
// One per ValueCodec. Requires the GIL, except where a method says it releases it.
class BufferCodec {
 public:
  // How the bytes to send are held, which decides how they may travel.
  enum class Source {
    kImmutable,  // a bytes object: never changes while referenced. May be pinned as a span; a
                 // memfd is written without the GIL
    kExported,   // held through a buffer export (a PickleBuffer over a numpy array): stays in
                 // place and keeps its size while the owner lives, but other threads may write
                 // it. May be pinned as a span (the receiver copies the bytes as they are when it
                 // reads them, as any reader of a shared buffer does); a memfd is written with the
                 // GIL held, so that copy is a snapshot
    kMutable,    // a bytearray: any thread may resize it. Copied at once into a memfd with the
                 // GIL held, never pinned
  };

  // The most bytes of spans this side keeps pinned for the peer at once, unless it pins a single
  // span (which may be as large as kMaxBufferBytes). A well-behaved peer lets go of them within
  // one message; this only bounds what a peer that never does can hold.
  static constexpr uint64_t kMaxPinnedBytes = uint64_t{1} << 30;

  explicit BufferCodec(CodecPeer& peer) : peer_(peer) {}
  BufferCodec(const BufferCodec&) = delete;
  BufferCodec& operator=(const BufferCodec&) = delete;

  // Sender: whether large kImmutable and kExported values go as spans. The child's endpoint turns
  // it on, and the parent's when the child said it can read the parent; encodePinned() turns it
  // off for good (the peer cannot read this process's memory).
  void setSendSpans(bool enabled) { sendSpans_ = enabled; }
  bool sendsSpans() const { return sendSpans_; }

  // Writes the `size` bytes at `data` into `out` as a Buffer of `kind` when they are large enough
  // to travel out of band, and returns whether it did (false: the caller sends them inline).
  // `owner` holds the bytes as `source` says; a span keeps a reference to it (a pin) until the
  // peer has decoded the frame it rides in (sealPins, releaseDecoded), or releasePins(). While
  // kMaxPinnedBytes are pinned already, a new value goes in a memfd instead: a peer that never
  // says it has decoded anything cannot make this side keep every temporary it sent alive.
  // Throws ValueError (py::value_error) for a value larger than kMaxBufferBytes, or one that
  // takes the message being encoded (OutgoingMessage) past kMaxMessageBufferBytes; otherwise
  // only what the peer's attachFd() throws.
  bool encode(py::handle owner, const char* data, size_t size, wire::Buffer::Kind kind,
              Source source, wire::Value::Builder out);

  // Sender, pins and frames. The endpoint takes a mark before it encodes a message; the pins made
  // since then that are not sealed yet belong to that message (a message encoded meanwhile, in a
  // nested call, seals its own first). sealPins() gives them the number of the frame that
  // carries them, once it is sent; dropUnsentPins() lets them go when the message never is.
  uint64_t pinMark() const { return nextPinSequence_; }
  void sealPins(uint64_t mark, uint64_t frame);
  void dropUnsentPins(uint64_t mark);
  // Lets go of the pins sealed with a frame number of at most `frames`: the peer has decoded
  // those frames and reads no more of their spans.
  void releaseDecoded(uint64_t frames);

  // Sender: while one is alive, the buffers encode() writes count as one message's, and encode()
  // refuses (ValueError) a buffer that would take them past kMaxMessageBufferBytes, which the
  // receiver would refuse. One per message being encoded; they nest (a message encoded while
  // another is, in a nested call, counts on its own).
  class OutgoingMessage {
   public:
    explicit OutgoingMessage(BufferCodec& codec) : codec_(codec) { codec_.outgoing_.push_back(0); }
    ~OutgoingMessage() { codec_.outgoing_.pop_back(); }
    OutgoingMessage(const OutgoingMessage&) = delete;
    OutgoingMessage& operator=(const OutgoingMessage&) = delete;

   private:
    BufferCodec& codec_;
  };

  // Receiver: counts the out-of-band bytes of the peer's frame `frame` just arrived
  // (ValueCodec::outOfBandBytes) against the limits, before any of them is allocated. Throws kj
  // FAILED when the frame carries more than kMaxMessageBufferBytes, or when the frames being
  // decoded at once would then carry more than kMaxDecodingBufferBytes. finishedDecoding(frame)
  // gives them back. While a frame whose buffers could not all be counted is being decoded,
  // decode() refuses every buffer.
  void admitFrame(uint64_t frame, OutOfBand counted);
  void finishedDecoding(uint64_t frame);
  uint64_t decodingBytes() const { return decodingBytes_; }

  // Makes the bytes (kind bytes) or bytearray (kind bytearray) that `in` describes. Everything
  // the peer claims that can be checked is checked before anything is allocated: the size
  // against kMaxBufferBytes; for a memfd its seals, type, size and that it has no holes; for a
  // span that its first and last byte are readable. Throws kj FAILED for a buffer a well-behaved
  // peer would not send (a span outside the peer's memory or shorter than claimed, an unsealed
  // fd), DISCONNECTED when the peer ended while its memory was being read; either way
  // sawBrokenBuffer() is true from then on. Releases the GIL around the copy (the new object is
  // not yet visible to anyone).
  py::object decode(wire::Buffer::Reader in);

  // True once decode() has refused a buffer. Buffers are the runtime's own encoding, which no
  // well-behaved peer gets wrong, and they stand for memory and descriptors: the endpoint ends
  // the connection for one even where it answers other malformed input with an error.
  bool sawBrokenBuffer() const { return broken_; }

  // Sender: lets go of every span, sent or not (the connection is closing).
  void releasePins();

  // Sender: answers fetchBuffer. Writes the pinned span at exactly `address` and `size` into
  // `out` again, in a memfd (inline when small), keeping its kind, sends no more spans, and
  // returns true. Returns false, writing nothing, when no such span is pinned: the only memory
  // this reads is that of a span it sent and still holds, whatever the peer asks.
  bool encodePinned(uint64_t address, uint64_t size, wire::Value::Builder out);

  // While one is alive, decode() checks what it is sent but copies nothing and returns None:
  // for an answer that is decoded only to be dropped (the late answer to an interrupted call).
  class SkipContents {
   public:
    explicit SkipContents(BufferCodec& codec) : codec_(codec) { ++codec_.skipping_; }
    ~SkipContents() { --codec_.skipping_; }
    SkipContents(const SkipContents&) = delete;
    SkipContents& operator=(const SkipContents&) = delete;

   private:
    BufferCodec& codec_;
  };

  size_t pinCount() const { return pins_.size(); }
  uint64_t pinnedBytes() const { return pinnedBytes_; }
  // How many values went out of band so far, as spans and in memfds. For tests and diagnostics.
  uint64_t spansSent() const { return spansSent_; }
  uint64_t memfdsSent() const { return memfdsSent_; }

 private:
  struct Pin {
    py::object owner;
    uint64_t address;
    uint64_t size;
    wire::Buffer::Kind kind;
    Source source;
    uint64_t sequence;  // order of pinning, for pinMark()
    uint64_t frame;     // the frame it rides in, once sent; 0 while its message is being encoded
  };

  // Lets go of the pins `drop` selects. Dropping an owner may run code (a buffer's release hook)
  // that sends, so the list is settled before any owner goes.
  template <typename Predicate>
  void releaseWhere(Predicate drop);

  bool encodeMemfd(const char* data, size_t size, wire::Buffer::Kind kind, Source source,
                   wire::Value::Builder out);
  py::object decodeChecked(wire::Buffer::Reader in);
  py::object decodeMemfd(wire::Buffer::Reader in, bool bytes);
  py::object decodeSpan(wire::Buffer::Reader in, bool bytes);

  // Throws ValueError when `size` more bytes out of band do not fit in the message being
  // encoded; counts them when they do.
  void chargeOutgoing(size_t size);

  CodecPeer& peer_;
  bool sendSpans_ = false;
  std::vector<uint64_t> outgoing_;  // out-of-band bytes of each message being encoded
  // The frames being decoded that carry buffers, or could not be counted.
  struct Decoding {
    uint64_t frame;
    OutOfBand counted;
  };
  std::vector<Decoding> decoding_;
  uint64_t decodingBytes_ = 0;
  int uncounted_ = 0;  // frames in decoding_ that are not `complete`
  std::vector<Pin> pins_;
  uint64_t nextPinSequence_ = 1;
  uint64_t pinnedBytes_ = 0;
  uint64_t spansSent_ = 0;
  uint64_t memfdsSent_ = 0;
  int skipping_ = 0;
  bool broken_ = false;
};

}  // namespace pi
