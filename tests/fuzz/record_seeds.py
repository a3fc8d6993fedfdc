#!/usr/bin/env python3
"""Records real traffic between a parent and its child and writes the seed corpora of the fuzz
targets (tests/fuzz/corpus/<target>/): each frame the child sent as one seed (fuzz_frame,
fuzz_value, fuzz_rings), plus stretches of the child's stream holding several frames back to
back (fuzz_frame reads them through a Channel). Frames over 8 KiB are left out (seeds stay
small). Run from the repository with the package installed:

    .venv/bin/python tests/fuzz/record_seeds.py

The seeds are committed; run it again when the protocol changes.
"""

import hashlib
import os
import pathlib
import struct
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / 'corpus'
MAX_SEED = 8 << 10
sys.path.insert(0, str(HERE / 'record'))

import workload  # noqa: E402
from process_isolation import IsolationContext, import_isolated  # noqa: E402


def frames(stream):
    """Splits a recorded byte stream into its frames (capnp stream framing)."""
    out, at = [], 0
    while at + 4 <= len(stream):
        count = struct.unpack_from('<I', stream, at)[0] + 1
        header = (4 * (count + 1) + 7) & ~7
        if at + header > len(stream):
            break
        words = sum(struct.unpack_from(f'<{count}I', stream, at + 4))
        end = at + header + 8 * words
        if end > len(stream):
            break
        out.append(stream[at:end])
        at = end
    return out


def write_seed(target, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def main():
    with tempfile.TemporaryDirectory() as log:
        paths = [str(HERE / 'record'), str(HERE.parent / 'python' / 'fixtures')]
        with IsolationContext(transport='socket', paths=paths, timeout=60) as ctx:
            recorder = import_isolated('isofix_recorder', context=ctx)
            recorder.start(log)
            workload.run(ctx, lambda name: import_isolated(name, context=ctx))
        child = pathlib.Path(log, 'child_to_parent').read_bytes()
        parent = pathlib.Path(log, 'parent_to_child').read_bytes()
    child_frames = frames(child)
    parent_frames = frames(parent)
    kept = [f for f in child_frames if len(f) <= MAX_SEED]
    for frame in kept:
        for target in ('fuzz_frame', 'fuzz_value', 'fuzz_rings'):
            write_seed(target, frame)
    for frame in parent_frames:  # well-formed messages of the other kinds, for the reader
        if len(frame) <= MAX_SEED:
            write_seed('fuzz_frame', frame)
    for start in range(0, len(kept), 8):
        stream = b''.join(kept[start:start + 8])
        if len(stream) <= 4 * MAX_SEED:
            write_seed('fuzz_frame', stream)
    print(f'recorded {len(child_frames)} frames from the child ({len(child)} bytes) and '
          f'{len(parent_frames)} from the parent ({len(parent)} bytes); seeds in {CORPUS}')


if __name__ == '__main__':
    main()
