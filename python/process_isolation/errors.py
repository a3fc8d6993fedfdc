"""The exceptions process_isolation raises.

Every failure that comes from the isolated child, rather than from the code running in it, is one
of these. Exceptions raised *by* code in the child are re-raised in the parent as themselves (the
same builtin class, or a local mirror of the child's class) with a :class:`RemoteTraceback` as
their ``__cause__``.
"""

from __future__ import annotations

import re

__all__ = [
    "CallTimeoutError",
    "ClientStateError",
    "ProcessTerminationError",
    "ProtocolError",
    "RemoteTraceback",
]


# The frame in which the parent forked the child. Frames from it down are the parent's stack at
# fork time, which the child inherited; they say nothing about the child's own work.
_FORK_FRAME = re.compile(
    r'process_isolation[/\\](context\.py", line \d+ in _start|_spawn\.py", line \d+ in main)$')


def _trim_fork_frames(traceback):
    """Drops the inherited parent frames from each thread's stack in a faulthandler dump."""
    if not traceback:
        return traceback
    out = []
    skipping = False
    for line in traceback.splitlines():
        if _FORK_FRAME.search(line):
            skipping = True
            out.append("  (process_isolation's start-up frames omitted)")
            continue
        if skipping and line.startswith("  File "):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out)


def _rebuild(cls, state):
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._message())
    return error


def _remote_exception_getattr(self, name):
    """__getattr__ of local classes mirroring a child's exception classes: attributes the
    local exception lacks are read from the child's exception object."""
    remote = self.__dict__.get("_pi_remote")
    if remote is None or name.startswith("__"):
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    return getattr(remote, name)


def _remote_exception_str(self):
    """__str__ of local classes mirroring another process's exception classes: the str() the
    exception had where it was raised (its class may define __str__ of its own)."""
    message = self.__dict__.get("_pi_message")
    return message if message is not None else BaseException.__str__(self)


class ProcessTerminationError(Exception):
    """The isolated child ended while a call was in flight (or before it could start).

    Attributes:
        pid: the child's process id.
        exit_code: its exit status, or None when a signal killed it.
        signal: the number of the signal that killed it, or None.
        signal_name: that signal's name, e.g. ``'SIGSEGV'``, or None.
        core_dumped: True when the kernel wrote a core dump.
        call: what was in flight, e.g. ``"buggy.dragons_here(3)"``, or None.
        child_traceback: the Python traceback(s) the child's faulthandler wrote as it died
            (every thread), or None.
        native_traceback: the C-level stack of the crashing thread, or None.
        reason: why the parent ended the child, when it did (a timeout, a protocol violation),
            or None.
        stdout_tail, stderr_tail: the last lines the child wrote to a captured stdout or
            stderr (``IsolationContext(stderr='capture')``), or None.
    """

    def __init__(self, pid=None, exit_code=None, signal=None, signal_name=None, core_dumped=False,
                 call=None, child_traceback=None, native_traceback=None, reason=None,
                 ending=None, detail=None, stdout_tail=None, stderr_tail=None):
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.signal_name = signal_name
        self.core_dumped = core_dumped
        self.call = call
        self.child_traceback = _trim_fork_frames(child_traceback)
        self.native_traceback = native_traceback
        self.reason = reason
        self.ending = ending
        self.detail = detail
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail
        super().__init__(self._message())

    def _message(self):
        who = f"The isolated child (pid {self.pid})" if self.pid else "The isolated child"
        if self.ending:
            how = self.ending
        elif self.signal_name:
            how = f"killed by {self.signal_name}"
        elif self.exit_code is not None:
            how = f"exited with code {self.exit_code}"
        else:
            how = "ended"
        text = f"{who} was {how}" if how.startswith("killed") else f"{who} {how}"
        text += f" during {self.call}." if self.call else "."
        if self.reason:
            text += f" {self.reason[0].upper()}{self.reason[1:]}."
        if self.signal is not None:
            text += " The parent is unaffected and carries on."
        if self.child_traceback:
            text += "\n\nThe child's Python traceback at the end:\n" + self.child_traceback
        if self.native_traceback:
            text += "\n\nThe native stack of the crashing thread:\n" + self.native_traceback
        if self.stderr_tail:
            text += "\n\nThe last lines the child wrote to stderr:\n" + self.stderr_tail
        return text

    def __reduce__(self):
        return _rebuild, (type(self), dict(self.__dict__))


class ProtocolError(ProcessTerminationError):
    """The child sent something that breaks the protocol; the parent killed it."""


class CallTimeoutError(ProcessTerminationError, TimeoutError):
    """A call did not finish within its timeout; the parent took the child's traceback and
    killed it. ``child_traceback`` shows where it was stuck."""

    def __init__(self, *args, **kwargs):
        ProcessTerminationError.__init__(self, *args, **kwargs)


class ClientStateError(RuntimeError):
    """A proxy or a context was used after its child ended or was restarted."""


class RemoteTraceback(Exception):
    """The traceback of an exception in the other process, attached as ``__cause__``."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return "\n\n" + self.text.rstrip("\n")
