"""Tests of `with isolated(...):` — import statements written in the block (`import X`,
`import X.Y as Z`, `from X import y`) import in an isolated child and bind proxies; every other
import (before and after the block, by library code the block calls, relative imports) is
untouched; leaving the block does not end the context; blocks nest."""

import builtins
import importlib.util
import os
import sys
import textwrap

import pytest

from conftest import CALL_DEADLINE, FIXTURES
from process_isolation import ClientStateError, IsolationContext, isolated, isproxy


# A standard library module these tests import for real in the parent (outside the blocks, or
# through a library), and which nothing else imports.
PARENT_MODULE = 'quopri'


@pytest.fixture(autouse=True)
def parent_modules_restored():
    """Forgets the real modules a test imported into this process, so other tests see the module
    table as it was."""
    had = PARENT_MODULE in sys.modules
    yield
    if not had:
        sys.modules.pop(PARENT_MODULE, None)


def load_file_module(path, name):
    """Imports the module at `path` under `name` without sys.path or sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def library(tmp_path):
    """A library module of the parent, imported before any block, whose functions import."""
    path = tmp_path / 'isohook_library.py'
    path.write_text(textwrap.dedent('''
        def load_quopri():
            import quopri
            return quopri

        def load_dumps():
            from json import dumps
            return dumps
    '''))
    return load_file_module(path, 'isohook_library')


@pytest.fixture
def relative_package(tmp_path, monkeypatch):
    """A parent package whose module enters an isolated() block and imports relatively."""
    package = tmp_path / 'isohook_relpkg'
    package.mkdir()
    (package / '__init__.py').write_text('')
    (package / 'sibling.py').write_text('VALUE = "the parent sibling"\n')
    (package / 'user.py').write_text(textwrap.dedent('''
        from process_isolation import isolated

        def load(context):
            with isolated(context):
                from . import sibling
                from .sibling import VALUE
                import quopri
            return sibling, VALUE, quopri
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module('isohook_relpkg.user')
    for name in [name for name in sys.modules if name.startswith('isohook_relpkg')]:
        del sys.modules[name]


def test_import_statements_in_the_block_import_in_the_child_and_bind_proxies(ctx):
    with isolated(ctx) as entered:
        import isofix_basic
        import isofix_hookpkg.sub as sub
        from isofix_hookpkg import NAME, pid
    assert entered is ctx
    assert isproxy(isofix_basic) and isproxy(sub) and isproxy(pid)
    assert isofix_basic.pid() == ctx.pid != os.getpid()
    assert sub.NAME == 'isofix_hookpkg.sub' and sub.pid() == ctx.pid
    assert NAME == 'isofix_hookpkg'
    assert pid() == ctx.pid


def test_import_of_a_dotted_name_binds_the_top_package(ctx):
    with isolated(ctx):
        import isofix_hookpkg.sub
    assert isproxy(isofix_hookpkg)
    assert isofix_hookpkg.NAME == 'isofix_hookpkg'
    assert isofix_hookpkg.sub.NAME == 'isofix_hookpkg.sub'


def test_from_import_of_a_submodule_imports_it_in_the_child(ctx):
    with isolated(ctx):
        from isofix_hookpkg import sub
    assert isproxy(sub)
    assert sub.pid() == ctx.pid
    assert sub is ctx.load_module('isofix_hookpkg.sub')


def test_the_same_module_imported_twice_is_the_same_proxy(ctx):
    with isolated(ctx):
        import isofix_basic as first
        import isofix_basic as second
    with isolated(ctx):
        import isofix_basic as third
    assert first is second is third is ctx.load_module('isofix_basic')


def test_failed_imports_raise_import_error_and_leave_the_hook_removed(ctx):
    original = builtins.__import__
    with pytest.raises(ImportError, match="cannot import name 'missing'"):
        with isolated(ctx):
            from isofix_hookpkg import missing  # noqa: F401
    assert builtins.__import__ is original
    with pytest.raises(ModuleNotFoundError):
        with isolated(ctx):
            import isofix_no_such_module  # noqa: F401
    assert builtins.__import__ is original
    with pytest.raises(ZeroDivisionError):
        with isolated(ctx):
            1 / 0
    assert builtins.__import__ is original
    assert ctx.alive


def test_imports_before_and_after_the_block_are_untouched(ctx):
    import quopri as before
    with isolated(ctx):
        import quopri as inside
        import json as inside_json
        import isofix_hookpkg as package
    import quopri as after
    import json as after_json
    assert isproxy(inside) and isproxy(inside_json) and isproxy(package)
    assert not isproxy(before) and after is before
    assert not isproxy(after_json) and after_json is sys.modules['json']
    assert inside.encodestring(b'a=b') == before.encodestring(b'a=b') == b'a=3Db'
    # The block's imports did not enter this process's module table.
    assert not any(module is inside or module is inside_json or module is package
                   for module in sys.modules.values())


def test_imports_made_by_library_code_called_in_the_block_are_untouched(ctx, library):
    with isolated(ctx):
        library_quopri = library.load_quopri()
        library_dumps = library.load_dumps()
        import quopri as block_quopri
    assert not isproxy(library_quopri) and library_quopri is sys.modules['quopri']
    assert not isproxy(library_dumps) and library_dumps is sys.modules['json'].dumps
    assert isproxy(block_quopri)


def test_relative_imports_are_untouched(ctx, relative_package):
    sibling, value, quopri = relative_package.load(ctx)
    assert not isproxy(sibling) and sibling is sys.modules['isohook_relpkg.sibling']
    assert value == 'the parent sibling'
    assert isproxy(quopri)


def test_leaving_the_block_does_not_end_the_context(ctx):
    with isolated(ctx):
        import isofix_basic
    assert ctx.alive
    pid = ctx.pid
    assert isofix_basic.add(2, 3) == 5
    with isolated(ctx):
        import isofix_hookpkg
    assert isofix_hookpkg.pid() == pid  # the same child
    ctx.terminate()
    with pytest.raises(ClientStateError):
        isofix_basic.add(2, 3)


def test_a_block_without_a_context_makes_one_from_the_options():
    block = isolated(paths=[FIXTURES], timeout=CALL_DEADLINE)
    context = block.context
    try:
        assert isinstance(context, IsolationContext)
        with block as entered:
            import isofix_basic
        assert entered is context
        assert isofix_basic.pid() == context.pid
        assert context.alive  # still running after the block
    finally:
        context.terminate()
    with pytest.raises(TypeError):
        isolated(IsolationContext(), paths=[FIXTURES])


def test_blocks_nest(ctx, other_ctx):
    with isolated(ctx):
        import isofix_basic as outer_first
        with isolated(other_ctx):
            import isofix_basic as inner
            from isofix_hookpkg import pid as inner_pid
        import isofix_hookpkg as outer_second
    import quopri
    assert outer_first.pid() == ctx.pid
    assert outer_second.pid() == ctx.pid
    assert inner.pid() == other_ctx.pid != ctx.pid
    assert inner_pid() == other_ctx.pid
    assert not isproxy(quopri)


def helper_that_imports():
    """A function of this module that the block below calls: its import statement is not one of
    the block's own."""
    import quopri
    return quopri


def test_imports_in_functions_the_block_calls_are_untouched_even_from_the_same_module(ctx):
    with isolated(ctx):
        called = helper_that_imports()
        import quopri as own
    assert isproxy(own)
    # Only the block's own import statements are isolated; a function it calls imports as
    # usual, wherever that function was written.
    assert not isproxy(called)
