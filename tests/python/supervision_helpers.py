"""Helpers shared by the tests of the child's supervision (crashes, timeouts, Ctrl-C, restart,
limits, output, hygiene): waiting for a process to end, delivering Ctrl-C while the main thread
waits in a call, and reading this process's memory use. Every wait here has a deadline."""

import os
import resource
import select
import signal
import threading
import time

import pytest

# Seconds any wait for another process may take before the test fails instead of hanging.
DEADLINE = 20.0


def wait_until_exited(pid, seconds=DEADLINE):
    """Waits until process `pid` (not necessarily our child) has exited, without reaping it.
    Returns True when it has (or no longer exists), False if it still runs at the deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(pidfd)


@pytest.fixture
def no_core_files():
    """Children forked during the test write no core file when they crash (with the default
    core_pattern one would land in their working directory): the soft RLIMIT_CORE they inherit
    is 1 byte (see forbid_core_dumps). A child may still raise it up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != 0:
        resource.setrlimit(resource.RLIMIT_CORE, (1, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def forbid_core_dumps(context):
    """Makes core_dumped deterministic for context's running child: no core is ever written.
    RLIMIT_CORE is set to 1 byte rather than 0: a core_pattern that pipes to a helper ignores a
    limit of 0 but honours 1, and a file core needs at least a page."""
    context.call(resource.setrlimit, resource.RLIMIT_CORE, (1, 1))


def memory_of_this_process(field):
    """A field of /proc/self/status in bytes, e.g. 'VmSize' or 'VmRSS'."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class CtrlCWhenAnnounced:
    """Presses Ctrl-C (SIGINT to this process, which Python turns into KeyboardInterrupt in the
    main thread) as soon as the child says, through a FIFO, that it is inside the call; so the
    interrupt lands while the main thread waits for the child, never before.

        with CtrlCWhenAnnounced(tmp_path) as ctrl_c:
            module.wait_announced(ctrl_c.fifo)   # raises KeyboardInterrupt
        ctrl_c.pressed_at                        # time.monotonic() of the SIGINT
    """

    def __init__(self, directory, name='announce'):
        self.fifo = str(directory / name)
        self.pressed_at = None
        self._thread = None

    def __enter__(self):
        if not os.path.exists(self.fifo):
            os.mkfifo(self.fifo)
        # Opened here, non-blocking, so the child's open for writing never blocks.
        self._fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._press_when_announced, daemon=True)
        self._thread.start()
        return self

    def _press_when_announced(self):
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if poller.poll(DEADLINE * 1000):
            os.read(self._fd, 4096)
            self.pressed_at = time.monotonic()
            os.kill(os.getpid(), signal.SIGINT)

    def __exit__(self, *exc):
        self._thread.join(DEADLINE + 5)
        os.close(self._fd)
        assert not self._thread.is_alive(), 'the Ctrl-C thread did not finish'
        return False
