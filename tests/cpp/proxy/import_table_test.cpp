// Tests proxy/import_table.cpp: one live proxy per peer id, receive counts, batched releases.
//
// Runs in an embedded interpreter (support/test_main.cpp); every test holds the GIL. Plain Python
// objects stand in for proxies: the table only borrows them.
#include "proxy/import_table.h"

#include <gtest/gtest.h>
#include <pybind11/eval.h>
#include <pybind11/pybind11.h>

#include <vector>

namespace pi {
namespace {

namespace py = pybind11;

class ImportTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_["__builtins__"] = py::module_::import("builtins");
    py::exec("import weakref\nclass Proxy: pass\n", ns_);
  }
  py::object newProxy() { return ns_["Proxy"](); }

  // Takes the pending releases as (id, count) pairs.
  std::vector<std::pair<uint64_t, uint32_t>> releases() {
    std::vector<std::pair<uint64_t, uint32_t>> out;
    for (auto release : table_.takeReleases()) out.emplace_back(release.id, release.count);
    return out;
  }

  using Releases = std::vector<std::pair<uint64_t, uint32_t>>;

  py::dict ns_;
  ImportTable table_;
};

TEST_F(ImportTableTest, FindsNothingForAnIdItWasNeverGiven) {
  EXPECT_EQ(table_.findAndCount(7), nullptr);
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_FALSE(table_.hasReleases());
}

TEST_F(ImportTableTest, ReturnsTheLiveProxyAsANewReferenceAndCountsEachReceive) {
  py::object proxy = newProxy();
  table_.add(7, proxy.ptr());
  EXPECT_EQ(table_.size(), 1u);
  auto refcount = Py_REFCNT(proxy.ptr());

  for (int i = 0; i < 2; ++i) {
    // The table hands out a new reference; stealing it balances the count again.
    py::object found = py::reinterpret_steal<py::object>(table_.findAndCount(7));
    ASSERT_TRUE(found.is(proxy));
    EXPECT_EQ(Py_REFCNT(proxy.ptr()), refcount + 1);
  }
  EXPECT_EQ(Py_REFCNT(proxy.ptr()), refcount);
  EXPECT_FALSE(table_.hasReleases());

  // add counted one receive and findAndCount two: the release gives all three back at once.
  table_.dropped(7, proxy.ptr());
  EXPECT_EQ(releases(), (Releases{{7, 3}}));
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_EQ(table_.findAndCount(7), nullptr);
}

TEST_F(ImportTableTest, IgnoresADropByAProxyThatDoesNotOwnTheEntry) {
  py::object proxy = newProxy();
  py::object stale = newProxy();
  table_.add(7, proxy.ptr());
  table_.dropped(7, stale.ptr());
  table_.dropped(8, proxy.ptr());
  EXPECT_FALSE(table_.hasReleases());
  EXPECT_EQ(table_.size(), 1u);
  py::object found = py::reinterpret_steal<py::object>(table_.findAndCount(7));
  EXPECT_TRUE(found.is(proxy));
}

TEST_F(ImportTableTest, BatchesReleasesUntilTheyAreTaken) {
  std::vector<py::object> proxies;
  for (uint64_t id = 1; id <= 3; ++id) {
    proxies.push_back(newProxy());
    table_.add(id * 10, proxies.back().ptr());
  }
  Py_DECREF(table_.findAndCount(20));
  table_.dropped(10, proxies[0].ptr());
  table_.dropped(20, proxies[1].ptr());
  table_.dropped(30, proxies[2].ptr());
  // Nothing is sent one by one: all three wait for the next outgoing message.
  EXPECT_TRUE(table_.hasReleases());
  EXPECT_EQ(releases(), (Releases{{10, 1}, {20, 2}, {30, 1}}));
  EXPECT_FALSE(table_.hasReleases());
  EXPECT_TRUE(releases().empty());
}

TEST_F(ImportTableTest, ANewProxyForAnIdWhoseProxyIsDyingStartsAFreshCount) {
  py::object dying = newProxy();
  py::object fresh = newProxy();
  table_.add(7, dying.ptr());
  Py_DECREF(table_.findAndCount(7));
  table_.add(7, fresh.ptr());  // the old proxy's receives are released now
  EXPECT_EQ(releases(), (Releases{{7, 2}}));
  table_.dropped(7, dying.ptr());  // its deallocator runs late: nothing more to release
  EXPECT_FALSE(table_.hasReleases());
  table_.dropped(7, fresh.ptr());
  EXPECT_EQ(releases(), (Releases{{7, 1}}));
}

TEST_F(ImportTableTest, ClearForgetsEntriesAndPendingReleases) {
  py::object a = newProxy();
  py::object b = newProxy();
  table_.add(1, a.ptr());
  table_.add(2, b.ptr());
  table_.dropped(1, a.ptr());
  table_.clear();
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_FALSE(table_.hasReleases());
  EXPECT_EQ(table_.findAndCount(2), nullptr);
}

TEST_F(ImportTableTest, DoesNotReviveAProxyWhoseDeallocationHasBegun) {
  // A weakref callback runs while its referent is being deallocated (reference count 0). If it
  // receives the proxy's id again, the table must not hand out the dying proxy.
  py::object proxy = newProxy();
  PyObject* raw = proxy.ptr();
  table_.add(7, raw);
  bool called = false;
  PyObject* foundDuringDealloc = raw;
  py::cpp_function onDealloc([&](py::handle) {
    called = true;
    foundDuringDealloc = table_.findAndCount(7);
    table_.dropped(7, raw);  // what the proxy's deallocator does
  });
  py::object weak = ns_["weakref"].attr("ref")(proxy, onDealloc);
  proxy = py::none();

  ASSERT_TRUE(called);
  EXPECT_EQ(foundDuringDealloc, nullptr);
  EXPECT_EQ(releases(), (Releases{{7, 1}}));
}

TEST_F(ImportTableTest, ReleasesUnusedReceivesOncePerIdPerBatchBesideALiveProxy) {
  py::object proxy = newProxy();
  table_.add(3, proxy.ptr());
  table_.releaseUnused(3);  // a standard value's original the receiver rebuilt itself
  table_.releaseUnused(5);
  table_.releaseUnused(3);
  EXPECT_EQ(releases(), (Releases{{3, 2}, {5, 1}}));
  table_.releaseUnused(3);
  EXPECT_EQ(releases(), (Releases{{3, 1}}));
  // The live proxy keeps its own count.
  table_.dropped(3, proxy.ptr());
  EXPECT_EQ(releases(), (Releases{{3, 1}}));
}

}  // namespace
}  // namespace pi
