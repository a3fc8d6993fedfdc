"""Large values crossing in steady state, against this machine's memcpy measured in the same run.

    python bench/bulk_transfer.py [--rounds N] [--sizes 16K,64K,1M] [--json]

Each round times every case once, in turn (so drifting load hits all cases alike), repeating the
same transfer with the previous result dropped first; the table shows medians over the rounds.
Floors (C copies through numpy and ctypes, no Python per byte):

    memcpy warm         between two buffers whose pages are already mapped
    memcpy fresh        into a new numpy buffer (numpy asks for huge pages), i.e. warm + faults
    vm_readv warm/fresh process_vm_readv of the child's bytes into either: the one copy a
                        transfer from the child makes, and what the page faults add to it
    child vm_readv ...  timed in the child: process_vm_readv of the bytes the parent sends (in
                        the parent's own allocator: 4 KiB pages unless THP is 'always') into
                        either: the one copy a transfer to the child makes

`fresh - warm` is the page-fault cost of filling memory the process has not touched yet, which
every transfer into a new object pays. After the table, the child's minor page faults per
transfer to it (getrusage), to say how much of what is left is faults. The child imports this
file as a module (for the functions below the floors use); run it with the interpreter where
process_isolation is installed. Nothing else imports it.
"""

import argparse
import ctypes
import functools
import json
import os
import statistics
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
KIB, MIB = 1 << 10, 1 << 20


# In the child.

@functools.lru_cache(maxsize=8)
def make_bytes(n):
    """``n`` bytes, every page written (cached: a timed call measures moving them)."""
    return b'x' * n


@functools.lru_cache(maxsize=2)
def make_array(n):
    """A float64 array of ``n`` items (cached; do not mutate)."""
    import numpy
    return numpy.full(n, 1.5)


def bytes_address(n):
    """Where the payload of make_bytes(n) is in this process's memory."""
    return ctypes.cast(ctypes.c_char_p(make_bytes(n)), ctypes.c_void_p).value


def take(x):
    """Receive ``x``; its length."""
    return len(x)


def minor_faults():
    """This process's minor page faults so far."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


_warm = {}


def read_parent(pid, address, n, fresh):
    """Seconds one process_vm_readv of ``n`` bytes at ``address`` in process ``pid`` takes here,
    into a buffer already touched (``fresh`` false) or a new one (numpy advises huge pages for
    it, as the runtime does for a new bytes object)."""
    import numpy
    libc = ctypes.CDLL(None, use_errno=True)
    if fresh:
        into = numpy.empty(n, numpy.uint8)
    else:
        into = _warm.get(n)
        if into is None:
            into = _warm[n] = numpy.ones(n, numpy.uint8)
    start = time.perf_counter()
    _vm_readv(libc, pid, address, into, n)
    return time.perf_counter() - start


# In the parent.

class _Iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]


def _vm_readv(libc, pid, address, into, n):
    local, remote = _Iovec(into.ctypes.data, n), _Iovec(address, n)
    done = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done != n:
        raise OSError(ctypes.get_errno(), 'process_vm_readv')


def cases(ctx, sizes):
    """[(name, bytes moved, callable)]: each callable makes one transfer and returns its result
    (dropped by the caller before the next)."""
    import numpy
    from process_isolation import byvalue, isproxy
    mod = ctx.load_module('bulk_transfer')
    libc = ctypes.CDLL(None, use_errno=True)
    big = 64 * MIB
    src, warm = numpy.ones(big, numpy.uint8), numpy.zeros(big, numpy.uint8)
    made = []
    for n in sorted(set(sizes + [MIB, big])):
        made.append((f'memcpy warm {label(n)}', n, lambda n=n: numpy.copyto(warm[:n], src[:n])))
    made.append((f'memcpy fresh {label(big)}', big, lambda: numpy.copy(src)))
    mod.make_bytes(big)
    address = mod.bytes_address(big)

    def vm_readv(into):
        _vm_readv(libc, ctx.pid, address, into, big)
        return into

    try:
        vm_readv(warm)
        made.append((f'vm_readv warm {label(big)}', big, lambda: vm_readv(warm)))
        made.append((f'vm_readv fresh {label(big)}', big,
                     lambda: vm_readv(numpy.empty(big, numpy.uint8))))
    except OSError as error:
        print(f'(no vm_readv rows: {error})', file=sys.stderr)

    def array_to_parent(n):
        array = mod.make_array(n // 8)
        return byvalue(array) if isproxy(array) else array

    for n in sorted(set(sizes + [MIB, big])):
        made.append((f'bytes child->parent {label(n)}', n, lambda n=n: mod.make_bytes(n)))
    made.append((f'numpy child->parent {label(big)}', big, lambda: array_to_parent(big)))
    sent = {n: b'y' * n for n in sorted(set([MIB, big]))}
    try:
        for n, data in sent.items():
            source = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
            mod.read_parent(os.getpid(), source, n, False)
            for fresh in (False, True):
                made.append((f'child vm_readv {"fresh" if fresh else "warm"} {label(n)}', n,
                             lambda n=n, source=source, fresh=fresh: Timed(
                                 mod.read_parent(os.getpid(), source, n, fresh))))
    except OSError as error:
        print(f'(no child vm_readv rows: the child may not read us: {error})', file=sys.stderr)
    for n, data in sent.items():
        made.append((f'bytes parent->child {label(n)}', n, lambda data=data: mod.take(data)))
    return made


class Timed:
    """What a case returns when it timed itself (somewhere else than here): its seconds."""

    def __init__(self, seconds):
        self.seconds = seconds


def child_faults(ctx, made, times=5):
    """{case: the child's minor page faults per transfer} for the cases that move data to it."""
    mod = ctx.load_module('bulk_transfer')
    faults = {}
    for name, _, run in made:
        if 'parent->child' not in name:
            continue
        before = mod.minor_faults()
        for _ in range(times):
            run()
        faults[name] = (mod.minor_faults() - before) / times
    return faults


def label(n):
    return f'{n // MIB} MiB' if n >= MIB and n % MIB == 0 else f'{n // KIB} KiB'


def parse_size(text):
    units = {'K': KIB, 'M': MIB}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--sizes', default='',
                        help='extra bytes sizes child->parent, comma-separated (16K,1M, ...)')
    parser.add_argument('--json', action='store_true', help='print medians as JSON')
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(',') if s]
    from process_isolation import IsolationContext
    with IsolationContext(paths=[BENCH_DIR], timeout=120) as ctx:
        made = cases(ctx, sizes)
        samples = {name: [] for name, _, _ in made}
        for name, _, run in made:  # warm-up: first-touch costs, caches in the child
            run()
            run()
        for _ in range(args.rounds):
            for name, _, run in made:
                start = time.perf_counter()
                result = run()
                elapsed = time.perf_counter() - start
                samples[name].append(result.seconds if isinstance(result, Timed) else elapsed)
                del result
        faults = child_faults(ctx, made)
    medians = {name: statistics.median(times) * 1e3 for name, times in samples.items()}
    if args.json:
        print(json.dumps({'medians': medians, 'child_faults': faults}))
        return
    floor = {n: medians[f'memcpy warm {label(n)}'] for _, n, _ in made
             if f'memcpy warm {label(n)}' in medians}
    print(f'{"case":32} {"median ms":>10} {"GiB/s":>7} {"of warm memcpy":>15}   (n={args.rounds})')
    for name, n, _ in made:
        ms = medians[name]
        share = floor[n] / ms if n in floor else float('nan')
        print(f'{name:32} {ms:10.3f} {n / (1 << 30) / (ms / 1e3):7.2f} {share:15.0%}')
    for name, count in faults.items():
        print(f'{name}: {count:.0f} minor faults in the child per transfer')


if __name__ == '__main__':
    main()
