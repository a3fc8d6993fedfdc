// Tests runtime/channel.cpp: frames over a socketpair, partial reads and writes, typed errors.
#include "runtime/channel.h"

#include "runtime/process_id.h"
#include "runtime/shared_rings.h"

#include "protocol/isolation.capnp.h"
#include "protocol/limits.h"
#include "support/allocation_tracker.h"
#include "support/kj_expect.h"

#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <random>
#include <thread>
#include <vector>

namespace pi {
namespace {

using test::secondsSince;
using test::throwsKj;
using Clock = std::chrono::steady_clock;
constexpr auto kDisconnected = kj::Exception::Type::DISCONNECTED;
constexpr auto kOverloaded = kj::Exception::Type::OVERLOADED;
constexpr auto kFailed = kj::Exception::Type::FAILED;
// The bound for waits that should succeed at once; a bug fails the test instead of hanging it.
constexpr double kPatience = 10;

struct SocketPair {
  UniqueFd a;
  UniqueFd b;
};

SocketPair makeSocketPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
  }
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A thread joined when the guard goes, so a failing assertion cannot leave it running.
class JoiningThread {
 public:
  template <typename F>
  explicit JoiningThread(F&& body) : thread_(std::forward<F>(body)) {}
  ~JoiningThread() {
    if (thread_.joinable()) thread_.join();
  }
  void join() { thread_.join(); }

 private:
  std::thread thread_;
};

// Writes all of `bytes` to a blocking socket, `chunk` bytes per send() (MSG_NOSIGNAL: a closed
// peer is an error here, never a SIGPIPE that would end the test program).
void writeAll(int fd, const std::vector<kj::byte>& bytes, size_t chunk) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, std::min(chunk, bytes.size() - done), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("send: ") + strerror(errno));
    done += size_t(n);
  }
}

// A message whose request carries `callId` and a payload of `payloadBytes` bytes.
class TestMessage {
 public:
  TestMessage(uint64_t callId, size_t payloadBytes) {
    auto request = builder_.initRoot<wire::Message>().initRequest();
    request.setCallId(callId);
    request.setOp(wire::Op::GETATTR);
    request.setName("attr");
    auto payload = request.initArgs(1)[0].initBytes(unsigned(payloadBytes));
    for (size_t i = 0; i < payloadBytes; ++i) payload[i] = kj::byte(i * 7 + callId);
  }

  capnp::MessageBuilder& builder() { return builder_; }

  std::vector<kj::byte> bytes() {
    auto words = frameToWords(builder_);
    return std::vector<kj::byte>(words.asBytes().begin(), words.asBytes().end());
  }

 private:
  capnp::MallocMessageBuilder builder_;
};

// Checks that `frame` is TestMessage(callId, payloadBytes).
void expectMessage(IncomingFrame& frame, uint64_t callId, size_t payloadBytes) {
  auto message = frame.getRoot<wire::Message>();
  ASSERT_EQ(message.which(), wire::Message::REQUEST);
  auto request = message.getRequest();
  EXPECT_EQ(request.getCallId(), callId);
  EXPECT_EQ(std::string(request.getName().cStr()), "attr");
  ASSERT_EQ(request.getArgs().size(), 1u);
  auto payload = request.getArgs()[0].getBytes();
  ASSERT_EQ(payload.size(), payloadBytes);
  for (size_t i = 0; i < payloadBytes; ++i) {
    if (payload[i] != kj::byte(i * 7 + callId)) {
      FAIL() << "payload byte " << i << " differs";
    }
  }
}

void sendMessage(Channel& channel, TestMessage& message, Deadline deadline) {
  OutgoingFrame frame(message.builder());
  channel.send(frame.pieces(), deadline);
}

TEST(Channel, SendsAndReceivesAFrame) {
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  Channel b(std::move(pair.b));

  TestMessage message(1, 100);
  sendMessage(a, message, Deadline::after(kPatience));
  auto frame = b.receive(Deadline::after(kPatience));
  expectMessage(frame, 1, 100);
  EXPECT_FALSE(b.hasBufferedFrame());

  // And the other way.
  TestMessage reply(2, 3);
  sendMessage(b, reply, Deadline::after(kPatience));
  auto replyFrame = a.receive(Deadline::after(kPatience));
  expectMessage(replyFrame, 2, 3);
}

TEST(Channel, ReceivesSeveralFramesDeliveredInOneWrite) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));

  std::vector<kj::byte> bytes;
  for (uint64_t id = 1; id <= 3; ++id) {
    auto one = TestMessage(id, id * 10).bytes();
    bytes.insert(bytes.end(), one.begin(), one.end());
  }
  writeAll(pair.a.get(), bytes, bytes.size());

  auto first = b.receive(Deadline::after(kPatience));
  expectMessage(first, 1, 10);
  EXPECT_TRUE(b.hasBufferedFrame());  // the rest arrived with the first read
  auto second = b.receive(Deadline::after(kPatience));
  expectMessage(second, 2, 20);
  auto third = b.receive(Deadline::after(kPatience));
  expectMessage(third, 3, 30);
  EXPECT_FALSE(b.hasBufferedFrame());
}

TEST(Channel, SendsManyFramesInOneCall) {
  // More pieces than one sendmsg takes, so send() has to go on from where a batch ended.
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  Channel b(std::move(pair.b));

  constexpr int kFrames = 700;
  std::vector<std::unique_ptr<TestMessage>> messages;
  std::vector<std::unique_ptr<OutgoingFrame>> frames;
  std::vector<kj::ArrayPtr<const kj::byte>> pieces;
  for (int i = 0; i < kFrames; ++i) {
    messages.push_back(std::make_unique<TestMessage>(uint64_t(i), size_t(i % 50)));
    frames.push_back(std::make_unique<OutgoingFrame>(messages.back()->builder()));
    for (auto piece : frames.back()->pieces()) pieces.push_back(piece);
  }
  ASSERT_GT(pieces.size(), 1024u);

  JoiningThread sender([&] { a.send(kj::arrayPtr(pieces.data(), pieces.size()),
                                    Deadline::after(kPatience)); });
  for (int i = 0; i < kFrames; ++i) {
    auto frame = b.receive(Deadline::after(kPatience));
    expectMessage(frame, uint64_t(i), size_t(i % 50));
    if (HasFatalFailure()) return;
  }
}

TEST(Channel, ReceivesAFrameSplitAcrossManySmallWrites) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));

  // Several segments, so the header is longer than one word and arrives in pieces too.
  capnp::MallocMessageBuilder builder(8, capnp::AllocationStrategy::FIXED_SIZE);
  auto request = builder.initRoot<wire::Message>().initRequest();
  request.setCallId(77);
  auto args = request.initArgs(20);
  for (unsigned i = 0; i < 20; ++i) args[i].initBytes(100 + i)[0] = kj::byte(i);
  ASSERT_GT(builder.getSegmentsForOutput().size(), 2u);
  auto words = frameToWords(builder);
  std::vector<kj::byte> bytes(words.asBytes().begin(), words.asBytes().end());

  JoiningThread writer([&] { writeAll(pair.a.get(), bytes, 1); });
  auto frame = b.receive(Deadline::after(kPatience));
  writer.join();

  auto received = frame.getRoot<wire::Message>().getRequest();
  EXPECT_EQ(received.getCallId(), 77u);
  ASSERT_EQ(received.getArgs().size(), 20u);
  for (unsigned i = 0; i < 20; ++i) {
    EXPECT_EQ(received.getArgs()[i].getBytes().size(), 100 + i);
    EXPECT_EQ(received.getArgs()[i].getBytes()[0], kj::byte(i));
  }
}

TEST(Channel, SendsAndReceivesAFrameLargerThanTheSocketBuffer) {
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  Channel b(std::move(pair.b));

  constexpr size_t kPayload = 8 << 20;
  TestMessage message(5, kPayload);
  JoiningThread sender([&] { sendMessage(a, message, Deadline::after(kPatience)); });
  auto frame = b.receive(Deadline::after(kPatience));
  expectMessage(frame, 5, kPayload);
}

TEST(Channel, ReceiveReportsDisconnectedAtEndOfStream) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  pair.a.reset();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { b.receive(Deadline::after(kPatience)); }));
}

TEST(Channel, ReceiveReportsDisconnectedWhenThePeerClosesMidFrame) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  auto bytes = TestMessage(1, 1000).bytes();
  bytes.resize(bytes.size() / 2);
  writeAll(pair.a.get(), bytes, bytes.size());
  pair.a.reset();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { b.receive(Deadline::after(kPatience)); }));
}

TEST(Channel, SendReportsDisconnectedWhenThePeerHasClosed) {
  // Also shows that a send to a closed peer raises no SIGPIPE (which would end this process).
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  pair.b.reset();
  TestMessage message(1, 10);
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { sendMessage(a, message, Deadline::after(kPatience)); }));
}

TEST(Channel, ShutdownMakesThePeerSeeEndOfStream) {
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  Channel b(std::move(pair.b));
  a.shutdown();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { b.receive(Deadline::after(kPatience)); }));
  TestMessage message(1, 10);
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { sendMessage(a, message, Deadline::after(kPatience)); }));
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { a.receive(Deadline::after(kPatience)); }));
}

TEST(Channel, ReceiveThrowsOverloadedWhenTheDeadlinePasses) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { b.receive(Deadline::after(0.2)); }));
  double elapsed = secondsSince(start);
  EXPECT_GE(elapsed, 0.19);
  EXPECT_LT(elapsed, 2.0);
}

TEST(Channel, ReceiveWithAnExpiredDeadlineThrowsOverloadedAtOnce) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { b.receive(Deadline::after(0)); }));
  EXPECT_LT(secondsSince(start), 1.0);
}

TEST(Channel, SendThrowsOverloadedWhenThePeerDoesNotRead) {
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  TestMessage big(1, 32 << 20);  // far more than a socket buffer holds
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { sendMessage(a, big, Deadline::after(0.2)); }));
  double elapsed = secondsSince(start);
  EXPECT_GE(elapsed, 0.19);
  EXPECT_LT(elapsed, 2.0);
}

TEST(Channel, ReceiveRejectsAnOversizedHeaderWithoutAllocatingIt) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  const uint32_t header[2] = {0, 0xffffffffu};  // one segment of 2^32-1 words (32 GiB)
  std::vector<kj::byte> bytes(8);
  memcpy(bytes.data(), header, 8);
  writeAll(pair.a.get(), bytes, bytes.size());

  test::AllocationTracker allocations;
  EXPECT_TRUE(throwsKj(kFailed, [&] { b.receive(Deadline::after(kPatience)); }, "limit"));
  EXPECT_LT(allocations.largest(), size_t{1} << 20);
}

TEST(Channel, ReceiveRejectsTooManySegmentsFromThePeer) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  const uint32_t header[2] = {kMaxSegments, 1};
  std::vector<kj::byte> bytes(8);
  memcpy(bytes.data(), header, 8);
  writeAll(pair.a.get(), bytes, bytes.size());
  EXPECT_TRUE(throwsKj(kFailed, [&] { b.receive(Deadline::after(kPatience)); }, "segments"));
}

TEST(Channel, CallsTheWaitHookPeriodicallyWhileWaiting) {
  auto pair = makeSocketPair();
  Channel b(std::move(pair.b));
  int calls = 0;
  b.setWaitHook([&] { ++calls; }, 10);
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { b.receive(Deadline::after(0.3)); }));
  // About 30 periods of 10 ms; allow for a slow machine but not for a hook that never runs.
  EXPECT_GE(calls, 5);
  EXPECT_LE(calls, 40);
}

TEST(Channel, AWaitHookThatThrowsAbandonsTheWaitAndLeavesTheChannelUsable) {
  auto pair = makeSocketPair();
  Channel a(std::move(pair.a));
  Channel b(std::move(pair.b));
  int calls = 0;
  b.setWaitHook(
      [&] {
        if (++calls == 3) throw std::runtime_error("interrupted");
      },
      10);
  auto start = Clock::now();
  EXPECT_THROW(b.receive(Deadline::after(kPatience)), std::runtime_error);
  EXPECT_LT(secondsSince(start), kPatience / 2);
  EXPECT_EQ(calls, 3);

  b.setWaitHook(nullptr, 0);
  TestMessage message(9, 9);
  sendMessage(a, message, Deadline::after(kPatience));
  auto frame = b.receive(Deadline::after(kPatience));
  expectMessage(frame, 9, 9);
}

TEST(Channel, ClosesItsSocketWhenDestroyed) {
  auto pair = makeSocketPair();
  int fd = pair.a.get();
  { Channel a(std::move(pair.a)); }
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);
  char byte;
  EXPECT_EQ(::read(pair.b.get(), &byte, 1), 0);  // the peer sees end of stream
}


// ---- ring mode ------------------------------------------------------------------------------

// Two channels over a socketpair switched to shared rings, as a parent and its child do after
// the setup frame. `capacity` is each ring's size.
struct RingPair {
  explicit RingPair(size_t capacity = SharedRings::kMinCapacity) {
    auto sockets = makeSocketPair();
    rawParent = sockets.a.get();
    rawChild = sockets.b.get();
    parent = std::make_unique<Channel>(std::move(sockets.a));
    child = std::make_unique<Channel>(std::move(sockets.b));
    auto rings = SharedRings::create(capacity);
    UniqueFd fd = rings->takeFd();
    parent->useRings(std::move(rings));
    child->useRings(SharedRings::attach(std::move(fd), RingSide::kChild));
  }
  std::unique_ptr<Channel> parent;
  std::unique_ptr<Channel> child;
  int rawParent;  // the sockets under them, still owned by the channels
  int rawChild;
};

TEST(ChannelRings, SendsAndReceivesFramesBothWays) {
  RingPair pair;
  EXPECT_TRUE(pair.parent->usesRings());
  TestMessage down(1, 100);
  sendMessage(*pair.parent, down, Deadline::after(kPatience));
  auto frame = pair.child->receive(Deadline::after(kPatience));
  expectMessage(frame, 1, 100);
  TestMessage up(2, 3);
  sendMessage(*pair.child, up, Deadline::after(kPatience));
  auto reply = pair.parent->receive(Deadline::after(kPatience));
  expectMessage(reply, 2, 3);
}

TEST(ChannelRings, NothingCrossesTheSocketForAFrameWhenThePeerIsAwake) {
  RingPair pair;
  TestMessage down(1, 10);
  sendMessage(*pair.parent, down, Deadline::after(kPatience));
  // The child was not sleeping: no wake-up byte was needed.
  char byte;
  EXPECT_EQ(::recv(pair.rawChild, &byte, 1, MSG_DONTWAIT | MSG_PEEK), -1);
  auto frame = pair.child->receive(Deadline::after(kPatience));
  expectMessage(frame, 1, 10);
}

TEST(ChannelRings, StreamsAFrameManyTimesLargerThanTheRing) {
  RingPair pair;  // 4 KiB rings
  constexpr size_t kPayload = 3 << 20;
  TestMessage message(5, kPayload);
  JoiningThread sender([&] { sendMessage(*pair.parent, message, Deadline::after(kPatience)); });
  auto frame = pair.child->receive(Deadline::after(kPatience));
  expectMessage(frame, 5, kPayload);
}

TEST(ChannelRings, WrapsAroundOverManyFramesWithoutLosingAWakeUp) {
  // Ping-pong with random pauses on both sides, so that each side is found spinning, asleep and
  // in between by the other's writes: a lost wake-up hangs a receive until its deadline.
  RingPair pair;
  constexpr int kRounds = 3000;
  JoiningThread echo([&] {
    std::mt19937 random(1);
    for (int i = 0; i < kRounds; ++i) {
      auto frame = pair.child->receive(Deadline::after(kPatience));
      uint64_t id = frame.getRoot<wire::Message>().getRequest().getCallId();
      if (random() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(random() % 300));
      TestMessage reply(id, size_t(id % 700));
      sendMessage(*pair.child, reply, Deadline::after(kPatience));
    }
  });
  std::mt19937 random(2);
  for (int i = 0; i < kRounds; ++i) {
    TestMessage request(uint64_t(i), size_t(i % 900));
    sendMessage(*pair.parent, request, Deadline::after(kPatience));
    if (random() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(random() % 300));
    auto frame = pair.parent->receive(Deadline::after(kPatience));
    expectMessage(frame, uint64_t(i), size_t(i % 700));
    if (HasFatalFailure()) return;
  }
}

TEST(ChannelRings, CarriesFileDescriptorsWithTheirFrame) {
  RingPair pair;
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  UniqueFd readEnd(pipes[0]), writeEnd(pipes[1]);
  TestMessage first(1, 10);
  TestMessage second(2, 20);
  OutgoingFrame firstFrame(first.builder());
  OutgoingFrame secondFrame(second.builder());
  int fds[] = {writeEnd.get()};
  pair.parent->send(firstFrame.pieces(), Deadline::after(kPatience));
  pair.parent->send(secondFrame.pieces(), Deadline::after(kPatience), kj::arrayPtr(fds, 1));
  auto a = pair.child->receive(Deadline::after(kPatience));
  expectMessage(a, 1, 10);
  auto b = pair.child->receive(Deadline::after(kPatience));
  expectMessage(b, 2, 20);
  auto received = pair.child->takeFds(1);
  ASSERT_EQ(received.size(), 1u);
  ASSERT_EQ(::write(received[0].get(), "x", 1), 1);  // the same pipe
  char byte = 0;
  ASSERT_EQ(::read(readEnd.get(), &byte, 1), 1);
  EXPECT_EQ(byte, 'x');
}

TEST(ChannelRings, AFrameClaimingFdsThatNeverCameIsRefused) {
  RingPair pair;
  TestMessage message(1, 10);
  sendMessage(*pair.parent, message, Deadline::after(kPatience));
  auto frame = pair.child->receive(Deadline::after(kPatience));
  EXPECT_TRUE(throwsKj(kFailed, [&] { pair.child->takeFds(1); }, "did not send"));
}

TEST(ChannelRings, ReadsWhatThePeerWroteBeforeItClosed) {
  RingPair pair;
  TestMessage last(7, 50);
  sendMessage(*pair.child, last, Deadline::after(kPatience));
  pair.child.reset();  // closes its socket: the parent sees EOF, but the frame is in the ring
  auto frame = pair.parent->receive(Deadline::after(kPatience));
  expectMessage(frame, 7, 50);
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { pair.parent->receive(Deadline::after(kPatience)); }));
}

TEST(ChannelRings, AFrameCutOffByThePeersEndIsDisconnected) {
  RingPair pair;
  TestMessage big(8, 100 << 10);  // far larger than the 4 KiB ring: the peer stops mid-frame
  JoiningThread sender([&] {
    try {
      sendMessage(*pair.child, big, Deadline::after(0.3));
    } catch (kj::Exception&) {
      // OVERLOADED: the parent stopped reading, as planned.
    }
  });
  // Read a little, then the sender gives up and goes away.
  sender.join();
  pair.child.reset();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { pair.parent->receive(Deadline::after(kPatience)); }));
}

TEST(ChannelRings, ASleepingReceiverSeesThePeerGo) {
  RingPair pair;
  JoiningThread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pair.child->shutdown();
  });
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { pair.parent->receive(Deadline::after(kPatience)); }));
  EXPECT_LT(secondsSince(start), kPatience / 2);
}

TEST(ChannelRings, ReceiveThrowsOverloadedWhenTheDeadlinePasses) {
  RingPair pair;
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { pair.parent->receive(Deadline::after(0.2)); }));
  double elapsed = secondsSince(start);
  EXPECT_GE(elapsed, 0.19);
  EXPECT_LT(elapsed, 2.0);
}

TEST(ChannelRings, SendThrowsOverloadedWhenThePeerDoesNotRead) {
  RingPair pair;
  TestMessage big(1, 1 << 20);  // far more than a 4 KiB ring holds
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kOverloaded,
                       [&] { sendMessage(*pair.parent, big, Deadline::after(0.2)); }));
  EXPECT_LT(secondsSince(start), 2.0);
}

TEST(ChannelRings, BytesOnTheSocketOtherThanWakeUpsAreRefused) {
  RingPair pair;
  std::vector<kj::byte> junk{'h', 'i'};
  writeAll(pair.rawChild, junk, junk.size());
  EXPECT_TRUE(throwsKj(kFailed, [&] { pair.parent->receive(Deadline::after(kPatience)); },
                       "outside the protocol"));
}

TEST(ChannelRings, SwitchingWithAPartFrameBufferedIsRefused) {
  auto sockets = makeSocketPair();
  Channel b(std::move(sockets.b));
  auto bytes = TestMessage(1, 10).bytes();
  auto half = std::vector<kj::byte>(bytes.begin(), bytes.begin() + 12);
  writeAll(sockets.a.get(), bytes, bytes.size());
  writeAll(sockets.a.get(), half, half.size());
  auto frame = b.receive(Deadline::after(kPatience));  // reads ahead the 12 bytes too
  expectMessage(frame, 1, 10);
  auto rings = SharedRings::create(SharedRings::kMinCapacity);
  EXPECT_TRUE(throwsKj(kFailed, [&] { b.useRings(std::move(rings)); }, "outside the protocol"));
}

TEST(ChannelRings, TheWaitHookRunsWhileAReceiverSleeps) {
  RingPair pair;
  int calls = 0;
  pair.parent->setWaitHook([&] { ++calls; }, 10);
  EXPECT_TRUE(throwsKj(kOverloaded, [&] { pair.parent->receive(Deadline::after(0.3)); }));
  EXPECT_GE(calls, 5);
}

// ---- the peer process's end ----------------------------------------------------------------

// A process that has exited (a zombie until the guard reaps it), with a pidfd watching it: the
// peer of a channel whose socket something else (here, the test) keeps open, as a grandchild
// that inherited it does.
class ExitedPeer {
 public:
  ExitedPeer() {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + strerror(errno));
    if (pid_ == 0) ::_exit(0);
    pidfd_ = openPidfd(pid_);
  }
  ~ExitedPeer() {
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  bool hasPidfd() const { return bool(pidfd_); }
  UniqueFd takePidfd() { return std::move(pidfd_); }

 private:
  pid_t pid_;
  UniqueFd pidfd_;
};

#define REQUIRE_PIDFD(peer) \
  if (!(peer).hasPidfd()) GTEST_SKIP() << "this kernel has no pidfd_open"

TEST(Channel, AReceiveEndsWhenThePeerProcessExitsThoughItsSocketStaysOpen) {
  auto pair = makeSocketPair();  // pair.b stays open: the grandchild's copy
  Channel parent(std::move(pair.a));
  ExitedPeer peer;
  REQUIRE_PIDFD(peer);
  parent.watchPeerExit(peer.takePidfd());
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { parent.receive(Deadline::after(kPatience)); },
                       "peer process exited"));
  EXPECT_LT(secondsSince(start), 1.0);  // one look every kPeerExitCheckMillis
}

TEST(Channel, WhatThePeerSentBeforeItExitedIsReadFirst) {
  auto pair = makeSocketPair();
  Channel parent(std::move(pair.a));
  auto bytes = TestMessage(5, 40).bytes();
  writeAll(pair.b.get(), bytes, bytes.size());
  ExitedPeer peer;
  REQUIRE_PIDFD(peer);
  parent.watchPeerExit(peer.takePidfd());
  auto frame = parent.receive(Deadline::after(kPatience));
  expectMessage(frame, 5, 40);
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { parent.receive(Deadline::after(kPatience)); }));
}

TEST(Channel, AWaitThatDrainsOutputEndsWhenThePeerProcessExits) {
  auto pair = makeSocketPair();
  Channel parent(std::move(pair.a));
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC | O_NONBLOCK), 0);
  UniqueFd readEnd(pipes[0]), writeEnd(pipes[1]);  // the write end stays open too
  std::string drained;
  parent.addDrain(readEnd.get(), [&](const char* data, size_t size) { drained.append(data, size); });
  ASSERT_EQ(::write(writeEnd.get(), "last words", 10), 10);
  ExitedPeer peer;
  REQUIRE_PIDFD(peer);
  parent.watchPeerExit(peer.takePidfd());
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { parent.receive(Deadline::after(kPatience)); }));
  EXPECT_LT(secondsSince(start), 1.0);
  EXPECT_EQ(drained, "last words");
  parent.clearDrains();
}

TEST(Channel, ASendBlockedOnAFullSocketEndsWhenThePeerProcessExits) {
  auto pair = makeSocketPair();  // nobody reads pair.b
  Channel parent(std::move(pair.a));
  ExitedPeer peer;
  REQUIRE_PIDFD(peer);
  parent.watchPeerExit(peer.takePidfd());
  TestMessage big(9, 16 << 20);  // far more than the socket buffer holds
  EXPECT_TRUE(throwsKj(kDisconnected,
                       [&] { sendMessage(parent, big, Deadline::after(kPatience)); },
                       "peer process exited"));
}

TEST(ChannelRings, ASleepingReceiverSeesThePeerProcessExitAfterReadingTheRing) {
  RingPair pair;  // the child's channel stays: its socket stays open
  TestMessage last(6, 30);
  sendMessage(*pair.child, last, Deadline::after(kPatience));
  ExitedPeer peer;
  REQUIRE_PIDFD(peer);
  pair.parent->watchPeerExit(peer.takePidfd());
  auto frame = pair.parent->receive(Deadline::after(kPatience));
  expectMessage(frame, 6, 30);
  auto start = Clock::now();
  EXPECT_TRUE(throwsKj(kDisconnected, [&] { pair.parent->receive(Deadline::after(kPatience)); },
                       "peer process exited"));
  EXPECT_LT(secondsSince(start), 1.0);
}

}  // namespace
}  // namespace pi
