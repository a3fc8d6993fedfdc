"""Tests of nested callbacks: the child calls a parent function that calls the child again, 50
levels deep, without deadlock; exceptions from the bottom travel all the way up; parent objects
passed into the child keep their identity whenever they come back. Nesting without end is a
RecursionError in the innermost call, whichever side runs out first and whatever its thread's
stack size, and both processes go on (issue 11)."""

import json
import resource
import subprocess
import sys
import textwrap
import threading

import pytest

import process_isolation
from conftest import FIXTURES

DEPTH = 50
DEADLINE = 30.0  # seconds for a whole descent: a deadlock fails the test instead of hanging it


class Trail:
    """A parent object the child calls back at every level (crosses by reference)."""

    def __init__(self):
        self.visits = []

    def visit(self, depth, token):
        self.visits.append((depth, token, threading.get_ident()))
        return depth


class ParentError(Exception):
    """Raised at the bottom of a descent by the parent."""


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


def test_callbacks_nest_fifty_levels_deep(fid):
    token = object()
    trail = Trail()

    def down(depth, passed):
        assert passed is token  # the parent object came back as itself at every level
        trail.visit(depth, passed)
        if depth == 0:
            return 'bottom'
        return fid.descend(down, depth, passed)

    with process_isolation.timeout(DEADLINE):
        result = down(DEPTH, token)
    for depth in range(DEPTH, 0, -1):
        assert result[0] == depth
        result = result[1]
    assert result == 'bottom'
    assert [depth for depth, _, _ in trail.visits] == list(range(DEPTH, -1, -1))
    assert all(passed is token for _, passed, _ in trail.visits)
    assert {thread for _, _, thread in trail.visits} == {threading.get_ident()}


def test_the_child_can_call_a_parent_object_it_was_given_at_every_level(fid):
    trail = Trail()
    token = object()

    def down(depth, passed):
        if depth == 0:
            return fid.call_with(trail.visit, 0, passed)
        fid.call_with(trail.visit, depth, passed)
        return fid.descend(down, depth, passed)

    with process_isolation.timeout(DEADLINE):
        down(DEPTH, token)
    assert [depth for depth, _, _ in trail.visits] == list(range(DEPTH, -1, -1))
    assert all(passed is token for _, passed, _ in trail.visits)


def test_a_child_exception_at_the_bottom_travels_up_fifty_levels(fid):
    def down(depth, token):
        if depth == 0:
            fid.raise_e2(99)
        return fid.descend(down, depth, token)

    with process_isolation.timeout(DEADLINE):
        with pytest.raises(fid.E1) as caught:
            down(DEPTH, 'token')
    assert type(caught.value) is fid.E2
    assert caught.value.code == 99
    assert fid.pid() == fid.pid()  # and the connection is in a usable state afterwards


def test_a_parent_exception_at_the_bottom_travels_up_fifty_levels(fid):
    token = object()

    def down(depth, passed):
        if depth == 0:
            raise ParentError('bottom', passed)
        return fid.descend(down, depth, passed)

    with process_isolation.timeout(DEADLINE):
        with pytest.raises(ParentError) as caught:
            down(DEPTH, token)
    assert type(caught.value) is ParentError
    assert caught.value.args[0] == 'bottom'
    assert caught.value.args[1] is token


def test_an_exception_caught_half_way_down_leaves_the_outer_levels_working(fid):
    def down(depth, token):
        if depth == 0:
            raise KeyError('bottom')
        if depth == DEPTH // 2:
            try:
                return fid.descend(down, depth, token)
            except KeyError as error:
                return ['caught at', depth, error.args]
        return fid.descend(down, depth, token)

    with process_isolation.timeout(DEADLINE):
        result = down(DEPTH, None)
    for depth in range(DEPTH, DEPTH // 2, -1):
        assert result[0] == depth
        result = result[1]
    assert result == ['caught at', DEPTH // 2, ('bottom',)]


def test_parent_objects_kept_by_the_child_come_back_as_themselves(fid):
    first, second = object(), [object()]  # a list crosses by value; its items by reference
    fid.keep('first', first)
    fid.keep('again', first)
    fid.keep('second', second)
    assert fid.kept('first') is first
    assert fid.kept_pair_is_same('first', 'again')
    kept_second = fid.kept('second')
    assert kept_second == second and kept_second is not second
    assert kept_second[0] is second[0]
    assert fid.same(first, first)
    assert not fid.same(first, second[0])
    assert fid.call_with(lambda obj: obj, first) is first
    fid.forget_kept()


# Runaway nesting. Each case runs in a parent of its own (a subprocess): a regression overflows a
# C stack, and that must fail the test, not kill pytest.

RUNAWAY = f'''
import functools, json, sys, threading, traceback
sys.path.insert(0, {str(FIXTURES)!r})
from process_isolation import IsolationContext

def main(recursion_limit, parent_stack, child_stack, shape):
    if recursion_limit:
        sys.setrecursionlimit(recursion_limit)
    ctx = IsolationContext(paths=[{str(FIXTURES)!r}], timeout=120)
    # The child runs on a copy of the stack of the thread that forked it.
    on_thread(child_stack, ctx.start)
    meet = ctx.load_module('isofix_meet')
    pid = ctx.pid
    report = {{}}

    def runaway():
        if shape == 'python':
            # Plain Python on both sides: the child calls back, the parent calls the child again.
            deepest = [0]

            def down(depth):
                deepest[0] = depth
                return meet.descend(down, depth)
            start = down
        else:
            # C code only on both sides (a partial in the parent, an operator.methodcaller in
            # the child), calling each other: nothing in either interpreter counts Python frames.
            caller = meet.caller()
            start = functools.partial(caller)
            start.__setstate__((caller, (start,), {{}}, None))
        try:
            start(0) if shape == 'python' else start()
            report['outcome'] = 'returned'
        except RecursionError as error:
            report['outcome'] = 'RecursionError'
            report['message'] = str(error)
            text = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
            report['traceback_bytes'] = len(text.encode())
            report['traceback_cut'] = 'bytes of this traceback left out' in text
        report['depth'] = deepest[0] if shape == 'python' else None
        # Both processes go on: a call, and a call with a callback, from this very thread.
        report['plain'] = meet.annotated(3)['x']
        try:
            report['after'] = meet.descend(lambda depth: depth * 10, 4)
        except RecursionError as error:
            report['after'] = str(error)
    on_thread(parent_stack, runaway)
    report['same_child'] = ctx.pid == pid and ctx.alive
    ctx.terminate()
    print(json.dumps(report))

def on_thread(stack_size, function):
    if not stack_size:
        return function()
    failures = []

    def run():
        try:
            function()
        except BaseException as error:
            failures.append(error)
    threading.stack_size(stack_size)
    thread = threading.Thread(target=run)
    thread.start()
    threading.stack_size(0)
    thread.join(300)
    assert not thread.is_alive(), 'the thread did not finish'
    if failures:
        raise failures[0]

main(*json.loads(sys.argv[1]))
'''

MAIN_STACK = 2 * 1024 * 1024  # the parent's main thread: RLIMIT_STACK of the subprocess


def run_runaway(recursion_limit=0, parent_stack=0, child_stack=0, shape='python', after=50,
                main_stack=MAIN_STACK):
    def small_main_stack():
        resource.setrlimit(resource.RLIMIT_STACK, (main_stack, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, '-c', RUNAWAY, json.dumps([recursion_limit, parent_stack, child_stack,
                                                    shape])],
        capture_output=True, text=True, timeout=300, preexec_fn=small_main_stack)
    assert done.returncode == 0, (f'the parent ended with status {done.returncode}:\n'
                                  f'{done.stderr[-4000:]}')
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['outcome'] == 'RecursionError', report
    assert report['plain'] == 3
    assert report['after'] == after or str(report['after']).startswith(str(after))
    assert report['same_child'] is True
    return report


def test_runaway_nesting_of_plain_python_is_a_recursion_error_and_both_processes_go_on():
    report = run_runaway()
    # Python's own limit (1000 frames) comes first here.
    assert 'maximum recursion depth' in report['message'] or 'nest' in report['message']


def test_with_a_raised_recursion_limit_the_parents_c_stack_still_ends_it():
    report = run_runaway(recursion_limit=1_000_000)
    assert 'KiB left of the thread' in report['message'], report['message']
    assert 'the two processes call each other without end' in report['message']
    assert report['depth'] > 50


def test_the_traceback_of_a_runaway_nesting_stays_bounded_on_a_big_stack():
    # On an 8 MiB main thread the nesting goes about 1,200 levels deep. Each level's traceback
    # holds the one below it, so unbounded the outermost error carried all of them (and their
    # formatting on the way up took about 19 s); each is cut to 64 KiB, keeping its ends.
    # (From 3.12 on the interpreter's own C recursion limit ends it first, at about 370 levels.)
    report = run_runaway(recursion_limit=1_000_000, main_stack=8 * 1024 * 1024)
    assert report['depth'] > 300, report['depth']
    assert report['traceback_cut'] is True
    assert report['traceback_bytes'] < 3 * 64 * 1024, report['traceback_bytes']


@pytest.mark.parametrize('stack_kib', [1024, 256, 64])
def test_a_parent_thread_with_a_small_stack_ends_runaway_nesting_as_a_recursion_error(stack_kib):
    report = run_runaway(recursion_limit=1_000_000, parent_stack=stack_kib * 1024)
    assert f"of the thread's {stack_kib} KiB C stack" in report['message'], report['message']


def test_a_child_with_a_small_stack_refuses_the_level_too_deep_for_it():
    # The child forked from a thread of 256 KiB runs on that much stack; the parent's has 2 MiB.
    report = run_runaway(recursion_limit=1_000_000, child_stack=256 * 1024)
    assert "of the thread's 256 KiB C stack" in report['message'], report['message']


@pytest.mark.parametrize('recursion_limit', [0, 1_000_000], ids=['default-limit', 'raised-limit'])
def test_runaway_nesting_of_c_code_alone_is_a_recursion_error(recursion_limit):
    run_runaway(recursion_limit=recursion_limit, shape='c')


def test_a_plain_call_works_from_a_thread_whose_stack_is_too_small_to_nest():
    # 32 KiB, the least threading.stack_size() takes, is too small for even one callback (the
    # guard keeps 24 KiB free); the outermost call is never refused.
    refused = ("a callback from the other process would nest 2 levels deep between the parent "
               "and its isolated child, with 20 KiB left of the thread's 32 KiB C stack")
    report = run_runaway(recursion_limit=1_000_000, parent_stack=32 * 1024, after=refused)
    assert report['message'].startswith(refused), report['message']
