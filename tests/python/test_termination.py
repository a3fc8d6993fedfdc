"""Tests of a child's end: crashes become ProcessTerminationError in the parent, proxies of an
ended child raise ClientStateError, and every way a child ends leaves no process or descriptor
behind."""

import os
import signal
import sys

import pytest

from process_isolation import ClientStateError, ProcessTerminationError

from conftest import child_pids, new_fds, open_fds
from transport_helpers import both_transports  # noqa: F401 (each test per transport)


def test_a_segfault_in_the_child_raises_process_termination_error_naming_sigsegv(ctx):
    module = ctx.load_module('isofix_segfault')
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        module.crash()
    error = caught.value
    assert error.signal_name == 'SIGSEGV'
    assert error.signal == signal.SIGSEGV
    assert error.exit_code is None
    assert error.pid == pid
    assert error.call == 'isofix_segfault.crash()'
    assert 'isofix_segfault.py' in error.child_traceback
    assert 'in crash' in error.child_traceback
    assert 'SIGSEGV' in str(error)
    assert 'isofix_segfault.crash()' in str(error)
    assert pid not in child_pids()
    assert not ctx.alive
    assert ctx.termination['signal_name'] == 'SIGSEGV'
    assert ctx.termination['pid'] == pid


def test_an_abort_in_the_child_raises_process_termination_error_naming_sigabrt(ctx):
    module = ctx.load_module('isofix_abort')
    with pytest.raises(ProcessTerminationError) as caught:
        module.abort()
    assert caught.value.signal_name == 'SIGABRT'
    assert caught.value.signal == signal.SIGABRT
    assert caught.value.call == 'isofix_abort.abort()'
    assert 'in abort' in caught.value.child_traceback
    assert caught.value.pid not in child_pids()


def test_a_child_exiting_during_a_call_raises_process_termination_error_with_its_status(ctx):
    module = ctx.load_module('isofix_exit')
    with pytest.raises(ProcessTerminationError) as caught:
        module.exit_now(3)
    assert caught.value.exit_code == 3
    assert caught.value.signal is None
    assert caught.value.signal_name is None
    assert 'code 3' in str(caught.value)
    assert caught.value.pid not in child_pids()


def test_using_a_context_after_its_child_crashed_raises_client_state_error(ctx):
    basic = ctx.load_module('isofix_basic')
    point = basic.Point(1, 2)
    segfault = ctx.load_module('isofix_segfault')
    with pytest.raises(ProcessTerminationError):
        segfault.crash()
    with pytest.raises(ClientStateError):
        basic.add(1, 2)
    with pytest.raises(ClientStateError):
        point.x
    assert repr(point).startswith('<dead proxy of isolated.isofix_basic.Point object: the '
                                  'isolated child (pid ')
    with pytest.raises(ClientStateError):
        segfault.crash()
    with pytest.raises(ClientStateError):
        ctx.load_module('isofix_basic')
    with pytest.raises(ClientStateError):
        ctx.call(os.getpid)
    assert 'isofix_basic' not in sys.modules
    assert 'isofix_segfault' not in sys.modules


def test_restart_after_a_crash_gives_a_new_child_and_old_proxies_stay_dead(ctx):
    basic = ctx.load_module('isofix_basic')
    basic.increment(5)
    with pytest.raises(ProcessTerminationError) as caught:
        ctx.load_module('isofix_segfault').crash()
    ctx.restart()
    assert ctx.alive
    assert ctx.pid != caught.value.pid
    fresh = ctx.load_module('isofix_basic')
    assert fresh is not basic
    assert fresh.increment() == 1  # the state died with the old child
    with pytest.raises(ClientStateError):
        basic.increment()


def test_leaving_a_with_block_ends_and_reaps_the_child(new_context):
    with new_context() as context:
        module = context.load_module('isofix_basic')
        pid = context.pid
        assert pid in child_pids()
        assert module.add(1, 2) == 3
    assert not context.alive
    assert context.pid is None
    assert pid not in child_pids()
    assert context.termination['exit_code'] == 0
    assert context.termination['signal'] is None
    with pytest.raises(ClientStateError):
        module.add(1, 2)


def test_leaving_a_with_block_by_an_exception_ends_and_reaps_the_child(new_context):
    with pytest.raises(KeyError):
        with new_context() as context:
            pid = context.ensure_started().pid
            raise KeyError('leaving')
    assert pid not in child_pids()
    assert not context.alive


def test_terminate_is_idempotent_and_ends_the_child(ctx):
    ctx.start()
    pid = ctx.pid
    ctx.terminate()
    ctx.terminate()
    assert pid not in child_pids()
    assert ctx.pid is None
    with pytest.raises(ClientStateError):
        ctx.ensure_started()


def test_starting_a_running_context_again_is_an_error(ctx):
    ctx.start()
    with pytest.raises(RuntimeError):
        ctx.start()
    assert ctx.ensure_started().alive


def test_terminate_closes_the_connection_even_while_proxies_of_the_child_remain(new_context):
    fds = open_fds()
    context = new_context()
    module = context.load_module('isofix_basic')
    point = module.Point(1, 2)
    context.terminate()
    assert new_fds(fds) == {}
    with pytest.raises(ClientStateError):
        point.x


def test_a_crashed_child_leaves_no_descriptors_open_while_its_proxies_remain(new_context):
    fds = open_fds()
    context = new_context()
    module = context.load_module('isofix_segfault')
    with pytest.raises(ProcessTerminationError):
        module.crash()
    assert context.termination['signal_name'] == 'SIGSEGV'  # the context has noticed
    assert new_fds(fds) == {}
    with pytest.raises(ClientStateError):
        module.crash()
