"""Helpers shared by the proxy fidelity tests (test_differential, test_proxy_types, test_batching,
test_lifetime): the fixture module isofix_fidelity loaded in the parent too, namespaces of
local modules and of their proxies, the connection's frame counts, and memory readings."""

import importlib
import importlib.util
from types import SimpleNamespace

from conftest import FIXTURES

STDLIB = ('array', 'collections', 'datetime', 'decimal', 'fractions', 'io', 'pathlib')


def load_local_fixture():
    """isofix_fidelity imported here, in the parent, without entering sys.modules (so a child
    forked later imports its own, and no other test sees a real module under that name)."""
    spec = importlib.util.spec_from_file_location('isofix_fidelity',
                                                  FIXTURES / 'isofix_fidelity.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_namespace():
    """The modules the tables use, real: `fid` is isofix_fidelity."""
    return SimpleNamespace(fid=load_local_fixture(),
                           **{name: importlib.import_module(name) for name in STDLIB})


def isolated_namespace(context):
    """The same modules imported in `context`'s child: every attribute is a module proxy."""
    return SimpleNamespace(fid=context.load_module('isofix_fidelity'),
                           **{name: context.load_module(name) for name in STDLIB})


class FrameTap:
    """Counts the frames the parent sends a child (how many requests, how many release
    messages, ...) from the connection's own frame counters, which count every frame written,
    whatever carries it (shared-memory rings or the socket). Reading them sends nothing."""

    def __init__(self, context):
        self._context = context  # not its connection, which would outlive terminate()

    def snapshot(self):
        return self._context._connection.frame_counts()['sent']

    def since(self, before):
        """{kind: frames the parent sent since the snapshot `before`}."""
        after = self.snapshot()
        return {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}


def rss_kib(pid='self'):
    """Resident set size of a process, in KiB, from /proc."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for process {pid}')
