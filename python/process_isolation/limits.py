"""Resource limits applied to an isolated child before it imports anything."""

from __future__ import annotations

import resource

__all__ = ["Limits"]


def _positive(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"Limits({name}=...) must be a positive number or None, not {value!r}")
    return int(value)


class Limits:
    """Resource limits for an isolated child (``IsolationContext(limits=Limits(...))``).

    Each is applied with ``setrlimit`` in the child before the first module is imported, so
    the module's code runs under them from its first line. None leaves a limit as inherited.

    Args:
        memory: bytes of address space the child may add to what it maps when it starts (the
            limit is RLIMIT_AS, set to that size plus this), so a limit works the same in a
            parent that already maps a lot (threads' arenas, big libraries) as in a small one.
            Allocations beyond it fail: Python raises MemoryError in the child, which the
            parent re-raises; C code may crash instead, which is reported as a
            ProcessTerminationError. A limit too small for the child to start is a
            ProcessTerminationError during its start-up that names the limit.
        cpu_seconds: CPU seconds (RLIMIT_CPU). The kernel sends SIGXCPU when they are used up,
            reported as a ProcessTerminationError with ``signal_name == 'SIGXCPU'``.
        open_files: file descriptors the child may open besides those it holds when it starts
            (RLIMIT_NOFILE, set so that this many numbers below it are free: a forked child
            holds a /dev/null in place of each fd of the parent, and the library's own fds).
        file_size: bytes of the largest file the child may write (RLIMIT_FSIZE); writing past
            it fails with ``OSError(EFBIG)`` (SIGXFSZ is ignored in the child).
        processes: processes of the child's user (RLIMIT_NPROC). Does not bind root.

    Raises:
        ValueError: a limit that is not a positive number.
    """

    def __init__(self, memory=None, cpu_seconds=None, open_files=None, file_size=None,
                 processes=None):
        self.memory = _positive("memory", memory)
        self.cpu_seconds = _positive("cpu_seconds", cpu_seconds)
        self.open_files = _positive("open_files", open_files)
        self.file_size = _positive("file_size", file_size)
        self.processes = _positive("processes", processes)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v is not None)
        return f"Limits({fields})"

    def apply(self):
        """Applies the limits to the calling process (the child), counting memory and open
        files from what it holds now. Never raises a limit above the current hard limit: an
        unprivileged process could not."""
        import signal

        if self.memory is not None:
            from . import _core

            _core.apply_memory_limit(self.memory)
        pairs = [
            (resource.RLIMIT_NOFILE,
             None if self.open_files is None else _files_limit(self.open_files)),
            (resource.RLIMIT_FSIZE, self.file_size),
            (resource.RLIMIT_NPROC, self.processes),
        ]
        for which, value in pairs:
            if value is not None:
                _set(which, value, value)
        if self.cpu_seconds is not None:
            # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
            _set(resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 1)
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
        if self.file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _open_fds():
    """The fds this process has open."""
    import os

    try:
        listed = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: ask about every number below the limit (at most 65536)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        listed = range(65536 if limit == resource.RLIM_INFINITY else min(limit, 65536))
    fds = set()
    for fd in listed:  # the one listdir read through is closed by now: fstat leaves it out
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.add(fd)
    return fds


def _files_limit(more):
    """The RLIMIT_NOFILE under which this process can open `more` fds besides those it holds:
    fds below the limit count against it, and open ones above it stay usable."""
    held = _open_fds()
    limit = free = 0
    while free < more:
        if limit not in held:
            free += 1
        limit += 1
    return limit


def _set(which, soft, hard):
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft = min(soft, current_hard)
        hard = min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))
