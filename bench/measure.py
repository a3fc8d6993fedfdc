"""Timing primitives for the benchmark harness: samples, statistics, deadlines, memory readings.

A *sample* is the time of one operation in seconds. For fast operations a sample is the mean
over a batch of calls whose size is chosen so the batch takes about `target_s`; slow operations
are timed one at a time. Every loop here is bounded by a count.
"""

import contextlib
import gc
import signal
import statistics
import time


class DeadlineExceeded(BaseException):
    """Raised in the main thread when a case runs past its deadline.

    A BaseException, so library code that catches ``Exception`` (RPyC and Pyro5 both do in
    places) cannot swallow it.
    """


@contextlib.contextmanager
def deadline(seconds, what):
    """Raise DeadlineExceeded in the main thread if the block is still running after `seconds`.

    Uses SIGALRM (ITIMER_REAL): blocking socket reads are interrupted and the exception
    propagates from the read. Main thread only; blocks do not nest.
    """
    def on_alarm(signum, frame):
        raise DeadlineExceeded(f'{what}: no result after {seconds:.0f} s')

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def time_batch(fn, count):
    """Call fn() `count` times and return the mean seconds per call."""
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def choose_batch(fn, target_s, max_batch=100_000):
    """Return a batch size for which `count` calls of fn take roughly target_s.

    Grows the trial batch by 4x (at most a dozen steps) until one trial takes a tenth of the
    target, then scales.
    """
    count = 1
    for _ in range(12):
        per_call = time_batch(fn, count)
        if per_call * count >= target_s / 10 or count >= max_batch:
            break
        count *= 4
    return max(1, min(max_batch, int(target_s / max(per_call, 1e-9))))


def sample_calls(fn, reps, target_s):
    """Samples (seconds per call): a warm-up call, the trial batches of choose_batch (which warm
    up further), then `reps` timed batches. A slow operation gets batches of one call."""
    fn()
    batch = choose_batch(fn, target_s)
    return [time_batch(fn, batch) for _ in range(reps)]


def sample_each(fn, reps, warmup=1):
    """Samples of a slow operation, timed one call at a time after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def summarize(samples):
    """Return median, 25th and 75th percentile, min and max of a list of samples."""
    ordered = sorted(samples)
    if len(ordered) >= 2:
        p25, _, p75 = statistics.quantiles(ordered, n=4, method='inclusive')
    else:
        p25 = p75 = ordered[0]
    return {
        'median': statistics.median(ordered),
        'p25': p25,
        'p75': p75,
        'min': ordered[0],
        'max': ordered[-1],
        'n': len(ordered),
    }


def rss_bytes(pid):
    """Resident set size of process `pid` in bytes, read from /proc/<pid>/status (Linux)."""
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'no VmRSS for pid {pid}')


def settle():
    """Collect garbage so memory readings are not skewed by cyclic garbage still awaiting gc."""
    gc.collect()
