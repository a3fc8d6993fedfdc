"""Tests of iteration in batches: iterating a proxy of a builtin container's iterator (list,
tuple, dict and its views, deque, range, set, OrderedDict) fetches the items in batches, not one
round trip per item, while generators and iterator classes of the child's own stay lazy: one
item per next(), and their side effects happen when the parent asks.

Round trips are counted exactly by the connection's frame counters (`frame_counts()`). Exact builtin lists, tuples, dicts and sets cross by value, so the
containers here are subclasses of them, or objects held by a remote object's attributes."""

import operator

import pytest

from fidelity_helpers import FrameTap

N = 2000
# Requests allowed to iterate N items of a batched iterator: iter() and __length_hint__, then
# batches that grow (a fixed batch of 16 would be 125). One round trip per item would be N.
MAX_BATCHED_REQUESTS = 20


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


@pytest.fixture
def tap(ctx, fid):
    return FrameTap(ctx)


CONTAINERS = [
    # name, the remote iterable (made from the fixture module), the items it yields
    ('list', lambda fid: fid.Items(list(range(N))), list(range(N))),
    ('reversed list', lambda fid: reversed(fid.Items(list(range(N)))), list(range(N))[::-1]),
    ('tuple', lambda fid: fid.Row(list(range(N))), list(range(N))),
    ('dict', lambda fid: fid.Registry({i: -i for i in range(N)}), list(range(N))),
    ('dict keys', lambda fid: fid.Registry({i: -i for i in range(N)}).keys(), list(range(N))),
    ('dict values', lambda fid: fid.Registry({i: -i for i in range(N)}).values(),
     [-i for i in range(N)]),
    ('dict items', lambda fid: fid.Registry({i: -i for i in range(N)}).items(),
     [(i, -i) for i in range(N)]),
    ('reversed dict', lambda fid: reversed(fid.Registry({i: -i for i in range(N)})),
     list(range(N))[::-1]),
    ('deque', lambda fid: fid.Holder(N).deque, list(range(N))),
    ('reversed deque', lambda fid: reversed(fid.Holder(N).deque), list(range(N))[::-1]),
    ('range', lambda fid: fid.Holder(N).range, list(range(N))),
    ('set', lambda fid: fid.Bag(list(range(N))), None),  # order is the set's own
    ('OrderedDict', lambda fid: fid.Holder(N).ordered, list(range(N))),
    ('OrderedDict items', lambda fid: fid.Holder(N).ordered.items(),
     [(i, -i) for i in range(N)]),
    ('list iterator', lambda fid: fid.Holder(N).list_iterator, list(range(N))),
]


@pytest.mark.parametrize('make, expected', [(make, expected) for _, make, expected in CONTAINERS],
                         ids=[name for name, _, _ in CONTAINERS])
def test_a_builtin_container_iterator_is_fetched_in_batches(fid, tap, make, expected):
    iterable = make(fid)
    before = tap.snapshot()
    items = list(iter(iterable))
    requests = tap.since(before)['request']
    if expected is None:
        assert sorted(items) == list(range(N))
    else:
        assert items == expected
    assert requests <= MAX_BATCHED_REQUESTS, f'{requests} round trips for {N} items'


def test_a_for_loop_over_a_batched_iterator_sees_every_item_once(fid, tap):
    deque = fid.Holder(N).deque
    before = tap.snapshot()
    seen = []
    for item in deque:
        seen.append(item)
    assert seen == list(range(N))
    assert tap.since(before)['request'] <= MAX_BATCHED_REQUESTS
    with pytest.raises(StopIteration):
        next(iter(fid.Holder(0).deque))


def test_items_of_a_batch_that_cross_by_reference_keep_their_identity(fid):
    point, other = fid.Money(1), fid.Money(2)
    items = fid.Items([point, other, point])
    assert [item is point for item in items] == [True, False, True]
    assert list(items)[1] is other


def test_a_partly_consumed_iterator_passed_back_to_the_child_goes_on_where_the_parent_stopped(
        fid):
    # Items fetched ahead for the parent must not be lost to the iterator's other consumers.
    iterator = iter(fid.Holder(100).deque)
    assert [next(iterator), next(iterator)] == [0, 1]
    rest = fid.call_with(list, iterator)  # list() runs in the child, on the real iterator
    assert rest == list(range(2, 100))


def test_the_length_hint_of_a_partly_consumed_iterator_counts_what_the_parent_has_not_seen(fid):
    iterator = iter(fid.Holder(100).deque)
    next(iterator)
    assert operator.length_hint(iterator) == 99


def test_a_generator_stays_lazy_one_round_trip_per_item(fid, tap):
    fid.clear_events()
    generator = fid.lazy(5)
    assert fid.events == []  # nothing ran yet
    for expected in range(3):
        before = tap.snapshot()
        assert next(generator) == expected
        assert tap.since(before)['request'] == 1
        assert fid.events == [('made', i) for i in range(expected + 1)]
    before = tap.snapshot()
    assert list(generator) == [3, 4]
    assert tap.since(before)['request'] == 4  # iter(), two items and the StopIteration
    assert fid.events == [('made', i) for i in range(5)]


def test_a_generator_makes_only_what_the_parent_consumes(fid):
    fid.clear_events()
    assert list(zip(fid.lazy(100), range(3))) == [(0, 0), (1, 1), (2, 2)]
    # zip takes a fourth item from the generator before it finds range exhausted, as in Python
    assert fid.events == [('made', i) for i in range(4)]
    fid.clear_events()
    for item in fid.lazy(100):
        assert fid.events[-1] == ('made', item)
        if item == 10:
            break
    assert len(fid.events) == 11


def test_an_iterator_class_of_the_childs_own_is_not_fetched_ahead(fid, tap):
    ticker = fid.Ticker(N)
    assert next(ticker) == 1
    assert ticker.count == 1  # the child made exactly one item
    assert next(ticker) == 2
    assert ticker.count == 2
    before = tap.snapshot()
    assert sum(1 for _ in zip(ticker, range(100))) == 100
    assert tap.since(before)['request'] >= 100
    assert ticker.count == 103  # zip took one more from the ticker, as in Python
