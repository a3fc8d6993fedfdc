"""This project in the benchmarks: IsolationContext + load_module, every call through a proxy.

If process_isolation cannot be imported yet, `unavailable_reason` says why and every row of
this implementation reads "not available: <reason>".
"""

import sys

from implementation import BENCH_DIR, CALLBACK_ARG, Implementation, parent_fn


class ProcessIsolation(Implementation):
    """This project: IsolationContext + load_module, calls through proxies."""

    name = 'process_isolation'
    role = 'ours'
    start_methods = ('fork', 'forkserver', 'spawn')

    def __init__(self):
        self.ctx = None
        self.mod = None

    def unavailable_reason(self):
        try:
            from process_isolation import IsolationContext  # noqa: F401
        except Exception as error:
            return f'{type(error).__name__}: {error}'
        return None

    transport = 'shm'

    def start(self, method):
        from process_isolation import IsolationContext
        self.ctx = IsolationContext(start_method=method, paths=[BENCH_DIR],
                                    transport=self.transport)
        self.mod = self.ctx.load_module('benchmod')

    def close(self):
        self.mod = None
        if self.ctx is not None:
            try:
                self.ctx.terminate()
            except Exception as error:
                print(f'  process_isolation: terminate failed: {error!r}', file=sys.stderr)
            self.ctx = None

    def child_pid(self):
        return self.ctx.pid

    @staticmethod
    def shutdown():
        """Stops the process-wide fork server the 'forkserver' cases started (it is meant to
        live as long as its parent; the harness checks that nothing is left running)."""
        if 'process_isolation.context' in sys.modules:
            sys.modules['process_isolation.context']._stop_fork_server()

    def crash(self):
        from process_isolation import ProcessTerminationError
        try:
            self.mod.crash()
        except ProcessTerminationError:
            return
        raise RuntimeError('the child survived benchmod.crash()')

    def restart(self, method):
        self.ctx.restart()
        self.mod = self.ctx.load_module('benchmod')

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
        from process_isolation import byvalue, isproxy
        mod = self.mod

        def fetch():
            array = mod.make_array(n)
            if isproxy(array):
                self.notes = dict(self.notes, array_to_parent='came back as a proxy: byvalue()')
                array = byvalue(array)
            return array
        return fetch

    def op_array_to_child(self, n):
        import numpy
        mod, array = self.mod, numpy.full(n, 2.5)
        return lambda: mod.take(array)


class ProcessIsolationSocket(ProcessIsolation):
    """This project with transport='socket': every frame over the Unix socket, no shared rings.
    Only the call cases: it shows what the shared-memory transport buys."""

    name = "process_isolation (transport='socket')"
    start_methods = ('fork',)
    transport = 'socket'
    only_cases = ('noop', 'attr_call', 'mixed', 'callback')
