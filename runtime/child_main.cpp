// The child right after fork: fd hygiene, death signal, crash pipe, then the serve loop.
#include "runtime/child_main.h"

#include "runtime/startup_failure.h"

#include <Python.h>
#include <kj/exception.h>
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace pi {

namespace {

// Where runChild put the library's fds in this child (-1 until then).
int gSocketFd = -1;
int gCrashFd = -1;
int gLifelineFd = -1;

// The size of this process's fd table (FDSize in /proc/self/status): no fd is at or above it.
// 0 when it cannot be read. Async-signal-safe (raw reads into a stack buffer).
int fdTableSize() {
  int status = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (status < 0) return 0;
  char text[4096];
  size_t size = 0;
  while (size < sizeof(text) - 1) {
    ssize_t n = ::read(status, text + size, sizeof(text) - 1 - size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size += size_t(n);
  }
  ::close(status);
  text[size] = '\0';
  const char* field = strstr(text, "\nFDSize:");
  if (field == nullptr) return 0;
  field += 8;
  while (*field == ' ' || *field == '\t') ++field;
  int value = 0;
  for (; *field >= '0' && *field <= '9'; ++field) value = value * 10 + (*field - '0');
  return value;
}

// Passes each fd this process has open to `visit`, in increasing order; `visit` may replace an
// fd (dup onto it) but must not open or close any. Asks the kernel about 256 numbers per poll()
// (POLLNVAL marks a closed one): up to the open-files limit when that is at most 4096 (fds at
// or above it, left from a higher limit, are closed instead: no new fd can take their numbers,
// so nothing can collide with them), else up to the size of the fd table. Listing
// /proc/self/fd instead cost a new process whose parent holds 1000 fds 2.1 ms here, this
// 0.3 ms (mostly the dup3 calls), and 50-60 us with a few fds (both ways, measured by hand on
// a 2-CPU VM). Async-signal-safe.
template <typename Visit>
void forEachOpenFd(Visit&& visit) {
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  int bound = files.rlim_cur == RLIM_INFINITY || files.rlim_cur > (1 << 20)
                  ? (1 << 20)
                  : int(files.rlim_cur);
  if (bound > 4096) {
    int table = fdTableSize();
    if (table > 0 && table < bound) bound = table;
    if (bound > 65536 && table <= 0) bound = 65536;  // without /proc: the first 64 Ki numbers
  } else {
#ifdef SYS_close_range
    ::syscall(SYS_close_range, unsigned(bound), ~0U, 0);
#endif
  }
  pollfd chunk[256];
  for (int base = 0; base < bound; base += 256) {
    int count = bound - base < 256 ? bound - base : 256;
    for (int i = 0; i < count; ++i) chunk[i] = pollfd{base + i, 0, 0};
    int n;
    do {
      n = ::poll(chunk, nfds_t(count), 0);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < count; ++i) {
      // On an error of poll itself, ask about each number (F_GETFD fails on a closed one).
      bool open = n >= 0 ? !(chunk[i].revents & POLLNVAL) : ::fcntl(base + i, F_GETFD) >= 0;
      if (open) visit(base + i);
    }
  }
}

// Moves `fd` to the lowest free number at or above `above` (close on exec). When the open-files
// limit leaves no room there, takes the lowest free number instead: with every inherited fd kept
// open (behind /dev/null), a free number is one no inherited file object uses.
int placeAbove(int fd, int above) {
  if (fd < 0) return -1;
  int placed = ::fcntl(fd, F_DUPFD_CLOEXEC, above);
  if (placed < 0 && (errno == EINVAL || errno == EMFILE)) placed = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (placed < 0) failStartup("cannot duplicate its socket and pipes (fcntl F_DUPFD)", errno,
                              kStartupFailed);
  return placed;
}

// A forked child keeps the parent's Python file objects (a log file, pytest's capture files),
// and code in the child may write through them, close them, or let the garbage collector close
// them. So no number an inherited fd has is left free for our own fds to land on, and nothing
// of the parent's stays open here either (a pipe's write end held here would keep its reader
// from seeing EOF): every inherited fd but stdio gets /dev/null behind it, and ours go above
// them all. Async-signal-safe.
void placeFds(const ChildSetup& setup) {
  const int ours[] = {setup.socketFd, setup.crashFd, setup.stdoutFd, setup.stderrFd,
                      setup.lifelineFd};
  auto isOurs = [&](int fd) {
    for (int mine : ours) {
      if (mine == fd) return true;
    }
    return false;
  };
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) failStartup("cannot open /dev/null", errno, kStartupFailed);
  int highest = null;
  int failedError = 0;
  forEachOpenFd([&](int fd) {
    if (fd > highest) highest = fd;
    if (fd <= 2 || fd == null || isOurs(fd)) return;
    if (::dup3(null, fd, O_CLOEXEC) < 0 && failedError == 0) failedError = errno;
  });
  if (failedError != 0) {
    failStartup("cannot put /dev/null behind the fds it inherited (dup3)", failedError,
                kStartupFailed);
  }
  gSocketFd = placeAbove(setup.socketFd, highest + 1);
  gCrashFd = placeAbove(setup.crashFd, highest + 1);
  setStartupReportFd(gCrashFd);
  gLifelineFd = placeAbove(setup.lifelineFd, highest + 1);
  int stdoutFd = placeAbove(setup.stdoutFd, highest + 1);
  int stderrFd = placeAbove(setup.stderrFd, highest + 1);
  for (int fd : ours) {
    if (fd > 2) ::close(fd);  // a number of ours: no inherited file object uses it
  }
  // Stdio the parent had closed (or that held one of ours) must not be left free: a file the
  // child opens would land there and get what Python writes to stdout.
  for (int fd = 0; fd <= 2; ++fd) {
    if (fd == null) {
      ::fcntl(fd, F_SETFD, 0);  // stays, without close-on-exec, as the child's stdio
    } else if ((isOurs(fd) || ::fcntl(fd, F_GETFD) < 0) && ::dup2(null, fd) < 0) {
      failStartup("cannot put /dev/null behind a closed stdio fd", errno, kStartupFailed);
    }
  }
  if ((stdoutFd >= 0 && ::dup2(stdoutFd, 1) < 0) || (stderrFd >= 0 && ::dup2(stderrFd, 2) < 0)) {
    failStartup("cannot redirect its stdout or stderr (dup2)", errno, kStartupFailed);
  }
  if (stdoutFd >= 0) ::close(stdoutFd);
  if (stderrFd >= 0) ::close(stderrFd);
  if (null > 2) ::close(null);
}

void resetSignals() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // A host's handlers must not run in the child (Python's own table of handlers is reset by
  // resetPythonSignalHandlers). SIGINT keeps the interpreter's handler (KeyboardInterrupt),
  // SIGPIPE stays ignored as Python set it up.
  for (int sig : {SIGCHLD, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM}) {
    ::signal(sig, SIG_DFL);
  }
}

// The host's Python-level handlers must not run in the child: SIGINT gets the interpreter's
// default_int_handler (KeyboardInterrupt; the parent interrupts a call with SIGINT), and SIGTERM,
// SIGHUP, SIGUSR1, SIGALRM and SIGCHLD get SIG_DFL in Python's handler table (resetSignals has
// reset them at the C level already). An entry that already says SIG_DFL is left alone, so in
// the usual child (a host that set none of them) this costs one call instead of six, and a
// handful of page faults instead of some thirty. Needs the GIL; errors are ignored.
void resetPythonSignalHandlers() {
  PyObject* module = PyImport_ImportModule("_signal");
  if (module == nullptr) {
    PyErr_Clear();
    return;
  }
  PyObject* getsignal = PyObject_GetAttrString(module, "getsignal");
  PyObject* setsignal = PyObject_GetAttrString(module, "signal");
  PyObject* interrupt = PyObject_GetAttrString(module, "default_int_handler");
  PyObject* byDefault = PyObject_GetAttrString(module, "SIG_DFL");
  if (getsignal && setsignal && interrupt && byDefault) {
    long defaultValue = PyLong_AsLong(byDefault);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGALRM, SIGCHLD}) {
      PyObject* number = PyLong_FromLong(sig);
      if (number == nullptr) break;
      bool replace = true;
      // SIGINT is set whatever the table says: that also puts back the interpreter's C-level
      // handler, which the host may have replaced behind Python's back.
      if (sig != SIGINT) {
        PyObject* current = PyObject_CallOneArg(getsignal, number);
        replace = current == nullptr || !PyLong_Check(current) ||
                  PyLong_AsLong(current) != defaultValue;
        Py_XDECREF(current);
      }
      if (replace) {
        PyObject* previous = PyObject_CallFunctionObjArgs(
            setsignal, number, sig == SIGINT ? interrupt : byDefault, nullptr);
        Py_XDECREF(previous);
      }
      Py_DECREF(number);
      PyErr_Clear();
    }
  }
  PyErr_Clear();
  Py_XDECREF(byDefault);
  Py_XDECREF(interrupt);
  Py_XDECREF(setsignal);
  Py_XDECREF(getsignal);
  Py_DECREF(module);
}

void enableFaulthandler() {
  PyObject* module = PyImport_ImportModule("faulthandler");
  if (module == nullptr) {
    PyErr_Clear();
    return;
  }
  PyObject* enable = PyObject_GetAttrString(module, "enable");
  PyObject* args = Py_BuildValue("(i)", gCrashFd);
  PyObject* kwargs = Py_BuildValue("{s:O}", "all_threads", Py_True);
  PyObject* result = (enable && args && kwargs) ? PyObject_Call(enable, args, kwargs) : nullptr;
  if (result == nullptr) PyErr_Clear();
  Py_XDECREF(result);
  Py_XDECREF(kwargs);
  Py_XDECREF(args);
  Py_XDECREF(enable);
  // SIGUSR2 dumps every thread's traceback to the crash pipe without stopping the child: the
  // parent sends it before killing a child whose call timed out.
  PyObject* registered = PyObject_CallMethod(module, "register", "iiO", SIGUSR2, gCrashFd,
                                             Py_True);
  if (registered == nullptr) PyErr_Clear();
  Py_XDECREF(registered);
  Py_DECREF(module);
}

// The fatal signals whose native stack the child reports before faulthandler's Python traceback.
constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
struct sigaction gPreviousActions[sizeof(kFatalSignals) / sizeof(kFatalSignals[0])];

void writeAll(const char* text) {
  size_t length = strlen(text);
  while (length > 0) {
    ssize_t n = ::write(gCrashFd, text, length);
    if (n <= 0) return;
    text += n;
    length -= size_t(n);
  }
}

// Runs on the crashing thread (on faulthandler's alternate stack). Writes the C-level stack to the
// crash pipe between markers that termination.cpp looks for, then hands the signal to the handler
// that was there before (faulthandler's), which writes every thread's Python traceback and
// re-raises the signal with the default action. Only async-signal-safe calls, plus backtrace(),
// which was called once at install time so that it does not load libgcc here.
void nativeCrashHandler(int signal, siginfo_t* info, void* context) {
  void* frames[64];
  int count = ::backtrace(frames, 64);
  writeAll("--- native stack ---\n");
  if (count > 1) ::backtrace_symbols_fd(frames + 1, count - 1, gCrashFd);  // skip this frame
  writeAll("--- end native stack ---\n");
  for (size_t i = 0; i < sizeof(kFatalSignals) / sizeof(kFatalSignals[0]); ++i) {
    if (kFatalSignals[i] != signal) continue;
    struct sigaction& previous = gPreviousActions[i];
    ::sigaction(signal, &previous, nullptr);
    if (previous.sa_flags & SA_SIGINFO) {
      if (previous.sa_sigaction != nullptr) previous.sa_sigaction(signal, info, context);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN &&
               previous.sa_handler != nullptr) {
      previous.sa_handler(signal);
    }
    break;
  }
  // Whatever the previous handler did, die of this signal with the default action.
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

// Set once backtrace() has run in this process or in the parent it was forked from: the unwinder
// it loads (libgcc_s) is then mapped and initialised, and a forked copy inherits that state.
bool gUnwinderLoaded = false;

void loadUnwinder() {
  if (gUnwinderLoaded) return;
  void* warmup[4];
  ::backtrace(warmup, 4);  // loads the unwinder now, outside any signal handler
  gUnwinderLoaded = true;
}

void installNativeCrashHandler() {
  loadUnwinder();
  for (size_t i = 0; i < sizeof(kFatalSignals) / sizeof(kFatalSignals[0]); ++i) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = nativeCrashHandler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    ::sigaction(kFatalSignals[i], &action, &gPreviousActions[i]);
  }
}

}  // namespace

void flushPythonStdio() {
  for (const char* name : {"stdout", "stderr"}) {
    PyObject* stream = PySys_GetObject(name);  // borrowed
    if (stream == nullptr || stream == Py_None) continue;
    PyObject* result = PyObject_CallMethod(stream, "flush", nullptr);
    if (result == nullptr) PyErr_Clear();
    Py_XDECREF(result);
  }
}

void armLifeline(int fd) {
  if (::fcntl(fd, F_SETOWN, ::getpid()) != 0 || ::fcntl(fd, F_SETSIG, SIGKILL) != 0 ||
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) != 0) {
    failStartup("cannot arm its lifeline (fcntl F_SETOWN/F_SETSIG/O_ASYNC)", errno,
                kStartupFailed);
  }
  char byte;
  if (::read(fd, &byte, 1) == 0) {
    // Every write end closed already: the parent is gone (nobody is left to read this).
    failStartup("its parent ended before it could start (its lifeline is closed)", 0,
                kStartupParentGone);
  }
}

void prepareToFork() {
  if (Py_IsInitialized()) {
    PyObject* module = PyImport_ImportModule("faulthandler");
    if (module == nullptr) PyErr_Clear();  // the child then tries again, and does without
    Py_XDECREF(module);
  }
  loadUnwinder();
}

void runChild(const ChildSetup& setup, MessageHandler& handler) {
  setStartupReportFd(setup.crashFd);
  if (setup.deathSignal && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    failStartup("cannot set its death signal (prctl PR_SET_PDEATHSIG)", errno, kStartupFailed);
  }
  if (::getppid() != setup.parentPid) {
    // The parent died before prctl took hold (or the pid it was given is not its parent's).
    failStartup("its parent is not the process that started it (it ended, or the pid given is "
                "wrong)", 0, kStartupParentGone);
  }
  placeFds(setup);
  if (gLifelineFd >= 0) armLifeline(gLifelineFd);
  resetSignals();
  bool python = Py_IsInitialized();
  if (python) resetPythonSignalHandlers();
  if (python) enableFaulthandler();
  installNativeCrashHandler();
  int status = 0;
  try {
    status = handler.serve(UniqueFd(gSocketFd));
  } catch (const kj::Exception& e) {
    std::string what = "it could not serve its parent: ";
    reportStartupFailure((what + e.getDescription().cStr()).c_str());
    status = kStartupFailed;
  } catch (const std::bad_alloc&) {
    reportStartupFailure("it ran out of memory", 0, /*outOfMemory=*/true);
    status = kStartupFailed;
  } catch (const std::exception& e) {
    reportStartupFailure((std::string("it could not serve its parent: ") + e.what()).c_str());
    status = kStartupFailed;
  } catch (...) {
    reportStartupFailure("it could not serve its parent: an unknown C++ exception");
    status = kStartupFailed;
  }
  if (python) flushPythonStdio();
  ::_exit(status);
}

}  // namespace pi
