"""The crash matrix: every way a child can end during a call (each fatal signal, SIGKILL, SIGTERM,
os._exit, sys.exit) raises ProcessTerminationError with the right fields, the call in flight and,
for the fatal signals, the child's Python traceback of every thread and the native stack of the
crashing thread; a child that ended between calls is reported on the next use.

Each ending has a fixture module of its own (tests/python/fixtures/isofix_*.py). Before each
crash the child's RLIMIT_CORE is set so that no core is written, which makes core_dumped
deterministic; one test lets the child dump core and checks the flag the other way.
"""

import collections
import os
import pickle
import re
import resource
import signal
import sys

import pytest

from process_isolation import (CallTimeoutError, ClientStateError, ProcessTerminationError,
                               ProtocolError)

from conftest import child_pids
from supervision_helpers import forbid_core_dumps, wait_until_exited
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

pytestmark = pytest.mark.usefixtures('no_core_files')

Ending = collections.namedtuple('Ending', 'module function args call signal exit_code')

FATAL_SIGNALS = [
    Ending('isofix_segfault', 'crash', (), 'isofix_segfault.crash()', signal.SIGSEGV, None),
    Ending('isofix_abort', 'abort', (), 'isofix_abort.abort()', signal.SIGABRT, None),
    Ending('isofix_sigbus', 'crash', (), 'isofix_sigbus.crash()', signal.SIGBUS, None),
    Ending('isofix_sigfpe', 'divide', (7,), 'isofix_sigfpe.divide(7)', signal.SIGFPE, None),
    Ending('isofix_sigill', 'crash', (), 'isofix_sigill.crash()', signal.SIGILL, None),
]
# Endings that leave the child no chance to report anything: it cannot catch SIGKILL, and an exit
# is an orderly end, not a crash. (sys.exit with a message is in test_output.py: the message goes
# to stderr.)
SILENT_ENDINGS = [
    Ending('isofix_sigkill', 'crash', (), 'isofix_sigkill.crash()', signal.SIGKILL, None),
    Ending('isofix_exit', 'exit_now', (3,), 'isofix_exit.exit_now(3)', None, 3),
    Ending('isofix_exit', 'exit_now', (0,), 'isofix_exit.exit_now(0)', None, 0),
    Ending('isofix_sys_exit', 'exit_with', (4,), 'isofix_sys_exit.exit_with(4)', None, 4),
    Ending('isofix_sys_exit', 'exit_with', (None,), 'isofix_sys_exit.exit_with(None)', None, 0),
]
ENDINGS = FATAL_SIGNALS + SILENT_ENDINGS + [
    Ending('isofix_sigterm', 'crash', (), 'isofix_sigterm.crash()', signal.SIGTERM, None),
]


def ending_id(ending):
    how = signal.Signals(ending.signal).name if ending.signal else f'exit{ending.exit_code}'
    return f'{ending.module}.{ending.function}-{how}'


def crash(context, ending):
    """Imports the ending's module in context's child, forbids core dumps, runs the misdeed and
    returns the ProcessTerminationError it raised."""
    module = context.load_module(ending.module)
    forbid_core_dumps(context)
    with pytest.raises(ProcessTerminationError) as caught:
        getattr(module, ending.function)(*ending.args)
    return caught.value


@pytest.mark.parametrize('ending', ENDINGS, ids=ending_id)
def test_each_ending_during_a_call_raises_process_termination_error_with_its_fields(ctx, ending):
    module = ctx.load_module(ending.module)
    pid = ctx.pid
    error = crash(ctx, ending)
    assert type(error) is ProcessTerminationError
    assert not isinstance(error, (CallTimeoutError, ProtocolError))
    assert error.pid == pid
    assert error.call == ending.call
    assert error.core_dumped is False
    if ending.signal is not None:
        assert error.signal == ending.signal
        assert error.signal_name == signal.Signals(ending.signal).name
        assert error.exit_code is None
    else:
        assert error.signal is None
        assert error.signal_name is None
        assert error.exit_code == ending.exit_code
    summary = str(error).split('\n\n')[0]
    assert f'pid {pid}' in summary
    assert ending.call in summary
    if ending.signal is not None:
        assert error.signal_name in summary
    else:
        assert f'code {ending.exit_code}' in summary
    # The child is reaped, and the context knows how it ended.
    assert pid not in child_pids()
    assert not ctx.alive
    assert ctx.pid is None
    termination = ctx.termination
    assert termination['pid'] == pid
    assert termination['signal'] == ending.signal
    assert termination['exit_code'] == ending.exit_code
    # Every later use says the child has ended, naming it.
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        getattr(module, ending.function)
    with pytest.raises(ClientStateError):
        ctx.call(os.getpid)


@pytest.mark.parametrize('ending', FATAL_SIGNALS, ids=ending_id)
def test_a_fatal_signal_reports_the_python_traceback_and_the_native_stack(ctx, ending):
    error = crash(ctx, ending)
    traceback = error.child_traceback
    assert f'{ending.module}.py' in traceback
    assert f'in {ending.function}' in traceback
    # backtrace_symbols format, one frame a line: "object(symbol+offset) [address]".
    frames = error.native_traceback.splitlines()
    assert len(frames) >= 3
    assert all(re.search(r'\[0x[0-9a-f]+\]$', frame) for frame in frames), frames
    text = str(error)
    assert traceback in text
    assert error.native_traceback in text


@pytest.mark.parametrize('ending', SILENT_ENDINGS, ids=ending_id)
def test_an_ending_the_child_cannot_report_carries_no_traceback(ctx, ending):
    error = crash(ctx, ending)
    assert error.child_traceback is None
    assert error.native_traceback is None


def test_a_crash_report_shows_the_python_stack_of_every_thread_of_the_child(ctx):
    buggy = ctx.load_module('isofix_dragons')
    with pytest.raises(ProcessTerminationError) as caught:
        buggy.dragons_here(3)
    error = caught.value
    assert error.call == 'isofix_dragons.dragons_here(3)'
    assert error.signal_name == 'SIGSEGV'
    traceback = error.child_traceback
    # The crashing thread, and the helper thread that was waiting at the time.
    assert re.search(r'Current thread 0x[0-9a-f]+', traceback)
    assert len(re.findall(r'^(?:Current thread|Thread) 0x[0-9a-f]+', traceback, re.M)) == 2
    assert 'in dragons_here' in traceback
    assert 'in _waiting_for_ever' in traceback
    crashing = traceback[traceback.index('Current thread'):]
    assert 'in dragons_here' in crashing
    assert 'in _waiting_for_ever' not in crashing


def test_a_segfault_in_c_code_shows_the_c_frames_with_their_symbols(ctx):
    buggy = ctx.load_module('isofix_dragons')
    with pytest.raises(ProcessTerminationError) as caught:
        buggy.dragons_here(3)
    native = caught.value.native_traceback
    # memset in libc, called through libffi by ctypes, called by the interpreter.
    frames = native.splitlines()
    assert any('libc.so' in frame for frame in frames[:3]), frames[:3]
    assert 'libffi' in native or '_ctypes' in native
    assert re.search(r'\(ffi_call\+0x[0-9a-f]+\)', native)
    assert re.search(r'\(_?PyEval_\w+\+0x[0-9a-f]+\)', native)


def test_an_abort_names_the_c_function_that_aborted_in_the_native_stack(ctx):
    error = crash(ctx, FATAL_SIGNALS[1])
    assert re.search(r'\(abort\+0x[0-9a-f]+\)', error.native_traceback)


def test_the_message_is_one_readable_paragraph_followed_by_the_tracebacks(ctx):
    buggy = ctx.load_module('isofix_dragons')
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        buggy.dragons_here(3)
    error = caught.value
    text = str(error)
    summary, rest = text.split('\n\n', 1)
    assert '\n' not in summary
    assert f'pid {pid}' in summary
    assert 'SIGSEGV' in summary
    assert 'isofix_dragons.dragons_here(3)' in summary
    assert summary.endswith('.')
    assert text.index(error.child_traceback) < text.index(error.native_traceback)
    assert 'in _waiting_for_ever' in rest


def test_core_dumped_says_whether_the_kernel_wrote_a_core(new_context, tmp_path):
    pattern = open('/proc/sys/kernel/core_pattern').read().strip()
    if pattern.startswith('|'):
        pytest.skip(f'cores go to the helper {pattern!r}, which decides whether one is written')
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    if hard != resource.RLIM_INFINITY and hard < 64 << 20:
        pytest.skip(f'the hard core size limit ({hard} bytes) is too small for a core')
    context = new_context(cwd=tmp_path)
    module = context.load_module('isofix_abort')
    context.call(resource.setrlimit, resource.RLIMIT_CORE, (hard, hard))
    try:
        with pytest.raises(ProcessTerminationError) as caught:
            module.abort()
        assert caught.value.core_dumped is True
        assert 'core dumped' in str(caught.value).split('\n\n')[0]
        assert context.termination['core_dumped'] is True
        if not os.path.isabs(pattern):  # the core is in the child's working directory
            assert [name for name in os.listdir(tmp_path) if name.startswith('core')]
    finally:
        for name in os.listdir(tmp_path):
            os.unlink(tmp_path / name)


def test_a_child_killed_between_calls_is_reported_on_next_use_then_client_state_error(ctx):
    module = ctx.load_module('isofix_basic')
    assert module.add(1, 2) == 3
    pid = ctx.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until_exited(pid)
    with pytest.raises(ProcessTerminationError) as caught:
        module.add(1, 2)
    error = caught.value
    assert type(error) is ProcessTerminationError
    assert error.pid == pid
    assert error.signal_name == 'SIGKILL'
    assert error.exit_code is None
    assert error.call.startswith('isofix_basic.add')
    assert pid not in child_pids()
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        module.add(1, 2)
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        module.add(1, 2)


def test_a_child_that_segfaulted_between_calls_is_reported_with_its_tracebacks(ctx):
    module = ctx.load_module('isofix_basic')
    pid = ctx.pid
    os.kill(pid, signal.SIGSEGV)
    assert wait_until_exited(pid)
    with pytest.raises(ProcessTerminationError) as caught:
        module.add(1, 2)
    error = caught.value
    assert error.signal_name == 'SIGSEGV'
    assert error.pid == pid
    assert 'Current thread' in error.child_traceback
    assert error.native_traceback
    with pytest.raises(ClientStateError):
        module.add(1, 2)


def test_the_context_notices_a_child_that_died_between_calls_before_it_is_used(ctx):
    module = ctx.load_module('isofix_basic')
    pid = ctx.pid
    os.kill(pid, signal.SIGTERM)
    assert wait_until_exited(pid)
    assert not ctx.alive
    assert ctx.pid is None
    assert ctx.termination['pid'] == pid
    assert ctx.termination['signal_name'] == 'SIGTERM'
    assert pid not in child_pids()
    assert 'isofix_basic' not in sys.modules
    # Noticing it did not swallow the report: the next use still gets it, once.
    with pytest.raises(ProcessTerminationError) as caught:
        module.add(1, 2)
    assert caught.value.signal_name == 'SIGTERM'
    assert caught.value.pid == pid
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        module.add(1, 2)


def test_a_segfault_while_importing_is_reported_as_the_import_call(ctx):
    ctx.start()
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        ctx.load_module('isofix_import_segfault')
    error = caught.value
    assert error.signal_name == 'SIGSEGV'
    assert error.pid == pid
    assert 'isofix_import_segfault' in error.call
    assert 'isofix_import_segfault.py' in error.child_traceback
    assert 'in <module>' in error.child_traceback
    assert pid not in child_pids()
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        ctx.load_module('isofix_basic')


def test_a_child_that_fails_while_starting_is_reported_with_its_status(new_context, tmp_path):
    context = new_context(cwd=tmp_path / 'missing', stderr='capture')
    with pytest.raises(ProcessTerminationError) as caught:
        context.start()
    error = caught.value
    assert error.signal is None
    assert error.exit_code not in (None, 0)
    assert 'start' in error.call
    assert 'FileNotFoundError' in error.stderr_tail
    assert error.pid not in child_pids()
    assert not context.alive


def test_a_termination_error_survives_pickling_with_every_field(ctx):
    error = crash(ctx, FATAL_SIGNALS[0])
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ProcessTerminationError
    for field in ('pid', 'exit_code', 'signal', 'signal_name', 'core_dumped', 'call',
                  'child_traceback', 'native_traceback'):
        assert getattr(copy, field) == getattr(error, field)
    assert str(copy) == str(error)
