"""A context lives while its proxies do (DESIGN.md, "What a proxy does"): dropping the
IsolationContext object leaves its child running for the proxies still in use; once the last
proxy and the context are gone the child is terminated and reaped, reference cycles through a
proxy and its context included.

Each case runs in a parent of its own (a subprocess): the contexts here must not be held by a
test fixture, and a child left behind must not leak into the test run."""

import json
import subprocess
import sys
import textwrap

from conftest import FIXTURES

PRELUDE = f'''
import gc, json, os, sys, time, weakref
sys.path.insert(0, {str(FIXTURES.parent)!r})
import process_isolation
from process_isolation import IsolationContext, ClientStateError, ProcessTerminationError
FIXTURES = {str(FIXTURES)!r}

def gone(pid):
    """True once `pid` has been reaped (a zombie still answers kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False

def reaped_within(pid, seconds=10.0):
    """Seconds until `pid` was reaped, or None if it was not within `seconds`."""
    start = time.monotonic()
    while not gone(pid):
        if time.monotonic() - start > seconds:
            return None
        time.sleep(0.005)
    return time.monotonic() - start

result = {{}}
'''


def run_parent(code, timeout=120):
    script = PRELUDE + textwrap.dedent(code) + '\nprint(json.dumps(result))\n'
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_module_proxy_keeps_its_child_after_the_context_object_is_dropped():
    result = run_parent('''
        m = IsolationContext(paths=[FIXTURES]).load_module('isofix_basic')
        gc.collect()
        result['works'] = m.add(2, 3)
        pid = m.pid()
        result['alive_after_drop'] = not gone(pid)
        sys.modules.pop('isofix_basic')  # registered there: that too is a reference to it
        del m
        result['reaped_after'] = reaped_within(pid)  # no gc needed: no cycle is left
    ''')
    assert result['works'] == 5
    assert result['alive_after_drop']
    assert result['reaped_after'] is not None and result['reaped_after'] < 5


def test_any_proxy_keeps_the_context_and_its_options():
    # Not only module proxies: a function's proxy, and the context's own settings (trusted
    # byvalue, the default timeout) live on with it.
    result = run_parent('''
        ctx = IsolationContext(paths=[FIXTURES], trusted=True, timeout=30)
        ref = weakref.ref(ctx)
        basic = ctx.load_module('isofix_basic', _register=False)
        echo, Point = basic.echo, basic.Point
        pid = ctx.pid
        del ctx, basic
        gc.collect()
        result['context_alive'] = ref() is not None
        result['echo'] = echo('x')
        sys.path.insert(0, FIXTURES)  # a trusted byvalue imports the class's module here
        result['byvalue'] = type(process_isolation.byvalue(Point(1, 2))).__name__
        del echo, Point
        result['reaped_after'] = reaped_within(pid)
        result['context_gone'] = ref() is None
    ''')
    assert result['context_alive']
    assert result['echo'] == 'x'
    assert result['byvalue'] == 'Point'  # only a trusted context unpickles it
    assert result['reaped_after'] is not None and result['reaped_after'] < 5
    assert result['context_gone']


def test_a_cycle_through_a_proxy_and_its_context_is_collected_and_the_child_reaped():
    result = run_parent('''
        ctx = IsolationContext(paths=[FIXTURES])
        m = ctx.load_module('isofix_basic', _register=False)
        ctx.module = m             # the context holds its own proxy
        cycle = [m, ctx]
        cycle.append(cycle)        # and a list holds both and itself
        pid = ctx.pid
        del ctx, m, cycle
        result['alive_before_gc'] = not gone(pid)
        gc.collect()
        result['reaped_after'] = reaped_within(pid)
    ''')
    assert result['alive_before_gc']
    assert result['reaped_after'] is not None and result['reaped_after'] < 5


def test_a_restart_auto_context_dropped_by_the_user_still_restarts_its_child():
    result = run_parent('''
        m = IsolationContext(paths=[FIXTURES], restart='auto').load_module(
            'isofix_basic', _register=False)
        gc.collect()
        first = m.pid()
        try:
            m.os._exit(3)
        except ProcessTerminationError as error:
            result['ended'] = error.exit_code
        second = m.pid()                   # a new child, through the context nobody holds
        result['restarted'] = second != first and m.add(1, 2) == 3
        result['first_reaped'] = gone(first)
        del m
        gc.collect()
        result['second_reaped_after'] = reaped_within(second)
    ''')
    assert result['ended'] == 3
    assert result['restarted']
    assert result['first_reaped']
    assert result['second_reaped_after'] is not None and result['second_reaped_after'] < 5


def test_a_registered_module_keeps_its_child_for_later_imports():
    # sys.modules holds the proxy like any other reference: `import` elsewhere still works.
    result = run_parent('''
        def load():
            IsolationContext(paths=[FIXTURES]).load_module('isofix_basic')
        load()
        gc.collect()
        import isofix_basic
        result['works'] = isofix_basic.add(1, 1)
        pid = isofix_basic.pid()
        del isofix_basic
        sys.modules.pop('isofix_basic')
        result['reaped_after'] = reaped_within(pid)
    ''')
    assert result['works'] == 2
    assert result['reaped_after'] is not None and result['reaped_after'] < 5


def test_the_default_context_is_not_ended_when_its_proxies_are_dropped():
    result = run_parent('''
        from process_isolation import default_context, import_isolated
        m = import_isolated('isofix_basic', [FIXTURES])
        pid = m.pid()
        sys.modules.pop('isofix_basic')
        del m
        gc.collect()
        result['same_child'] = default_context().pid == pid and not gone(pid)
        result['works'] = import_isolated('isofix_basic').add(2, 2)
        default_context().terminate()
        result['reaped'] = gone(pid)
    ''')
    assert result['same_child']
    assert result['works'] == 4
    assert result['reaped']


def test_forkserver_and_spawn_children_live_and_end_with_their_proxies():
    result = run_parent('''
        for method in ('forkserver', 'spawn'):
            m = IsolationContext(paths=[FIXTURES], start_method=method).load_module(
                'isofix_basic', _register=False)
            gc.collect()
            result[method + '_works'] = m.add(2, 5)
            pid = m.pid()
            del m
            result[method + '_reaped_after'] = reaped_within(pid)
    ''')
    for method in ('forkserver', 'spawn'):
        assert result[method + '_works'] == 7
        assert result[method + '_reaped_after'] is not None
        assert result[method + '_reaped_after'] < 5
