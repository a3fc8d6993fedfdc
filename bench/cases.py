"""The benchmark cases: what each one measures, and what its floor is.

Kinds:
- 'call'     a fast call, timed in batches; floor = `round_trips` 64-byte socketpair round trips
- 'scaled'   one transfer or iteration of `size` units; may be measured at a smaller size for a
             slow implementation and extrapolated linearly (the row says so); floor = memcpy of
             `nbytes` when `nbytes` is set
- 'startup'  start a fresh child and get the first result of benchmod.f(1), per start method
- 'crash'    crash the child inside a call, restart, first call again
The memory case is separate (run.py, report.py): it is not a timing.
"""

import dataclasses

MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    title: str
    code: str          # what the parent does, as a user would write it with this project
    kind: str
    op: str = ''       # Implementation method that builds the operation: 'op_' + op
    round_trips: int = 0
    size: int = 0      # units passed to the op (items, bytes or array elements)
    min_size: int = 0  # smallest size a slow implementation may be measured at
    nbytes: int = 0    # payload bytes, for the rate and the memcpy floor
    check: str = ''    # how run.py checks the first result (see run.check_result)


CASES = (
    Case('noop', 'Trivial call of a held remote function', 'fn = mod.noop  # once\nfn()',
         'call', op='noop', round_trips=1, check='none'),
    Case('attr_call', 'Attribute lookup plus call', 'mod.f(1)',
         'call', op='attr_call', round_trips=1, check='two'),
    Case('mixed', 'Call with small mixed arguments',
         "mod.mixed(1, 'two', c=[3.0, None, (4, b'five')])",
         'call', op='mixed', round_trips=1, check='mixed'),
    Case('callback', 'Callback round trip (the child calls a parent function)',
         'mod.call_back(parent_fn, 7)  # child runs parent_fn(7)',
         'call', op='callback', round_trips=2, check='callback'),
    Case('iter_list', 'Iterate a remote list of 100,000 ints',
         'sum(1 for _ in mod.make_list(100_000))',
         'scaled', op='iter_list', size=100_000, min_size=1_000, check='count'),
    Case('bytes_1m_to_parent', 'bytes, 1 MiB, child -> parent', 'mod.make_bytes(1 MiB)',
         'scaled', op='bytes_to_parent', size=MIB, min_size=16 * 1024, nbytes=MIB,
         check='bytes'),
    Case('bytes_1m_to_child', 'bytes, 1 MiB, parent -> child', 'mod.take(data)  # 1 MiB',
         'scaled', op='bytes_to_child', size=MIB, min_size=16 * 1024, nbytes=MIB,
         check='taken:bytes'),
    Case('bytes_64m_to_parent', 'bytes, 64 MiB, child -> parent', 'mod.make_bytes(64 MiB)',
         'scaled', op='bytes_to_parent', size=64 * MIB, min_size=64 * 1024, nbytes=64 * MIB,
         check='bytes'),
    Case('bytes_64m_to_child', 'bytes, 64 MiB, parent -> child', 'mod.take(data)  # 64 MiB',
         'scaled', op='bytes_to_child', size=64 * MIB, min_size=64 * 1024, nbytes=64 * MIB,
         check='taken:bytes'),
    Case('array_64m_to_parent', 'numpy float64 array, 64 MiB, child -> parent',
         'mod.make_array(8 Mi)  # byvalue() if it comes back as a proxy',
         'scaled', op='array_to_parent', size=8 * MIB, min_size=8 * 1024, nbytes=64 * MIB,
         check='array'),
    Case('array_64m_to_child', 'numpy float64 array, 64 MiB, parent -> child',
         'mod.take(array)  # 8 Mi float64',
         'scaled', op='array_to_child', size=8 * MIB, min_size=8 * 1024, nbytes=64 * MIB,
         check='taken:ndarray'),
    Case('startup', 'Start-up to the first result of a fresh isolated module',
         "ctx = IsolationContext(start_method=m)\nctx.load_module('benchmod').f(1)",
         'startup'),
    Case('crash_restart', 'Crash + restart + first call',
         "mod.crash()  # child SIGKILLs itself; the call raises\nctx.restart()\n"
         "ctx.load_module('benchmod').f(1)",
         'crash'),
)

BY_KEY = {case.key: case for case in CASES}
