// The interface the child's serve loop calls; the proxy layer implements it.
#pragma once

#include "runtime/unique_fd.h"

namespace pi {

// What the child runs once the runtime has prepared it (fds, death signal, crash pipe).
class MessageHandler {
 public:
  virtual ~MessageHandler() = default;

  // Runs in the child with the GIL held. Serves the parent over `socket` until the parent says
  // goodbye or goes away, and returns the child's exit status. May also end the process itself
  // (a SystemExit in the child exits with its code).
  virtual int serve(UniqueFd socket) = 0;
};

}  // namespace pi
