"""A child that dies while a process it started still holds its end of the connection: the
parent sees the death itself (the child's pidfd), not the socket's end, so the call fails at once
with ProcessTerminationError instead of waiting for the grandchild."""

import os
import signal
import time

import pytest

from process_isolation import ProcessTerminationError

from conftest import child_pids
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

HOLD_SECONDS = 40  # how long the grandchild keeps the socket: far past what the test allows
ALLOWED_SECONDS = 3


# The fork server is process-wide: started before this module's fd accounting, stopped after it.
pytestmark = pytest.mark.usefixtures('fork_server_for_the_module')


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize('how', ['exit', 'kill'])
@pytest.mark.parametrize('start_method', ['fork', 'forkserver', 'spawn'])
def test_a_child_that_dies_while_its_grandchild_holds_the_socket_fails_the_call_at_once(
        new_context, start_method, how, tmp_path):
    ctx = new_context(start_method=start_method)
    module = ctx.load_module('isofix_grandchild')
    pid = ctx.pid
    pid_file = tmp_path / 'holder.pid'
    holder = None
    try:
        started = time.monotonic()
        with pytest.raises(ProcessTerminationError) as caught:
            module.die_leaving_holder(how, str(pid_file), HOLD_SECONDS)
        elapsed = time.monotonic() - started
        holder = int(pid_file.read_text())
        # The grandchild still held the socket when the call failed: EOF was not what ended it.
        assert running(holder)
    finally:
        if holder is None and pid_file.exists():
            holder = int(pid_file.read_text())
        if holder is not None:
            os.kill(holder, signal.SIGKILL)  # not our child (init reaps it): ending it is enough
    assert elapsed < ALLOWED_SECONDS, f'the call took {elapsed:.1f} s to fail'
    error = caught.value
    assert error.pid == pid
    if how == 'kill':
        assert error.signal_name == 'SIGKILL'
    else:
        assert error.exit_code == 7
    assert 'closed its connection but did not exit' not in str(error)
    assert pid not in child_pids()
    assert not ctx.alive
    assert ctx.termination['pid'] == pid
