"""Tests of object lifetime: when the last proxy of a remote object is collected the child lets
the object go; releases ride along with later messages in batches, never one round trip each;
creating and dropping 200,000 remote objects leaves both tables and both processes' memory flat.

Round trips and release messages are counted exactly by the connection's frame counters
(`frame_counts()`); memory is read from /proc."""

import gc

import pytest

from fidelity_helpers import FrameTap, rss_kib

TOTAL_OBJECTS = 200_000
BATCH = 1_000
SINGLES = 100_000  # of the total, made one call each
PAYLOAD = 256  # bytes each object carries, so that a leak shows in memory
# How much either process may grow while making and dropping the objects. A leak of the
# objects (or of their proxies or table entries) is tens of MiB.
MAX_GROWTH_KIB = 8 * 1024


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


@pytest.fixture
def tap(ctx, fid):
    return FrameTap(ctx)


def settle(fid):
    """Makes sure every release queued so far has reached the child and been applied: releases
    ride behind the next message, so after two calls the child has seen them all."""
    gc.collect()
    fid.pid()
    fid.pid()


def test_the_child_drops_an_object_when_its_last_proxy_is_collected(fid):
    live = fid.live_blobs
    first, second = fid.make_blobs(2)
    same = fid.call_with(lambda obj: obj, first)
    assert same is first
    settle(fid)
    assert live() == 2
    del first
    settle(fid)
    assert live() == 2  # `same` is still the proxy of the first object
    del same
    settle(fid)
    assert live() == 1
    del second
    settle(fid)
    assert live() == 0


def test_proxies_in_a_garbage_cycle_are_released_when_the_cycle_is_collected(fid):
    live = fid.live_blobs
    cycle = {'blobs': fid.make_blobs(10)}
    cycle['self'] = cycle
    settle(fid)
    assert live() == 10
    del cycle
    settle(fid)
    assert live() == 0


def test_dropping_proxies_sends_nothing_until_the_next_message(ctx, fid, tap):
    blobs = fid.make_blobs(1000)
    live = fid.live_blobs
    assert live() == 1000
    before = tap.snapshot()
    del blobs
    gc.collect()
    assert tap.since(before)['request'] == 0
    live()
    assert live() == 0
    sent = tap.since(before)
    assert sent['request'] == 2  # live() twice
    # All 1000 releases rode along with the first of those messages, in one release message.
    assert sent['release'] == 1


def test_releases_never_cost_a_round_trip_each(ctx, fid, tap):
    live, make = fid.live_blobs, fid.make_blobs
    held = ctx._counts()[1]
    before = tap.snapshot()
    for _ in range(200):
        blobs = make(25)  # 1 request; dropping the 25 proxies: 0 requests
        del blobs
    sent = tap.since(before)
    assert sent['request'] == 200
    assert sent['release'] <= sent['request'] + 1  # at most one release message per write
    settle(fid)
    assert live() == 0
    assert ctx._counts()[1] == held


def test_two_hundred_thousand_objects_leave_tables_and_memory_flat(ctx, fid):
    make, live, blob = fid.make_blobs, fid.live_blobs, fid.Blob
    warm_up = [make(BATCH, PAYLOAD) for _ in range(5)]  # grow the tables and the heaps once
    del warm_up
    settle(fid)
    assert live() == 0
    held = ctx._counts()
    parent_rss, child_rss = rss_kib(), rss_kib(ctx.pid)

    for _ in range((TOTAL_OBJECTS - SINGLES) // BATCH):
        blobs = make(BATCH, PAYLOAD)
        assert len(blobs) == BATCH
        del blobs
    for _ in range(SINGLES):
        blob(PAYLOAD)  # one proxy made and dropped per call

    settle(fid)
    assert live() == 0
    assert fid.live_of_type('Blob') == 0
    assert ctx._counts() == held
    parent_growth, child_growth = rss_kib() - parent_rss, rss_kib(ctx.pid) - child_rss
    assert parent_growth < MAX_GROWTH_KIB, f'the parent grew by {parent_growth} KiB'
    assert child_growth < MAX_GROWTH_KIB, f'the child grew by {child_growth} KiB'


def test_a_leak_of_the_same_size_would_show(ctx, fid):
    """The memory check above can see a leak: keeping the objects alive instead of dropping
    them grows both processes past the limit."""
    settle(fid)
    make = fid.make_blobs
    parent_rss, child_rss = rss_kib(), rss_kib(ctx.pid)
    kept = [make(BATCH, PAYLOAD) for _ in range(TOTAL_OBJECTS // BATCH)]
    assert rss_kib() - parent_rss >= MAX_GROWTH_KIB
    assert rss_kib(ctx.pid) - child_rss >= MAX_GROWTH_KIB
    del kept
