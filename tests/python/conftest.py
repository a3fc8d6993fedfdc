"""Shared fixtures of the Python tests: leak checks for the whole run, and isolation contexts
that each test owns (terminated and reaped when the test ends, pass or fail).

Fixture modules (tests/python/fixtures/isofix_*.py) are tiny modules for the child to import,
each with one misdeed where it misbehaves; the contexts made here have that folder on the
child's sys.path.
"""

import gc
import os
import sys
from pathlib import Path

import pytest

import process_isolation
from process_isolation import IsolationContext

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
# Seconds any one call into a child may take in a test (the contexts' default timeout): a hung
# child fails the test with CallTimeoutError instead of hanging the run.
CALL_DEADLINE = 60.0


def child_pids():
    """The pids of this process's children, zombies included, read from /proc (every task's
    parent pid), without psutil. /proc/self/task/*/children needs CONFIG_PROC_CHILDREN, which
    not every kernel has, so every /proc/<pid>/stat is read instead."""
    me = os.getpid()
    children = set()
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', 'rb') as stat:
                text = stat.read()
        except OSError:  # it ended while we looked
            continue
        fields = text[text.rindex(b')') + 2:].split()  # the name may hold spaces and parens
        if int(fields[1]) == me:
            children.add(int(entry))
    return children


def open_fds():
    """This process's open file descriptors: {fd: what it refers to}."""
    fds = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            fds[int(name)] = os.readlink(f'/proc/self/fd/{name}')
        except OSError:  # the descriptor os.listdir itself used, closed by now
            continue
    return fds


def new_fds(before):
    """The descriptors open now that were not open (or referred elsewhere) in `before`."""
    return {fd: target for fd, target in open_fds().items() if before.get(fd) != target}


def forget_failure_tracebacks():
    """Drops the traceback pytest keeps of the last failure, whose frames may hold proxies (and so
    a dead child's connection) alive, so leak checks see only real leaks."""
    for name in ('last_type', 'last_value', 'last_traceback', 'last_exc'):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()


@pytest.fixture(scope='session', autouse=True)
def no_leaked_children_or_fds():
    """Fails the run if the tests leave child processes (running or zombie) or open file
    descriptors behind."""
    children = child_pids()
    fds = open_fds()
    yield
    forget_failure_tracebacks()
    leaked_children = child_pids() - children
    leaked_fds = new_fds(fds)
    if leaked_children or leaked_fds:
        pytest.fail(f'the tests leaked child processes {sorted(leaked_children)} and file '
                    f'descriptors {leaked_fds}', pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, 'report_' + report.when, report)


def call_failed(request):
    """True unless the test itself ran and passed."""
    report = getattr(request.node, 'report_call', None)
    return report is None or not report.passed


@pytest.fixture
def transport(request):
    """The transport the test's contexts use: 'shm', unless a module imports
    transport_helpers.both_transports to run its tests once with each (the shared-memory rings,
    and the socket alone)."""
    return getattr(request, 'param', 'shm')


@pytest.fixture
def new_context(request, transport):
    """A factory of IsolationContexts owned by the test: new_context(**options) returns a
    context (not yet started) with the fixture modules on the child's sys.path and a default
    call timeout. When the test ends every one is terminated; the fixture then checks that its
    child was reaped and, if the test passed, that once the test's proxies are gone none of the
    contexts' descriptors stayed open."""
    made = []
    fds = open_fds()

    def make(**options):
        options.setdefault('paths', [FIXTURES])
        options.setdefault('transport', transport)
        options.setdefault('timeout', CALL_DEADLINE)
        context = IsolationContext(**options)
        made.append(context)
        return context

    yield make
    for context in made:
        context.terminate()
    # pytest keeps the test's fixture values until after teardown; drop the proxies among them
    # (a proxy holds its connection), so what is left open now is a real leak.
    funcargs = request.node.funcargs
    for name in [name for name, value in funcargs.items() if process_isolation.isproxy(value)]:
        funcargs[name] = None
    alive = child_pids()
    for context in made:
        ended = context.termination
        if ended is not None:
            assert ended['pid'] not in alive, f'the child {ended["pid"]} was not reaped'
    if call_failed(request):
        return  # the failure says what went wrong; its traceback may keep proxies alive
    gc.collect()
    leaked = new_fds(fds)
    assert not leaked, f'terminated contexts left descriptors open: {leaked}'


@pytest.fixture(scope='module')
def fork_server_for_the_module():
    """Starts the process-wide fork server before a module's tests (and their fd accounting) and
    stops it when the module is done, so the session leak check sees nothing left. Modules that
    use start_method='forkserver' ask for it with pytest.mark.usefixtures."""
    from process_isolation import context as context_module
    context_module._get_fork_server(60.0)
    yield
    context_module._stop_fork_server()


@pytest.fixture
def ctx(new_context):
    """A fresh IsolationContext of the test's own."""
    return new_context()


@pytest.fixture
def other_ctx(new_context):
    """A second context, for tests of two children side by side."""
    return new_context()


@pytest.fixture
def basic(ctx):
    """The well-behaved fixture module, imported in ctx's child."""
    return ctx.load_module('isofix_basic')


@pytest.fixture
def default_context_owned():
    """The process-wide default context, terminated when the test ends."""
    context = process_isolation.default_context()
    yield context
    context.terminate()
