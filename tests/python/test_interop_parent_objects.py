"""Real libraries in the child use the parent objects passed to them as they would local ones
(issue 12, item 4; DESIGN.md, "Where local and remote objects meet" and "Trust"): pandas,
numpy, sqlite3 and functools probe and read dunder and private attributes of parent objects,
and a missing one is an AttributeError, so hasattr probes behave. A confined child
(IsolationContext(_deny_private=True), which the sandbox will set) is still refused private
attributes, as an AttributeError saying why, and looks inside parent modules."""

import json

import pytest

pytest.importorskip('pandas', reason='pandas is in requirements-dev.txt: pip install pandas')


def double(x):
    """Doubles x."""
    double.calls += 1
    return x * 2


double.calls = 0


def label(row):
    return f"{row['a']}-{row['b']}"


class Mapper:
    """A callable with private state, as pandas.Series.map gets it."""

    def __init__(self):
        self._table = {1: 'one', 2: 'two'}

    def __call__(self, value):
        return self._table.get(value, '?')


class Probed:
    """A sequence that records every attribute looked up on it and not found."""

    def __init__(self):
        self.missed = []

    def __len__(self):
        return 3

    def __getitem__(self, index):
        if index >= 3:
            raise IndexError(index)
        return index * 10

    def __getattr__(self, name):
        self.missed.append(name)
        raise AttributeError(name)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __conform__(self, protocol):
        # The sqlite3 documentation's recipe compares `protocol is sqlite3.PrepareProtocol`;
        # the child's class arrives here as a proxy, so this compares its name.
        if protocol.__name__ == 'PrepareProtocol':
            return f'{self.x};{self.y}'
        return None


class Base:
    pass


class Sub(Base):
    pass


class IntSub(int, Base):
    pass


class Holder:
    public = 'visible'

    def __init__(self):
        self._secret = 'hidden'


@pytest.fixture
def interop(ctx):
    return ctx.load_module('isofix_interop')


@pytest.fixture
def confined(new_context):
    """The fixture module in a confined child: one that may not use private attributes."""
    return new_context(_deny_private=True).load_module('isofix_interop')


def test_pandas_apply_calls_a_parent_function_after_probing_it(interop):
    double.calls = 0
    assert interop.series_apply(double, [1, 2, 3]) == [2, 4, 6]
    assert double.calls == 3


def test_pandas_map_uses_a_parent_callable_object_with_private_state(interop):
    assert interop.series_map(Mapper(), [1, 2, 3]) == ['one', 'two', '?']


def test_pandas_apply_over_rows_hands_the_childs_rows_to_a_parent_function(interop):
    assert interop.frame_apply_rows(label, {'a': [1, 2], 'b': [3, 4]}) == ['1-3', '2-4']


def test_pandas_concat_rejects_a_parent_object_that_is_no_frame_as_it_does_locally(interop):
    kind, message = interop.concat_with(Holder())
    assert kind == 'TypeError'
    assert 'cannot concatenate object of type' in message and 'Holder' in message


def test_numpy_builds_an_array_from_a_parent_sequence_after_probing_it(interop):
    probed = Probed()
    assert interop.as_array(probed) == [0, 10, 20]
    assert interop.as_array(probed, float) == [0.0, 10.0, 20.0]
    assert '__array__' in probed.missed  # the probe reached the parent and missed
    # Attributes holding addresses in the parent's memory are never forwarded.
    assert '__array_struct__' not in probed.missed
    assert '__array_interface__' not in probed.missed


def test_numpy_dtype_of_a_parent_object_is_the_type_error_numpy_raises_locally(interop):
    probed = Probed()
    kind, message = interop.dtype_error(probed)
    assert kind == 'TypeError' and 'as a data type' in message
    assert {'__numpy_dtype__', 'dtype'} <= set(probed.missed)


def test_sqlite3_adapts_a_parent_object_with_its_conform_method(interop):
    assert interop.store_and_load(Point(1, 2)) == '1;2'


def test_lru_cache_wraps_a_parent_function_and_caches_its_calls(interop):
    double.calls = 0
    info = interop.cached(double, [2, 2, 3])
    assert info['results'] == [4, 4, 6]
    assert (info['hits'], info['misses']) == (1, 2)
    assert double.calls == 2
    assert info['wrapped'] is True
    assert (info['module'], info['name'], info['qualname'], info['doc']) == (
        __name__, 'double', 'double', 'Doubles x.')


def test_issubclass_and_isinstance_with_parent_classes_walk_their_bases(interop):
    assert interop.subclass_checks(Sub, Base, IntSub) == [True, False, True, False, True, True,
                                                           True]


def test_the_child_reads_private_and_dunder_attributes_of_a_parent_object(interop):
    holder = Holder()
    assert interop.read(holder, '_secret') == 'hidden'
    assert interop.read(holder, '__dict__') == {'_secret': 'hidden'}
    assert interop.read(Holder, '__name__') == 'Holder'
    assert interop.read(double, '__code__').co_name == 'double'


def test_a_missing_attribute_of_a_parent_object_is_an_attribute_error(interop):
    holder = Holder()
    for name in ('_missing', '__missing__', 'missing'):
        assert interop.has(holder, name) is False
        kind, message = interop.attribute_error(holder, name)
        assert kind == 'AttributeError' and name in message
    assert interop.has(holder, '_secret') is True


def test_the_child_uses_a_parent_module_as_local_code_would(interop):
    assert interop.read(json, 'dumps')([1, {'a': None}]) == '[1, {"a": null}]'
    assert interop.has(json, '__file__') is True
    assert interop.read(json, '__name__') == 'json'


def test_a_confined_child_gets_an_attribute_error_for_private_attributes(confined):
    holder = Holder()
    assert confined.read(holder, 'public') == 'visible'
    for name in ('_secret', '__dict__', '__module__'):
        kind, message = confined.attribute_error(holder, name)
        assert kind == 'AttributeError'
        assert f"a confined child may not use the private attribute '{name}'" in message
        assert confined.has(holder, name) is False
    kind, message = confined.attribute_error(double, '__globals__')
    assert kind == 'AttributeError' and 'private attribute' in message
    gen = (x for x in ())
    kind, message = confined.attribute_error(gen, 'gi_frame')
    assert kind == 'AttributeError' and "introspection attribute 'gi_frame'" in message


def test_a_confined_child_may_not_look_inside_a_parent_module(confined):
    with pytest.raises(PermissionError, match='look inside a module'):
        confined.read(json, 'dumps')


def test_libraries_in_a_confined_child_still_run_where_their_probes_miss(confined):
    # pandas' probes of the function (__iter__, ...) are AttributeErrors here too.
    double.calls = 0
    assert confined.series_apply(double, [1, 2]) == [2, 4]
    probed = Probed()
    assert confined.as_array(probed) == [0, 10, 20]
    assert probed.missed == []  # __array__ was refused before it reached the object
