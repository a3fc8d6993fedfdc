// A clean, single-threaded process that forks isolated children on request: client and server.
//
// Messages on the SOCK_SEQPACKET control socket (one datagram each, at most kMaxMessage bytes):
//   parent -> server  'F' <u32 mask> <options>   fork; SCM_RIGHTS carries the fds named by mask
//                                                 (bit 0 socket, 1 crash pipe, 2 stdout, 3 stderr)
//   server -> parent  'P' <i32 pid>               the child's pid
//                     'E' <text>                  fork failed
//   parent -> server  'R' <i32 pid>               reap pid once it has exited
//   server -> parent  'S' <i32 pid> <i32 status>  its wait status
//   server -> parent  'H'                         hello, once, when the server is ready
//                     kChildReasonPrefix <text>   the server could not start, or stopped: why
#include <optional>
#include "runtime/fork_server.h"

#include "runtime/fd_passing.h"
#include "runtime/startup_failure.h"

#include <fcntl.h>
#include <kj/debug.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

namespace pi {

namespace {

constexpr size_t kMaxMessage = 1 << 20;
constexpr size_t kMaxFds = 4;

void putU32(std::string& out, uint32_t value) { out.append(reinterpret_cast<char*>(&value), 4); }

uint32_t getU32(const std::string& in, size_t at) {
  KJ_REQUIRE(in.size() >= at + 4, "fork server message too short");
  uint32_t value;
  memcpy(&value, in.data() + at, 4);
  return value;
}

// Sends one datagram with `fds` attached. Blocking; EINTR retried.
void sendPacket(int socket, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  FdControlBuffer control;
  KJ_ASSERT(fds.size() <= kMaxFds);
  attachFds(msg, control, kj::arrayPtr(fds.data(), fds.size()));
  ssize_t n;
  KJ_SYSCALL(n = ::sendmsg(socket, &msg, MSG_NOSIGNAL));
  KJ_REQUIRE(size_t(n) == bytes.size(), "fork server message was cut short");
}

// Receives one datagram and the fds attached to it (owned by the caller). An empty string
// means the peer closed the socket.
std::string receivePacket(int socket, std::vector<UniqueFd>* fds) {
  std::string bytes(kMaxMessage, '\0');
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  FdControlBuffer control;
  expectFds(msg, control);
  ssize_t n;
  KJ_SYSCALL(n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC));
  std::vector<UniqueFd> received;
  collectFds(msg, received);
  if (fds != nullptr) {
    for (auto& fd : received) fds->push_back(std::move(fd));
  }  // else: closed as `received` goes
  KJ_REQUIRE(!(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)), "fork server message too large");
  bytes.resize(size_t(n));
  return bytes;
}

// A datagram in which the server says why it could not start or stopped: its text, or empty.
std::string failureReport(const std::string& packet) {
  const std::string prefix = kChildReasonPrefix;
  if (packet.compare(0, prefix.size(), prefix) != 0) return "";
  std::string text = packet.substr(prefix.size());
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

[[noreturn]] void throwWords(kj::Exception::Type type, std::string text) {
  kj::throwFatalException(kj::Exception(type, __FILE__, __LINE__, kj::heapString(text)));
}

bool waitReadable(int fd, const Deadline& deadline) {
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    int n = ::poll(&pfd, 1, deadline.pollMillis());
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) KJ_FAIL_SYSCALL("poll", errno);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------- client

std::shared_ptr<ForkServerClient> ForkServerClient::start(const std::vector<std::string>& argv,
                                                          double startTimeout) {
  int sockets[2];
  KJ_SYSCALL(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets));
  UniqueFd ours(sockets[0]);
  UniqueFd theirs(sockets[1]);
  int pipes[2];
  KJ_SYSCALL(::pipe2(pipes, O_CLOEXEC));
  UniqueFd lifelineRead(pipes[0]);
  UniqueFd lifelineWrite(pipes[1]);
  ChildProcess server = ChildProcess::spawn(
      argv, {{theirs.get(), kForkServerControlFd}, {lifelineRead.get(), kForkServerLifelineFd}});
  theirs.reset();
  lifelineRead.reset();
  pid_t pid = server.pid();
  std::string who = "the fork server (pid " + std::to_string(pid) + ") could not start: ";
  if (!waitReadable(ours.get(), Deadline::afterOrNever(startTimeout))) {
    server.killAndReap();
    throwWords(kj::Exception::Type::OVERLOADED,
               who + "it did not say it was ready within " + std::to_string(int(startTimeout)) +
                   " s, so the parent killed it");
  }
  std::string hello = receivePacket(ours.get(), nullptr);
  if (hello != "H") {
    std::string why = failureReport(hello);
    if (hello.empty()) {
      // It closed its socket: it is exiting, or has.
      if (auto ended = server.waitFor(Deadline::after(5.0))) {
        why = ended->describeEnding();
        if (ended->exitCode) why += ": " + describeStartupStatus(*ended->exitCode);
      } else {
        why = "it closed its socket but did not exit";
      }
    } else if (why.empty()) {
      why = "its first message was not hello";
    }
    server.killAndReap();
    throwWords(kj::Exception::Type::FAILED, who + why);
  }
  std::shared_ptr<ForkServerClient> client(
      new ForkServerClient(std::move(server), std::move(ours)));
  client->lifeline_ = std::move(lifelineWrite);
  return client;
}

ForkServerClient::ForkServerClient(ChildProcess server, UniqueFd control)
    : owner_(::getpid()), server_(std::move(server)), control_(std::move(control)) {}

ForkServerClient::~ForkServerClient() {
  if (::getpid() != owner_) {
    // Inherited across fork: not our fds; server_ ignores it likewise.
    control_.release();
    lifeline_.release();
    return;
  }
  control_.reset();  // the server sees EOF and exits; its children die with it
  try {
    server_.terminate(1.0);
  } catch (...) {
    // Destructors do not throw; ChildProcess kills and reaps as a last resort.
  }
}

bool ForkServerClient::alive() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (broken_ || ::getpid() != owner_) return false;
  if (server_.tryReap().has_value()) broken_ = true;
  return !broken_;
}

void ForkServerClient::sendRequest(const std::string& bytes, const std::vector<int>& fds,
                                   Deadline) {
  if (broken_) {
    throwWords(kj::Exception::Type::DISCONNECTED,
               "fork server (pid " + std::to_string(server_.pid()) + ") is gone: " +
                   (server_.termination() ? server_.termination()->describeEnding()
                                          : "it stopped answering"));
  }
  try {
    sendPacket(control_.get(), bytes, fds);
  } catch (kj::Exception&) {
    throwGone("");
  }
}

std::string ForkServerClient::receiveReply(Deadline deadline) {
  if (!waitReadable(control_.get(), deadline)) {
    broken_ = true;  // a late reply would answer the wrong request
    kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "fork server did not answer in time"));
  }
  std::string reply;
  try {
    reply = receivePacket(control_.get(), nullptr);
  } catch (kj::Exception& e) {
    if (e.getType() != kj::Exception::Type::DISCONNECTED) throw;
  }
  if (reply.empty()) throwGone("");
  std::string why = failureReport(reply);
  if (!why.empty()) throwGone(why);
  return reply;
}

void ForkServerClient::throwGone(std::string why) {
  broken_ = true;
  if (why.empty()) {
    // Its socket closed: it is exiting, or has; say how it ended when it did.
    auto ended = server_.waitFor(Deadline::after(1.0));
    why = ended ? ended->describeEnding() : "its socket closed";
  }
  throwWords(kj::Exception::Type::DISCONNECTED,
             "fork server (pid " + std::to_string(server_.pid()) + ") is gone: " + why);
}

pid_t ForkServerClient::forkChild(const std::string& options, int socketFd, int crashFd,
                                  int stdoutFd, int stderrFd, Deadline deadline) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (::getpid() != owner_) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "fork server belongs to another process"));
  }
  std::vector<int> fds{socketFd, crashFd};
  uint32_t mask = 0b11;
  if (stdoutFd >= 0) {
    fds.push_back(stdoutFd);
    mask |= 0b100;
  }
  if (stderrFd >= 0) {
    fds.push_back(stderrFd);
    mask |= 0b1000;
  }
  std::string request = "F";
  putU32(request, mask);
  request += options;
  KJ_REQUIRE(request.size() <= kMaxMessage, "isolated context options are too large");
  sendRequest(request, fds, deadline);
  std::string reply = receiveReply(deadline);
  if (reply[0] == 'E') KJ_FAIL_REQUIRE("fork server could not fork", reply.substr(1));
  KJ_REQUIRE(reply[0] == 'P' && reply.size() == 5, "fork server sent a bad reply");
  return pid_t(getU32(reply, 1));
}

std::optional<int> ForkServerClient::reap(pid_t pid, Deadline deadline) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string request = "R";
  putU32(request, uint32_t(pid));
  sendRequest(request, {}, deadline);
  std::string reply;
  try {
    reply = receiveReply(deadline);
  } catch (kj::Exception& e) {
    if (e.getType() == kj::Exception::Type::OVERLOADED) return std::nullopt;
    throw;
  }
  KJ_REQUIRE(reply[0] == 'S' && reply.size() == 9 && pid_t(getU32(reply, 1)) == pid,
             "fork server sent a bad reply");
  return int(getU32(reply, 5));
}

// ---------------------------------------------------------------------------------- server

void runForkServer(
    int controlFd, pid_t parentPid, bool deathSignal,
    const std::function<void(const std::string& options, const ChildSetup& setup)>& childMain) {
  // Why the server could not start (or stopped) goes to the parent as one datagram.
  setStartupReportFd(controlFd);
  if (deathSignal && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    failStartup("cannot set its death signal (prctl PR_SET_PDEATHSIG)", errno, kStartupFailed);
  }
  if (::getppid() != parentPid) {
    failStartup("its parent is not the process that started it (it ended, or the pid given is "
                "wrong)", 0, kStartupParentGone);
  }
  armLifeline(kForkServerLifelineFd);
  // SIGCHLD through a signalfd, so the loop wakes when a child exits. Ours alone: this process
  // is the fork server, not a host application.
  sigset_t childSignals;
  sigemptyset(&childSignals);
  sigaddset(&childSignals, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &childSignals, nullptr);
  int signals = ::signalfd(-1, &childSignals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signals < 0) failStartup("cannot make a signalfd for SIGCHLD", errno, kStartupFailed);
  std::set<pid_t> children;
  std::set<pid_t> reapRequests;
  try {
    sendPacket(controlFd, "H", {});
    for (;;) {
      // Answer reap requests for children that have exited.
      for (auto it = reapRequests.begin(); it != reapRequests.end();) {
        int status = 0;
        pid_t r = ::waitpid(*it, &status, WNOHANG);
        if (r == 0) {
          ++it;
          continue;
        }
        std::string reply = "S";
        putU32(reply, uint32_t(*it));
        putU32(reply, uint32_t(r < 0 ? 0 : status));
        sendPacket(controlFd, reply, {});
        children.erase(*it);
        it = reapRequests.erase(it);
      }
      pollfd fds[2] = {{controlFd, POLLIN, 0}, {signals, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        failStartup("stopped: poll failed", errno, kStartupFailed);
      }
      if (fds[1].revents) {
        signalfd_siginfo info;
        while (::read(signals, &info, sizeof(info)) == ssize_t(sizeof(info))) {
        }
      }
      if (!fds[0].revents) continue;
      std::vector<UniqueFd> received;
      std::string request = receivePacket(controlFd, &received);
      if (request.empty()) break;  // the parent closed its end: we are done
      if (request[0] == 'R') {
        pid_t pid = pid_t(getU32(request, 1));
        if (children.count(pid) != 0) {
          reapRequests.insert(pid);
        } else {
          std::string reply = "S";
          putU32(reply, uint32_t(pid));
          putU32(reply, 0);
          sendPacket(controlFd, reply, {});
        }
        continue;
      }
      if (request[0] != 'F') continue;
      uint32_t mask = getU32(request, 1);
      std::string options = request.substr(5);
      ChildSetup setup;
      setup.parentPid = ::getpid();
      size_t next = 0;
      auto take = [&](uint32_t bit) {
        return (mask & bit) && next < received.size() ? received[next++].get() : -1;
      };
      setup.socketFd = take(1);
      setup.crashFd = take(2);
      setup.stdoutFd = take(4);
      setup.stderrFd = take(8);
      if (setup.socketFd < 0 || setup.crashFd < 0) {
        sendPacket(controlFd, "Emissing fds", {});
        continue;
      }
      try {
        ChildProcess child = ChildProcess::fork([&] {
          setStartupReportFd(setup.crashFd);  // the child's, not our control socket
          childMain(options, setup);
        });
        pid_t pid = child.release();
        children.insert(pid);
        std::string reply = "P";
        putU32(reply, uint32_t(pid));
        sendPacket(controlFd, reply, {});
      } catch (kj::Exception& e) {
        sendPacket(controlFd, std::string("E") + e.getDescription().cStr(), {});
      }
    }
  } catch (kj::Exception& e) {
    // The parent closing its end mid-reply is an ordinary end; anything else is a failure.
    if (e.getType() != kj::Exception::Type::DISCONNECTED) {
      reportStartupFailure(("stopped: " + std::string(e.getDescription().cStr())).c_str());
      ::_exit(kStartupFailed);
    }
  } catch (...) {
    reportStartupFailure("stopped: an unknown C++ exception");
    ::_exit(kStartupFailed);
  }
  // Children die with us (their PR_SET_PDEATHSIG); nothing to wait for.
  ::_exit(0);
}

}  // namespace pi
