// Fuzz target: the out-of-band buffers a child sends (proxy/buffer_codec, with runtime/peer_memory
// reading a real child process).
//
// Each input describes up to four descriptors that travel with a message and up to four Buffers
// that claim them or claim spans of the child's memory, then decodes each Buffer in the parent's
// role. The descriptors are what a child can pass: a correct sealed memfd, one without seals, one
// sealed but not against writing, a sparse one, a pipe, /dev/null. The spans point into a real
// child (forked once at start-up, idle) at the edges and the middle of its mappings: a heap
// block, pages around an inaccessible guard page, a hole that is unmapped, or anywhere at all.
// The size each Buffer claims is the real one, one off, or anything. Each decode may only return
// bytes (or bytearray) of exactly the claimed size holding exactly the child's bytes, or throw a
// kj exception (FAILED); a sanitizer report, a leaked fd, or other bytes is a bug.
#include "protocol/isolation.capnp.h"
#include "protocol/limits.h"
#include "proxy/buffer_codec.h"
#include "proxy/value_codec.h"
#include "runtime/peer_memory.h"
#include "support/fuzz_python.h"
#include "support/fuzz_support.h"

#include <capnp/message.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <kj/debug.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

namespace py = pybind11;

constexpr size_t kPage = 4096;
// The most bytes a span may claim here: a span the child has mapped may be up to kMaxBufferBytes
// by the protocol, but this harness's child has no mapping larger than this, and allocating what
// a wrong claim says (up to 4 GiB) would only measure libFuzzer's memory limit.
constexpr uint64_t kLargestChildMapping = 16 << 20;

// The child's memory, made before the fork so that both have it at the same addresses, and never
// written after: the parent can compare what it read with its own copy.
struct ChildMemory {
  kj::byte* heap = nullptr;  // malloc'd
  size_t heapBytes = 256 << 10;
  kj::byte* pages = nullptr;  // three pages, the middle one PROT_NONE
  kj::byte* hole = nullptr;   // an unmapped page
  kj::byte* large = nullptr;  // a large mapping, for spans above the memfd-by-mapping threshold
  size_t largeBytes = (8 << 20) + kPage;
  pid_t pid = -1;
};
ChildMemory memory;

struct Region {
  kj::byte* begin;
  size_t size;
};

bool within(uint64_t address, uint64_t size, const Region& region) {
  uint64_t begin = reinterpret_cast<uintptr_t>(region.begin);
  return address >= begin && size <= region.size && address - begin <= region.size - size;
}

void fill(kj::byte* at, size_t size, uint8_t seed) {
  for (size_t i = 0; i < size; ++i) at[i] = uint8_t(i * 131 + seed);
}

void makeChild() {
  memory.heap = static_cast<kj::byte*>(std::malloc(memory.heapBytes));
  fill(memory.heap, memory.heapBytes, 1);
  memory.pages = static_cast<kj::byte*>(
      ::mmap(nullptr, 3 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  fill(memory.pages, 3 * kPage, 2);
  ::mprotect(memory.pages + kPage, kPage, PROT_NONE);
  memory.hole = static_cast<kj::byte*>(
      ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ::munmap(memory.hole, kPage);
  memory.large = static_cast<kj::byte*>(::mmap(nullptr, memory.largeBytes, PROT_READ | PROT_WRITE,
                                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  fill(memory.large, memory.largeBytes, 3);
  pid_t parent = ::getpid();
  memory.pid = ::fork();
  if (memory.pid < 0) pi::fuzz::fail("fork failed");
  if (memory.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    for (;;) ::pause();
  }
  std::atexit([] {
    ::kill(memory.pid, SIGKILL);
    ::waitpid(memory.pid, nullptr, 0);
  });
}

// A memfd of `size` bytes (the pattern, or holes when `sparse`) with `seals`.
pi::UniqueFd makeMemfd(size_t size, int seals, bool sparse) {
  pi::UniqueFd fd(::memfd_create("fuzz-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) pi::fuzz::fail("memfd_create failed");
  if (sparse) {
    if (::ftruncate(fd.get(), off_t(size)) != 0) pi::fuzz::fail("ftruncate failed");
  } else {
    std::vector<kj::byte> bytes(size);
    fill(bytes.data(), size, 4);
    if (size > 0 && ::write(fd.get(), bytes.data(), size) != ssize_t(size)) {
      pi::fuzz::fail("memfd write failed");
    }
  }
  if (seals != 0) ::fcntl(fd.get(), F_ADD_SEALS, seals);
  return fd;
}

class ChildPeer : public pi::CodecPeer {
 public:
  ChildPeer() : child_(memory.pid) {}

  void exportRef(py::handle, pi::wire::Ref::Builder) override { pi::fuzz::fail("exported"); }
  py::object importRef(pi::wire::Ref::Reader) override { KJ_FAIL_REQUIRE("no refs here"); }
  py::object resolveBack(uint64_t, uint32_t) override { KJ_FAIL_REQUIRE("no backs here"); }
  bool peerIdOf(py::handle, uint64_t&) override { return false; }
  int attachFd(pi::UniqueFd) override { return -1; }

  // As the parent's endpoint: each index of the message's fds once.
  pi::UniqueFd takeFd(uint32_t index) override {
    KJ_REQUIRE(index < fds.size() && fds[index],
               "peer named a file descriptor its message does not carry", index);
    return std::move(fds[index]);
  }

  pi::PeerMemory::Access readPeerMemory(uint64_t address, uint64_t size, char* into) override {
    if (refuse) return pi::PeerMemory::Access::kRefused;  // as EPERM would
    KJ_REQUIRE(size <= kLargestChildMapping, "span larger than anything the child has", size);
    return into == nullptr ? child_.probe(address, size) : child_.read(address, into, size_t(size));
  }

  // The child's answer to fetchBuffer, as the input chose it.
  py::object refetchSpan(uint64_t address, uint64_t size) override {
    ++refetches;
    switch (refetchAnswer) {
      case 0:
        KJ_FAIL_REQUIRE("the child answered fetchBuffer with an error", address, size);
      case 1:
        return py::none();
      case 2:  // the right size, as bytes
      case 3:  // the right size, as bytearray
      case 4:  // one byte short
        if (size > (1 << 20)) KJ_FAIL_REQUIRE("harness: refetch too large", size);
        {
          size_t n = size_t(size) - (refetchAnswer == 4 && size > 0 ? 1 : 0);
          std::string bytes(n, 'x');
          if (refetchAnswer == 3) {
            return py::reinterpret_steal<py::object>(
                PyByteArray_FromStringAndSize(bytes.data(), Py_ssize_t(n)));
          }
          return py::bytes(bytes);
        }
    }
    return py::none();
  }

  std::vector<pi::UniqueFd> fds;
  bool refuse = false;
  int refetchAnswer = 0;
  int refetches = 0;

 private:
  pi::PeerMemory child_;
};

ChildPeer* peer = nullptr;
pi::ValueCodec* codec = nullptr;

struct MadeFd {
  size_t size;     // bytes it really holds
  bool correct;    // a plain memfd, sealed against shrinking and writing, no holes
};

void run(FuzzedDataProvider& input) {
  peer->fds.clear();
  std::vector<MadeFd> made;
  int fdCount = input.ConsumeIntegralInRange<int>(0, 4);
  static const size_t kSizes[] = {0, 1, 4095, 4096, 65535, 65536, (1 << 20) - 1, 1 << 20,
                                  (1 << 20) + 1, (8 << 20) + 8};
  for (int i = 0; i < fdCount; ++i) {
    size_t size = input.ConsumeIntegralInRange<int>(0, 3) == 0
                      ? kSizes[input.ConsumeIntegralInRange<size_t>(0, 9)]
                      : input.ConsumeIntegralInRange<size_t>(0, 3 * kPage);
    int sealsAll = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
    switch (input.ConsumeIntegralInRange<int>(0, 6)) {
      case 0:
        peer->fds.push_back(makeMemfd(size, sealsAll, false));
        made.push_back({size, true});
        break;
      case 1:  // no seals: the child could shrink it under the parent
        peer->fds.push_back(makeMemfd(size, 0, false));
        made.push_back({size, false});
        break;
      case 2:  // not sealed against writing
        peer->fds.push_back(makeMemfd(size, F_SEAL_SHRINK | F_SEAL_GROW, false));
        made.push_back({size, false});
        break;
      case 3:  // sealed, but all holes
        peer->fds.push_back(makeMemfd(size, sealsAll, true));
        made.push_back({size, size == 0});
        break;
      case 4: {  // a pipe
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0) pi::fuzz::fail("pipe failed");
        ::close(ends[1]);
        peer->fds.emplace_back(ends[0]);
        made.push_back({0, false});
        break;
      }
      case 5:
        peer->fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        made.push_back({0, false});
        break;
      case 6:  // sealed against shrinking and writing only: may still grow
        peer->fds.push_back(makeMemfd(size, F_SEAL_SHRINK | F_SEAL_WRITE, false));
        made.push_back({size, true});
        break;
    }
  }
  peer->refuse = input.ConsumeIntegralInRange<int>(0, 7) == 0;
  peer->refetchAnswer = input.ConsumeIntegralInRange<int>(0, 4);

  const Region regions[] = {{memory.heap, memory.heapBytes},
                            {memory.pages, kPage},
                            {memory.pages + 2 * kPage, kPage},
                            {memory.hole, kPage},
                            {memory.large, memory.largeBytes}};
  int buffers = input.ConsumeIntegralInRange<int>(1, 4);
  for (int b = 0; b < buffers && input.remaining_bytes() > 0; ++b) {
    capnp::MallocMessageBuilder message;
    auto value = message.initRoot<pi::wire::Value>();
    auto buffer = value.initBuffer();
    bool bytes = input.ConsumeBool();
    buffer.setKind(bytes ? pi::wire::Buffer::Kind::BYTES : pi::wire::Buffer::Kind::BYTEARRAY);
    uint64_t size = 0;
    bool viaFd = input.ConsumeBool();
    uint32_t fdIndex = 0;
    uint64_t address = 0;
    if (viaFd) {
      fdIndex = input.ConsumeIntegralInRange<uint16_t>(0, 5);
      uint64_t real = fdIndex < made.size() ? made[fdIndex].size : 0;
      switch (input.ConsumeIntegralInRange<int>(0, 3)) {
        case 0: size = real; break;
        case 1: size = real + 1; break;
        case 2: size = real - 1; break;
        default: size = input.ConsumeIntegral<uint64_t>(); break;
      }
      buffer.setFd(uint16_t(fdIndex));
    } else {
      int which = input.ConsumeIntegralInRange<int>(0, 5);
      if (which == 5) {
        address = input.ConsumeIntegral<uint64_t>();
      } else {
        const Region& region = regions[which];
        address = reinterpret_cast<uintptr_t>(region.begin) +
                  uint64_t(input.ConsumeIntegralInRange<int64_t>(-int64_t(kPage), int64_t(region.size + kPage)));
      }
      switch (input.ConsumeIntegralInRange<int>(0, 7)) {
        case 0: size = input.ConsumeIntegral<uint64_t>(); break;
        case 1: size = input.ConsumeIntegralInRange<uint64_t>(0, 9 << 20); break;
        default: size = input.ConsumeIntegralInRange<uint64_t>(0, 3 * kPage); break;
      }
      buffer.setAddress(address);
    }
    buffer.setSize(size);
    bool skip = input.ConsumeIntegralInRange<int>(0, 7) == 0;
    int refetchesBefore = peer->refetches;
    try {
      py::object result;
      {
        std::optional<pi::BufferCodec::SkipContents> skipping;
        if (skip) skipping.emplace(codec->buffers());
        result = codec->decode(value.asReader());
      }
      // Accepted: it must be what the child had, of exactly the claimed size.
      if (skip) {
        if (!result.is_none()) pi::fuzz::fail("skipped contents were decoded");
        continue;
      }
      PyObject* o = result.ptr();
      bool kindOk = bytes ? PyBytes_CheckExact(o) : PyByteArray_CheckExact(o);
      if (!kindOk) pi::fuzz::fail("decoded the wrong kind of object");
      char* got = bytes ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o);
      uint64_t gotSize = uint64_t(bytes ? PyBytes_GET_SIZE(o) : PyByteArray_GET_SIZE(o));
      if (gotSize != size) pi::fuzz::fail("decoded a buffer of another size than claimed");
      if (size > kLargestChildMapping * 2) pi::fuzz::fail("accepted an impossible size");
      if (viaFd) {
        if (fdIndex >= made.size() || !made[fdIndex].correct) {
          pi::fuzz::fail("accepted a descriptor that is not a sealed plain memfd");
        }
        std::vector<kj::byte> expected(size);
        fill(expected.data(), size, 4);
        if (size > 0 && memcmp(got, expected.data(), size) != 0) pi::fuzz::fail("memfd bytes differ");
      } else if (peer->refetches == refetchesBefore) {
        // Read from the child: where the range lies in memory this harness made, compare.
        bool inRegion = false;
        for (const Region& region : regions) inRegion |= within(address, size, region);
        if (inRegion && size > 0 &&
            memcmp(got, reinterpret_cast<const void*>(uintptr_t(address)), size) != 0) {
          pi::fuzz::fail("span bytes differ from the child's");
        }
        if (within(address, size, regions[3]) && size > 0) pi::fuzz::fail("read an unmapped hole");
      }
    } catch (kj::Exception& e) {
      pi::fuzz::expectPeerError(e);
    } catch (py::error_already_set&) {
      // Python refused to allocate what the claim said (MemoryError): fine.
    }
    if (PyErr_Occurred()) pi::fuzz::fail("a decode left a Python error set");
  }
  peer->fds.clear();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pi::fuzz::startPython();
  makeChild();
  peer = new ChildPeer();
  codec = new pi::ValueCodec(*peer);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fdBaseline = pi::fuzz::lowestFreeFd();
  FuzzedDataProvider input(data, size);
  run(input);
  pi::fuzz::checkNoFdLeak(fdBaseline);
  return 0;
}
