"""A child that writes what it likes to its parent (into the shared rings, or on its socket):
the parent raises a clear error, kills the child when it broke the protocol, never allocates
what a header claims, and carries on."""

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from process_isolation import ClientStateError, ProcessTerminationError, ProtocolError

from conftest import child_pids

SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'


def frame_header(*segment_words):
    """A stream frame header: segment count - 1, the sizes in words, padding to 8 bytes."""
    header = struct.pack('<I', len(segment_words) - 1) + b''.join(
        struct.pack('<I', words) for words in segment_words)
    return header + b'\0' * (-len(header) % 8)


def rss_kib():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS')


def assert_killed_for_breaking_the_protocol(ctx, hostile, data, what):
    pid = ctx.pid
    started = time.monotonic()
    with pytest.raises(ProtocolError) as caught:
        hostile.send_then_wait(data)
    error = caught.value
    assert isinstance(error, ProcessTerminationError)
    assert time.monotonic() - started < 10  # not the child's 30 s wait: the parent ended it
    assert error.pid == pid
    assert error.signal_name == 'SIGKILL'
    assert what in str(error)
    assert 'broke the protocol' in str(error)
    assert error.call.startswith('isofix_hostile.send_then_wait(')
    assert pid not in child_pids()
    with pytest.raises(ClientStateError):
        hostile.send_then_wait(b'')


@pytest.fixture(params=['shm', 'socket'])
def ctx(request, new_context):
    """The hostile child's context, once with each transport: the frames it forges travel
    through the shared rings, or over the socket."""
    return new_context(transport=request.param)


@pytest.fixture
def hostile(ctx):
    return ctx.load_module('isofix_hostile')


def test_a_header_naming_too_many_segments_is_refused_before_anything_is_allocated(ctx, hostile):
    before = rss_kib()
    assert_killed_for_breaking_the_protocol(ctx, hostile, struct.pack('<I', 0xFFFFFFFF),
                                            'too many segments')
    assert rss_kib() - before < 64 * 1024


def test_a_header_claiming_a_huge_frame_is_refused_before_anything_is_allocated(ctx, hostile):
    before = rss_kib()
    # One segment of 2^32 - 1 words: 32 GiB.
    assert_killed_for_breaking_the_protocol(ctx, hostile, frame_header(0xFFFFFFFF),
                                            'larger than the limit')
    assert rss_kib() - before < 64 * 1024


def test_garbage_inside_a_well_framed_message_is_a_protocol_error(ctx, hostile):
    assert_killed_for_breaking_the_protocol(ctx, hostile, frame_header(2) + b'\xff' * 16,
                                            'broke the protocol')


def test_a_message_cut_off_by_the_childs_death_is_a_termination_not_a_hang(ctx, hostile):
    pid = ctx.pid
    started = time.monotonic()
    with pytest.raises(ProcessTerminationError) as caught:
        hostile.send_then_exit(frame_header(100) + b'\0' * 80)  # 80 of 800 bytes
    assert time.monotonic() - started < 10
    assert not isinstance(caught.value, ProtocolError)
    assert caught.value.exit_code == 0
    assert pid not in child_pids()


def test_the_parent_answers_an_over_deep_request_with_an_error_and_goes_on(ctx):
    capnp = shutil.which('capnp')
    if capnp is None:
        pytest.skip('the capnp tool (Debian package capnproto) is needed to write a message '
                    'by hand')
    depth = 400  # well past the reader's nesting limit
    value = '(none = void)'
    for _ in range(depth):
        value = f'(list = [{value}])'
    text = f'(request = (callId = 77, op = repr, target = 0, args = [{value}]))'
    encoded = subprocess.run([capnp, 'encode', str(SCHEMA), 'Message'], input=text.encode(),
                             capture_output=True, timeout=60)
    assert encoded.returncode == 0, encoded.stderr.decode()
    raw = ctx.load_module('isofix_raw_request')
    frames = raw.exchange(encoded.stdout)
    decoded = subprocess.run([capnp, 'decode', '--short', str(SCHEMA), 'Message'],
                             input=frames[-1], capture_output=True, timeout=60)
    answer = decoded.stdout.decode()
    assert answer.startswith('(response = (callId = 77, error = '), answer
    assert 'malformed request' in answer and 'nested' in answer
    # Both ends still agree.
    assert ctx.load_module('isofix_basic').add(2, 3) == 5


@pytest.fixture
def ring_hostile(new_context):
    """A hostile child whose connection uses the shared rings."""
    context = new_context(transport='shm')
    hostile = context.load_module('isofix_hostile')
    assert hostile.uses_rings()
    return context, hostile


def test_bytes_on_the_socket_beside_the_rings_break_the_protocol(ring_hostile):
    ctx, hostile = ring_hostile
    assert_killed_for_breaking_the_protocol_by(
        ctx, lambda: hostile.socket_then_wait(b'not a wake-up'), 'outside the protocol')


@pytest.mark.parametrize('offset', [1 << 40, -8, (1 << 64) - 1])
def test_a_ring_cursor_moved_where_it_cannot_be_is_a_protocol_error(ring_hostile, offset):
    ctx, hostile = ring_hostile
    # The child's writer cursor of the ring it writes: ahead by more than the ring holds, or
    # behind what the parent already read.
    assert_killed_for_breaking_the_protocol_by(
        ctx, lambda: hostile.move_cursor_then_wait(1, 0, offset), 'corrupted the shared ring')


def test_a_reader_cursor_moved_ahead_of_what_the_parent_wrote_is_a_protocol_error(ring_hostile):
    ctx, hostile = ring_hostile
    move = hostile.move_cursor_then_wait

    def claim_then_call_again():
        # The child claims to have read more of the parent's ring than the parent ever wrote;
        # the parent finds out when it next looks at that cursor: while it waits for this
        # answer (to see whether the child took its request), or at the latest when it writes
        # the next request.
        move(0, 1, 1 << 20, 0)
        move(0, 1, 0, 0)

    assert_killed_for_breaking_the_protocol_by(ctx, claim_then_call_again,
                                               'corrupted the shared ring')


def assert_killed_for_breaking_the_protocol_by(ctx, misdeed, what):
    pid = ctx.pid
    started = time.monotonic()
    with pytest.raises(ProtocolError) as caught:
        misdeed()
    assert time.monotonic() - started < 10  # not the child's 30 s wait: the parent ended it
    assert what in str(caught.value)
    assert 'broke the protocol' in str(caught.value)
    assert pid not in child_pids()
