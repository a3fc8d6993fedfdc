// The peer's objects this side holds proxies for: id -> live proxy, and the releases owed.
#include "proxy/import_table.h"

namespace pi {

PyObject* ImportTable::findAndCount(uint64_t id) {
  auto found = byId_.find(id);
  if (found == byId_.end()) return nullptr;
  // A proxy whose deallocation has begun (a weakref callback running) must not be revived.
  if (Py_REFCNT(found->second.proxy) <= 0) return nullptr;
  ++found->second.count;
  Py_INCREF(found->second.proxy);
  return found->second.proxy;
}

void ImportTable::add(uint64_t id, PyObject* proxy) {
  auto found = byId_.find(id);
  if (found != byId_.end()) {
    // The old proxy is being deallocated; its count is released now, the new proxy starts at 1.
    pending_.push_back({id, found->second.count});
    found->second = Entry{proxy, 1};
    return;
  }
  byId_.emplace(id, Entry{proxy, 1});
}

void ImportTable::dropped(uint64_t id, PyObject* proxy) {
  auto found = byId_.find(id);
  if (found == byId_.end() || found->second.proxy != proxy) return;
  pending_.push_back({id, found->second.count});
  byId_.erase(found);
}

void ImportTable::replace(uint64_t id, PyObject* from, PyObject* to) {
  auto found = byId_.find(id);
  if (found != byId_.end() && found->second.proxy == from) found->second.proxy = to;
}

void ImportTable::releaseUnused(uint64_t id) {
  auto [found, isNew] = unused_.emplace(id, pending_.size());
  if (!isNew && pending_[found->second].count < UINT32_MAX) {
    ++pending_[found->second].count;
    return;
  }
  found->second = pending_.size();
  pending_.push_back({id, 1});
}

std::vector<ImportTable::Release> ImportTable::takeReleases() {
  std::vector<Release> out;
  out.swap(pending_);
  unused_.clear();
  return out;
}

void ImportTable::clear() {
  byId_.clear();
  pending_.clear();
  unused_.clear();
}

}  // namespace pi
