"""A child or a fork server that cannot start says why in words, never a bare exit code; and
Limits(memory=...) counts the memory the child adds, so a limit works the same in a parent that
already maps a lot, and one too small to start the child is an error naming it."""

import os
import signal
import subprocess
import sys
import tempfile

import pytest

from process_isolation import IsolationContext, Limits, ProcessTerminationError
from process_isolation import _core, _spawn


from conftest import FIXTURES

MiB = 1 << 20
METHODS = ['fork', 'forkserver', 'spawn']


# The fork server is process-wide: started before this module's fd accounting, stopped after it.
pytestmark = pytest.mark.usefixtures('fork_server_for_the_module')

# A parent that maps 400 MiB (an untouched mapping: it costs address space, not memory), then
# starts a child limited to 256 MiB and uses it.
BIG_PARENT = r'''
import mmap, sys
big = mmap.mmap(-1, 400 << 20)
from process_isolation import IsolationContext, Limits
ctx = IsolationContext(start_method=sys.argv[1], paths=[sys.argv[2]], timeout=60,
                       limits=Limits(memory=256 << 20))
hog = ctx.load_module('isofix_hog')
print('allocated', hog.allocate(64 << 20) >> 20, 'MiB')
try:
    hog.allocate(512 << 20)
except MemoryError:
    print('512 MiB: MemoryError')
print('allocated', hog.allocate(64 << 20) >> 20, 'MiB')
ctx.terminate()
'''


# The case of issue 11: threads' malloc arenas (64 MiB of address space each) map more than the
# limit before a forked child starts. The threads have ended by then; their arenas stay.
ARENAS_PARENT = r'''
import ctypes, os, sys, threading
def mapped():
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[0]) * os.sysconf('SC_PAGESIZE')
before = mapped()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
together = threading.Barrier(8)
def allocate():
    together.wait(timeout=60)  # all alive at once: each gets an arena of its own
    libc.malloc(1 << 20)
    together.wait(timeout=60)
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=60)
print('arenas map more than the limit:', mapped() - before > (256 << 20))
from process_isolation import IsolationContext, Limits
ctx = IsolationContext(paths=[sys.argv[1]], timeout=60, limits=Limits(memory=256 << 20))
print('allocated', ctx.load_module('isofix_hog').allocate(64 << 20) >> 20, 'MiB')
ctx.terminate()
'''


def test_a_memory_limit_below_what_threads_arenas_map_in_the_parent_starts_the_child():
    result = subprocess.run([sys.executable, '-c', ARENAS_PARENT, str(FIXTURES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ['arenas map more than the limit: True',
                                          'allocated 64 MiB'], result.stderr


@pytest.mark.parametrize('method', METHODS)
def test_a_memory_limit_smaller_than_the_parent_counts_what_the_child_adds(method):
    result = subprocess.run([sys.executable, '-c', BIG_PARENT, method, str(FIXTURES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ['allocated 64 MiB', '512 MiB: MemoryError',
                                          'allocated 64 MiB'], result.stderr


@pytest.mark.parametrize('method', METHODS)
def test_a_memory_limit_too_small_to_start_the_child_is_an_error_naming_it(new_context, method):
    context = new_context(start_method=method, limits=Limits(memory=MiB))
    with pytest.raises(ProcessTerminationError) as caught:
        context.start()
    error = caught.value
    assert error.call == 'its start-up'
    assert 'Limits(memory=1048576)' in error.reason
    assert 'too small for the child to start' in error.reason
    assert str(error.exit_code) not in error.reason.split()  # words, not just the status
    assert 'Limits(memory=1048576)' in str(error)


@pytest.mark.parametrize('method', METHODS)
def test_start_up_code_that_raises_is_described_with_its_traceback(new_context, method):
    gone = tempfile.mkdtemp()
    context = new_context(start_method=method, cwd=gone)
    os.rmdir(gone)
    with pytest.raises(ProcessTerminationError) as caught:
        context.start()
    error = caught.value
    assert error.exit_code == 72
    assert error.reason.startswith("the context's start-up code raised FileNotFoundError")
    assert gone in error.reason
    assert 'os.chdir(cwd)' in error.child_traceback
    assert 'process_isolation child:' not in str(error)


def _bogus_package(tmp_path):
    package = tmp_path / 'not_the_package'
    package.mkdir()
    (package / '__init__.py').write_text('raise ImportError("no _core here")\n')
    return str(package)


def _fork_server_argv(case, tmp_path):
    python = sys.executable
    if case == 'exits with 3 before it is ready':
        return [python, '-c', 'raise SystemExit(3)']
    if case == 'cannot load the package':
        return [python, '-c', _spawn.LAUNCHER, _bogus_package(tmp_path), '--fork-server',
                str(os.getpid()), '0']
    if case == 'is given a pid that is not its parent':
        return [python, '-c', _spawn.LAUNCHER, _spawn.package_dir(), '--fork-server', '1', '0']
    if case == 'cannot make its signalfd':
        return [python, '-c',
                'import faulthandler, os, resource\n'
                'from process_isolation import _core, _spawn\n'
                'hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n'
                'resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))\n'
                '_core.run_fork_server(os.getppid(), False, _spawn.bootstrap_from_options)\n']
    raise AssertionError(case)


@pytest.mark.parametrize('case, words', [
    ('exits with 3 before it is ready', "exited with code 3: code 3 is not one of"),
    ('cannot load the package', 'cannot load the package from'),
    ('is given a pid that is not its parent', 'its parent is not the process that started it'),
    ('cannot make its signalfd', 'cannot make a signalfd for SIGCHLD: EMFILE'),
])
def test_a_fork_server_that_cannot_start_says_why(tmp_path, case, words):
    with pytest.raises(RuntimeError) as caught:
        _core.ForkServer.start(_fork_server_argv(case, tmp_path), 60.0)
    message = str(caught.value)
    assert message.startswith('the fork server (pid ')
    assert 'could not start: ' in message
    assert words in message, message


def test_a_fork_server_that_died_says_how_when_it_is_next_asked_for_a_child(new_context):
    server = _core.ForkServer.start(_spawn.fork_server_command(sys.executable), 60.0)
    os.kill(server.pid, signal.SIGKILL)
    context = IsolationContext(start_method='forkserver')
    with pytest.raises(ConnectionError) as caught:
        _core.Connection.via_fork_server(server, _spawn.options_json(context), 60.0)
    assert f'fork server (pid {server.pid}) is gone: killed by SIGKILL' in str(caught.value)
    del server
