"""The three start methods: 'fork' (the default), 'forkserver' and 'spawn' (with python=)."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

from process_isolation import IsolationContext, ProcessTerminationError
from process_isolation import context as context_module

from conftest import FIXTURES, child_pids

METHODS = ['fork', 'forkserver', 'spawn']


# The fork server is process-wide: started before this module's fd accounting, stopped after it.
pytestmark = pytest.mark.usefixtures('fork_server_for_the_module')


@pytest.mark.parametrize('method', METHODS)
def test_each_start_method_runs_the_module_with_the_context_options(new_context, tmp_path,
                                                                   method):
    ctx = new_context(start_method=method, env={'ISOFIX_WHERE': method}, cwd=tmp_path)
    where = ctx.load_module('isofix_where').where()
    assert where['pid'] == ctx.pid != os.getpid()
    assert where['env'] == method
    assert where['cwd'] == str(tmp_path)
    assert where['path0'] == str(FIXTURES)
    if method == 'forkserver':
        assert where['ppid'] == context_module._fork_server.pid  # forked by the server
    else:
        assert where['ppid'] == os.getpid()


@pytest.mark.parametrize('method', ['forkserver', 'spawn'])
def test_forkserver_and_spawn_children_hold_no_copy_of_the_parent_state(new_context, method):
    sys.isofix_parent_marker = 'secret'
    try:
        ctx = new_context(start_method=method)
        assert ctx.load_module('isofix_where').where()['parent_marker'] is None
    finally:
        del sys.isofix_parent_marker


def test_a_forked_child_inherits_the_parent_state(new_context):
    sys.isofix_parent_marker = 'inherited'
    try:
        ctx = new_context(start_method='fork')
        assert ctx.load_module('isofix_where').where()['parent_marker'] == 'inherited'
    finally:
        del sys.isofix_parent_marker


@pytest.mark.parametrize('method', METHODS)
def test_a_crash_is_reported_the_same_way_whatever_the_start_method(new_context, method):
    ctx = new_context(start_method=method)
    module = ctx.load_module('isofix_where')
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        module.crash()
    error = caught.value
    assert error.pid == pid
    assert error.signal_name == 'SIGSEGV'
    assert error.call == 'isofix_where.crash()'
    assert 'isofix_where.py' in error.child_traceback
    assert error.native_traceback
    assert pid not in child_pids()
    ctx.restart()
    assert ctx.load_module('isofix_where').where()['pid'] == ctx.pid != pid


@pytest.fixture
def other_thread():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(30,))
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_fork_warns_when_the_parent_has_other_threads(new_context, other_thread):
    ctx = new_context(start_method='fork')
    with pytest.warns(RuntimeWarning, match='several threads'):
        ctx.start()


@pytest.mark.parametrize('method', ['forkserver', 'spawn'])
def test_forkserver_and_spawn_are_safe_from_a_threaded_parent(new_context, other_thread,
                                                              method):
    ctx = new_context(start_method=method)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        where = ctx.load_module('isofix_where').where()
    assert where['threads'] == 1


def test_spawn_runs_the_interpreter_of_a_virtual_environment(new_context, tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True,
                   timeout=120)
    ctx = new_context(start_method='spawn', python=venv)
    where = ctx.load_module('isofix_where').where()
    assert where['executable'] == str(venv / 'bin' / 'python')
    assert where['pid'] == ctx.pid


def test_spawn_says_clearly_when_the_interpreter_cannot_load_the_package(new_context,
                                                                          tmp_path):
    # An "interpreter" whose Python cannot import the extension (as one of another version
    # could not): it runs the launcher with the extension module hidden.
    fake = tmp_path / 'python'
    fake.write_text(textwrap.dedent(f'''\
        #!/bin/sh
        # called as: python -c LAUNCHER PACKAGE OPTIONS
        exec {sys.executable} -c "import sys
        sys.modules['process_isolation._core'] = None
        code = sys.argv.pop(1)
        exec(compile(code, '<launcher>', 'exec'))" "$2" "$3" "$4"
        '''))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    ctx = new_context(start_method='spawn', python=fake)
    with pytest.raises(RuntimeError, match='cannot load process_isolation') as caught:
        ctx.start()
    # The child's own words on why, from the ImportError it got.
    assert 'cannot load the package from' in caught.value.__cause__.reason


def test_python_needs_the_spawn_start_method():
    with pytest.raises(ValueError, match="start_method='spawn'"):
        IsolationContext(python=sys.executable)


def test_an_unknown_start_method_is_refused():
    with pytest.raises(ValueError, match='start_method'):
        IsolationContext(start_method='teleport')


def test_a_dead_fork_server_is_replaced_by_the_next_context():
    # Not the new_context fixture: the replacement server outlives the test by design, so the
    # contexts are owned here and the server is stopped before the test ends.
    server_pid = context_module._get_fork_server(60.0).pid
    ctx = IsolationContext(start_method='forkserver', paths=[FIXTURES], timeout=60)
    fresh = IsolationContext(start_method='forkserver', paths=[FIXTURES], timeout=60)
    try:
        module = ctx.load_module('isofix_where')
        child = ctx.pid
        os.kill(server_pid, 9)
        # The child dies with its server (PR_SET_PDEATHSIG), and the next use says so.
        for _ in range(200):
            if not _exists(child):
                break
            threading.Event().wait(0.05)
        assert not _exists(child)
        with pytest.raises(ProcessTerminationError):
            module.where()
        del module
        where = fresh.load_module('isofix_where').where()
        assert where['ppid'] == context_module._fork_server.pid != server_pid
        assert where['pid'] != child
    finally:
        ctx.terminate()
        fresh.terminate()
        context_module._stop_fork_server()
    assert server_pid not in child_pids()


def test_the_fork_server_and_its_children_die_with_the_parent(tmp_path):
    script = tmp_path / 'parent.py'
    script.write_text(textwrap.dedent(f'''\
        import sys
        sys.path.insert(0, {str(FIXTURES)!r})
        from process_isolation import IsolationContext
        from process_isolation import context
        ctx = IsolationContext(start_method='forkserver', paths=[{str(FIXTURES)!r}])
        ctx.load_module('isofix_where').where()
        print(ctx.pid, context._fork_server.pid, flush=True)
        sys.stdin.read()
        '''))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        child, server = map(int, parent.stdout.readline().split())
        parent.kill()
        parent.wait(timeout=30)
        deadline = 100
        while deadline and (_exists(child) or _exists(server)):
            deadline -= 1
            threading.Event().wait(0.05)
        assert not _exists(child) and not _exists(server)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        parent.stdout.close()
        parent.stdin.close()


def _exists(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ')[1][0] != 'Z'
    except FileNotFoundError:
        return False


def c_level_handler(signum):
    """The address of the C-level handler the kernel runs for `signum` in this process (0 for
    SIG_DFL, 1 for SIG_IGN), read with sigaction(2): Python's signal.getsignal only knows the
    handlers Python installed. sa_handler is the first member of struct sigaction."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    action = ctypes.create_string_buffer(512)  # larger than any struct sigaction
    assert libc.sigaction(signum, None, action) == 0, ctypes.get_errno()
    return ctypes.c_void_p.from_buffer(action).value or 0


@pytest.fixture
def fork_server_running():
    """The fork server, (re)started before new_context counts descriptors (an earlier test may
    have killed it). Yields nothing: a fixture value that held the server would outlive the
    module's fixture that stops it."""
    context_module._get_fork_server(60.0)


def test_starting_a_child_leaves_the_parents_crash_handlers_alone(fork_server_running,
                                                                  new_context):
    # The parent prepares what every child would otherwise repeat (it imports faulthandler and
    # loads the unwinder once), but the crash handlers are the child's alone.
    import faulthandler
    watched = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT,
               signal.SIGUSR2)
    enabled = faulthandler.is_enabled()
    before = {signum: c_level_handler(signum) for signum in watched}
    for method in ('fork', 'forkserver'):
        context = new_context(start_method=method)
        assert context.load_module('isofix_basic').add(1, 2) == 3
    assert faulthandler.is_enabled() == enabled
    assert {signum: c_level_handler(signum) for signum in watched} == before
