"""restart() and restart='auto': a new child after the old one ended (or while it runs), with
proxies from the old child raising ClientStateError that names it; with restart='auto', module
proxies carry on in a new child after a crash, which makes crash-and-continue loops possible."""

import os
import signal
import sys

import pytest

from process_isolation import (CallTimeoutError, ClientStateError, IsolationContext, Limits,
                               ProcessTerminationError, timeout)

from conftest import FIXTURES, child_pids
from supervision_helpers import wait_until_exited
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)

pytestmark = pytest.mark.usefixtures('no_core_files')


def test_restart_of_a_running_child_starts_a_new_one_and_old_proxies_name_the_old_child(ctx):
    basic = ctx.load_module('isofix_basic')
    point = basic.Point(1, 2)
    basic.increment(10)
    old = ctx.pid
    ctx.restart()
    assert ctx.alive
    assert ctx.pid not in (None, old)
    assert old not in child_pids()
    for use in (lambda: basic.add(1, 2), lambda: point.x, lambda: str(point)):
        with pytest.raises(ClientStateError, match=f'pid {old}'):
            use()
    # The repr of a dead proxy is text that says so (issue 12, item 9).
    assert repr(point) == (f'<dead proxy of isolated.isofix_basic.Point object: the isolated child '
                           f'(pid {old}) was terminated>')
    assert sys.modules.get('isofix_basic') is not basic
    fresh = ctx.load_module('isofix_basic')
    assert fresh is not basic
    assert fresh.increment() == 1  # a new interpreter: the old one's state is gone
    assert fresh.pid() == ctx.pid
    assert sys.modules['isofix_basic'] is fresh


def test_restart_after_a_crash_clears_the_termination_and_runs_a_new_child(ctx):
    segfault = ctx.load_module('isofix_segfault')
    with pytest.raises(ProcessTerminationError) as caught:
        segfault.crash()
    assert ctx.termination['signal_name'] == 'SIGSEGV'
    ctx.restart()
    assert ctx.termination is None
    assert ctx.alive
    assert ctx.pid != caught.value.pid
    assert ctx.load_module('isofix_basic').add(1, 2) == 3
    with pytest.raises(ClientStateError, match=f'pid {caught.value.pid}'):
        segfault.crash()


def test_restart_keeps_the_context_options_for_the_new_child(new_context, tmp_path):
    context = new_context(cwd=tmp_path, env={'ISOFIX_MARK': 'kept'},
                          limits=Limits(open_files=77))
    context.start()
    context.restart()
    assert context.call(os.getcwd) == str(tmp_path)
    assert context.call(os.getenv, 'ISOFIX_MARK') == 'kept'
    # Limits(open_files=77): 77 fds besides those the child holds (a few used since).
    free = context.load_module('isofix_introspect').free_fds_below_the_open_files_limit()
    assert 69 <= free <= 77


def test_restart_option_accepts_only_false_or_auto():
    with pytest.raises(ValueError):
        IsolationContext(restart='always')
    with pytest.raises(ValueError):
        IsolationContext(restart=True)


@pytest.fixture
def auto(new_context):
    """A context with restart='auto'."""
    return new_context(restart='auto')


def test_auto_restart_reimports_the_module_after_a_crash_and_the_proxy_carries_on(auto):
    flaky = auto.load_module('isofix_flaky')
    assert flaky.process(1) == 2
    assert flaky.calls == 1
    crashed = auto.pid
    with pytest.raises(ProcessTerminationError) as caught:
        flaky.process(3)
    assert caught.value.signal_name == 'SIGSEGV'
    assert caught.value.pid == crashed
    # The same module proxy, now in a new child that imported the module afresh.
    assert flaky.process(4) == 8
    assert auto.pid not in (None, crashed)
    assert flaky.pid() == auto.pid
    assert flaky.calls == 1
    assert sys.modules['isofix_flaky'] is flaky
    assert auto.load_module('isofix_flaky') is flaky
    assert crashed not in child_pids()


def test_auto_restart_leaves_object_proxies_of_the_dead_child_dead(auto):
    flaky = auto.load_module('isofix_flaky')
    image = flaky.Image('first')
    method = flaky.process
    crashed = auto.pid
    with pytest.raises(ProcessTerminationError):
        flaky.process(0)
    assert flaky.process(1) == 2  # restarted
    with pytest.raises(ClientStateError, match=f'pid {crashed}'):
        image.name
    with pytest.raises(ClientStateError, match=f'pid {crashed}'):
        method(1)
    assert flaky.Image('second').name == 'second'


def test_auto_restart_also_restarts_for_load_module_and_other_modules(auto):
    flaky = auto.load_module('isofix_flaky')
    basic = auto.load_module('isofix_basic')
    basic.increment(5)
    with pytest.raises(ProcessTerminationError):
        flaky.process(3)
    # Another module proxy of the same dead child carries on too, re-imported.
    assert basic.increment() == 1
    assert basic.pid() == auto.pid
    assert auto.load_module('isofix_records').make_record().name == 'first'


def test_auto_restart_after_a_timeout(auto):
    stuck = auto.load_module('isofix_stuck')
    flaky = auto.load_module('isofix_flaky')
    timed_out = auto.pid
    with pytest.raises(CallTimeoutError):
        with timeout(0.3):
            stuck.spin_in_python()
    assert flaky.process(1) == 2
    assert flaky.pid() == auto.pid
    assert auto.pid != timed_out
    assert timed_out not in child_pids()


def test_auto_restart_starts_a_new_child_for_the_context_itself_after_a_crash(auto):
    flaky = auto.load_module('isofix_flaky')
    crashed = auto.pid
    with pytest.raises(ProcessTerminationError):
        flaky.process(3)
    # No module proxy was used since the crash: the context's own methods restart.
    assert auto.load_module('isofix_basic').add(1, 2) == 3
    assert auto.call(os.getpid) == auto.pid != crashed


def test_auto_restart_after_the_child_died_between_calls_reports_it_once_then_carries_on(auto):
    basic = auto.load_module('isofix_basic')
    killed = auto.pid
    os.kill(killed, signal.SIGKILL)
    assert wait_until_exited(killed)
    with pytest.raises(ProcessTerminationError) as caught:
        basic.add(1, 2)
    assert caught.value.signal_name == 'SIGKILL'
    assert caught.value.pid == killed
    assert basic.add(1, 2) == 3
    assert auto.pid != killed


def test_auto_restart_reimports_a_module_imported_from_an_explicit_path(new_context):
    # The module is found only through load_module's `path`, not the context's paths.
    context = new_context(restart='auto', paths=[])
    flaky = context.load_module('isofix_flaky', path=[FIXTURES])
    with pytest.raises(ProcessTerminationError):
        flaky.process(3)
    assert flaky.process(4) == 8


def test_auto_restart_survives_a_hundred_crash_and_continue_iterations(auto):
    children = child_pids()
    flaky = auto.load_module('isofix_flaky')
    results, crashed, pids = {}, [], set()
    for item in range(100):
        try:
            results[item] = flaky.process(item)
        except ProcessTerminationError as error:
            assert error.signal_name == 'SIGSEGV'
            assert error.call == f'isofix_flaky.process({item})'
            crashed.append(item)
            pids.add(error.pid)
    assert crashed == list(range(0, 100, 3))
    assert results == {item: item * 2 for item in range(100) if item % 3}
    assert len(pids) == len(crashed)  # each crash was a child of its own
    assert not auto.alive  # the last item crashed
    assert flaky.process(100) == 200
    # Only the one live child is left; every crashed one was reaped.
    assert child_pids() - children == {auto.pid}
