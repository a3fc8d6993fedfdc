"""Tests of exception hierarchies across the connection: the child's hierarchy (E1; E2(E1,
KeyError); E3(E2)) becomes local classes with the same hierarchy, so every except clause that
would catch the exception in the child catches it here; its attributes are read from the child;
and exceptions raised in callbacks travel back through nested calls, in both directions, with
their types intact."""

import pytest

from fidelity_helpers import load_local_fixture
from process_isolation import isproxy


class ParentError(LookupError):
    """An exception class only the parent has."""


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


def test_the_childs_exception_classes_become_local_classes_with_the_same_hierarchy(fid):
    local = load_local_fixture()
    for name in ('E1', 'E2', 'E3'):
        mirrored = getattr(fid, name)
        assert isinstance(mirrored, type) and not isproxy(mirrored)
        assert [cls.__name__ for cls in mirrored.__mro__] == [
            cls.__name__ for cls in getattr(local, name).__mro__]
        assert mirrored.__doc__ == getattr(local, name).__doc__
    assert issubclass(fid.E2, fid.E1) and issubclass(fid.E2, KeyError)
    assert issubclass(fid.E3, fid.E2) and issubclass(fid.E3, LookupError)
    assert not issubclass(fid.E1, KeyError)
    assert fid.E2.__bases__ == (fid.E1, KeyError)


@pytest.mark.parametrize('catcher', ['E1', 'E2', KeyError, LookupError, Exception],
                         ids=['E1', 'E2', 'KeyError', 'LookupError', 'Exception'])
def test_every_except_clause_that_matches_in_the_child_catches_here(fid, catcher):
    catcher = getattr(fid, catcher) if isinstance(catcher, str) else catcher
    try:
        fid.raise_e2(5)
    except catcher as error:
        caught = error
    assert type(caught) is fid.E2
    assert caught.args == ('boom', 5)


def test_an_except_clause_for_a_subclass_does_not_catch_the_base(fid):
    with pytest.raises(fid.E2) as caught:
        try:
            fid.raise_e2(1)
        except fid.E3:
            pytest.fail('except E3 caught an E2')
    assert type(caught.value) is fid.E2
    with pytest.raises(fid.E2) as caught:  # and E3 is caught by its bases
        fid.raise_e3()
    assert type(caught.value) is fid.E3


def test_the_attributes_of_a_child_exception_are_read_from_the_child(fid):
    with pytest.raises(fid.E1) as caught:
        fid.raise_e2(404, payload=[1, {'two': 2}])
    error = caught.value
    assert error.code == 404
    assert error.payload == [1, {'two': 2}]
    assert error.extra == 'set after construction'
    assert isproxy(error.thing)
    assert error.thing.name == 'thing inside E2'
    assert error.describe() == 'E2 with code 404'
    with pytest.raises(AttributeError):
        error.no_such_attribute


def test_str_of_a_child_exception_is_the_childs_str(fid):
    local = load_local_fixture()
    with pytest.raises(fid.Worded) as caught:
        fid.raise_worded('hello')
    assert caught.value.args == ('hello',)
    assert str(caught.value) == str(local.Worded('hello')) == 'worded: hello'


def test_an_exception_object_the_child_returns_is_an_instance_of_its_classes(fid):
    # Not raised: returned as a value (as concurrent.futures.Future.exception() does).
    error = fid.call_with(fid.E2, 'returned', 7)
    assert error.args == ('returned', 7)
    assert isinstance(error, fid.E2)
    assert isinstance(error, fid.E1)
    assert isinstance(error, KeyError)


# Callbacks: both directions, through nested calls


def test_a_mirrored_exception_raised_by_a_parent_callback_is_the_real_class_in_the_child(fid):
    def callback():
        raise fid.E2('from the parent', 9)

    report = fid.classify(callback)
    assert report == {'name': 'E2', 'E1': True, 'E2': True, 'E3': False, 'KeyError': True,
                      'LookupError': True, 'args': ('from the parent', 9), 'code': 9}


def test_a_mirrored_exception_raised_by_a_parent_callback_comes_back_as_itself(fid):
    def callback():
        raise fid.E3('round trip', 3)

    with pytest.raises(fid.E1) as caught:
        fid.call_and_reraise(callback)
    assert type(caught.value) is fid.E3
    assert caught.value.args == ('round trip', 3)
    assert caught.value.code == 3  # E3's __init__ ran in the child


def test_a_parent_exception_class_crosses_into_the_child_and_back(fid):
    def callback():
        raise ParentError('parent only', [1])

    report = fid.classify(callback)
    assert report['name'] == 'ParentError'
    assert report['LookupError'] and not report['KeyError'] and not report['E1']
    assert report['args'] == ('parent only', [1])
    with pytest.raises(ParentError) as caught:
        fid.call_and_reraise(callback)
    assert type(caught.value) is ParentError
    assert caught.value.args == ('parent only', [1])
    with pytest.raises(ParentError):  # raised by the child from the parent's class
        fid.raise_class(ParentError, 'made in the child')


def test_a_child_exception_crosses_a_parent_callback_in_the_middle(fid):
    # parent -> child (call_and_reraise) -> parent callback -> child (raise_e2) raises; nothing
    # catches it on the way.
    def callback():
        fid.raise_e2(21)

    with pytest.raises(KeyError) as caught:
        fid.call_and_reraise(callback)
    assert type(caught.value) is fid.E2
    assert caught.value.code == 21
    report = fid.classify(fid.call_and_reraise, callback)
    assert (report['name'], report['E1'], report['KeyError'], report['code']) == ('E2', True,
                                                                                  True, 21)


def test_builtin_exceptions_keep_their_class_through_nested_callbacks(fid):
    def innermost():
        raise ZeroDivisionError('deep')

    def middle():
        return fid.call_and_reraise(innermost)

    with pytest.raises(ZeroDivisionError) as caught:
        fid.call_and_reraise(middle)
    assert type(caught.value) is ZeroDivisionError
    assert caught.value.args == ('deep',)
    assert fid.classify(middle)['name'] == 'ZeroDivisionError'
