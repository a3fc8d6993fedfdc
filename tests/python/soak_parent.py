#!/usr/bin/env python3
"""The parent of the soak (test_soak.py, `make soak`): a real parent whose children send it
mutated frames, run as a subprocess so that a parent death fails the test instead of killing it.

    soak_parent.py SECONDS SEED STATE_FILE

For SECONDS it makes cases and sends each through a child of a real IsolationContext (the
isofix_soak fixture writes the bytes into the connection by hand, in the middle of a call):
  - recorded traffic (tests/fuzz/corpus/fuzz_value: frames real children sent), as is and
    mutated: bit flips, truncations, a word of the body replaced by an interesting value, two
    frames spliced;
  - forged messages (encoded with the capnp tool from protocol/isolation.capnp): every op
    against the parent's exported objects and ids it never exported, responses and errors
    carrying every kind of value, buffers naming fds and addresses the child does not have,
    releases, a hello, a setup; as is and mutated;
  - oversized headers and garbage.
Each call has a deadline (the context's timeout); a call that has not ended long after it is a
hang, and ends this process with SIGALRM. Children are reused while they live and replaced when
they end; the transport alternates between the rings and the socket. Before each case the case is written to STATE_FILE, so a
parent that dies leaves the input that killed it. At the end every context is terminated and
the parent prints one JSON line: cases, outcomes, hangs, and the descriptors and child processes
left over (compared with before the first case).
"""

import collections
import gc
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURES = HERE / 'fixtures'
SCHEMA = ROOT / 'protocol' / 'isolation.capnp'
RECORDED = ROOT / 'tests' / 'fuzz' / 'corpus' / 'fuzz_value'
CALL_TIMEOUT = 1.0   # the context's deadline for each call
HANG_SECONDS = 15.0  # a call that takes longer than this has hung

from process_isolation import IsolationContext, import_isolated  # noqa: E402

OPS = ['import', 'getattr', 'setattr', 'delattr', 'call', 'callMethod', 'repr', 'str', 'dir',
       'len', 'getitem', 'setitem', 'delitem', 'contains', 'iter', 'next', 'compare', 'bool',
       'hash', 'special', 'isinstance', 'issubclass', 'byvalue', 'callByName', 'format',
       'iterBatch', 'fetchBuffer']

VALUES = [
    '(none = void)', '(bool = true)', '(int = -9223372036854775808)', '(bigInt = 0x"ff")',
    '(bigInt = "")', '(float = nan)', '(complex = (real = inf, imag = -0.0))',
    '(str = "h\\xc3\\xa9")', '(str = "\\xff\\xfe")', '(bytes = "abc")', '(bytearray = "")',
    '(list = [(int = 1), (list = [(none = void)])])', '(tuple = [])',
    '(dict = [(key = (str = "k"), value = (int = 1)), (key = (list = []), value = (none = void))])',
    '(set = [(int = 1), (int = 1)])', '(frozenset = [(dict = [])])',
    '(ref = (id = 7, typeId = 9, typeInfo = (name = "T", module = "m", specials = ["__iter__", '
    '"__len__", "__bogus__"], flags = 15)))',
    '(ref = (id = 8, typeId = 12345))', '(ref = (id = 0, typeId = 0))',
    '(ref = (id = 10, typeId = 11, classInfo = (name = "E", qualname = "E", module = "m", '
    'bases = [(builtin = "ValueError")])))',
    '(back = 1)', '(back = 2, unread = 4294967295)', '(back = 999)', '(builtin = "int")',
    '(builtin = "NotImplemented")', '(builtin = "no_such_builtin")', '(builtin = "\\xff")',
    '(pickled = "\\x80\\x04N.")', '(slice = (start = (int = 1), step = (str = "x")))',
    '(exception = (type = "KeyError", args = [(str = "k")]))',
    '(exception = (type = "int", args = []))',
    '(exception = (type = "UnicodeDecodeError", args = [(int = 1)]))',
    '(exception = (cls = (back = 1), message = "\\xff"))',
    '(buffer = (kind = bytes, size = 100000, address = 4096))',
    '(buffer = (kind = bytes, size = 1073741824, address = 140737488289792))',
    '(buffer = (kind = bytearray, size = 18446744073709551615, address = 1))',
    '(buffer = (kind = bytes, size = 2000000, fd = 0))',
    '(buffer = (kind = bytes, size = 10, fd = 65535))',
]


def forged_messages():
    """Message texts for the capnp tool: each kind of message a child can send."""
    texts = []
    for op in OPS:
        for target in (0, 1, 2, 3, 4, 5, 99):
            texts.append(f'(request = (callId = 77, op = {op}, target = {target}, name = "__len__", '
                         f'args = [(int = 2), (int = 3)]))')
    for value in VALUES:
        texts.append(f'(request = (callId = 78, op = call, target = 1, args = [{value}], '
                     f'kwargs = [(name = "k\\xff", value = {value})]))')
        for call_id in (1, 2, 3):
            texts.append(f'(response = (callId = {call_id}, value = {value}))')
        texts.append(f'(response = (callId = 2, error = (type = {value}, args = [{value}], '
                     f'message = "m\\xff", traceback = "t\\xfe", exception = {value})))')
    texts += [
        '(release = (ids = [1, 2, 3], counts = [1, 1000, 0]))',
        '(release = (ids = [1], counts = []))',
        '(hello = (pid = 1, pythonVersion = "\\xff"))',
        '(setup = (sharedRings = true, parentPid = 1))',
        '(goodbye = void)',
        '(fdCount = 64, response = (callId = 2, value = (buffer = (kind = bytes, size = 10, fd = 0))))',
        '(decodedFrames = 4294967295, response = (callId = 2, value = (none = void)))',
    ]
    return texts


def encode_all(texts, cache):
    """The frames of `texts`, from `cache` when an earlier run (a restart) already made them."""
    if os.path.exists(cache):
        with open(cache) as kept:
            frames = [bytes.fromhex(line) for line in kept.read().split()]
        if len(frames) == len(texts):
            return frames
    capnp = shutil.which('capnp')
    if capnp is None:
        raise SystemExit('the capnp tool (Debian package capnproto) is needed to forge messages')
    frames = []
    for text in texts:
        done = subprocess.run([capnp, 'encode', str(SCHEMA), 'Message'], input=text.encode(),
                              capture_output=True, timeout=60)
        if done.returncode != 0:
            raise SystemExit(f'capnp encode failed for {text}: {done.stderr.decode()}')
        frames.append(done.stdout)
    with open(cache, 'w') as kept:
        kept.write('\n'.join(frame.hex() for frame in frames))
    return frames


INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 31, 1 << 32, (1 << 63) - 1,
               1 << 63, (1 << 64) - 1, 0xFFFFFFFC, 0x0000000100000000]


def mutate(rng, frame, others):
    data = bytearray(frame)
    kind = rng.choice(['flip', 'flip', 'truncate', 'word', 'word', 'splice', 'header', 'none'])
    if kind == 'flip' and data:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 'truncate' and data:
        del data[rng.randrange(len(data)):]
    elif kind == 'word' and len(data) >= 16:
        at = rng.randrange(8, len(data) - 7) & ~7
        data[at:at + 8] = rng.choice(INTERESTING + [rng.getrandbits(64)]).to_bytes(8, 'little')
    elif kind == 'splice':
        other = rng.choice(others)
        data = data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    elif kind == 'header' and len(data) >= 8:
        at = rng.choice([0, 4])
        data[at:at + 4] = rng.choice(INTERESTING[:9]).to_bytes(4, 'little')
    return bytes(data), kind


def make_case(rng, recorded, forged):
    source = rng.random()
    if source < 0.08:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))), 'garbage'
    if source < 0.12:  # a header asking for the most segments or bytes there are
        count = rng.choice([0, 511, 512, 0xFFFFFFFF])
        sizes = rng.choice([0, 1, 1 << 26, 0xFFFFFFFF])
        return count.to_bytes(4, 'little') + sizes.to_bytes(4, 'little') + bytes(8), 'header'
    pool = recorded if (source < 0.5 and recorded) else forged
    frame = rng.choice(pool)
    origin = 'recorded' if pool is recorded else 'forged'
    if rng.random() < 0.25:
        return frame, origin
    data, how = mutate(rng, frame, pool)
    return data, f'{origin}+{how}'


def open_fds():
    return sorted(int(name) for name in os.listdir('/proc/self/fd'))


def children():
    kids = set()
    for task in os.listdir('/proc/self/task'):
        try:
            kids.update(pathlib.Path(f'/proc/self/task/{task}/children').read_text().split())
        except OSError:
            pass
    return sorted(kids)


def usable(ctx, library_errors, case, end=False):
    """Whether `ctx`'s child still serves; terminates it when not (or at the `end`). Asking
    never raises (issue 11, item 4): what does is counted in `library_errors` with the case
    before it, and the context is given up."""
    try:
        if not end and ctx.alive:
            return True
        ctx.terminate()
    except Exception as error:
        name = type(error).__name__
        first = library_errors.setdefault(name, {'count': 0, 'error': str(error)[:300],
                                                 'case': case})
        first['count'] += 1
        try:
            ctx.terminate()
        except Exception:
            pass
    return False


class Anchor:
    """A plain parent object a child can hold by reference."""


def main():
    seconds, seed, state_file = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    recorded = [p.read_bytes() for p in sorted(RECORDED.glob('*'))] if RECORDED.is_dir() else []
    forged = encode_all(forged_messages(), state_file + '.forged')
    anchors = (lambda *a: len(a), iter([1, 2, 3]), Anchor(), [1, 2], {'a': 1}, print)

    # Warm up (the first context loads what the library loads once), then take the baseline.
    with IsolationContext(paths=[str(FIXTURES)], timeout=CALL_TIMEOUT) as warm:
        import_isolated('isofix_soak', context=warm).send(b'', 'return')
    gc.collect()
    fds_before, children_before = open_fds(), children()

    # The watchdog: a case that has not ended after HANG_SECONDS ends this process with SIGALRM
    # (a thread would make every fork warn), which the test reports as a hang.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    library_errors = {}  # what escaped ctx.alive or ctx.terminate(): type -> count, first case
    case = None
    outcomes = collections.Counter()
    origins = collections.Counter()
    slowest = 0.0
    cases = 0
    contexts = 0
    ctx = soak = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ctx is not None and not usable(ctx, library_errors, case):
            ctx = None
        if ctx is None:
            ctx = IsolationContext(paths=[str(FIXTURES)], timeout=CALL_TIMEOUT,
                                   transport='shm' if contexts % 2 == 0 else 'socket')
            contexts += 1
            soak = import_isolated('isofix_soak', context=ctx)
        data, origin = make_case(rng, recorded, forged)
        then = rng.choices(['return', 'read', 'exit', 'wait'], [45, 30, 20, 5])[0]
        case = {'index': cases, 'origin': origin, 'then': then, 'transport': ctx.transport,
                'frame': data.hex()}
        with open(state_file, 'w') as state:
            json.dump(case, state)
        signal.alarm(int(HANG_SECONDS))
        started = time.monotonic()
        try:
            soak.send(data, then, anchors)
            outcome = 'returned'
        except Exception as error:  # every ending is fine here, as long as the parent lives
            outcome = type(error).__name__
        signal.alarm(0)
        slowest = max(slowest, time.monotonic() - started)
        outcomes[outcome] += 1
        origins[origin.split('+')[0]] += 1
        cases += 1
    if ctx is not None:
        usable(ctx, library_errors, case, end=True)
    ctx = soak = None
    gc.collect()
    leaked_fds = sorted(set(open_fds()) - set(fds_before))
    leaked_children = sorted(set(children()) - set(children_before))
    print(json.dumps({'cases': cases, 'contexts': contexts, 'seconds': seconds,
                      'slowest_call': round(slowest, 3), 'outcomes': dict(outcomes),
                      'origins': dict(origins), 'hangs': 0, 'library_errors': library_errors,
                      'leaked_fds': [f'{fd} -> {os.readlink(f"/proc/self/fd/{fd}")}'
                                     for fd in leaked_fds if os.path.exists(f'/proc/self/fd/{fd}')],
                      'leaked_children': leaked_children}), flush=True)


if __name__ == '__main__':
    main()
