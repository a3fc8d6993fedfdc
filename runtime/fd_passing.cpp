// Passing file descriptors over a Unix socket (SCM_RIGHTS): the control-message plumbing.
#include "runtime/fd_passing.h"

#include <kj/debug.h>

#include <cstring>

namespace pi {

void attachFds(msghdr& msg, FdControlBuffer& buffer, kj::ArrayPtr<const int> fds) {
  if (fds.size() == 0) return;
  KJ_REQUIRE(fds.size() <= kMaxFrameFds, "too many fds for one message", fds.size());
  msg.msg_control = buffer.bytes;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* header = CMSG_FIRSTHDR(&msg);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  memcpy(CMSG_DATA(header), fds.begin(), sizeof(int) * fds.size());
}

void expectFds(msghdr& msg, FdControlBuffer& buffer) {
  msg.msg_control = buffer.bytes;
  msg.msg_controllen = sizeof(buffer.bytes);
}

size_t collectFds(msghdr& msg, std::vector<UniqueFd>& out) {
  size_t total = 0;
  for (cmsghdr* header = CMSG_FIRSTHDR(&msg); header != nullptr;
       header = CMSG_NXTHDR(&msg, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      out.emplace_back(fd);
    }
    total += count;
  }
  return total;
}

}  // namespace pi
