"""Ctrl-C during a call: the parent raises KeyboardInterrupt promptly, the child gets SIGINT, and
the context stays usable when the child recovered; a child that does not answer within the grace
(2 s) is killed, and the context says so on its next use.

Ctrl-C is SIGINT sent to this process by a helper thread (the main thread is the one waiting in
the call), as soon as the child has said through a FIFO that it is inside the call."""

import time

import pytest

from process_isolation import ClientStateError, ProcessTerminationError

from conftest import child_pids
from supervision_helpers import CtrlCWhenAnnounced
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

pytestmark = pytest.mark.usefixtures('no_core_files')

# How soon after Ctrl-C the parent must raise KeyboardInterrupt ("well under a second").
PROMPT = 0.5
# How long the child has to answer after Ctrl-C before the parent kills it.
GRACE = 2.0


@pytest.fixture
def ctx(new_context):
    """A context whose calls time out soon enough to fail a test, not hang it, if Ctrl-C does not
    end the wait."""
    return new_context(timeout=10)


@pytest.fixture
def waiter(ctx):
    """The fixture module that waits in a call until interrupted, in ctx's running child."""
    return ctx.load_module('isofix_interruptible')


def test_ctrl_c_raises_keyboard_interrupt_promptly_and_the_child_receives_it(ctx, waiter,
                                                                             tmp_path):
    pid = ctx.pid
    with CtrlCWhenAnnounced(tmp_path) as ctrl_c:
        with pytest.raises(KeyboardInterrupt):
            waiter.count_interrupt(ctrl_c.fifo)
        raised_at = time.monotonic()
    assert raised_at - ctrl_c.pressed_at < PROMPT
    # The same child carries on, and it saw the interrupt as a KeyboardInterrupt of its own.
    assert waiter.interrupts_seen() == 1
    assert waiter.pid() == pid
    assert ctx.pid == pid
    assert ctx.alive
    assert ctx.termination is None


def test_after_ctrl_c_the_next_call_gets_its_own_answer_not_the_interrupted_ones(ctx, waiter,
                                                                                 tmp_path):
    with CtrlCWhenAnnounced(tmp_path) as ctrl_c:
        with pytest.raises(KeyboardInterrupt):
            waiter.wait_announced(ctrl_c.fifo)
    # The interrupted call's late answer (the child's own KeyboardInterrupt) is dropped.
    basic = ctx.load_module('isofix_basic')
    assert basic.add(2, 3) == 5
    assert basic.echo('after') == 'after'
    assert waiter.pid() == ctx.pid


def test_ctrl_c_works_again_and_again_on_the_same_context(ctx, waiter, tmp_path):
    pid = ctx.pid
    for round_ in range(3):
        with CtrlCWhenAnnounced(tmp_path, f'announce{round_}') as ctrl_c:
            with pytest.raises(KeyboardInterrupt):
                waiter.count_interrupt(ctrl_c.fifo)
            assert time.monotonic() - ctrl_c.pressed_at < PROMPT
    assert waiter.interrupts_seen() == 3
    assert waiter.pid() == pid


def test_a_child_that_ignores_ctrl_c_is_killed_after_the_grace_and_the_context_says_so(
        ctx, waiter, tmp_path):
    pid = ctx.pid
    with CtrlCWhenAnnounced(tmp_path) as ctrl_c:
        with pytest.raises(KeyboardInterrupt):
            waiter.wait_announced_ignoring_sigint(ctrl_c.fifo)
        assert time.monotonic() - ctrl_c.pressed_at < PROMPT
    # The next use waits out what is left of the grace, then reports the child killed.
    with pytest.raises(ProcessTerminationError) as caught:
        waiter.pid()
    assert time.monotonic() - ctrl_c.pressed_at < GRACE + 1.0
    error = caught.value
    assert error.pid == pid
    assert error.signal_name == 'SIGKILL'
    assert 'interrupted' in error.reason
    assert 'interrupted' in str(error)
    assert pid not in child_pids()
    assert not ctx.alive
    with pytest.raises(ClientStateError, match=f'pid {pid}'):
        waiter.pid()


def test_a_child_that_ignores_ctrl_c_is_ended_by_terminate_without_a_next_call(ctx, waiter,
                                                                                 tmp_path):
    pid = ctx.pid
    with CtrlCWhenAnnounced(tmp_path) as ctrl_c:
        with pytest.raises(KeyboardInterrupt):
            waiter.wait_announced_ignoring_sigint(ctrl_c.fifo)
    start = time.monotonic()
    ctx.terminate()
    assert time.monotonic() - start < GRACE + 1.0
    assert pid not in child_pids()
    assert ctx.termination['pid'] == pid
