"""The module every implementation runs in its child during the benchmarks.

Each implementation (this project, RPyC, Pyro5, ...) imports this module in its child process and
calls these functions from the parent, so every row of bench/RESULTS.md does the same work.

Results of the bulk makers are cached in the child, so a timed call measures moving the data, not
creating it. Callers must not mutate what they get back.
"""

import functools
import os
import signal
import sys


def noop():
    """Do nothing; the cheapest possible remote call."""
    return None


def f(x):
    """Return ``x + 1``; the ``mod.f(1)`` case."""
    return x + 1


def mixed(a, b, c=None):
    """Take a few small arguments of mixed kinds and return a small tuple built from them."""
    return (a, len(b), c is None)


def call_back(fn, x):
    """Call ``fn(x)`` from the child; with a parent function this is a callback round trip."""
    return fn(x)


@functools.lru_cache(maxsize=4)
def make_list(n):
    """Return a list of ``n`` ints (cached; do not mutate)."""
    return list(range(n))


@functools.lru_cache(maxsize=4)
def make_bytes(n):
    """Return ``n`` bytes, every page written (cached)."""
    return b'x' * n


@functools.lru_cache(maxsize=4)
def make_array(n):
    """Return a float64 array of ``n`` elements, every page written (cached; do not mutate)."""
    import numpy
    return numpy.full(n, 1.5, dtype=numpy.float64)


def make_array_bytes(n):
    """Return the raw bytes of ``make_array(n)``, for peers that cannot carry a numpy array."""
    return make_array(n).tobytes()


def take(x):
    """Receive ``x`` and report ``(len(x), kind)`` so the parent can tell what arrived.

    kind is 'bytes' or 'ndarray' only when ``x`` is exactly that type here in the child;
    anything else (such as a proxy standing for a parent object, whatever its type's name) is
    reported as ``module.qualname`` of its type. Then the row measured no data transfer, and
    says so.
    """
    numpy = sys.modules.get('numpy')
    if type(x) is bytes:
        kind = 'bytes'
    elif numpy is not None and type(x) is numpy.ndarray:
        kind = 'ndarray'
    else:
        kind = f'{type(x).__module__}.{type(x).__qualname__}'
    return (len(x), kind)


def take_array_bytes(data):
    """Rebuild a float64 array from raw bytes (no copy) and ``take`` it."""
    import numpy
    return take(numpy.frombuffer(data, dtype=numpy.float64))


def getpid():
    """Return the child's pid, so the parent can read the child's memory use."""
    return os.getpid()


def crash():
    """Kill the child with SIGKILL: a crash with no core file and no traceback output."""
    os.kill(os.getpid(), signal.SIGKILL)
