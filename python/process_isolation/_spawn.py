"""The entry point of a spawned child: a fresh interpreter that serves one isolated context.

``IsolationContext(start_method='spawn')`` runs ``<python> -c <_LAUNCHER> <package dir>
<options>``. The launcher loads this package from its directory (so the child's interpreter
need not have it installed: ``python=`` may name another virtual environment of the same Python
version), then :func:`main` hands the inherited socket to the C++ child runtime, which serves.
"""

from __future__ import annotations

import json
import os
import sys

# Run by `python -c`: loads process_isolation from the directory given as argv[1].
LAUNCHER = """\
import sys
if sys.path and sys.path[0] == '':
    del sys.path[0]
import importlib.util
package = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    'process_isolation', package + '/__init__.py', submodule_search_locations=[package])
module = importlib.util.module_from_spec(spec)
sys.modules['process_isolation'] = module
try:
    spec.loader.exec_module(module)
except ImportError as error:
    reason = ('this interpreter (%s) cannot load the package from %s: %s'
              % (sys.executable, package, error)).replace('\\n', ' ')
    sys.stderr.write('process_isolation: %s\\n' % reason)
    sys.stderr.flush()
    # The parent puts the reason in its error: the crash pipe of a child (fd 101,
    # kSpawnCrashFd in proxy/connection.h), the socket of a fork server (fd 102,
    # kForkServerControlFd in runtime/fork_server.h).
    import os
    try:
        os.write(102 if sys.argv[2:3] == ['--fork-server'] else 101,
                 ('process_isolation child: %s\\n' % reason).encode('utf-8', 'replace'))
    except OSError:
        pass
    raise SystemExit(73)
from process_isolation._spawn import main
main(sys.argv[2:])
"""

# The exit status of a spawned child whose interpreter cannot load the package.
CANNOT_LOAD = 73


def package_dir():
    """The directory of this package, which the launcher loads it from."""
    return os.path.dirname(os.path.abspath(__file__))


def _on_main_thread():
    # PR_SET_PDEATHSIG fires when the *thread* that made a child ends: only the main thread
    # lives as long as the process.
    import threading

    return threading.current_thread() is threading.main_thread()


def fork_server_command(python):
    """The argv that starts a fork server with ``python`` for this process."""
    return [python, "-c", LAUNCHER, package_dir(), "--fork-server", str(os.getpid()),
            "1" if _on_main_thread() else "0"]


def options_json(context):
    """The options of an IsolationContext that a spawned or fork-server child needs, as JSON."""
    return json.dumps(dict(
        env=context.env, inherit_env=context.inherit_env, paths=context.paths,
        inherit_paths=context.inherit_paths, cwd=context.cwd,
        limits=vars(context.limits) if context.limits else None, parent_pid=os.getpid(),
        death_signal=_on_main_thread()))


def bootstrap_from_options(options_json):
    """The child bootstrap callable for options made by :func:`options_json`."""
    import functools

    from . import _child
    from .limits import Limits

    options = json.loads(options_json)
    limits = Limits(**options["limits"]) if options["limits"] is not None else None
    return functools.partial(
        _child.bootstrap, options["env"], options["inherit_env"], options["paths"],
        options["inherit_paths"], options["cwd"], limits)


def resolve_python(python):
    """The interpreter to run: ``python`` itself, or ``<python>/bin/python`` when it names a
    virtual environment; this interpreter when None."""
    if python is None:
        return sys.executable
    python = os.fspath(python)
    if os.path.isdir(python):
        candidate = os.path.join(python, "bin", "python")
        if not os.path.exists(candidate):
            raise ValueError(f"{python} is a directory without bin/python: not an interpreter "
                             "or a virtual environment")
        return candidate
    if not os.path.exists(python):
        raise ValueError(f"python={python!r} does not exist")
    return python


def main(argv):
    """Serves the parent (a spawned child), or runs the fork server; never returns."""
    from . import _core

    if argv[0] == "--fork-server":
        _core.run_fork_server(int(argv[1]), argv[2] == "1", bootstrap_from_options)
    options = json.loads(argv[0])
    _core.serve_spawned(options["parent_pid"], options["death_signal"],
                        bootstrap_from_options(argv[0]))
