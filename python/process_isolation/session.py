"""In-process sub-sessions: imports, environment and ``sys.path`` isolated for a ``with`` block.

A :class:`Session` is the answer for when even a child process is not possible (a plug-in
host such as Maya runs one long-lived interpreter): modules imported inside the block are
fresh module objects kept by that session, and ``env`` and ``paths`` are in force only while
the block runs. It patches process-wide state (``sys.modules``, ``sys.path``, ``sys.meta_path``,
``os.environ``), so it isolates code from code, not threads from threads: see
``docs/sessions.md`` for what it cannot isolate.

This module imports only the standard library, and everything it needs is imported when it
is itself imported, so that none of its own machinery is ever imported inside a session.
"""

import functools
import importlib
import importlib.machinery
import os
import sys
import sysconfig
import types
import warnings

try:
    import ctypes
except ImportError:  # an interpreter built without libffi: see _is_single_phase
    ctypes = None

__all__ = ['Session', 'SharedExtensionWarning']

_MISSING = object()

# Modules the interpreter itself holds on to: the import system, codecs, I/O, the warnings
# machinery (the C half looks the Python half up in sys.modules), thread shutdown, site
# initialisation. A second copy of any of them would be a disconnected second copy of
# process-wide machinery, so no session ever isolates them.
_INTERPRETER_MODULES = frozenset({
    '__main__', '_abc', '_codecs', '_collections_abc', '_frozen_importlib',
    '_frozen_importlib_external', '_imp', '_io', '_signal', '_sitebuiltins', '_stat',
    '_thread', '_warnings', '_weakref', 'abc', 'atexit', 'builtins', 'codecs', 'genericpath',
    'io', 'marshal', 'nt', 'ntpath', 'os', 'os.path', 'posix', 'posixpath', 'site',
    'sitecustomize', 'stat', 'sys', 'threading', 'usercustomize', 'warnings', 'winreg',
    'zipimport',
})
# Packages kept global together with all their submodules: the codec registry (importing
# `encodings` registers a codec search function for good), the import machinery, and this
# package (one session stack per process) with its py-sub-session alias.
_INTERPRETER_PACKAGES = ('encodings', 'importlib', 'process_isolation', 'subsession')

_STDLIB_DIRS = frozenset(
    os.path.realpath(path)
    for path in (sysconfig.get_path('stdlib'), sysconfig.get_path('platstdlib'))
    if path)
_STDLIB_ZIP = 'python{}{}.zip'.format(*sys.version_info[:2])


class SharedExtensionWarning(RuntimeWarning):
    """A C extension module could not be isolated, so a session shares the process-wide one.

    CPython can load a *single-phase* extension module (one whose ``PyInit_`` function returns
    a finished module) only once per interpreter: a second import returns a shallow copy of
    the first module's namespace over the same C state (``_PyImport_FixupExtensionObject``
    keeps it). Instead of handing out such a copy as if it were isolated, a session gives the
    already-loaded module itself and issues this warning. Naming the module in
    ``keep_global`` says the sharing is intended and silences the warning; turning the warning
    into an error (``warnings.simplefilter('error', SharedExtensionWarning)``) makes the import
    fail instead.
    """


class Session:
    """An in-process sub-session with isolated imports, environment and ``sys.path``.

    Use it as a context manager (``with Session() as s:``) or as a decorator (``@Session()``).
    While the block runs:

    - every module imported is imported afresh, even if the import system already has it,
      and belongs to this session: importing it again in the session gives the same object,
      and entering the same session again gives back its modules. Outside the block
      ``sys.modules`` is exactly what it was before, with two exceptions that are global by
      nature (below);
    - modules the interpreter needs (``sys``, ``builtins``, ``os``, ``io``, ``encodings``,
      ``importlib``, ``warnings``, ``threading``, ...) and modules named in ``keep_global``
      (with their submodules) are never isolated: the one cached in the enclosing scope is
      used. If it is not cached yet, it is imported into the enclosing scope, together with
      what it imports (the session's ``paths`` and environment still in force, so it can be
      found there), and stays there after the block;
    - a single-phase C extension module cannot be loaded twice in one interpreter, so it is
      shared like a ``keep_global`` module, and a :class:`SharedExtensionWarning` says so
      unless it is named in ``keep_global``. Multi-phase extension modules (most of the
      standard library's) are imported afresh like Python modules;
    - ``os.environ`` holds the session's environment. It is applied to the real process
      environment, so ``os.getenv``, C code calling ``getenv`` and subprocesses see it;
    - ``paths`` are prepended to ``sys.path``.

    Leaving the block, also by an exception, restores ``sys.modules``, ``sys.path``,
    ``sys.meta_path``, ``sys.path_hooks``, ``sys.path_importer_cache`` and the environment
    exactly (variables the block added are removed, removed ones come back). Sessions nest;
    an inner session is isolated from the outer one as the outer one is from the process.

    A session patches process-wide state: other threads see it while the block runs, and
    sessions must be left in the reverse order they were entered, from the thread that
    entered them.

    Args:
        keep_global: module names (a name covers its submodules) that are never isolated.
            A single string is one name.
        env: environment variables for the session, str to str (``os.PathLike`` values are
            converted). They win over inherited ones.
        inherit_env: if true (the default) the session starts from the enclosing
            environment; if false, from an empty one.
        paths: entries prepended to ``sys.path`` inside the block (str or ``os.PathLike``;
            a single one need not be in a list).
        inherit_paths: if true (the default) the enclosing ``sys.path`` follows ``paths``;
            if false, only the entries that hold the standard library do.

    Raises:
        TypeError: an argument has the wrong type (for example ``@Session`` used without
            parentheses).
        ValueError: an environment variable name or value cannot be put in an environment
            (empty name, ``=`` in the name, NUL character).
    """

    def __init__(self, keep_global=(), env=None, inherit_env=True, paths=None,
                 inherit_paths=True):
        self._keep_global = _module_names(keep_global)
        self._env = _environment(env)
        self._inherit_env = bool(inherit_env)
        self._paths = _path_entries(paths)
        self._inherit_paths = bool(inherit_paths)
        self._modules = {}  # name -> the session's own module, kept between entries
        self._shared = set()  # names of single-phase extension modules it had to share

    def __repr__(self):
        return ('Session(keep_global={!r}, env={!r}, inherit_env={!r}, paths={!r}, '
                'inherit_paths={!r})').format(list(self._keep_global), self._env,
                                              self._inherit_env, list(self._paths),
                                              self._inherit_paths)

    @property
    def keep_global(self):
        """tuple of str: the module names this session never isolates (besides the
        interpreter's own)."""
        return self._keep_global

    @property
    def env(self):
        """dict: a copy of the variables this session sets."""
        return dict(self._env)

    @property
    def inherit_env(self):
        """bool: whether the session's environment starts from the enclosing one."""
        return self._inherit_env

    @property
    def paths(self):
        """tuple of str: the entries this session prepends to ``sys.path``."""
        return self._paths

    @property
    def inherit_paths(self):
        """bool: whether the enclosing ``sys.path`` follows ``paths`` inside the block."""
        return self._inherit_paths

    @property
    def active(self):
        """bool: whether the session is entered (its block is running) at the moment."""
        return _stack.top_frame_of(self) is not None

    @property
    def modules(self):
        """dict: name -> module, a copy of the modules that belong to this session.

        Inside the block it includes what the block has imported so far.
        """
        own = _stack.top_frame_of(self)
        if own is not None:
            _stack.harvest(own, _stack.live_view(own))
        return dict(self._modules)

    @property
    def shared_extensions(self):
        """frozenset of str: single-phase extension modules this session had to share with
        the rest of the process (each one was announced by a
        :class:`SharedExtensionWarning`)."""
        return frozenset(self._shared)

    def __enter__(self):
        """Enter the session: install its modules, environment and ``sys.path``.

        Returns:
            Session: this session, so that ``with Session() as s:`` binds it.
        """
        own = _stack.top_frame_of(self)
        if own is not None:  # re-entered while active: carry over what the block imported
            _stack.harvest(own, _stack.live_view(own))
        frame = _Frame(self)
        _stack.push(frame)
        try:
            frame.apply()
        except BaseException:
            _stack.pop(frame)
            frame.restore()
            raise
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        """Leave the session: keep its modules and restore what it replaced.

        Exceptions raised in the block are not suppressed.

        Raises:
            RuntimeError: this session is not the innermost active one (sessions left out of
                order, or from another thread). Nothing is restored then.
        """
        frame = _stack.innermost()
        if frame is None or frame.session is not self:
            raise RuntimeError(
                'Session exited out of order: sessions must be left in the reverse order they '
                'were entered, from the thread that entered them')
        _stack.pop(frame)
        try:
            _stack.harvest(frame, sys.modules)
        finally:
            frame.restore()
            enclosing = _stack.innermost()
            if enclosing is not None:
                enclosing.merge_own_modules()
        return False

    def __call__(self, func):
        """Use the session as a decorator: ``func`` runs inside it at every call.

        Each call enters this same session, so the calls share its modules. For a generator
        or coroutine function the session covers only the call that creates the generator or
        coroutine, not its later execution.

        Args:
            func: the callable to wrap.

        Returns:
            The wrapped callable (with ``func``'s name and docstring).

        Raises:
            TypeError: ``func`` is not callable.
        """
        if not callable(func):
            raise TypeError('Session() decorates a callable, not {!r}'.format(func))

        @functools.wraps(func)
        def run_in_session(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return run_in_session

    def reload(self, module):
        """Re-execute a module of this session in this session (its modules, environment and
        paths), like ``importlib.reload`` does for a global module.

        It can be called inside or outside the block.

        Args:
            module: a module imported in this session.

        Returns:
            module: the reloaded module (the same object, re-executed).

        Raises:
            TypeError: ``module`` is not a module.
            ValueError: ``module`` does not belong to this session (a global module or one of
                another session: use ``importlib.reload`` or that session's ``reload``).
            Exception: whatever executing the module raises.
        """
        if not isinstance(module, types.ModuleType):
            raise TypeError('reload() needs a module, not {!r}'.format(module))
        with self:
            spec = getattr(module, '__spec__', None)
            name = spec.name if spec is not None else module.__name__
            if self._modules.get(name) is not module:
                raise ValueError('{!r} is not a module of this session'.format(module))
            return importlib.reload(module)

    def _keeps(self, name):
        """Whether module `name` is global for this session: the interpreter's or kept."""
        if not isinstance(name, str):
            return True
        if name in _INTERPRETER_MODULES:
            return True
        return any(name == root or name.startswith(root + '.')
                   for roots in (_INTERPRETER_PACKAGES, self._keep_global) for root in roots)


class _Frame:
    """One entry into a session: the state it replaced and the finder it installed.

    Everything is saved when the frame is made (before anything is changed), so restore()
    is right even when apply() failed half-way.
    """

    def __init__(self, session):
        self.session = session
        # The enclosing scope's modules. An import into the enclosing scope made from inside
        # this frame (a kept-global module imported for the first time) adds to it, and so
        # does leaving the frame (modules that are global by nature); restore() puts it back.
        self.outer = dict(sys.modules)
        self.kept = {}  # name -> module left in the view because it is global
        self.finder = _SessionFinder(self)
        self.environ = os.environ
        self.saved_env = dict(os.environ)
        self.path = sys.path
        self.saved_path = list(sys.path)
        self.meta_path = sys.meta_path
        self.saved_meta_path = list(sys.meta_path)
        self.path_hooks = sys.path_hooks
        self.saved_path_hooks = list(sys.path_hooks)
        self.importer_cache = sys.path_importer_cache
        self.saved_importer_cache = dict(sys.path_importer_cache)

    def apply(self):
        """Put the session's environment, ``sys.path`` and modules in force."""
        session = self.session
        env = dict(self.saved_env) if session._inherit_env else {}
        env.update(session._env)
        _set_environment(env)
        tail = (self.saved_path if session._inherit_paths
                else _standard_library_entries(self.saved_path))
        sys.path[:] = list(session._paths) + list(tail)
        sys.meta_path.insert(0, self.finder)
        own = session._modules
        # None entries block an import in the enclosing scope; they block it here too.
        self.kept = {name: module for name, module in self.outer.items()
                     if name not in own and (module is None or session._keeps(name))}
        view = dict(self.kept)
        view.update(own)
        _replace_modules(view)

    def restore(self):
        """Put back exactly what apply() replaced, whatever the block did meanwhile."""
        try:
            _replace_modules(self.outer)
        finally:
            sys.path = self.path
            self.path[:] = self.saved_path
            sys.meta_path = self.meta_path
            self.meta_path[:] = self.saved_meta_path
            sys.path_hooks = self.path_hooks
            self.path_hooks[:] = self.saved_path_hooks
            sys.path_importer_cache = self.importer_cache
            self.importer_cache.clear()
            self.importer_cache.update(self.saved_importer_cache)
            os.environ = self.environ
            _set_environment(self.saved_env)

    def merge_own_modules(self):
        """Bring this (now innermost again) frame's view up to date with its session's
        modules, which an inner entry of the same session may have added to or reloaded."""
        modules = sys.modules
        for name, module in self.session._modules.items():
            if modules.get(name, _MISSING) is not module:
                modules[name] = module


class _SessionStack:
    """The entered session frames of this process, innermost last.

    `current` is the frame whose view sys.modules holds: the innermost one, except while a
    frame imports a kept-global module into its enclosing scope. Only the current frame's
    finder acts.
    """

    def __init__(self):
        self.frames = []
        self.current = None

    def push(self, frame):
        self.frames.append(frame)
        self.current = frame

    def pop(self, frame):
        assert self.frames and self.frames[-1] is frame
        self.frames.pop()
        self.current = self.frames[-1] if self.frames else None

    def innermost(self):
        return self.frames[-1] if self.frames else None

    def top_frame_of(self, session):
        for frame in reversed(self.frames):
            if frame.session is session:
                return frame
        return None

    def enclosing_frames(self, frame):
        """`frame` and the frames around it, innermost first."""
        index = self.frames.index(frame)
        return reversed(self.frames[:index + 1])

    def live_view(self, frame):
        """The modules dict that currently holds `frame`'s view."""
        index = self.frames.index(frame)
        if index == len(self.frames) - 1:
            return sys.modules
        return self.frames[index + 1].outer

    def harvest(self, frame, live):
        """Sort the modules of `frame`'s view: the session's own go to the session, the
        global-by-nature ones go to the enclosing scope, the kept ones stay where they are."""
        session = frame.session
        for name, module in list(live.items()):
            if frame.kept.get(name, _MISSING) is module:
                continue
            if session._keeps(name) or _is_single_phase(module):
                frame.outer.setdefault(name, module)
            else:
                session._modules[name] = module

    def import_in_enclosing_scope(self, frame, name):
        """Import `name` into the scope enclosing `frame` (the process, or the view of the
        session around it), as a plain import there would, and return the module."""
        view = dict(sys.modules)
        index = self.frames.index(frame)
        previous = self.current
        _replace_modules(frame.outer)
        self.current = self.frames[index - 1] if index > 0 else None
        try:
            return importlib.import_module(name)
        finally:
            self.current = previous
            frame.outer.clear()
            frame.outer.update(sys.modules)
            _replace_modules(view)


_stack = _SessionStack()


class _SessionFinder:
    """The meta path finder of one frame: first on ``sys.meta_path`` while the frame is
    entered. It finds nothing itself; it decides which module object an import gets."""

    def __init__(self, frame):
        self._frame = frame

    def find_spec(self, name, path=None, target=None):
        frame = self._frame
        if _stack.current is not frame or name in sys.modules:
            return None  # another scope's import, or a reload: nothing to decide
        if frame.session._keeps(name):
            module = frame.outer.get(name)
            if isinstance(module, types.ModuleType):
                return _shared_spec(frame, name, getattr(module, '__spec__', None), module,
                                    announce=False)
            spec = self._find_elsewhere(name, path, target)
            if spec is None:
                return None
            return _shared_spec(frame, name, spec, None, announce=False)
        for scope in _stack.enclosing_frames(frame):
            module = scope.outer.get(name)
            if isinstance(module, types.ModuleType) and _is_single_phase(module):
                return _shared_spec(frame, name, getattr(module, '__spec__', None), module,
                                    announce=True)
        spec = self._find_elsewhere(name, path, target)
        if spec is not None and _is_extension_loader(spec.loader):
            spec.loader = _ExtensionLoader(frame, spec.loader)
        return spec

    def invalidate_caches(self):
        """Nothing to invalidate: the finder caches nothing."""

    def _find_elsewhere(self, name, path, target):
        """The spec the finders after this one would give, or None."""
        meta_path = sys.meta_path
        try:
            start = meta_path.index(self) + 1
        except ValueError:
            return None
        for finder in meta_path[start:]:
            find_spec = getattr(finder, 'find_spec', None)
            if find_spec is None:
                return None  # a legacy finder: let the import system go on from here
            spec = find_spec(name, path, target)
            if spec is not None:
                return spec
        return None


def _shared_spec(frame, name, real_spec, module, announce):
    """A spec whose loader hands out `module` (or, if it is None, the module imported into
    the enclosing scope) instead of making a new one."""
    loader = _SharedLoader(frame, module, announce)
    spec = importlib.machinery.ModuleSpec(
        name, loader, origin=getattr(real_spec, 'origin', None),
        is_package=getattr(real_spec, 'submodule_search_locations', None) is not None)
    if spec.submodule_search_locations is not None:
        spec.submodule_search_locations = real_spec.submodule_search_locations
    return spec


class _SharedLoader:
    """Loader of a module that the session shares with its enclosing scope.

    The import system sets ``__spec__`` on whatever create_module() returns; exec_module()
    puts the module's own ``__spec__`` and ``__loader__`` back, so a shared module is left
    exactly as it was.
    """

    def __init__(self, frame, module, announce):
        self._frame = frame
        self._module = module
        self._announce = announce
        self._saved = {}

    def create_module(self, spec):
        module = self._module
        if module is None:
            module = _stack.import_in_enclosing_scope(self._frame, spec.name)
        if self._announce:
            _announce_shared(spec.name, first_load=False)
            self._frame.session._shared.add(spec.name)
        attributes = getattr(module, '__dict__', {})
        self._saved = {key: attributes.get(key, _MISSING) for key in ('__spec__', '__loader__')}
        return module

    def exec_module(self, module):
        for key, value in self._saved.items():
            try:
                if value is _MISSING:
                    if key in getattr(module, '__dict__', {}):
                        delattr(module, key)
                else:
                    setattr(module, key, value)
            except AttributeError:
                pass


class _ExtensionLoader:
    """Wrapper of an extension module loader: after the module is created it checks whether
    the module is single-phase, and if so announces that the session cannot isolate it.

    It also adds a note to an ImportError of an extension module that refuses a second load
    (see _explain_refusal). exec_module() takes the wrapper out of the spec and the module
    before running the real loader, so the module records its real loader.
    """

    def __init__(self, frame, loader):
        self._frame = frame
        self._loader = loader

    def __getattr__(self, attribute):
        return getattr(self._loader, attribute)

    def create_module(self, spec):
        try:
            module = self._loader.create_module(spec)
        except ImportError as error:
            _explain_refusal(self._frame, spec.name, error)
            raise
        if module is not None and _is_single_phase(module):
            # CPython has now cached it for the whole process; leaving the frame moves it to
            # the enclosing scope (see _SessionStack.harvest).
            _announce_shared(spec.name, first_load=True)
            self._frame.session._shared.add(spec.name)
        return module

    def exec_module(self, module):
        spec = getattr(module, '__spec__', None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        if getattr(module, '__loader__', None) is self:
            module.__loader__ = self._loader
        try:
            return self._loader.exec_module(module)
        except ImportError as error:
            _explain_refusal(self._frame, getattr(spec, 'name', module.__name__), error)
            raise


def _explain_refusal(frame, name, error):
    """Add a note to the ImportError of an extension module that is loaded outside the
    session already: some multi-phase modules (numpy 2's _multiarray_umath, for one) refuse a
    second load in one interpreter themselves."""
    if not any(isinstance(scope.outer.get(name), types.ModuleType)
               for scope in _stack.enclosing_frames(frame)):
        return
    package = name.partition('.')[0]
    error.add_note(
        'Session: the extension module {!r} is already loaded outside this session and may '
        'refuse to be loaded a second time in one interpreter; keep_global=[{!r}] makes the '
        'session use the loaded one.'.format(name, package))


def _announce_shared(name, first_load):
    if first_load:
        what = ('it was loaded now, for the whole process: it stays loaded after the session '
                'and every later import shares it')
    else:
        what = ('the session uses the already-loaded module instead of a fresh copy, so it is '
                'shared with the code outside the session')
    # stacklevel=3 is the caller of create_module(); the warnings machinery skips the import
    # system's own frames on the way, so the warning points at the import statement.
    warnings.warn(
        'Session cannot isolate the C extension module {0!r}: it uses single-phase '
        'initialisation, which CPython allows only once per interpreter; {1}. Pass '
        'keep_global=[{0!r}] to say this is intended.'.format(name, what),
        SharedExtensionWarning, stacklevel=3)


def _is_extension_loader(loader):
    return (isinstance(loader, importlib.machinery.ExtensionFileLoader)
            or loader is importlib.machinery.BuiltinImporter
            or isinstance(loader, importlib.machinery.BuiltinImporter))


def _make_definition_reader():
    """Return f(module) -> True for a single-phase extension module, False otherwise, built
    on the C API with ctypes; or None when ctypes cannot reach the C API."""
    if ctypes is None:
        return None
    try:
        get_definition = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(
            ('PyModule_GetDef', ctypes.pythonapi))
    except (AttributeError, OSError):
        return None

    class ModuleDef(ctypes.Structure):  # struct PyModuleDef, as far as m_slots
        # PyObject_HEAD is sizeof(PyObject), which is object.__basicsize__ on every build
        # (default, Py_TRACE_REFS, free-threaded).
        _fields_ = [
            ('ob_base', ctypes.c_char * object.__basicsize__),
            ('m_init', ctypes.c_void_p), ('m_index', ctypes.c_ssize_t),
            ('m_copy', ctypes.c_void_p), ('m_name', ctypes.c_char_p),
            ('m_doc', ctypes.c_char_p), ('m_size', ctypes.c_ssize_t),
            ('m_methods', ctypes.c_void_p), ('m_slots', ctypes.c_void_p)]

    def is_single_phase(module):
        address = get_definition(module)
        # No definition: a module made in Python. Multi-phase definitions have slots;
        # PyModule_Create (single-phase) refuses a definition with slots.
        return bool(address) and not ModuleDef.from_address(address).m_slots

    return is_single_phase


_read_definition = _make_definition_reader()


def _is_single_phase(module):
    """Whether `module` is a single-phase C extension module (one CPython cannot load twice).

    Without access to the C API every extension module counts as single-phase, which shares
    (and announces) more than needed but never hands out a copy as if it were isolated.
    """
    if not isinstance(module, types.ModuleType):
        return False
    if _read_definition is not None:
        return _read_definition(module)
    spec = getattr(module, '__spec__', None)
    return _is_extension_loader(getattr(spec, 'loader', None)
                                or getattr(module, '__loader__', None))


def _replace_modules(target):
    """Make sys.modules (the same dict object: the interpreter keeps a reference to it) hold
    exactly the entries of `target`."""
    modules = sys.modules
    for name in [name for name in modules if name not in target]:
        del modules[name]
    for name, module in target.items():
        if modules.get(name, _MISSING) is not module:
            modules[name] = module


def _set_environment(target):
    """Make the process environment (through os.environ, so putenv/unsetenv reach C code
    and subprocesses) hold exactly `target`."""
    environ = os.environ
    for key in [key for key in environ if key not in target]:
        del environ[key]
    for key, value in target.items():
        if environ.get(key) != value:
            environ[key] = value


def _standard_library_entries(entries):
    """The entries of `entries` that the interpreter needs to import the standard library:
    the stdlib directory, its zip and lib-dynload, but not site-packages."""
    kept = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            continue
        real = os.path.realpath(entry)
        if os.path.basename(real) == _STDLIB_ZIP:
            kept.append(entry)
            continue
        parts = real.split(os.sep)
        if 'site-packages' in parts or 'dist-packages' in parts:
            continue
        if any(real == root or real.startswith(root + os.sep) for root in _STDLIB_DIRS):
            kept.append(entry)
    return kept


def _module_names(names):
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError('keep_global must be module names, not {!r} (decorate with '
                        '@Session(), with parentheses)'.format(names)) from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError('keep_global must be module names, not {!r}'.format(name))
    return names


def _environment(env):
    if env is None:
        return {}
    try:
        items = dict(env).items()
    except (TypeError, ValueError):
        raise TypeError('env must be a mapping of str to str, not {!r}'.format(env)) from None
    result = {}
    for key, value in items:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError('env must map str to str, not {!r} to {!r}'.format(key, value))
        if not key or '=' in key or '\0' in key or '\0' in value:
            raise ValueError('{!r}={!r} cannot be put in an environment'.format(key, value))
        result[key] = value
    return result


def _path_entries(paths):
    if paths is None:
        return ()
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = (paths,)
    entries = []
    for path in paths:
        try:
            entries.append(os.fsdecode(os.fspath(path)))
        except TypeError:
            raise TypeError('paths must be str or os.PathLike, not {!r}'.format(path)) from None
    return tuple(entries)
