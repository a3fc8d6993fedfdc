"""Two versions of one library used side by side in one program.

`libs/v1` and `libs/v2` next to this script each hold a package named `tinyver` (1.4 and 2.0,
with different APIs). A program normally gets one or the other; this one uses both, twice:

- in this process, with `Session`: each session imports its own `tinyver` from its own path,
  and the modules keep working after the `with` blocks;
- in child processes, with `IsolationContext`: each child imports its own `tinyver` and the
  parent uses it through a proxy.

Run: python examples/two_versions.py
"""

import sys
from pathlib import Path

from process_isolation import IsolationContext, Session

LIBS = Path(__file__).resolve().parent / 'libs'


def use_sessions():
    """Import tinyver 1.4 and 2.0 in this process, each in its own Session.

    Returns:
        (old, new): the two `tinyver` modules. Neither is in `sys.modules` afterwards.
    """
    with Session(paths=[LIBS / 'v1']):
        import tinyver as old
    with Session(paths=[LIBS / 'v2']):
        import tinyver as new

    print('Session: tinyver', old.__version__, '->', old.greet('Ada'))
    print('Session: tinyver', new.__version__, '->', new.greet('Ada', excited=True))
    print('Session: each copy has its own state:', old.greeted(), new.greeted(),
          '| tinyver in sys.modules:', 'tinyver' in sys.modules)
    return old, new


def use_isolated_contexts():
    """Import tinyver 1.4 and 2.0 in two isolated child processes.

    Returns:
        (old_version, new_version): the two version strings, read through the proxies.
    """
    with IsolationContext(paths=[str(LIBS / 'v1')]) as old_context, \
            IsolationContext(paths=[str(LIBS / 'v2')]) as new_context:
        old = old_context.load_module('tinyver')
        new = new_context.load_module('tinyver')
        print('Isolated: tinyver', old.__version__, '->', old.greet('Ada'),
              'in child', old_context.pid)
        print('Isolated: tinyver', new.__version__, '->', new.greet('Ada', excited=True),
              'in child', new_context.pid)
        return old.__version__, new.__version__


def main():
    """Run both halves of the example."""
    use_sessions()
    use_isolated_contexts()


if __name__ == '__main__':
    main()
