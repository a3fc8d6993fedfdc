"""Tests of releases: when the parent drops its last proxy of a remote object, the child lets the
object go, and when the child drops a parent object, the parent does."""

import gc
import weakref


def test_dropping_proxies_lets_the_child_drop_its_objects(ctx, basic):
    held_before = ctx._counts()[1]
    tracked = [basic.Tracked() for _ in range(5)]
    assert basic.live_tracked() == 5
    assert ctx._counts()[1] == held_before + 5
    del tracked
    gc.collect()
    assert ctx._counts()[1] == held_before
    assert basic.live_tracked() == 0


def test_a_proxy_still_held_keeps_its_object_alive_in_the_child(ctx, basic):
    kept = basic.Tracked()
    dropped = basic.Tracked()
    del dropped
    gc.collect()
    assert basic.live_tracked() == 1
    assert basic.live_tracked() == 1  # and stays alive across further calls
    del kept
    gc.collect()
    assert basic.live_tracked() == 0


def test_the_same_object_sent_many_times_is_released_once_its_proxy_is_gone(ctx, basic):
    point = basic.Point(1, 2)
    held = ctx._counts()[1]
    for _ in range(20):
        assert point.get_self() is point
    assert ctx._counts()[1] == held
    tracked = basic.Tracked()
    for _ in range(20):
        assert basic.echo(tracked) is tracked
    del tracked
    gc.collect()
    assert basic.live_tracked() == 0


def test_parent_objects_are_released_when_the_child_drops_them(ctx, basic):
    basic.call_with(lambda: None)  # the first callback also exports its type, for good
    exported = ctx._counts()[0]
    callbacks = [lambda: 1, lambda: 2, lambda: 3]
    for callback in callbacks:
        basic.call_with(callback)
    assert ctx._counts()[0] == exported

    class Owned:
        def __call__(self):
            return 'called'

    owned = Owned()
    alive = weakref.ref(owned)
    assert basic.keep(owned) == 1
    assert ctx._counts()[0] == exported + 2  # the object, and its type
    del owned
    gc.collect()
    assert alive() is not None  # the child still holds it
    basic.forget()
    gc.collect()
    assert alive() is None
    assert ctx._counts()[0] == exported + 1  # only the type stays exported
