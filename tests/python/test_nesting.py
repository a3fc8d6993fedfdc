"""Tests of nested callbacks: the child calls a parent function that calls the child again, 50
levels deep, without deadlock; exceptions from the bottom travel all the way up; parent objects
passed into the child keep their identity whenever they come back."""

import threading

import pytest

import process_isolation

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
