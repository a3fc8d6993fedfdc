"""The default context recovers from a crash (issue 12, item 9): one segfault in one isolated
module no longer makes every other isolated module and every later import_isolated raise
ClientStateError. Module proxies come back in a new child (as with restart='auto'), objects of
the dead child raise ClientStateError naming the crash (signal and call), and the repr of a
dead proxy is text saying so instead of an error."""

import subprocess
import sys
import textwrap

import pytest

from process_isolation import (ClientStateError, ProcessTerminationError, default_context,
                               import_isolated, timeout)

from conftest import CALL_DEADLINE, FIXTURES, child_pids
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)

pytestmark = pytest.mark.usefixtures('no_core_files')
SCRIPT_SECONDS = 120


@pytest.fixture
def deadline():
    """Every call of the test into the default context (which has no timeout) has one."""
    with timeout(CALL_DEADLINE):
        yield


@pytest.fixture
def crashed(default_context_owned, deadline):
    """Modules and objects of the default context's child, and the crash that ended it:
    (json, basic, segfault, decoder, point, ProcessTerminationError)."""
    json = import_isolated('json')
    basic = import_isolated('isofix_basic', [FIXTURES])
    segfault = import_isolated('isofix_segfault', [FIXTURES])
    decoder = json.JSONDecoder()
    point = basic.Point(1, 2)
    assert decoder.decode('[1]') == [1] and point.x == 1
    basic.increment(5)
    with pytest.raises(ProcessTerminationError) as caught:
        segfault.crash()
    assert caught.value.signal_name == 'SIGSEGV'
    return json, basic, segfault, decoder, point, caught.value


def test_the_other_modules_of_the_default_context_carry_on_after_a_crash(crashed):
    json, basic, segfault, _, _, crash = crashed
    assert json.dumps([1, 2]) == '[1, 2]'
    assert basic.add(1, 2) == 3
    assert basic.increment() == 1  # imported afresh in a new child
    assert basic.pid() == default_context().pid != crash.pid
    assert crash.pid not in child_pids()  # the crashed child was reaped
    # The crashing module came back too, and crashes again.
    with pytest.raises(ProcessTerminationError) as again:
        segfault.crash()
    assert again.value.signal_name == 'SIGSEGV' and again.value.pid != crash.pid


def test_import_isolated_after_a_crash_starts_a_new_child(crashed):
    crash = crashed[-1]
    records = import_isolated('isofix_records', [FIXTURES])
    assert records.make_record().name == 'first'
    assert default_context().pid not in (None, crash.pid)


def test_import_isolated_after_a_crash_returns_the_same_module_proxies(crashed):
    json, basic, segfault, *_ = crashed
    assert import_isolated('json') is json
    assert import_isolated('isofix_basic', [FIXTURES]) is basic
    assert import_isolated('isofix_segfault', [FIXTURES]) is segfault
    assert basic.add(2, 2) == 4


def test_registered_modules_stay_in_sys_modules_across_a_crash(crashed):
    _, basic, *_ = crashed
    assert not default_context().alive  # the context has seen the crash
    assert sys.modules['isofix_basic'] is basic
    import isofix_basic
    assert isofix_basic is basic
    assert isofix_basic.add(3, 4) == 7


def test_objects_of_the_crashed_child_raise_client_state_error_naming_the_crash(crashed):
    json, basic, _, decoder, point, crash = crashed
    for use in (lambda: decoder.decode('[1]'), lambda: point.x, lambda: str(point)):
        with pytest.raises(ClientStateError) as caught:
            use()
        message = str(caught.value)
        assert f'the isolated child (pid {crash.pid}) has ended (killed by SIGSEGV' in message
        assert 'during isofix_segfault.crash()' in message
        assert 'get the object from them again' in message
    # Objects got again from the modules live in the new child.
    assert json.JSONDecoder().decode('[2]') == [2]
    assert basic.Point(3, 4).x == 3


def test_the_repr_of_a_dead_proxy_says_what_it_was_and_how_its_child_ended(crashed):
    _, basic, _, decoder, point, crash = crashed
    ending = (f'the isolated child (pid {crash.pid}) has ended (killed by SIGSEGV '
              f'(Segmentation fault)) during isofix_segfault.crash()')
    assert repr(decoder) == f'<dead proxy of isolated.json.decoder.JSONDecoder object: {ending}>'
    assert repr(point) == f'<dead proxy of isolated.isofix_basic.Point object: {ending}>'
    # A module proxy is not dead: its repr is the module's, in the new child.
    assert repr(basic).startswith("<module 'isofix_basic' from ")


def test_the_repr_of_a_dead_proxy_of_a_labelled_object_names_it(crashed):
    _, _, segfault, *_ = crashed
    crash_function = segfault.crash  # a new proxy, from the new child
    pid = default_context().pid
    with pytest.raises(ProcessTerminationError):
        crash_function()
    assert repr(crash_function) == (
        f'<dead proxy of isofix_segfault.crash: the isolated child (pid {pid}) has ended '
        f'(killed by SIGSEGV (Segmentation fault)) during isofix_segfault.crash()>')


def test_after_terminate_the_default_contexts_modules_stay_down_until_it_is_used_again(
        default_context_owned, deadline):
    basic = import_isolated('isofix_basic', [FIXTURES])
    pid = default_context_owned.pid
    default_context_owned.terminate()
    with pytest.raises(ClientStateError, match='restart its context'):
        basic.add(1, 2)
    assert repr(basic) == (f'<dead proxy of isofix_basic: the isolated child (pid {pid}) was '
                           f'terminated>')
    assert default_context_owned.pid is None  # nothing restarted it
    fresh = import_isolated('isofix_basic', [FIXTURES])
    assert fresh.add(1, 2) == 3 and fresh is not basic


def test_a_program_whose_isolated_module_crashes_goes_on_with_its_other_modules():
    # As a user writes it: the README's example, then more work with other isolated modules.
    script = textwrap.dedent(f'''
        import sys
        from process_isolation import import_isolated, ProcessTerminationError, timeout
        with timeout(60):
            buggy = import_isolated('isofix_segfault', [{str(FIXTURES)!r}])
            colorsys = import_isolated('colorsys')
            decoder = import_isolated('json').JSONDecoder()
            try:
                buggy.crash()
            except ProcessTerminationError as error:
                print('crashed:', error.signal_name)
            print('hls:', colorsys.rgb_to_hls(1, 0, 0))
            import colorsys as again
            print('same module:', again is colorsys)
            print('dead:', repr(decoder).startswith('<dead proxy of '))
            print('fresh:', import_isolated('json').JSONDecoder().decode('[1]'))
    ''')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=SCRIPT_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ['crashed: SIGSEGV', 'hls: (0.0, 0.5, 1.0)',
                                        'same module: True', 'dead: True', 'fresh: [1]']
