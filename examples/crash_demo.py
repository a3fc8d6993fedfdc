"""A segfault in an isolated module is an exception in the parent, which carries on.

Run it with `make demo`, or with the package installed: python examples/crash_demo.py
"""

import os
import sys

from process_isolation import IsolationContext, ProcessTerminationError, ClientStateError

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    with IsolationContext(paths=[HERE]) as ctx:
        buggy = ctx.load_module("buggy")
        print(f"parent pid {os.getpid()}, isolated child pid {ctx.pid}")
        print("buggy.add(2, 3) =", buggy.add(2, 3), "- computed in the child")

        try:
            buggy.dragons_here(3)
        except ProcessTerminationError as error:
            print("\nThe child crashed and the parent caught it:")
            print(f"  signal:      {error.signal_name} (core dumped: {error.core_dumped})")
            print(f"  call:        {error.call}")
            print(f"  child pid:   {error.pid}")
            print("\nThe full report (str(error)):\n")
            print(error)
        else:
            sys.exit("expected the child to crash")

        try:
            buggy.add(1, 1)
        except ClientStateError as error:
            print(f"\nUsing the dead child's module again: ClientStateError: {error}")

        ctx.restart()
        buggy = ctx.load_module("buggy")
        print(f"\nRestarted: new child pid {ctx.pid}; buggy.add(40, 2) =", buggy.add(40, 2))
    print("\nThe parent is still alive, and no child is left behind.")


if __name__ == "__main__":
    main()
