"""Records the wire traffic of its own child, for the fuzz seeds (tests/fuzz/record_seeds.py).

`start(directory)`, called in the child of a context with transport='socket', puts a relay
between the child's runtime and its connection socket: the runtime's socket number is moved to
one end of a new socket pair, and two threads copy everything (bytes and passed fds) between its
other end and the real connection, appending each direction to a file. The runtime does not
notice; the parent sees the same bytes as before. Test-only: nothing here is part of the library.
"""

import array
import os
import socket
import threading

import isofix_wire

_MAX_FDS = 64


def _pump(source, target, log_path):
    with open(log_path, 'ab', buffering=0) as log:
        while True:
            try:
                data, ancillary, _, _ = source.recvmsg(
                    1 << 16, socket.CMSG_SPACE(_MAX_FDS * array.array('i').itemsize))
            except OSError:
                data, ancillary = b'', []
            fds = array.array('i')
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if not data:
                try:
                    target.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            log.write(data)
            control = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())] if fds else []
            try:
                target.sendmsg([data], control)
            except OSError:
                return
            finally:
                for fd in fds:
                    os.close(fd)


def start(directory):
    """Starts recording into directory/child_to_parent and directory/parent_to_child."""
    if isofix_wire.uses_rings():
        raise RuntimeError("record with transport='socket': the rings bypass the socket")
    fd = isofix_wire.socket_fd()
    real = socket.socket(fileno=os.dup(fd))
    inner, outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    os.dup2(inner.fileno(), fd, inheritable=False)
    inner.close()
    for source, target, name in ((real, outer, 'parent_to_child'), (outer, real, 'child_to_parent')):
        threading.Thread(target=_pump, args=(source, target, os.path.join(directory, name)),
                         daemon=True).start()
    return os.getpid()
