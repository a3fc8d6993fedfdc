"""Tests of importing modules into an isolated child: module values and functions, state in the
child, separate contexts, one proxy per module, sys.modules, failed imports, standard library
modules used in the child, and IsolationContext.call."""

import importlib
import os
import select
import signal
import sys

import pytest

import process_isolation
from process_isolation import import_isolated, isproxy, load_module, timeout

from conftest import CALL_DEADLINE, FIXTURES


def test_module_values_and_functions_come_from_the_child(basic):
    assert isproxy(basic)
    assert basic.ANSWER == 42
    assert basic.GREETING == 'hello from the child'
    assert basic.add(2, 3) == 5
    assert basic.add('a', 'b') == 'ab'
    assert basic.add(a=[1], b=[2]) == [1, 2]
    assert basic.increment(by=4) == 4


def test_functions_run_in_the_child_process(ctx, basic):
    assert basic.pid() == ctx.pid
    assert ctx.pid != os.getpid()


def test_module_state_persists_in_the_child_between_calls(basic):
    assert basic.increment() == 1
    assert basic.increment() == 2
    assert basic.increment(10) == 12
    assert basic.counter == 12


def test_module_attributes_set_from_the_parent_live_in_the_child(basic):
    basic.counter = 100
    basic.new_global = ('set', 'by', 'parent')
    assert basic.increment() == 101
    assert basic.read_global('new_global') == ('set', 'by', 'parent')
    del basic.new_global
    with pytest.raises(KeyError):
        basic.read_global('new_global')


def test_separate_contexts_have_separate_children_and_state(ctx, other_ctx):
    first = ctx.load_module('isofix_basic')
    second = other_ctx.load_module('isofix_basic')
    assert first is not second
    assert first.pid() == ctx.pid
    assert second.pid() == other_ctx.pid
    assert ctx.pid != other_ctx.pid
    first.increment(5)
    first.increment(5)
    assert second.increment(1) == 1
    assert first.counter == 10
    assert second.counter == 1


def test_importing_a_module_twice_gives_the_same_proxy(ctx):
    first = ctx.load_module('isofix_basic')
    assert ctx.load_module('isofix_basic') is first
    assert ctx.import_module('isofix_basic') is first
    assert import_isolated('isofix_basic', context=ctx) is first


def test_imported_module_is_registered_in_sys_modules_until_the_child_ends(ctx):
    assert 'isofix_basic' not in sys.modules
    module = ctx.load_module('isofix_basic')
    assert sys.modules['isofix_basic'] is module
    import isofix_basic
    assert isofix_basic is module
    assert importlib.import_module('isofix_basic') is module
    ctx.terminate()
    assert 'isofix_basic' not in sys.modules


def test_import_isolated_with_register_false_leaves_sys_modules_alone(ctx):
    assert 'isofix_basic' not in sys.modules
    module = import_isolated('isofix_basic', context=ctx, register=False)
    assert isproxy(module) and module.add(2, 3) == 5
    assert 'isofix_basic' not in sys.modules
    assert import_isolated('isofix_basic', context=ctx) is module  # same proxy, now registered
    assert sys.modules['isofix_basic'] is module


def test_a_real_module_in_sys_modules_is_not_replaced_by_the_proxy(ctx):
    import json
    remote = ctx.load_module('json')
    assert isproxy(remote)
    assert sys.modules['json'] is json
    assert remote.loads('[1, {"a": null}]') == [1, {'a': None}]


def test_a_process_forked_from_the_parent_finds_no_proxy_in_sys_modules(ctx):
    proxy = ctx.load_module('isofix_basic')
    assert sys.modules['isofix_basic'] is proxy
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked copy of this test process: report and leave at once
        try:
            proxies = sorted(name for name, module in sys.modules.items() if isproxy(module))
            os.write(write_end, repr((proxies, 'os' in sys.modules, 'pytest' in sys.modules))
                     .encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        readable, _, _ = select.select([read_end], [], [], CALL_DEADLINE)
        assert readable, 'the forked process did not report in time'
        report = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)  # a no-op once it has exited; it is ours until reaped
        os.waitpid(pid, 0)
    assert report == repr(([], True, True))  # the proxy is gone, real modules are kept
    assert sys.modules['isofix_basic'] is proxy  # and the parent still has it


def test_drop_proxies_deletes_the_proxies_of_a_dict_and_nothing_else(basic):
    from process_isolation import _core
    mapping = {'proxy': basic, 'module': os, 'value': 1, 'other proxy': basic.add}
    _core.drop_proxies(mapping)
    assert mapping == {'module': os, 'value': 1}
    with pytest.raises(TypeError):
        _core.drop_proxies([basic])


def test_dotted_names_return_the_submodule(ctx):
    remote = ctx.load_module('xml.dom.minidom')
    assert remote.__name__ == 'xml.dom.minidom'
    document = remote.parseString('<a><b/></a>')
    assert document.documentElement.tagName == 'a'
    assert ctx.load_module('os.path').__name__ == 'posixpath'


def test_path_entries_are_prepended_to_the_childs_sys_path(new_context):
    context = new_context(paths=[])
    module = context.load_module('isofix_basic', path=[FIXTURES])
    assert module.ANSWER == 42
    assert context.load_module('sys').path[0] == str(FIXTURES)


@pytest.mark.parametrize('name', [
    'isofix_no_such_module',
    'isofix_basic.no_such_submodule',
    'os.no_such_submodule',
    '/etc/passwd',
])
def test_importing_a_module_that_does_not_exist_raises_import_error(ctx, name):
    with pytest.raises(ImportError) as caught:
        ctx.load_module(name)
    assert type(caught.value) is ModuleNotFoundError
    assert name not in sys.modules
    assert ctx.load_module('isofix_basic').ANSWER == 42  # the context is still usable


def test_a_module_failing_while_being_imported_raises_import_error_naming_its_dependency(ctx):
    with pytest.raises(ImportError) as caught:
        ctx.load_module('isofix_import_error')
    assert type(caught.value) is ModuleNotFoundError
    assert 'isofix_no_such_dependency' in str(caught.value)
    assert 'isofix_import_error.py' in str(caught.value.__cause__)
    assert 'isofix_import_error' not in sys.modules
    assert ctx.load_module('isofix_basic').add(1, 1) == 2


def test_load_module_uses_the_default_context(default_context_owned):
    with timeout(CALL_DEADLINE):  # the default context has no call timeout of its own
        module = load_module('isofix_basic', [FIXTURES])
        assert module is import_isolated('isofix_basic')
        assert module is process_isolation.default_context().load_module('isofix_basic')
        assert module.pid() == default_context_owned.pid != os.getpid()


def test_os_is_the_childs_os(ctx):
    remote_os = ctx.load_module('os')
    assert remote_os is not os
    assert sys.modules['os'] is os
    assert remote_os.getpid() == ctx.pid
    assert remote_os.getppid() == os.getpid()
    remote_os.environ['ISOFIX_ONLY_IN_CHILD'] = 'yes'
    assert remote_os.environ['ISOFIX_ONLY_IN_CHILD'] == 'yes'
    assert 'ISOFIX_ONLY_IN_CHILD' not in os.environ
    assert remote_os.path.join('a', 'b') == 'a/b'


def test_sys_is_the_childs_sys(ctx):
    remote_sys = ctx.load_module('sys')
    assert str(FIXTURES) in remote_sys.path
    assert str(FIXTURES) not in sys.path
    assert remote_sys.version == sys.version
    remote_sys.isofix_marker = 'child only'
    assert remote_sys.isofix_marker == 'child only'
    assert not hasattr(sys, 'isofix_marker')
    limit = sys.getrecursionlimit()
    remote_sys.setrecursionlimit(limit + 123)
    assert remote_sys.getrecursionlimit() == limit + 123
    assert sys.getrecursionlimit() == limit


def test_sqlite3_runs_in_the_child(ctx):
    sqlite3 = ctx.load_module('sqlite3')
    connection = sqlite3.connect(':memory:')
    assert isproxy(connection)
    connection.execute('CREATE TABLE t (n INTEGER, name TEXT, data BLOB)')
    connection.executemany('INSERT INTO t VALUES (?, ?, ?)',
                           [(1, 'one', b'\x00\x01'), (2, 'two', None)])
    cursor = connection.execute('SELECT n, name, data FROM t ORDER BY n')
    assert cursor.fetchall() == [(1, 'one', b'\x00\x01'), (2, 'two', None)]
    assert [row for row in connection.execute('SELECT name FROM t')] == [('one',), ('two',)]
    with pytest.raises(sqlite3.OperationalError):
        connection.execute('SELECT * FROM no_such_table')
    connection.close()


def test_call_runs_a_module_level_function_in_the_child(ctx):
    assert ctx.call(os.getpid) == ctx.pid
    assert ctx.call(os.getpid) != os.getpid()
    assert ctx.call(os.path.join, 'x', 'y') == 'x/y'
    assert ctx.call(dict, a=1) == {'a': 1}


def test_call_runs_a_proxy_in_the_child(ctx, basic):
    assert ctx.call(basic.increment, 3) == 3
    assert basic.counter == 3


def test_call_refuses_a_lambda_it_cannot_name(ctx):
    with pytest.raises(TypeError):
        ctx.call(lambda: 1)
