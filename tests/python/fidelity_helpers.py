"""Helpers shared by the proxy fidelity tests (test_differential, test_proxy_types, test_batching,
test_lifetime): the fixture module isofix_fidelity loaded in the parent too, namespaces of
local modules and of their proxies, a frame counter spliced into a child's connection, and
memory readings."""

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
    """Counts the frames crossing a child's connection (see fixtures/isofix_tap.py): how many
    requests the parent sent, how many release messages, ... Reading the counts is itself a
    request, which `since()` leaves out."""

    def __init__(self, context):
        self._tap = context.load_module('isofix_tap')
        self._counts = self._tap.counts  # one proxy, so reading costs exactly one request
        self._tap.install()

    def snapshot(self):
        return self._counts()['from_parent']

    def since(self, before):
        """{kind: frames the parent sent since the snapshot `before`}, minus the request that
        read the counts."""
        after = self.snapshot()
        delta = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
        delta['request'] = delta.get('request', 0) - 1
        return delta


def rss_kib(pid='self'):
    """Resident set size of a process, in KiB, from /proc."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for process {pid}')
