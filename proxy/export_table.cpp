// The objects this side has handed to the peer by reference: id <-> object, with send counts.
#include "proxy/export_table.h"

#include <kj/debug.h>

namespace pi {

ExportTable::~ExportTable() {
  // Dropping Python references needs the GIL. An endpoint that outlives the interpreter (a
  // forked child leaving with _exit) never gets here.
  if (Py_IsInitialized() && PyGILState_Check()) {
    clear();
  } else {
    for (auto& entry : byId_) entry.second.object.release();  // leak rather than crash
  }
}

uint64_t ExportTable::exportObject(py::handle object) {
  auto found = byObject_.find(object.ptr());
  if (found != byObject_.end()) {
    ++byId_[found->second].sends;
    return found->second;
  }
  uint64_t id = nextId_++;
  byId_.emplace(id, Entry{py::reinterpret_borrow<py::object>(object), 1, false});
  byObject_.emplace(object.ptr(), id);
  return id;
}

uint64_t ExportTable::pin(py::handle object) {
  uint64_t id = exportObject(object);
  byId_[id].pinned = true;
  return id;
}

py::handle ExportTable::get(uint64_t id) const {
  auto found = byId_.find(id);
  KJ_REQUIRE(found != byId_.end(), "peer named an object id that is not exported", id);
  return found->second.object;
}

const uint64_t* ExportTable::find(py::handle object) const {
  auto found = byObject_.find(object.ptr());
  return found == byObject_.end() ? nullptr : &found->second;
}

bool ExportTable::release(uint64_t id, uint32_t count) {
  auto found = byId_.find(id);
  KJ_REQUIRE(found != byId_.end(), "peer released an object id that is not exported", id);
  Entry& entry = found->second;
  KJ_REQUIRE(count <= entry.sends, "peer released an id more times than it was sent", id, count,
             entry.sends);
  entry.sends -= count;
  if (entry.sends == 0 && !entry.pinned) {
    py::object object = std::move(entry.object);
    byObject_.erase(object.ptr());
    byId_.erase(found);
    return true;
    // `object` is dropped here, after the tables are consistent: its finalizer may run code.
  }
  return false;
}

void ExportTable::clear() {
  auto entries = std::move(byId_);
  byId_.clear();
  byObject_.clear();
  entries.clear();
}

}  // namespace pi
