"""The interface every implementation under test follows, and helpers shared by them.

An implementation starts one child that serves `benchmod`, hands out zero-argument callables
that do one operation of a case (`op_<case>`), and stops its child again. Each class shows how
its library would idiomatically be used for the case, so a reader can check the comparison is
fair. Where a library cannot do a case, its `op_` raises NotApplicable with the reason.
The classes are in ours.py (this project) and peers.py (RPyC, Pyro5, ...).

numpy is imported only inside the array operations, so that a multiprocessing 'spawn' or
'forkserver' child, which re-imports the parent's main module, does not pay for it.

Ownership: an implementation owns its child process from `start()` to `close()`. `close()` is
idempotent, never raises, and leaves no process behind: every wait has a timeout, after which
the child is killed and reaped.
"""

import os
import subprocess

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 5
MAX_CALLBACKS_PER_CALL = 100
CALLBACK_ARG = 7


class NotApplicable(Exception):
    """The implementation has no way to do this case; the message says why."""


class RemoteFailure(Exception):
    """A message-passing child reported an exception."""


def parent_fn(x):
    """The parent function the child calls in the callback case."""
    return x + 1


def stop_popen(proc):
    """End a subprocess.Popen child: wait briefly for it to exit by itself, then kill and reap."""
    if proc is None:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def stop_mp_process(proc):
    """End a multiprocessing.Process child the same way."""
    if proc is None:
        return
    proc.join(STOP_TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(STOP_TIMEOUT_S)


class Implementation:
    """Base: the interface run.py drives. Subclasses fill in start/close and the op_ methods.

    `start_methods` lists the ways the child can be started for the start-up case; the first is
    used for every other case. `notes` maps a case key to a remark shown in that case's row.
    """

    name = '?'
    role = 'peer'
    start_methods = ('subprocess',)
    notes = {}
    # Case keys this implementation is measured on (None: every case, the memory run, the crash
    # cycle and start-up); it has no rows elsewhere.
    only_cases = None

    def unavailable_reason(self):
        """None when the library can be used here, else why not (shown in every row)."""
        return None

    def start(self, method):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    def child_pid(self):
        raise NotImplementedError

    def crash(self):
        """Make the child die inside a call (benchmod.crash) and return once the parent has
        seen the failure. Raises RuntimeError if the call returned normally."""
        try:
            self.call_crash()
        except Exception:
            return
        raise RuntimeError('the child survived benchmod.crash()')

    def call_crash(self):
        raise NotImplementedError

    def restart(self, method):
        """After a crash: a new child, ready for calls. Peers have no restart of their own."""
        self.close()
        self.start(method)

    def op_callback(self):
        raise NotApplicable('no callbacks into the parent')
