"""Large values crossing both ways: out of band in sealed memfds, or (child to parent) copied
straight from the child's memory. Content survives, the child keeps what it sent until the parent
has decoded it (even when decoding it calls back) and then lets go, a child lying about its memory
or about what it decoded is a protocol error, and a child whose memory the parent may not read
still gets its values across."""

import ctypes
import hashlib
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from process_isolation import ClientStateError, ProcessTerminationError, ProtocolError, byvalue
from process_isolation import context as context_module

from conftest import FIXTURES, child_pids

SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'
KIB = 1 << 10
MIB = 1 << 20
MAX_BUFFER_BYTES = 1 << 30  # protocol/limits.h kMaxBufferBytes


def pattern(size, seed):
    """What isofix_bulk.pattern(size, seed) makes in the child."""
    return random.Random(seed).randbytes(size)


@pytest.fixture
def bulk(ctx):
    return ctx.load_module('isofix_bulk')


# Around both thresholds (64 KiB for a span from the child, 1 MiB for a memfd), and large.
SIZES = [64 * KIB - 1, 64 * KIB, MIB - 1, MIB, 3 * MIB + 5, 64 * MIB + 3]


@pytest.mark.parametrize('size', SIZES)
def test_bytes_cross_from_the_child_intact(bulk, size):
    data = bulk.fresh_bytes(size, seed=size)
    assert type(data) is bytes
    assert data == pattern(size, size)


@pytest.fixture
def fork_server():
    """The process-wide fork server, started before a test's own fd accounting and stopped after
    it, so the leak checks see nothing of it."""
    context_module._get_fork_server(60.0)
    yield
    context_module._stop_fork_server()


@pytest.mark.parametrize('start_method', ['fork', 'forkserver', 'spawn'])
def test_large_bytes_cross_from_a_child_of_every_start_method(fork_server, new_context,
                                                              start_method):
    # A fork server's child is not ours but its: the parent reads its memory all the same.
    bulk = new_context(start_method=start_method).load_module('isofix_bulk')
    assert bulk.fresh_bytes(3 * MIB, seed=3) == pattern(3 * MIB, 3)
    # Every child puts its large objects in huge pages, which the parent copies fastest.
    assert bulk.advised_huge_pages(16 * MIB)


@pytest.mark.parametrize('size', [64 * KIB, MIB, 3 * MIB + 5, 9 * MIB])  # pread, and mmap
def test_a_bytearray_crosses_from_the_child_intact(bulk, size):
    data = bulk.fresh_bytearray(size, seed=size)
    assert type(data) is bytearray
    assert data == pattern(size, size)


@pytest.mark.parametrize('size', [64 * KIB, MIB, 64 * MIB + 3])
@pytest.mark.parametrize('kind', [bytes, bytearray])
def test_bytes_and_bytearrays_cross_to_the_child_intact(bulk, size, kind):
    data = kind(pattern(size, size))
    assert bulk.describe(data) == (kind.__name__, size, hashlib.sha256(data).hexdigest())


def test_many_large_values_in_one_answer_all_arrive(bulk):
    sizes = [64 * KIB, 2 * MIB, 100 * KIB, 5 * MIB, 10]
    assert bulk.fresh_many(sizes) == [pattern(size, seed) for seed, size in enumerate(sizes)]


def test_a_result_only_the_runtime_holds_stays_readable_until_the_parent_has_copied_it(bulk):
    # Each result is dropped by the child's code as soon as it is returned: only the runtime's
    # pin keeps its memory (64 MiB: a mapping of its own, unmapped when freed) until the parent
    # has read it.
    for seed in range(3):
        assert bulk.fresh_bytes(64 * MIB, seed) == pattern(64 * MIB, seed)


@pytest.mark.parametrize('shape,order,dtype', [
    ((8 * MIB,), 'C', 'float64'),       # 64 MiB
    ((1024, 512), 'F', 'float64'),      # 4 MiB, Fortran order
    ((3 * MIB + 7,), 'C', 'int8'),      # odd size
    ((100,), 'C', 'int16'),             # small: inside the pickle
])
def test_byvalue_copies_a_large_numpy_array_intact(bulk, shape, order, dtype):
    numpy = pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    itemsize = numpy.dtype(dtype).itemsize
    size = int(numpy.prod(shape)) * itemsize
    remote = bulk.fresh_array(size, seed=size, dtype=dtype, shape=shape, order=order)
    copy = byvalue(remote)
    expected = numpy.asarray(
        numpy.frombuffer(pattern(size, size), dtype=dtype).reshape(shape), order=order)
    assert type(copy) is numpy.ndarray
    assert copy.shape == shape and copy.dtype == numpy.dtype(dtype)
    assert copy.tobytes() == expected.tobytes()  # bit for bit (random floats include NaNs)
    assert copy.flags.writeable
    copy[...] = 0  # the copy is the parent's own
    assert byvalue(remote).tobytes() == expected.tobytes()


def test_the_child_lets_go_of_a_sent_array_once_the_parent_moves_on(bulk):
    numpy = pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    remote = bulk.tracked_array(16 * MIB, seed=7)
    copy = byvalue(remote)
    assert type(copy) is numpy.ndarray and copy.tobytes() == pattern(16 * MIB, 7)
    del remote  # its release rides behind the next request
    assert not bulk.tracked_alive()  # neither the export nor the span's pin holds it now


def test_spans_stay_pinned_while_decoding_their_message_calls_back(bulk):
    # Each key is a child object: the parent hashes its proxy (a request to the child) while it
    # is still decoding the answer, before it has read the spans of the later values. The child
    # must keep them all until the parent says it has decoded the whole answer. (64 MiB: each
    # value is a mapping of its own, unmapped as soon as it is let go.)
    keyed = bulk.fresh_keyed(64 * MIB, 3)
    assert sorted((key.n, value == pattern(64 * MIB, key.n)) for key, value in keyed.items()) == [
        (0, True), (1, True), (2, True)]


# A child that lies about its memory. Requests written by hand (the `capnp` tool encodes them)
# carry a span; the runtime's own answer carries one in the last test.

def encode(text):
    capnp = shutil.which('capnp')
    if capnp is None:
        pytest.skip('the capnp tool (Debian package capnproto) is needed to write a message '
                    'by hand')
    encoded = subprocess.run([capnp, 'encode', str(SCHEMA), 'Message'], input=text.encode(),
                             capture_output=True, timeout=60)
    assert encoded.returncode == 0, encoded.stderr.decode()
    return encoded.stdout


def span_request(address, size):
    return encode(f'(request = (callId = 77, op = repr, target = 0, args = '
                  f'[(buffer = (kind = bytes, size = {size}, address = {address}))]))')


def assert_killed_for_lying(ctx, call, what):
    pid = ctx.pid
    with pytest.raises(ProtocolError) as caught:
        call()
    error = caught.value
    assert isinstance(error, ProcessTerminationError)
    assert error.pid == pid
    assert 'broke the protocol' in str(error)  # (killed, or it saw the socket close first)
    assert what in str(error)
    assert pid not in child_pids()
    with pytest.raises(ClientStateError):
        call()


@pytest.fixture
def liar(ctx):
    return ctx.load_module('isofix_span_liar')


@pytest.fixture
def raw(ctx):
    return ctx.load_module('isofix_raw_request')


def test_a_span_at_an_address_the_child_does_not_have_is_a_protocol_error(ctx, raw, new_context):
    frame = span_request(address=16, size=MIB)
    assert_killed_for_lying(ctx, lambda: raw.exchange(frame), 'does not have')
    # The parent is fine: a new child works.
    assert new_context().load_module('isofix_bulk').fresh_bytes(MIB, 1) == pattern(MIB, 1)


def test_a_span_over_the_size_limit_is_refused_before_anything_is_read(ctx, liar, raw):
    address, size = liar.guarded_region(64 * KIB)
    frame = span_request(address, MAX_BUFFER_BYTES + 1)
    assert_killed_for_lying(ctx, lambda: raw.exchange(frame), 'over the size limit')


def test_a_span_longer_than_the_childs_memory_is_a_protocol_error(ctx, liar, raw):
    address, size = liar.guarded_region(64 * KIB)
    frame = span_request(address, size + 1)
    assert_killed_for_lying(ctx, lambda: raw.exchange(frame), 'ends outside')


@pytest.mark.parametrize('claimed', [4_000_000_000, (1 << 32) - 1])
def test_a_child_that_claims_to_have_decoded_frames_never_sent_breaks_the_protocol(ctx, raw,
                                                                                  claimed):
    # Far ahead, and (modulo 2^32) just behind zero: either would let go of spans early.
    frame = encode(f'(decodedFrames = {claimed}, request = (callId = 77, op = repr, target = 0))')
    assert_killed_for_lying(ctx, lambda: raw.exchange(frame), 'decoded more frames')


def test_a_span_with_unreadable_pages_inside_is_a_protocol_error(ctx, liar):
    # The runtime's own answer: both ends readable, the middle not.
    assert_killed_for_lying(ctx, lambda: liar.holed_bytes(8 * MIB), 'longer than the memory')


# The start of a fresh interpreter that plays the parent without CAP_SYS_PTRACE (held when we run
# as root), the capability to read any process: it gives it up for itself and (from its bounding
# set) for every program it starts, so spawned children and the fork server lack it too. Without
# it, a process that made itself non-dumpable cannot be read by the other side.

DROP_PTRACE = textwrap.dedent('''
    import ctypes, os, random, sys
    libc = ctypes.CDLL(None, use_errno=True)

    class CapHeader(ctypes.Structure):
        _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),
                    ('inheritable', ctypes.c_uint32)]

    CAP_SYS_PTRACE, PR_CAPBSET_DROP, PR_SET_DUMPABLE = 19, 24, 4
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0:
        assert ctypes.get_errno() == 1, ctypes.get_errno()  # EPERM: never had it
    header, data = CapHeader(0x20080522, 0), (CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
    for field in ('effective', 'permitted', 'inheritable'):
        setattr(data[0], field, getattr(data[0], field) & ~(1 << CAP_SYS_PTRACE))
    assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()

    from process_isolation import IsolationContext
    from process_isolation import context as context_module

    def pattern(size, seed):
        return random.Random(seed).randbytes(size)

    def undumpable():
        assert libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0, ctypes.get_errno()
''')


# A child whose memory the parent may not read (it made itself non-dumpable). The parent must
# lack CAP_SYS_PTRACE for that, so this runs in a fresh interpreter that gives it up first.

NOT_READABLE = DROP_PTRACE + textwrap.dedent('''
    import errno
    import numpy
    from process_isolation import byvalue

    class iovec(ctypes.Structure):
        _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]

    def readable(pid, address):
        into = ctypes.create_string_buffer(1)
        local, remote = iovec(ctypes.addressof(into), 1), iovec(address, 1)
        n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        return n == 1 or ctypes.get_errno()

    with IsolationContext(paths=[sys.argv[1]], timeout=60) as ctx:
        bulk = ctx.load_module('isofix_bulk')
        assert bulk.fresh_bytes(2 << 20, 1) == pattern(2 << 20, 1)   # read directly
        bulk.make_undumpable()
        # Its memory is closed to us now (any address: the check comes first).
        assert readable(ctx.pid, 4096) == errno.EPERM, readable(ctx.pid, 4096)
        for seed, size in enumerate([2 << 20, 100 << 10, 64 << 20]):
            assert bulk.fresh_bytes(size, seed) == pattern(size, seed), size
        array = byvalue(bulk.fresh_array(8 << 20, 5))
        assert type(array) is numpy.ndarray and array.tobytes() == pattern(8 << 20, 5)
        assert bulk.describe(b'z' * (3 << 20))[1] == 3 << 20   # and the other way
    print('ok')
''')


def test_values_still_cross_when_the_parent_may_not_read_the_childs_memory():
    pytest.importorskip('numpy', reason='numpy is an optional test dependency')
    done = subprocess.run([sys.executable, '-c', NOT_READABLE, str(FIXTURES)],
                          capture_output=True, timeout=240, cwd='/')
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert done.stdout.decode().split() == ['ok']


# From the parent: large bytes go to a child that can read the parent's memory as spans of it
# (Setup.parentPid, Hello.readsParentMemory), which the child copies itself.

def sha(data):
    return hashlib.sha256(data).hexdigest()


def described(data):
    """What isofix_bulk.describe(data) answers in the child."""
    return (type(data).__name__, len(data), sha(data))


def sent(ctx):
    """How many values the parent has sent ctx's child as spans and in memfds so far."""
    return ctx._connection.sent_buffers()


@pytest.mark.parametrize('size', SIZES)
def test_bytes_cross_to_the_child_intact_as_spans_from_64_kib(ctx, bulk, size):
    assert ctx._connection.parent_spans
    data = pattern(size, size)
    references = sys.getrefcount(data)
    before = sent(ctx)
    assert bulk.describe(data) == described(data)
    spans = 1 if size >= 64 * KIB else 0
    assert sent(ctx) == {'spans': before['spans'] + spans, 'memfds': before['memfds']}
    # Let go as soon as the child's answer said it had decoded the request.
    assert ctx._connection.pinned_spans() == 0
    assert sys.getrefcount(data) == references


@pytest.mark.parametrize('start_method', ['fork', 'forkserver', 'spawn'])
def test_large_bytes_go_to_a_child_of_every_start_method_as_spans_and_come_back(
        fork_server, new_context, start_method):
    context = new_context(start_method=start_method)
    bulk = context.load_module('isofix_bulk')
    assert context._connection.parent_spans  # it read the parent's probe
    for size in [64 * KIB, 3 * MIB + 5]:
        data = pattern(size, 3)
        assert bulk.describe(data) == described(data)
        assert bulk.echo(data) == data  # and back, a span of the child's memory
    assert sent(context)['spans'] == 4 and sent(context)['memfds'] == 0


def test_bytes_in_nested_values_and_keyword_arguments_cross_as_spans(ctx, bulk):
    a, b, c, small = pattern(MIB, 1), pattern(5 * MIB, 2), pattern(100 * KIB, 3), b'x' * 100
    before = sent(ctx)['spans']
    answer = bulk.digest_arguments([a, {'k': (b, small)}], key=c)
    assert answer == ([[described(a), [(described(b), described(small))]]], [('key', described(c))])
    assert sent(ctx)['spans'] == before + 3


def test_a_callbacks_answer_crosses_to_the_child_as_a_span_the_parent_holds_until_it_is_read(
        ctx, bulk):
    # Each answer is made fresh and dropped by the parent as soon as it is sent: only the pin
    # keeps it until the child has read it.
    before = sent(ctx)['spans']
    for size in [64 * KIB, 2 * MIB, 64 * MIB + 3]:
        assert bulk.call_and_digest(pattern, size, 5) == described(pattern(size, 5))
    assert bulk.call_and_digest(lambda: [pattern(MIB, 6), {'x': pattern(MIB, 7)}]) == [
        described(pattern(MIB, 6)), [described(pattern(MIB, 7))]]
    assert sent(ctx)['spans'] == before + 5
    assert ctx._connection.pinned_spans() == 0


class ParentKey:
    """A parent object as a dict key: the child hashes its proxy (asking the parent) while it is
    still decoding the dict, before it has read the spans of the values after it."""

    def __init__(self, n, seen, connection):
        self.n, self.seen, self.connection = n, seen, connection

    def __hash__(self):
        self.seen.append(self.connection.pinned_spans())
        return self.n


def test_the_parent_keeps_its_spans_until_the_child_has_decoded_their_message(ctx, bulk):
    seen = []

    def answer():
        # Fresh 64 MiB values: each its own mapping, unmapped once the parent lets it go.
        return {ParentKey(n, seen, ctx._connection): pattern(64 * MIB, n) for n in range(3)}

    assert bulk.call_and_digest(answer) == [described(pattern(64 * MIB, n)) for n in range(3)]
    # The parent hashed each key once making the dict; the child's three hashes came while it
    # decoded the answer: all three spans were still pinned for each.
    assert seen[-3:] == [3, 3, 3]
    assert ctx._connection.pinned_spans() == 0


def test_a_bytearray_never_goes_to_the_child_as_a_span(ctx, bulk):
    before = sent(ctx)
    large, small = bytearray(pattern(2 * MIB, 1)), bytearray(pattern(100 * KIB, 2))
    assert bulk.describe(large) == described(large)  # in a memfd
    assert bulk.describe(small) == described(small)  # inline
    assert sent(ctx) == {'spans': before['spans'], 'memfds': before['memfds'] + 1}


def test_a_context_can_keep_its_memory_to_itself(new_context):
    # The switch a sandboxed context will use: no pid, no addresses, memfds as before.
    context = new_context()
    context._parent_spans = False
    bulk = context.load_module('isofix_bulk')
    assert not context._connection.parent_spans
    data = pattern(3 * MIB, 1)
    assert bulk.describe(data) == described(data)
    assert bulk.describe(pattern(100 * KIB, 2))[1] == 100 * KIB  # inline
    assert sent(context) == {'spans': 0, 'memfds': 1}
    assert bulk.fresh_bytes(3 * MIB, 4) == pattern(3 * MIB, 4)  # the child still sends spans


# A hostile child asking the parent for memory: only a span the parent sent it and still holds.

def fetch_buffer_request(address, size):
    return encode(f'(request = (callId = 78, op = fetchBuffer, target = 0, '
                  f'args = [(int = {address}), (int = {size})]))')


def decoded_answer(frame):
    done = subprocess.run([shutil.which('capnp'), 'decode', '--short', str(SCHEMA), 'Message'],
                          input=frame, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def address_of(data):
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value


def test_a_child_asking_the_parent_for_memory_it_was_not_sent_is_refused(ctx, bulk, raw):
    secret = b'parent secret ' * 10000
    data = pattern(2 * MIB, 9)
    assert bulk.describe(data) == described(data)  # sent as a span, then let go
    asks = [(address_of(secret), len(secret)),      # never sent
            (address_of(data), len(data)),          # sent, but the child decoded it long ago
            (address_of(data), 4096),               # part of it
            (address_of(secret) - 4096, 8192),
            (0, 1 << 20), (1 << 62, 10)]
    for address, size in asks:
        answer = decoded_answer(raw.exchange(fetch_buffer_request(address, size))[-1])
        assert answer.startswith('(response = (callId = 78, error = '), answer
        assert 'PermissionError' in answer and 'may not ask the parent for memory' in answer
        assert 'parent secret' not in answer
    # Nothing changed for the parent: it carries on, and still sends spans.
    assert ctx._connection.parent_spans and ctx.alive
    assert bulk.describe(data) == described(data)
    assert secret == b'parent secret ' * 10000


# A child that cannot read the parent (the parent made itself non-dumpable, before its children
# started or after).

PARENT_NOT_READABLE = DROP_PTRACE + textwrap.dedent('''
    undumpable()  # before any child: none may read us
    for method in ['fork', 'forkserver', 'spawn']:
        with IsolationContext(paths=[sys.argv[1]], timeout=60, start_method=method) as ctx:
            bulk = ctx.load_module('isofix_bulk')
            assert not ctx._connection.parent_spans, method  # the child's probe said no
            for seed, size in enumerate([100 << 10, 3 << 20, 64 << 20]):
                data = pattern(size, seed)
                assert bulk.echo(data) == data, (method, size)
            assert ctx._connection.sent_buffers()['spans'] == 0
    context_module._stop_fork_server()
    print('ok')
''')


def test_a_child_that_may_not_read_the_parent_says_so_and_gets_memfds():
    done = subprocess.run([sys.executable, '-c', PARENT_NOT_READABLE, str(FIXTURES)],
                          capture_output=True, timeout=240, cwd='/')
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert done.stdout.decode().split() == ['ok']


PARENT_LATER_NOT_READABLE = DROP_PTRACE + textwrap.dedent('''
    contexts = [IsolationContext(paths=[sys.argv[1]], timeout=60, start_method=method)
                for method in ['fork', 'forkserver', 'spawn']]
    modules = [ctx.load_module('isofix_bulk') for ctx in contexts]
    for ctx, bulk in zip(contexts, modules):
        assert ctx._connection.parent_spans
        assert bulk.describe(pattern(2 << 20, 1))[2] == __import__('hashlib').sha256(
            pattern(2 << 20, 1)).hexdigest()
    undumpable()  # now the children's reads of us fail (EPERM)
    for ctx, bulk in zip(contexts, modules):
        for seed, size in enumerate([100 << 10, 64 << 20, 3 << 20]):
            data = pattern(size, seed)
            assert bulk.echo(data) == data, (ctx.start_method, size)
        # The first read failed, the child asked for the span again (the parent still held it)
        # and got it in a memfd (inline when small), and spans stopped.
        assert not ctx._connection.parent_spans
        counts = ctx._connection.sent_buffers()
        assert counts['spans'] == 2 and counts['memfds'] == 2, (ctx.start_method, counts)
        assert ctx._connection.pinned_spans() == 0
        ctx.terminate()
    context_module._stop_fork_server()
    print('ok')
''')


def test_a_read_of_the_parent_that_fails_later_is_asked_for_again_and_nothing_is_lost():
    done = subprocess.run([sys.executable, '-c', PARENT_LATER_NOT_READABLE, str(FIXTURES)],
                          capture_output=True, timeout=240, cwd='/')
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert done.stdout.decode().split() == ['ok']
