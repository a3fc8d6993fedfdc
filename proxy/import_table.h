// The peer's objects this side holds proxies for: id -> live proxy, and the releases owed.
#pragma once

#include <Python.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace pi {

// Maps a peer export id to the one live proxy for it (a borrowed pointer: the table does not
// keep proxies alive), and counts how many times the peer has sent the id. When the proxy is
// deallocated, the count becomes a pending release, sent with the next outgoing message.
// Touch only with the GIL held.
class ImportTable {
 public:
  struct Release {
    uint64_t id;
    uint32_t count;
  };

  // The live proxy for `id` as a new reference, counting one more receive; null when none.
  PyObject* findAndCount(uint64_t id);

  // Registers a newly made proxy for `id`, counting one receive.
  void add(uint64_t id, PyObject* proxy);

  // Called from the proxy's deallocator. Forgets the entry if it still belongs to `proxy` and
  // queues its release.
  void dropped(uint64_t id, PyObject* proxy);

  // Moves the entry for `id` from proxy `from` to proxy `to`, keeping its count.
  void replace(uint64_t id, PyObject* from, PyObject* to);

  // Queues the release of one receive of `id` that no proxy stands for (a ref the receiver did
  // not use). Receives of one id between two takeReleases() make one release.
  void releaseUnused(uint64_t id);

  // Takes the queued releases.
  std::vector<Release> takeReleases();
  bool hasReleases() const { return !pending_.empty(); }
  size_t size() const { return byId_.size(); }

  // Forgets everything (the connection is gone): no releases will be sent.
  void clear();

 private:
  struct Entry {
    PyObject* proxy;  // borrowed
    uint32_t count;
  };
  std::unordered_map<uint64_t, Entry> byId_;
  std::vector<Release> pending_;
  std::unordered_map<uint64_t, size_t> unused_;  // id -> its releaseUnused() entry in pending_
};

}  // namespace pi
