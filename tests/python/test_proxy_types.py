"""Tests of proxy types: one per remote type, carrying exactly the special methods that type has,
so callable(), hasattr(), the collections.abc checks and bool() answer for a proxy as they do for
the real object; the type's name says what it stands for; isinstance and issubclass against
remote classes follow the child's class hierarchy.

The objects are made twice from the same recipe: here (the real objects) and in the child (their
proxies), and every question gets asked of both."""

import collections.abc

import pytest

from conftest import CALL_DEADLINE, FIXTURES
from fidelity_helpers import isolated_namespace, local_namespace
from process_isolation import IsolationContext, isproxy

# The special methods a proxy type may carry (proxy/specials.h), and a few every object has.
SPECIALS = (
    '__call__', '__len__', '__iter__', '__next__', '__getitem__', '__setitem__', '__delitem__',
    '__contains__', '__bool__', '__reversed__', '__length_hint__', '__enter__', '__exit__',
    '__fspath__', '__neg__', '__pos__', '__abs__', '__invert__', '__int__', '__float__',
    '__complex__', '__index__', '__round__', '__trunc__', '__floor__', '__ceil__',
    '__add__', '__sub__', '__mul__', '__matmul__', '__truediv__', '__floordiv__', '__mod__',
    '__divmod__', '__pow__', '__lshift__', '__rshift__', '__and__', '__xor__', '__or__',
    '__radd__', '__rsub__', '__rmul__', '__rmatmul__', '__rtruediv__', '__rfloordiv__',
    '__rmod__', '__rdivmod__', '__rpow__', '__rlshift__', '__rrshift__', '__rand__', '__rxor__',
    '__ror__', '__iadd__', '__isub__', '__imul__', '__imatmul__', '__itruediv__',
    '__ifloordiv__', '__imod__', '__ipow__', '__ilshift__', '__irshift__', '__iand__',
    '__ixor__', '__ior__',
)
EVERY_OBJECT_HAS = ('__hash__', '__eq__', '__lt__', '__repr__', '__str__', '__format__',
                    '__dir__')

# The collections.abc classes whose isinstance() answer comes from the special methods the
# object's type has (their __subclasshook__). Answers that come from registration (tuple is a
# registered Sequence, so Reversible) cannot come from special methods and are left out: a
# proxy must answer as the real type's special methods say.
STRUCTURAL_ABCS = (
    collections.abc.Hashable, collections.abc.Iterable, collections.abc.Iterator,
    collections.abc.Reversible, collections.abc.Sized, collections.abc.Container,
    collections.abc.Callable, collections.abc.Collection,
)

OBJECTS = [
    # (Fractions, Decimals, dates, paths and the other standard values cross by value: see
    # test_interop_values.py.)
    ('decimal Context', lambda m: m.decimal.Context()),
    ('tzinfo', lambda m: m.datetime.tzinfo()),
    ('empty deque', lambda m: m.collections.deque()),
    ('deque', lambda m: m.collections.deque([1])),
    ('deque iterator', lambda m: iter(m.collections.deque([1]))),
    ('deque reverse iterator', lambda m: reversed(m.collections.deque([1]))),
    ('OrderedDict', lambda m: m.collections.OrderedDict(a=1)),
    ('empty Counter', lambda m: m.collections.Counter()),
    ('namedtuple', lambda m: m.collections.namedtuple('P', 'x y', module='fixture')(1, 2)),
    ('namedtuple class', lambda m: m.collections.namedtuple('P', 'x y', module='fixture')),
    ('empty array', lambda m: m.array.array('i')),
    ('StringIO', lambda m: m.io.StringIO('x')),
    ('BytesIO', lambda m: m.io.BytesIO()),
    ('datetime class', lambda m: m.datetime.datetime),
    ('module function', lambda m: m.fid.lazy),
    ('generator', lambda m: m.fid.lazy(1)),
    ('builtin method', lambda m: m.io.StringIO('x').read),
    ('class', lambda m: m.fid.Money),
    ('Money zero', lambda m: m.fid.Money(0)),
    ('Money', lambda m: m.fid.Money(5)),
    ('Plain', lambda m: m.fid.Plain()),
    ('Falsy', lambda m: m.fid.Falsy()),
    ('SizedOnly empty', lambda m: m.fid.SizedOnly(0)),
    ('SizedOnly', lambda m: m.fid.SizedOnly(1)),
    ('SequenceOnly', lambda m: m.fid.SequenceOnly(1)),
    ('SizedSequence', lambda m: m.fid.SizedSequence()),
    ('IterableOnly', lambda m: m.fid.IterableOnly()),
    ('Box', lambda m: m.fid.Box()),
    ('Caller', lambda m: m.fid.Caller()),
    ('Ticker', lambda m: m.fid.Ticker(1)),
    ('Manager', lambda m: m.fid.Manager()),
    ('Recorder', lambda m: m.fid.Recorder()),
    ('Unhashable', lambda m: m.fid.Unhashable()),
    ('Accumulator', lambda m: m.fid.Accumulator()),
    ('TakesRight', lambda m: m.fid.TakesRight()),
    ('dict subclass keys view', lambda m: m.fid.Registry(a=1).keys()),
    ('range', lambda m: m.fid.Holder(2).range),
    ('list iterator', lambda m: m.fid.Holder(2).list_iterator),
]
OBJECT_IDS = [name for name, _ in OBJECTS]


@pytest.fixture(scope='module')
def both():
    """The real objects and their proxies, made once for the module's tests (by a context of
    the module's own, terminated at the end)."""
    context = IsolationContext(paths=[FIXTURES], timeout=CALL_DEADLINE)
    try:
        local, remote = local_namespace(), isolated_namespace(context)
        yield {name: (recipe(local), recipe(remote)) for name, recipe in OBJECTS}, context
    finally:
        context.terminate()


@pytest.mark.parametrize('name', OBJECT_IDS)
def test_the_proxy_is_a_proxy_of_a_type_named_like_the_real_one(both, name):
    real, proxy = both[0][name]
    assert isproxy(proxy)
    assert type(proxy).__name__ == type(real).__name__
    assert type(real).__qualname__ in repr(type(proxy))
    assert type(real).__module__ in repr(type(proxy))


@pytest.mark.parametrize('name', OBJECT_IDS)
def test_the_proxy_type_carries_exactly_the_special_methods_of_the_real_type(both, name):
    real, proxy = both[0][name]
    real_has = {special for special in SPECIALS if getattr(type(real), special, None) is not None}
    proxy_has = {special for special in SPECIALS
                 if getattr(type(proxy), special, None) is not None}
    assert proxy_has == real_has


@pytest.mark.parametrize('name', OBJECT_IDS)
def test_callable_hasattr_and_bool_answer_as_for_the_real_object(both, name):
    real, proxy = both[0][name]
    assert callable(proxy) == callable(real)
    for special in SPECIALS + EVERY_OBJECT_HAS:
        assert hasattr(proxy, special) == hasattr(real, special), special
    assert bool(proxy) == bool(real)


@pytest.mark.parametrize('name', OBJECT_IDS)
def test_isinstance_of_structural_abcs_answers_as_for_the_real_object(both, name):
    real, proxy = both[0][name]
    answers = {abc.__name__: isinstance(proxy, abc) for abc in STRUCTURAL_ABCS}
    assert answers == {abc.__name__: abc.__subclasshook__(type(real)) is True
                       for abc in STRUCTURAL_ABCS}


def test_a_proxy_of_a_generator_is_a_collections_abc_generator(both):
    real, proxy = both[0]['generator']
    assert isinstance(real, collections.abc.Generator)
    assert isinstance(proxy, collections.abc.Iterator)
    # Generator's __subclasshook__ asks for send, throw and close besides __iter__/__next__.
    assert isinstance(proxy, collections.abc.Generator)


def test_one_proxy_type_per_remote_type(both):
    objects = both[0]
    assert type(objects['Money'][1]) is type(objects['Money zero'][1])
    assert type(objects['deque'][1]) is type(objects['empty deque'][1])
    assert type(objects['Money'][1]) is not type(objects['Plain'][1])
    assert type(objects['SizedOnly'][1]) is not type(objects['SizedSequence'][1])


# isinstance and issubclass against remote classes


@pytest.fixture
def fid(ctx):
    return ctx.load_module('isofix_fidelity')


def test_isinstance_follows_multiple_inheritance_in_the_child(fid):
    both, left = fid.Both(), fid.Left()
    assert isinstance(both, fid.Left) and isinstance(both, fid.Right)
    assert isinstance(both, (int, fid.Right))
    assert not isinstance(left, fid.Both)
    assert not isinstance(left, (fid.Right, fid.Both))
    assert issubclass(fid.Both, fid.Left)
    assert issubclass(fid.Both, (str, fid.Right))
    assert not issubclass(fid.Left, fid.Both)
    assert [cls.__name__ for cls in fid.Both.__mro__] == ['Both', 'Left', 'Right', 'object']


def test_isinstance_follows_abc_registration_in_the_child(fid):
    base, registered, unrelated = fid.make_abc_hierarchy()
    assert isinstance(registered(), base)
    assert not isinstance(unrelated(), base)
    assert issubclass(registered, base)
    assert not issubclass(unrelated, base)


def test_local_objects_and_classes_are_not_instances_or_subclasses_of_remote_classes(fid):
    assert not isinstance(object(), fid.Left)
    assert not isinstance(5, fid.Left)
    assert not issubclass(int, fid.Left)


def test_remote_stdlib_classes_answer_isinstance_for_their_instances(ctx):
    fractions = ctx.load_module('fractions')
    collections_ = ctx.load_module('collections')
    assert isinstance(fractions.Fraction(1, 2), fractions.Fraction)
    assert not isinstance(collections_.deque(), fractions.Fraction)
    assert isinstance(collections_.Counter(), collections_.Counter)
    assert issubclass(collections_.Counter, collections_.Counter)
    assert not issubclass(collections_.deque, collections_.Counter)


def test_issubclass_of_a_proxys_type_follows_the_remote_class(fid):
    both = fid.Both()
    assert isinstance(both, fid.Left)
    # issubclass(type(obj), cls) is the other common spelling of isinstance(obj, cls).
    assert issubclass(type(both), fid.Left)
    assert not issubclass(type(fid.Left()), fid.Both)
