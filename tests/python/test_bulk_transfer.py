"""Large values crossing both ways: out of band in sealed memfds, or (child to parent) copied
straight from the child's memory. Content survives, the child keeps what it sent until the parent
has decoded it (even when decoding it calls back) and then lets go, a child lying about its memory
or about what it decoded is a protocol error, and a child whose memory the parent may not read
still gets its values across."""

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
MAX_BUFFER_BYTES = 4 << 30  # protocol/limits.h kMaxBufferBytes


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


# A child whose memory the parent may not read (it made itself non-dumpable). The parent must
# lack CAP_SYS_PTRACE for that, so this runs in a fresh interpreter that gives it up first.

NOT_READABLE = textwrap.dedent('''
    import ctypes, errno, os, random, sys
    import numpy
    libc = ctypes.CDLL(None, use_errno=True)

    # Give up CAP_SYS_PTRACE (held when we run as root), the capability to read any process.
    class CapHeader(ctypes.Structure):
        _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),
                    ('inheritable', ctypes.c_uint32)]

    CAP_SYS_PTRACE = 19
    header, data = CapHeader(0x20080522, 0), (CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
    data[0].effective &= ~(1 << CAP_SYS_PTRACE)
    data[0].permitted &= ~(1 << CAP_SYS_PTRACE)
    data[0].inheritable &= ~(1 << CAP_SYS_PTRACE)
    assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
    from process_isolation import IsolationContext, byvalue

    class iovec(ctypes.Structure):
        _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]

    def readable(pid, address):
        into = ctypes.create_string_buffer(1)
        local, remote = iovec(ctypes.addressof(into), 1), iovec(address, 1)
        n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        return n == 1 or ctypes.get_errno()

    def pattern(size, seed):
        return random.Random(seed).randbytes(size)

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
