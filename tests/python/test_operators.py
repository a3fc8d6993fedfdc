"""Tests of the special methods a proxy forwards: every binary operator in its plain, reflected
and in-place form runs its own method in the child with the operands the parent gave; unary
operators, numeric conversions, index, round/floor/ceil/trunc, hash, bool, format and f-strings,
len, reversed, in, item access with slices, iteration and next, generators (send, throw, close),
context managers, __call__, __doc__ and dir().

The fixture objects answer with the name of the method that ran, so a result that a local
fallback computed (rather than the child) would not match."""

import math
import operator
import types

import pytest

from fidelity_helpers import load_local_fixture
from process_isolation import isproxy

# name, operator symbol (None: only a function form), the function form
BINARY = [
    ('add', '+', operator.add),
    ('sub', '-', operator.sub),
    ('mul', '*', operator.mul),
    ('matmul', '@', operator.matmul),
    ('truediv', '/', operator.truediv),
    ('floordiv', '//', operator.floordiv),
    ('mod', '%', operator.mod),
    ('divmod', None, divmod),
    ('pow', '**', operator.pow),
    ('lshift', '<<', operator.lshift),
    ('rshift', '>>', operator.rshift),
    ('and', '&', operator.and_),
    ('xor', '^', operator.xor),
    ('or', '|', operator.or_),
]
IN_PLACE = [(name, symbol) for name, symbol, _ in BINARY if symbol is not None]


def statement(symbol):
    """A function running `x <symbol>= y` as a statement and returning what x is bound to."""
    namespace = {}
    exec(f'def augmented(x, y):\n    x {symbol}= y\n    return x\n', namespace)  # noqa: S102
    return namespace['augmented']


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


# Binary operators


@pytest.mark.parametrize('name, function', [(name, function) for name, _, function in BINARY],
                         ids=[name for name, _, _ in BINARY])
def test_a_binary_operator_runs_its_method_in_the_child(fid, name, function):
    recorder = fid.Recorder('left')
    assert function(recorder, 5) == (f'__{name}__', 'left', 5)
    assert function(recorder, [1, 'two']) == (f'__{name}__', 'left', [1, 'two'])


@pytest.mark.parametrize('name, function', [(name, function) for name, _, function in BINARY],
                         ids=[name for name, _, _ in BINARY])
def test_a_reflected_operator_runs_the_reflected_method_in_the_child(fid, name, function):
    recorder = fid.Recorder('right')
    assert function(5, recorder) == (f'__r{name}__', 'right', 5)
    assert function(None, recorder) == (f'__r{name}__', 'right', None)


@pytest.mark.parametrize('name, function', [(name, function) for name, _, function in BINARY],
                         ids=[name for name, _, _ in BINARY])
def test_a_proxy_operand_reaches_the_child_as_the_original_object(fid, name, function):
    left, right = fid.Recorder('left'), fid.Recorder('right')
    result = function(left, right)
    assert result[:2] == (f'__{name}__', 'left')
    assert result[2] is right


@pytest.mark.parametrize('name, symbol', IN_PLACE, ids=[name for name, _ in IN_PLACE])
def test_an_augmented_assignment_rebinds_to_what_the_childs_in_place_method_returned(
        fid, name, symbol):
    recorder = fid.Recorder('target')
    assert statement(symbol)(recorder, 3) == (f'__i{name}__', 'target', 3)


def test_three_argument_pow_passes_the_modulus_to_the_child(fid):
    assert pow(fid.Recorder('r'), 2, 5) == ('__pow__', 'r', 2, 5)


def test_in_place_operators_keep_identity_rebind_to_new_objects_or_values_as_the_child_says(fid):
    accumulator = fid.Accumulator(1)
    alias = accumulator
    accumulator += 2  # __iadd__ returns self
    assert accumulator is alias
    assert alias.total == 3
    accumulator -= 1  # __isub__ returns a new Accumulator
    assert isproxy(accumulator)
    assert accumulator is not alias
    assert (accumulator.total, alias.total) == (2, 3)
    accumulator *= 4  # __imul__ returns a plain value
    assert accumulator == 8
    accumulator = alias
    accumulator |= 4  # no __ior__: falls back to __or__, a new object
    assert accumulator is not alias
    assert (accumulator.total, alias.total) == (7, 3)


def test_not_implemented_from_the_child_makes_python_try_the_other_operand(fid):
    declines = fid.Declines()
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for \+: 'Declines' and "
                                        r"'int'"):
        declines + 1
    with pytest.raises(TypeError, match=r"for \+: 'int' and 'Declines'"):
        1 + declines
    with pytest.raises(TypeError, match=r"for \+=: 'Declines' and 'int'"):
        declines += 1
    takes_right = fid.TakesRight()
    assert 5 + takes_right == ('radd', 5)
    assert [1] * takes_right == ('rmul', [1])
    with pytest.raises(TypeError):
        takes_right + 5


# Unary operators and conversions


@pytest.mark.parametrize('function, method', [
    (operator.neg, '__neg__'),
    (operator.pos, '__pos__'),
    (operator.invert, '__invert__'),
    (abs, '__abs__'),
    (math.floor, '__floor__'),
    (math.ceil, '__ceil__'),
    (math.trunc, '__trunc__'),
    (round, '__round__'),
], ids=['neg', 'pos', 'invert', 'abs', 'floor', 'ceil', 'trunc', 'round'])
def test_a_unary_operation_runs_its_method_in_the_child(fid, function, method):
    assert function(fid.Recorder('u')) == (method, 'u')


def test_round_passes_its_ndigits_to_the_child(fid):
    assert round(fid.Recorder('r'), 3) == ('__round__', 'r', 3)
    assert round(fid.Recorder('r'), None) == ('__round__', 'r')  # as Python calls it


def test_int_float_and_complex_convert_in_the_child(fid):
    recorder = fid.Recorder()
    assert (int(recorder), float(recorder), complex(recorder)) == (7, 2.5, 1 + 2j)
    assert type(int(recorder)) is int


def test_a_proxy_with_index_is_usable_wherever_python_wants_an_index(fid):
    index = fid.Recorder()  # __index__ is 2
    assert ['a', 'b', 'c'][index] == 'c'
    assert 'xyz'[index:] == 'z'
    assert range(10)[index] == 2
    assert operator.index(index) == 2
    assert (bin(index), hex(index), oct(index)) == ('0b10', '0x2', '0o2')


# hash, bool, format


def test_hash_and_bool_are_the_childs(fid):
    recorder = fid.Recorder()
    assert hash(recorder) == 123456789
    assert not recorder
    assert bool(recorder) is False
    assert {recorder: 'found'}[recorder] == 'found'
    assert bool(fid.SizedOnly(0)) is False  # no __bool__: len() decides
    assert bool(fid.SizedOnly(2)) is True
    assert bool(fid.Plain()) is True  # neither: true, as in Python
    with pytest.raises(ValueError, match='no truth value here'):
        bool(fid.BadBool())


def test_format_and_f_strings_pass_the_format_spec_to_the_child(fid):
    recorder = fid.Recorder('f')
    assert format(recorder) == '<f:>'
    assert format(recorder, '>10') == '<f:>10>'
    assert f'{recorder:^{5}x}' == '<f:^5x>'
    assert f'{recorder!r:>15}' == "  Recorder('f')"
    assert '{0:spec} and {0}'.format(recorder) == '<f:spec> and <f:>'


# Containers


def test_len_reversed_and_in_run_in_the_child(fid):
    box = fid.Box(1, 2, 3)
    assert len(box) == 3
    assert list(reversed(box)) == [3, 2, 1]
    assert 2 in box
    assert 9 not in box
    assert box.log == [('reversed',), ('contains', 2), ('contains', 9)]


def test_item_access_passes_slices_and_values_to_the_child(fid):
    box = fid.Box(0, 1, 2, 3, 4, 5)
    assert box[-1] == 5
    assert box[1:5:2] == [1, 3]
    assert box[::-2] == [5, 3, 1]
    box[1:3] = ['x']
    del box[::2]
    assert box.log == [('set', slice(1, 3, None), ['x']), ('del', slice(None, None, 2))]
    assert list(box) == ['x', 4]
    with pytest.raises(IndexError):
        box[10]


def test_partial_sequence_protocols_work_as_in_python(fid):
    only_getitem = fid.SequenceOnly('a', 'b')
    assert list(only_getitem) == ['a', 'b']  # the old sequence protocol, through __getitem__
    assert 'b' in only_getitem
    with pytest.raises(TypeError, match="has no len"):
        len(only_getitem)
    assert list(reversed(fid.SizedSequence(1, 2, 3))) == [3, 2, 1]
    assert 2 in fid.IterableOnly(1, 2)
    assert 5 not in fid.IterableOnly(1, 2)


def test_next_advances_a_remote_iterator_and_honours_the_default(fid):
    ticker = fid.Ticker(3)
    assert iter(ticker) is ticker
    assert next(ticker) == 1
    assert ticker.count == 1
    assert list(ticker) == [2, 3]
    assert next(ticker, 'default') == 'default'
    with pytest.raises(StopIteration):
        next(ticker)


# Generators


def test_a_generator_answers_send_throw_and_close_in_the_child(fid):
    fid.clear_events()
    talker = fid.talker()
    assert next(talker) == 0
    assert talker.send('a') == 1
    assert talker.send(['b']) == 2
    assert talker.throw(ValueError('thrown', 1)) == 'recovered'
    assert next(talker) == 2
    talker.close()
    assert fid.events == [('caught', 'ValueError', ('thrown', 1)), ('closed', ['a', ['b']])]
    with pytest.raises(StopIteration):
        next(talker)


def test_an_exception_thrown_into_a_generator_and_not_caught_comes_back(fid):
    fid.clear_events()
    talker = fid.talker()
    next(talker)
    with pytest.raises(KeyError) as caught:
        talker.throw(KeyError('not caught'))
    assert caught.value.args == ('not caught',)
    assert fid.events == [('closed', [])]  # the generator's finally ran, in the child
    with pytest.raises(StopIteration):
        next(talker)
    with pytest.raises(TypeError):
        fid.talker().send('not None before the start')


class ParentError(Exception):
    """An exception class only the parent has."""


@pytest.mark.parametrize('make', [
    lambda fid: ParentError('from the parent'),
    lambda fid: fid.E1('mirrored, made here'),
], ids=['parent-class', 'mirrored-class'])
def test_a_generator_accepts_any_exception_instance_thrown_into_it(fid, make):
    error = make(fid)
    talker = fid.talker()
    next(talker)
    with pytest.raises(type(error)) as caught:
        talker.throw(error)  # the talker does not catch it: it comes back out
    assert type(caught.value) is type(error)
    assert caught.value.args == error.args


# Context managers


def test_exit_receives_the_exception_type_value_and_traceback(fid):
    manager = fid.Manager(False)
    with pytest.raises(KeyError) as caught:
        with manager as entered:
            assert entered == 'entered'
            raise KeyError('inside')
    assert caught.value.args == ('inside',)
    (seen,) = manager.exits
    assert seen['type'] is KeyError
    assert seen['type_name'] == 'KeyError'
    assert type(seen['value']) is KeyError and seen['value'].args == ('inside',)
    assert seen['is_exception_class'] and seen['value_is_instance']
    traceback = seen['tb']  # the parent's own traceback, come home
    assert isinstance(traceback, types.TracebackType)
    this_test = test_exit_receives_the_exception_type_value_and_traceback
    assert traceback.tb_frame.f_code is this_test.__code__


def test_exit_receives_nones_when_the_block_ends_normally(fid):
    manager = fid.Manager(False)
    with manager:
        pass
    assert manager.entered == 1
    (seen,) = manager.exits
    assert (seen['type'], seen['value'], seen['tb']) == (None, None, None)


@pytest.mark.parametrize('result, suppressed', [
    (True, True), ('truthy', True), ([1], True), (False, False), (0, False), (None, False),
    ('remote falsy object', False),
], ids=['True', 'truthy-str', 'nonempty-list', 'False', 'zero', 'None', 'remote-falsy'])
def test_the_value_exit_returns_decides_whether_the_exception_is_suppressed(fid, result,
                                                                           suppressed):
    if result == 'remote falsy object':
        result = fid.make_falsy()  # crosses back as a proxy: its bool() is asked of the child
    manager = fid.Manager(result)
    try:
        with manager:
            raise LookupError('inside')
    except LookupError:
        propagated = True
    else:
        propagated = False
    assert propagated is not suppressed
    assert manager.exits[0]['type_name'] == 'LookupError'


def test_exit_receives_a_parent_exception_whose_value_is_an_instance_of_its_type(fid):
    class ParentError(Exception):
        pass

    manager = fid.Manager(True)
    with manager:
        raise ParentError('from the parent')
    (seen,) = manager.exits
    assert seen['type'] is ParentError
    assert seen['type_name'] == 'ParentError'
    assert seen['is_exception_class']
    # In the child, isinstance(exc, exc_type) must hold, as it does for every __exit__ Python
    # calls (contextlib and friends rely on it).
    assert seen['value_is_instance']


# __call__, __doc__, dir()


def test_call_runs_in_the_child_and_non_callables_are_not_callable(fid):
    caller = fid.Caller()
    assert caller(1, 'two', key=[3]) == ('called', (1, 'two'), {'key': [3]})
    assert caller() == ('called', (), {})
    with pytest.raises(TypeError, match="'Plain' object is not callable"):
        fid.Plain()()


def test_doc_and_dir_are_the_childs(fid):
    local_fid = load_local_fixture()
    recorder = fid.Recorder('d')
    assert recorder.__doc__ == local_fid.Recorder.__doc__
    assert fid.Recorder.__doc__ == local_fid.Recorder.__doc__
    assert fid.Recorder.__add__.__doc__ is None
    assert fid.lazy.__doc__ == local_fid.lazy.__doc__
    assert dir(recorder) == dir(local_fid.Recorder('d'))
    recorder.extra_attribute = 1
    assert 'extra_attribute' in dir(recorder)
