"""Unpickling what a child sends for ``byvalue``: only allow-listed globals, unless trusted.

A pickle can name any importable callable and call it, so unpickling bytes from a hostile child
would run whatever the child wants in the parent. By default the parent therefore rebuilds only
plain data types from the standard library and numpy arrays, and only in ways a pickle of such
a value uses (docs/architecture.md, "Trust"):

- Nothing is imported while unpickling: an import searches ``sys.path``, whose first entry may be
  a directory the child can write (a ``fractions.py`` there would run in the parent). The
  standard-library modules of the allow-list are imported with this module, when the program
  imports process_isolation, before any child exists; numpy is resolved only from
  ``sys.modules``, so the program must have imported it.
- Every step is cheap and bounded. The unpickler is the pure-Python one, run opcode by opcode so
  that the call's deadline is checked between steps (one long C operation could not be
  interrupted); each allow-listed constructor has its arguments checked (an int or a Fraction
  of bounded size, a Decimal from a bounded string, ...); objects are hashed (as dict keys, set
  items) only when their hash costs little (a tuple's is not cached: a pickle can make one that
  never finishes), and the work of all the steps together is bounded by the size of the pickle.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import fractions
import io
import math
import pathlib
import pickle
import sys
import time
import uuid

from . import _core

__all__ = ["loads", "ALLOWED_GLOBALS", "DeadlineExpired"]

_SAFE_BUILTINS = {
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
    "range", "set", "slice", "str", "tuple",
}

# Builtin exception classes are plain data holders and safe to rebuild.
_EXCEPTION_NAMES = {
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
_SAFE_BUILTINS.update(_EXCEPTION_NAMES)

# The modules whose globals may be rebuilt, imported above (never while unpickling).
_MODULES = {
    "builtins": builtins, "collections": collections, "datetime": datetime,
    "decimal": decimal, "fractions": fractions, "uuid": uuid, "pathlib": pathlib,
}

# Third-party modules: taken from sys.modules when the program has imported them.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}

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
    }
    | _NUMPY_GLOBALS
)

# Bounds on one rebuilt value. An int of up to 2**20 bits (315,653 digits) is made and hashed in
# linear time (60 us to hash); a Fraction's terms go through a gcd, quadratic: two of 2**16 bits
# take 21 ms (2**20 bits: 6.5 s). A string (Decimal, path part) of up to 1 Mi characters parses
# in linear time (a Decimal of 1 Mi digits: 32 ms). The work of all steps together may be
# WORK_PER_BYTE per byte of the pickle (and of its buffers) plus BASE_WORK: an honest pickle does
# about one unit per byte.
MAX_INT_BITS = 1 << 20
MAX_FRACTION_BITS = 1 << 16
MAX_TEXT_CHARS = 1 << 20
WORK_PER_BYTE = 4
BASE_WORK = 1 << 20
STEPS_PER_CHECK = 256


class DeadlineExpired(Exception):
    """Rebuilding went past the call's deadline (raised between two steps)."""


class _Refused(TypeError):
    pass


def _refuse(what):
    raise _Refused(
        f"byvalue() refused to rebuild {what}: the isolated child is not trusted, and only plain "
        "data types of bounded size may be copied from it. Create the context with "
        "IsolationContext(trusted=True) to allow any type.")


def _check_int(value, what):
    if type(value) is bool:
        return value
    if type(value) is not int:
        _refuse(f"{what} with an argument of type {type(value).__name__}")
    if value.bit_length() > MAX_INT_BITS:
        _refuse(f"{what} with an int of {value.bit_length()} bits (at most {MAX_INT_BITS})")
    return value


def _check_text(value, what):
    if type(value) is not str:
        _refuse(f"{what} with an argument of type {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        _refuse(f"{what} with a string of {len(value)} characters (at most {MAX_TEXT_CHARS})")
    return value


def _check_optional_int(value, what):
    return None if value is None else _check_int(value, what)


def _args(args, what, at_most):
    if type(args) is not tuple or len(args) > at_most:
        _refuse(f"{what} from other arguments than a pickle of it has")
    return args


# Checkers: (unpickler, args) -> the object, for each callable a pickle may call (REDUCE). Each
# checks what a pickle of the value would pass and charges the work it makes.

def _exception(cls):
    def make(unpickler, func, args):
        _args(args, cls.__name__, 64)
        unpickler.charge(len(args))
        if issubclass(cls, BaseExceptionGroup) and len(args) == 2:
            if type(args[1]) not in (list, tuple):
                _refuse(f"{cls.__name__} whose exceptions are not a list")
            unpickler.charge(len(args[1]))
        return cls(*args)
    return make


def _complex(unpickler, func, args):
    for part in _args(args, "complex", 2):
        if type(part) is not float:
            _check_int(part, "complex")
    return complex(*args)


def _range_or_slice(cls):
    def make(unpickler, func, args):
        for part in _args(args, cls.__name__, 3):
            _check_optional_int(part, cls.__name__)
        return cls(*args)
    return make


def _ordered_dict(unpickler, func, args):
    if args != ():
        _refuse("an OrderedDict made from arguments")
    return collections.OrderedDict()


def _counter(unpickler, func, args):
    _args(args, "Counter", 1)
    if args and type(args[0]) is not dict:
        _refuse("a Counter made from a non-dict")
    unpickler.charge(len(args[0]) if args else 0)
    return collections.Counter(*args)


def _defaultdict(unpickler, func, args):
    _args(args, "defaultdict", 1)  # the factory is stored, not called
    return collections.defaultdict(*args)


def _deque(unpickler, func, args):
    _args(args, "deque", 2)
    if args and type(args[0]) not in (list, tuple):
        _refuse("a deque made from a non-list")
    if len(args) == 2:
        _check_optional_int(args[1], "deque")
    unpickler.charge(len(args[0]) if args else 0)
    return collections.deque(*args)


def _date_time(cls):
    def make(unpickler, func, args):
        _args(args, cls.__name__, 8)
        for part in args:
            if type(part) is bytes:
                if len(part) > 10:
                    _refuse(f"a {cls.__name__} from {len(part)} bytes")
            elif part is not None and not isinstance(part, datetime.tzinfo):
                if type(part) is float:
                    continue
                _check_int(part, cls.__name__)
                if not -(1 << 64) < part < (1 << 64):
                    _refuse(f"a {cls.__name__} with a field of {part.bit_length()} bits")
        return cls(*args)
    return make


def _timezone(unpickler, func, args):
    _args(args, "timezone", 2)
    if not args or type(args[0]) is not datetime.timedelta:
        _refuse("a timezone whose offset is not a timedelta")
    if len(args) == 2:
        _check_text(args[1], "timezone")
    return datetime.timezone(*args)


def _decimal(unpickler, func, args):
    # A Decimal pickles as its str; converting an int or a tuple could take long.
    if len(_args(args, "Decimal", 1)) != 1:
        _refuse("a Decimal made from other arguments than its str")
    unpickler.charge(len(_check_text(args[0], "Decimal")))
    return decimal.Decimal(args[0])


def _fraction(unpickler, func, args):
    # A Fraction pickles as (numerator, denominator); from a str ('1e10000000') it could take
    # seconds, and the gcd of two huge ints longer.
    if len(_args(args, "Fraction", 2)) != 2:
        _refuse("a Fraction made from other arguments than two ints")
    numerator = _check_int(args[0], "Fraction")
    denominator = _check_int(args[1], "Fraction")
    bits = max(numerator.bit_length(), denominator.bit_length())
    if bits > MAX_FRACTION_BITS:
        _refuse(f"a Fraction of {bits}-bit terms (at most {MAX_FRACTION_BITS})")
    unpickler.charge((numerator.bit_length() + denominator.bit_length()) // 64 + 1)
    return fractions.Fraction(numerator, denominator)


def _safe_uuid(unpickler, func, args):
    if len(_args(args, "SafeUUID", 1)) != 1 or args[0] not in (0, -1, None):
        _refuse("a SafeUUID of an unknown value")
    return uuid.SafeUUID(args[0])


def _path(cls):
    def make(unpickler, func, args):
        _args(args, cls.__name__, 4096)
        unpickler.charge(sum(len(_check_text(part, cls.__name__)) for part in args))
        return cls(*args)
    return make


_STDLIB_CHECKS = {
    complex: _complex,
    range: _range_or_slice(range),
    slice: _range_or_slice(slice),
    collections.OrderedDict: _ordered_dict,
    collections.Counter: _counter,
    collections.defaultdict: _defaultdict,
    collections.deque: _deque,
    datetime.date: _date_time(datetime.date),
    datetime.time: _date_time(datetime.time),
    datetime.datetime: _date_time(datetime.datetime),
    datetime.timedelta: _date_time(datetime.timedelta),
    datetime.timezone: _timezone,
    decimal.Decimal: _decimal,
    fractions.Fraction: _fraction,
    uuid.SafeUUID: _safe_uuid,
    pathlib.PurePosixPath: _path(pathlib.PurePosixPath),
    pathlib.PosixPath: _path(pathlib.PosixPath),
}
_STDLIB_CHECKS.update({getattr(builtins, name): _exception(getattr(builtins, name))
                       for name in _EXCEPTION_NAMES})


def _numpy_checks(numpy, name):
    """The checker for numpy global `name`, or None when it may only be named (ndarray, which
    _reconstruct is given), never called."""

    def reconstruct(unpickler, func, args):
        # _reconstruct(ndarray, (0,), b'b') makes an empty array that BUILD then fills.
        if (len(_args(args, "_reconstruct", 3)) != 3 or args[0] is not numpy.ndarray
                or type(args[1]) is not tuple or len(args[1]) > 64
                or math.prod(_check_int(n, "_reconstruct") for n in args[1]) > 1):
            _refuse("numpy _reconstruct of anything but an empty ndarray")
        return func(*args)

    def frombuffer(unpickler, func, args):
        # A view of an out-of-band buffer: nothing is copied.
        if (len(_args(args, "_frombuffer", 4)) != 4 or not isinstance(args[1], numpy.dtype)
                or type(args[2]) is not tuple or len(args[2]) > 64):
            _refuse("numpy _frombuffer with other arguments than a pickle's")
        for n in args[2]:
            _check_int(n, "_frombuffer")
        return func(*args)

    def scalar(unpickler, func, args):
        if len(_args(args, "scalar", 2)) < 1 or not isinstance(args[0], numpy.dtype):
            _refuse("a numpy scalar with other arguments than a pickle's")
        if len(args) == 2 and type(args[1]) is bytes:
            unpickler.charge(len(args[1]))
        return func(*args)

    def dtype(unpickler, func, args):
        if (len(_args(args, "dtype", 3)) < 1 or type(args[0]) is not str
                or len(args[0]) > 64):
            _refuse("a numpy dtype from other arguments than a pickle's")
        return func(*args)

    return {"_reconstruct": reconstruct, "_frombuffer": frombuffer, "scalar": scalar,
            "dtype": dtype}.get(name)


def _is_numpy_array_or_dtype(value):
    numpy = sys.modules.get("numpy")
    return (numpy is not None and not _core.isproxy(numpy)
            and (type(value) is numpy.ndarray or isinstance(value, numpy.dtype)))


class _BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, one opcode at a time, with every step that calls, hashes or
    copies checked and charged (see the module's doc)."""

    def __init__(self, data, buffers, deadline):
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._deadline = deadline
        self._work = 0
        self._budget = WORK_PER_BYTE * (len(data) + sum(len(b) for b in buffers)) + BASE_WORK
        # id -> (callable, checker) for the globals this pickle named.
        self._callables = {}
        # id -> (object, hash cost) for objects already costed (kept alive while we run).
        self._hash_costs = {}

    def load(self):
        # The base class's loop (its set-up mirrored), counting steps: every opcode is one unit
        # of work, and the deadline is looked at every STEPS_PER_CHECK of them and whenever a
        # step charges more. Each step between two looks is cheap: at most linear in the size
        # of the pickle.
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read = self.read
        dispatch = self.dispatch
        steps = 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                dispatch[key[0]](self)
                steps += 1
                if steps == STEPS_PER_CHECK:
                    steps = 0
                    self.charge(STEPS_PER_CHECK)
        except pickle._Stop as stop:
            return stop.value

    # Bookkeeping ------------------------------------------------------------------------------

    def charge(self, units):
        self._work += units
        if self._work > self._budget:
            _refuse("this value: rebuilding it would take more work than its pickle's size "
                    "allows (does it repeat parts of itself many times?)")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExpired()

    def _hash_cost(self, key):
        """Charges what hashing `key` (a dict key, a set item) costs, refusing it when that is
        too much. Only ints and tuples cost more than a step: an int's hash is not cached (its
        size is bounded), nor a tuple's, which hashes its items again each time (a pickle can
        nest a tuple of two references to another 60 times: 2**60 steps). Tuples are costed
        once each, without recursion (a pickle can nest them deeper than the C stack)."""
        kind = type(key)
        if kind is int:
            self.charge(key.bit_length() // 64 + 1)
            return
        if kind is not tuple:
            self.charge(1)  # any other allowed type: a cheap or a cached hash
            return
        costs = self._hash_costs
        pending = [(key, False)]
        while pending:
            node, expanded = pending.pop()
            entry = costs.get(id(node))
            if entry is not None and entry[0] is node:
                continue
            if expanded:
                total = 1
                for item in node:
                    if type(item) is tuple:
                        total += costs[id(item)][1]
                    elif type(item) is int:
                        total += item.bit_length() // 64 + 1
                    else:
                        total += 1
                costs[id(node)] = (node, total)
                continue
            self.charge(1 + len(node))
            pending.append((node, True))
            pending.extend((item, False) for item in node if type(item) is tuple)
        self.charge(costs[id(key)][1])

    # Globals and calls ------------------------------------------------------------------------

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Refused(
                f"byvalue() refused to rebuild {module}.{name}: the isolated child is not "
                "trusted, and only plain data types may be copied from it. Create the context "
                "with IsolationContext(trusted=True) to allow any type.")
        if module in _MODULES:
            found = getattr(_MODULES[module], name)
            checker = _STDLIB_CHECKS.get(found)
        else:
            top = module.partition(".")[0]
            owner = sys.modules.get(module)
            package = sys.modules.get(top)
            if owner is None or package is None:
                raise _Refused(
                    f"byvalue() cannot rebuild {module}.{name} because this process has not "
                    f"imported {top}: import {top} in the parent before copying such values "
                    "(process_isolation imports nothing while it rebuilds what a child sent)")
            if _core.isproxy(owner) or _core.isproxy(package):
                raise _Refused(
                    f"byvalue() cannot rebuild {module}.{name} because {top} in this process's "
                    f"sys.modules is an isolated child's (import_isolated): import {top} for "
                    "real in the parent before it is imported isolated")
            found = getattr(owner, name)
            checker = _numpy_checks(package, name)
        self._callables[id(found)] = (found, checker)
        return found

    def _checker_of(self, func):
        entry = self._callables.get(id(func))
        if entry is None or entry[0] is not func or entry[1] is None:
            _refuse(f"a value by calling {getattr(func, '__qualname__', type(func).__name__)}")
        return entry[1]

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        stack[-1] = self._checker_of(func)(self, func, args)

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        # Only a UUID pickles so (its state follows in BUILD).
        if cls is not uuid.UUID or args != ():
            _refuse(f"a {getattr(cls, '__qualname__', cls)!s} made by __new__")
        self.append(cls.__new__(cls))

    def load_newobj_ex(self):
        _refuse("a value made by __new__ with keyword arguments")

    def load_inst(self):
        _refuse("a value made by the INST opcode of pickle protocol 0")

    def load_obj(self):
        _refuse("a value made by the OBJ opcode of pickle protocol 1")

    def persistent_load(self, pid):
        _refuse("a persistent reference")

    # States, containers, hashes ---------------------------------------------------------------

    def load_build(self):
        state = self.stack[-1]
        inst = self.stack[-2]
        kind = type(inst)
        if kind is uuid.UUID:
            if (type(state) is not dict or set(state) - {"int", "is_safe"}
                    or type(state.get("int")) is not int or not 0 <= state["int"] < 1 << 128
                    or type(state.get("is_safe", 0)) is not int):
                _refuse("a UUID from another state than its int")
        elif kind.__module__ == "builtins" and kind.__name__ in _EXCEPTION_NAMES:
            if type(state) is not dict:
                _refuse(f"a {kind.__name__} whose state is not a dict")
            self.charge(len(state))
        elif _is_numpy_array_or_dtype(inst):
            if type(state) is not tuple:
                _refuse(f"a numpy {kind.__name__} whose state is not a tuple")
            self.charge(len(state))
            for part in state:
                if isinstance(part, (bytes, bytearray, list, tuple, dict)):
                    self.charge(len(part))
        else:
            _refuse(f"the state of a {kind.__qualname__}")
        super().load_build()

    def load_long(self):
        text = self.readline()[:-1]
        if len(text) > 1 + MAX_INT_BITS // 3:
            _refuse(f"an int of {len(text)} digits")
        if text[-1:] == b"L":
            text = text[:-1]
        self.append(_check_int(int(text, 0), "an int"))

    def load_int(self):
        data = self.readline()
        if len(data) > 64:
            _refuse("an INT of more than 64 digits")
        if data == b"00\n":
            self.append(False)
        elif data == b"01\n":
            self.append(True)
        else:
            self.append(int(data, 0))

    def load_long1(self):
        n = self.read(1)[0]
        self.append(int.from_bytes(self.read(n), "little", signed=True))

    def load_long4(self):
        n = int.from_bytes(self.read(4), "little", signed=True)
        if n < 0 or n * 8 > MAX_INT_BITS:
            _refuse(f"an int of {n * 8} bits (at most {MAX_INT_BITS})")
        self.append(int.from_bytes(self.read(n), "little", signed=True))

    def load_append(self):
        value = self.stack[-1]
        target = self.stack[-2]
        if type(target) is not list and type(target) is not collections.deque:
            _refuse(f"items appended to a {type(target).__qualname__}")
        target.append(value)
        self.stack.pop()

    def load_appends(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not list and type(target) is not collections.deque:
            _refuse(f"items appended to a {type(target).__qualname__}")
        self.charge(len(items))
        target.extend(items)

    _MAPPINGS = (dict, collections.OrderedDict, collections.Counter, collections.defaultdict)

    def _set_items(self, target, items):
        if type(target) not in self._MAPPINGS:
            _refuse(f"items set in a {type(target).__qualname__}")
        self._hash_all(items[::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _hash_all(self, keys):
        """Charges what hashing each of `keys` costs (see _hash_cost), looking at the deadline
        as the cost adds up."""
        cost = 0
        for key in keys:
            kind = type(key)
            if kind is str or kind is float or kind is bytes:
                cost += 1
            elif kind is int:
                cost += key.bit_length() // 64 + 1
            else:
                self._hash_cost(key)
            if cost > STEPS_PER_CHECK:
                self.charge(cost)
                cost = 0
        self.charge(cost)

    def load_setitem(self):
        stack = self.stack
        self._set_items(stack[-3], stack[-2:])
        del stack[-2:]

    def load_setitems(self):
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    def load_dict(self):
        items = self.pop_mark()
        made = {}
        self._set_items(made, items)
        self.append(made)

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            _refuse(f"items added to a {type(target).__qualname__}")
        self._hash_all(items)
        target.update(items)

    def load_frozenset(self):
        items = self.pop_mark()
        self._hash_all(items)
        self.append(frozenset(items))


# The base class's table with our handlers where we have them (same names).
_BoundedUnpickler.dispatch = {
    code: getattr(_BoundedUnpickler, handler.__name__)
    for code, handler in pickle._Unpickler.dispatch.items()
}


def loads(data: bytes, trusted: bool, buffers=(), deadline=None):
    """Unpickles ``data`` sent by a child.

    Args:
        data: pickle bytes (protocol 5).
        trusted: when True, any global may be resolved (plain ``pickle.loads``, unbounded).
        buffers: the pickle's out-of-band buffers (bytearrays), in order.
        deadline: a ``time.monotonic()`` value, or None; checked between the steps of an
            untrusted rebuild.

    Returns:
        The rebuilt object.

    Raises:
        TypeError: the pickle names a global outside the allow-list, calls one in a way a pickle
            of a plain value does not, needs a module the parent has not imported, or would take
            more work or larger values than allowed (untrusted child); or it is not a valid
            pickle.
        DeadlineExpired: an untrusted rebuild went past ``deadline``.
    """
    if trusted:
        return pickle.loads(data, buffers=buffers)
    buffers = list(buffers)
    try:
        return _BoundedUnpickler(data, buffers, deadline).load()
    except (_Refused, DeadlineExpired):
        raise
    except RecursionError as error:
        raise TypeError(f"byvalue() could not rebuild the child's value: {error}") from None
    except Exception as error:
        raise TypeError("byvalue() could not rebuild the child's value: its pickle is not "
                        f"valid ({type(error).__name__}: {error})") from None
