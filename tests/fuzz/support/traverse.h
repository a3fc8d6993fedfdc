// Reads every field of a received message, as a decoder that looked at all of it would.
#pragma once

#include <capnp/dynamic.h>

#include <cstdint>

namespace pi::fuzz {

// Visits every set field of `value` (the active member of each union, lists element by element,
// text and data byte by byte) and returns a checksum, so the reads cannot be optimized away.
// Throws what capnp throws for a malformed message (kj FAILED).
inline uint64_t traverse(capnp::DynamicValue::Reader value) {
  switch (value.getType()) {
    case capnp::DynamicValue::BOOL:
      return value.as<bool>();
    case capnp::DynamicValue::INT:
      return uint64_t(value.as<int64_t>());
    case capnp::DynamicValue::UINT:
      return value.as<uint64_t>();
    case capnp::DynamicValue::FLOAT:
      return uint64_t(value.as<double>() == value.as<double>());
    case capnp::DynamicValue::ENUM:
      return value.as<capnp::DynamicEnum>().getRaw();
    case capnp::DynamicValue::TEXT: {
      uint64_t sum = 0;
      for (char c : value.as<capnp::Text>()) sum = sum * 31 + uint8_t(c);
      return sum;
    }
    case capnp::DynamicValue::DATA: {
      uint64_t sum = 0;
      for (auto b : value.as<capnp::Data>()) sum = sum * 31 + b;
      return sum;
    }
    case capnp::DynamicValue::LIST: {
      uint64_t sum = 0;
      for (auto element : value.as<capnp::DynamicList>()) sum += traverse(element);
      return sum;
    }
    case capnp::DynamicValue::STRUCT: {
      auto reader = value.as<capnp::DynamicStruct>();
      uint64_t sum = 0;
      // has() is false for the members of a union that are not the active one.
      for (auto field : reader.getSchema().getFields()) {
        if (reader.has(field)) sum += traverse(reader.get(field));
      }
      return sum;
    }
    default:
      return 0;  // void, any-pointers and capabilities: nothing of ours
  }
}

}  // namespace pi::fuzz
