"""What a freshly forked child does before it serves: forget the parent's contexts, apply the
context's environment, working directory and import paths.

Runs in the child only, called from C++ after the runtime has set up the child's fds and crash
pipe. Anything raised here ends the child with a printed traceback, and the parent reports that
the child failed to start.
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig

from . import _core


def stdlib_paths():
    """The sys.path entries the interpreter needs to import its standard library."""
    paths = []
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path and path not in paths:
            paths.append(path)
    dynload = os.path.join(sysconfig.get_paths()["platstdlib"], "lib-dynload")
    if os.path.isdir(dynload):
        paths.append(dynload)
    return [p for p in sys.path if p in paths or p.endswith(".zip")] or paths


def drop_inherited_proxies():
    """Removes proxies of other contexts from sys.modules, so imports here load real modules."""
    for name, module in list(sys.modules.items()):
        if _core.isproxy(module):
            del sys.modules[name]


def bootstrap(env, inherit_env, paths, inherit_paths, cwd):
    """Prepares the child. Called with the context's options."""
    drop_inherited_proxies()
    # Python-level handlers of the host application must not run here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGALRM", "SIGCHLD"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    if not inherit_env:
        os.environ.clear()
    if env:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if cwd is not None:
        os.chdir(cwd)
    extra = [os.fspath(p) for p in (paths or ())]
    if inherit_paths:
        sys.path[:0] = [p for p in extra if p not in sys.path]
    else:
        sys.path[:] = extra + stdlib_paths()
