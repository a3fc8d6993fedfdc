"""Tests of byvalue(): copying a remote object into the parent, with the allow-list of safe
types for an untrusted child and any type for a trusted one."""

import collections
import datetime
import decimal
import fractions
import sys

import pytest

from process_isolation import byvalue, isproxy

from conftest import FIXTURES


def test_byvalue_copies_an_ordered_dict_from_the_childs_collections(ctx):
    remote_collections = ctx.load_module('collections')
    remote = remote_collections.OrderedDict([('b', 1), ('a', [2, {'c': 3}])])
    assert isproxy(remote)
    copy = byvalue(remote)
    assert type(copy) is collections.OrderedDict
    assert list(copy.items()) == [('b', 1), ('a', [2, {'c': 3}])]


def test_byvalue_makes_a_deep_copy_independent_of_the_child(basic):
    remote = basic.make_ordered()
    copy = byvalue(remote)
    copy['apple'].append(4)
    assert remote['apple'] == [2, 3]
    assert list(copy) == ['zebra', 'apple']


def test_byvalue_copies_allow_listed_standard_library_types(ctx):
    remote_datetime = ctx.load_module('datetime')
    remote_decimal = ctx.load_module('decimal')
    remote_fractions = ctx.load_module('fractions')
    # These types cross by value on their own; in a container that crosses by reference they
    # are byvalue's to rebuild.
    remote_deque = ctx.load_module('collections').deque
    when = byvalue(remote_deque([remote_datetime.datetime(2024, 2, 29, 12, 30)]))[0]
    assert type(when) is datetime.datetime
    assert when == datetime.datetime(2024, 2, 29, 12, 30)
    amount = byvalue(remote_deque([remote_decimal.Decimal('1.10')]))[0]
    assert type(amount) is decimal.Decimal and str(amount) == '1.10'
    ratio = byvalue(remote_deque([remote_fractions.Fraction(3, 4)]))[0]
    assert type(ratio) is fractions.Fraction and ratio == fractions.Fraction(3, 4)


@pytest.mark.parametrize('value', [[1, 2], 5, None, 'text', object()],
                         ids=['list', 'int', 'None', 'str', 'object'])
def test_byvalue_of_a_non_proxy_is_a_type_error(value):
    with pytest.raises(TypeError):
        byvalue(value)


def test_byvalue_of_an_unpicklable_object_is_a_type_error_and_the_context_goes_on(basic):
    lock = basic.make_lock()
    with pytest.raises(TypeError, match='lock'):
        byvalue(lock)
    with pytest.raises(TypeError):
        byvalue(basic.countdown(3))
    assert basic.add(1, 2) == 3
    assert byvalue(basic.make_ordered())['zebra'] == 1


@pytest.fixture
def records_in_parent(monkeypatch):
    """The isofix_records module imported for real in the parent too, as a trusted copy needs
    its class here; removed again afterwards."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    import isofix_records
    yield isofix_records
    monkeypatch.undo()
    sys.modules.pop('isofix_records', None)


def test_byvalue_refuses_an_instance_of_a_custom_class_from_an_untrusted_child(
        new_context, records_in_parent):
    context = new_context()
    records = context.load_module('isofix_records')
    with pytest.raises(TypeError, match='isofix_records.Record'):
        byvalue(records.make_record())
    assert records.make_record().name == 'first'  # the context is still usable


def test_byvalue_copies_an_instance_of_a_custom_class_from_a_trusted_child(
        new_context, records_in_parent):
    context = new_context(trusted=True)
    records = context.load_module('isofix_records')
    copy = byvalue(records.make_record())
    assert type(copy) is records_in_parent.Record
    assert (copy.name, copy.values) == ('first', [1, 2.5, 'three'])


def test_trust_belongs_to_the_context_that_made_the_object(new_context, records_in_parent):
    trusted = new_context(trusted=True)
    untrusted = new_context()
    trusted.load_module('isofix_records')
    record = untrusted.load_module('isofix_records').make_record()
    with pytest.raises(TypeError):
        byvalue(record)


@pytest.mark.parametrize('mib', [0, 16])
def test_byvalue_copies_a_numpy_array_with_its_data_beside_the_pickle(ctx, mib):
    numpy = pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    remote_numpy = ctx.load_module('numpy')
    count = max(1, (mib << 20) // 8)
    remote = remote_numpy.arange(count, dtype=remote_numpy.float64).reshape(-1, 2 if count > 1
                                                                           else 1)
    copy = byvalue(remote)
    assert type(copy) is numpy.ndarray
    assert copy.dtype == numpy.float64 and copy.shape == tuple(remote.shape)
    assert numpy.array_equal(copy, numpy.arange(count, dtype=numpy.float64).reshape(copy.shape))
    # A copy of the parent's own: writable, and independent of the child's array.
    assert copy.flags.writeable
    copy[0, 0] = -1.0
    assert float(remote[0, 0]) == 0.0


def test_byvalue_of_a_non_contiguous_numpy_array_is_correct(ctx):
    numpy = pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    remote_numpy = ctx.load_module('numpy')
    remote = remote_numpy.arange(4 << 18, dtype=remote_numpy.int64).reshape(-1, 4)[:, ::2]
    copy = byvalue(remote)
    expected = numpy.arange(4 << 18, dtype=numpy.int64).reshape(-1, 4)[:, ::2]
    assert numpy.array_equal(copy, expected)
