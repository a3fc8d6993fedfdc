"""tinyver 2.0: `greet` takes a keyword-only option that 1.x does not know.

Used by examples/two_versions.py, which loads this version and tinyver 1.4 (libs/v1) side by
side in one program.
"""

__version__ = '2.0.0'

_greeted = []  # module state: each loaded copy of the library keeps its own


def greet(name, *, excited=False):
    """Return a greeting for `name` and remember the name; `excited` ends it with '!'."""
    _greeted.append(name)
    return 'Hello, {}{}'.format(name, '!' if excited else '.')


def greeted():
    """Return the names this copy of the library has greeted, oldest first."""
    return list(_greeted)
