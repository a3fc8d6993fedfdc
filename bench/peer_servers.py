"""The child side of each peer: what runs in the peer's process to serve `benchmod`.

Run as a script for the peers whose child is a fresh interpreter started with subprocess:

    python bench/peer_servers.py rpyc FD           RPyC classic (SlaveService) on socket FD
    python bench/peer_servers.py pyro5 PATH FD     Pyro5 daemon on Unix socket PATH; writes one
                                                   byte to pipe FD when it is ready

The functions `serve_messages` (the Pipe and execnet children) and `BenchManager` (the
multiprocessing manager serving a BenchService) are imported from here by the parent side too.
Every server ends when its parent's end of the connection closes.
"""

import multiprocessing.managers
import os
import socket
import sys
import threading

import benchmod


def serve_messages(receive, send):
    """Serve benchmod over a message channel until it closes.

    Requests are ``(name, args)`` tuples; the reply is ``('ok', result)`` or ``('error', text)``.
    `call_back` is special: the child sends ``('callback', x)`` and waits for the parent's
    ``('result', y)`` before replying, which is what a callback round trip costs over plain
    messages.
    """
    def parent_callback(x):
        send(('callback', x))
        kind, value = receive()
        if kind != 'result':
            raise RuntimeError(f'expected a callback result, got {kind!r}')
        return value

    while True:
        try:
            name, args = receive()
        except EOFError:
            return
        try:
            if name == 'call_back':
                result = benchmod.call_back(parent_callback, *args)
            else:
                result = getattr(benchmod, name)(*args)
            send(('ok', result))
        except Exception as error:  # reported to the parent, which raises it
            send(('error', f'{type(error).__name__}: {error}'))


def serve_pipe(conn):
    """multiprocessing.Process target: serve benchmod over a multiprocessing Connection."""
    serve_messages(conn.recv, conn.send)


def serve_execnet_channel(channel):
    """Serve benchmod over an execnet channel (called from the remote_exec source)."""
    def receive():
        try:
            return channel.receive()
        except channel.RemoteError:   # the parent's side of the channel went away
            raise EOFError from None

    serve_messages(receive, channel.send)


class BenchService:
    """The object registered with multiprocessing.managers and Pyro5: benchmod as methods."""

    def noop(self):
        return benchmod.noop()

    def f(self, x):
        return benchmod.f(x)

    def mixed(self, a, b, c=None):
        return benchmod.mixed(a, b, c=c)

    def make_list(self, n):
        return benchmod.make_list(n)

    def make_bytes(self, n):
        return benchmod.make_bytes(n)

    def make_array(self, n):
        return benchmod.make_array(n)

    def make_array_bytes(self, n):
        return benchmod.make_array_bytes(n)

    def take(self, x):
        return benchmod.take(x)

    def take_array_bytes(self, data):
        return benchmod.take_array_bytes(data)

    def getpid(self):
        return benchmod.getpid()

    def crash(self):
        return benchmod.crash()


class BenchManager(multiprocessing.managers.BaseManager):
    """A multiprocessing manager whose server process holds one registered BenchService."""


BenchManager.register('Bench', callable=BenchService)


def serve_rpyc(fd):
    """RPyC classic server on an inherited connected socket; both ends run SlaveService."""
    import rpyc
    from rpyc.core.stream import SocketStream
    from rpyc.utils.classic import SlaveService

    sock = socket.socket(fileno=fd)
    conn = rpyc.connect_stream(SocketStream(sock), SlaveService)
    try:
        conn.serve_all()
    except EOFError:
        pass
    finally:
        conn.close()


def serve_pyro5(path, ready_fd):
    """Pyro5 daemon on a Unix socket, with BenchService registered as 'bench'.

    The callback case needs a proxy that the child keeps: `set_callback` stores it and
    `call_held_callback` calls it (the proxy is claimed by whichever worker thread runs the call).
    """
    import Pyro5.api

    Pyro5.api.config.SERIALIZER = 'marshal'
    Pyro5.api.expose(BenchService)  # expose marks only a class's own methods, not inherited ones

    @Pyro5.api.expose
    class PyroBenchService(BenchService):
        callback = None

        def set_callback(self, proxy):
            PyroBenchService.callback = proxy

        def call_held_callback(self, x):
            proxy = PyroBenchService.callback
            proxy._pyroClaimOwnership()
            return proxy.call(x)

    daemon = Pyro5.api.Daemon(unixsocket=path)
    daemon.register(PyroBenchService(), objectId='bench')
    # Pyro5 servers outlive their clients, so the parent's end of our stdin is the leash: when
    # the parent closes it (or dies), end at once.
    threading.Thread(target=exit_at_stdin_eof, daemon=True).start()
    os.write(ready_fd, b'r')
    os.close(ready_fd)
    daemon.requestLoop()


def exit_at_stdin_eof():
    """Read stdin until end of file, then end the process without cleanup."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv):
    if argv[1] == 'rpyc':
        serve_rpyc(int(argv[2]))
    elif argv[1] == 'pyro5':
        serve_pyro5(argv[2], int(argv[3]))
    else:
        raise SystemExit(f'unknown server {argv[1]!r}')


if __name__ == '__main__':
    main(sys.argv)
