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
        memory: bytes of address space (RLIMIT_AS). Allocations beyond it fail: Python raises
            MemoryError in the child, which the parent re-raises; C code may crash instead,
            which is reported as a ProcessTerminationError.
        cpu_seconds: CPU seconds (RLIMIT_CPU). The kernel sends SIGXCPU when they are used up,
            reported as a ProcessTerminationError with ``signal_name == 'SIGXCPU'``.
        open_files: open file descriptors (RLIMIT_NOFILE). The child needs a few of its own.
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
        """Applies the limits to the calling process (the child). Never raises a limit above
        the current hard limit: an unprivileged process could not."""
        import signal

        pairs = [
            (resource.RLIMIT_AS, self.memory),
            (resource.RLIMIT_NOFILE, self.open_files),
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


def _set(which, soft, hard):
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft = min(soft, current_hard)
        hard = min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))
