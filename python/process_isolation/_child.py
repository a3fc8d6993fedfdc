"""What a freshly forked child does before it serves: forget the parent's contexts, apply the
context's environment, working directory and import paths (fds, signal handlers and
faulthandler are set up before, in C++: runtime/child_main.cpp).

Runs in the child only, called from C++ after the runtime has set up the child's fds and crash
pipe. Anything raised here ends the child with a printed traceback, and the parent reports that
the child failed to start.
"""

from __future__ import annotations

import os
import sys

from . import _core
from .session import _set_environment, _standard_library_entries


def drop_inherited_proxies():
    """Removes proxies of other contexts from sys.modules, so imports here load real modules."""
    _core.drop_proxies(sys.modules)


def rebind_stdio():
    """Points sys.stdin/stdout/stderr at the child's own fds 0, 1 and 2.

    A forked child inherits the parent's stream *objects*, which may write to a StringIO, to a
    high fd the host redirected (pytest's capture, a notebook), or to an fd number that is now
    the child's socket. The child's output goes where its context says (fds 1 and 2) instead.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, name, None)
        encoding = getattr(old, "encoding", None) or "utf-8"
        try:
            stream = open(fd, mode, buffering=1 if mode == "w" else -1, encoding=encoding,
                          errors="backslashreplace", closefd=False)
        except OSError:
            continue
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def bootstrap(env, inherit_env, paths, inherit_paths, cwd, limits):
    """Prepares the child. Called with the context's (validated) options."""
    rebind_stdio()
    drop_inherited_proxies()
    # The host's signal handlers were reset before this runs (runtime/child_main.cpp).
    if env or not inherit_env:
        # The same meaning as for Session: env wins over the inherited environment (or is all
        # of it). With neither, the inherited environment is left as it is, untouched: reading
        # all of os.environ costs a forked child some thirty copy-on-write faults.
        target = dict(os.environ) if inherit_env else {}
        target.update(env)
        _set_environment(target)
    if cwd is not None:
        os.chdir(cwd)
    if inherit_paths:
        sys.path[:0] = [p for p in paths if p not in sys.path]
    else:
        sys.path[:] = list(paths) + _standard_library_entries(sys.path)
    if limits is not None:
        limits.apply()
