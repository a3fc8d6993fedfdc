"""Tests of values crossing between parent and child: builtin kinds by value with their exact
types, everything else (subclasses of builtins too) by reference, and values that cannot cross."""

import collections
import math

import pytest

from process_isolation import isproxy

BY_VALUE = [
    None, True, False,
    0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, -(2**64), 2**200 + 1, -(2**200),
    10**1000,
    0.0, -0.0, 1.5, -2.25e-300, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
    1 + 2j, complex(-0.0, math.inf), complex(math.nan, -1.0),
    '', 'plain', 'h\u00e9llo \u4e16\u754c \U0001F40D', 'nul\x00inside\x00', '\x00', '\ud800',
    'a\udcffb\udfff', '\U0010ffff',
    b'', b'\x00\xff\x80 bytes', bytearray(), bytearray(b'\x00mutable\xff'),
    [], [1, 'two', 3.0, None], (), (1,), ('a', (2, (3, ()))),
    {}, {'a': 1, 2: 'b', (3, 4): None, None: [], 2.5: b''},
    set(), {1, 'a', (2, 3), None, 2.5}, frozenset(), frozenset({1, frozenset({2, 'x'})}),
    {'nested': [1, (2, {3: {4, 5}}), frozenset({(6,)})], 'more': {'deep': [[[[b'x']]]]},
     'mixed': [True, 1, 1.0, 1j, '1', b'1', bytearray(b'1')]},
    b'\xab' * (1 << 20),
    'large \u00e9' * 100_000,
    list(range(10_000)),
]


def value_id(value):
    text = repr(value)
    return f'{type(value).__name__}:{text[:30]}'


def same_value(a, b):
    """True when a and b are equal and of exactly the same types all the way down (NaN equals
    NaN, and the sign of zero counts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    if isinstance(a, complex):
        return same_value(a.real, b.real) and same_value(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (len(a) == len(b) and
                all(same_value(ka, kb) and same_value(va, vb)
                    for (ka, va), (kb, vb) in zip(a.items(), b.items())))
    if isinstance(a, (set, frozenset)):
        return a == b and all(any(same_value(x, y) for y in b) for x in a)
    return a == b


def local_types_of(value):
    """isofix_basic.types_of, computed here: what the child should see."""
    name = f'{type(value).__module__}.{type(value).__qualname__}'
    if isinstance(value, dict):
        return [name, [[local_types_of(k), local_types_of(v)] for k, v in value.items()]]
    if isinstance(value, (set, frozenset)):
        return [name, sorted((local_types_of(item) for item in value), key=repr)]
    if isinstance(value, (list, tuple)):
        return [name, [local_types_of(item) for item in value]]
    return name


@pytest.mark.parametrize('value', BY_VALUE, ids=value_id)
def test_builtin_values_come_back_with_the_same_value_and_exact_type(basic, value):
    result = basic.echo(value)
    assert not isproxy(result)
    assert same_value(result, value)


@pytest.mark.parametrize('value', BY_VALUE, ids=value_id)
def test_builtin_values_reach_the_child_with_their_exact_types(basic, value):
    assert basic.types_of(value) == local_types_of(value)


def test_a_value_is_a_copy_not_shared_with_the_child(basic):
    sent = [1, 2]
    received = basic.echo(sent)
    received.append(3)
    assert sent == [1, 2]
    assert received is not sent


def test_str_with_nul_and_surrogates_keeps_its_length_in_the_child(basic):
    text = 'a\x00b\ud800c\udfff'
    assert basic.call_with(len, text) == 6
    assert basic.add(text, '\x00') == text + '\x00'


class LocalDict(dict):
    pass


class LocalStr(str):
    pass


class LocalInt(int):
    pass


class LocalList(list):
    pass


Pair = collections.namedtuple('Pair', 'left right')


@pytest.mark.parametrize('value', [
    LocalDict(a=1), LocalStr('text'), LocalInt(5), LocalList([1]), Pair(1, 2),
    collections.OrderedDict(a=1), collections.Counter('aab'), object(),
], ids=lambda value: type(value).__name__)
def test_subclasses_of_builtins_and_other_objects_reach_the_child_by_reference(basic, value):
    assert basic.is_proxy(value)
    assert basic.type_of(value).endswith('.' + type(value).__qualname__)


def test_a_subclass_of_dict_from_the_child_crosses_by_reference(basic):
    registry = basic.Registry(a=1)
    assert isproxy(registry)
    registry['b'] = [2]
    assert registry['a'] == 1
    assert dict(registry.items()) == {'a': 1, 'b': [2]}
    assert basic.echo(registry) is registry
    ordered = basic.make_ordered()
    assert isproxy(ordered)
    assert list(ordered.keys()) == ['zebra', 'apple']


def test_a_self_containing_list_sent_to_the_child_is_a_clear_value_error(basic):
    items = [1]
    items.append(items)
    with pytest.raises(ValueError, match='itself'):
        basic.echo(items)
    mapping = {}
    mapping['self'] = mapping
    with pytest.raises(ValueError, match='itself'):
        basic.echo(mapping)
    assert basic.add(1, 2) == 3  # the connection is intact


def test_a_self_containing_list_returned_by_the_child_is_a_clear_value_error(basic):
    with pytest.raises(ValueError, match='itself'):
        basic.make_self_containing_list()
    assert basic.add(1, 2) == 3


def test_values_nesting_within_the_limit_cross_and_deeper_ones_are_refused(basic):
    shallow = []
    for _ in range(50):
        shallow = [shallow]
    assert basic.echo(shallow) == shallow
    deep = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(ValueError):
        basic.echo(deep)
    assert basic.add(1, 2) == 3
