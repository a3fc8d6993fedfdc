// The child right after fork: fd hygiene, death signal, crash pipe, then the serve loop.
#include "runtime/child_main.h"

#include <Python.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace pi {

namespace {

// Async-signal-safe note to stderr for failures before the serve loop exists.
void rawLog(const char* message) {
  ssize_t ignored = ::write(2, message, strlen(message));
  (void)ignored;
}

[[noreturn]] void dieEarly(const char* message, int status) {
  rawLog("process_isolation child: ");
  rawLog(message);
  rawLog("\n");
  ::_exit(status);
}

void closeFrom(int first) {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, unsigned(first), ~0U, 0) == 0) return;
#endif
  long max = ::sysconf(_SC_OPEN_MAX);
  for (int fd = first; fd < max; ++fd) ::close(fd);
}

int duplicateHigh(int fd) {
  if (fd < 0) return -1;
  int high = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (high < 0) dieEarly("cannot duplicate its fds", 70);
  return high;
}

void moveFds(const ChildSetup& setup) {
  // First out of the way of the numbers they are going to, then into place.
  int socketHigh = duplicateHigh(setup.socketFd);
  int crashHigh = duplicateHigh(setup.crashFd);
  int stdoutHigh = duplicateHigh(setup.stdoutFd);
  int stderrHigh = duplicateHigh(setup.stderrFd);
  int lifelineHigh = duplicateHigh(setup.lifelineFd);
  for (int fd : {setup.socketFd, setup.crashFd, setup.stdoutFd, setup.stderrFd,
                 setup.lifelineFd}) {
    if (fd > 2) ::close(fd);
  }
  // Stdio the parent had closed must not be left free: our socket could land there.
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      int null = ::open("/dev/null", O_RDWR);
      if (null >= 0 && null != fd) {
        ::dup2(null, fd);
        ::close(null);
      }
    }
  }
  if ((stdoutHigh >= 0 && ::dup2(stdoutHigh, 1) < 0) ||
      (stderrHigh >= 0 && ::dup2(stderrHigh, 2) < 0) ||
      ::dup2(socketHigh, kChildSocketFd) < 0 || ::dup2(crashHigh, kChildCrashFd) < 0 ||
      (lifelineHigh >= 0 && ::dup2(lifelineHigh, kChildLifelineFd) < 0)) {
    dieEarly("cannot place its fds", 70);
  }
  closeFrom(lifelineHigh >= 0 ? kChildLifelineFd + 1 : kChildCrashFd + 1);
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
  PyObject* args = Py_BuildValue("(i)", kChildCrashFd);
  PyObject* kwargs = Py_BuildValue("{s:O}", "all_threads", Py_True);
  PyObject* result = (enable && args && kwargs) ? PyObject_Call(enable, args, kwargs) : nullptr;
  if (result == nullptr) PyErr_Clear();
  Py_XDECREF(result);
  Py_XDECREF(kwargs);
  Py_XDECREF(args);
  Py_XDECREF(enable);
  // SIGUSR2 dumps every thread's traceback to the crash pipe without stopping the child: the
  // parent sends it before killing a child whose call timed out.
  PyObject* registered = PyObject_CallMethod(module, "register", "iiO", SIGUSR2, kChildCrashFd,
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
    ssize_t n = ::write(kChildCrashFd, text, length);
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
  if (count > 1) ::backtrace_symbols_fd(frames + 1, count - 1, kChildCrashFd);  // skip this frame
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
    dieEarly("cannot arm its lifeline", 70);
  }
  char byte;
  if (::read(fd, &byte, 1) == 0) ::_exit(71);  // every write end closed already: parent gone
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
  if (setup.deathSignal && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    dieEarly("cannot set its death signal", 70);
  }
  if (::getppid() != setup.parentPid) ::_exit(71);  // the parent died before prctl took hold
  moveFds(setup);
  if (setup.lifelineFd >= 0) armLifeline(kChildLifelineFd);
  resetSignals();
  bool python = Py_IsInitialized();
  if (python) resetPythonSignalHandlers();
  if (python) enableFaulthandler();
  installNativeCrashHandler();
  int status = 0;
  try {
    status = handler.serve(UniqueFd(kChildSocketFd));
  } catch (...) {
    status = 70;
  }
  if (python) flushPythonStdio();
  ::_exit(status);
}

}  // namespace pi
