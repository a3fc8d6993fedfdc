// The special methods a proxy type may carry, and how each one crosses to the peer.
#pragma once

#include "protocol/isolation.capnp.h"

#include <cstddef>
#include <string_view>

namespace pi {

// How a special method is forwarded.
struct SpecialMethod {
  const char* name;
  wire::Op op;  // `special` means: type(t).name(t, *args) in the peer
};

// Every special method a proxy may have beyond the ones every proxy has (getattr, setattr,
// delattr, repr, str, hash, rich comparisons, format, dir). A proxy type carries exactly those
// of this list that the remote type has, so callable(), len(), iter(), operators and the
// collections.abc checks answer as they would for the real object. Order is part of no protocol:
// the wire carries names.
constexpr SpecialMethod kSpecialMethods[] = {
    {"__call__", wire::Op::CALL},
    {"__len__", wire::Op::LEN},
    {"__iter__", wire::Op::ITER},
    {"__next__", wire::Op::NEXT},
    {"__getitem__", wire::Op::GETITEM},
    {"__setitem__", wire::Op::SETITEM},
    {"__delitem__", wire::Op::DELITEM},
    {"__contains__", wire::Op::CONTAINS},
    {"__bool__", wire::Op::BOOL},
    {"__instancecheck__", wire::Op::ISINSTANCE},
    {"__subclasscheck__", wire::Op::ISSUBCLASS},
    {"__reversed__", wire::Op::SPECIAL},
    {"__length_hint__", wire::Op::SPECIAL},
    {"__enter__", wire::Op::SPECIAL},
    {"__exit__", wire::Op::SPECIAL},
    {"__fspath__", wire::Op::SPECIAL},
    {"__neg__", wire::Op::SPECIAL},
    {"__pos__", wire::Op::SPECIAL},
    {"__abs__", wire::Op::SPECIAL},
    {"__invert__", wire::Op::SPECIAL},
    {"__int__", wire::Op::SPECIAL},
    {"__float__", wire::Op::SPECIAL},
    {"__complex__", wire::Op::SPECIAL},
    {"__index__", wire::Op::SPECIAL},
    {"__round__", wire::Op::SPECIAL},
    {"__trunc__", wire::Op::SPECIAL},
    {"__floor__", wire::Op::SPECIAL},
    {"__ceil__", wire::Op::SPECIAL},
    {"__add__", wire::Op::SPECIAL},
    {"__sub__", wire::Op::SPECIAL},
    {"__mul__", wire::Op::SPECIAL},
    {"__matmul__", wire::Op::SPECIAL},
    {"__truediv__", wire::Op::SPECIAL},
    {"__floordiv__", wire::Op::SPECIAL},
    {"__mod__", wire::Op::SPECIAL},
    {"__divmod__", wire::Op::SPECIAL},
    {"__pow__", wire::Op::SPECIAL},
    {"__lshift__", wire::Op::SPECIAL},
    {"__rshift__", wire::Op::SPECIAL},
    {"__and__", wire::Op::SPECIAL},
    {"__xor__", wire::Op::SPECIAL},
    {"__or__", wire::Op::SPECIAL},
    {"__radd__", wire::Op::SPECIAL},
    {"__rsub__", wire::Op::SPECIAL},
    {"__rmul__", wire::Op::SPECIAL},
    {"__rmatmul__", wire::Op::SPECIAL},
    {"__rtruediv__", wire::Op::SPECIAL},
    {"__rfloordiv__", wire::Op::SPECIAL},
    {"__rmod__", wire::Op::SPECIAL},
    {"__rdivmod__", wire::Op::SPECIAL},
    {"__rpow__", wire::Op::SPECIAL},
    {"__rlshift__", wire::Op::SPECIAL},
    {"__rrshift__", wire::Op::SPECIAL},
    {"__rand__", wire::Op::SPECIAL},
    {"__rxor__", wire::Op::SPECIAL},
    {"__ror__", wire::Op::SPECIAL},
    {"__iadd__", wire::Op::SPECIAL},
    {"__isub__", wire::Op::SPECIAL},
    {"__imul__", wire::Op::SPECIAL},
    {"__imatmul__", wire::Op::SPECIAL},
    {"__itruediv__", wire::Op::SPECIAL},
    {"__ifloordiv__", wire::Op::SPECIAL},
    {"__imod__", wire::Op::SPECIAL},
    {"__ipow__", wire::Op::SPECIAL},
    {"__ilshift__", wire::Op::SPECIAL},
    {"__irshift__", wire::Op::SPECIAL},
    {"__iand__", wire::Op::SPECIAL},
    {"__ixor__", wire::Op::SPECIAL},
    {"__ior__", wire::Op::SPECIAL},
    // Generator and coroutine methods, carried only by types that have all three (so that
    // collections.abc.Generator and Coroutine recognise the proxy); sent as one callMethod.
    {"send", wire::Op::CALL_METHOD},
    {"throw", wire::Op::CALL_METHOD},
    {"close", wire::Op::CALL_METHOD},
};

// The generator methods at the end of kSpecialMethods, which a type gets all or none of.
inline bool isGeneratorMethod(std::string_view name) {
  return name == "send" || name == "throw" || name == "close";
}

constexpr size_t kSpecialMethodCount = sizeof(kSpecialMethods) / sizeof(kSpecialMethods[0]);

// The index of `name` in kSpecialMethods, or -1.
inline int findSpecialMethod(std::string_view name) {
  for (size_t i = 0; i < kSpecialMethodCount; ++i) {
    if (name == kSpecialMethods[i].name) return int(i);
  }
  return -1;
}

// TypeInfo.flags bits.
constexpr uint32_t kTypeIsMetaclass = 1u << 0;
constexpr uint32_t kTypeUnhashable = 1u << 1;
constexpr uint32_t kTypeIsException = 1u << 2;
constexpr uint32_t kTypeBatchIterator = 1u << 3;

}  // namespace pi
