"""Tests of what a proxy forwards: remote classes and instances, properties, identity,
isinstance, attributes, the sequence protocol, generators, str and repr, comparisons, dir,
docstrings, callables, files, operators and context managers."""

import collections.abc

import pytest

from process_isolation import isproxy


# Classes and instances


def test_calling_a_remote_class_makes_a_remote_instance(basic):
    point = basic.Point(3, 4)
    assert isproxy(basic.Point)
    assert isproxy(point)
    assert (point.x, point.y) == (3, 4)
    assert point.moved(1, 1).x == 4
    assert basic.Point.ORIGIN_NAME == 'origin'
    origin = basic.Point.origin()
    assert (origin.x, origin.y) == (0, 0)


def test_proxy_type_names_the_remote_type(basic):
    point = basic.Point(1, 2)
    assert type(point).__name__ == 'Point'
    assert 'Point' in repr(type(point))
    assert 'isofix_basic' in repr(type(point))
    assert type(basic.Point(5, 6)) is type(point)


def test_proxy_type_carries_only_the_special_methods_of_the_remote_type(basic):
    point = basic.Point(1, 2)
    items = basic.Items([1, 2])
    assert not callable(point)
    assert callable(basic.Multiplier(2))
    assert callable(basic.Point)
    assert not hasattr(point, '__len__')
    assert not hasattr(point, '__iter__')
    assert isinstance(items, collections.abc.Iterable)
    assert isinstance(items, collections.abc.Sized)
    assert not isinstance(point, collections.abc.Iterable)


def test_properties_run_their_getter_setter_and_deleter_in_the_child(basic):
    point = basic.Point(3, 4)
    assert point.norm2 == 25
    point.x = 6
    assert point.norm2 == 52
    point.label = 'first'
    assert point.label == 'FIRST'
    del point.label
    assert point.label == 'deleted'
    with pytest.raises(AttributeError):
        point.norm2 = 1


# Identity


def test_the_same_remote_object_is_always_the_same_proxy(basic):
    point = basic.Point(1, 2)
    assert point.get_self() is point
    assert basic.echo(point) is point
    assert basic.Point is basic.Point
    assert basic.add is basic.add
    assert basic.Point(1, 2) is not point


def test_a_proxy_sent_back_to_the_child_is_the_original_object_there(basic):
    point = basic.Point(1, 2)
    assert basic.same(point, point.get_self())
    assert not basic.same(point, basic.Point(1, 2))
    assert not basic.is_proxy(point)


# isinstance


def test_isinstance_and_issubclass_work_against_remote_classes(basic):
    point = basic.Point(1, 2)
    point3 = basic.Point3(1, 2, 3)
    assert isinstance(point, basic.Point)
    assert isinstance(point3, basic.Point)
    assert not isinstance(point, basic.Point3)
    assert not isinstance(point, basic.Multiplier)
    assert not isinstance(5, basic.Point)
    assert issubclass(basic.Point3, basic.Point)
    assert not issubclass(basic.Point, basic.Point3)


# Attributes


def test_attributes_can_be_set_checked_and_deleted(basic):
    point = basic.Point(1, 2)
    setattr(point, 'extra', [1, 'two'])
    assert hasattr(point, 'extra')
    assert point.extra == [1, 'two']
    assert point.__dict__['extra'] == [1, 'two']
    del point.extra
    assert not hasattr(point, 'extra')
    assert not hasattr(point, 'never_set')
    with pytest.raises(AttributeError):
        point.never_set
    with pytest.raises(AttributeError):
        del point.never_set


# Sequences and iteration


def test_the_sequence_protocol_with_slices_is_forwarded(basic):
    items = basic.Items([10, 20, 30, 40, 50])
    assert isproxy(items)
    assert len(items) == 5
    assert items[0] == 10
    assert items[-1] == 50
    assert items[1:3] == [20, 30]
    assert items[::-2] == [50, 30, 10]
    assert 30 in items
    assert 31 not in items
    assert list(items) == [10, 20, 30, 40, 50]
    assert list(reversed(items)) == [50, 40, 30, 20, 10]
    assert items.total() == 150
    assert items
    assert not basic.Items([])
    items[0] = 11
    items[1:3] = ['a']
    del items[-1]
    assert basic.echo(list(items)) == [11, 'a', 40]
    del items[::2]
    assert list(items) == ['a']
    with pytest.raises(IndexError):
        items[10]


def test_slices_cross_as_slices(basic):
    key_echo = basic.KeyEcho()
    assert key_echo[1:5:2] == slice(1, 5, 2)
    assert key_echo[:, 3] == (slice(None, None, None), 3)
    assert key_echo['key'] == 'key'


def test_generators_are_iterated_in_the_child(basic):
    generator = basic.countdown(3)
    assert isinstance(generator, collections.abc.Iterator)
    assert iter(generator) is generator
    assert next(generator) == 3
    assert list(generator) == [2, 1]
    with pytest.raises(StopIteration):
        next(generator)
    assert sum(basic.countdown(100)) == 5050
    assert [n for n in basic.countdown(2)] == [2, 1]


# Text


def test_str_repr_and_format_come_from_the_child(basic):
    point = basic.Point(3, 4)
    assert repr(point) == 'Point(3, 4)'
    assert str(point) == '(3, 4)'
    assert format(point, '>8') == 'Point<>8>'
    assert f'{point:x}' == 'Point<x>'
    assert repr([point]) == '[Point(3, 4)]'


def test_hash_comes_from_the_child_and_unhashable_stays_unhashable(basic):
    assert hash(basic.Point(3, 4)) == hash((3, 4))
    with pytest.raises(TypeError):
        hash(basic.Items([1]))


# Comparisons


@pytest.mark.parametrize('compare, expected', [
    (lambda c: c < 5, ('lt', 5)),
    (lambda c: c <= 5, ('le', 5)),
    (lambda c: c == 5, ('eq', 5)),
    (lambda c: c != 5, ('ne', 5)),
    (lambda c: c > 5, ('gt', 5)),
    (lambda c: c >= 5, ('ge', 5)),
    (lambda c: 5 > c, ('lt', 5)),  # reflected: 5 > c is c < 5
    (lambda c: 5 <= c, ('ge', 5)),
], ids=['lt', 'le', 'eq', 'ne', 'gt', 'ge', 'reflected-gt', 'reflected-le'])
def test_each_comparison_is_forwarded_as_itself(basic, compare, expected):
    assert compare(basic.Comparer()) == expected


def test_comparing_two_remote_objects_compares_them_in_the_child(basic):
    assert basic.Point(1, 2) == basic.Point(1, 2)
    assert basic.Point(1, 2) != basic.Point(2, 1)
    assert not (basic.Point(1, 2) == (1, 2))
    assert basic.Items([1, 2]) < basic.Items([1, 3])
    assert basic.Items([1, 2]) >= [1, 2]


# dir and docstrings


def test_dir_lists_the_remote_attributes(basic):
    assert {'ANSWER', 'add', 'Point', 'countdown'} <= set(dir(basic))
    point = basic.Point(1, 2)
    point.extra = 1
    assert {'x', 'y', 'extra', 'norm2', 'get_self', 'moved'} <= set(dir(point))


def test_docstrings_of_functions_classes_and_methods_are_the_remote_ones(basic):
    assert basic.add.__doc__ == 'Returns a + b.'
    assert basic.Point.__doc__ == 'A point in the plane.'
    assert basic.Point.get_self.__doc__ == 'Returns this very point.'
    assert basic.Point(1, 2).get_self.__doc__ == 'Returns this very point.'
    assert basic.Point(1, 2).__doc__ == 'A point in the plane.'
    assert basic.Point.norm2.__doc__ == 'The squared distance to the origin.'
    assert basic.__doc__.startswith('A well-behaved module for the core runtime tests')


# Callables


def test_callable_objects_and_lambdas_are_called_in_the_child(basic):
    triple = basic.Multiplier(3)
    assert triple(4) == 12
    assert triple(value='ab') == 'ababab'
    assert basic.square(7) == 49
    assert basic.square.__name__ == '<lambda>'
    assert basic.call_with(basic.square, 9) == 81


# Files


def test_a_remote_file_object_reads_and_writes_in_the_child(basic, tmp_path):
    path = tmp_path / 'data.txt'
    remote = basic.open_file(str(path), 'w')
    assert isproxy(remote)
    with remote as entered:
        assert entered is remote
        assert remote.write('first\n') == 6
        remote.writelines(['second\n', 'third\n'])
    assert remote.closed
    assert path.read_text() == 'first\nsecond\nthird\n'
    remote = basic.open_file(str(path), 'r')
    assert remote.readline() == 'first\n'
    assert list(remote) == ['second\n', 'third\n']
    remote.seek(0)
    assert remote.read() == 'first\nsecond\nthird\n'
    remote.close()
    with pytest.raises(ValueError):
        remote.read()


# Operators and context managers


def test_arithmetic_operators_reflected_and_in_place_are_forwarded(basic):
    vector = basic.Vector(1, 2)
    assert (vector + [10, 20]).items == [11, 22]
    assert ([10, 20] + vector).items == [11, 22]
    assert (-vector).items == [-1, -2]
    alias = vector
    vector += [1, 1]
    assert vector is alias
    assert alias.items == [2, 3]
    with pytest.raises(TypeError):
        vector - 1


def test_a_remote_context_manager_sees_enter_and_exit(basic):
    resource = basic.Resource()
    with resource as entered:
        assert entered is resource
    with pytest.raises(KeyError):
        with resource:
            raise KeyError('inside')
    assert resource.events == ['enter', ('exit', None), 'enter', ('exit', 'KeyError')]
