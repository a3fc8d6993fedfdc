// floor_pingpong.c: the physical floor the Python benchmarks are compared against.
//
// Built and run by bench/run.py (cc -O2, into a temporary directory). Three modes, each printing
// REPS lines, one number per line: nanoseconds per operation, averaged over that rep.
//
//   floor_pingpong rtt ITERS REPS     a 64-byte message to a forked child over an AF_UNIX
//                                     socketpair and 64 bytes back; ITERS round trips per rep
//   floor_pingpong memcpy BYTES REPS  one memcpy of BYTES between two buffers already faulted in
//   floor_pingpong stream BYTES REPS  BYTES sent one way from a forked child over the socketpair,
//                                     after a 1-byte "go" from the parent
//   floor_pingpong shm ITERS REPS     a 64-byte message to a forked child through shared memory
//                                     and 64 bytes back, both sides spinning (never sleeping):
//                                     the hardware floor of a hand-over between two processes
//
// Two more arguments, PARENT_CPU CHILD_CPU, pin the parent and the child to those CPUs
// (sched_setaffinity), e.g. `rtt 20000 21 0 1` for a round trip that always crosses CPUs.
//
// One rep is run first as a warm-up and not printed. The child ends when the parent closes its
// end of the socket; the parent reaps it before exiting. Exit status 0 on success, 1 on error.

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kMessageBytes = 64, kChunkBytes = 1 << 20 };

// CPU the forked child pins itself to, or -1 to leave it where the parent's affinity allows.
static int childCpu = -1;

static int64_t nowNs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char* what) {
  perror(what);
  exit(1);
}

// Pin the calling process to one CPU. Returns 0, or -1 with errno set.
static int pinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set);
}

// Write all of buf, retrying short writes and EINTR. Returns 0, or -1 on error.
static int writeAll(int fd, const char* buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

// Read exactly len bytes. Returns 0, 1 on end of file before any byte, or -1 on error.
static int readAll(int fd, char* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && got == 0) return 1;
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

// Child of rtt mode: echo every 64-byte message until the parent closes the socket.
static void echoChild(int fd) {
  char msg[kMessageBytes];
  for (;;) {
    int rc = readAll(fd, msg, sizeof msg);
    if (rc != 0) _exit(rc == 1 ? 0 : 1);
    if (writeAll(fd, msg, sizeof msg) != 0) _exit(1);
  }
}

// Child of stream mode: on each 1-byte "go", send `bytes` bytes; stop at end of file.
static void streamChild(int fd, size_t bytes) {
  char* chunk = malloc(kChunkBytes);
  if (chunk == NULL) _exit(1);
  memset(chunk, 'x', kChunkBytes);
  char go;
  for (;;) {
    int rc = readAll(fd, &go, 1);
    if (rc != 0) _exit(rc == 1 ? 0 : 1);
    for (size_t left = bytes; left > 0;) {
      size_t n = left < kChunkBytes ? left : kChunkBytes;
      if (writeAll(fd, chunk, n) != 0) _exit(1);
      left -= n;
    }
  }
}

// Fork a child that runs `body` on its end of a new socketpair. Returns the parent's end.
static int startChild(pid_t* pid, void (*body)(int, size_t), size_t arg) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) die("socketpair");
  *pid = fork();
  if (*pid < 0) die("fork");
  if (*pid == 0) {
    close(fds[0]);
    if (childCpu >= 0 && pinTo(childCpu) != 0) _exit(1);
    body(fds[1], arg);
    _exit(0);
  }
  close(fds[1]);
  return fds[0];
}

static void stopChild(int fd, pid_t pid) {
  close(fd);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

static void echoBody(int fd, size_t unused) {
  (void)unused;
  echoChild(fd);
}

static void streamBody(int fd, size_t bytes) { streamChild(fd, bytes); }

static int runRtt(long iters, long reps) {
  pid_t pid;
  int fd = startChild(&pid, echoBody, 0);
  char msg[kMessageBytes];
  memset(msg, 'p', sizeof msg);
  for (long rep = -1; rep < reps; ++rep) {
    int64_t start = nowNs();
    for (long i = 0; i < iters; ++i) {
      if (writeAll(fd, msg, sizeof msg) != 0 || readAll(fd, msg, sizeof msg) != 0) die("rtt");
    }
    int64_t elapsed = nowNs() - start;
    if (rep >= 0) printf("%.1f\n", (double)elapsed / (double)iters);
  }
  stopChild(fd, pid);
  return 0;
}

static int runMemcpy(size_t bytes, long reps) {
  char* src = malloc(bytes);
  char* dst = malloc(bytes);
  if (src == NULL || dst == NULL) die("malloc");
  memset(src, 'x', bytes);
  memset(dst, 'y', bytes);
  volatile char sink = 0;
  for (long rep = -1; rep < reps; ++rep) {
    int64_t start = nowNs();
    memcpy(dst, src, bytes);
    int64_t elapsed = nowNs() - start;
    sink ^= dst[bytes / 2];
    if (rep >= 0) printf("%lld\n", (long long)elapsed);
  }
  (void)sink;
  free(src);
  free(dst);
  return 0;
}

static int runStream(size_t bytes, long reps) {
  pid_t pid;
  int fd = startChild(&pid, streamBody, bytes);
  char* buf = malloc(kChunkBytes);
  if (buf == NULL) die("malloc");
  memset(buf, 'y', kChunkBytes);
  for (long rep = -1; rep < reps; ++rep) {
    int64_t start = nowNs();
    if (writeAll(fd, "g", 1) != 0) die("go");
    for (size_t left = bytes; left > 0;) {
      ssize_t n = read(fd, buf, left < kChunkBytes ? left : kChunkBytes);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("stream read");
      left -= (size_t)n;
    }
    int64_t elapsed = nowNs() - start;
    if (rep >= 0) printf("%lld\n", (long long)elapsed);
  }
  free(buf);
  stopChild(fd, pid);
  return 0;
}

// The shared page of shm mode: a sequence number each way, each on its own cache line, and the
// two 64-byte messages.
struct ShmPage {
  _Alignas(64) _Atomic uint64_t ping;
  _Alignas(64) _Atomic uint64_t pong;
  _Alignas(64) char down[kMessageBytes];
  _Alignas(64) char up[kMessageBytes];
};

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield" ::: "memory");
#endif
}

static int runShm(long iters, long reps) {
  struct ShmPage* page = mmap(NULL, sizeof(struct ShmPage), PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) die("mmap");
  memset(page, 0, sizeof *page);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (childCpu >= 0 && pinTo(childCpu) != 0) _exit(1);
    for (uint64_t expected = 1;; ++expected) {
      uint64_t seen;
      while ((seen = atomic_load_explicit(&page->ping, memory_order_acquire)) < expected) relax();
      if (seen == UINT64_MAX) _exit(0);
      memcpy(page->up, page->down, kMessageBytes);
      atomic_store_explicit(&page->pong, expected, memory_order_release);
    }
  }
  char msg[kMessageBytes];
  memset(msg, 'p', sizeof msg);
  uint64_t sequence = 0;
  for (long rep = -1; rep < reps; ++rep) {
    int64_t start = nowNs();
    for (long i = 0; i < iters; ++i) {
      memcpy(page->down, msg, kMessageBytes);
      atomic_store_explicit(&page->ping, ++sequence, memory_order_release);
      while (atomic_load_explicit(&page->pong, memory_order_acquire) < sequence) relax();
      memcpy(msg, page->up, kMessageBytes);
    }
    int64_t elapsed = nowNs() - start;
    if (rep >= 0) printf("%.1f\n", (double)elapsed / (double)iters);
  }
  atomic_store_explicit(&page->ping, UINT64_MAX, memory_order_release);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  munmap(page, sizeof *page);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4 && argc != 6) {
    fprintf(stderr,
            "usage: %s rtt ITERS REPS | memcpy BYTES REPS | stream BYTES REPS | shm ITERS REPS"
            " [PARENT_CPU CHILD_CPU]\n",
            argv[0]);
    return 1;
  }
  if (argc == 6) {
    childCpu = atoi(argv[5]);
    if (pinTo(atoi(argv[4])) != 0) die("sched_setaffinity");
  }
  long long amount = atoll(argv[2]);
  long reps = atol(argv[3]);
  if (amount <= 0 || reps <= 0) {
    fprintf(stderr, "ITERS/BYTES and REPS must be positive\n");
    return 1;
  }
  int rc;
  if (strcmp(argv[1], "rtt") == 0) {
    rc = runRtt((long)amount, reps);
  } else if (strcmp(argv[1], "memcpy") == 0) {
    rc = runMemcpy((size_t)amount, reps);
  } else if (strcmp(argv[1], "stream") == 0) {
    rc = runStream((size_t)amount, reps);
  } else if (strcmp(argv[1], "shm") == 0) {
    rc = runShm((long)amount, reps);
  } else {
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 1;
  }
  fflush(stdout);
  return rc;
}
