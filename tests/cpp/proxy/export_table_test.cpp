// Tests proxy/export_table.cpp: identity-preserving ids, send counts, releases, pinning.
//
// Runs in an embedded interpreter (support/test_main.cpp); every test holds the GIL.
#include "proxy/export_table.h"

#include "support/kj_expect.h"

#include <gtest/gtest.h>
#include <pybind11/eval.h>

#include <set>

namespace pi {
namespace {

using test::throwsKj;
constexpr auto kFailed = kj::Exception::Type::FAILED;

class ExportTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ns_["__builtins__"] = py::module_::import("builtins");
    py::exec("import weakref\nclass Thing: pass\n", ns_);
  }

  py::object newThing() { return ns_["Thing"](); }
  py::object weakrefTo(py::handle object) { return ns_["weakref"].attr("ref")(object); }
  static bool dead(py::handle weak) { return weak().is_none(); }

  py::dict ns_;
  ExportTable table_;
};

TEST_F(ExportTableTest, GivesTheSameObjectTheSameId) {
  py::object a = newThing();
  py::object b = newThing();
  uint64_t idA = table_.exportObject(a);
  uint64_t idB = table_.exportObject(b);
  EXPECT_NE(idA, 0u);  // id 0 is never used
  EXPECT_NE(idA, idB);
  EXPECT_EQ(table_.exportObject(a), idA);
  EXPECT_EQ(table_.exportObject(b), idB);
  EXPECT_EQ(table_.size(), 2u);
  EXPECT_TRUE(table_.get(idA).is(a));
  EXPECT_TRUE(table_.get(idB).is(b));
  ASSERT_NE(table_.find(a), nullptr);
  EXPECT_EQ(*table_.find(a), idA);
  EXPECT_EQ(table_.find(newThing()), nullptr);
}

TEST_F(ExportTableTest, HoldsAStrongReferenceUntilEverySendIsReleased) {
  py::object thing = newThing();
  py::object weak = weakrefTo(thing);
  uint64_t id = table_.exportObject(thing);
  table_.exportObject(thing);
  table_.exportObject(thing);
  thing = py::none();
  EXPECT_FALSE(dead(weak)) << "the table let go of an exported object";

  table_.release(id, 2);
  EXPECT_FALSE(dead(weak));
  EXPECT_EQ(table_.size(), 1u);
  EXPECT_TRUE(table_.get(id).is(weak()));

  table_.release(id, 1);
  EXPECT_TRUE(dead(weak));
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.get(id); }));
}

TEST_F(ExportTableTest, RefusesToReleaseMoreThanWasSent) {
  py::object thing = newThing();
  uint64_t id = table_.exportObject(thing);
  table_.exportObject(thing);
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.release(id, 3); }, "more times"));
  // The refused release changed nothing: both sends are still owed.
  EXPECT_TRUE(table_.get(id).is(thing));
  table_.release(id, 1);
  EXPECT_TRUE(table_.get(id).is(thing));
  table_.release(id, 1);
  EXPECT_EQ(table_.find(thing), nullptr);
}

TEST_F(ExportTableTest, RefusesUnknownIds) {
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.get(0); }));
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.get(12345); }));
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.release(12345, 1); }));
  uint64_t id = table_.exportObject(newThing());
  table_.release(id, 1);
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.release(id, 1); }));  // already gone
}

TEST_F(ExportTableTest, KeepsPinnedEntriesWhateverIsReleased) {
  py::object type = py::eval("type('Pinned', (), {})", ns_);
  py::object weak = weakrefTo(type);
  uint64_t id = table_.pin(type);
  EXPECT_EQ(table_.exportObject(type), id);
  EXPECT_EQ(table_.pin(type), id);
  type = py::none();

  table_.release(id, 3);  // every send released
  EXPECT_FALSE(dead(weak));
  EXPECT_TRUE(table_.get(id).is(weak()));
  EXPECT_EQ(table_.size(), 1u);

  // An entry exported first and pinned later is pinned too.
  py::object later = newThing();
  uint64_t laterId = table_.exportObject(later);
  table_.pin(later);
  table_.release(laterId, 2);
  EXPECT_TRUE(table_.get(laterId).is(later));
}

TEST_F(ExportTableTest, NeverReusesAnId) {
  std::set<uint64_t> seen;
  for (int i = 0; i < 100; ++i) {
    py::object thing = newThing();
    uint64_t id = table_.exportObject(thing);
    EXPECT_TRUE(seen.insert(id).second) << "id " << id << " was handed out twice";
    table_.release(id, 1);
  }
  // The same object exported again after its release gets a new id as well.
  py::object thing = newThing();
  uint64_t first = table_.exportObject(thing);
  table_.release(first, 1);
  EXPECT_NE(table_.exportObject(thing), first);
}

TEST_F(ExportTableTest, ClearDropsEveryReference) {
  py::object thing = newThing();
  py::object weak = weakrefTo(thing);
  table_.pin(thing);
  table_.exportObject(newThing());
  thing = py::none();
  table_.clear();
  EXPECT_EQ(table_.size(), 0u);
  EXPECT_TRUE(dead(weak));
}

TEST_F(ExportTableTest, DestructorDropsEveryReference) {
  py::object weak;
  {
    ExportTable table;
    py::object thing = newThing();
    weak = weakrefTo(thing);
    table.exportObject(thing);
  }
  EXPECT_TRUE(dead(weak));
}

TEST_F(ExportTableTest, AFinalizerRunByAReleaseMayUseTheTable) {
  // Releasing the last send drops the object, whose __del__ exports another object into the
  // same table: the table must be consistent by then.
  ns_["export_hook"] = py::cpp_function([this](py::handle object) {
    return table_.exportObject(object);
  });
  py::exec(R"(
class Finalized:
    def __init__(self, payload): self.payload = payload
    def __del__(self): exported_ids.append(export_hook(self.payload))
exported_ids = []
payload = Thing()
)",
           ns_);
  py::object finalized = ns_["Finalized"](ns_["payload"]);
  uint64_t id = table_.exportObject(finalized);
  finalized = py::none();
  table_.release(id, 1);

  py::list ids = ns_["exported_ids"];
  ASSERT_EQ(ids.size(), 1u) << "__del__ did not run on release";
  uint64_t payloadId = ids[0].cast<uint64_t>();
  EXPECT_NE(payloadId, id);
  EXPECT_TRUE(table_.get(payloadId).is(ns_["payload"]));
  EXPECT_TRUE(throwsKj(kFailed, [&] { table_.get(id); }));
  EXPECT_EQ(table_.size(), 1u);
}

}  // namespace
}  // namespace pi
