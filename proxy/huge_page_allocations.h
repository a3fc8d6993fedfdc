// In the child: large Python allocations get transparent huge pages, for the parent to copy fast.
#pragma once

namespace pi {

// Wraps the interpreter's raw allocator (PYMEM_DOMAIN_RAW, which also serves every object
// allocation too large for pymalloc: a big bytes, bytearray, list, str) so that the 2 MiB-aligned
// interior of each block of at least 4 MiB is advised MADV_HUGEPAGE before it is first touched.
// The same policy numpy applies to its own arrays. Why: the parent copies a large value out of
// the child's memory (Buffer.address) page by page, and a source in 4 KiB pages costs it as much
// again as the copy itself; in 2 MiB pages it costs nothing. Filling such a block in the child
// gets cheaper too (one fault per 2 MiB). The cost: a block touched only here and there takes
// up to 2 MiB per touched region instead of 4 KiB.
//
// Call once, in the child, while it is still single-threaded (before the bootstrap runs), with
// the GIL held. Chains to the allocator installed before (debug hooks, tracemalloc), so blocks
// allocated before the call are freed correctly; a later PyMem_SetAllocator (tracemalloc.stop)
// may remove it, which only stops the advice. Later calls do nothing.
void adviseHugePagesForLargeAllocations();

}  // namespace pi
