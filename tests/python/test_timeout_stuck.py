"""Timeouts against children stuck in every way (complements test_timeout.py, which covers a
child waiting in Python): in C code without the GIL, in C code holding the GIL, in a Python loop,
deaf to every signal, and while importing. Each one ends in CallTimeoutError within the timeout
plus one second, with the traceback of where the child was stuck when it could give one."""

import os
import threading
import time

import pytest

from process_isolation import (CallTimeoutError, ClientStateError, ProcessTerminationError,
                               timeout)

from conftest import child_pids
from supervision_helpers import DEADLINE
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

pytestmark = pytest.mark.usefixtures('no_core_files')

# The most a timed-out call may take beyond its timeout: asking the child for its traceback,
# killing and reaping it (the promise: "within the timeout plus one second, always").
OVERRUN = 1.0
SECONDS = 0.5

STUCK = ['sleep_in_c_without_gil', 'loop_in_c_holding_gil', 'pause_in_c_holding_gil',
         'spin_in_python']


def timed_out_call(call, seconds=SECONDS):
    """Runs call() inside timeout(seconds); returns the CallTimeoutError and the elapsed time."""
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as caught:
        with timeout(seconds):
            call()
    return caught.value, time.monotonic() - start


@pytest.mark.parametrize('where', STUCK)
def test_a_child_stuck_anywhere_times_out_in_time_and_shows_where_it_was(ctx, where):
    module = ctx.load_module('isofix_stuck')
    pid = ctx.pid
    error, elapsed = timed_out_call(getattr(module, where))
    assert SECONDS <= elapsed < SECONDS + OVERRUN
    assert isinstance(error, ProcessTerminationError)
    assert isinstance(error, TimeoutError)
    assert error.pid == pid
    assert error.call == f'isofix_stuck.{where}()'
    assert error.signal_name == 'SIGKILL'
    assert error.exit_code is None
    assert 'timed out' in error.reason
    assert 'isofix_stuck.py' in error.child_traceback
    assert f'in {where}' in error.child_traceback
    assert f'in {where}' in str(error)
    assert 'timed out' in str(error).split('\n\n')[0]
    assert pid not in child_pids()
    assert not ctx.alive
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        module.spin_in_python()


def test_a_child_deaf_to_every_signal_still_times_out_within_a_second_of_the_timeout(ctx):
    module = ctx.load_module('isofix_stuck')
    pid = ctx.pid
    error, elapsed = timed_out_call(module.hang_deaf_to_signals)
    assert error.pid == pid
    assert error.signal_name == 'SIGKILL'
    assert pid not in child_pids()
    assert SECONDS <= elapsed < SECONDS + OVERRUN


def test_the_context_timeout_ends_a_child_holding_the_gil_in_c(new_context):
    context = new_context(timeout=SECONDS)
    module = context.load_module('isofix_stuck')
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as caught:
        module.loop_in_c_holding_gil()
    assert SECONDS <= time.monotonic() - start < SECONDS + OVERRUN
    assert 'in loop_in_c_holding_gil' in caught.value.child_traceback


def test_a_module_that_hangs_while_importing_times_out_and_shows_the_import(new_context):
    context = new_context(timeout=SECONDS)
    context.start()
    pid = context.pid
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as caught:
        context.load_module('isofix_import_hang')
    assert SECONDS <= time.monotonic() - start < SECONDS + OVERRUN
    error = caught.value
    assert 'isofix_import_hang' in error.call
    assert 'isofix_import_hang.py' in error.child_traceback
    assert 'in <module>' in error.child_traceback
    assert pid not in child_pids()


def test_a_call_by_name_times_out_like_a_proxy_call(ctx):
    ctx.start()
    pid = ctx.pid
    error, elapsed = timed_out_call(lambda: ctx.call(time.sleep, 60))
    assert SECONDS <= elapsed < SECONDS + OVERRUN
    assert error.pid == pid
    assert 'sleep' in error.call
    assert pid not in child_pids()


def test_a_timeout_block_overrides_the_context_timeout_both_ways(new_context):
    # Shorter than the context's: the block's timeout wins.
    patient = new_context(timeout=30)
    stuck = patient.load_module('isofix_stuck')
    error, elapsed = timed_out_call(stuck.spin_in_python)
    assert elapsed < SECONDS + OVERRUN
    # Longer than the context's: a call the context would have cut short finishes.
    hasty = new_context(timeout=0.2)
    hasty.start()
    with timeout(30):
        assert hasty.call(time.sleep, 0.6) is None
    assert hasty.alive
    with pytest.raises(CallTimeoutError):
        hasty.call(time.sleep, 0.6)


def test_a_timeout_block_ends_with_the_block(ctx):
    module = ctx.load_module('isofix_basic')
    with timeout(SECONDS):
        assert module.add(1, 2) == 3
    # Outside the block the context's own (long) timeout applies again: a call slower than
    # the block's timeout finishes.
    assert ctx.call(time.sleep, SECONDS + 0.2) is None
    assert ctx.alive


def test_a_timeout_block_limits_only_the_thread_that_entered_it(ctx):
    ctx.start()
    finished = []
    with timeout(0.2):
        other = threading.Thread(target=lambda: finished.append(ctx.call(time.sleep, 0.5)))
        other.start()
        other.join(DEADLINE)
    assert finished == [None]
    assert ctx.alive


def test_a_timed_out_child_leaves_no_process_and_its_termination_says_why(ctx):
    module = ctx.load_module('isofix_stuck')
    pid = ctx.pid
    timed_out_call(module.sleep_in_c_without_gil)
    termination = ctx.termination
    assert termination['pid'] == pid
    assert termination['signal_name'] == 'SIGKILL'
    assert 'timed out' in termination['reason']
    assert pid not in child_pids()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: the pid is gone, not a zombie
