"""The transports: by default frames travel through shared-memory rings (the socket carries
only wake-ups and stays the death detector); `transport='socket'` keeps everything on the
socket. Both carry every kind of message; an idle child does not poll; nothing made for one
child's rings is seen by any other process."""

import ctypes.util
import os
import pathlib
import subprocess
import sys
import time

import pytest

from process_isolation import IsolationContext


# How long a child must stay idle while its CPU time is watched, and the CPU time it may use
# meanwhile (an idle child sleeps on its socket; one that kept polling would use all of it).
IDLE_SECONDS = 0.5
IDLE_CPU_SECONDS = 0.05

both_transports = pytest.mark.parametrize('transport', ['shm', 'socket'], indirect=True)


def test_the_default_transport_is_shared_memory(ctx):
    introspect = ctx.load_module('isofix_introspect')
    assert ctx._connection.transport == 'shm'
    assert introspect.maps_rings()


def test_the_socket_transport_maps_no_rings(new_context):
    ctx = new_context(transport='socket')
    introspect = ctx.load_module('isofix_introspect')
    assert ctx._connection.transport == 'socket'
    assert not introspect.maps_rings()


def test_an_unknown_transport_is_refused():
    with pytest.raises(ValueError, match='transport'):
        IsolationContext(transport='pigeon')


@both_transports
def test_an_idle_child_does_not_poll(ctx):
    introspect = ctx.load_module('isofix_introspect')
    for _ in range(100):
        introspect.pid()  # leaves the child's wait in its most eager state
    before = introspect.cpu_seconds()
    time.sleep(IDLE_SECONDS)  # not a synchronisation: the interval whose CPU use is measured
    used = introspect.cpu_seconds() - before
    assert used < IDLE_CPU_SECONDS, f'the idle child used {used:.3f} s of CPU in {IDLE_SECONDS} s'


@both_transports
def test_values_larger_than_a_ring_cross_both_ways(ctx):
    basic = ctx.load_module('isofix_basic')
    # Below the size that travels out of band, above the 512 KiB a ring holds: streamed.
    blob = bytes(range(256)) * 3500
    assert len(blob) > 512 * 1024
    assert basic.echo(blob) == blob
    nested = [blob[:1000]] * 900
    assert basic.echo(nested) == nested


def test_a_process_forked_from_the_parent_has_no_copy_of_the_rings(ctx):
    ctx.load_module('isofix_basic')
    pid = os.fork()
    if pid == 0:
        with open('/proc/self/maps') as maps:
            found = any('process_isolation-rings' in line for line in maps)
        os._exit(1 if found else 0)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail('the forked process did not exit')
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0, 'a forked copy of the parent maps the rings'


def test_a_grandchild_has_no_copy_of_its_parents_rings(ctx):
    introspect = ctx.load_module('isofix_introspect')
    assert introspect.maps_rings()
    assert not introspect.grandchild_maps_rings()


@both_transports
def test_a_held_call_is_one_request_and_one_response_on_either_transport(ctx):
    basic = ctx.load_module('isofix_basic')
    add = basic.add
    counts = ctx._connection.frame_counts
    before = counts()
    assert add(2, 3) == 5
    after = counts()
    sent = {kind: after['sent'][kind] - before['sent'][kind] for kind in after['sent']}
    received = {kind: after['received'][kind] - before['received'][kind]
                for kind in after['received']}
    assert sent['request'] == 1 and received['response'] == 1
    assert sum(sent.values()) == 1 and sum(received.values()) == 1


NO_MEMFD = '''
import ctypes, errno, os, sys
seccomp = ctypes.CDLL(sys.argv[2])
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
SCMP_ACT_ALLOW, SCMP_ACT_ERRNO = 0x7fff0000, 0x00050000
policy = seccomp.seccomp_init(SCMP_ACT_ALLOW)
number = seccomp.seccomp_syscall_resolve_name(b'memfd_create')
assert policy and number >= 0
assert seccomp.seccomp_rule_add(policy, SCMP_ACT_ERRNO | errno.EPERM, number, 0) == 0
assert seccomp.seccomp_load(policy) == 0  # this process and every child it forks
try:
    os.memfd_create('probe')
    raise SystemExit('memfd_create still works')
except PermissionError:
    pass

from process_isolation import IsolationContext
with IsolationContext(paths=[sys.argv[1]], timeout=60) as ctx:
    basic = ctx.load_module('isofix_basic')
    # No memfd for the rings: the frames stay on the socket, and nothing else changes.
    assert ctx._connection.transport == 'socket', ctx._connection.transport
    assert basic.echo([1, 'two', (3.0, None)]) == [1, 'two', (3.0, None)]
    blob = bytes(range(256)) * 8192           # 2 MiB: a span each way
    assert basic.echo(blob) == blob
    grown = bytearray(blob)                   # a bytearray would go in a memfd: inline instead
    assert basic.echo(grown) == grown
    assert ctx._connection.sent_buffers()['memfds'] == 0
print('ok')
'''


def test_without_memfds_the_frames_stay_on_the_socket_and_every_call_works():
    # memfd_create refused (a seccomp policy, as a container's may): the parent cannot make the
    # rings and says so in its setup, and the child stays on the socket.
    library = ctypes.util.find_library('seccomp')
    if library is None:
        pytest.skip('libseccomp is not installed (scripts/install-system-deps.sh installs it)')
    fixtures = pathlib.Path(__file__).parent / 'fixtures'
    done = subprocess.run([sys.executable, '-c', NO_MEMFD, str(fixtures), library],
                          capture_output=True, timeout=120, cwd='/')
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert done.stdout.decode().split() == ['ok']
