// The main of every test program: GoogleTest, the leak check, and with PI_TEST_EMBED_PYTHON an
// embedded interpreter that lives for the whole run (tests hold the GIL throughout).
#include "support/leak_check.h"

#include <gtest/gtest.h>

#ifdef PI_TEST_EMBED_PYTHON
#include <pybind11/embed.h>
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#ifdef PI_TEST_EMBED_PYTHON
  pybind11::scoped_interpreter interpreter;
#endif
  ::testing::AddGlobalTestEnvironment(new pi::test::LeakCheck);  // gtest owns it
  return RUN_ALL_TESTS();
}
