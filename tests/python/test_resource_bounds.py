"""What a child can make the parent spend is bounded (memory for the large values of one message
and of one connection; the work and the time of rebuilding a byvalue copy), and a byvalue copy
never runs code the child planted where the parent imports from.

The cases that would grow, hang or compromise the parent run in a parent of their own (a fresh
interpreter), so that a regression fails the test instead of taking pytest with it."""

import collections
import datetime
import decimal
import fractions
import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path, PurePosixPath

import pytest

from process_isolation import CallTimeoutError, byvalue, timeout

from conftest import FIXTURES, child_pids

SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'
MIB = 1 << 20
GIB = 1 << 30
MAX_MESSAGE_BUFFER_BYTES = 1 << 30  # protocol/limits.h kMaxMessageBufferBytes


def run_parent(script, timeout=120, cwd=None, script_dir=None):
    """Runs `script` in a fresh interpreter (as a file in `script_dir`, which is then its
    sys.path[0], when given) and returns what it printed last, as JSON."""
    prologue = textwrap.dedent(f'''
        import json, sys
        FIXTURES = {str(FIXTURES)!r}
        def memory(field):
            with open('/proc/self/status') as status:
                for line in status:
                    if line.startswith(field + ':'):
                        return int(line.split()[1]) * 1024
    ''')
    source = prologue + textwrap.dedent(script)
    if script_dir is not None:
        path = Path(script_dir, 'parent.py')
        path.write_text(source)
        command = [sys.executable, str(path)]
    else:
        command = [sys.executable, '-c', source]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, f'the parent failed ({done.returncode}):\n{done.stderr}'
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- Memory: the large values of one message ------------------------------------------------

def flood_frame(count, size):
    """A request from the child naming the same span of `size` bytes `count` times; ADDR
    stands for its address (known once the child has mapped it)."""
    spans = ', '.join(f'(buffer = (kind = bytes, size = {size}, address = ADDR))'
                      for _ in range(count))
    return f'(request = (callId = 77, op = repr, target = 0, args = [{spans}]))'


def test_a_message_whose_spans_come_to_more_than_the_limit_ends_the_child_and_grows_the_parent_by_nothing():
    # The attack: one message naming a 1 GiB span of the child four times.
    script = '''
        import subprocess
        from process_isolation import IsolationContext, ProtocolError
        context = IsolationContext(paths=[FIXTURES], timeout=60)
        raw = context.load_module('isofix_raw_request')
        bounds = context.load_module('isofix_bounds')
        pid = context.pid
        address = bounds.untouched_region(GIB)
        text = TEXT.replace('ADDR', str(address))
        frame = subprocess.run(['capnp', 'encode', SCHEMA, 'Message'], input=text.encode(),
                               capture_output=True, check=True, timeout=60).stdout
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')  # from here VmHWM is the peak resident size since now
        before = memory('VmRSS')
        try:
            raw.exchange(frame)
            outcome = 'answered'
        except ProtocolError as error:
            outcome = str(error)
        growth = memory('VmHWM') - before
        fresh = IsolationContext(paths=[FIXTURES], timeout=60)
        print(json.dumps({'outcome': outcome, 'growth': growth, 'alive': context.alive,
                          'pid': pid, 'after': fresh.load_module('isofix_basic').add(2, 3)}))
    '''
    if shutil.which('capnp') is None:
        pytest.skip('the capnp tool (Debian package capnproto) is needed to write a message '
                    'by hand')
    result = run_parent(f'GIB = {GIB}\nSCHEMA = {str(SCHEMA)!r}\n'
                        f'TEXT = {flood_frame(4, GIB)!r}\n' + textwrap.dedent(script))
    assert 'broke the protocol' in result['outcome'], result
    assert 'over the size limit of a message' in result['outcome'], result
    assert result['growth'] < 64 * MIB, result  # not 4 GiB, nor the first 1 GiB of it
    assert not result['alive']
    assert result['after'] == 5  # the parent carries on: a new child works
    assert result['pid'] not in child_pids()


def test_answers_whose_large_values_fit_in_the_limit_cross_and_those_over_it_are_refused_in_the_child(ctx):
    bounds = ctx.load_module('isofix_bounds')
    assert [len(value) for value in bounds.large_values(3, 64 * MIB)] == [64 * MIB] * 3
    # Zero pages in the child (never written), sent as spans: over the limit together, so the
    # child refuses to send them (a ValueError here) instead of being ended for sending them.
    half = MAX_MESSAGE_BUFFER_BYTES // 2 + 1
    with pytest.raises(ValueError, match='send them in several calls'):
        bounds.large_values(2, half)
    assert ctx.alive
    assert len(bounds.large_values(1, 64 * MIB)[0]) == 64 * MIB


def test_a_value_larger_than_one_message_may_carry_is_refused_before_it_is_sent(ctx):
    basic = ctx.load_module('isofix_basic')
    too_large = bytes(MAX_MESSAGE_BUFFER_BYTES + 1)  # zero pages: costs nothing until written
    with pytest.raises(ValueError, match='send it in pieces'):
        basic.add(too_large, b'')
    assert basic.add(2, 3) == 5


# -- byvalue: work and time ------------------------------------------------------------------

def test_byvalue_refuses_a_fraction_made_from_text_at_once(ctx):
    # Fraction('1e10000000') takes seconds of CPU to make; a Fraction pickles as two ints.
    bounds = ctx.load_module('isofix_bounds')
    started = time.monotonic()
    with pytest.raises(TypeError, match='Fraction made from other arguments than two ints'):
        byvalue(bounds.FractionFromText())
    assert time.monotonic() - started < 1.5
    assert ctx.alive


def test_byvalue_refuses_a_fraction_of_ints_too_large_to_rebuild_cheaply(ctx):
    # Its gcd is quadratic: two terms of 2**20 bits take seconds.
    remote_fractions = ctx.load_module('fractions')
    remote_deque = ctx.load_module('collections').deque
    # Over kMaxFractionBits (2^16), so it stays in the child and comes by reference.
    with pytest.raises(TypeError, match='Fraction of 99658-bit terms'):
        byvalue(remote_fractions.Fraction(10 ** 30_000, 3))
    with pytest.raises(TypeError, match='int of 1328776 bits'):  # too large for any int
        byvalue(remote_fractions.Fraction(10 ** 400_000, 3))
    # A smaller one crosses by value; in a container that does not, byvalue rebuilds it.
    assert byvalue(remote_deque([remote_fractions.Fraction(10 ** 1000, 3)]))[0] * 3 == 10 ** 1000


def test_byvalue_of_a_dict_whose_key_would_take_forever_to_hash_is_refused_at_once():
    script = '''
        import time
        from process_isolation import IsolationContext, byvalue
        context = IsolationContext(paths=[FIXTURES], timeout=60)
        bounds = context.load_module('isofix_bounds')
        started = time.monotonic()
        try:
            byvalue(bounds.CostlyKey())
            outcome = 'rebuilt'
        except TypeError as error:
            outcome = str(error)
        print(json.dumps({'outcome': outcome, 'seconds': time.monotonic() - started}))
    '''
    result = run_parent(script, timeout=60)
    assert 'more work than' in result['outcome'], result
    assert result['seconds'] < 5, result


def test_byvalue_past_the_calls_timeout_raises_the_timeout_error_and_ends_the_child(ctx):
    bounds = ctx.load_module('isofix_bounds')
    pid = ctx.pid
    remote = bounds.repeated(12_000_000)  # seconds to rebuild step by step, under one to send
    started = time.monotonic()
    with pytest.raises(CallTimeoutError) as caught:
        with timeout(2):
            byvalue(remote)
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 1.5, elapsed  # the deadline, give or take a step and the ending
    assert 'Rebuilding the copy in the parent went past the timeout of 2 s' in str(caught.value)
    assert caught.value.pid == pid and caught.value.call.startswith('byvalue(')
    assert pid not in child_pids()


def test_byvalue_within_the_timeout_still_copies_a_large_list(ctx):
    bounds = ctx.load_module('isofix_bounds')
    with timeout(60):
        assert list(byvalue(bounds.floats(200_000))) == [i + 0.5 for i in range(200_000)]


# -- byvalue never runs the child's code ------------------------------------------------------

PLANTED = ['fractions', 'decimal', 'datetime', 'uuid', 'pathlib', 'collections', 'copyreg',
           'numbers', 'enum', 'operator', 're']


def test_byvalue_imports_nothing_a_child_planted_on_the_parents_path(tmp_path):
    # The parent runs as a script in `home`, its sys.path[0]; the child writes modules there
    # that would leave a marker if the parent imported them.
    home = tmp_path / 'home'
    home.mkdir()
    marker = tmp_path / 'marker'
    script = f'''
        import os
        from process_isolation import IsolationContext, byvalue
        assert sys.path[0] == {str(home)!r}, sys.path[0]
        context = IsolationContext(paths=[FIXTURES], timeout=60)
        bounds = context.load_module('isofix_bounds')
        values = [value for value in bounds.plain_values()]
        planted = bounds.plant({str(home)!r}, {PLANTED!r}, {str(marker)!r})
        copies = [repr(byvalue(value)[0]) for value in values]
        from process_isolation import isproxy
        crossed = [[repr(value), isproxy(value)] for value in bounds.standard_values()]
        print(json.dumps({{'copies': copies, 'crossed': crossed, 'planted': planted,
                          'marker': os.path.exists({str(marker)!r})}}))
    '''
    result = run_parent(script, script_dir=home)
    assert len(result['planted']) == len(PLANTED) + 1  # and parent.py
    # The reprs of the same values made here (the repr of an OrderedDict differs from 3.12 on).
    expected = [fractions.Fraction(3, 4), decimal.Decimal('1.10'),
                datetime.datetime(2024, 2, 29, 12, 30), uuid.UUID(int=5),
                PurePosixPath('/a/b'), collections.OrderedDict(a=1)]
    assert result['copies'] == [repr(value) for value in expected]
    # Standard values crossing by value are rebuilt from sys.modules too, importing nothing.
    assert result['crossed'] == [[copy, i == 5] for i, copy in enumerate(result['copies'])]
    assert not result['marker'], marker.read_text()


def test_byvalue_of_a_numpy_array_asks_the_program_to_import_numpy_when_it_has_not():
    pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    script = '''
        from process_isolation import IsolationContext, byvalue
        context = IsolationContext(paths=[FIXTURES], timeout=60)
        remote = context.load_module('isofix_bounds').array(4)
        try:
            byvalue(remote)
            outcome = 'copied'
        except TypeError as error:
            outcome = str(error)
        imported = 'numpy' in sys.modules
        import numpy
        print(json.dumps({'outcome': outcome, 'imported': imported,
                          'copy': byvalue(remote).tolist()}))
    '''
    result = run_parent(script)
    assert 'has not imported numpy: import numpy in the parent' in result['outcome'], result
    assert not result['imported']
    assert result['copy'] == [0.0, 1.0, 2.0, 3.0]
