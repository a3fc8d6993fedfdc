// Value.buffer: large bytes-like values out of band (sealed memfds, or spans of sender memory).
#include "proxy/buffer_codec.h"

#include "protocol/limits.h"
#include "proxy/value_codec.h"
#include "runtime/peer_memory.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace pi {

namespace {

// Transparent huge pages are asked for on buffers at least this large: their 2 MiB-aligned
// interior then holds at least one whole huge page. (Smaller buffers gain nothing, and may live
// in the middle of the malloc heap, whose mapping the advice would split.)
constexpr size_t kHugePageAdviceBytes = size_t{4} << 20;
constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;

// A memfd at least this large is read through a mapping (mmap + memcpy), a smaller one with
// pread. Measured here (64 MiB into fresh huge pages): pread 59 ms, mmap + memcpy 26 ms, the
// kernel's page-by-page copy losing to memcpy once the source no longer fits in the cache; up
// to 16 MiB they are even, and below 4 MiB pread saves the mapping's set-up and tear-down.
constexpr size_t kMapBufferBytes = size_t{8} << 20;

py::object steal(PyObject* object) {
  if (object == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(object);
}

// Asks the kernel to back the 2 MiB-aligned interior of [data, data + size) with transparent huge
// pages when it first touches them: one fault and one zeroing per 2 MiB instead of one fault per
// 4 KiB page, which is most of the cost of filling fresh memory. Only for memory not yet touched
// (a new object's payload). Advice only: where it is not supported nothing changes.
void adviseHugePages(char* data, size_t size) {
  if (size < kHugePageAdviceBytes) return;
  uintptr_t start = reinterpret_cast<uintptr_t>(data);
  uintptr_t begin = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  uintptr_t end = (start + size) & ~(kHugePageBytes - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

// A new bytes (`bytes`) or bytearray of `size` bytes, not yet written; `data` is where they go.
py::object newBytesLike(bool bytes, uint64_t size, char*& data) {
  py::object result = steal(bytes ? PyBytes_FromStringAndSize(nullptr, Py_ssize_t(size))
                                  : PyByteArray_FromStringAndSize(nullptr, Py_ssize_t(size)));
  data = bytes ? PyBytes_AS_STRING(result.ptr()) : PyByteArray_AS_STRING(result.ptr());
  adviseHugePages(data, size);
  return result;
}

bool isBytesLikeOf(py::handle value, bool bytes, uint64_t size) {
  PyObject* o = value.ptr();
  if (bytes) return PyBytes_CheckExact(o) && uint64_t(PyBytes_GET_SIZE(o)) == size;
  return PyByteArray_CheckExact(o) && uint64_t(PyByteArray_GET_SIZE(o)) == size;
}

}  // namespace

void BufferCodec::chargeOutgoing(size_t size) {
  // Larger than a frame may be, so it could not go inline either.
  if (size > kMaxBufferBytes) {
    throw py::value_error("a bytes-like value of " + std::to_string(size) +
                          " bytes is larger than the " + std::to_string(kMaxBufferBytes >> 20) +
                          " MiB that one value may be to cross to the other process; send it "
                          "in pieces");
  }
  if (outgoing_.empty()) return;
  if (outgoing_.back() + size > kMaxMessageBufferBytes) {
    throw py::value_error("the large values of one call or answer would come to more than the " +
                          std::to_string(kMaxMessageBufferBytes >> 20) +
                          " MiB that may cross to the other process at once; send them in "
                          "several calls");
  }
  outgoing_.back() += size;
}

bool BufferCodec::encode(py::handle owner, const char* data, size_t size, wire::Buffer::Kind kind,
                         Source source, wire::Value::Builder out) {
  bool span = sendSpans_ && source != Source::kMutable && size >= kRemoteSpanThresholdBytes &&
              (pinnedBytes_ == 0 || pinnedBytes_ + size <= kMaxPinnedBytes);
  if (!span && size < kBufferThresholdBytes) return false;  // small: inline
  chargeOutgoing(size);
  if (span) {
    uint64_t address = reinterpret_cast<uintptr_t>(data);
    pins_.push_back(Pin{py::reinterpret_borrow<py::object>(owner), address, size, kind, source,
                        nextPinSequence_++, 0});
    pinnedBytes_ += size;
    ++spansSent_;
    auto buffer = out.initBuffer();
    buffer.setKind(kind);
    buffer.setSize(size);
    buffer.setAddress(address);
    return true;
  }
  if (encodeMemfd(data, size, kind, source, out)) return true;
  if (!outgoing_.empty()) outgoing_.back() -= size;  // inline after all: not out of band
  return false;
}

bool BufferCodec::encodeMemfd(const char* data, size_t size, wire::Buffer::Kind kind,
                              Source source, wire::Value::Builder out) {
  UniqueFd fd(::memfd_create("process_isolation-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return false;
  // write() rather than mmap + memcpy: into a fresh memfd (4 KiB shmem pages; shmem huge pages
  // are off by default) write() allocates the pages without a fault each. Measured here for
  // 64 MiB: write() 44 ms, ftruncate + mmap + memcpy 96 ms, with MAP_POPULATE 90 ms.
  size_t done = 0;
  auto writeAll = [&] {
    while (done < size) {
      ssize_t n = ::write(fd.get(), data + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += size_t(n);
    }
  };
  if (source == Source::kImmutable) {
    // A bytes object cannot change and the caller holds it: other threads may run meanwhile.
    py::gil_scoped_release nogil;
    writeAll();
  } else {
    writeAll();  // keep the GIL: the copy is a snapshot no other thread can change or resize
  }
  if (done != size) return false;
  int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
  if (::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) return false;
  int index = peer_.attachFd(std::move(fd));
  if (index < 0) return false;
  auto buffer = out.initBuffer();
  buffer.setKind(kind);
  buffer.setSize(size);
  buffer.setFd(uint16_t(index));
  ++memfdsSent_;
  return true;
}

void BufferCodec::admitFrame(uint64_t frame, OutOfBand counted) {
  if (counted.bytes == 0 && counted.complete) return;
  KJ_REQUIRE(counted.bytes <= kMaxMessageBufferBytes,
             "peer sent a message whose buffers are over the size limit of a message",
             counted.bytes, kMaxMessageBufferBytes);
  KJ_REQUIRE(decodingBytes_ + counted.bytes <= kMaxDecodingBufferBytes,
             "peer sent a message whose buffers take those being decoded at once over the "
             "limit of a connection", counted.bytes, decodingBytes_, kMaxDecodingBufferBytes);
  decoding_.push_back(Decoding{frame, counted});
  decodingBytes_ += counted.bytes;
  if (!counted.complete) ++uncounted_;
}

void BufferCodec::finishedDecoding(uint64_t frame) {
  for (size_t i = 0; i < decoding_.size(); ++i) {
    if (decoding_[i].frame == frame) {
      decodingBytes_ -= decoding_[i].counted.bytes;
      if (!decoding_[i].counted.complete) --uncounted_;
      decoding_.erase(decoding_.begin() + ptrdiff_t(i));
      return;
    }
  }
}

py::object BufferCodec::decode(wire::Buffer::Reader in) {
  try {
    return decodeChecked(in);
  } catch (kj::Exception&) {
    broken_ = true;
    throw;
  }
}

py::object BufferCodec::decodeChecked(wire::Buffer::Reader in) {
  KJ_REQUIRE(uncounted_ == 0,
             "peer sent a buffer in a message too malformed to count what its buffers take");
  uint64_t size = in.getSize();
  KJ_REQUIRE(size <= kMaxBufferBytes, "peer sent a buffer over the size limit", size);
  bool bytes = in.getKind() == wire::Buffer::Kind::BYTES;
  switch (in.which()) {
    case wire::Buffer::FD:
      return decodeMemfd(in, bytes);
    case wire::Buffer::ADDRESS:
      return decodeSpan(in, bytes);
  }
  KJ_FAIL_REQUIRE("peer sent a buffer of an unknown kind", uint(in.which()));
}

py::object BufferCodec::decodeMemfd(wire::Buffer::Reader in, bool bytes) {
  uint64_t size = in.getSize();
  UniqueFd fd = peer_.takeFd(in.getFd());
  // The peer must not be able to change or shrink the bytes under us (a shrunk mapping would be
  // a SIGBUS here): only a memfd sealed against that is accepted, and only as large as said.
  int seals = ::fcntl(fd.get(), F_GET_SEALS);
  int needed = F_SEAL_SHRINK | F_SEAL_WRITE;
  KJ_REQUIRE(seals >= 0 && (seals & needed) == needed, "peer sent a buffer that is not sealed");
  struct stat info;
  KJ_REQUIRE(::fstat(fd.get(), &info) == 0 && S_ISREG(info.st_mode) &&
                 uint64_t(info.st_size) == size,
             "peer sent a buffer whose size does not match", size);
  // Reading it through a mapping must neither allocate (a hole would be filled with new pages on
  // the first touch, so a sparse memfd would cost us its full size twice) nor fault (hugetlbfs
  // has other rules): plain shmem, every page present. A memfd we wrote always is. (pread reads
  // holes as zeros without allocating, but one rule for both is simpler.)
  struct statfs filesystem;
  KJ_REQUIRE(::fstatfs(fd.get(), &filesystem) == 0 && filesystem.f_type == TMPFS_MAGIC,
             "peer sent a buffer that is not a plain memfd");
  KJ_REQUIRE(uint64_t(info.st_blocks) * 512 >= size, "peer sent a buffer with holes", size);
  if (skipping_) return py::none();
  char* target = nullptr;
  py::object result = newBytesLike(bytes, size, target);
  if (size < kMapBufferBytes) {
    size_t done = 0;
    {
      py::gil_scoped_release nogil;  // `result` is ours alone until we return it
      while (done < size) {
        ssize_t n = ::pread(fd.get(), target + done, size - done, off_t(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += size_t(n);
      }
    }
    KJ_REQUIRE(done == size, "could not read a buffer the peer sent");
    return result;
  }
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
  if (mapped == MAP_FAILED) KJ_FAIL_SYSCALL("mmap(buffer)", errno, size);
  {
    py::gil_scoped_release nogil;
    memcpy(target, mapped, size);
    ::munmap(mapped, size);
  }
  return result;
}

py::object BufferCodec::decodeSpan(wire::Buffer::Reader in, bool bytes) {
  uint64_t size = in.getSize();
  uint64_t address = in.getAddress();
  if (skipping_) return py::none();
  char* target = nullptr;
  if (size == 0) return newBytesLike(bytes, 0, target);
  // Validate the claim cheaply (both ends readable) before allocating what it says.
  if (peer_.readPeerMemory(address, size, nullptr) == PeerMemory::Access::kDone) {
    py::object result = newBytesLike(bytes, size, target);
    PeerMemory::Access access;
    {
      py::gil_scoped_release nogil;  // `result` is ours alone until we return it
      access = peer_.readPeerMemory(address, size, target);
    }
    if (access == PeerMemory::Access::kDone) return result;
  }
  // We may not read the peer (kRefused: the OS said EPERM, or, reading a trusted parent, the read
  // failed in any way): ask it for the bytes again, in a memfd.
  py::object again = peer_.refetchSpan(address, size);
  KJ_REQUIRE(isBytesLikeOf(again, bytes, size),
             "peer answered fetchBuffer with something other than the buffer asked for", size);
  return again;
}

template <typename Predicate>
void BufferCodec::releaseWhere(Predicate drop) {
  std::vector<Pin> released;
  for (size_t i = 0; i < pins_.size();) {
    if (drop(pins_[i])) {
      pinnedBytes_ -= pins_[i].size;
      released.push_back(std::move(pins_[i]));
      pins_.erase(pins_.begin() + ptrdiff_t(i));
    } else {
      ++i;
    }
  }
  // `released` goes here, once pins_ is consistent again.
}

void BufferCodec::sealPins(uint64_t mark, uint64_t frame) {
  for (Pin& pin : pins_) {
    if (pin.sequence >= mark && pin.frame == 0) pin.frame = frame;
  }
}

void BufferCodec::dropUnsentPins(uint64_t mark) {
  if (pins_.empty()) return;
  releaseWhere([mark](const Pin& pin) { return pin.sequence >= mark && pin.frame == 0; });
}

void BufferCodec::releaseDecoded(uint64_t frames) {
  if (pins_.empty()) return;
  releaseWhere([frames](const Pin& pin) { return pin.frame != 0 && pin.frame <= frames; });
}

void BufferCodec::releasePins() {
  if (pins_.empty()) return;
  std::vector<Pin> released;
  released.swap(pins_);
  pinnedBytes_ = 0;
}

bool BufferCodec::encodePinned(uint64_t address, uint64_t size, wire::Value::Builder out) {
  const Pin* found = nullptr;
  for (const Pin& pin : pins_) {
    if (pin.address == address && pin.size == size) found = &pin;
  }
  if (found == nullptr) return false;
  sendSpans_ = false;  // the peer cannot read this process's memory: no more spans
  Pin pin = *found;    // a copy, holding the owner while its bytes are written out
  const char* data = reinterpret_cast<const char*>(uintptr_t(pin.address));
  if (encode(pin.owner, data, size_t(pin.size), pin.kind, pin.source, out)) return true;
  auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(data), size_t(pin.size));
  if (pin.kind == wire::Buffer::Kind::BYTES) {
    out.setBytes(bytes);
  } else {
    out.setBytearray(bytes);
  }
  return true;
}

}  // namespace pi
