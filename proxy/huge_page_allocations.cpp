// In the child: large Python allocations get transparent huge pages, for the parent to copy fast.
#include "proxy/huge_page_allocations.h"

#include <Python.h>
#include <sys/mman.h>

#include <cstdint>

namespace pi {

namespace {

constexpr size_t kAdviseBytes = size_t{4} << 20;
constexpr uintptr_t kHugePageBytes = uintptr_t{2} << 20;

// The allocator we wrap. Process-wide by nature: the interpreter's allocator is process-wide.
// Written once, before any wrapped call can happen (see the header), read-only afterwards.
PyMemAllocatorEx wrapped;
bool installed = false;

void advise(void* block, size_t size) {
  if (block == nullptr || size < kAdviseBytes) return;
  uintptr_t start = reinterpret_cast<uintptr_t>(block);
  uintptr_t begin = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  uintptr_t end = (start + size) & ~(kHugePageBytes - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

// The raw domain is called without the GIL, from any thread: nothing here touches Python.
void* adviseMalloc(void*, size_t size) {
  void* block = wrapped.malloc(wrapped.ctx, size);
  advise(block, size);
  return block;
}

void* adviseCalloc(void*, size_t count, size_t itemSize) {
  void* block = wrapped.calloc(wrapped.ctx, count, itemSize);
  if (itemSize != 0 && count <= SIZE_MAX / itemSize) advise(block, count * itemSize);
  return block;
}

void* adviseRealloc(void*, void* old, size_t size) {
  void* block = wrapped.realloc(wrapped.ctx, old, size);
  advise(block, size);
  return block;
}

void forwardFree(void*, void* block) { wrapped.free(wrapped.ctx, block); }

}  // namespace

void adviseHugePagesForLargeAllocations() {
  if (installed) return;
  installed = true;
  PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &wrapped);
  PyMemAllocatorEx advising{nullptr, adviseMalloc, adviseCalloc, adviseRealloc, forwardFree};
  PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &advising);
}

}  // namespace pi
