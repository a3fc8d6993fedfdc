"""Process hygiene: no zombies and no descriptor leaks over many crash cycles; no child outlives
its parent, but a child does outlive the thread that started it; the child keeps none of the
parent's descriptors; the parent's atexit handlers never run in the child; and a SIGCHLD handler
the host installed is left installed and keeps working."""

import atexit
import fcntl
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from process_isolation import CallTimeoutError, ProcessTerminationError, timeout

from conftest import FIXTURES, child_pids, new_fds, open_fds
from supervision_helpers import DEADLINE, forbid_core_dumps, wait_until_exited
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)

pytestmark = pytest.mark.usefixtures('no_core_files')

CYCLES = 50


def end_badly(context, cycle):
    """Makes context's child end in one of several ways, by the cycle number; returns the
    error."""
    kind = cycle % 5
    if kind == 0:
        with pytest.raises(ProcessTerminationError) as caught:
            context.load_module('isofix_segfault').crash()
    elif kind == 1:
        with pytest.raises(ProcessTerminationError) as caught:
            context.load_module('isofix_abort').abort()
    elif kind == 2:
        with pytest.raises(ProcessTerminationError) as caught:
            context.load_module('isofix_sigkill').crash()
    elif kind == 3:
        with pytest.raises(ProcessTerminationError) as caught:
            context.load_module('isofix_exit').exit_now(9)
    else:
        with pytest.raises(CallTimeoutError) as caught:
            with timeout(0.05):
                context.load_module('isofix_stuck').spin_in_python()
    return caught.value


def test_fifty_crash_and_restart_cycles_leave_no_zombie_or_descriptor(new_context):
    children = child_pids()
    fds = open_fds()
    context = new_context()
    held_by_a_live_child = set()
    for cycle in range(CYCLES):
        context.restart() if cycle else context.start()
        held_by_a_live_child.add(len(new_fds(fds)))
        forbid_core_dumps(context)
        error = end_badly(context, cycle)
        # Reaped at once; once the context has noticed, nothing of the child is left open,
        # while its proxies (in `error`'s traceback) may still exist.
        assert child_pids() == children, f'cycle {cycle}: {error.call}'
        assert not context.alive
        assert new_fds(fds) == {}, f'cycle {cycle}: {error.call}'
    assert len(held_by_a_live_child) == 1  # every child cost the same descriptors
    context.terminate()
    assert child_pids() == children
    assert new_fds(fds) == {}


def test_fifty_contexts_whose_children_crashed_leave_no_zombie_or_descriptor(new_context):
    children = child_pids()
    fds = open_fds()
    for cycle in range(CYCLES):
        with new_context() as context:
            context.start()
            forbid_core_dumps(context)
            pid = context.pid
            end_badly(context, cycle)
            assert pid not in child_pids()
    assert child_pids() == children
    assert new_fds(fds) == {}


PARENT = textwrap.dedent('''
    import sys
    from process_isolation import IsolationContext
    fixtures, mode, fifo = sys.argv[1:]
    context = IsolationContext(paths=[fixtures])
    waiter = context.load_module('isofix_interruptible')
    print(context.pid, flush=True)
    if mode == 'busy':
        waiter.wait_announced(fifo)  # the child is in a call that never ends
    else:
        sys.stdin.read()  # the child idles, waiting for a request
''')


def read_line(stream, seconds=DEADLINE):
    readable, _, _ = select.select([stream], [], [], seconds)
    assert readable, 'the parent process did not say its child pid in time'
    return stream.readline()


@pytest.mark.parametrize('mode', ['idle', 'busy'])
def test_the_child_dies_when_its_parent_is_killed(tmp_path, mode):
    fifo = tmp_path / 'announce'
    os.mkfifo(fifo)
    announcements = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    child = None
    try:
        with subprocess.Popen([sys.executable, '-c', PARENT, str(FIXTURES), mode, str(fifo)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE) as parent:
            try:
                child = int(read_line(parent.stdout))
                if mode == 'busy':
                    poller = select.poll()
                    poller.register(announcements, select.POLLIN)
                    assert poller.poll(DEADLINE * 1000), 'the child did not enter the call'
                assert not wait_until_exited(child, 0)
                parent.kill()
            finally:
                parent.kill()
                parent.wait(DEADLINE)
        assert parent.returncode == -signal.SIGKILL
        assert wait_until_exited(child), f'the child {child} outlived its parent'
    finally:
        os.close(announcements)
        if child is not None and not wait_until_exited(child, 0):
            os.kill(child, signal.SIGKILL)  # not ours to reap: its new parent does


def wait_for(condition, seconds=DEADLINE):
    """Polls condition() until it is true or the deadline passes; returns its last value."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        select.select([], [], [], 0.001)
    return True


def test_the_child_outlives_the_thread_that_started_it(ctx):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # forking with two threads warns
        starter = threading.Thread(target=ctx.start)
        starter.start()
        starter.join(DEADLINE)
    # Wait until the starter is gone from the kernel too, not only from Python.
    assert wait_for(lambda: not os.path.exists(f'/proc/self/task/{starter.native_id}'))
    pid = ctx.pid
    assert ctx.call(os.getpid) == pid
    assert ctx.alive
    assert ctx.load_module('isofix_basic').add(1, 2) == 3


def test_the_child_keeps_none_of_the_parents_descriptors(new_context, tmp_path):
    before = open_fds()
    other = new_context()
    other.start()
    # The other context's socket and pipes, which only its own child may hold.
    others = {target for target in new_fds(before).values()
              if target.startswith(('socket:', 'pipe:'))}
    assert others
    path = tmp_path / 'parent-only.txt'
    low = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    inheritable = fcntl.fcntl(low, fcntl.F_DUPFD, 60)  # no close-on-exec: a fork keeps it
    os.close(low)
    try:
        context = new_context()
        fds = context.load_module('isofix_introspect').open_fds()
    finally:
        os.close(inheritable)
    assert str(path) not in fds.values()
    assert not others & set(fds.values())
    # Its own three, above every number it inherited: the socket, the crash pipe and the
    # lifeline (its parent's end closes when the parent ends).
    ours = sorted(fd for fd, target in fds.items() if target.startswith(('socket:', 'pipe:')))
    assert [fds[fd].split(':')[0] for fd in ours] == ['socket', 'pipe', 'pipe'], fds
    assert ours[0] > 60
    # Every other fd is stdio, /dev/null in place of one the parent had, or one it made itself.
    assert all(fd <= 2 or fd in ours or target == '/dev/null' or target.startswith('anon_inode:')
               for fd, target in fds.items()), fds
    assert fds[60] == '/dev/null'


def test_the_parents_atexit_handlers_never_run_in_the_child(new_context, tmp_path):
    record = tmp_path / 'atexit-ran-in.txt'

    def parent_only():
        with open(record, 'a') as file:
            file.write(f'{os.getpid()}\n')

    atexit.register(parent_only)
    try:
        orderly = new_context()  # ends when told to
        orderly.load_module('isofix_basic').add(1, 2)
        orderly.restart()
        orderly.terminate()
        crashed = new_context()  # ends by a crash
        with pytest.raises(ProcessTerminationError):
            crashed.load_module('isofix_segfault').crash()
        exited = new_context()  # ends by sys.exit in a call
        with pytest.raises(ProcessTerminationError) as caught:
            exited.load_module('isofix_sys_exit').exit_with(0)
        assert caught.value.exit_code == 0
        failed = new_context(cwd=tmp_path / 'missing')  # ends before it serves
        with pytest.raises(ProcessTerminationError):
            failed.start()
    finally:
        atexit.unregister(parent_only)
    assert not record.exists(), f'atexit ran in {record.read_text().split()}'


def test_a_host_sigchld_handler_stays_installed_and_keeps_working(new_context):
    fired = []

    def host_handler(signum, frame):
        fired.append(signum)

    previous = signal.signal(signal.SIGCHLD, host_handler)
    try:
        context = new_context()
        basic = context.load_module('isofix_basic')
        assert basic.add(1, 2) == 3
        with pytest.raises(ProcessTerminationError) as caught:
            context.load_module('isofix_segfault').crash()
        assert caught.value.signal_name == 'SIGSEGV'  # the handler did not hide the status
        context.restart()
        with pytest.raises(CallTimeoutError):
            with timeout(0.1):
                context.load_module('isofix_stuck').spin_in_python()
        context.restart()
        introspect = context.load_module('isofix_introspect')
        # The host's handler is not the child's business.
        assert introspect.disposition('SIGCHLD') == 'SIG_DFL'
        context.terminate()
        assert signal.getsignal(signal.SIGCHLD) is host_handler
        # And it still fires for a child of the host's own.
        fired.clear()
        subprocess.run(['true'], check=True, timeout=DEADLINE)
        assert wait_for(lambda: fired, seconds=5)
        assert set(fired) == {signal.SIGCHLD}
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_the_child_runs_none_of_the_hosts_signal_handlers(new_context):
    def host_handler(signum, frame):
        pass

    saved = {name: signal.signal(getattr(signal, name), host_handler)
             for name in ('SIGTERM', 'SIGUSR1', 'SIGHUP', 'SIGINT', 'SIGALRM', 'SIGCHLD')}
    try:
        context = new_context()
        context.start()
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)
    introspect = context.load_module('isofix_introspect')
    assert introspect.disposition('SIGTERM') == 'SIG_DFL'
    assert introspect.disposition('SIGUSR1') == 'SIG_DFL'
    assert introspect.disposition('SIGHUP') == 'SIG_DFL'
    assert introspect.disposition('SIGINT') == 'default_int_handler'
    assert introspect.disposition('SIGALRM') == 'SIG_DFL'
    assert introspect.disposition('SIGCHLD') == 'SIG_DFL'


def test_a_child_of_a_host_without_signal_handlers_has_the_default_ones(new_context):
    introspect = new_context().load_module('isofix_introspect')
    for name in ('SIGTERM', 'SIGUSR1', 'SIGHUP', 'SIGALRM', 'SIGCHLD'):
        assert introspect.disposition(name) == 'SIG_DFL', name
    assert introspect.disposition('SIGINT') == 'default_int_handler'
