// Passing file descriptors over a Unix socket (SCM_RIGHTS): the control-message plumbing.
#pragma once

#include "protocol/limits.h"
#include "runtime/unique_fd.h"

#include <kj/array.h>
#include <sys/socket.h>

#include <cstddef>
#include <vector>

namespace pi {

// Control-message space for up to kMaxFrameFds fds, suitably aligned.
struct FdControlBuffer {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(int) * kMaxFrameFds)];
};

// Points `msg` at `buffer` holding `fds` (borrowed) as one SCM_RIGHTS message; does nothing for
// no fds. At most kMaxFrameFds.
void attachFds(msghdr& msg, FdControlBuffer& buffer, kj::ArrayPtr<const int> fds);

// Prepares `msg` to receive up to kMaxFrameFds fds into `buffer`.
void expectFds(msghdr& msg, FdControlBuffer& buffer);

// Appends the fds a received `msg` carried to `out` (they were received with
// MSG_CMSG_CLOEXEC, so they are close-on-exec). Returns how many.
size_t collectFds(msghdr& msg, std::vector<UniqueFd>& out);

}  // namespace pi
