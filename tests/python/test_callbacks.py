"""Tests of callbacks: parent objects passed to the child cross by reference, and the child calls
back into the parent, nested inside the call that passed them."""

import os

import pytest

from transport_helpers import both_transports  # noqa: F401 (each test per transport)


class ParentError(Exception):
    """An exception class only the parent has."""


def test_the_child_calls_a_parent_lambda(basic):
    assert basic.call_with(lambda x: x * 2, 21) == 42
    assert basic.call_with(lambda *a, **k: (a, k), 1, 'two', key=[3]) == ((1, 'two'),
                                                                         {'key': [3]})


def test_a_callback_runs_in_the_parent_process(basic):
    assert basic.call_with(os.getpid) == os.getpid()
    assert basic.call_with(lambda: basic.pid()) != os.getpid()


def test_a_callback_sees_and_changes_parent_state(basic):
    seen = []
    assert basic.call_with(seen.append, 'from the child') is None
    assert seen == ['from the child']


def test_a_parent_callback_can_call_back_into_the_child(basic):
    assert basic.call_with(lambda: basic.increment(5)) == 5
    assert basic.counter == 5


def test_callbacks_nest_several_levels_deep(basic):
    def descend(n):
        if n == 0:
            return 'bottom'
        return basic.count_down_through(descend, n - 1)

    assert basic.count_down_through(descend, 4) == [4, [3, [2, [1, [0, 'bottom']]]]]


def test_an_exception_in_a_parent_callback_reaches_the_child_as_the_same_class(basic):
    def fail():
        raise KeyError('from the parent')

    assert basic.call_and_catch(fail) == ('KeyError', ('from the parent',), True)


def test_an_exception_in_a_parent_callback_comes_back_through_the_child(basic):
    def fail():
        raise KeyError('from the parent')

    with pytest.raises(KeyError) as caught:
        basic.call_with(fail)
    assert caught.value.args == ('from the parent',)
    assert 'call_with' in caught.value.__cause__.text  # the child's frames are in its traceback
    assert basic.add(1, 1) == 2


def test_a_parent_exception_class_comes_back_as_itself(basic):
    def fail():
        raise ParentError('only here', 1)

    with pytest.raises(ParentError) as caught:
        basic.call_with(fail)
    assert type(caught.value) is ParentError
    assert caught.value.args == ('only here', 1)
    assert basic.call_and_catch(fail) == ('ParentError', ('only here', 1), False)


def test_a_parent_object_passed_to_the_child_comes_back_as_itself(basic):
    marker = object()
    assert basic.echo(marker) is marker
    assert basic.same(marker, marker)
    assert basic.call_with(lambda obj: obj is marker, marker)


def test_a_callable_parent_object_kept_by_the_child_can_be_called_later(basic):
    calls = []

    class Recorder:
        def __call__(self, value):
            calls.append(value)
            return len(calls)

    assert basic.keep(Recorder()) == 1
    assert calls == []
    assert basic.call_kept('later') == [1]
    assert basic.call_kept('again') == [2]
    assert calls == ['later', 'again']
