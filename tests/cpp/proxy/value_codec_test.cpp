// Tests proxy/value_codec.cpp: by-value kinds round trip, by-reference rules, limits, hostile input.
//
// Runs in an embedded interpreter (support/test_main.cpp); every test holds the GIL. Values cross
// through a real frame (frameToWords, then IncomingFrame with our ReaderOptions), so what the
// encoder accepts must also be readable under the reader's limits.
#include "proxy/value_codec.h"

#include "protocol/framing.h"
#include "protocol/limits.h"
#include "support/kj_expect.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>
#include <kj/debug.h>
#include <pybind11/eval.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace pi {
namespace {

using test::throwsKj;
constexpr auto kFailed = kj::Exception::Type::FAILED;

// A CodecPeer that records what the codec asks of it. Exported objects get ids 1, 2, ... and a
// ref naming one of those ids imports as the same object, so a by-reference round trip returns
// the original.
class FakePeer : public CodecPeer {
 public:
  void exportRef(py::handle object, wire::Ref::Builder ref) override {
    exported.push_back(py::reinterpret_borrow<py::object>(object));
    ref.setId(exported.size());
    ref.setTypeId(1000);
  }
  py::object importRef(wire::Ref::Reader ref) override {
    KJ_REQUIRE(ref.getId() >= 1 && ref.getId() <= exported.size(), "unknown ref", ref.getId());
    return exported[ref.getId() - 1];
  }
  py::object resolveBack(uint64_t id, uint32_t) override {
    auto found = backs.find(id);
    KJ_REQUIRE(found != backs.end(), "unknown back id", id);
    return found->second;
  }
  bool peerIdOf(py::handle object, uint64_t& id) override {
    auto found = peerIds.find(object.ptr());
    if (found == peerIds.end()) return false;
    id = found->second;
    return true;
  }
  // Fds "sent" with a message land here, and are "received" from here.
  int attachFd(UniqueFd fd) override {
    fds.push_back(std::move(fd));
    return int(fds.size() - 1);
  }
  UniqueFd takeFd(uint32_t index) override {
    KJ_REQUIRE(index < fds.size() && fds[index], "no such fd", index);
    return std::move(fds[index]);
  }
  // Spans (Buffer.address) are read from this very process, which is the "peer" that sent them;
  // with `refuseReads` the OS "refuses", and the "peer" is asked again through `sender`.
  PeerMemory::Access readPeerMemory(uint64_t address, uint64_t size, char* into) override {
    if (refuseReads) return PeerMemory::Access::kRefused;
    return into == nullptr ? self.probe(address, size) : self.read(address, into, size_t(size));
  }
  py::object refetchSpan(uint64_t address, uint64_t size) override {
    ++refetches;
    if (refetchAnswer) return refetchAnswer;
    KJ_REQUIRE(sender != nullptr, "no sender to ask again");
    capnp::MallocMessageBuilder message;
    auto value = message.initRoot<wire::Value>();
    KJ_REQUIRE(sender->buffers().encodePinned(address, size, value), "sender holds no such span");
    return sender->decode(value.asReader());
  }

  std::vector<UniqueFd> fds;
  PeerMemory self{::getpid()};
  bool refuseReads = false;
  ValueCodec* sender = nullptr;
  py::object refetchAnswer;  // when set, what refetchSpan answers instead of asking `sender`
  int refetches = 0;

  std::vector<py::object> exported;
  std::unordered_map<uint64_t, py::object> backs;      // what `back` ids resolve to
  std::unordered_map<PyObject*, uint64_t> peerIds;     // objects that stand for peer objects
};

// Python helpers the tests use, run once per test in a fresh namespace.
constexpr const char kHelpers[] = R"(
import collections, math

def same(a, b):
    """Equal, with the same types all the way down (1 == 1.0 == True does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return same(list(a.items()), list(b.items()))
    if isinstance(a, (set, frozenset)):
        return a == b and sorted(map(repr, a)) == sorted(map(repr, b))
    if isinstance(a, slice):
        return same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    if isinstance(a, BaseException):
        return same(a.args, b.args)
    return a == b

def nest(kind, levels, leaf=0):
    """`levels` containers of `kind`, one inside the other, around `leaf`."""
    value = leaf
    for _ in range(levels):
        if kind == 'list': value = [value]
        elif kind == 'tuple': value = (value,)
        elif kind == 'dict': value = {'k': value}
        elif kind == 'frozenset': value = frozenset([value])
        elif kind == 'slice': value = slice(value, None, None)
        elif kind == 'exception': value = KeyError(value)
    return value

CASES = [
    None, True, False,
    0, 1, -1, 255, -256, 2**31, 2**63 - 1, -2**63,
    2**63, -2**63 - 1, 2**64, -2**64, 2**64 - 1, -2**71, 2**71, 2**200 + 12345, -(2**1000) - 7,
    0.0, -0.0, 1.5, -2.25e300, 5e-324, float('inf'), float('-inf'), float('nan'),
    1 + 2j, complex(-0.0, float('inf')), complex(float('nan'), 3),
    '', 'ascii', 'h\u00e9llo \u20ac \U0001d11e', 'nul\x00inside\x00', '\ud800', 'a\udfffb\udc80',
    b'', b'\x00\xff\x80', bytes(range(256)),
    bytearray(), bytearray(b'ab\x00c'),
    [], [1, 'a', None, 2.5], (), (1,), (1, (2, (3,))),
    {}, {'z': 1, 'a': 2, 'm': 3}, {1: 'int', '1': 'str', (1, 2): 'tuple', None: 0, 2.5: b'f'},
    set(), {1, 'a', (1, 2), b'b'}, frozenset(), frozenset({1, frozenset({2})}),
    slice(None), slice(1, 10, 2), slice(-1, None, None), slice('a', [1], {'b': 2}),
    KeyError('missing'), ValueError(), OSError(2, 'No such file'),
    {'k': [(1, 2.5, {'x': frozenset({b'y'})}), [slice(1, 2)], {3, 4}, bytearray(b'z')]},
]
)";

class ValueCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_ = py::dict();
    ns_["__builtins__"] = py::module_::import("builtins");
    py::exec(kHelpers, ns_);
  }

  py::object eval(const char* source) { return py::eval(source, ns_); }

  bool same(py::handle a, py::handle b) { return ns_["same"](a, b).cast<bool>(); }

  std::string repr(py::handle object) {
    std::string text = py::repr(object);
    return text.size() > 200 ? text.substr(0, 200) + "..." : text;
  }

  // Encodes `value` as the only argument of a request, as the endpoint sends one, and decodes it
  // from a frame read with the receiver's limits.
  py::object roundTrip(py::handle value) {
    capnp::MallocMessageBuilder message;
    auto request = message.initRoot<wire::Message>().initRequest();
    codec_.encode(value, request.initArgs(1)[0]);
    return decodeFrame(frameToWords(message)).second;
  }

  // Reads `words` as a frame holding a request and decodes its first argument.
  std::pair<wire::Value::Which, py::object> decodeFrame(kj::Array<capnp::word> words) {
    if (auto size = peekFrameSize(words.asBytes())) {
      IncomingFrame frame(kj::mv(words), *size);
      auto arg = frame.getRoot<wire::Message>().getRequest().getArgs()[0];
      return {arg.which(), codec_.decode(arg)};
    }
    KJ_FAIL_ASSERT("no whole frame");
  }

  // What `encode` makes of `value`.
  wire::Value::Which kindOf(py::handle value) {
    capnp::MallocMessageBuilder message;
    auto out = message.initRoot<wire::Value>();
    codec_.encode(value, out);
    return out.which();
  }

  // A message whose request's first argument is set by `fill`, decoded.
  template <typename F>
  py::object decodeBuilt(F&& fill) {
    capnp::MallocMessageBuilder message;
    fill(message.initRoot<wire::Message>().initRequest().initArgs(1)[0]);
    return decodeFrame(frameToWords(message)).second;
  }

  FakePeer peer_;
  ValueCodec codec_{peer_};
  py::dict ns_;
};

kj::ArrayPtr<const kj::byte> bytesOf(const std::string& text) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()), text.size());
}

TEST_F(ValueCodecTest, RoundTripsEveryByValueKind) {
  py::list cases = ns_["CASES"];
  ASSERT_GT(cases.size(), 50u);
  for (auto value : cases) {
    py::object back = roundTrip(value);
    EXPECT_TRUE(same(value, back)) << repr(value) << " came back as " << repr(back);
  }
  EXPECT_TRUE(peer_.exported.empty()) << "a by-value kind was exported by reference: "
                                      << repr(peer_.exported.front());
}

TEST_F(ValueCodecTest, KeepsIntsThatFitIn64BitsAsIntAndSendsOthersAsBigInt) {
  EXPECT_EQ(kindOf(eval("2**63 - 1")), wire::Value::INT);
  EXPECT_EQ(kindOf(eval("-2**63")), wire::Value::INT);
  EXPECT_EQ(kindOf(eval("2**63")), wire::Value::BIG_INT);
  EXPECT_EQ(kindOf(eval("-2**63 - 1")), wire::Value::BIG_INT);
  EXPECT_EQ(kindOf(eval("True")), wire::Value::BOOL);  // bool is not sent as an int
}

TEST_F(ValueCodecTest, EncodesBigIntsInTheMinimalTwosComplementLength) {
  // isolation.capnp: "two's complement, little-endian, minimal length".
  py::list values = eval("[2**63, -2**63 - 1, 2**64, -2**64, 2**71, -2**71, -2**71 - 1, "
                         "2**127, -2**127, -2**255, 2**1000]");
  py::object minimalLength = eval("lambda v: ((v if v >= 0 else ~v).bit_length() + 8) // 8");
  for (auto value : values) {
    capnp::MallocMessageBuilder message;
    auto out = message.initRoot<wire::Value>();
    codec_.encode(value, out);
    ASSERT_EQ(out.which(), wire::Value::BIG_INT) << repr(value);
    EXPECT_EQ(out.getBigInt().size(), minimalLength(value).cast<size_t>()) << repr(value);
  }
}

TEST_F(ValueCodecTest, SendsStrAsUtf8WithLoneSurrogatesEncodedAsThemselves) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::Value>();
  codec_.encode(eval("'a\\x00\\ud800'"), out);
  ASSERT_EQ(out.which(), wire::Value::STR);
  auto data = out.getStr();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.begin()), data.size()),
            std::string("a\0\xed\xa0\x80", 5));
}

TEST_F(ValueCodecTest, SendsSubclassesOfBuiltinKindsByReference) {
  py::exec(R"(
class MyInt(int): pass
class MyDict(dict): pass
class MyList(list): pass
class MyStr(str): pass
class MyError(KeyError): pass
Point = collections.namedtuple('Point', 'x y')
SUBCLASSED = [MyInt(5), MyDict(a=1), MyList([1]), MyStr('s'), Point(1, 2),
              object(), len, collections]
)",
           ns_);
  py::list values = ns_["SUBCLASSED"];
  for (auto value : values) {
    size_t before = peer_.exported.size();
    EXPECT_EQ(kindOf(value), wire::Value::REF) << repr(value);
    ASSERT_EQ(peer_.exported.size(), before + 1) << repr(value);
    EXPECT_TRUE(peer_.exported.back().is(value)) << repr(value);
    // Decoding the ref asks the peer for the local stand-in (here: the object itself).
    EXPECT_TRUE(roundTrip(value).is(value)) << repr(value);
  }
}

TEST_F(ValueCodecTest, SendsExceptionsOfOtherClassesAsExceptionsThatKeepTheOriginal) {
  py::exec(R"(
class MyError(KeyError):
    def __str__(self):
        return 'mine: ' + self.args[0]
ERROR = MyError('k', 2)
)",
           ns_);
  py::object error = ns_["ERROR"];
  size_t before = peer_.exported.size();
  EXPECT_EQ(kindOf(error), wire::Value::EXCEPTION);
  // The class and the object itself are exported, so the copy can read the original.
  ASSERT_EQ(peer_.exported.size(), before + 2);
  EXPECT_TRUE(peer_.exported[before].is(ns_["MyError"]));
  EXPECT_TRUE(peer_.exported[before + 1].is(error));
  // The fake peer hands the exported objects back: the copy is a MyError with the same args,
  // whose str() is the original's, and which knows its original.
  py::object copy = roundTrip(error);
  EXPECT_FALSE(copy.is(error));
  EXPECT_TRUE(py::isinstance(copy, ns_["MyError"]));
  EXPECT_TRUE(py::object(copy.attr("args")).equal(py::object(error.attr("args"))));
  EXPECT_EQ(py::str(copy.attr("_pi_message")).cast<std::string>(), "mine: k");
  EXPECT_TRUE(py::object(copy.attr("_pi_remote")).is(error));
}

TEST_F(ValueCodecTest, SendsBuiltinClassesAndSingletonsByName) {
  for (const char* name : {"int", "dict", "KeyError", "BaseException", "object", "type",
                           "Ellipsis", "NotImplemented"}) {
    py::object value = eval(name);
    capnp::MallocMessageBuilder message;
    auto out = message.initRoot<wire::Value>();
    codec_.encode(value, out);
    ASSERT_EQ(out.which(), wire::Value::BUILTIN) << name;
    EXPECT_EQ(std::string(out.getBuiltin().cStr()), name);
    EXPECT_TRUE(roundTrip(value).is(value)) << name;
  }
  EXPECT_TRUE(peer_.exported.empty());
}

TEST_F(ValueCodecTest, SendsAPeerObjectBackAsItsPeerId) {
  py::object standIn = eval("object()");
  peer_.peerIds[standIn.ptr()] = 17;
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::Value>();
  codec_.encode(standIn, out);
  ASSERT_EQ(out.which(), wire::Value::BACK);
  EXPECT_EQ(out.getBack(), 17u);
  EXPECT_TRUE(peer_.exported.empty());
}

TEST_F(ValueCodecTest, DecodesABackIdThroughThePeer) {
  py::object mine = eval("object()");
  peer_.backs[5] = mine;
  EXPECT_TRUE(decodeBuilt([](wire::Value::Builder v) { v.setBack(5); }).is(mine));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeBuilt([](wire::Value::Builder v) { v.setBack(6); });
  }));
}

TEST_F(ValueCodecTest, RefusesAValueNestedDeeperThanTheLimit) {
  for (const char* kind : {"list", "tuple", "dict", "frozenset", "slice", "exception"}) {
    py::object deep = ns_["nest"](kind, kMaxValueDepth + 1);
    capnp::MallocMessageBuilder message;
    EXPECT_THROW(codec_.encode(deep, message.initRoot<wire::Value>()), py::value_error) << kind;
  }
}

TEST_F(ValueCodecTest, RefusesAContainerThatContainsItself) {
  py::exec(R"(
selfList = []; selfList.append(selfList)
selfDict = {}; selfDict['me'] = selfDict
outer = ([],); outer[0].append(outer)
error = ValueError(); error.args = (error,)
)",
           ns_);
  for (const char* name : {"selfList", "selfDict", "outer", "error"}) {
    capnp::MallocMessageBuilder message;
    EXPECT_THROW(codec_.encode(ns_[name], message.initRoot<wire::Value>()), py::value_error)
        << name;
  }
}

TEST_F(ValueCodecTest, AValueAtTheDepthLimitCanBeReadBack) {
  // What the sender accepts, the receiver's nesting limit must let through.
  for (const char* kind : {"list", "tuple", "dict", "frozenset", "slice", "exception"}) {
    py::object deep = ns_["nest"](kind, kMaxValueDepth);
    py::object back;
    try {
      back = roundTrip(deep);
    } catch (const kj::Exception& e) {
      ADD_FAILURE() << kind << " nested " << kMaxValueDepth
                    << " deep was encoded but cannot be read: " << e.getDescription().cStr();
      continue;
    }
    EXPECT_TRUE(same(deep, back)) << kind;
  }
}

TEST_F(ValueCodecTest, DecodeRefusesNamesOutsideTheBuiltinTable) {
  // Functions such as eval and open are not classes or singletons, so they never cross by name.
  for (const char* name : {"no_such_builtin", "eval", "exec", "open", "__import__", "getattr",
                           "__builtins__", "_", ""}) {
    EXPECT_TRUE(throwsKj(kFailed, [&] {
      decodeBuilt([&](wire::Value::Builder v) { v.setBuiltin(name); });
    })) << name;
  }
}

TEST_F(ValueCodecTest, DecodeRefusesAnExceptionOfAnUnknownOrNonExceptionClass) {
  for (const char* type : {"int", "object", "no_such_error", "eval"}) {
    EXPECT_TRUE(throwsKj(kFailed, [&] {
      decodeBuilt([&](wire::Value::Builder v) { v.initException().setType(type); });
    })) << type;
  }
}

TEST_F(ValueCodecTest, DecodeRefusesInvalidUtf8) {
  for (std::string bad : {std::string("\xff"), std::string("\xc0\x80"), std::string("ab\xe2\x82"),
                          std::string("\xf8\x88\x80\x80\x80")}) {
    try {
      decodeBuilt([&](wire::Value::Builder v) { v.setStr(bytesOf(bad)); });
      ADD_FAILURE() << "invalid UTF-8 decoded without an error";
    } catch (py::error_already_set& e) {
      EXPECT_TRUE(e.matches(PyExc_UnicodeDecodeError)) << e.what();
    }
  }
}

TEST_F(ValueCodecTest, DecodeRefusesAnEmptyBigInt) {
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeBuilt([](wire::Value::Builder v) { v.initBigInt(0); });
  }));
}

TEST_F(ValueCodecTest, DecodeRefusesUnhashableDictKeysAndSetItems) {
  auto expectTypeError = [&](auto fill) {
    try {
      decodeBuilt(fill);
      ADD_FAILURE() << "an unhashable key decoded without an error";
    } catch (py::error_already_set& e) {
      EXPECT_TRUE(e.matches(PyExc_TypeError)) << e.what();
    }
  };
  expectTypeError([](wire::Value::Builder v) {
    auto entry = v.initDict(1)[0];
    entry.initKey().initList(0);
    entry.initValue().setNone();
  });
  expectTypeError([](wire::Value::Builder v) { v.initSet(1)[0].initDict(0); });
  expectTypeError([](wire::Value::Builder v) { v.initFrozenset(1)[0].initList(0); });
}

TEST_F(ValueCodecTest, DecodeRefusesAValueOfAnUnknownKind) {
  // A newer or hostile peer sets a union discriminant this build does not know.
  auto schema = capnp::Schema::from<wire::Value>().getProto().getStruct();
  uint32_t offset = schema.getDiscriminantOffset();  // in 16-bit units of the data section
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeBuilt([&](wire::Value::Builder v) {
      v.setInt(1);
      auto data = capnp::AnyStruct::Builder(kj::mv(v)).getDataSection();
      ASSERT_GE(data.size(), (offset + 1) * 2);
      uint16_t unknown = 999;
      memcpy(data.begin() + offset * 2, &unknown, 2);
    });
  }));
}


namespace pi {
namespace {

TEST_F(ValueCodecTest, SendsLargeBytesOutOfBandInASealedMemfd) {
  for (const char* source : {"b'ab' * (1 << 20)", "bytearray(b'cd') * (1 << 20)"}) {
    py::object value = eval(source);
    EXPECT_EQ(kindOf(value), wire::Value::BUFFER) << source;
    ASSERT_EQ(peer_.fds.size(), 1u);
    int seals = ::fcntl(peer_.fds[0].get(), F_GET_SEALS);
    EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_GROW),
              F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_GROW);
    peer_.fds.clear();
    py::object back = roundTrip(value);
    EXPECT_TRUE(same(back, value)) << source;
    peer_.fds.clear();
  }
  // Below the threshold, inline.
  EXPECT_EQ(kindOf(eval("b'x' * 1000")), wire::Value::BYTES);
  EXPECT_TRUE(peer_.fds.empty());
}

TEST_F(ValueCodecTest, RefusesABufferThatIsNotSealedOrNotItsSize) {
  auto sendFd = [&](int fd, uint64_t size) {
    return decodeBuilt([&](wire::Value::Builder out) {
      peer_.fds.clear();
      peer_.fds.emplace_back(fd);
      auto buffer = out.initBuffer();
      buffer.setKind(wire::Buffer::Kind::BYTES);
      buffer.setSize(size);
      buffer.setFd(0);
    });
  };
  // A memfd the "peer" can still shrink or write: refused.
  int open = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(open, 0);
  ASSERT_EQ(::ftruncate(open, 4096), 0);
  EXPECT_TRUE(throwsKj(kj::Exception::Type::FAILED, [&] { sendFd(open, 4096); }, "sealed"));
  // Sealed, but smaller than it claims: refused before anything is allocated.
  int sealed = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(::ftruncate(sealed, 4096), 0);
  ASSERT_EQ(::fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
  EXPECT_TRUE(throwsKj(kj::Exception::Type::FAILED, [&] { sendFd(sealed, 1 << 30); }, "size"));
  // A pipe is no buffer at all.
  int pipes[2];
  ASSERT_EQ(::pipe2(pipes, O_CLOEXEC), 0);
  ::close(pipes[1]);
  EXPECT_TRUE(throwsKj(kj::Exception::Type::FAILED, [&] { sendFd(pipes[0], 16); }));
  // An index the message does not carry.
  EXPECT_TRUE(throwsKj(kj::Exception::Type::FAILED, [&] {
    decodeBuilt([&](wire::Value::Builder out) {
      peer_.fds.clear();
      auto buffer = out.initBuffer();
      buffer.setSize(16);
      buffer.setFd(3);
    });
  }));
}

}  // namespace
}  // namespace pi

namespace pi {
namespace {

// The Buffer a message's only request argument holds, once encoded.
struct EncodedBuffer {
  capnp::MallocMessageBuilder message;
  wire::Value::Builder value() {
    return message.getRoot<wire::Message>().getRequest().getArgs()[0];
  }
};

class SpanTest : public ValueCodecTest {
 protected:
  void SetUp() override {
    ValueCodecTest::SetUp();
    codec_.buffers().setSendSpans(true);  // as the child's endpoint does
  }

  // Encodes `value` into `out` as the only argument of a request.
  void encodeInto(py::handle value, EncodedBuffer& out) {
    auto request = out.message.initRoot<wire::Message>().initRequest();
    codec_.encode(value, request.initArgs(1)[0]);
  }

  // A request whose only argument is a span at `address` of `size` bytes, decoded.
  py::object decodeSpan(uint64_t address, uint64_t size) {
    return decodeBuilt([&](wire::Value::Builder out) {
      auto buffer = out.initBuffer();
      buffer.setKind(wire::Buffer::Kind::BYTES);
      buffer.setSize(size);
      buffer.setAddress(address);
    });
  }

  // The largest allocation Python made while `f` ran (tracemalloc's peak), in bytes.
  template <typename F>
  size_t peakPythonAllocation(F&& f) {
    py::module_ tracemalloc = py::module_::import("tracemalloc");
    tracemalloc.attr("start")();
    KJ_DEFER(tracemalloc.attr("stop")());
    tracemalloc.attr("reset_peak")();
    size_t before = tracemalloc.attr("get_traced_memory")()[py::int_(0)].cast<size_t>();
    f();
    return tracemalloc.attr("get_traced_memory")()[py::int_(1)].cast<size_t>() - before;
  }
};

uint64_t addressOf(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST_F(SpanTest, SendsLargeBytesAsTheirAddressAndPinsThemUntilReleased) {
  py::object value = eval("bytes(range(256)) * 1024");  // 256 KiB
  Py_ssize_t references = Py_REFCNT(value.ptr());
  EncodedBuffer encoded;
  encodeInto(value, encoded);
  ASSERT_EQ(encoded.value().which(), wire::Value::BUFFER);
  auto buffer = encoded.value().getBuffer();
  ASSERT_EQ(buffer.which(), wire::Buffer::ADDRESS);
  EXPECT_EQ(buffer.getAddress(), addressOf(PyBytes_AS_STRING(value.ptr())));
  EXPECT_EQ(buffer.getSize(), 256u << 10);
  EXPECT_EQ(buffer.getKind(), wire::Buffer::Kind::BYTES);
  EXPECT_TRUE(peer_.fds.empty());
  // The sender holds the object until the receiver is done with it.
  EXPECT_EQ(codec_.buffers().pinCount(), 1u);
  EXPECT_EQ(Py_REFCNT(value.ptr()), references + 1);
  py::object back = decodeFrame(frameToWords(encoded.message)).second;
  EXPECT_TRUE(same(back, value));
  EXPECT_NE(back.ptr(), value.ptr());
  codec_.buffers().releasePins();
  EXPECT_EQ(codec_.buffers().pinCount(), 0u);
  EXPECT_EQ(Py_REFCNT(value.ptr()), references);
}

TEST_F(SpanTest, SendsSmallBytesInlineAndABytearrayNeverAsASpan) {
  EXPECT_EQ(kindOf(eval("b'x' * (64 * 1024 - 1)")), wire::Value::BYTES);
  // A bytearray could be resized by another thread before the receiver reads it: a copy in a
  // memfd when large, inline when not.
  EncodedBuffer encoded;
  encodeInto(eval("bytearray(b'ab') * (1 << 20)"), encoded);
  ASSERT_EQ(encoded.value().which(), wire::Value::BUFFER);
  EXPECT_EQ(encoded.value().getBuffer().which(), wire::Buffer::FD);
  EXPECT_EQ(kindOf(eval("bytearray(b'ab') * (100 * 1024)")), wire::Value::BYTEARRAY);
  EXPECT_EQ(codec_.buffers().pinCount(), 0u);
}

TEST_F(SpanTest, SendsAPickleBufferAsASpanWhileItsExportKeepsTheMemoryInPlace) {
  py::object data = eval("bytearray(range(256)) * 1024");
  py::object pickleBuffer = py::module_::import("pickle").attr("PickleBuffer")(data);
  EncodedBuffer encoded;
  {
    Py_buffer view;
    ASSERT_EQ(PyObject_GetBuffer(pickleBuffer.ptr(), &view, PyBUF_CONTIG_RO), 0);
    auto request = encoded.message.initRoot<wire::Message>().initRequest();
    codec_.encodeBytesLike(pickleBuffer, static_cast<const char*>(view.buf), size_t(view.len),
                           request.initArgs(1)[0]);
    PyBuffer_Release(&view);
  }
  pickleBuffer = py::object();  // only the pin holds it now
  auto buffer = encoded.value().getBuffer();
  ASSERT_EQ(buffer.which(), wire::Buffer::ADDRESS);
  EXPECT_EQ(buffer.getAddress(), addressOf(PyByteArray_AS_STRING(data.ptr())));
  EXPECT_EQ(buffer.getKind(), wire::Buffer::Kind::BYTEARRAY);
  // The pinned PickleBuffer's export stops the bytearray from moving: resizing it fails.
  try {
    data.attr("extend")(py::bytes("x"));
    ADD_FAILURE() << "a bytearray behind a pinned span was resized";
  } catch (py::error_already_set& e) {
    EXPECT_TRUE(e.matches(PyExc_BufferError)) << e.what();
  }
  py::object back = decodeFrame(frameToWords(encoded.message)).second;
  EXPECT_TRUE(same(back, data));
  codec_.buffers().releasePins();
  data.attr("extend")(py::bytes("x"));  // let go: resizable again
}

TEST_F(SpanTest, RefusesASpanOutsideThePeersMemoryBeforeAllocatingIt) {
  // Nothing mapped at 16; the size is allowed, so only the probe stops the allocation.
  size_t peak = peakPythonAllocation([&] {
    EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(16, kMaxBufferBytes); }, "does not have"));
  });
  EXPECT_LT(peak, size_t{1} << 20);
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(0, 4096); }, "cannot be in its memory"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(~uint64_t{0} - 100, 4096); }));
  // Over the size limit: refused before anything else.
  py::object here = eval("b'y' * 4096");
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeSpan(addressOf(PyBytes_AS_STRING(here.ptr())), kMaxBufferBytes + 1);
  }, "size limit"));
}

TEST_F(SpanTest, RefusesASpanLongerThanThePeersMemory) {
  // Two readable pages and an unreadable one: a size one byte too large does not match.
  size_t page = size_t(::sysconf(_SC_PAGESIZE));
  char* pages = static_cast<char*>(
      ::mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(pages, MAP_FAILED);
  KJ_DEFER(::munmap(pages, 3 * page));
  memset(pages, 'z', 2 * page);
  ASSERT_EQ(::mprotect(pages + 2 * page, page, PROT_NONE), 0);
  py::object fits = decodeSpan(addressOf(pages), 2 * page);
  EXPECT_TRUE(same(fits, py::bytes(std::string(2 * page, 'z'))));
  size_t peak = peakPythonAllocation([&] {
    EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(addressOf(pages), 2 * page + 1); },
                         "ends outside"));
  });
  EXPECT_LT(peak, 2 * page);
  // Both ends readable, a hole in the middle: found by the read itself.
  char* holed = static_cast<char*>(
      ::mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(holed, MAP_FAILED);
  KJ_DEFER(::munmap(holed, 3 * page));
  ASSERT_EQ(::mprotect(holed + page, page, PROT_NONE), 0);
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(addressOf(holed), 3 * page); }, "longer than"));
}

TEST_F(SpanTest, AsksForARefusedSpanAgainAndSendsNoMoreSpansAfterwards) {
  peer_.refuseReads = true;  // EPERM: the "child" made itself non-dumpable
  peer_.sender = &codec_;
  // Large: the answer comes in a memfd.
  py::object large = eval("bytes(range(256)) * 8192");  // 2 MiB
  EncodedBuffer encoded;
  encodeInto(large, encoded);
  ASSERT_EQ(encoded.value().getBuffer().which(), wire::Buffer::ADDRESS);
  py::object back = decodeFrame(frameToWords(encoded.message)).second;
  EXPECT_TRUE(same(back, large));
  EXPECT_EQ(peer_.refetches, 1);
  // From now on the sender uses memfds.
  EXPECT_FALSE(codec_.buffers().sendsSpans());
  EncodedBuffer after;
  encodeInto(large, after);
  EXPECT_EQ(after.value().getBuffer().which(), wire::Buffer::FD);
  // Small, and a pickle buffer's kind: answered inline, as a bytearray.
  codec_.buffers().setSendSpans(true);
  py::object small = eval("bytearray(b'q') * (100 * 1024)");
  py::object pickleBuffer = py::module_::import("pickle").attr("PickleBuffer")(small);
  EncodedBuffer pickled;
  auto request = pickled.message.initRoot<wire::Message>().initRequest();
  codec_.encodeBytesLike(pickleBuffer, PyByteArray_AS_STRING(small.ptr()),
                         size_t(PyByteArray_GET_SIZE(small.ptr())), request.initArgs(1)[0]);
  back = decodeFrame(frameToWords(pickled.message)).second;
  EXPECT_TRUE(same(back, small));
  EXPECT_EQ(peer_.refetches, 2);
}

TEST_F(SpanTest, RefusesAnAnswerToFetchBufferThatIsNotTheBufferAskedFor) {
  peer_.refuseReads = true;
  py::object large = eval("bytes(range(256)) * 1024");
  EncodedBuffer encoded;
  encodeInto(large, encoded);
  peer_.refetchAnswer = eval("b'short'");
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeFrame(frameToWords(encoded.message)); },
                       "other than the buffer"));
  peer_.refetchAnswer = eval("bytearray(bytes(range(256)) * 1024)");  // right size, wrong type
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeFrame(frameToWords(encoded.message)); },
                       "other than the buffer"));
}

TEST_F(SpanTest, AnswersFetchBufferOnlyForASpanItIsHolding) {
  py::object large = eval("bytes(range(256)) * 1024");
  EncodedBuffer encoded;
  encodeInto(large, encoded);
  uint64_t address = encoded.value().getBuffer().getAddress();
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::Value>();
  // Part of it, or a range that overlaps it, is not what was sent: nothing is written.
  EXPECT_FALSE(codec_.buffers().encodePinned(address, 100, out));
  EXPECT_FALSE(codec_.buffers().encodePinned(address + 1, 256 << 10, out));
  EXPECT_FALSE(codec_.buffers().encodePinned(address - 4096, (256 << 10) + 4096, out));
  EXPECT_EQ(out.which(), wire::Value::NONE);
  EXPECT_TRUE(codec_.buffers().sendsSpans());  // a refusal does not change how it sends
  codec_.buffers().releasePins();
  EXPECT_FALSE(codec_.buffers().encodePinned(address, 256 << 10, out));
  EXPECT_EQ(out.which(), wire::Value::NONE);
}

TEST_F(SpanTest, LetsGoOfAFramesSpansOnceThePeerHasDecodedThatFrame) {
  BufferCodec& buffers = codec_.buffers();
  py::object first = eval("bytes(range(256)) * 1024");
  py::object second = eval("bytes(range(255, -1, -1)) * 1024");
  Py_ssize_t firstReferences = Py_REFCNT(first.ptr());
  Py_ssize_t secondReferences = Py_REFCNT(second.ptr());
  // Frame 7 carries `first`; while it is being encoded, a nested message (frame 5) carries
  // `second` and is sent first.
  uint64_t outer = buffers.pinMark();
  EncodedBuffer a;
  encodeInto(first, a);
  uint64_t inner = buffers.pinMark();
  EncodedBuffer b;
  encodeInto(second, b);
  buffers.sealPins(inner, 5);
  buffers.sealPins(outer, 7);  // only what is still unsealed: `first`
  EXPECT_EQ(buffers.pinCount(), 2u);
  EXPECT_EQ(buffers.pinnedBytes(), uint64_t{512} << 10);
  buffers.releaseDecoded(4);
  EXPECT_EQ(buffers.pinCount(), 2u);
  buffers.releaseDecoded(6);  // frame 5 decoded, frame 7 not yet
  EXPECT_EQ(buffers.pinCount(), 1u);
  EXPECT_EQ(Py_REFCNT(second.ptr()), secondReferences);
  EXPECT_EQ(Py_REFCNT(first.ptr()), firstReferences + 1);
  // Still answerable while pinned; the nested one no more.
  capnp::MallocMessageBuilder message;
  EXPECT_FALSE(buffers.encodePinned(b.value().getBuffer().getAddress(), 256 << 10,
                                    message.initRoot<wire::Value>()));
  buffers.releaseDecoded(7);
  EXPECT_EQ(buffers.pinCount(), 0u);
  EXPECT_EQ(buffers.pinnedBytes(), 0u);
  EXPECT_EQ(Py_REFCNT(first.ptr()), firstReferences);
}

TEST_F(SpanTest, LetsGoOfThePinsOfAMessageThatWasNeverSent) {
  BufferCodec& buffers = codec_.buffers();
  py::object sent = eval("b'a' * (128 << 10)");
  py::object unsent = eval("b'b' * (128 << 10)");
  uint64_t first = buffers.pinMark();
  EncodedBuffer a;
  encodeInto(sent, a);
  buffers.sealPins(first, 3);
  uint64_t second = buffers.pinMark();
  EncodedBuffer b;
  encodeInto(unsent, b);
  // Its encoding failed half-way (say): no frame will carry it.
  buffers.dropUnsentPins(second);
  EXPECT_EQ(buffers.pinCount(), 1u);
  buffers.dropUnsentPins(first);  // a sealed pin stays until the peer has decoded its frame
  EXPECT_EQ(buffers.pinCount(), 1u);
  buffers.releaseDecoded(3);
  EXPECT_EQ(buffers.pinCount(), 0u);
}

TEST_F(SpanTest, PinsNoMoreThanItsLimitForAPeerThatNeverSaysItDecodedAnything) {
  BufferCodec& buffers = codec_.buffers();
  // One span of any size is always allowed; the limit bounds what piles up beside it.
  size_t piece = size_t(BufferCodec::kMaxPinnedBytes / 4);
  py::object large = py::reinterpret_steal<py::object>(
      PyBytes_FromStringAndSize(nullptr, Py_ssize_t(piece)));
  memset(PyBytes_AS_STRING(large.ptr()), 'p', piece);
  std::vector<wire::Buffer::Which> ways;
  for (int i = 0; i < 5; ++i) {
    EncodedBuffer encoded;
    encodeInto(large, encoded);
    ways.push_back(encoded.value().getBuffer().which());
    buffers.sealPins(0, uint64_t(i + 1));
  }
  EXPECT_EQ(ways, (std::vector<wire::Buffer::Which>{wire::Buffer::ADDRESS, wire::Buffer::ADDRESS,
                                                    wire::Buffer::ADDRESS, wire::Buffer::ADDRESS,
                                                    wire::Buffer::FD}));
  EXPECT_EQ(buffers.pinnedBytes(), BufferCodec::kMaxPinnedBytes);
  buffers.releaseDecoded(1);
  EncodedBuffer again;
  encodeInto(large, again);
  EXPECT_EQ(again.value().getBuffer().which(), wire::Buffer::ADDRESS);
  buffers.releasePins();
  EXPECT_EQ(buffers.pinnedBytes(), 0u);
}

TEST_F(SpanTest, ReadsNothingOfAnAnswerThatWillBeDropped) {
  // The late answer to an interrupted call: its spans may be gone already.
  BufferCodec::SkipContents skip(codec_.buffers());
  EXPECT_TRUE(decodeSpan(16, 4096).is_none());
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(16, kMaxBufferBytes + 1); }, "size limit"));
}

TEST_F(ValueCodecTest, CountsTheOutOfBandBytesOfEveryValueInAMessage) {
  // Memfds and spans alike (odd sizes in memfds).
  auto setBuffer = [](wire::Value::Builder value, uint64_t size) {
    auto buffer = value.initBuffer();
    buffer.setSize(size);
    if (size % 2 == 1) {
      buffer.setFd(0);
    } else {
      buffer.setAddress(4096);
    }
  };
  capnp::MallocMessageBuilder message;
  auto request = message.initRoot<wire::Message>().initRequest();
  auto args = request.initArgs(3);
  setBuffer(args[0].initList(2)[1], 1);
  auto entry = args[1].initDict(1)[0];
  setBuffer(entry.initKey(), 10);
  setBuffer(entry.initValue().initTuple(1)[0], 100);
  auto exception = args[2].initException();
  setBuffer(exception.initArgs(1)[0], 1000);
  setBuffer(exception.initOriginal().initSlice().initStep(), 10000);
  setBuffer(request.initKwargs(1)[0].initValue().initFrozenset(1)[0], 100000);
  EXPECT_EQ(ValueCodec::outOfBandBytes(message.getRoot<wire::Message>().asReader()).bytes, 111111u);

  capnp::MallocMessageBuilder answer;
  auto error = answer.initRoot<wire::Message>().initResponse().initError();
  setBuffer(error.initArgs(1)[0].initSet(1)[0], 7);
  setBuffer(error.initException().initRef().initClassInfo().initBases(1)[0], 8);
  EXPECT_EQ(ValueCodec::outOfBandBytes(answer.getRoot<wire::Message>().asReader()).bytes, 15u);
}

TEST_F(ValueCodecTest, SaysAMessageIsOverTheLimitWithoutWrappingAround) {
  capnp::MallocMessageBuilder message;
  auto args = message.initRoot<wire::Message>().initResponse().initValue().initList(6);
  // Five buffers of a quarter of the limit and one claiming 2^64 - 1 bytes.
  for (unsigned i = 0; i < 6; ++i) {
    auto buffer = args[i].initBuffer();
    buffer.setSize(i == 5 ? ~uint64_t{0} : kMaxMessageBufferBytes / 4);
    buffer.setAddress(4096);
  }
  EXPECT_GT(ValueCodec::outOfBandBytes(message.getRoot<wire::Message>().asReader()).bytes,
            kMaxMessageBufferBytes);
  args[4].setNone();
  args[5].setNone();
  EXPECT_EQ(ValueCodec::outOfBandBytes(message.getRoot<wire::Message>().asReader()).bytes,
            kMaxMessageBufferBytes);
}

TEST_F(ValueCodecTest, AdmitsTheBuffersOfFramesBeingDecodedOnlyUpToTheLimits) {
  BufferCodec& buffers = codec_.buffers();
  auto bytes = [](uint64_t n) { return OutOfBand{n, true}; };
  EXPECT_TRUE(throwsKj(kFailed, [&] { buffers.admitFrame(1, bytes(kMaxMessageBufferBytes + 1)); },
                       "size limit of a message"));
  buffers.admitFrame(2, bytes(kMaxMessageBufferBytes));
  buffers.admitFrame(3, bytes(0));  // no buffers: not counted
  buffers.admitFrame(4, bytes(kMaxDecodingBufferBytes - kMaxMessageBufferBytes));
  EXPECT_EQ(buffers.decodingBytes(), kMaxDecodingBufferBytes);
  EXPECT_TRUE(throwsKj(kFailed, [&] { buffers.admitFrame(5, bytes(1)); },
                       "limit of a connection"));
  buffers.finishedDecoding(3);
  buffers.finishedDecoding(2);
  EXPECT_EQ(buffers.decodingBytes(), kMaxDecodingBufferBytes - kMaxMessageBufferBytes);
  buffers.admitFrame(5, bytes(1));
  buffers.finishedDecoding(4);
  buffers.finishedDecoding(5);
  buffers.finishedDecoding(5);  // once only
  EXPECT_EQ(buffers.decodingBytes(), 0u);
}

TEST_F(SpanTest, RefusesToSendMoreOutOfBandBytesInOneMessageThanTheReceiverAccepts) {
  // Never written: the pages of these values are never touched (spans are not copied here).
  size_t piece = size_t(kMaxMessageBufferBytes / 2) + 1;
  py::object large = py::reinterpret_steal<py::object>(
      PyBytes_FromStringAndSize(nullptr, Py_ssize_t(piece)));
  {
    BufferCodec::OutgoingMessage message(codec_.buffers());
    EncodedBuffer first;
    encodeInto(large, first);
    EXPECT_EQ(first.value().getBuffer().which(), wire::Buffer::ADDRESS);
    {
      BufferCodec::OutgoingMessage nested(codec_.buffers());  // a message of its own
      EncodedBuffer inner;
      encodeInto(eval("bytes(1 << 20)"), inner);
      EXPECT_EQ(inner.value().getBuffer().which(), wire::Buffer::ADDRESS);
    }
    EncodedBuffer second;
    try {
      encodeInto(large, second);
      ADD_FAILURE() << "a message over the limit was encoded";
    } catch (py::value_error& e) {
      EXPECT_NE(std::string(e.what()).find("several calls"), std::string::npos) << e.what();
    }
  }
  codec_.buffers().releasePins();
  py::object huge = py::reinterpret_steal<py::object>(
      PyBytes_FromStringAndSize(nullptr, Py_ssize_t(kMaxBufferBytes + 1)));
  EncodedBuffer alone;
  try {
    encodeInto(huge, alone);
    ADD_FAILURE() << "a value over the limit was encoded";
  } catch (py::value_error& e) {
    EXPECT_NE(std::string(e.what()).find("in pieces"), std::string::npos) << e.what();
  }
  EXPECT_EQ(codec_.buffers().pinCount(), 0u);
}

TEST_F(SpanTest, RefusesEveryBufferWhileAMessageTooMalformedToCountIsDecoded) {
  // Deeper than the reader's nesting limit, with a buffer below the fault: the walk cannot get
  // there, so no buffer is read until that message is done with.
  capnp::MallocMessageBuilder message;
  auto args = message.initRoot<wire::Message>().initRequest().initArgs(2);
  wire::Value::Builder value = args[0];
  for (int i = 0; i < kNestingLimit; ++i) value = value.initList(1)[0];
  auto buffer = args[1].initBuffer();
  buffer.setSize(kMaxMessageBufferBytes);
  buffer.setAddress(4096);
  auto words = frameToWords(message);
  auto size = peekFrameSize(words.asBytes());
  ASSERT_TRUE(size.has_value());
  IncomingFrame frame(kj::mv(words), *size);
  OutOfBand counted = ValueCodec::outOfBandBytes(frame.getRoot<wire::Message>());
  EXPECT_FALSE(counted.complete);
  BufferCodec& buffers = codec_.buffers();
  buffers.admitFrame(1, counted);
  py::object here = eval("b'y' * 4096");
  uint64_t address = addressOf(PyBytes_AS_STRING(here.ptr()));
  EXPECT_TRUE(throwsKj(kFailed, [&] { decodeSpan(address, 4096); }, "too malformed"));
  buffers.finishedDecoding(1);
  EXPECT_TRUE(same(decodeSpan(address, 4096), here));
}

TEST_F(ValueCodecTest, RefusesAMemfdWithHoles) {
  // Sealed and of the size claimed, but never written: mapping it would allocate every page.
  int sparse = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(sparse, 0);
  ASSERT_EQ(::ftruncate(sparse, 1 << 20), 0);
  ASSERT_EQ(::fcntl(sparse, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeBuilt([&](wire::Value::Builder out) {
      peer_.fds.clear();
      peer_.fds.emplace_back(sparse);
      auto buffer = out.initBuffer();
      buffer.setKind(wire::Buffer::Kind::BYTES);
      buffer.setSize(1 << 20);
      buffer.setFd(0);
    });
  }, "holes"));
}

}  // namespace
}  // namespace pi

// Standard values (Value.standard): exact standard types by value, rebuilt from checked fields.

constexpr const char kStandardHelpers[] = R"(
import datetime, decimal, enum, fractions, pathlib, re, sys, types, uuid
from datetime import date, time, timedelta, timezone

class Color(enum.Enum):
    RED = 1
    CRIMSON = 1   # an alias: the member map lists it, as RED
    GREEN = 2

class Perm(enum.IntFlag):
    R = 4
    W = 2

class Outer:
    class Inner(enum.Enum):
        ONE = 'one'

EST = timezone(timedelta(hours=-5), 'EST')
STANDARD = [
    date(1, 1, 1), date(9999, 12, 31), date(2024, 2, 29),
    time(), time(23, 59, 59, 999999, fold=1), time(12, tzinfo=timezone.utc),
    time(1, 2, 3, tzinfo=timezone(timedelta(hours=5, minutes=30, microseconds=1))),
    datetime.datetime(2024, 2, 29, 12, 30, 15, 250), datetime.datetime(2021, 11, 7, 1, 30, fold=1),
    datetime.datetime(2020, 1, 1, tzinfo=timezone.utc), datetime.datetime(2020, 1, 1, tzinfo=EST),
    datetime.datetime.min, datetime.datetime.max,
    timedelta(), timedelta(days=-1, microseconds=1), timedelta.max, timedelta.min,
    timezone.utc, EST, timezone(timedelta(0), 'UTC'), timezone(-timedelta(hours=23, minutes=59)),
    timezone(timedelta(hours=1), 'nul\x00 \ud800'),
    decimal.Decimal('0'), decimal.Decimal('-0.00'), decimal.Decimal('1.10'),
    decimal.Decimal('123456789012345678901234567890.123456789'), decimal.Decimal('1E+999999'),
    decimal.Decimal('-1E-999999999999999999'), decimal.Decimal('Infinity'),
    decimal.Decimal('-Infinity'), decimal.Decimal('NaN'), decimal.Decimal('-NaN123'),
    decimal.Decimal('sNaN'), decimal.Decimal('sNaN45'), decimal.Decimal('1.23E+10'),
    decimal.Decimal('-1.5E-7'), decimal.Decimal('0E-7'), decimal.Decimal('0E+3'),
    decimal.Decimal('00.0100'),
    decimal.Decimal('1' * 65536), decimal.Decimal('-NaN' + '7' * 40),
    fractions.Fraction(0), fractions.Fraction(-3, 7), fractions.Fraction(2**64 + 1, 2**70),
    fractions.Fraction(-(2**65535), 3),
    uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.UUID('12345678-1234-5678-1234-567812345678'),
    uuid.UUID(int=7, is_safe=uuid.SafeUUID.safe), uuid.UUID(int=8, is_safe=uuid.SafeUUID.unsafe),
    pathlib.PurePosixPath(), pathlib.PurePosixPath('/a/b c/\udcff\x00'),
    pathlib.PureWindowsPath(r'C:\Users\x'), pathlib.PureWindowsPath('//server/share/f'),
    pathlib.PosixPath('/tmp/x'), pathlib.Path('relative'),
]
MEMBERS = [Color.RED, Color.GREEN, Perm.R, Outer.Inner.ONE, re.IGNORECASE, uuid.SafeUUID.safe]

class MyDate(date): pass
class MyDecimal(decimal.Decimal): pass
class MyFraction(fractions.Fraction): pass
class MyPath(type(pathlib.PurePosixPath())): pass
class MyZone(datetime.tzinfo):
    def utcoffset(self, when): return timedelta(0)

def local_enum():
    class Local(enum.Enum):
        A = 1
    return Local.A

BY_REFERENCE = [
    MyDate(2020, 1, 1), MyDecimal('1'), MyFraction(1, 2), MyPath('a'),
    datetime.datetime(2020, 1, 1, tzinfo=MyZone()), time(tzinfo=MyZone()), MyZone(),
    Perm.R | Perm.W,             # a combination of flags: not in the member map
    local_enum(),                # a class no other process can look up
    decimal.Decimal('1' * 70000),  # over kMaxDecimalDigits
    fractions.Fraction(2**70000, 3),  # over kMaxFractionBits
    timezone(timedelta(0), 'x' * 70000),  # a name over kMaxStandardTextBytes
    pathlib.PurePosixPath('p' * 70000),
    Color,                       # the class itself
]

def same_standard(a, b):
    """The same value of exactly the same type (repr shows each field, fold and NaN payloads)."""
    if isinstance(a, fractions.Fraction):  # its repr of huge terms is refused (int_max_str_digits)
        return type(a) is type(b) and (a.numerator, a.denominator) == (b.numerator, b.denominator)
    return (type(a) is type(b) and repr(a) == repr(b) and
            getattr(a, 'is_safe', 0) == getattr(b, 'is_safe', 0))

# Calls of module or class __getattr__ (a lookup that runs code would add to it).
CALLS = []
trap = types.ModuleType('standard_trap')
trap.__getattr__ = lambda name: CALLS.append(name)
sys.modules['standard_trap'] = trap
)";

class StandardValueTest : public ValueCodecTest {
 protected:
  void SetUp() override {
    ValueCodecTest::SetUp();
    py::exec(kStandardHelpers, ns_);
  }
  void TearDown() override {
    py::module_::import("sys").attr("modules").attr("pop")("standard_trap");
  }

  bool sameStandard(py::handle a, py::handle b) { return ns_["same_standard"](a, b).cast<bool>(); }

  // A standard value set by `fill`, decoded.
  template <typename F>
  py::object decodeStandard(F&& fill) {
    return decodeBuilt([&](wire::Value::Builder v) { fill(v.initStandard()); });
  }
};

TEST_F(StandardValueTest, RoundTripsEveryStandardTypeWithItsExactTypeAndFields) {
  py::list cases = ns_["STANDARD"];
  for (auto value : cases) {
    EXPECT_EQ(kindOf(value), wire::Value::STANDARD) << repr(value);
    py::object back = roundTrip(value);
    EXPECT_TRUE(sameStandard(value, back)) << repr(value) << " came back as " << repr(back);
  }
  EXPECT_TRUE(peer_.exported.empty()) << "exported " << repr(peer_.exported.front());
}

TEST_F(StandardValueTest, ReadsADecimalWhateverTheContextsCapitals) {
  py::exec("decimal.getcontext().capitals = 0", ns_);
  py::object value = eval("decimal.Decimal('-1.25E-30')");
  EXPECT_EQ(kindOf(value), wire::Value::STANDARD);
  EXPECT_TRUE(sameStandard(roundTrip(value), value));
  py::exec("decimal.getcontext().capitals = 1", ns_);
}

TEST_F(StandardValueTest, AnUnnamedZeroOffsetTimezoneArrivesAsTheReceiversUtc) {
  py::object utc = eval("timezone.utc");
  EXPECT_TRUE(roundTrip(utc).is(utc));
  EXPECT_TRUE(py::object(roundTrip(eval("datetime.datetime(2020, 1, 1, tzinfo=timezone.utc)"))
                             .attr("tzinfo")).is(utc));
  EXPECT_FALSE(roundTrip(eval("timezone(timedelta(0), 'UTC')")).is(utc));  // named: its own
}

TEST_F(StandardValueTest, AnEnumMemberArrivesAsTheReceiversOwnMemberAndReleasesItsOriginal) {
  py::list members = ns_["MEMBERS"];
  for (auto member : members) {
    EXPECT_EQ(kindOf(member), wire::Value::STANDARD) << repr(member);
    EXPECT_TRUE(roundTrip(member).is(member)) << repr(member);
  }
  // Each carries its original by ref (for a receiver without the class), which the fake peer
  // resolves to the object itself.
  EXPECT_EQ(peer_.exported.size(), 2 * members.size());
  // An alias is sent as the member it names.
  EXPECT_TRUE(roundTrip(eval("Color.CRIMSON")).is(eval("Color.RED")));
}

TEST_F(StandardValueTest, AnEnumMemberOfAClassTheReceiverLacksArrivesAsItsOriginal) {
  py::object stand = eval("object()");
  peer_.exported.push_back(stand);
  uint64_t id = peer_.exported.size();
  auto member = [&](const char* module, const char* qualname, const char* name) {
    return decodeStandard([&](wire::StandardValue::Builder v) {
      auto m = v.initEnumMember();
      m.setModule(module);
      m.setQualname(qualname);
      m.setName(name);
      m.initOriginal().initRef().setId(id);
    });
  };
  EXPECT_TRUE(member("__main__", "Color", "RED").is(stand));  // not in sys.modules['__main__']
  EXPECT_TRUE(member("no_such_module", "Color", "RED").is(stand));
  EXPECT_TRUE(member("re", "RegexFlag", "NO_SUCH").is(stand));
  EXPECT_TRUE(member("re", "compile", "I").is(stand));       // not a class
  EXPECT_TRUE(member("re", "Pattern", "I").is(stand));       // not an enum
  EXPECT_TRUE(member("re", "RegexFlag.I", "I").is(stand));   // a member is not a class
  EXPECT_TRUE(member("uuid", "SafeUUID", "_member_map_").is(stand));
  EXPECT_TRUE(member("standard_trap", "Color", "RED").is(stand));
  EXPECT_TRUE(member("standard_trap", "Color.RED", "RED").is(stand));
  EXPECT_TRUE(member("re", "RegexFlag", "IGNORECASE").is(eval("re.I")));
  EXPECT_EQ(py::len(ns_["CALLS"]), 0u) << "looking a class up ran a module __getattr__";
}

TEST_F(StandardValueTest, SendsSubclassesOtherTzinfosFlagSetsAndOversizedValuesByReference) {
  py::list values = ns_["BY_REFERENCE"];
  for (auto value : values) {
    size_t before = peer_.exported.size();
    EXPECT_EQ(kindOf(value), wire::Value::REF) << repr(value);
    EXPECT_EQ(peer_.exported.size(), before + 1) << repr(value);
  }
}

TEST_F(StandardValueTest, RefusesDatesAndTimesOutOfRange) {
  auto date = [&](unsigned y, unsigned m, unsigned d) {
    return throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        auto out = v.initDate();
        out.setYear(uint16_t(y));
        out.setMonth(uint8_t(m));
        out.setDay(uint8_t(d));
      });
    }, "bad date");
  };
  EXPECT_TRUE(date(0, 1, 1));
  EXPECT_TRUE(date(10000, 1, 1));
  EXPECT_TRUE(date(2024, 0, 1));
  EXPECT_TRUE(date(2024, 13, 1));
  EXPECT_TRUE(date(2023, 2, 29));
  EXPECT_TRUE(date(1900, 2, 29));
  EXPECT_TRUE(date(2024, 4, 31));
  EXPECT_TRUE(date(2024, 1, 0));
  auto time = [&](unsigned h, unsigned m, unsigned s, uint32_t us) {
    return throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        auto out = v.initDatetime();
        out.initDate().setYear(2020);
        out.getDate().setMonth(1);
        out.getDate().setDay(1);
        auto t = out.initTime();
        t.setHour(uint8_t(h));
        t.setMinute(uint8_t(m));
        t.setSecond(uint8_t(s));
        t.setMicrosecond(us);
      });
    }, "bad time");
  };
  EXPECT_TRUE(time(24, 0, 0, 0));
  EXPECT_TRUE(time(0, 60, 0, 0));
  EXPECT_TRUE(time(0, 0, 60, 0));
  EXPECT_TRUE(time(0, 0, 0, 1000000));
  // A datetime without its date is 0-0-0.
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) { v.initDatetime(); });
  }, "bad date"));
}

TEST_F(StandardValueTest, RefusesTimedeltasAndTimezonesOutOfRange) {
  auto delta = [&](int32_t days, uint32_t seconds, uint32_t micros) {
    return throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        auto d = v.initTimedelta();
        d.setDays(days);
        d.setSeconds(seconds);
        d.setMicroseconds(micros);
      });
    }, "bad timedelta");
  };
  EXPECT_TRUE(delta(1000000000, 0, 0));
  EXPECT_TRUE(delta(-1000000000, 0, 0));
  EXPECT_TRUE(delta(0, 86400, 0));
  EXPECT_TRUE(delta(0, 0, 1000000));
  for (int64_t offset : {int64_t{86400} * 1000000, -int64_t{86400} * 1000000, INT64_MIN}) {
    EXPECT_TRUE(throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        v.initTimezone().setOffsetMicroseconds(offset);
      });
    }, "a day or more")) << offset;
  }
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([&](wire::StandardValue::Builder v) {
      auto zone = v.initTime().getTzinfo().initTimezone();
      zone.getName().initNamed(kMaxStandardTextBytes + 1);
    });
  }, "size limit"));
}

TEST_F(StandardValueTest, RefusesDecimalsWithBadDigitsOrExponentsOrOverTheLimit) {
  auto decimal = [&](std::string digits, int64_t exponent, wire::DecimalNumber::Kind kind,
                     const char* message) {
    return throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        auto d = v.initDecimal();
        d.setDigits(digits);
        d.setExponent(exponent);
        d.setKind(kind);
      });
    }, message);
  };
  using Kind = wire::DecimalNumber::Kind;
  EXPECT_TRUE(decimal("12a", 0, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("1E5", 0, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("", 0, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("-1", 0, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("1", kMaxDecimalExponent + 1, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("1", -kMaxDecimalExponent - 1, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal("1", INT64_MIN, Kind::FINITE, "bad Decimal"));
  EXPECT_TRUE(decimal(std::string(kMaxDecimalDigits + 1, '1'), 0, Kind::FINITE, "size limit"));
  EXPECT_TRUE(decimal("1", 0, Kind::INFINITE, "with digits"));
  EXPECT_TRUE(decimal("1", 0, Kind(7), "unknown kind"));
  // At the limits: rebuilt, and in bounded time.
  auto start = std::chrono::steady_clock::now();
  py::object big = decodeStandard([](wire::StandardValue::Builder v) {
    auto d = v.initDecimal();
    d.setDigits(std::string(kMaxDecimalDigits, '9'));
    d.setExponent(-kMaxDecimalExponent);
  });
  EXPECT_LT(test::secondsSince(start), 1.0);
  EXPECT_EQ(py::len(big.attr("as_tuple")().attr("digits")), kMaxDecimalDigits);
  // Within each bound, but no Decimal (its adjusted exponent is past the module's): refused.
  EXPECT_TRUE(decimal("99", kMaxDecimalExponent, Kind::FINITE, "does not rebuild"));
}

TEST_F(StandardValueTest, RefusesFractionsWithBadTermsOrOverTheLimit) {
  auto fraction = [&](std::string numerator, std::string denominator, const char* message) {
    return throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        auto f = v.initFraction();
        f.setNumerator(bytesOf(numerator));
        f.setDenominator(bytesOf(denominator));
      });
    }, message);
  };
  EXPECT_TRUE(fraction("\x01", std::string("\x00", 1), "not positive"));
  EXPECT_TRUE(fraction("\x01", "\xff", "not positive"));  // -1
  EXPECT_TRUE(fraction("", "\x01", "bad size"));
  EXPECT_TRUE(fraction("\x01", std::string(kMaxFractionBits / 8 + 2, '\x01'), "bad size"));
  // The most bytes, but one bit more than the limit.
  EXPECT_TRUE(fraction(std::string(kMaxFractionBits / 8, '\x00') + "\x01", "\x01", "size limit"));
  // Not in lowest terms: normalized, as Fraction does.
  EXPECT_TRUE(decodeStandard([](wire::StandardValue::Builder v) {
    auto f = v.initFraction();
    f.setNumerator(bytesOf("\x02"));
    f.setDenominator(bytesOf("\x04"));
  }).equal(eval("fractions.Fraction(1, 2)")));
  // At the limit (two coprime terms of kMaxFractionBits bits): in bounded time.
  py::object a = eval("fractions.Fraction(2**65535 + 1, 2**65535 - 1)");
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(roundTrip(a).equal(a));
  EXPECT_LT(test::secondsSince(start), 1.0);
}

TEST_F(StandardValueTest, RefusesUuidsAndPathsOfBadSizes) {
  for (size_t size : {0, 15, 17}) {
    EXPECT_TRUE(throwsKj(kFailed, [&] {
      decodeStandard([&](wire::StandardValue::Builder v) {
        v.initUuid().initBytes(unsigned(size));
      });
    }, "bad size")) << size;
  }
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([&](wire::StandardValue::Builder v) {
      v.initUuid().initBytes(16);
      v.getUuid().setIsSafe(wire::Uuid::Safety(3));
    });
  }, "unknown safety"));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) {
      v.initPath().initText(kMaxStandardTextBytes + 1);
    });
  }, "size limit"));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) {
      v.initPath().setFlavour(wire::PathValue::Flavour(3));
    });
  }, "unknown flavour"));
}

TEST_F(StandardValueTest, AcceptsOnlyDtypeStringsOfTheFixedGrammar) {
  for (const char* good : {"<i8", ">i4", "|b1", "=u2", "<f2", "<f16", "<c32", "<M8", "<m8[ns]",
                           "<M8[10ms]", "<M8[Y]", "<m8[generic]"}) {
    bool isGood = std::string(good) != "<m8[generic]";
    EXPECT_EQ(StandardValues::isDtypeString(good, true), isGood) << good;
  }
  for (const char* bad : {"", "i8", "<i3", "<f", "|O", "|O8", "|V8", "<U5", "|S3", "<i8 ", "<M8[",
                          "<M8[]", "<M8[xs]", "<M8[1234567890s]", "<i8,<i8", "<T16", "?b1"}) {
    EXPECT_FALSE(StandardValues::isDtypeString(bad, true)) << bad;
  }
  // Strings and bytes of a length are dtypes, never scalars.
  EXPECT_TRUE(StandardValues::isDtypeString("<U5", false));
  EXPECT_TRUE(StandardValues::isDtypeString("|S0", false));
  EXPECT_FALSE(StandardValues::isDtypeString("<U1234567890", false));
  EXPECT_FALSE(StandardValues::isDtypeString("|O", false));
  EXPECT_FALSE(StandardValues::isDtypeString("|V8", false));
}

TEST_F(StandardValueTest, RefusesNumpyValuesOutsideTheGrammarOrWithBytesThatDoNotFit) {
  peer_.exported.push_back(eval("object()"));
  auto scalar = [&](const char* dtype, std::string data) {
    return decodeStandard([&](wire::StandardValue::Builder v) {
      auto s = v.initNumpyScalar();
      s.setDtype(dtype);
      s.setData(bytesOf(data));
      s.initOriginal().initRef().setId(1);
    });
  };
  // Refused whether or not this process has numpy: the fields are checked first.
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("|O", std::string(8, '\0')); }, "grammar"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("|V8", std::string(8, '\0')); }, "grammar"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("<i8", std::string(33, '\0')); }, "size limit"));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) { v.initNumpyDtype().setDtype("|O"); });
  }, "grammar"));
  // The original must be a ref or a back: nothing the receiver could be made to build.
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) {
      auto s = v.initNumpyScalar();
      s.setDtype("<i8");
      s.initData(8);
      s.initOriginal().setInt(5);
    });
  }, "not a ref or back"));
  EXPECT_TRUE(throwsKj(kFailed, [&] {
    decodeStandard([](wire::StandardValue::Builder v) {
      auto m = v.initEnumMember();
      m.setModule("re");
      m.setQualname("RegexFlag");
      m.setName("I");
      m.initOriginal().initStandard().initDate();
    });
  }, "not a ref or back"));
  py::object numpy;
  try {
    numpy = py::module_::import("numpy");
  } catch (py::error_already_set&) {
    // Without numpy a scalar arrives as its original; test_interop_values.py covers both sides.
    EXPECT_TRUE(scalar("<i8", std::string(8, '\0')).is(peer_.exported[0]));
    return;
  }
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("<i8", std::string(7, '\0')); }, "do not fit"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("<f8", std::string(16, '\0')); }, "do not fit"));
  EXPECT_TRUE(throwsKj(kFailed, [&] { scalar("|b1", "\x02"); }, "not 0 or 1"));
  py::object one = scalar("<i8", std::string("\x01\0\0\0\0\0\0\0", 8));
  EXPECT_TRUE(py::type::handle_of(one).is(numpy.attr("int64")));
  EXPECT_EQ(one.cast<int64_t>(), 1);
}

TEST_F(StandardValueTest, RoundTripsNumpyScalarsAndDtypesWhenNumpyIsThere) {
  py::object numpy;
  try {
    numpy = py::module_::import("numpy");
  } catch (py::error_already_set&) {
    GTEST_SKIP() << "numpy is not importable in the embedded interpreter; "
                    "tests/python/test_interop_values.py covers numpy values";
  }
  ns_["np"] = numpy;
  py::list values = eval(
      "[np.int8(-1), np.uint64(2**64 - 1), np.float16(1.5), np.float64('nan'),"
      " np.longdouble(1) / 3,"
      " np.complex64(1 + 2j), np.clongdouble(3j), np.bool_(True), np.datetime64('2020-01-01'),"
      " np.datetime64('NaT'), np.timedelta64(5, 'ms'), np.datetime64(7, '10ms')]");
  for (auto value : values) {
    EXPECT_EQ(kindOf(value), wire::Value::STANDARD) << repr(value);
    py::object back = roundTrip(value);
    EXPECT_TRUE(py::type::handle_of(back).is(py::type::handle_of(value))) << repr(value);
    EXPECT_EQ(repr(back), repr(value));
  }
  for (const char* dtype : {"int64", ">i4", "bool", "complex128", "M8[ns]", "U5", "S3"}) {
    py::object d = numpy.attr("dtype")(dtype);
    EXPECT_EQ(kindOf(d), wire::Value::STANDARD) << dtype;
    EXPECT_TRUE(roundTrip(d).equal(d)) << dtype;
  }
  EXPECT_TRUE(roundTrip(numpy.attr("dtype")("int64")).is(numpy.attr("dtype")("int64")));
  // Object dtypes, structured dtypes, dtypes with metadata, strings: by reference.
  py::list others = eval("[np.dtype(object), np.dtype([('a', 'i4')]),"
                         " np.dtype('i8', metadata={'k': 1}),"
                         " np.str_('s'), np.bytes_(b'b'), np.void(b'v'), np.array([1])]");
  for (auto value : others) EXPECT_EQ(kindOf(value), wire::Value::REF) << repr(value);
}

TEST_F(StandardValueTest, CountsTheOutOfBandBytesInAnOriginalsClassInfo) {
  capnp::MallocMessageBuilder message;
  auto member = message.initRoot<wire::Message>().initRequest().initArgs(1)[0]
                    .initStandard().initEnumMember();
  auto buffer = member.initOriginal().initRef().initClassInfo().initBases(1)[0].initBuffer();
  buffer.setSize(12345);
  buffer.setAddress(4096);
  EXPECT_EQ(ValueCodec::outOfBandBytes(message.getRoot<wire::Message>().asReader()).bytes, 12345u);
}

TEST_F(StandardValueTest, AStandardValueAtTheDepthLimitCanBeReadBack) {
  for (const char* leaf : {"datetime.datetime(2020, 1, 1, tzinfo=EST)", "Color.RED"}) {
    for (const char* kind : {"list", "dict"}) {
      py::object deep = ns_["nest"](kind, kMaxValueDepth, eval(leaf));
      py::object back;
      try {
        back = roundTrip(deep);
      } catch (const kj::Exception& e) {
        ADD_FAILURE() << leaf << " in " << kind << " nested " << kMaxValueDepth
                      << " deep was encoded but cannot be read: " << e.getDescription().cStr();
        continue;
      }
      EXPECT_TRUE(back.equal(deep)) << leaf << " in " << kind;
    }
  }
}

}  // namespace
}  // namespace pi
