"""Isolation contexts: one isolated child each, and the default one ``import_isolated`` uses."""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
import time
import warnings
import weakref
from contextlib import contextmanager

from . import _byvalue, _child, _core, _spawn
from .errors import CallTimeoutError, ClientStateError, ProcessTerminationError
from .limits import Limits
from .session import _environment, _path_entries

__all__ = [
    "IsolationContext",
    "byvalue",
    "default_context",
    "import_isolated",
    "isproxy",
    "load_module",
    "timeout",
    "Limits",
]

_START_METHODS = ("fork", "forkserver", "spawn")
_TRANSPORTS = ("shm", "socket")
_fork_server = None
_fork_server_lock = threading.Lock()


def _get_fork_server(start_timeout):
    """The process-wide fork server, started on first use (and again if it died)."""
    global _fork_server
    with _fork_server_lock:
        if _fork_server is None or not _fork_server.alive:
            _fork_server = _core.ForkServer.start(
                _spawn.fork_server_command(sys.executable), start_timeout)
        return _fork_server
_live_contexts: "weakref.WeakSet[IsolationContext]" = weakref.WeakSet()
_default_lock = threading.Lock()
_default = None


def isproxy(obj) -> bool:
    """True when ``obj`` is a proxy for an object living in an isolated child."""
    return _core.isproxy(obj)


class IsolationContext:
    """One isolated child process, and the modules imported into it.

    Keyword arguments (all optional):
        start_method: how the child is made. ``'fork'`` (default) forks this interpreter (fast;
            warns when this process has other threads, as their locks stay locked in the
            child); ``'forkserver'`` has a clean single-threaded server process, started once
            per parent from a fresh interpreter, fork the child (safe from a threaded parent;
            the child holds no copy of the parent's memory); ``'spawn'`` starts a fresh
            interpreter (slowest; inherits no state).
        python: with ``start_method='spawn'``, the interpreter to run, or a virtual environment
            directory (its ``bin/python``); it must be the same Python version as this one.
        env: environment variables for the child (str to str). They win over inherited ones.
        inherit_env: when False, the child's environment is ``env`` alone.
        paths: directories prepended to the child's ``sys.path``.
        inherit_paths: when False, the child's ``sys.path`` is ``paths`` plus the standard
            library only. (``env``, ``inherit_env``, ``paths`` and ``inherit_paths`` mean the
            same as for :class:`Session`.)
        cwd: the child's working directory.
        timeout: default seconds a call may take before the child is killed and
            :class:`CallTimeoutError` is raised; None for no limit.
        limits: a :class:`Limits` applied in the child before it imports anything.
        restart: False (default), or ``'auto'`` (what :func:`default_context` has): after the
            child ended, the next use of a *module* proxy, or the next :meth:`load_module` of
            it (which returns the same proxy), starts a new child and imports the module again;
            module proxies stay in ``sys.modules`` meanwhile. Proxies of other objects from the
            ended child keep raising ClientStateError. After :meth:`terminate` nothing comes
            back until the context is used again.
        stdout, stderr: ``'inherit'`` (default), ``'capture'`` (kept in a bounded buffer; the
            last lines are attached to ProcessTerminationError and returned by
            :meth:`captured_output`), or a file path to append to.
        trusted: when True, :func:`byvalue` unpickles any type the child sends; by default only
            allow-listed plain data types.
        start_timeout: seconds the child may take to start.
        transport: ``'shm'`` (default): messages travel through a pair of rings in memory shared
            with the child, and a waiting side polls them for a few microseconds before it
            sleeps, so a call costs about a microsecond of hand-over instead of two scheduler
            wake-ups; the socket stays the wake-up line and the death detector. ``'socket'``:
            everything goes over the Unix socket (no polling; slower calls).

    The child is started on first use (or by :meth:`start`). A context is a context manager:
    leaving the ``with`` block terminates the child.
    """

    def __init__(self, *, start_method="fork", env=None, inherit_env=True, paths=None,
                 inherit_paths=True, cwd=None, timeout=None, limits=None, restart=False,
                 stdout="inherit", stderr="inherit", trusted=False, start_timeout=60.0,
                 python=None, transport="shm", _deny_private=False, **unsupported):
        if unsupported:
            names = ", ".join(sorted(unsupported))
            raise TypeError(f"IsolationContext() got options this version does not support: "
                            f"{names}")
        if start_method not in _START_METHODS:
            raise ValueError(f"start_method must be one of {_START_METHODS}, not {start_method!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds or None")
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits instance, not {type(limits).__name__}")
        if restart not in (False, None, "auto"):
            raise ValueError(f"restart must be False or 'auto', not {restart!r}")
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be one of {_TRANSPORTS}, not {transport!r}")
        if python is not None and start_method != "spawn":
            raise ValueError("python= needs start_method='spawn'")
        self.python = _spawn.resolve_python(python) if start_method == "spawn" else None
        self.start_method = start_method
        self.env = _environment(env)
        self.inherit_env = bool(inherit_env)
        self.paths = list(_path_entries(paths))
        self.inherit_paths = bool(inherit_paths)
        self.limits = limits
        self.restart_policy = restart or False
        self.stdout = _output_spec("stdout", stdout)
        self.stderr = _output_spec("stderr", stderr)
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.timeout = timeout
        self.trusted = bool(trusted)
        self.start_timeout = start_timeout
        self.transport = transport
        # Whether large bytes go to the child as spans of this process's memory, which the child
        # copies itself (docs/protocol.md, "Large values"). Offering them shows the child where
        # things are in this process, and a child that can read them can read all of it.
        # TODO(security): a sandboxed context (Sandbox, not built yet) must set this False, as it
        # must start with 'forkserver'.
        self._parent_spans = True
        # Whether the child may use private and dunder attributes of the parent objects passed
        # to it, and look inside parent modules, as local code would (DESIGN.md, "Trust"). An
        # unconfined child can already do anything its user can, so by default it may; a denied
        # private attribute is an AttributeError saying why, a look inside a parent module a
        # PermissionError. Imports and calls by name in the parent, and copies of parent objects
        # by value, are refused either way.
        # TODO(security): a sandboxed context (Sandbox, not built yet) must set this True.
        self._deny_private = bool(_deny_private)
        self._connection = None
        # Every proxy of this context's child keeps the context alive (DESIGN.md, "What a proxy
        # does"), so the context holds its module proxies weakly: when the user's last proxy
        # and the context are gone, the child is terminated at once, without a garbage cycle.
        self._modules = weakref.WeakValueDictionary()
        self._module_paths = {}  # name -> the path it was first imported with, for restarts
        self._registered = weakref.WeakValueDictionary()
        self._registering = set()  # names put in sys.modules, so a restart puts them back
        self._termination = None
        self._stopped = False  # terminate() was called and the context not used since
        self._lock = threading.RLock()
        _live_contexts.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self):
        """Starts the child. Raises RuntimeError if it is already running, and
        ProcessTerminationError if it dies while starting."""
        with self._lock:
            if self._connection is not None:
                raise RuntimeError(f"this context's child (pid {self.pid}) is already running")
            self._start()
        return self

    def ensure_started(self):
        """Starts the child unless it is running. Raises ClientStateError if it has ended;
        call :meth:`restart` to start a new one."""
        with self._lock:
            if self._connection is None:
                if self._termination is not None and self.restart_policy != "auto":
                    raise ClientStateError(
                        f"this context's child (pid {self._termination['pid']}) has ended "
                        f"({self._termination['ending']}); call restart() to start a new one")
                self._start()
        return self

    def _start(self):
        if self.start_method == "fork" and threading.active_count() > 1:
            warnings.warn(
                "forking an isolated child from a process with several threads: locks held by "
                "other threads stay locked in the child", RuntimeWarning, stacklevel=3)
        outputs = dict(stdout_mode=self.stdout[0], stdout_path=self.stdout[1],
                       stderr_mode=self.stderr[0], stderr_path=self.stderr[1],
                       shared_memory=self.transport == "shm", parent_spans=self._parent_spans)
        if self.start_method == "forkserver":
            connection = _core.Connection.via_fork_server(
                _get_fork_server(self.start_timeout), _spawn.options_json(self),
                self.start_timeout, **outputs)
        elif self.start_method == "spawn":
            try:
                connection = _core.Connection.spawn(
                    [self.python, "-c", _spawn.LAUNCHER, _spawn.package_dir(),
                     _spawn.options_json(self)], self.start_timeout, **outputs)
            except ProcessTerminationError as error:
                if error.exit_code == _spawn.CANNOT_LOAD:
                    raise RuntimeError(
                        f"{self.python} cannot load process_isolation (its C extension is built "
                        f"for {sys.implementation.cache_tag}); use an interpreter of the same "
                        "Python version, or install process_isolation in it") from error
                raise
        else:
            bootstrap = functools.partial(_child.bootstrap, self.env, self.inherit_env,
                                          self.paths, self.inherit_paths, self.cwd, self.limits)
            connection = _core.Connection.start(bootstrap, self.start_timeout, **outputs)
        # Before the first request: the parent serves the child's requests only while it waits
        # for an answer of its own.
        connection.deny_private = self._deny_private
        if self.timeout is not None:
            connection.default_timeout = float(self.timeout)
        if self.restart_policy == "auto":
            connection.set_restart_hook(functools.partial(_auto_restart, weakref.ref(self)))
        connection.set_proxy_owner(self)
        self._connection = connection
        self._termination = None
        self._stopped = False

    def restart(self):
        """Terminates the child (if running) and starts a new one. Proxies from the old child
        raise ClientStateError from then on."""
        with self._lock:
            self._shutdown()
            self._termination = None
            self._start()
        return self

    def terminate(self):
        """Ends the child: says goodbye, then SIGTERM, then SIGKILL after a short grace; reaps
        it. Proxies from it raise ClientStateError from then on, module proxies too (even with
        restart='auto', until the context is used again). Idempotent."""
        with self._lock:
            self._stopped = True
            if self._connection is not None:
                self._connection.set_restart_hook(None)
            self._shutdown()

    def _shutdown(self):
        connection = self._connection
        if connection is None:
            return
        self._forget_child()
        connection.terminate()
        self._termination = connection.termination

    def _forget_child(self, keep_modules=False):
        """Drops the connection and the modules imported into its child (and their entries in
        sys.modules). With ``keep_modules`` (a child that ended by itself, restart='auto') the
        module proxies stay, here and in sys.modules: their next use imports them again in a new
        child."""
        self._connection = None
        if keep_modules:
            return
        for name, proxy in list(self._registered.items()):
            if sys.modules.get(name) is proxy:
                del sys.modules[name]
        self._registered.clear()
        self._modules.clear()

    def _abandon(self):
        """After fork, in the new process: this context's child belongs to the parent."""
        self._connection = None
        self._modules.clear()
        self._registered.clear()

    def _live_connection(self):
        connection = self._connection
        if connection is not None and not connection.alive:
            self._note_ended(connection)
            if self.restart_policy != "auto":
                return connection  # its use raises ProcessTerminationError, then ClientStateError
            connection = None
        if connection is None:
            self.ensure_started()
            connection = self._connection
        return connection

    def _note_ended(self, connection):
        if self._connection is connection:
            self._termination = connection.termination
            self._forget_child(keep_modules=self.restart_policy == "auto")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()
        return False

    def __repr__(self):
        state = f"pid {self.pid}" if self._connection is not None else "not running"
        return f"<IsolationContext {self.start_method}, {state}>"

    # -- properties --------------------------------------------------------------------------

    @property
    def pid(self):
        """The child's process id, or None when no child runs."""
        connection = self._connection
        return connection.pid if connection is not None else None

    @property
    def alive(self):
        """True while the child runs and can be used."""
        connection = self._connection
        if connection is None:
            return False
        if not connection.alive:
            self._note_ended(connection)
            return False
        return True

    @property
    def termination(self):
        """How the last child ended, as a dict (pid, exit_code, signal, signal_name,
        core_dumped, child_traceback, native_traceback, reason), or None while it runs."""
        connection = self._connection
        if connection is not None and not connection.alive:
            self._note_ended(connection)
        return self._termination

    # -- using the child ---------------------------------------------------------------------

    def load_module(self, name, path=None, *, _register=True):
        """Imports module ``name`` (dotted names allowed) in the child and returns its proxy.

        Args:
            name: the module's name, as for ``importlib.import_module``.
            path: directories prepended to the child's ``sys.path`` first.

        Returns:
            The proxy. The same name gives the same proxy while the child lives. The proxy is
            also put in ``sys.modules[name]`` unless a real module of that name is there.

        Raises:
            ImportError (or whatever the import raised in the child), ProcessTerminationError.
        """
        with self._lock:
            connection = self._live_connection()
            module = self._modules.get(name)
            if module is not None:
                if not connection.owns(module):
                    # A module proxy of an ended child (restart='auto'): the same proxy, imported
                    # again in the new child.
                    self._reimport(module)
                if _register:
                    self._register_module(name, module)
                return module
            paths = [os.fspath(p) for p in (path or ())]
            try:
                module = connection.import_module(name, paths)
            except ProcessTerminationError:
                self._note_ended(connection)
                raise
            self._modules[name] = module
            self._module_paths.setdefault(name, paths)
            if _register:
                self._register_module(name, module)
            return module

    import_module = load_module

    def _register_module(self, name, module):
        """Puts `module` in sys.modules[name] unless a real module of that name is there."""
        existing = sys.modules.get(name)
        if existing is None or (existing is not module and _core.isproxy(existing)):
            sys.modules[name] = module
            self._registered[name] = module
            self._registering.add(name)

    def call(self, func, *args, **kwargs):
        """Runs ``func(*args, **kwargs)`` in the child and returns the result.

        ``func`` is a proxy, or a module-level function or class of this interpreter, passed by
        its module and qualified name (``ctx.call(os.getpid)`` runs the child's ``os.getpid``).
        """
        if _core.isproxy(func):
            return func(*args, **kwargs)
        module = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None)
        if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
            raise TypeError(
                f"call() needs a proxy or a module-level function or class, not {func!r}: the "
                "child finds it by module and qualified name")
        with self._lock:
            connection = self._live_connection()
        try:
            return connection.call_by_name(f"{module}:{qualname}", args, kwargs)
        except ProcessTerminationError:
            self._note_ended(connection)
            raise

    def captured_output(self, stream="stderr", lines=50):
        """The last ``lines`` lines the child wrote to a captured ``'stdout'`` or ``'stderr'``
        (empty when that stream is not captured or nothing was written)."""
        index = {"stdout": 1, "stderr": 2}.get(stream)
        if index is None:
            raise ValueError("stream must be 'stdout' or 'stderr'")
        connection = self._connection
        if connection is None:
            termination = self._termination or {}
            tail = termination.get(f"{stream}_tail") or ""
            return "\n".join(tail.splitlines()[-lines:]) if lines > 0 else ""
        return connection.output_tail(index, lines)

    def _reimport(self, proxy):
        """restart='auto': re-points the module proxy ``proxy`` of an ended child to the same
        module in a new child. Returns True when it did."""
        with self._lock:
            name = _core.proxy_label(proxy)
            if self._stopped:
                return False  # terminate() ended the child: nothing comes back until asked
            connection = self._connection
            if connection is not None and connection.owns(proxy) and connection.alive:
                return False  # its child still runs: the error was about something else
            if connection is not None and not connection.alive:
                self._note_ended(connection)  # keeps the module proxies
            if self._connection is None:
                self._start()
            fresh = self._connection.import_module(name, self._module_paths.get(name, []))
            _core.adopt(proxy, fresh)
            self._modules[name] = proxy
            existing = sys.modules.get(name)
            if name in self._registering and (existing is None or _core.isproxy(existing)):
                sys.modules[name] = proxy
                self._registered[name] = proxy
            return True

    def _owns(self, proxy):
        connection = self._connection
        return connection is not None and connection.owns(proxy)

    def _counts(self):
        """(objects the child holds for the parent, ... for the child) — for tests."""
        connection = self._live_connection()
        return connection.export_count(), connection.import_count()


def _output_spec(name, value):
    if value in ("inherit", None):
        return ("inherit", "")
    if value == "capture":
        return ("capture", "")
    if isinstance(value, (str, bytes, os.PathLike)):
        return ("file", os.fsdecode(os.fspath(value)))
    raise ValueError(f"{name} must be 'inherit', 'capture' or a file path, not {value!r}")


def _auto_restart(context_ref, proxy):
    context = context_ref()
    return context is not None and context._reimport(proxy)


def default_context() -> IsolationContext:
    """The context :func:`import_isolated` and :func:`load_module` use when none is given.

    It has ``restart='auto'``: after its child crashed, the next use of any module imported
    into it (or the next :func:`import_isolated`) starts a new child and imports the module
    again, so one crashing module does not take the others down with it. Objects of the dead
    child stay dead: using one raises :class:`ClientStateError` naming the crash.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = IsolationContext(restart="auto")
        return _default


def import_isolated(name, path=None, *, context=None, register=True):
    """Imports module ``name`` in an isolated child and returns a proxy to it.

    Args:
        name: the module's name; dotted names return that submodule.
        path: directories prepended to the child's ``sys.path``.
        context: the IsolationContext to use; the default context when None.
        register: put the proxy in ``sys.modules[name]`` (unless a real module of that name is
            already there), so that a later ``import name`` anywhere gets the isolated module.
            False leaves ``sys.modules`` alone.

    Returns:
        The module proxy (the same one for the same name and context).

    Raises:
        Whatever the import raised in the child (ImportError, ...), re-raised here;
        ProcessTerminationError if the child dies.
    """
    return (context or default_context()).load_module(name, path, _register=register)


def load_module(name, path=None):
    """:func:`import_isolated` on the default context."""
    return default_context().load_module(name, path)


def byvalue(proxy):
    """Copies the remote object a proxy stands for into this process (a deep copy by pickle).

    For an untrusted context the copy is rebuilt step by step within the call's timeout (the
    ``timeout`` block or the context's option): only allow-listed types, of bounded size, and
    only numpy if this process has imported numpy (see ``_byvalue``).

    Raises:
        TypeError: ``proxy`` is not a proxy, the object cannot be pickled in the child, or (for
            an untrusted context) its pickle names a type outside the allow-list or would take
            more than a value of its size should to rebuild.
        CallTimeoutError: the copy, or (untrusted) rebuilding it here, went past the timeout;
            the child has been ended.
        ProcessTerminationError, ClientStateError: the child is gone.
    """
    if not _core.isproxy(proxy):
        raise TypeError(f"byvalue() needs a proxy of an isolated object, not {type(proxy)!r}")
    owners = [ctx for ctx in list(_live_contexts) if ctx._owns(proxy)]
    trusted = any(ctx.trusted for ctx in owners)
    seconds = _core.thread_timeout()
    if seconds < 0:
        seconds = next((ctx.timeout for ctx in owners if ctx.timeout is not None), None)
    deadline = None if seconds is None else time.monotonic() + seconds
    label = _core.proxy_label(proxy)
    try:
        data = _core.pickled_copy(proxy)
    except (ProcessTerminationError, ClientStateError):
        raise
    except Exception as error:
        raise TypeError(f"cannot copy {label} by value: {error}") from error
    if not (isinstance(data, list) and data and isinstance(data[0], bytes)
            and all(isinstance(b, bytearray) for b in data[1:])):
        raise TypeError(f"the isolated child answered byvalue() with {type(data).__name__}, "
                        "not a pickle")
    # Large buffers (numpy arrays) came beside the pickle and are used in place, not copied.
    try:
        return _byvalue.loads(data[0], trusted, data[1:], deadline)
    except _byvalue.DeadlineExpired:
        pass
    # As for a call past its timeout: the child that sent what takes this long is ended.
    for ctx in owners:
        ctx.terminate()
    ended = next((ctx.termination for ctx in owners if ctx.termination), None) or {}
    fields = {key: ended.get(key) for key in ("pid", "exit_code", "signal", "signal_name",
                                              "child_traceback", "native_traceback", "ending")}
    raise CallTimeoutError(
        **fields, core_dumped=bool(ended.get("core_dumped")), call=f"byvalue({label})",
        reason=f"rebuilding the copy in the parent went past the timeout of {seconds:g} s, "
               "so the parent ended the child") from None


@contextmanager
def timeout(seconds):
    """Calls made by this thread inside the block time out after ``seconds``.

    On expiry the child's traceback is taken, the child is killed, and :class:`CallTimeoutError`
    is raised. Overrides the context's own ``timeout`` option.
    """
    if seconds is not None and seconds <= 0:
        raise ValueError("timeout must be a positive number of seconds or None")
    previous = _core.thread_timeout()
    _core.set_thread_timeout(-1.0 if seconds is None else float(seconds))
    try:
        yield
    finally:
        _core.set_thread_timeout(previous)


def _stop_fork_server():
    """Stops the process-wide fork server, if one runs (its children die with it). The next
    'forkserver' context starts a new one."""
    global _fork_server
    with _fork_server_lock:
        server, _fork_server = _fork_server, None
    del server  # the handle's destructor closes the control socket and reaps the server


def _forget_contexts_after_fork():
    # Runs in every child forked from this process (our isolated children and anybody's
    # os.fork()). Every page it writes is copied, at a page fault each, so it touches only what
    # it changes: no walk of sys.modules that counts references (_core.drop_proxies reads it).
    global _fork_server
    if _fork_server is not None:
        _fork_server = None  # the parent's; a forked copy of its handle does nothing
    if _live_contexts:
        for ctx in list(_live_contexts):
            ctx._abandon()
    _core.drop_proxies(sys.modules)


def _terminate_all_at_exit():
    for ctx in list(_live_contexts):
        try:
            ctx.terminate()
        except Exception:  # at exit, a failing child must not hide the others
            pass
    _stop_fork_server()


os.register_at_fork(after_in_child=_forget_contexts_after_fork)
atexit.register(_terminate_all_at_exit)
