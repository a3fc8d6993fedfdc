"""A module with a bug that no Python code can catch: it dereferences a NULL pointer."""

import ctypes

calls = 0


def add(a, b):
    """Adds two numbers (and counts how often it was asked)."""
    global calls
    calls += 1
    return a + b


def dragons_here(depth=3):
    """Recurses a little, then reads address 0: a segmentation fault."""
    if depth > 0:
        return dragons_here(depth - 1)
    return ctypes.string_at(0)
