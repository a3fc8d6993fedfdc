"""``with isolated(): import X`` — ordinary import statements that import into an isolated child.

Inside the block, the import statements *of the block itself* (run by the frame that entered
it) import the module in an isolated child and bind its proxy; every other import — by
functions and libraries the block calls, by other threads, and everything after the block — is
untouched. Leaving the block does not end the context: the
proxies stay usable until it is terminated.
"""

from __future__ import annotations

import builtins
import sys
import threading


__all__ = ["isolated"]

_lock = threading.Lock()


class isolated:  # noqa: N801 - used like a function: `with isolated(): ...`
    """Makes the block's own ``import X``, ``import X.Y as Z`` and ``from X import y``
    statements import in an isolated child and bind proxies.

    Args:
        context: the IsolationContext to import into. When None, a new context is made from
            ``context_options`` (and kept in ``.context``; terminate it when done, or use it as
            a context manager).
        **context_options: IsolationContext options, only when ``context`` is None.

    Relative imports (``from . import x``) are not isolated. The block patches
    ``builtins.__import__`` while it runs, so it must not be entered by two threads at once
    for the same module.
    """

    def __init__(self, context=None, **context_options):
        if context is not None and context_options:
            raise TypeError("give either a context or context options, not both")
        if context is None:
            from .context import IsolationContext

            context = IsolationContext(**context_options)
        self.context = context
        self._frame = None
        self._previous = None
        self._hook = self._import  # one bound method, so the identity check below holds

    def __enter__(self):
        self._frame = sys._getframe(1)
        with _lock:
            self._previous = builtins.__import__
            builtins.__import__ = self._hook
        return self.context

    def __exit__(self, *exc):
        self._frame = None  # no reference cycle through the block's frame
        with _lock:
            if builtins.__import__ is self._hook:
                builtins.__import__ = self._previous
            else:
                raise RuntimeError("isolated() blocks must be left in the order they were entered")
        return False

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level != 0 or sys._getframe(1) is not self._frame:
            return self._previous(name, globals, locals, fromlist, level)
        module = self.context.load_module(name, _register=False)
        if not fromlist:
            # `import X.Y` binds X; `import X.Y as Z` then reads X.Y as an attribute.
            top = name.partition(".")[0]
            return module if top == name else self.context.load_module(top, _register=False)
        for item in fromlist:
            if item == "*":
                continue
            if not _has_attribute(module, item):
                # A submodule the child has not imported yet.
                try:
                    self.context.load_module(f"{name}.{item}", _register=False)
                except ImportError:
                    pass  # `from X import missing` then raises ImportError as usual
        return module


def _has_attribute(proxy, name):
    try:
        getattr(proxy, name)
    except AttributeError:
        return False
    return True


