"""The peers: the same benchmark cases done with RPyC, multiprocessing.managers, Pyro5, execnet
and a hand-written multiprocessing.Pipe message loop (the pure-Python floor).

Each child is a separate process serving benchmod (see peer_servers.py for the child side).
"""

import multiprocessing
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading

import peer_servers
from implementation import (BENCH_DIR, CALLBACK_ARG, MAX_CALLBACKS_PER_CALL, START_TIMEOUT_S,
                            STOP_TIMEOUT_S, Implementation, RemoteFailure,
                            parent_fn, stop_mp_process, stop_popen)

SERVERS = os.path.join(BENCH_DIR, 'peer_servers.py')


class RPyC(Implementation):
    """RPyC classic: a child interpreter serving SlaveService over a socketpair; `conn.modules`."""

    name = 'RPyC'
    notes = {
        'iter_list': 'the list stays remote (netref): one round trip per item',
        'array_to_parent': 'rpyc.classic.obtain() (pickle)',
        'array_to_child': 'rpyc.classic.deliver() (pickle)',
        'startup': 'python subprocess + import rpyc',
    }

    def __init__(self):
        self.proc = None
        self.conn = None
        self.mod = None

    def unavailable_reason(self):
        try:
            import rpyc  # noqa: F401
        except ImportError as error:
            return f'ImportError: {error}'
        return None

    def start(self, method):
        import rpyc
        from rpyc.core.stream import SocketStream
        parent_sock, child_sock = socket.socketpair()
        try:
            fd = child_sock.fileno()
            self.proc = subprocess.Popen([sys.executable, SERVERS, 'rpyc', str(fd)],
                                         pass_fds=[fd], stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
        try:
            self.conn = rpyc.classic.connect_stream(SocketStream(parent_sock))
        except BaseException:
            parent_sock.close()
            raise
        self.mod = self.conn.modules.benchmod

    def close(self):
        # Each resource is forgotten only once it is released, so a close interrupted by a
        # deadline is finished by the next close().
        self.mod = None
        if self.conn is not None:
            try:
                self.conn.close()   # the child's serve loop ends at end of file
            except Exception:
                pass  # the child may be gone already
            self.conn = None
        stop_popen(self.proc)
        self.proc = None

    def child_pid(self):
        return self.proc.pid

    def call_crash(self):
        self.mod.crash()

    def op_first_result(self):
        return self.mod.f(1)

    def op_noop(self):
        return self.mod.noop

    def op_attr_call(self):
        mod = self.mod
        return lambda x=1: mod.f(x)

    def op_mixed(self):
        mod = self.mod
        return lambda: mod.mixed(1, 'two', c=[3.0, None, (4, b'five')])

    def op_callback(self):
        mod = self.mod
        return lambda: mod.call_back(parent_fn, CALLBACK_ARG)

    def op_iter_list(self, n):
        mod = self.mod
        return lambda: sum(1 for _ in mod.make_list(n))

    def op_bytes_to_parent(self, n):
        mod = self.mod
        return lambda: mod.make_bytes(n)

    def op_bytes_to_child(self, n):
        mod, data = self.mod, b'x' * n
        return lambda: mod.take(data)

    def op_array_to_parent(self, n):
        from rpyc.utils.classic import obtain
        mod = self.mod
        return lambda: obtain(mod.make_array(n))

    def op_array_to_child(self, n):
        import numpy
        from rpyc.utils.classic import deliver
        conn, mod, array = self.conn, self.mod, numpy.full(n, 2.5)
        return lambda: mod.take(deliver(conn, array))


# ---------------------------------------------------------------------------------------------
class Managers(Implementation):
    """multiprocessing.managers: a BaseManager server process with a registered object."""

    name = 'mp.managers'
    start_methods = ('fork', 'forkserver', 'spawn')
    notes = {
        'attr_call': 'method call on the proxy: no remote attribute lookup',
        'iter_list': 'the list is returned by value (pickle)',
    }

    def __init__(self):
        self.manager = None
        self.process = None
        self.obj = None

    def start(self, method):
        self.manager = peer_servers.BenchManager(ctx=multiprocessing.get_context(method))
        self.manager.start()
        self.process = self.manager._process   # kept, to reap it even if shutdown() fails
        self.obj = self.manager.Bench()

    def close(self):
        self.obj = None
        if self.manager is not None:
            try:
                self.manager.shutdown()  # joins its server with timeouts, then terminates it
            except Exception:
                pass  # the server may be gone already
            self.manager = None
        if self.process is not None:
            stop_mp_process(self.process)
            self.process = None

    def child_pid(self):
        return self.obj.getpid()

    def call_crash(self):
        self.obj.crash()

    def op_first_result(self):
        return self.obj.f(1)

    def op_noop(self):
        return self.obj.noop

    def op_attr_call(self):
        obj = self.obj
        return lambda x=1: obj.f(x)

    def op_mixed(self):
        obj = self.obj
        return lambda: obj.mixed(1, 'two', c=[3.0, None, (4, b'five')])

    def op_iter_list(self, n):
        obj = self.obj
        return lambda: sum(1 for _ in obj.make_list(n))

    def op_bytes_to_parent(self, n):
        obj = self.obj
        return lambda: obj.make_bytes(n)

    def op_bytes_to_child(self, n):
        obj, data = self.obj, b'x' * n
        return lambda: obj.take(data)

    def op_array_to_parent(self, n):
        obj = self.obj
        return lambda: obj.make_array(n)

    def op_array_to_child(self, n):
        import numpy
        obj, array = self.obj, numpy.full(n, 2.5)
        return lambda: obj.take(array)


# ---------------------------------------------------------------------------------------------
class Pyro5Peer(Implementation):
    """Pyro5: a child interpreter running a Daemon on a Unix socket; marshal serializer."""

    name = 'Pyro5'
    notes = {
        'attr_call': 'method call on the proxy: no remote attribute lookup',
        'callback': 'parent runs a Daemon thread; the child holds a proxy set once',
        'iter_list': 'the list is returned by value (marshal)',
        'array_to_parent': 'no ndarray support: tobytes() + numpy.frombuffer',
        'array_to_child': 'no ndarray support: tobytes() + numpy.frombuffer',
        'startup': 'python subprocess + Daemon on a Unix socket + connect',
    }

    def __init__(self):
        self.proc = None
        self.proxy = None
        self.tmpdir = None
        self.callback_daemon = None
        self.callback_thread = None

    def unavailable_reason(self):
        try:
            import Pyro5.api  # noqa: F401
        except ImportError as error:
            return f'ImportError: {error}'
        return None

    def start(self, method):
        import Pyro5.api
        Pyro5.api.config.SERIALIZER = 'marshal'
        self.tmpdir = tempfile.TemporaryDirectory(prefix='bench-pyro5-')
        path = os.path.join(self.tmpdir.name, 'bench.sock')
        ready_read, ready_write = os.pipe()
        try:
            # stdin is a pipe the child watches: closing our end (or dying) ends the child.
            self.proc = subprocess.Popen(
                [sys.executable, SERVERS, 'pyro5', path, str(ready_write)],
                pass_fds=[ready_write], stdin=subprocess.PIPE)
            os.close(ready_write)
            ready, _, _ = select.select([ready_read], [], [], START_TIMEOUT_S)
            if not ready or os.read(ready_read, 1) != b'r':
                raise RuntimeError('the Pyro5 daemon did not become ready')
        finally:
            os.close(ready_read)
        self.proxy = Pyro5.api.Proxy(f'PYRO:bench@./u:{path}')

    def close(self):
        if self.proxy is not None:
            try:
                self.proxy._pyroRelease()
            except Exception:
                pass  # the child may be gone already
            self.proxy = None
        if self.callback_daemon is not None:
            self.callback_daemon.shutdown()
            self.callback_thread.join(STOP_TIMEOUT_S)
            self.callback_daemon = self.callback_thread = None
        if self.proc is not None:
            self.proc.stdin.close()   # the child's stdin watcher ends it
            stop_popen(self.proc)
            self.proc = None
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None

    def child_pid(self):
        return self.proc.pid

    def call_crash(self):
        self.proxy.crash()

    def op_first_result(self):
        return self.proxy.f(1)

    def op_noop(self):
        return self.proxy.noop

    def op_attr_call(self):
        proxy = self.proxy
        return lambda x=1: proxy.f(x)

    def op_mixed(self):
        proxy = self.proxy
        return lambda: proxy.mixed(1, 'two', c=[3.0, None, (4, b'five')])

    def op_callback(self):
        import Pyro5.api

        @Pyro5.api.expose
        class ParentCallback:
            def call(self, x):
                return parent_fn(x)

        path = os.path.join(self.tmpdir.name, 'callback.sock')
        self.callback_daemon = Pyro5.api.Daemon(unixsocket=path)
        uri = self.callback_daemon.register(ParentCallback())
        self.callback_thread = threading.Thread(target=self.callback_daemon.requestLoop,
                                                daemon=True)
        self.callback_thread.start()
        self.proxy.set_callback(Pyro5.api.Proxy(uri))
        proxy = self.proxy
        return lambda: proxy.call_held_callback(CALLBACK_ARG)

    def op_iter_list(self, n):
        proxy = self.proxy
        return lambda: sum(1 for _ in proxy.make_list(n))

    def op_bytes_to_parent(self, n):
        proxy = self.proxy
        return lambda: proxy.make_bytes(n)

    def op_bytes_to_child(self, n):
        proxy, data = self.proxy, b'x' * n
        return lambda: proxy.take(data)

    def op_array_to_parent(self, n):
        import numpy
        proxy = self.proxy
        return lambda: numpy.frombuffer(proxy.make_array_bytes(n), dtype=numpy.float64)

    def op_array_to_child(self, n):
        import numpy
        proxy, array = self.proxy, numpy.full(n, 2.5)
        return lambda: proxy.take_array_bytes(array.tobytes())


# ---------------------------------------------------------------------------------------------
class MessagePeer(Implementation):
    """Base for the message-passing peers: ``(name, args)`` requests to peer_servers."""

    notes = {
        'noop': 'hand-written message loop',
        'attr_call': 'a message naming the function: no remote attribute lookup',
        'callback': 'the child sends a callback message and waits for the answer',
        'iter_list': 'the list is returned by value',
    }

    def send(self, message):
        raise NotImplementedError

    def receive(self):
        raise NotImplementedError

    def request(self, name, *args):
        """Send one request and serve callbacks until its reply arrives."""
        self.send((name, args))
        for _ in range(MAX_CALLBACKS_PER_CALL):
            kind, value = self.receive()
            if kind == 'ok':
                return value
            if kind == 'error':
                raise RemoteFailure(value)
            if kind != 'callback':
                raise RemoteFailure(f'unexpected message {kind!r}')
            self.send(('result', parent_fn(value)))
        raise RemoteFailure('too many callbacks in one call')

    def child_pid(self):
        return self.request('getpid')

    def call_crash(self):
        self.request('crash')

    def op_first_result(self):
        return self.request('f', 1)

    def op_noop(self):
        return lambda: self.request('noop')

    def op_attr_call(self):
        return lambda x=1: self.request('f', x)

    def op_mixed(self):
        return lambda: self.request('mixed', 1, 'two', [3.0, None, (4, b'five')])

    def op_callback(self):
        return lambda: self.request('call_back', CALLBACK_ARG)

    def op_iter_list(self, n):
        return lambda: sum(1 for _ in self.request('make_list', n))

    def op_bytes_to_parent(self, n):
        return lambda: self.request('make_bytes', n)

    def op_bytes_to_child(self, n):
        data = b'x' * n
        return lambda: self.request('take', data)


class PipePingPong(MessagePeer):
    """The pure-Python floor: a multiprocessing.Process child and a multiprocessing.Pipe."""

    name = 'mp.Pipe ping-pong'
    start_methods = ('fork', 'forkserver', 'spawn')

    def __init__(self):
        self.conn = None
        self.proc = None

    def start(self, method):
        context = multiprocessing.get_context(method)
        self.conn, child_conn = context.Pipe()
        self.proc = context.Process(target=peer_servers.serve_pipe, args=(child_conn,),
                                    daemon=True)
        self.proc.start()
        child_conn.close()

    def close(self):
        if self.conn is not None:
            self.conn.close()   # the child's request loop ends at end of file
            self.conn = None
        stop_mp_process(self.proc)
        self.proc = None

    def send(self, message):
        self.conn.send(message)

    def receive(self):
        return self.conn.recv()

    def op_array_to_parent(self, n):
        return lambda: self.request('make_array', n)

    def op_array_to_child(self, n):
        import numpy
        array = numpy.full(n, 2.5)
        return lambda: self.request('take', array)


EXECNET_SOURCE = '''
import sys
sys.path.insert(0, {bench_dir!r})
import peer_servers
peer_servers.serve_execnet_channel(channel)
'''


class Execnet(MessagePeer):
    """execnet: a popen gateway and a remote_exec channel running the message loop."""

    name = 'execnet'
    notes = dict(MessagePeer.notes, **{
        'array_to_parent': 'no ndarray support: tobytes() + numpy.frombuffer',
        'array_to_child': 'no ndarray support: tobytes() + numpy.frombuffer',
        'startup': 'popen gateway (python subprocess) + remote_exec',
    })

    def __init__(self):
        self.group = None
        self.channel = None

    def unavailable_reason(self):
        try:
            import execnet  # noqa: F401
        except ImportError as error:
            return f'ImportError: {error}'
        return None

    def start(self, method):
        import execnet
        self.group = execnet.Group()
        gateway = self.group.makegateway(f'popen//python={sys.executable}')
        self.channel = gateway.remote_exec(EXECNET_SOURCE.format(bench_dir=BENCH_DIR))

    def close(self):
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:
                pass  # the gateway may be gone already
            self.channel = None
        if self.group is not None:
            self.group.terminate(timeout=STOP_TIMEOUT_S)   # kills what does not exit in time
            self.group = None

    def send(self, message):
        self.channel.send(message)

    def receive(self):
        return self.channel.receive(timeout=None)

    def op_array_to_parent(self, n):
        import numpy
        return lambda: numpy.frombuffer(self.request('make_array_bytes', n),
                                        dtype=numpy.float64)

    def op_array_to_child(self, n):
        import numpy
        array = numpy.full(n, 2.5)
        return lambda: self.request('take_array_bytes', array.tobytes())


ALL = (RPyC, Managers, Pyro5Peer, Execnet, PipePingPong)
