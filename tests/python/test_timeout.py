"""Tests of call timeouts: a call that hangs raises CallTimeoutError soon after its timeout, the
child is killed and reaped, and the error shows where the child hung."""

import time

import pytest

from process_isolation import (CallTimeoutError, ClientStateError, ProcessTerminationError,
                               timeout)

from conftest import child_pids
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

# The most a timed-out call may take beyond its timeout: taking the child's traceback, killing
# and reaping it.
OVERRUN = 1.0


def test_a_hanging_call_inside_timeout_raises_call_timeout_error_in_time(ctx):
    module = ctx.load_module('isofix_hang')
    pid = ctx.pid
    start = time.monotonic()
    with pytest.raises(CallTimeoutError) as caught:
        with timeout(1.0):
            module.hang()
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 1.0 + OVERRUN
    error = caught.value
    assert isinstance(error, ProcessTerminationError)
    assert isinstance(error, TimeoutError)
    assert error.call == 'isofix_hang.hang()'
    assert error.pid == pid
    assert pid not in child_pids()
    assert not ctx.alive


def test_a_timed_out_call_shows_where_the_child_hung(ctx):
    module = ctx.load_module('isofix_hang')
    with pytest.raises(CallTimeoutError) as caught:
        with timeout(0.5):
            module.hang()
    traceback = caught.value.child_traceback
    assert 'isofix_hang.py' in traceback
    assert 'in hang' in traceback
    assert 'isofix_hang.py' in str(caught.value)


def test_the_context_timeout_option_limits_every_call(new_context):
    context = new_context(timeout=0.5)
    module = context.load_module('isofix_hang')
    start = time.monotonic()
    with pytest.raises(CallTimeoutError):
        module.hang()
    assert time.monotonic() - start < 0.5 + OVERRUN
    with pytest.raises(ClientStateError):
        module.hang()


def test_calls_that_finish_in_time_are_unaffected_by_timeout(basic):
    with timeout(30):
        assert basic.add(1, 2) == 3
        assert list(basic.countdown(3)) == [3, 2, 1]
    assert basic.increment() == 1


def test_timeout_rejects_a_non_positive_number_of_seconds():
    with pytest.raises(ValueError):
        with timeout(0):
            pass
    with pytest.raises(ValueError):
        with timeout(-1):
            pass
