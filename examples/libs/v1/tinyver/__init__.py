"""tinyver 1.4: a tiny library whose API changed in 2.0.

Used by examples/two_versions.py, which loads this version and tinyver 2.0 (libs/v2) side by
side in one program.
"""

__version__ = '1.4.2'

_greeted = []  # module state: each loaded copy of the library keeps its own


def greet(name):
    """Return a greeting for `name` and remember the name (1.x takes no options)."""
    _greeted.append(name)
    return 'Hello, {}.'.format(name)


def greeted():
    """Return the names this copy of the library has greeted, oldest first."""
    return list(_greeted)
