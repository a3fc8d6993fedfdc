"""Unpickling what a child sends for ``byvalue``: only allow-listed globals, unless trusted.

A pickle can name any importable callable and call it, so unpickling bytes from a hostile child
would run whatever the child wants in the parent. By default the parent therefore resolves only
the globals listed here: plain data types from the standard library and numpy arrays.
"""

from __future__ import annotations

import builtins
import io
import pickle

__all__ = ["loads", "ALLOWED_GLOBALS"]

_SAFE_BUILTINS = {
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
    "range", "set", "slice", "str", "tuple",
}

# Builtin exception classes are plain data holders and safe to rebuild.
_SAFE_BUILTINS.update(
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)

ALLOWED_GLOBALS = frozenset(
    {("builtins", name) for name in _SAFE_BUILTINS}
    | {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("collections", "Counter"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "datetime"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("fractions", "Fraction"),
        ("uuid", "UUID"),
        ("uuid", "SafeUUID"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "PosixPath"),
        ("copyreg", "_reconstructor"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise TypeError(
                f"byvalue() refused to rebuild {module}.{name}: the isolated child is not "
                "trusted, and only plain data types may be copied from it. Create the context "
                "with IsolationContext(trusted=True) to allow any type."
            )
        return super().find_class(module, name)


def loads(data: bytes, trusted: bool, buffers=()):
    """Unpickles ``data`` sent by a child.

    Args:
        data: pickle bytes (protocol 5).
        trusted: when True, any global may be resolved (plain ``pickle.loads``).
        buffers: the pickle's out-of-band buffers (bytearrays), in order.

    Returns:
        The rebuilt object.

    Raises:
        TypeError: the pickle names a global outside the allow-list (untrusted child).
        pickle.UnpicklingError: the bytes are not a valid pickle.
    """
    if trusted:
        return pickle.loads(data, buffers=buffers)
    return _AllowListUnpickler(io.BytesIO(data), buffers=buffers).load()
