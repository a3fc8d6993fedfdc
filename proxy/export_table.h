// The objects this side has handed to the peer by reference: id <-> object, with send counts.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <unordered_map>

namespace pi {

namespace py = pybind11;

// Holds a strong reference to every exported object until the peer has released every copy of
// its id it was sent. The same object always gets the same id while it stays exported. Ids are
// never reused within one table. Touch only with the GIL held.
class ExportTable {
 public:
  ExportTable() = default;
  ExportTable(const ExportTable&) = delete;
  ExportTable& operator=(const ExportTable&) = delete;
  ~ExportTable();

  // The id for `object`, adding it if new, and counts one more send of it.
  uint64_t exportObject(py::handle object);

  // Like exportObject, but the entry is never dropped (used for types that refs name).
  uint64_t pin(py::handle object);

  // The object with `id`. Throws (kj FAILED) for an id that is not exported: the id came from
  // the peer, who may be lying.
  py::handle get(uint64_t id) const;

  // The id of `object` if it is exported.
  const uint64_t* find(py::handle object) const;

  // The peer dropped `count` copies of `id`; returns true when that dropped the object. Throws
  // (kj FAILED) when the peer releases more than it was sent or an unknown id.
  bool release(uint64_t id, uint32_t count);

  size_t size() const { return byId_.size(); }

  // Drops every reference (the connection is gone).
  void clear();

 private:
  struct Entry {
    py::object object;
    uint64_t sends = 0;
    bool pinned = false;
  };
  std::unordered_map<uint64_t, Entry> byId_;
  std::unordered_map<PyObject*, uint64_t> byObject_;
  uint64_t nextId_ = 1;
};

}  // namespace pi
