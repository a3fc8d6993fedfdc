// Google Benchmark of the C++ pieces every proxied call goes through: building and framing a
// request, reading a frame back, the value codec, and a frame's round trip through a channel
// (shared rings, or the socket alone) between two threads. Run by `make bench`.
#include "protocol/framing.h"
#include "protocol/isolation.capnp.h"
#include "proxy/value_codec.h"
#include "runtime/channel.h"
#include "runtime/shared_rings.h"

#include <benchmark/benchmark.h>
#include <capnp/message.h>
#include <pybind11/embed.h>

#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <thread>

namespace py = pybind11;

namespace {

// A codec peer that exports nothing: the benchmarked values are all by value.
class NoPeer : public pi::CodecPeer {
 public:
  void exportRef(py::handle, pi::wire::Ref::Builder) override {}
  py::object importRef(pi::wire::Ref::Reader) override { return py::none(); }
  py::object resolveBack(uint64_t, uint32_t) override { return py::none(); }
  bool peerIdOf(py::handle, uint64_t&) override { return false; }
  int attachFd(pi::UniqueFd) override { return -1; }
  pi::UniqueFd takeFd(uint32_t) override { return pi::UniqueFd(); }
};

// Builds a call request with `args` in a reused zeroed first segment, as the endpoint does.
void buildRequest(kj::ArrayPtr<capnp::word> scratch, pi::ValueCodec& codec, py::handle args) {
  capnp::MallocMessageBuilder message(scratch);
  auto request = message.initRoot<pi::wire::Message>().initRequest();
  request.setCallId(1);
  request.setOp(pi::wire::Op::CALL);
  request.setTarget(7);
  py::tuple tuple = py::reinterpret_borrow<py::tuple>(args);
  auto out = request.initArgs(unsigned(tuple.size()));
  for (unsigned i = 0; i < tuple.size(); ++i) codec.encode(tuple[i], out[i]);
  pi::OutgoingFrame frame(message);
  benchmark::DoNotOptimize(frame.totalBytes());
}

void encodeRequest(benchmark::State& state, const char* args) {
  NoPeer peer;
  pi::ValueCodec codec(peer);
  py::object value = py::eval(args);
  auto scratch = kj::heapArray<capnp::word>(1024);
  memset(scratch.begin(), 0, scratch.asBytes().size());
  for (auto _ : state) buildRequest(scratch, codec, value);
}

void decodeRequest(benchmark::State& state, const char* args) {
  NoPeer peer;
  pi::ValueCodec codec(peer);
  capnp::MallocMessageBuilder message;
  auto request = message.initRoot<pi::wire::Message>().initRequest();
  py::tuple tuple = py::eval(args);
  auto out = request.initArgs(unsigned(tuple.size()));
  for (unsigned i = 0; i < tuple.size(); ++i) codec.encode(tuple[i], out[i]);
  kj::Array<capnp::word> words = pi::frameToWords(message);
  for (auto _ : state) {
    // What a receiver does: check the header, copy the frame out of its buffer, read it.
    auto size = pi::peekFrameSize(words.asBytes());
    auto copy = kj::heapArray<capnp::word>(words.size());
    memcpy(copy.begin(), words.begin(), words.asBytes().size());
    pi::IncomingFrame frame(kj::mv(copy), *size);
    for (auto arg : frame.getRoot<pi::wire::Message>().getRequest().getArgs()) {
      benchmark::DoNotOptimize(codec.decode(arg).ptr());
    }
  }
}

void peekHeader(benchmark::State& state) {
  capnp::MallocMessageBuilder message;
  message.initRoot<pi::wire::Message>().initRequest().setCallId(1);
  kj::Array<capnp::word> words = pi::frameToWords(message);
  for (auto _ : state) benchmark::DoNotOptimize(pi::peekFrameSize(words.asBytes()));
}

// A small request frame sent by one thread and echoed by another: what a held call costs in
// the channel alone (no Python), with the transport's waiting policy as a call meets it.
void channelRoundTrip(benchmark::State& state, bool rings) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  pi::Channel parent{pi::UniqueFd(fds[0])};
  auto child = std::make_unique<pi::Channel>(pi::UniqueFd(fds[1]));
  if (rings) {
    auto shared = pi::SharedRings::create();
    pi::UniqueFd memfd = shared->takeFd();
    parent.useRings(std::move(shared));
    child->useRings(pi::SharedRings::attach(std::move(memfd), pi::RingSide::kChild));
  }
  capnp::MallocMessageBuilder message;
  message.initRoot<pi::wire::Message>().initRequest().setCallId(1);
  pi::OutgoingFrame frame(message);
  std::thread echo([&] {
    try {
      for (;;) {
        pi::IncomingFrame got = child->receive(pi::Deadline::after(10));
        child->send(frame.pieces(), pi::Deadline::after(10));
      }
    } catch (kj::Exception&) {
      // The parent shut down: done.
    }
  });
  for (auto _ : state) {
    parent.send(frame.pieces(), pi::Deadline::after(10));
    benchmark::DoNotOptimize(parent.receive(pi::Deadline::after(10)).totalBytes());
  }
  parent.shutdown();
  echo.join();
}

constexpr const char kNoArgs[] = "()";
constexpr const char kOneInt[] = "(1,)";
constexpr const char kMixed[] = "(1, 2.5, 'text', b'bytes', [1, 2, 3], {'k': None})";
constexpr const char kHundredInts[] = "(list(range(100)),)";

}  // namespace

BENCHMARK_CAPTURE(encodeRequest, no_args, kNoArgs);
BENCHMARK_CAPTURE(encodeRequest, one_int, kOneInt);
BENCHMARK_CAPTURE(encodeRequest, small_mixed, kMixed);
BENCHMARK_CAPTURE(encodeRequest, hundred_ints, kHundredInts);
BENCHMARK_CAPTURE(decodeRequest, no_args, kNoArgs);
BENCHMARK_CAPTURE(decodeRequest, one_int, kOneInt);
BENCHMARK_CAPTURE(decodeRequest, small_mixed, kMixed);
BENCHMARK_CAPTURE(decodeRequest, hundred_ints, kHundredInts);
BENCHMARK(peekHeader);
BENCHMARK_CAPTURE(channelRoundTrip, shared_rings, true)->UseRealTime();
BENCHMARK_CAPTURE(channelRoundTrip, socket, false)->UseRealTime();

int main(int argc, char** argv) {
  py::scoped_interpreter python;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
