"""Tests of exceptions raised in the child: builtin ones come back as the same class with the same
args, classes of the child become local classes of the same name, and the child's traceback is
attached as __cause__."""

import errno

import pytest

from process_isolation import isproxy
from process_isolation.errors import RemoteTraceback


@pytest.fixture
def builtin_error(ctx):
    return ctx.load_module('isofix_builtin_error')


@pytest.fixture
def custom_error(ctx):
    return ctx.load_module('isofix_custom_error')


@pytest.mark.parametrize('error_class, args', [
    (KeyError, ('missing',)),
    (ValueError, ('bad value', 3, [4])),
    (TypeError, ()),
    (RuntimeError, ('text', None, {'a': (1,)})),
    (IndexError, (10,)),
    (NotImplementedError, ('later',)),
    (LookupError, ('l',)),
    (PermissionError, (errno.EACCES, 'denied')),
], ids=lambda item: item.__name__ if isinstance(item, type) else None)
def test_a_builtin_exception_is_raised_as_the_same_class_with_the_same_args(
        builtin_error, error_class, args):
    with pytest.raises(error_class) as caught:
        builtin_error.fail_with(error_class, *args)
    assert type(caught.value) is error_class
    assert caught.value.args == args


def test_a_builtin_exception_carries_the_childs_traceback_as_its_cause(builtin_error):
    with pytest.raises(ZeroDivisionError) as caught:
        builtin_error.divide_by_zero()
    assert caught.value.args == ('division by zero',)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert 'isofix_builtin_error.py' in cause.text
    assert 'divide_by_zero' in cause.text
    assert 'return 1 / 0' in cause.text
    assert 'ZeroDivisionError: division by zero' in cause.text
    assert 'divide_by_zero' in str(cause)


def test_a_key_error_from_the_child_is_a_key_error_here(builtin_error):
    with pytest.raises(KeyError) as caught:
        builtin_error.missing_key()
    assert caught.value.args == ('no such key',)
    assert "{}['no such key']" in caught.value.__cause__.text


def test_an_os_error_keeps_its_subclass_and_errno(builtin_error, tmp_path):
    missing = str(tmp_path / 'missing.txt')
    with pytest.raises(FileNotFoundError) as caught:
        builtin_error.open_missing(missing)
    assert caught.value.errno == errno.ENOENT
    assert caught.value.args == (errno.ENOENT, 'No such file or directory')


def test_a_stop_iteration_ends_iteration_without_a_traceback(basic):
    generator = basic.countdown(1)
    assert next(generator) == 1
    with pytest.raises(StopIteration) as caught:
        next(generator)
    assert type(caught.value) is StopIteration


def test_a_missing_attribute_is_an_attribute_error(basic):
    with pytest.raises(AttributeError) as caught:
        basic.no_such_attribute
    assert 'no_such_attribute' in str(caught.value)


def test_a_custom_exception_class_becomes_a_real_local_class_of_the_same_name(custom_error):
    error_class = custom_error.CustomError
    assert isinstance(error_class, type)
    assert not isproxy(error_class)
    assert error_class.__name__ == 'CustomError'
    assert error_class.__qualname__ == 'CustomError'
    assert error_class.__module__ == 'isofix_custom_error'
    assert error_class.__doc__ == 'Raised on purpose by fail().'
    assert issubclass(error_class, ValueError)
    assert custom_error.CustomError is error_class
    assert issubclass(custom_error.DetailedError, error_class)


def test_except_catches_a_custom_exception_by_its_remote_class(custom_error):
    try:
        custom_error.fail('detail')
    except custom_error.CustomError as error:
        caught = error
    assert type(caught) is custom_error.CustomError
    assert caught.args == ('detail', 7)
    assert isinstance(caught.__cause__, RemoteTraceback)
    assert 'isofix_custom_error.py' in caught.__cause__.text
    assert 'raise CustomError(detail, 7)' in caught.__cause__.text


def test_pytest_raises_catches_a_custom_exception(custom_error):
    with pytest.raises(custom_error.CustomError, match='detail'):
        custom_error.fail('detail')
    with pytest.raises(ValueError):  # the nearest builtin base
        custom_error.fail('detail')


def test_a_custom_exception_subclass_is_caught_by_its_base(custom_error):
    with pytest.raises(custom_error.CustomError) as caught:
        custom_error.fail_detailed()
    assert type(caught.value) is custom_error.DetailedError
    assert caught.value.args == ('detailed',)


def test_attributes_of_a_custom_exception_can_be_read(custom_error):
    # The wire schema sends the exception object by reference (Error.exception) "so its other
    # attributes can be read".
    with pytest.raises(custom_error.CodedError) as caught:
        custom_error.fail_coded(404)
    assert caught.value.args == ('coded', 404)
    assert caught.value.code == 404


def test_the_context_is_usable_after_exceptions(custom_error, basic):
    for _ in range(3):
        with pytest.raises(custom_error.CustomError):
            custom_error.fail('again')
    assert basic.add(2, 2) == 4
