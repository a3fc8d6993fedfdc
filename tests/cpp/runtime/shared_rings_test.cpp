// Tests runtime/shared_rings.cpp: the layout both ends agree on, wrap-around, the checks of what
// a hostile peer can write into the mapping, and the sleep flags.
#include "runtime/shared_rings.h"

#include "support/kj_expect.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace pi {
namespace {

using test::throwsKj;
constexpr auto kFailed = kj::Exception::Type::FAILED;
constexpr size_t kCapacity = SharedRings::kMinCapacity;

struct Ends {
  std::unique_ptr<SharedRings> parent;
  std::unique_ptr<SharedRings> child;
};

Ends makeEnds(size_t capacity = kCapacity) {
  Ends ends;
  ends.parent = SharedRings::create(capacity);
  ends.child = SharedRings::attach(ends.parent->takeFd(), RingSide::kChild);
  return ends;
}

std::vector<kj::byte> pattern(size_t size, int seed) {
  std::vector<kj::byte> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = kj::byte(i * 31 + seed);
  return bytes;
}

std::vector<kj::byte> readAll(SharedRings& rings, size_t size) {
  std::vector<kj::byte> out(size);
  size_t done = 0;
  while (done < size) {
    size_t n = rings.read(out.data() + done, size - done);
    if (n == 0) break;
    done += n;
  }
  out.resize(done);
  return out;
}

// The mapping of `fd`, to play a hostile peer writing into it.
struct RawMapping {
  explicit RawMapping(int fd) {
    struct stat info;
    EXPECT_EQ(::fstat(fd, &info), 0);
    size = size_t(info.st_size);
    base = static_cast<kj::byte*>(
        ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    EXPECT_NE(base, MAP_FAILED);
  }
  ~RawMapping() { ::munmap(base, size); }
  // A cursor's position: ring 0 is parent -> child, cursor 0 the writer, 1 the reader.
  std::atomic<uint64_t>& position(int ring, int cursor) {
    return *reinterpret_cast<std::atomic<uint64_t>*>(base + 64 + 128 * ring + 64 * cursor);
  }
  kj::byte* base;
  size_t size;
};

TEST(SharedRings, CarriesBytesBothWays) {
  Ends ends = makeEnds();
  auto down = pattern(1000, 1);
  auto up = pattern(700, 2);
  EXPECT_EQ(ends.parent->write(down.data(), down.size()), down.size());
  EXPECT_EQ(ends.child->write(up.data(), up.size()), up.size());
  EXPECT_EQ(ends.child->available(), down.size());
  EXPECT_EQ(ends.parent->available(), up.size());
  EXPECT_EQ(readAll(*ends.child, down.size()), down);
  EXPECT_EQ(readAll(*ends.parent, up.size()), up);
  EXPECT_EQ(ends.child->available(), 0u);
  EXPECT_EQ(ends.parent->available(), 0u);
}

TEST(SharedRings, WritesOnlyWhatFitsAndWrapsAround) {
  Ends ends = makeEnds();
  auto bytes = pattern(3 * kCapacity + 123, 3);
  std::vector<kj::byte> received;
  size_t sent = 0;
  while (sent < bytes.size()) {
    size_t n = ends.parent->write(bytes.data() + sent, std::min<size_t>(1500, bytes.size() - sent));
    sent += n;
    EXPECT_LE(ends.child->available(), kCapacity);
    if (n == 0 || sent % 3 == 0) {
      auto got = readAll(*ends.child, ends.child->available());
      received.insert(received.end(), got.begin(), got.end());
    }
  }
  auto rest = readAll(*ends.child, ends.child->available());
  received.insert(received.end(), rest.begin(), rest.end());
  EXPECT_EQ(received, bytes);
}

TEST(SharedRings, AFullRingTakesNothingMore) {
  Ends ends = makeEnds();
  auto bytes = pattern(kCapacity, 4);
  EXPECT_EQ(ends.parent->write(bytes.data(), bytes.size()), kCapacity);
  EXPECT_EQ(ends.parent->outgoingSpace(), 0u);
  EXPECT_EQ(ends.parent->write(bytes.data(), 1), 0u);
  kj::byte one;
  EXPECT_EQ(ends.child->read(&one, 1), 1u);
  EXPECT_EQ(ends.parent->outgoingSpace(), 1u);
}

TEST(SharedRings, TheParentRefusesAWritePositionAheadOfWhatTheRingHolds) {
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  RawMapping hostile(fd.get());
  hostile.position(1, 0).store(kCapacity + 1);
  EXPECT_TRUE(throwsKj(kFailed, [&] { parent->available(); }, "corrupted"));
  kj::byte out[8];
  EXPECT_TRUE(throwsKj(kFailed, [&] { parent->read(out, sizeof(out)); }, "corrupted"));
}

TEST(SharedRings, TheParentRefusesAWritePositionBehindWhatItRead) {
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  RawMapping hostile(fd.get());
  hostile.position(1, 0).store(16);
  kj::byte out[16];
  EXPECT_EQ(parent->read(out, sizeof(out)), 16u);
  hostile.position(1, 0).store(8);  // goes back
  EXPECT_TRUE(throwsKj(kFailed, [&] { parent->available(); }, "corrupted"));
}

TEST(SharedRings, TheParentRefusesAReadPositionBeyondWhatItWrote) {
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  RawMapping hostile(fd.get());
  auto bytes = pattern(100, 5);
  EXPECT_EQ(parent->write(bytes.data(), bytes.size()), 100u);
  hostile.position(0, 1).store(101);  // claims to have read more than there was
  EXPECT_TRUE(throwsKj(kFailed, [&] { parent->write(bytes.data(), 1); }, "corrupted"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { parent->outgoingSpace(); }, "corrupted"));
}

TEST(SharedRings, TheParentNeverReadsItsOwnPositionsBack) {
  // A child that rewinds the parent's published write position cannot make the parent write
  // over bytes it has not read, or lose track of its own stream.
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  RawMapping hostile(fd.get());
  auto bytes = pattern(64, 6);
  EXPECT_EQ(parent->write(bytes.data(), bytes.size()), 64u);
  hostile.position(0, 0).store(0);
  EXPECT_EQ(parent->write(bytes.data(), bytes.size()), 64u);
  EXPECT_EQ(hostile.position(0, 0).load(), 128u);
}

TEST(SharedRings, TheChildTakesItsPositionsFromTheMapping) {
  // Code of the child's own may speak the protocol by hand between the runtime's reads and
  // writes (the hostile-child test fixtures do): the child's runtime follows the cursors.
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  UniqueFd copy(::dup(fd.get()));
  auto child = SharedRings::attach(std::move(fd), RingSide::kChild);
  RawMapping byHand(copy.get());
  auto bytes = pattern(30, 7);
  ASSERT_EQ(parent->write(bytes.data(), bytes.size()), 30u);
  byHand.position(0, 1).store(10);  // someone in the child consumed the first 10 bytes
  EXPECT_EQ(readAll(*child, 20), std::vector<kj::byte>(bytes.begin() + 10, bytes.end()));
}

TEST(SharedRings, SleepFlagsTellTheOtherSideToSendAWakeUp) {
  Ends ends = makeEnds();
  EXPECT_FALSE(ends.parent->peerNeedsWakeForData());
  // The child finds its ring empty and goes to sleep.
  EXPECT_TRUE(ends.child->startWaitingForData());
  auto bytes = pattern(5, 9);
  ends.parent->write(bytes.data(), bytes.size());
  EXPECT_TRUE(ends.parent->peerNeedsWakeForData());
  EXPECT_FALSE(ends.parent->peerNeedsWakeForData());  // one wake-up per sleep
  ends.child->stopWaitingForData();
  // With bytes already there, it does not sleep at all.
  EXPECT_FALSE(ends.child->startWaitingForData());
  EXPECT_FALSE(ends.parent->peerNeedsWakeForData());
}

TEST(SharedRings, AWriterWaitingForSpaceIsWokenByTheReader) {
  Ends ends = makeEnds();
  auto bytes = pattern(kCapacity, 10);
  ASSERT_EQ(ends.child->write(bytes.data(), bytes.size()), kCapacity);
  EXPECT_TRUE(ends.child->startWaitingForSpace());
  kj::byte some[100];
  ASSERT_EQ(ends.parent->read(some, sizeof(some)), sizeof(some));
  EXPECT_TRUE(ends.parent->peerNeedsWakeForSpace());
  ends.child->stopWaitingForSpace();
  EXPECT_FALSE(ends.child->startWaitingForSpace());  // there is room now
}

TEST(SharedRings, AttachRefusesAMemfdThatCanBeResized) {
  int raw = ::memfd_create("not-sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(raw, 0);
  UniqueFd fd(raw);
  ASSERT_EQ(::ftruncate(fd.get(), 4096 + 2 * kCapacity), 0);
  EXPECT_TRUE(throwsKj(kFailed, [&] { SharedRings::attach(std::move(fd), RingSide::kChild); },
                       "sealed"));
}

TEST(SharedRings, AttachRefusesASizeThatDoesNotMatchTheHeader) {
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  {
    RawMapping raw(fd.get());
    uint32_t wrong = kCapacity * 2;
    memcpy(raw.base + 12, &wrong, sizeof(wrong));
  }
  EXPECT_TRUE(throwsKj(kFailed, [&] { SharedRings::attach(std::move(fd), RingSide::kChild); },
                       "size"));
}

TEST(SharedRings, AttachRefusesAnUnknownLayout) {
  auto parent = SharedRings::create(kCapacity);
  UniqueFd fd = parent->takeFd();
  {
    RawMapping raw(fd.get());
    raw.base[0] ^= 0xff;
  }
  EXPECT_TRUE(throwsKj(kFailed, [&] { SharedRings::attach(std::move(fd), RingSide::kChild); },
                       "layout"));
}

TEST(SharedRings, CreateRefusesACapacityThatIsNotAPowerOfTwo) {
  EXPECT_TRUE(throwsKj(kFailed, [&] { SharedRings::create(kCapacity + 1); }, "power of two"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { SharedRings::create(SharedRings::kMaxCapacity * 2); }));
}

TEST(SharedRings, TheMappingIsNotInheritedByAFork) {
  auto parent = SharedRings::create(kCapacity);
  // Find our mapping's address in /proc/self/maps, then check a forked child has nothing there.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* maps = ::fopen("/proc/self/maps", "r");
    char line[512];
    bool found = false;
    while (maps != nullptr && ::fgets(line, sizeof(line), maps) != nullptr) {
      if (::strstr(line, "process_isolation-rings") != nullptr) found = true;
    }
    ::_exit(found ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the forked child still maps the rings";
}

}  // namespace
}  // namespace pi
