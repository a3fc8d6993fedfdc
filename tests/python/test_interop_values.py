"""Issue 12, item 3: immutable standard value types cross by value (DESIGN.md, "Values and
references"), in both directions, so remote and local values mix as local ones do: datetime
types, Decimal, Fraction, UUID, paths, members of enums the receiver has (its own member, so `is`
works), numpy scalars and dtypes when the receiver has numpy. Exact types only: a subclass, a
datetime with another tzinfo, a combination of flags stay references. Rebuilding runs no code of
the sender's (tests/cpp/proxy/value_codec_test.cpp has the hostile fields).

Cases where a parent must lack numpy, or where the child must, run in a parent of its own."""

import datetime
import decimal
import enum
import fractions
import http
import json
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import types
import uuid
from datetime import date, timedelta, timezone
from pathlib import Path

import numpy
import pytest

from conftest import FIXTURES
from process_isolation import isproxy

PARENT_SECONDS = 120
SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'

VALUES = [
    date(2024, 2, 29), datetime.time(23, 59, 59, 999999, fold=1),
    datetime.datetime(2024, 2, 29, 12, 30, 15, 250, tzinfo=timezone(timedelta(hours=-5), 'EST')),
    datetime.datetime(2021, 11, 7, 1, 30, fold=1), timedelta(days=-1, microseconds=1),
    timezone.utc, timezone(timedelta(hours=5, minutes=30)),
    decimal.Decimal('-0.00'), decimal.Decimal('1.10'), decimal.Decimal('sNaN7'),
    decimal.Decimal('-Infinity'), fractions.Fraction(-3, 7), fractions.Fraction(10 ** 40, 3),
    uuid.UUID('12345678-1234-5678-1234-567812345678'),
    uuid.UUID(int=5, is_safe=uuid.SafeUUID.safe),
    pathlib.PurePosixPath('/a/b c/\udcff'), pathlib.PureWindowsPath(r'C:\Users\x'),
    pathlib.Path('/tmp/x'),
]


def qualified(value):
    return f'{type(value).__module__}.{type(value).__qualname__}'


@pytest.mark.parametrize('value', VALUES, ids=repr)
def test_a_standard_value_crosses_both_ways_by_value_with_its_exact_type(basic, value):
    assert not basic.is_proxy(value)
    assert basic.type_of(value) == qualified(value)
    back = basic.echo(value)
    assert not isproxy(back)
    assert type(back) is type(value)
    assert repr(back) == repr(value)
    assert getattr(back, 'is_safe', None) == getattr(value, 'is_safe', None)


def test_a_remote_datetime_plus_a_local_timedelta_is_a_local_datetime(ctx):
    remote_datetime = ctx.load_module('datetime')
    when = remote_datetime.datetime(2024, 2, 28, 12, 0)
    assert not isproxy(when)
    assert when + timedelta(days=1) == datetime.datetime(2024, 2, 29, 12, 0)
    assert remote_datetime.date(2024, 3, 1) - date(2024, 2, 28) == timedelta(days=2)
    assert remote_datetime.timedelta(hours=1) * 2 == timedelta(hours=2)


def test_a_remote_decimal_plus_a_local_decimal_keeps_decimal_arithmetic(ctx):
    remote_decimal = ctx.load_module('decimal')
    total = remote_decimal.Decimal('1.10') + decimal.Decimal('2.20')
    assert type(total) is decimal.Decimal and str(total) == '3.30'
    assert remote_decimal.Decimal('1.0') == decimal.Decimal('1.00')
    remote_fractions = ctx.load_module('fractions')
    assert remote_fractions.Fraction(1, 2) + fractions.Fraction(1, 3) == fractions.Fraction(5, 6)


def test_a_local_regex_flag_reaches_the_childs_re_as_its_own_member(ctx):
    remote_re = ctx.load_module('re')
    pattern = remote_re.compile('abc', re.I)
    assert pattern.match('ABC') is not None
    assert pattern.flags & re.I
    assert remote_re.IGNORECASE is re.IGNORECASE  # and the child's member comes as ours
    assert remote_re.search('x', 'AX', flags=re.I) is not None


def test_a_datetime_made_remotely_with_the_local_utc_has_the_childs_utc(ctx):
    remote_datetime = ctx.load_module('datetime')
    when = remote_datetime.datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert when.tzinfo is timezone.utc
    assert when == datetime.datetime(2020, 1, 1, tzinfo=timezone.utc)
    basic = ctx.load_module('isofix_basic')
    assert basic.same(timezone.utc, remote_datetime.timezone.utc)  # the child's own, there


@pytest.mark.parametrize('make', [
    lambda m: m.date(2020, 1, 1), lambda m: m.datetime(2020, 1, 1, 12, tzinfo=m.timezone.utc),
    lambda m: m.timedelta(seconds=90), lambda m: m.time(1, 2, tzinfo=m.timezone.utc),
], ids=['date', 'datetime', 'timedelta', 'time'])
def test_remote_and_local_values_compare_by_value(ctx, make):
    remote, local = make(ctx.load_module('datetime')), make(datetime)
    assert remote == local and local == remote and not remote != local
    assert hash(remote) == hash(local)
    assert sorted([remote, local, local]) == [local, local, local]


def test_other_standard_values_compare_by_value(ctx):
    assert ctx.load_module('uuid').UUID(int=7) == uuid.UUID(int=7)
    remote_datetime = ctx.load_module('datetime')
    assert remote_datetime.timezone(remote_datetime.timedelta(hours=2), 'X') == timezone(
        timedelta(hours=2), 'X')
    assert ctx.load_module('pathlib').PurePosixPath('/a') / 'b' == pathlib.PurePosixPath('/a/b')
    assert ctx.load_module('fractions').Fraction(2, 4) == fractions.Fraction(1, 2)
    assert ctx.load_module('http').HTTPStatus.OK is http.HTTPStatus.OK


def test_enum_members_arrive_as_the_receivers_own_members(basic):
    for member in (re.IGNORECASE, http.HTTPStatus.NOT_FOUND, uuid.SafeUUID.safe,
                   http.HTTPMethod.GET):
        assert not basic.is_proxy(member)
        assert basic.echo(member) is member
        assert basic.same(member, type(member)[member.name])


class Planet(enum.Enum):
    EARTH = 3


def test_an_enum_member_of_a_class_the_child_lacks_crosses_by_reference_and_comes_home(ctx):
    basic = ctx.load_module('isofix_basic')  # the child is forked now
    late = types.ModuleType('isofix_late_enums')
    late.Late = enum.Enum('Late', 'A B', module='isofix_late_enums')
    sys.modules['isofix_late_enums'] = late
    try:
        assert basic.is_proxy(late.Late.A)
        assert basic.echo(late.Late.A) is late.Late.A
        assert basic.type_of(late.Late.B).endswith('isofix_late_enums.Late')  # a proxy's type
    finally:
        del sys.modules['isofix_late_enums']


def test_subclasses_other_tzinfos_and_flag_combinations_cross_by_reference(basic):
    class MyDate(date):
        pass

    class MyDecimal(decimal.Decimal):
        pass

    class Zone(datetime.tzinfo):
        def utcoffset(self, when):
            return timedelta(0)

    for value in (MyDate(2020, 1, 1), MyDecimal('1'), datetime.datetime(2020, 1, 1, tzinfo=Zone()),
                  Zone(), re.I | re.M, fractions.Fraction(2 ** 70000, 3)):
        assert basic.is_proxy(value), value
        assert basic.echo(value) is value


def test_remote_numpy_scalars_and_dtypes_arrive_as_numpy_values(ctx):
    remote_numpy = ctx.load_module('numpy')
    array = remote_numpy.arange(3)
    assert isproxy(array)
    assert array.dtype == numpy.int64 and array.dtype is numpy.dtype('int64')
    total = array.sum()
    assert type(total) is numpy.int64 and total + numpy.int64(2) == 5
    assert type(remote_numpy.float32(1.5)) is numpy.float32
    assert remote_numpy.datetime64('2020-01-01') == numpy.datetime64('2020-01-01')
    assert remote_numpy.dtype('U5') == numpy.dtype('<U5')


def test_local_numpy_scalars_and_dtypes_reach_a_child_with_numpy_as_its_own(ctx):
    remote_numpy = ctx.load_module('numpy')  # the child has numpy
    basic = ctx.load_module('isofix_basic')
    for value in (numpy.float64(2.5), numpy.bool_(True), numpy.timedelta64(5, 'ms'),
                  numpy.dtype('>i4')):
        assert not basic.is_proxy(value)
        assert basic.type_of(value) == qualified(value)
        assert basic.echo(value) == value
    assert remote_numpy.zeros(2, dtype=numpy.dtype('float32')).dtype == numpy.float32
    assert basic.is_proxy(numpy.dtype(object))
    assert basic.is_proxy(numpy.str_('s'))


def run_parent(body):
    """Runs `body` in a parent of its own and returns what it printed last, as JSON."""
    script = textwrap.dedent(f'''
        import json, sys
        sys.path.insert(0, {str(FIXTURES)!r})
        from process_isolation import IsolationContext, isproxy
        ctx = IsolationContext(paths=[{str(FIXTURES)!r}], timeout=60)
    ''') + textwrap.dedent(body)
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=PARENT_SECONDS)
    assert done.returncode == 0, f'the parent ended with {done.returncode}:\n{done.stderr[-4000:]}'
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_numpy_values_reach_a_parent_without_numpy_by_reference():
    result = run_parent('''
        assert 'numpy' not in sys.modules
        array = ctx.load_module('numpy').arange(3)
        dtype, total = array.dtype, array.sum()
        print(json.dumps({'numpy': 'numpy' in sys.modules and not isproxy(sys.modules['numpy']),
                          'proxies': [isproxy(dtype), isproxy(total)],
                          'values': [str(dtype), int(total)]}))
    ''')
    assert result == {'numpy': False, 'proxies': [True, True], 'values': ['int64', 3]}


def test_numpy_values_reach_a_child_without_numpy_by_reference_and_come_home():
    result = run_parent('''
        basic = ctx.load_module('isofix_basic')  # forked before the parent imports numpy
        import numpy
        scalar, dtype = numpy.float64(1.5), numpy.dtype('int16')
        print(json.dumps({'child_has_numpy': basic.has_module('numpy'),
                          'proxies': [basic.is_proxy(scalar), basic.is_proxy(dtype)],
                          'home': [basic.echo(scalar) is scalar, basic.echo(dtype) is dtype]}))
    ''')
    assert result == {'child_has_numpy': False, 'proxies': [True, True], 'home': [True, True]}


BAD_STANDARD_VALUES = {
    'date': '(date = (year = 2023, month = 2, day = 29))',
    'datetime': '(datetime = (date = (year = 2020, month = 1, day = 1), time = (hour = 24)))',
    'timezone': '(timezone = (offsetMicroseconds = 86400000000))',
    'Decimal': '(decimal = (digits = "12x", exponent = 0))',
    'Decimal exponent': '(decimal = (digits = "1", exponent = 1000000000000000000))',
    'Fraction': '(fraction = (numerator = "\\x01", denominator = "\\x00"))',
    'UUID': '(uuid = (bytes = "short"))',
    'numpy scalar': '(numpyScalar = (dtype = "|O", data = "12345678", original = (none = void)))',
    'numpy dtype': '(numpyDtype = (dtype = "<i8,<i8", original = (int = 1)))',
    'enum original': '(enumMember = (module = "re", qualname = "RegexFlag", name = "I",'
                     ' original = (int = 1)))',
}

REASONS = {
    'date': 'bad date', 'datetime': 'bad time', 'timezone': 'a day or more',
    'Decimal': 'bad Decimal',
    'Decimal exponent': 'bad Decimal', 'Fraction': 'not positive', 'UUID': 'bad size',
    'numpy scalar': 'outside the grammar', 'numpy dtype': 'outside the grammar',
    'enum original': 'not a ref or back',
}


def test_a_child_that_forges_bad_standard_values_gets_a_malformed_request_error(ctx):
    capnp = shutil.which('capnp')
    assert capnp is not None, 'the capnp tool (Debian package capnproto) writes the messages'
    requests = ''.join(
        f'(request = (callId = {number}, op = repr, target = 0, args = [(standard = {value})]))\n'
        for number, value in enumerate(BAD_STANDARD_VALUES.values(), start=1))
    encoded = subprocess.run([capnp, 'encode', str(SCHEMA), 'Message'], input=requests.encode(),
                             capture_output=True, timeout=60)
    assert encoded.returncode == 0, encoded.stderr.decode()
    forger = ctx.load_module('isofix_forger')
    answers = subprocess.run([capnp, 'decode', '--short', str(SCHEMA), 'Message'],
                             input=forger.exchange_each(encoded.stdout), capture_output=True,
                             timeout=60).stdout.decode().splitlines()
    assert len(answers) == len(BAD_STANDARD_VALUES)
    for answer, name in zip(answers, BAD_STANDARD_VALUES):
        assert ' error = ' in answer and 'malformed request' in answer, (name, answer[:300])
        assert REASONS[name] in answer, (name, answer[:300])
    assert ctx.load_module('isofix_basic').echo(date(2020, 1, 1)) == date(2020, 1, 1)
