"""The cost of standard values (datetime, Decimal, ...) crossing by value, against the hot path.

Run with the package installed: `python bench/standard_values.py [--calls N] [--repeats R]`.
Prints, per case, the median over R runs of N calls of the microseconds one call takes:
`mod.echo(1)` (the hot path: an int argument and result) and `mod.echo(x)` for a datetime, a
Decimal, a UUID, a path and an enum member (each crosses twice: argument and result), and what the
same values cost when they cross by reference (a remote `datetime` made in the child and sent
back). Used to measure issue 12's value types; see the commit messages for the figures."""

import argparse
import datetime
import decimal
import pathlib
import statistics
import sys
import time
import uuid
from pathlib import Path

from process_isolation import IsolationContext

FIXTURES = Path(__file__).resolve().parents[1] / 'tests' / 'python' / 'fixtures'


def per_call(function, argument, calls):
    start = time.perf_counter()
    for _ in range(calls):
        function(argument)
    return (time.perf_counter() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--calls', type=int, default=20000)
    parser.add_argument('--repeats', type=int, default=7)
    options = parser.parse_args()
    cases = {
        'int 1 (hot path)': 1,
        'datetime': datetime.datetime(2024, 2, 29, 12, 30, 15, 250,
                                      tzinfo=datetime.timezone.utc),
        'date': datetime.date(2024, 2, 29),
        'timedelta': datetime.timedelta(days=3, seconds=5),
        'Decimal': decimal.Decimal('12345.6789'),
        'UUID': uuid.UUID(int=12345678901234567890),
        'PurePosixPath': pathlib.PurePosixPath('/usr/lib/python3'),
        'enum member': uuid.SafeUUID.safe,
    }
    with IsolationContext(paths=[str(FIXTURES)]) as context:
        mod = context.load_module('isofix_basic')
        echo = mod.echo
        for _ in range(2000):
            echo(1)
        results = {}
        for name, value in cases.items():
            results[name] = statistics.median(per_call(echo, value, options.calls)
                                              for _ in range(options.repeats))
        for name, micros in results.items():
            print(f'{name:20s} {micros:7.2f} us per call')
    sys.stdout.flush()


if __name__ == '__main__':
    main()
