// Tests proxy/huge_page_allocations.cpp: large raw allocations are advised huge pages, others not.
//
// Runs in an embedded interpreter (support/test_main.cpp). Whether a range was advised is read
// back from /proc/self/smaps: MADV_HUGEPAGE sets the "hg" flag of the mapping that holds it.
#include "proxy/huge_page_allocations.h"

#include <Python.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace pi {
namespace {

// The VmFlags of the mapping of /proc/self/smaps that contains `address`.
std::string vmFlagsAt(uintptr_t address) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> start >> dash >> end && dash == '-' &&
        line.find(':') > line.find(' ')) {
      inside = start <= address && address < end;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

bool advised(const void* block, size_t size) {
  // The middle of the block is inside its 2 MiB-aligned interior for any block of 4 MiB or more.
  return vmFlagsAt(reinterpret_cast<uintptr_t>(block) + size / 2).find(" hg") !=
         std::string::npos;
}

TEST(HugePageAllocations, AdvisesLargeRawBlocksAndChainsToTheAllocatorBefore) {
  // A block from before the wrapper, freed after it: the wrapped allocator must free it.
  void* earlier = PyMem_RawMalloc(8 << 20);
  ASSERT_NE(earlier, nullptr);
  adviseHugePagesForLargeAllocations();
  adviseHugePagesForLargeAllocations();  // a second call changes nothing
  EXPECT_FALSE(advised(earlier, 8 << 20));
  PyMem_RawFree(earlier);
  // Small blocks are left alone (a 1 MiB block may sit in the middle of the malloc heap).
  // Checked first: a heap range advised for a large block stays advised when reused.
  void* small = PyMem_RawMalloc(1 << 20);
  ASSERT_NE(small, nullptr);
  EXPECT_FALSE(advised(small, 1 << 20));
  PyMem_RawFree(small);

  for (size_t size : {size_t{4} << 20, size_t{64} << 20}) {
    void* block = PyMem_RawMalloc(size);
    ASSERT_NE(block, nullptr);
    EXPECT_TRUE(advised(block, size)) << size;
    memset(block, 1, size);  // usable to its end
    PyMem_RawFree(block);
    void* zeroed = PyMem_RawCalloc(size / 8, 8);
    ASSERT_NE(zeroed, nullptr);
    EXPECT_TRUE(advised(zeroed, size)) << size;
    EXPECT_EQ(static_cast<char*>(zeroed)[size - 1], 0);
    void* grown = PyMem_RawRealloc(zeroed, 2 * size);
    ASSERT_NE(grown, nullptr);
    EXPECT_TRUE(advised(grown, 2 * size)) << size;
    PyMem_RawFree(grown);
  }
  // Objects too large for pymalloc come from the raw domain too (the test holds the GIL).
  PyObject* bytes = PyBytes_FromStringAndSize(nullptr, 16 << 20);
  ASSERT_NE(bytes, nullptr);
  EXPECT_TRUE(advised(PyBytes_AS_STRING(bytes), 16 << 20));
  Py_DECREF(bytes);
}

}  // namespace
}  // namespace pi
