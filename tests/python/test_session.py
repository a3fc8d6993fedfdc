"""Tests of Session: in-process sub-sessions with isolated imports, environment and sys.path.

The fixture modules live in fixtures/session_pkgs (see its README); each makes a fresh TOKEN
when executed, so a different TOKEN means the module code ran again.
"""

import ctypes
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import types
import warnings
from pathlib import Path

import _json  # multi-phase: a second import makes a new module
import pytest

import process_isolation
from process_isolation import Session
from process_isolation.session import SharedExtensionWarning

FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'session_pkgs'
PATH_ONLY = FIXTURES / 'path_only'
EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'two_versions.py'
SUBPROCESS_TIMEOUT = 120  # seconds; a hung child fails the test instead of hanging it
# Standard library extension modules that were single-phase in some CPython (all of them in
# 3.11); the single_phase_module fixture picks the first one that still is.
SINGLE_PHASE_CANDIDATES = ('_datetime', '_socket', '_ctypes', '_asyncio', '_curses',
                           '_testsinglephase')


@pytest.fixture(autouse=True)
def fixture_modules(monkeypatch):
    """Put the fixture modules on sys.path; afterwards drop them from sys.modules and check
    that the test left no session entered and the environment as it found it."""
    environment = outside_pytest(os.environ)
    meta_path = list(sys.meta_path)
    monkeypatch.syspath_prepend(str(FIXTURES))
    yield
    monkeypatch.undo()  # the test's own setenv/syspath_prepend too: it is the same instance
    for name in [name for name in sys.modules if name.startswith('sessfix')]:
        del sys.modules[name]
    assert not Session().active
    assert not process_isolation.session._stack.frames
    assert sys.meta_path == meta_path
    assert outside_pytest(os.environ) == environment


def outside_pytest(environ):
    """The environment without the variable pytest itself changes between test phases."""
    return {key: value for key, value in environ.items() if key != 'PYTEST_CURRENT_TEST'}


def run_python(code, env=None):
    """Run `code` in a fresh interpreter that can import process_isolation; return stdout."""
    package_root = str(Path(process_isolation.__file__).resolve().parent.parent)
    child_env = dict(os.environ if env is None else env)
    child_env['PYTHONPATH'] = os.pathsep.join(
        [package_root] + [p for p in sys.path if p and os.path.isdir(p)])
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=child_env,
                            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def libc_getenv(name):
    """The variable as C code sees it (getenv(3)), or None."""
    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    getenv.argtypes = [ctypes.c_char_p]
    value = getenv(name.encode())
    return None if value is None else value.decode()


def child_getenv(name):
    """The variable as a subprocess sees it, or None."""
    result = subprocess.run(
        [sys.executable, '-c', 'import os, sys; print(repr(os.environ.get(sys.argv[1])))', name],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)


def same_modules(first, second):
    """Whether two sys.modules snapshots hold the same names bound to the same objects."""
    return first.keys() == second.keys() and all(first[k] is second[k] for k in first)


# Imports


def test_modules_imported_in_two_sessions_are_distinct():
    with Session():
        import sessfix_plain as first
    with Session():
        import sessfix_plain as second
    assert first is not second
    assert first.TOKEN is not second.TOKEN
    assert first.sessfix_dep is not second.sessfix_dep


def test_importing_a_module_twice_in_one_session_gives_the_same_object():
    with Session():
        import sessfix_plain as first
        import sessfix_plain as second
        third = importlib.import_module('sessfix_plain')
    assert first is second is third


def test_module_cached_before_the_session_is_imported_afresh():
    import sessfix_plain as outside
    with Session():
        import sessfix_plain as inside
        assert sys.modules['sessfix_plain'] is inside
    assert inside is not outside
    assert inside.TOKEN is not outside.TOKEN
    assert inside.sessfix_dep is not outside.sessfix_dep
    assert sys.modules['sessfix_plain'] is outside


def test_sys_modules_is_exactly_restored_after_the_block():
    import sessfix_plain  # noqa: F401  (cached before: must come back)
    before = dict(sys.modules)
    with Session():
        import sessfix_pkg  # noqa: F401
        import sessfix_plain  # noqa: F401,F811
        import json  # noqa: F401
        sys.modules['sessfix_injected'] = types.ModuleType('sessfix_injected')
    assert same_modules(before, dict(sys.modules))
    assert 'sessfix_pkg' not in sys.modules


def test_modules_imported_by_session_modules_belong_to_the_session():
    with Session() as session:
        import sessfix_pkg
    assert session.modules['sessfix_pkg'] is sessfix_pkg
    assert session.modules['sessfix_pkg.sub'] is sessfix_pkg.sub
    assert 'sessfix_pkg.sub' not in sys.modules


def test_interpreter_modules_are_never_isolated():
    import encodings.utf_8
    import importlib.util as global_util
    global_modules = {name: sys.modules[name]
                      for name in ('sys', 'builtins', 'os', 'io', 'warnings', 'threading')}
    with Session():
        for name, module in global_modules.items():
            assert importlib.import_module(name) is module
        import encodings.utf_8 as inside_codec
        import importlib.util as inside_util
        assert inside_codec is encodings.utf_8
        assert inside_util is global_util
        assert importlib.import_module('process_isolation.session') is \
            process_isolation.session


# keep_global


def test_keep_global_uses_the_cached_module():
    import sessfix_plain as outside
    with Session(keep_global=['sessfix_plain']):
        import sessfix_plain as inside
    assert inside is outside


def test_keep_global_covers_submodules():
    import sessfix_pkg as outside
    with Session(keep_global='sessfix_pkg'):
        import sessfix_pkg.sub as inside_sub
        import sessfix_pkg as inside
    assert inside is outside
    assert inside_sub is outside.sub


def test_keep_global_module_first_imported_inside_is_imported_globally_with_its_imports():
    assert 'sessfix_kept' not in sys.modules
    with Session(keep_global=['sessfix_kept']):
        import sessfix_kept as inside
    assert sys.modules['sessfix_kept'] is inside
    assert sys.modules['sessfix_kept_dep'] is inside.sessfix_kept_dep
    assert inside.__spec__.name == 'sessfix_kept'
    assert inside.__spec__.origin == str(FIXTURES / 'sessfix_kept.py')
    with Session():
        import sessfix_kept as fresh
    assert fresh is not inside


def test_keep_global_in_a_nested_session_uses_the_enclosing_session_module():
    with Session():
        import sessfix_plain as outer
        with Session(keep_global=['sessfix_plain']):
            import sessfix_plain as inner
    assert inner is outer
    assert 'sessfix_plain' not in sys.modules


# C extension modules


@pytest.fixture(scope='module')
def single_phase_module():
    """The name of a standard library extension module that CPython loads only once per
    interpreter, found by its behaviour in a fresh interpreter rather than by our own check:
    deleted from sys.modules and imported again, a single-phase module comes back as a new
    module object holding the very same C objects (a shallow copy of the first one's
    namespace), where a multi-phase one makes new functions and capsules. One that
    process_isolation itself loads (as _datetime, for byvalue) is no use."""
    out = run_python('''
        import importlib, sys, types
        import process_isolation.session
        def c_objects(module):
            return {key: value for key, value in vars(module).items()
                    if isinstance(value, types.BuiltinFunctionType)
                    or type(value).__name__ == 'PyCapsule'}
        for name in %r:
            if name in sys.modules:
                continue
            try:
                first = importlib.import_module(name)
            except ImportError:
                continue
            del sys.modules[name]
            second = importlib.import_module(name)
            objects = c_objects(first)
            if (second is not first and objects
                    and all(vars(second).get(k) is v for k, v in objects.items())):
                print(name)
                break
    ''' % (SINGLE_PHASE_CANDIDATES,))
    if not out.strip():
        pytest.skip('this CPython has no single-phase extension module among '
                    + ', '.join(SINGLE_PHASE_CANDIDATES))
    return out.strip()


def test_cpython_imports_json_accelerator_afresh():
    # What the multi-phase tests rely on, checked against CPython rather than our code.
    out = run_python('''
        import importlib, sys
        import _json as first
        del sys.modules['_json']
        second = importlib.import_module('_json')
        print(second is not first, second.scanstring is not first.scanstring)
    ''')
    assert out.split() == ['True', 'True']


def test_single_phase_extension_module_is_shared_with_a_warning(single_phase_module):
    name = single_phase_module
    outside = importlib.import_module(name)
    spec = outside.__spec__
    with Session() as session:
        with pytest.warns(SharedExtensionWarning, match=repr(name)) as caught:
            inside = __import__(name)
        assert sys.modules[name] is outside
    assert inside is outside
    assert outside.__spec__ is spec
    assert sys.modules[name] is outside
    assert session.shared_extensions == {name}
    assert 'already-loaded' in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the import statement


def test_multi_phase_extension_module_is_imported_afresh_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter('error', SharedExtensionWarning)
        with Session() as session:
            import _json as inside
    assert inside is not _json
    assert inside.scanstring is not _json.scanstring
    assert session.modules['_json'] is inside
    assert session.shared_extensions == frozenset()


def test_keep_global_shares_an_extension_module_without_a_warning(single_phase_module):
    name = single_phase_module
    outside = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter('error', SharedExtensionWarning)
        with Session(keep_global=[name]) as session:
            inside = __import__(name)
    assert inside is outside
    assert session.shared_extensions == frozenset()


def test_shared_extension_warning_made_an_error_fails_the_import(single_phase_module):
    name = single_phase_module
    importlib.import_module(name)
    before = dict(sys.modules)
    with warnings.catch_warnings():
        warnings.simplefilter('error', SharedExtensionWarning)
        with Session():
            with pytest.raises(SharedExtensionWarning):
                __import__(name)
            assert name not in sys.modules
    assert same_modules(before, dict(sys.modules))


def test_single_phase_extension_first_loaded_in_a_session_stays_loaded_after_it(
        single_phase_module):
    out = run_python('''
        import sys, warnings
        from process_isolation.session import Session, SharedExtensionWarning
        name = %r
        assert name not in sys.modules
        with warnings.catch_warnings(record=True) as first:
            warnings.simplefilter('always')
            with Session():
                inside = __import__(name)
        with warnings.catch_warnings(record=True) as second:
            warnings.simplefilter('always')
            with Session():
                again = __import__(name)
        print(sys.modules[name] is inside, again is inside,
              [w.category.__name__ for w in first], [w.category.__name__ for w in second],
              'stays loaded' in str(first[0].message))
    ''' % (single_phase_module,))
    assert out.split() == ['True', 'True', "['SharedExtensionWarning']",
                           "['SharedExtensionWarning']", 'True']


def test_extension_module_refusing_a_second_load_fails_with_a_note_naming_keep_global():
    # numpy 2's _multiarray_umath is multi-phase but refuses a second load in one process.
    numpy = pytest.importorskip('numpy')
    notes = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SharedExtensionWarning)  # numpy's own imports
        with Session():
            try:
                import numpy as fresh  # noqa: F401
            except ImportError as error:
                notes = getattr(error, '__notes__', [])
    if notes is None:
        pytest.skip('numpy {} loads twice in one process: nothing refuses'.format(
            numpy.__version__))
    assert any("keep_global=['numpy']" in note for note in notes)
    with Session(keep_global=['numpy']):
        import numpy as kept
    assert kept is numpy


# Environment


def test_env_values_win_over_inherited_ones(monkeypatch):
    monkeypatch.setenv('SESSFIX_A', 'outer')
    with Session(env={'SESSFIX_A': 'inner'}):
        assert os.environ['SESSFIX_A'] == 'inner'
        assert os.getenv('SESSFIX_A') == 'inner'
    assert os.environ['SESSFIX_A'] == 'outer'


def test_env_inherits_the_enclosing_environment(monkeypatch):
    monkeypatch.setenv('SESSFIX_OUTER', 'kept')
    with Session(env={'SESSFIX_A': 'added'}):
        assert os.environ['SESSFIX_OUTER'] == 'kept'
        assert os.environ['SESSFIX_A'] == 'added'
    assert 'SESSFIX_A' not in os.environ


def test_inherit_env_false_starts_from_an_empty_environment(monkeypatch):
    monkeypatch.setenv('SESSFIX_OUTER', 'hidden')
    with Session(env={'SESSFIX_ONLY': '1'}, inherit_env=False):
        assert dict(os.environ) == {'SESSFIX_ONLY': '1'}
        assert libc_getenv('SESSFIX_OUTER') is None
        assert child_getenv('SESSFIX_OUTER') is None
        assert child_getenv('SESSFIX_ONLY') == '1'
    assert os.environ['SESSFIX_OUTER'] == 'hidden'
    assert libc_getenv('SESSFIX_OUTER') == 'hidden'


def test_env_is_restored_exactly_including_added_and_removed_keys(monkeypatch):
    monkeypatch.setenv('SESSFIX_REMOVED', 'back')
    monkeypatch.setenv('SESSFIX_CHANGED', 'original')
    monkeypatch.delenv('SESSFIX_ADDED', raising=False)
    before = dict(os.environ)
    with Session(env={'SESSFIX_A': 'session'}):
        del os.environ['SESSFIX_REMOVED']
        os.environ['SESSFIX_CHANGED'] = 'changed'
        os.environ['SESSFIX_ADDED'] = 'new'
    assert dict(os.environ) == before
    assert libc_getenv('SESSFIX_REMOVED') == 'back'
    assert libc_getenv('SESSFIX_CHANGED') == 'original'
    assert libc_getenv('SESSFIX_ADDED') is None
    assert libc_getenv('SESSFIX_A') is None


def test_env_is_visible_to_c_code_and_subprocesses():
    with Session(env={'SESSFIX_C': 'from-session'}):
        assert libc_getenv('SESSFIX_C') == 'from-session'
        assert child_getenv('SESSFIX_C') == 'from-session'
    assert libc_getenv('SESSFIX_C') is None
    assert child_getenv('SESSFIX_C') is None


def test_env_path_like_values_are_converted_and_bad_values_rejected():
    assert Session(env={'SESSFIX_P': PATH_ONLY}).env == {'SESSFIX_P': str(PATH_ONLY)}
    with pytest.raises(TypeError):
        Session(env={'SESSFIX_A': 1})
    with pytest.raises(TypeError):
        Session(env=['SESSFIX_A'])
    with pytest.raises(ValueError):
        Session(env={'SESSFIX=A': 'x'})
    with pytest.raises(ValueError):
        Session(env={'SESSFIX_A': 'x\0y'})


# Paths


def test_paths_are_importable_only_inside_the_block():
    with pytest.raises(ModuleNotFoundError):
        import sessfix_path_only  # noqa: F401
    with Session(paths=[PATH_ONLY]):
        import sessfix_path_only as inside
    assert inside.__file__ == str(PATH_ONLY / 'sessfix_path_only.py')
    with pytest.raises(ModuleNotFoundError):
        import sessfix_path_only  # noqa: F401,F811


def test_paths_are_prepended_to_sys_path_and_sys_path_is_restored():
    path = sys.path
    before = list(sys.path)
    with Session(paths=[str(PATH_ONLY), FIXTURES / 'sessfix_pkg']):
        assert sys.path == [str(PATH_ONLY), str(FIXTURES / 'sessfix_pkg')] + before
        sys.path.append('/sessfix/added/inside')
    assert sys.path is path
    assert sys.path == before


def test_inherit_paths_false_uses_only_the_paths_and_the_standard_library():
    dynload = [p for p in sys.path if os.path.basename(p) == 'lib-dynload']
    with Session(paths=[PATH_ONLY], inherit_paths=False):
        assert sys.path[0] == str(PATH_ONLY)
        assert str(FIXTURES) not in sys.path
        assert not [p for p in sys.path if 'site-packages' in p or 'dist-packages' in p]
        assert all(p in sys.path for p in dynload)
        with pytest.raises(ModuleNotFoundError):
            import sessfix_plain  # noqa: F401
        with pytest.raises(ModuleNotFoundError):
            import pytest as _  # noqa: F401  (installed in site-packages)
        import sessfix_path_only  # noqa: F401
        import json  # found again, in the standard library
        import _json as inside  # in lib-dynload where the build has one
    assert json.loads('[1]') == [1]
    assert inside is not _json


# reload


def test_reload_re_executes_a_module_of_the_session_in_the_session():
    import sessfix_dep as global_dep
    with Session(env={'SESSFIX_VALUE': 'session'}) as session:
        import sessfix_plain as module
    token = module.TOKEN
    before = dict(sys.modules)
    assert session.reload(module) is module
    assert module.TOKEN is not token
    assert module.VALUE == 'session'  # read from the session's environment
    assert module.sessfix_dep is session.modules['sessfix_dep']
    assert module.sessfix_dep is not global_dep
    assert same_modules(before, dict(sys.modules))
    with session:  # reload inside the block works too
        session.reload(module)
        assert sys.modules['sessfix_plain'] is module


def test_reload_rejects_a_module_that_is_not_of_the_session():
    import sessfix_plain as global_module
    with Session():
        import sessfix_dep as other_module
    session = Session()
    with pytest.raises(ValueError):
        session.reload(global_module)
    with pytest.raises(ValueError):
        session.reload(other_module)
    with pytest.raises(TypeError):
        session.reload('sessfix_plain')
    assert not session.active


# Decorator


def test_decorated_function_runs_inside_the_session_at_every_call():
    @Session(env={'SESSFIX_A': 'decorated'}, paths=[PATH_ONLY])
    def load(suffix):
        """Docstring."""
        import sessfix_plain
        import sessfix_path_only  # noqa: F401
        return sessfix_plain, os.environ['SESSFIX_A'] + suffix

    first, value = load('!')
    second, _ = load('?')
    assert value == 'decorated!'
    assert first is second
    assert 'sessfix_plain' not in sys.modules
    assert 'SESSFIX_A' not in os.environ
    assert load.__name__ == 'load' and load.__doc__ == 'Docstring.'


def test_session_without_parentheses_as_a_decorator_is_a_type_error():
    with pytest.raises(TypeError, match='parentheses'):
        @Session
        def load():
            pass


# Nesting, exceptions, re-entering


def test_nested_sessions_are_isolated_and_inherit_env_and_paths():
    with Session(env={'SESSFIX_A': 'outer'}, paths=[PATH_ONLY]):
        import sessfix_plain as outer
        outer_path = list(sys.path)
        with Session(env={'SESSFIX_B': 'inner'}):
            import sessfix_plain as inner
            import sessfix_path_only  # noqa: F401  (the outer session's path)
            assert os.environ['SESSFIX_A'] == 'outer'
            assert os.environ['SESSFIX_B'] == 'inner'
        assert sys.modules['sessfix_plain'] is outer
        assert 'sessfix_path_only' not in sys.modules
        assert 'SESSFIX_B' not in os.environ
        assert sys.path == outer_path
        import sessfix_plain as outer_again
    assert outer_again is outer
    assert inner is not outer
    assert 'sessfix_plain' not in sys.modules


def test_state_is_restored_when_the_block_raises():
    modules = dict(sys.modules)
    path = list(sys.path)
    environment = dict(os.environ)
    with pytest.raises(KeyError):
        with Session(env={'SESSFIX_A': '1'}, paths=[PATH_ONLY]):
            import sessfix_plain  # noqa: F401
            os.environ['SESSFIX_B'] = '2'
            raise KeyError('raised in the block')
    assert same_modules(modules, dict(sys.modules))
    assert sys.path == path
    assert dict(os.environ) == environment


def test_outer_session_survives_an_inner_session_that_raised():
    with Session(env={'SESSFIX_A': 'outer'}) as outer:
        import sessfix_plain as module
        with pytest.raises(RuntimeError):
            with Session(env={'SESSFIX_A': 'inner'}):
                raise RuntimeError
        assert outer.active
        assert os.environ['SESSFIX_A'] == 'outer'
        assert sys.modules['sessfix_plain'] is module


def test_reentering_a_session_gives_back_its_own_modules():
    session = Session()
    with session:
        import sessfix_plain as first
    with Session():
        import sessfix_plain as other
    with session:
        import sessfix_plain as again
        assert sys.modules['sessfix_dep'] is first.sessfix_dep
    assert again is first
    assert other is not first


def test_reentering_an_active_session_shares_its_modules_with_the_outer_entry():
    session = Session()
    with session:
        import sessfix_dep as first
        with session:
            import sessfix_dep as nested
            import sessfix_pkg as added_inside
        assert nested is first
        import sessfix_pkg as after
        with Session():
            with session:  # through another session in between
                import sessfix_plain as deep
        import sessfix_plain as deep_after
    assert after is added_inside
    assert deep_after is deep


def test_leaving_sessions_out_of_order_is_an_error():
    outer, inner = Session(), Session()
    before = dict(sys.modules)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match='order'):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert same_modules(before, dict(sys.modules))


def test_other_threads_see_the_session_state_while_the_block_runs():
    # The documented limit: a session patches process-wide state.
    seen = {}

    def look():
        seen['env'] = os.environ.get('SESSFIX_A')
        seen['module'] = importlib.import_module('sessfix_plain')

    with Session(env={'SESSFIX_A': 'session'}) as session:
        thread = threading.Thread(target=look)
        thread.start()
        thread.join(timeout=SUBPROCESS_TIMEOUT)
        assert not thread.is_alive()
    assert seen['env'] == 'session'
    assert seen['module'] is session.modules['sessfix_plain']


# Compatibility and example


def test_subsession_module_runs_py_sub_session_code_unchanged():
    import subsession
    assert subsession.Session is Session

    import sessfix_plain as a
    with subsession.Session(env={'SESSFIX_VALUE': 'test'}, paths=[str(PATH_ONLY)]):
        import sessfix_plain as b
        assert os.environ['SESSFIX_VALUE'] == 'test'
        import sessfix_path_only  # noqa: F401
    with subsession.Session(keep_global=['sessfix_plain']) as s:
        import sessfix_plain as c
    with subsession.Session(inherit_env=False, inherit_paths=True) as t:
        import sessfix_plain as d
    t.reload(d)
    assert a is c
    assert b is not a and d is not a and b is not d
    assert b.VALUE == 'test'
    assert s.keep_global == ('sessfix_plain',)


def test_example_uses_two_versions_of_a_library_side_by_side_with_sessions():
    spec = importlib.util.spec_from_file_location('sessfix_two_versions', EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    old, new = example.use_sessions()
    assert old.__version__.startswith('1.') and new.__version__.startswith('2.')
    assert new.greet('x', excited=True) == 'Hello, x!'
    with pytest.raises(TypeError):
        old.greet('x', excited=True)
    assert 'tinyver' not in sys.modules
