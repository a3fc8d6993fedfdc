"""Tests of parent threads sharing one context: concurrent calls each get their own answer,
callbacks are served on the thread whose call caused them, nested callbacks from several
threads do not deadlock, and proxies made and dropped by many threads are all released.

Every thread is joined with a deadline; a thread still running after it fails the test (and
terminating the context when the test ends unblocks it)."""

import gc
import threading
import time

import pytest

from transport_helpers import both_transports  # noqa: F401 (each test per transport)


THREADS = 8
DEADLINE = 60.0  # seconds for all the threads of one test


def run_threads(target, count=THREADS):
    """Runs target(index) on `count` threads started together; returns the exceptions they
    raised. Fails if any thread is still running after the deadline."""
    barrier = threading.Barrier(count, timeout=DEADLINE)
    errors = []

    def body(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append((index, error))

    threads = [threading.Thread(target=body, args=(index,), name=f'caller-{index}', daemon=True)
               for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f'threads still running after {DEADLINE} s (deadlock?): {stuck}'
    return errors


@pytest.fixture
def fid(ctx):
    module = ctx.load_module('isofix_fidelity')  # starts the child before any thread does
    return module


@pytest.fixture
def basic(ctx):
    return ctx.load_module('isofix_basic')


def test_concurrent_calls_each_get_their_own_answer(fid, basic):
    answers = {}

    def calls(index):
        mine = []
        for i in range(200):
            mine.append(basic.add(index * 1000, i))
            assert basic.echo((index, i, 'x' * index)) == (index, i, 'x' * index)
        answers[index] = mine

    assert run_threads(calls) == []
    assert answers == {index: [index * 1000 + i for i in range(200)]
                       for index in range(THREADS)}


def test_callbacks_run_on_the_thread_whose_call_caused_them(fid):
    idents = {}

    def calls(index):
        me = threading.get_ident()
        idents[index] = me
        for i in range(100):
            thread, value = fid.call_with(lambda v: (threading.get_ident(), v), (index, i))
            assert thread == me
            assert value == (index, i)

    assert run_threads(calls) == []
    assert len(set(idents.values())) == THREADS


def test_nested_callbacks_from_many_threads_do_not_deadlock(fid):
    results = {}

    def calls(index):
        me = threading.get_ident()

        def down(depth, token):
            assert threading.get_ident() == me
            if depth == 0:
                return (token, threading.get_ident())
            return fid.descend(down, depth, token)

        mine = []
        for i in range(10):
            result = down(5, (index, i))
            for depth in range(5, 0, -1):
                assert result[0] == depth
                result = result[1]
            mine.append(result)
        results[index] = mine

    assert run_threads(calls) == []
    for index, mine in results.items():
        assert [token for token, _ in mine] == [(index, i) for i in range(10)]
        assert len({thread for _, thread in mine}) == 1


def test_exceptions_from_callbacks_reach_the_thread_that_made_the_call(fid):
    def calls(index):
        def fail():
            raise KeyError(index)

        for _ in range(50):
            with pytest.raises(KeyError) as caught:
                fid.call_and_reraise(fail)
            assert caught.value.args == (index,)
            with pytest.raises(fid.E2) as caught:
                fid.call_and_reraise(fid.raise_e2, index)
            assert caught.value.code == index

    assert run_threads(calls) == []


def test_proxies_are_shared_between_threads_with_their_identity(fid):
    shared = fid.Money(100)
    seen = []

    def calls(index):
        for _ in range(50):
            assert fid.call_with(lambda obj: obj, shared) is shared
            assert shared.cents == 100
            seen.append(fid.call_with(fid.Money, index) == fid.Money(index))

    assert run_threads(calls) == []
    assert all(seen) and len(seen) == THREADS * 50


def test_proxies_made_and_dropped_by_many_threads_are_all_released(ctx, fid):
    held = ctx._counts()[1]
    before = fid.live_blobs()

    def calls(index):
        for _ in range(100):
            blobs = fid.make_blobs(20)
            assert len(blobs) == 20
            del blobs

    assert run_threads(calls) == []
    gc.collect()
    fid.pid()  # carries the releases still queued
    assert fid.live_blobs() == before
    assert ctx._counts()[1] == held


@pytest.mark.parametrize('wait', [0.0, 0.3], ids=['racing-the-next-call', 'while-idle'])
def test_a_callback_from_a_child_thread_between_calls_is_served_at_the_next_call(ctx, wait):
    # The child's thread sends its request while the parent makes no call (or just as it makes
    # the next one): the child's serve loop and that thread must not both read the connection
    # (before: the parent hung, or the child died of "a message that is not valid between calls").
    late = ctx.load_module('isofix_late_callback')
    pid = ctx.pid
    for round_ in range(20):
        served = []
        late.later(lambda round_=round_: served.append(round_))
        late.go()
        if wait:
            time.sleep(wait)  # the scenario: no call in flight when the callback is made
        deadline = time.monotonic() + DEADLINE
        while not served and time.monotonic() < deadline:
            assert late.ping() == 'pong'
        assert served == [round_]
    assert late.join_all(DEADLINE)
    assert ctx.pid == pid and ctx.alive
