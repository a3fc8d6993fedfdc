"""The proof of proxy fidelity: a table of operations, each applied once to objects made here and
once to proxies of the same objects made in the child (from fractions, decimal, collections,
datetime, array, io, pathlib and the fixture module isofix_fidelity). Every row must give the
same result, or raise the same type of exception, on both sides.

Each row is a function of a namespace `m` that holds the modules: the real modules for the local
run, module proxies for the isolated run. The operators, builtins and `math` functions in a row
are this process's own, so on the isolated run they act on proxies. Results are compared by
value: results that crossed by value directly (exact types, all the way down), proxies through
byvalue() or, for types that cannot be copied, through their type name and repr().
"""

import io
import math
import operator
import os
import pickle

import pytest

from conftest import FIXTURES
from fidelity_helpers import isolated_namespace, local_namespace
from process_isolation import byvalue, isproxy

MIN_ROWS = 70


# Rows that need statements -----------------------------------------------------------------


def deque_rotated(m):
    d = m.collections.deque([1, 2, 3, 4])
    d.rotate(1)
    d.appendleft(0)
    return list(d)


def deque_bounded(m):
    d = m.collections.deque(maxlen=2)
    d.extend([1, 2, 3])
    return list(d), d.maxlen


def ordered_popitem(m):
    od = m.collections.OrderedDict([('a', 1), ('b', 2), ('c', 3)])
    od.move_to_end('a')
    return od.popitem(last=False), list(od.keys())


def namedtuple_use(m):
    point = m.collections.namedtuple('Point', 'x y')
    p = point(1, 2)
    return p.x + p[1], p._asdict(), p._replace(x=5).x, len(p), list(p)


def bytes_io_seek(m):
    b = m.io.BytesIO(b'hello world')
    b.seek(6)
    first = b.read(3)
    b.seek(0, io.SEEK_END)
    return first, b.tell(), b.read()


def string_io_write(m):
    s = m.io.StringIO()
    written = s.write('abc')
    s.write('\ndef')
    return written, s.getvalue(), s.tell()


def string_io_closed_read(m):
    s = m.io.StringIO('q')
    s.close()
    return s.read()


def string_io_with(m):
    with m.io.StringIO('data\nmore') as f:
        first = f.readline()
    return first, f.closed


def money_inplace_add(m):
    total = m.fid.Money(100)
    alias = total
    total += m.fid.Money(50)
    return total is alias, repr(total), repr(alias)


def accumulator_iadd(m):
    acc = m.fid.Accumulator(1)
    alias = acc
    acc += 2
    return acc is alias, acc.total, alias.total


def accumulator_isub(m):
    acc = m.fid.Accumulator(10)
    alias = acc
    acc -= 3
    return acc is alias, acc.total, alias.total


def accumulator_imul(m):
    acc = m.fid.Accumulator(4)
    acc *= 3
    return acc


def accumulator_ior(m):
    acc = m.fid.Accumulator(1)
    alias = acc
    acc |= 6
    return acc is alias, acc.total, alias.total


def declines_iadd(m):
    value = m.fid.Declines()
    value += 1
    return value


def manager_suppresses(m):
    manager = m.fid.Manager(True)
    with manager as entered:
        raise KeyError('inside')
    return entered, manager.entered, [e['type_name'] for e in manager.exits]


def manager_propagates(m):
    manager = m.fid.Manager(0)
    with manager:
        raise IndexError('inside')


def talker_conversation(m):
    g = m.fid.talker()
    answers = [next(g), g.send('a'), g.send('b'), g.throw(ValueError('v')), next(g)]
    g.close()
    return answers


def talker_uncaught_throw(m):
    g = m.fid.talker()
    next(g)
    return g.throw(KeyError('k'))


def exhausted_generator(m):
    g = m.fid.lazy(1)
    next(g)
    return next(g)


def box_writes(m):
    box = m.fid.Box(1, 2, 3, 4)
    box[0] = 'a'
    box[1:3] = ['b']
    del box[-1]
    return list(box), box.log


def sorted_dir(obj):
    return sorted(dir(obj))


D = 'decimal'  # shorthand in the ids below

ROWS = [
    # fractions
    ('Fraction add', lambda m: m.fractions.Fraction(1, 3) + m.fractions.Fraction(1, 6)),
    ('Fraction sub int', lambda m: m.fractions.Fraction(1, 3) - 1),
    ('Fraction rsub', lambda m: 1 - m.fractions.Fraction(1, 3)),
    ('Fraction mul', lambda m: m.fractions.Fraction(2, 3) * 3),
    ('Fraction div by zero', lambda m: m.fractions.Fraction(1, 3) / 0),
    ('Fraction zero denominator', lambda m: m.fractions.Fraction(1, 0)),
    ('Fraction pow', lambda m: m.fractions.Fraction(3, 4) ** 2),
    ('Fraction rpow', lambda m: 2 ** m.fractions.Fraction(1, 2)),
    ('Fraction neg', lambda m: -m.fractions.Fraction(1, 3)),
    ('Fraction pos', lambda m: +m.fractions.Fraction(1, 3)),
    ('Fraction abs', lambda m: abs(m.fractions.Fraction(-5, 7))),
    ('Fraction floordiv', lambda m: m.fractions.Fraction(7, 2) // 2),
    ('Fraction mod', lambda m: m.fractions.Fraction(7, 2) % m.fractions.Fraction(1, 3)),
    ('Fraction divmod', lambda m: divmod(m.fractions.Fraction(7, 2), 1)),
    ('Fraction round', lambda m: round(m.fractions.Fraction(7, 2))),
    ('Fraction round ndigits', lambda m: round(m.fractions.Fraction(22, 7), 2)),
    ('Fraction floor', lambda m: math.floor(m.fractions.Fraction(-7, 2))),
    ('Fraction ceil', lambda m: math.ceil(m.fractions.Fraction(-7, 2))),
    ('Fraction trunc', lambda m: math.trunc(m.fractions.Fraction(-7, 2))),
    ('Fraction int', lambda m: int(m.fractions.Fraction(7, 2))),
    ('Fraction float', lambda m: float(m.fractions.Fraction(1, 4))),
    ('Fraction complex', lambda m: complex(m.fractions.Fraction(1, 4))),
    ('Fraction lt', lambda m: m.fractions.Fraction(1, 3) < m.fractions.Fraction(1, 2)),
    ('Fraction eq float', lambda m: m.fractions.Fraction(1, 2) == 0.5),
    ('Fraction hash', lambda m: hash(m.fractions.Fraction(1, 2))),
    ('Fraction bool', lambda m: bool(m.fractions.Fraction(0))),
    ('Fraction str', lambda m: str(m.fractions.Fraction(3, 6))),
    ('Fraction repr', lambda m: repr(m.fractions.Fraction(3, 6))),
    ('Fraction format spec', lambda m: format(m.fractions.Fraction(1, 3), '.3f')),
    ('Fraction f-string conversion', lambda m: f'{m.fractions.Fraction(1, 3)!s:>8}|'),
    ('Fraction limit_denominator',
     lambda m: m.fractions.Fraction('3.1415926').limit_denominator(100)),
    ('Fraction bad literal', lambda m: m.fractions.Fraction('abc')),
    ('Fraction as_integer_ratio', lambda m: m.fractions.Fraction(5, 10).as_integer_ratio()),
    ('Fraction add str', lambda m: m.fractions.Fraction(1, 2) + 'x'),
    ('Fraction dir', lambda m: sorted_dir(m.fractions.Fraction(1, 2))),
    ('Fraction type name', lambda m: type(m.fractions.Fraction(1, 2)).__name__),
    ('Fraction sum', lambda m: sum([m.fractions.Fraction(1, 2), m.fractions.Fraction(1, 3)],
                                   m.fractions.Fraction(0))),
    ('Fraction as dict key',
     lambda m: {m.fractions.Fraction(1, 2): 'x'}[m.fractions.Fraction(2, 4)]),
    ('Fraction in set', lambda m: m.fractions.Fraction(1, 2) in {m.fractions.Fraction(1, 2)}),
    ('Fraction percent formatting',
     lambda m: '%s|%r|%d|%5.2f' % ((m.fractions.Fraction(7, 2),) * 4)),
    ('Fraction str.format', lambda m: '{0!s:>6}|{0!r}'.format(m.fractions.Fraction(1, 2))),
    ('Fraction getattr default', lambda m: getattr(m.fractions.Fraction(1, 2), 'nope', 'dflt')),
    # decimal
    (f'{D} add', lambda m: m.decimal.Decimal('1.10') + m.decimal.Decimal('2.205')),
    (f'{D} sqrt', lambda m: m.decimal.Decimal(2).sqrt()),
    (f'{D} quantize', lambda m: m.decimal.Decimal('1.2345').quantize(m.decimal.Decimal('0.01'))),
    (f'{D} round', lambda m: round(m.decimal.Decimal('2.675'), 2)),
    (f'{D} int', lambda m: int(m.decimal.Decimal('-7.9'))),
    (f'{D} float', lambda m: float(m.decimal.Decimal('0.1'))),
    (f'{D} division by zero', lambda m: m.decimal.Decimal(1) / 0),
    (f'{D} invalid literal', lambda m: m.decimal.Decimal('abc')),
    (f'{D} nan equality', lambda m: m.decimal.Decimal('NaN') == m.decimal.Decimal('NaN')),
    (f'{D} neg', lambda m: -m.decimal.Decimal('1.5')),
    (f'{D} abs', lambda m: abs(m.decimal.Decimal('-2'))),
    (f'{D} floor', lambda m: math.floor(m.decimal.Decimal('-1.5'))),
    (f'{D} format', lambda m: format(m.decimal.Decimal('1234.5'), ',.2f')),
    (f'{D} as_tuple', lambda m: m.decimal.Decimal('1.50').as_tuple()),
    (f'{D} compare int', lambda m: m.decimal.Decimal(3) < 4),
    (f'{D} bool', lambda m: bool(m.decimal.Decimal('0.00'))),
    (f'{D} rsub', lambda m: 10 - m.decimal.Decimal('0.1')),
    (f'{D} divmod', lambda m: divmod(m.decimal.Decimal(7), m.decimal.Decimal(2))),
    (f'{D} pow', lambda m: m.decimal.Decimal('1.1') ** 2),
    (f'{D} hash', lambda m: hash(m.decimal.Decimal('2.5'))),
    (f'{D} plus Fraction', lambda m: m.decimal.Decimal(1) + m.fractions.Fraction(1, 2)),
    # collections
    ('deque len maxlen', lambda m: len(m.collections.deque([1, 2, 3], maxlen=2))),
    ('deque rotate', deque_rotated),
    ('deque bounded extend', deque_bounded),
    ('deque negative index', lambda m: m.collections.deque([1, 2, 3])[-1]),
    ('deque reversed', lambda m: list(reversed(m.collections.deque('abc')))),
    ('deque contains', lambda m: 'b' in m.collections.deque('abc')),
    ('deque pop empty', lambda m: m.collections.deque().pop()),
    ('deque add', lambda m: m.collections.deque([1, 2]) + m.collections.deque([3])),
    ('deque mul', lambda m: m.collections.deque([1]) * 3),
    ('deque index out of range', lambda m: m.collections.deque([1])[5]),
    ('deque sorted', lambda m: sorted(m.collections.deque([3, 1, 2]), reverse=True)),
    ('deque enumerate', lambda m: list(enumerate(m.collections.deque('ab')))),
    ('deques zipped', lambda m: list(zip(m.collections.deque('ab'), m.collections.deque('xy')))),
    ('Counter most_common', lambda m: m.collections.Counter('abracadabra').most_common(2)),
    ('Counter add', lambda m: m.collections.Counter('aab') + m.collections.Counter('bcc')),
    ('Counter missing key', lambda m: m.collections.Counter('ab')['z']),
    ('Counter elements', lambda m: sorted(m.collections.Counter('hello').elements())),
    ('OrderedDict order', lambda m: list(m.collections.OrderedDict([('b', 1), ('a', 2)]))),
    ('OrderedDict missing key', lambda m: m.collections.OrderedDict(a=1)['missing']),
    ('OrderedDict popitem', ordered_popitem),
    ('OrderedDict reversed', lambda m: list(reversed(m.collections.OrderedDict(x=1, y=2)))),
    ('OrderedDict items', lambda m: list(m.collections.OrderedDict(x=1, y=2).items())),
    ('namedtuple', namedtuple_use),
    ('namedtuple repr', lambda m: repr(m.collections.namedtuple('P', 'x y')(1, 2))),
    ('namedtuple missing field', lambda m: m.collections.namedtuple('P', 'x y')(1)),
    ('ChainMap lookup', lambda m: m.collections.ChainMap({'a': 1}, {'a': 2, 'b': 3})['b']),
    ('ChainMap len', lambda m: len(m.collections.ChainMap({'a': 1}, {'a': 2, 'b': 3}))),
    ('defaultdict to dict', lambda m: dict(m.collections.defaultdict(int, a=1))),
    # datetime
    ('date plus timedelta',
     lambda m: m.datetime.date(2024, 2, 28) + m.datetime.timedelta(days=1)),
    ('date minus date', lambda m: m.datetime.date(2024, 3, 1) - m.datetime.date(2024, 2, 1)),
    ('date invalid day', lambda m: m.datetime.date(2024, 2, 30)),
    ('date isoformat', lambda m: m.datetime.date(2024, 2, 29).isoformat()),
    ('date weekday', lambda m: m.datetime.date(2024, 2, 29).weekday()),
    ('datetime strftime',
     lambda m: m.datetime.datetime(2024, 1, 1, 12, 30).strftime('%H:%M %d/%m')),
    ('datetime format', lambda m: format(m.datetime.datetime(2024, 1, 1), '%Y')),
    ('date f-string spec', lambda m: f'{m.datetime.date(2024, 5, 6):%d %B}'),
    ('timedelta days', lambda m: m.datetime.timedelta(hours=25).days),
    ('timedelta mul float', lambda m: m.datetime.timedelta(hours=1) * 2.5),
    ('timedelta div timedelta',
     lambda m: m.datetime.timedelta(hours=3) / m.datetime.timedelta(minutes=30)),
    ('timedelta neg', lambda m: -m.datetime.timedelta(seconds=1)),
    ('timedelta abs', lambda m: abs(m.datetime.timedelta(days=-2))),
    ('timedelta bool', lambda m: bool(m.datetime.timedelta(0))),
    ('timedelta floordiv zero', lambda m: m.datetime.timedelta(1) // 0),
    ('date fromisoformat invalid', lambda m: m.datetime.date.fromisoformat('2024-13-01')),
    ('datetime lt',
     lambda m: m.datetime.datetime(2024, 1, 1) < m.datetime.datetime(2024, 1, 2)),
    ('date lt int', lambda m: m.datetime.date(2024, 1, 1) < 5),
    ('datetime utcoffset',
     lambda m: m.datetime.datetime(2024, 1, 1, tzinfo=m.datetime.timezone.utc).utcoffset()),
    ('date replace', lambda m: m.datetime.date(2024, 1, 31).replace(month=2)),
    ('date hash', lambda m: hash(m.datetime.date(2024, 1, 1))),
    ('date timetuple', lambda m: m.datetime.date(2024, 1, 1).timetuple()),
    # array
    ('array item', lambda m: m.array.array('i', [1, 2, 3])[1]),
    ('array reversed slice', lambda m: m.array.array('i', [1, 2, 3])[::-1]),
    ('array len', lambda m: len(m.array.array('d', [1.5, 2.5]))),
    ('array concat', lambda m: m.array.array('i', [1, 2]) + m.array.array('i', [3])),
    ('array repeat', lambda m: m.array.array('i', [1, 2]) * 2),
    ('array tolist', lambda m: m.array.array('i', [1, 2, 3]).tolist()),
    ('array tobytes', lambda m: m.array.array('b', [1, 2]).tobytes()),
    ('array index missing', lambda m: m.array.array('i', [1, 2]).index(5)),
    ('array append wrong type', lambda m: m.array.array('i', [1]).append('x')),
    ('array index out of range', lambda m: m.array.array('i', [1])[5]),
    ('array contains', lambda m: 3 in m.array.array('i', [1, 2, 3])),
    ('array sum', lambda m: sum(m.array.array('i', [4, 5, 6]))),
    ('array eq', lambda m: m.array.array('i', [3, 1]) == m.array.array('i', [3, 1])),
    ('array lt', lambda m: m.array.array('q', [1]) < m.array.array('q', [2])),
    ('array bad typecode', lambda m: m.array.array('z')),
    ('array reversed', lambda m: list(reversed(m.array.array('i', [1, 2, 3])))),
    # io
    ('BytesIO read', lambda m: m.io.BytesIO(b'hello world').read(5)),
    ('BytesIO seek and tell', bytes_io_seek),
    ('BytesIO readline', lambda m: m.io.BytesIO(b'a\nb').readline()),
    ('StringIO readlines', lambda m: m.io.StringIO('a\nb\n').readlines()),
    ('StringIO iteration', lambda m: list(m.io.StringIO('x\ny\n'))),
    ('StringIO write', string_io_write),
    ('StringIO read after close', string_io_closed_read),
    ('StringIO bad argument', lambda m: m.io.StringIO(5)),
    ('StringIO negative seek', lambda m: m.io.StringIO('abc').seek(-1)),
    ('StringIO context manager', string_io_with),
    # pathlib
    ('path suffixes', lambda m: m.pathlib.PurePosixPath('/usr/lib/x.tar.gz').suffixes),
    ('path stem', lambda m: m.pathlib.PurePosixPath('/usr/lib/x.tar.gz').stem),
    ('path truediv', lambda m: m.pathlib.PurePosixPath('/usr/lib') / 'python3'),
    ('path rtruediv', lambda m: 'a' / m.pathlib.PurePosixPath('b')),
    ('path truediv int', lambda m: m.pathlib.PurePosixPath('/x') / 5),
    ('path parent', lambda m: m.pathlib.PurePosixPath('/usr/lib').parent),
    ('path parts', lambda m: m.pathlib.PurePosixPath('/a/b').parts),
    ('path with_suffix', lambda m: m.pathlib.PurePosixPath('x.txt').with_suffix('.md')),
    ('path with_suffix invalid', lambda m: m.pathlib.PurePosixPath('x').with_suffix('md')),
    ('path relative_to', lambda m: m.pathlib.PurePosixPath('/usr/lib').relative_to('/usr')),
    ('path relative_to unrelated',
     lambda m: m.pathlib.PurePosixPath('/usr').relative_to('/etc')),
    ('path fspath', lambda m: os.fspath(m.pathlib.PurePosixPath('/tmp/x'))),
    ('path str', lambda m: str(m.pathlib.PurePosixPath('a//b/'))),
    ('path match', lambda m: m.pathlib.PurePosixPath('a/b.py').match('*.py')),
    ('path sorted', lambda m: sorted([m.pathlib.PurePosixPath('b'),
                                      m.pathlib.PurePosixPath('a')])),
    ('path hash', lambda m: hash(m.pathlib.PurePosixPath('/x'))),
    ('path exists', lambda m: m.pathlib.Path(str(FIXTURES)).joinpath('isofix_basic.py').exists()),
    ('path read missing',
     lambda m: m.pathlib.Path(str(FIXTURES / 'no_such_file')).read_text()),
    # the fixture module
    ('Money add', lambda m: m.fid.Money(250) + m.fid.Money(199)),
    ('Money add int', lambda m: m.fid.Money(100) + 5),
    ('Money rmul', lambda m: 3 * m.fid.Money(7)),
    ('Money mixed currencies', lambda m: m.fid.Money(100, 'USD') + m.fid.Money(1)),
    ('Money f-string spec', lambda m: f'{m.fid.Money(12345):,.1f}'),
    ('Money str', lambda m: str(m.fid.Money(5))),
    ('Money round', lambda m: round(m.fid.Money(1234), 1)),
    ('Money divmod', lambda m: divmod(m.fid.Money(1001), 4)),
    ('Money sorted', lambda m: sorted([m.fid.Money(3), m.fid.Money(1), m.fid.Money(2)])),
    ('Money compare currencies', lambda m: m.fid.Money(1) < m.fid.Money(2, 'USD')),
    ('Money reflected gt', lambda m: m.fid.Money(1) > m.fid.Money(2)),
    ('Money hash', lambda m: hash(m.fid.Money(5))),
    ('Money bool', lambda m: bool(m.fid.Money(0))),
    ('Money bad cents', lambda m: m.fid.Money(2.5)),
    ('Money in-place add', money_inplace_add),
    ('Money dir', lambda m: sorted_dir(m.fid.Money(1))),
    ('Money docstring', lambda m: m.fid.Money(1).__doc__),
    ('Money vars', lambda m: vars(m.fid.Money(5))),
    ('Money class dir', lambda m: sorted_dir(m.fid.Money)),
    ('Money class name', lambda m: (m.fid.Money.__name__, m.fid.Money.__qualname__)),
    ('Box len', lambda m: len(m.fid.Box(1, 2, 3))),
    ('Box slice', lambda m: m.fid.Box(1, 2, 3)[0:2]),
    ('Box index error', lambda m: m.fid.Box(1, 2, 3)[5]),
    ('Box writes', box_writes),
    ('Box max', lambda m: max(m.fid.Box(3, 9, 2))),
    ('SizedSequence reversed', lambda m: list(reversed(m.fid.SizedSequence(1, 2, 3)))),
    ('SequenceOnly contains', lambda m: 2 in m.fid.SequenceOnly(1, 2)),
    ('SequenceOnly len', lambda m: len(m.fid.SequenceOnly())),
    ('SequenceOnly reversed', lambda m: reversed(m.fid.SequenceOnly(1))),
    ('IterableOnly contains', lambda m: 3 in m.fid.IterableOnly(1, 2)),
    ('SizedOnly bool', lambda m: bool(m.fid.SizedOnly(0))),
    ('BadBool bool', lambda m: bool(m.fid.BadBool())),
    ('BadLen len', lambda m: len(m.fid.BadLen())),
    ('Unhashable hash', lambda m: hash(m.fid.Unhashable())),
    ('Blocked iter', lambda m: list(iter(m.fid.Blocked()))),
    ('Blocked reversed', lambda m: list(reversed(m.fid.Blocked()))),
    ('Blocked contains', lambda m: 'a' in m.fid.Blocked()),
    ('Blocked getitem', lambda m: m.fid.Blocked()[1]),
    ('Recorder as list index', lambda m: ['a', 'b', 'c'][m.fid.Recorder()]),
    ('Recorder operator.index', lambda m: operator.index(m.fid.Recorder())),
    ('Declines add', lambda m: m.fid.Declines() + 1),
    ('Declines in-place add', declines_iadd),
    ('TakesRight radd', lambda m: 5 + m.fid.TakesRight()),
    ('TakesRight add', lambda m: m.fid.TakesRight() + 5),
    ('Ticker list', lambda m: list(m.fid.Ticker(3))),
    ('Ticker next default', lambda m: next(m.fid.Ticker(0), 'done')),
    ('Caller call', lambda m: m.fid.Caller()(1, x=2)),
    ('Accumulator +=', accumulator_iadd),
    ('Accumulator -=', accumulator_isub),
    ('Accumulator *=', accumulator_imul),
    ('Accumulator |= fallback', accumulator_ior),
    ('Manager suppresses', manager_suppresses),
    ('Manager propagates', manager_propagates),
    ('generator conversation', talker_conversation),
    ('generator uncaught throw', talker_uncaught_throw),
    ('generator exhausted', exhausted_generator),
    ('generator list', lambda m: list(m.fid.lazy(4))),
]


def outcome(row, namespace):
    """('value', result) or ('raised', exception) of one row."""
    try:
        return 'value', row(namespace)
    except Exception as error:  # noqa: BLE001 - the exception is the outcome being compared
        return 'raised', error


BY_VALUE_KINDS = (type(None), bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
                  set, frozenset)


def same_value(local, remote):
    """A reason the remote result differs from the local one, or None when they are the same."""
    if isproxy(remote):
        if type(local) in BY_VALUE_KINDS:
            return f'crossed by reference, but {type(local).__name__} crosses by value'
        # byvalue() pickles in the child, and pickling caches copyreg data on the class
        # (__slotnames__, which dir() then lists): pickle here too, so both sides stay alike.
        try:
            pickle.dumps(local)
        except Exception:  # noqa: BLE001 - only the side effect matters
            pass
        try:
            copy = byvalue(remote)
        except Exception:  # noqa: BLE001 - not copyable: fall back to the type name and repr
            if type(remote).__name__ != type(local).__name__:
                return f'proxy of {type(remote).__name__}, local {type(local).__name__}'
            if repr(remote) != repr(local):
                return f'repr {repr(remote)!r} != {repr(local)!r}'
            return None
        if type(copy) is not type(local) or copy != local:
            return f'copy {copy!r} ({type(copy).__name__}) != {local!r}'
        return None
    if type(remote) is not type(local):
        return f'type {type(remote).__name__} != {type(local).__name__}'
    if isinstance(local, float):
        if math.isnan(local) and math.isnan(remote):
            return None
        return None if local == remote else f'{remote!r} != {local!r}'
    if isinstance(local, (list, tuple)):
        if len(local) != len(remote):
            return f'length {len(remote)} != {len(local)}'
        for index, (a, b) in enumerate(zip(local, remote)):
            reason = same_value(a, b)
            if reason:
                return f'[{index}]: {reason}'
        return None
    if isinstance(local, dict):
        if list(local) != list(remote):
            return f'keys {list(remote)!r} != {list(local)!r}'
        for key in local:
            reason = same_value(local[key], remote[key])
            if reason:
                return f'[{key!r}]: {reason}'
        return None
    return None if local == remote else f'{remote!r} != {local!r}'


def builtin_bases(cls):
    return [base for base in cls.__mro__ if base.__module__ == 'builtins']


def same_exception_type(local, remote):
    """A reason the remote exception's class differs from the local one's, or None. A builtin class
    must be the very class; a class of a module is mirrored by a class of the same name and module
    with the same builtin bases."""
    local_type, remote_type = type(local), type(remote)
    if local_type.__module__ == 'builtins':
        if remote_type is local_type:
            return None
        return f'raised {remote_type.__qualname__}, local raised {local_type.__qualname__}'
    if (remote_type.__name__, remote_type.__module__) != (local_type.__name__,
                                                          local_type.__module__):
        return (f'raised {remote_type.__module__}.{remote_type.__name__}, local raised '
                f'{local_type.__module__}.{local_type.__name__}')
    if builtin_bases(remote_type) != builtin_bases(local_type):
        return f'builtin bases {builtin_bases(remote_type)} != {builtin_bases(local_type)}'
    return None


def difference(local, remote):
    (local_kind, local_value), (remote_kind, remote_value) = local, remote
    if local_kind != remote_kind:
        return (f'local {local_kind} {local_value!r}, isolated {remote_kind} '
                f'{type(remote_value).__name__}: {remote_value!r}')
    if local_kind == 'raised':
        return same_exception_type(local_value, remote_value)
    return same_value(local_value, remote_value)


@pytest.fixture
def namespaces(ctx):
    return local_namespace(), isolated_namespace(ctx)


def test_the_row_ids_are_unique_and_the_table_is_large_enough():
    ids = [name for name, _ in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) >= MIN_ROWS


def test_every_operation_on_proxies_matches_the_same_operation_on_local_objects(namespaces):
    local, remote = namespaces
    assert isproxy(remote.collections.deque())  # the isolated run really uses proxies
    assert not isproxy(local.collections.deque())
    differences = []
    for name, row in ROWS:
        reason = difference(outcome(row, local), outcome(row, remote))
        if reason:
            differences.append(f'{name}: {reason}')
    print(f'differential: {len(ROWS)} operations, {len(ROWS) - len(differences)} identical')
    assert not differences, f'{len(differences)} of {len(ROWS)} rows differ:\n' + '\n'.join(
        differences)
