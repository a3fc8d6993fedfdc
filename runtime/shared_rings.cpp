// Two one-way byte rings in one shared mapping: the fast path of a Channel.
#include "runtime/shared_rings.h"

#include <kj/debug.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace pi {

namespace {

constexpr uint64_t kMagic = 0x31474e4952495050;  // "PPIRING1", little-endian
constexpr uint32_t kVersion = 1;
constexpr size_t kControlBytes = 4096;
constexpr size_t kCacheLine = 64;

// At the start of the control page; written by the parent before it sends the fd.
struct Header {
  uint64_t magic;
  uint32_t version;
  uint32_t capacity;
};

}  // namespace

// One side's cursor of one ring, alone on its cache line: only its owner writes it (except that
// the peer may clear `waiting` when it wakes the owner).
struct alignas(kCacheLine) SharedRings::Cursor {
  std::atomic<uint64_t> position;
  std::atomic<uint32_t> waiting;
  std::atomic<uint32_t> cpu;  // reader cursors: the CPU the reader last waited on, plus one
};

struct SharedRings::Control {
  Cursor writer;
  Cursor reader;
};

namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared atomics must be lock-free");
constexpr size_t kRingControlOffset = kCacheLine;  // ring 0; ring 1 follows
static_assert(kRingControlOffset + 2 * sizeof(SharedRings::Control) <= kControlBytes,
              "the control page holds the header and both rings' cursors");

size_t mappedBytesFor(size_t capacity) { return kControlBytes + 2 * capacity; }

bool validCapacity(size_t capacity) {
  return capacity >= SharedRings::kMinCapacity && capacity <= SharedRings::kMaxCapacity &&
         (capacity & (capacity - 1)) == 0;
}

void* mapShared(int fd, size_t bytes) {
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) KJ_FAIL_SYSCALL("mmap(shared rings)", errno, bytes);
  // A process forked from this one (a user's fork, a grandchild) must not share our rings.
  if (::madvise(base, bytes, MADV_DONTFORK) != 0) {
    int error = errno;
    ::munmap(base, bytes);
    KJ_FAIL_SYSCALL("madvise(MADV_DONTFORK)", error);
  }
  return base;
}

// Copies `size` bytes into the ring `data` of `capacity` bytes at stream position `position`.
void copyIn(kj::byte* data, size_t capacity, uint64_t position, const kj::byte* from,
            size_t size) {
  size_t offset = size_t(position & (capacity - 1));
  size_t first = std::min(size, capacity - offset);
  memcpy(data + offset, from, first);
  if (first < size) memcpy(data, from + first, size - first);
}

void copyOut(const kj::byte* data, size_t capacity, uint64_t position, kj::byte* to,
             size_t size) {
  size_t offset = size_t(position & (capacity - 1));
  size_t first = std::min(size, capacity - offset);
  memcpy(to, data + offset, first);
  if (first < size) memcpy(to + first, data, size - first);
}

}  // namespace

std::unique_ptr<SharedRings> SharedRings::create(size_t capacity) {
  KJ_REQUIRE(validCapacity(capacity), "ring capacity must be a power of two within limits",
             capacity);
  size_t bytes = mappedBytesFor(capacity);
  int raw;
  KJ_SYSCALL(raw = ::memfd_create("process_isolation-rings", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  UniqueFd fd(raw);
  KJ_SYSCALL(::ftruncate(fd.get(), off_t(bytes)));
  KJ_SYSCALL(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  void* base = mapShared(fd.get(), bytes);
  auto* header = static_cast<Header*>(base);
  header->magic = kMagic;
  header->version = kVersion;
  header->capacity = uint32_t(capacity);
  // A fresh memfd reads as zeros: every position and flag starts at 0.
  return std::unique_ptr<SharedRings>(
      new SharedRings(std::move(fd), base, bytes, capacity, RingSide::kParent));
}

std::unique_ptr<SharedRings> SharedRings::attach(UniqueFd fd, RingSide side) {
  KJ_REQUIRE(bool(fd), "no shared ring memfd");
  int seals = ::fcntl(fd.get(), F_GET_SEALS);
  KJ_REQUIRE(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW),
             "the shared rings are not a memfd sealed against resizing");
  struct stat info;
  KJ_SYSCALL(::fstat(fd.get(), &info));
  KJ_REQUIRE(info.st_size >= off_t(kControlBytes), "the shared rings are too small");
  Header header;
  KJ_REQUIRE(::pread(fd.get(), &header, sizeof(header), 0) == ssize_t(sizeof(header)),
             "cannot read the shared rings' header");
  KJ_REQUIRE(header.magic == kMagic && header.version == kVersion,
             "the shared rings have an unknown layout", header.version);
  size_t capacity = header.capacity;
  KJ_REQUIRE(validCapacity(capacity) && uint64_t(info.st_size) == mappedBytesFor(capacity),
             "the shared rings' size does not match their header", capacity);
  void* base = mapShared(fd.get(), mappedBytesFor(capacity));
  // The mapping is all we need: the fd closes here.
  return std::unique_ptr<SharedRings>(
      new SharedRings(UniqueFd(), base, mappedBytesFor(capacity), capacity, side));
}

SharedRings::SharedRings(UniqueFd fd, void* base, size_t mappedBytes, size_t capacity,
                         RingSide side)
    : fd_(std::move(fd)), base_(base), mappedBytes_(mappedBytes), capacity_(capacity),
      side_(side) {}

SharedRings::~SharedRings() { ::munmap(base_, mappedBytes_); }

SharedRings::Control& SharedRings::outgoing() {
  auto* controls = reinterpret_cast<Control*>(static_cast<kj::byte*>(base_) + kRingControlOffset);
  return controls[side_ == RingSide::kParent ? 0 : 1];
}

SharedRings::Control& SharedRings::incoming() {
  auto* controls = reinterpret_cast<Control*>(static_cast<kj::byte*>(base_) + kRingControlOffset);
  return controls[side_ == RingSide::kParent ? 1 : 0];
}

kj::byte* SharedRings::outgoingData() {
  return static_cast<kj::byte*>(base_) + kControlBytes +
         (side_ == RingSide::kParent ? 0 : capacity_);
}

kj::byte* SharedRings::incomingData() {
  return static_cast<kj::byte*>(base_) + kControlBytes +
         (side_ == RingSide::kParent ? capacity_ : 0);
}

void SharedRings::adoptPublishedPositions() {
  if (side_ != RingSide::kChild) return;
  writePosition_ = outgoing().writer.position.load(std::memory_order_relaxed);
  readPosition_ = incoming().reader.position.load(std::memory_order_relaxed);
}

size_t SharedRings::write(const kj::byte* data, size_t size) {
  adoptPublishedPositions();
  size_t n = std::min(size, outgoingSpace());
  if (n == 0) return 0;
  copyIn(outgoingData(), capacity_, writePosition_, data, n);
  writePosition_ += n;
  outgoing().writer.position.store(writePosition_, std::memory_order_release);
  return n;
}

size_t SharedRings::outgoingSpace() {
  uint64_t peerRead = outgoing().reader.position.load(std::memory_order_acquire);
  uint64_t used = writePosition_ - peerRead;
  KJ_REQUIRE(used <= capacity_, "the peer corrupted the shared ring it reads", peerRead,
             writePosition_);
  return size_t(capacity_ - used);
}

size_t SharedRings::available() {
  adoptPublishedPositions();
  uint64_t peerWrite = incoming().writer.position.load(std::memory_order_acquire);
  uint64_t ready = peerWrite - readPosition_;
  KJ_REQUIRE(ready <= capacity_, "the peer corrupted the shared ring it writes", peerWrite,
             readPosition_);
  return size_t(ready);
}

size_t SharedRings::read(kj::byte* out, size_t size) {
  size_t n = std::min(size, available());
  if (n == 0) return 0;
  copyOut(incomingData(), capacity_, readPosition_, out, n);
  readPosition_ += n;
  incoming().reader.position.store(readPosition_, std::memory_order_release);
  return n;
}

bool SharedRings::startWaitingForData() {
  incoming().reader.waiting.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (available() > 0) {
    stopWaitingForData();
    return false;
  }
  return true;
}

void SharedRings::stopWaitingForData() {
  incoming().reader.waiting.store(0, std::memory_order_relaxed);
}

bool SharedRings::startWaitingForSpace() {
  outgoing().writer.waiting.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (outgoingSpace() > 0) {
    stopWaitingForSpace();
    return false;
  }
  return true;
}

void SharedRings::stopWaitingForSpace() {
  outgoing().writer.waiting.store(0, std::memory_order_relaxed);
}

bool SharedRings::peerNeedsWakeForData() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto& flag = outgoing().reader.waiting;
  return flag.load(std::memory_order_relaxed) != 0 && flag.exchange(0) != 0;
}

bool SharedRings::peerNeedsWakeForSpace() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto& flag = incoming().writer.waiting;
  return flag.load(std::memory_order_relaxed) != 0 && flag.exchange(0) != 0;
}

void SharedRings::publishCpu(int cpu) {
  incoming().reader.cpu.store(uint32_t(cpu + 1), std::memory_order_relaxed);
}

int SharedRings::peerCpu() {
  return int(outgoing().reader.cpu.load(std::memory_order_relaxed)) - 1;
}

}  // namespace pi
