"""Run every benchmark case for this project, its peers and the floor; write RESULTS.md + a plot.

    python bench/run.py            full run (several minutes; 1,000,000 calls in the memory case)
    python bench/run.py --quick    short smoke run

Output: bench/RESULTS.md and bench/results.png (see bench/README.md for what each case means).
Never run by the tests. Each case of each implementation runs under a deadline; every child is
stopped (and killed after a timeout) before the next implementation starts, even on error.
"""

import argparse
import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

# The start-up target is for a module the parent has already imported (a forked child then
# finds it in sys.modules): the parent imports benchmod, as a user's program would have.
import benchmod  # noqa: E402,F401
import floor  # noqa: E402
import implementation  # noqa: E402
import measure  # noqa: E402
import ours  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
from cases import CASES  # noqa: E402
from implementation import NotApplicable  # noqa: E402
from measure import DeadlineExceeded, deadline  # noqa: E402
from report import MemoryRow, Row  # noqa: E402

FULL = dict(
    call_reps=21,          # samples per fast-call case
    batch_target_s=0.05,   # a fast-call sample lasts about this long
    scaled_reps=11,        # samples per transfer / iteration case
    budget_s=2.0,          # a transfer sample longer than this is measured at a smaller size
    startup_reps=31,       # start-ups per start method (the 1.5x start-up target is a ratio
                           # of two noisy ~4 ms figures: 11 samples moved it by 0.4x between runs)
    crash_reps=7,          # crash + restart cycles
    fork_reps=50,          # bare fork references
    memory_calls=1_000_000,
    memory_budget_s=60,    # the memory case stops early after this long (and says so)
    rtt_iters=20_000,      # floor round trips per sample
    case_timeout_s=300,    # deadline for one case of one implementation
)
QUICK = dict(
    call_reps=5, batch_target_s=0.01, scaled_reps=3, budget_s=0.25, startup_reps=3,
    crash_reps=3, fork_reps=10, memory_calls=2_000, memory_budget_s=10, rtt_iters=2_000,
    case_timeout_s=120,
)
MEMORY_WARMUP_CALLS = 1_000
MEMORY_CHUNK = 1_000
MULTIPROCESSING_HELPERS = ('multiprocessing.forkserver', 'multiprocessing.resource_tracker')


def describe(error):
    text = f'{type(error).__name__}: {error}'.strip().rstrip(':')
    return ' '.join(text.split())[:200]


def log(message):
    print(message, flush=True)


# --- checks of the first result --------------------------------------------------------------

class WrongResult(Exception):
    """An operation returned something other than what benchmod computes."""


def expect(condition, result):
    if not condition:
        raise WrongResult(f'unexpected result {str(result)[:80]}')


def check_result(case, result, size):
    """Check one result of a case's operation. Returns '' or, when the child was handed a
    stand-in (a proxy) instead of the data, a note saying that no transfer was measured.

    Raises WrongResult when the result is wrong (the row then reports a failure)."""
    kind = case.check
    if kind == 'two':
        expect(result == 2, result)
    elif kind == 'mixed':
        expect(tuple(result) == (1, 3, False), result)
    elif kind == 'callback':
        expect(result == implementation.parent_fn(implementation.CALLBACK_ARG), result)
    elif kind == 'count':
        expect(result == size, result)
    elif kind == 'bytes':
        expect(isinstance(result, bytes) and len(result) == size, type(result))
    elif kind == 'array':
        import numpy
        expect(isinstance(result, numpy.ndarray) and result.size == size, type(result))
    elif kind.startswith('taken:'):
        length, type_name = result
        expect(length == size, result)
        if type_name != kind.split(':', 1)[1]:
            return f'the child received {type_name}, not the data: no transfer measured'
    return ''


# --- the floor -------------------------------------------------------------------------------

def measure_floor(cfg, rows, problems):
    """Floor and reference rows for every case, measured now."""
    measured = []
    try:
        with floor.FloorProgram() as program:
            iters, reps = cfg['rtt_iters'], cfg['call_reps']
            rtt = program.round_trip(iters, reps)
            # The scheduler may or may not put the two processes on one CPU; these two
            # references show both extremes.
            cpus = sorted(os.sched_getaffinity(0))
            pinned = {'both processes pinned to one CPU':
                      program.round_trip(iters, reps, (cpus[0], cpus[0]))}
            if len(cpus) >= 2:
                pinned['processes pinned to two different CPUs'] = program.round_trip(
                    iters, reps, (cpus[0], cpus[1]))
            handover = program.shm_round_trip(iters, reps)
            log(f'floor: 64-byte round trip {report.format_time(statistics.median(rtt))}; '
                f'through shared memory {report.format_time(statistics.median(handover))}; ' +
                '; '.join(f'{what}: {report.format_time(statistics.median(samples))}'
                          for what, samples in pinned.items()))
            bulk = {}   # payload bytes -> (memcpy samples, stream samples)
            for case in CASES:
                if case.round_trips:
                    n = case.round_trips
                    what = '64-byte socketpair round trip (C)' + (f' × {n}' if n > 1 else '')
                    measured.append(Row(case.key, 'floor: ' + what, 'floor',
                                        samples=[s * n for s in rtt]))
                    for what, samples in pinned.items():
                        measured.append(Row(case.key, f'the same, {what}', 'reference',
                                            samples=[s * n for s in samples]))
                    measured.append(Row(case.key, '64-byte round trip through shared memory, '
                                        'both processes spinning (C)' +
                                        (f' × {n}' if n > 1 else ''), 'reference',
                                        samples=[s * n for s in handover]))
                elif case.nbytes:
                    if case.nbytes not in bulk:
                        reps = cfg['scaled_reps']
                        bulk[case.nbytes] = (program.memcpy(case.nbytes, reps),
                                             program.stream(case.nbytes, reps))
                    copy, stream = bulk[case.nbytes]
                    measured.append(Row(case.key, 'floor: memcpy (C)', 'floor', samples=copy))
                    measured.append(Row(case.key, 'socketpair stream, one way (C)', 'reference',
                                        samples=stream))
        rows.extend(measured)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        problems.append(f'floor program: {describe(error)}')
        for case in CASES:
            if case.round_trips or case.nbytes:
                rows.append(Row(case.key, 'floor (C)', 'floor',
                                status=f'not available: {describe(error)}'))

    samples = measure.sample_each(floor.fork_exit_wait, cfg['fork_reps'], warmup=2)
    log(f'reference: bare fork + exit + wait {report.format_time(statistics.median(samples))}')
    for key in ('startup', 'crash_restart'):
        rows.append(Row(key, 'reference: bare os.fork + _exit + waitpid',
                        'floor', samples=list(samples)))


# --- one implementation ----------------------------------------------------------------------

def run_call_case(impl, case, cfg, row):
    op = getattr(impl, 'op_' + case.op)()
    check_result(case, op(), case.size)
    row.samples = measure.sample_calls(op, cfg['call_reps'], cfg['batch_target_s'])


def choose_size(make_op, case, cfg):
    """The size to measure a scaled case at: the full size, or a smaller power-of-two fraction
    of it when one operation at full size is estimated to take longer than the budget."""
    probe_size = max(case.min_size, case.size // 64)
    op = make_op(probe_size)
    op()
    start = time.perf_counter()
    op()
    estimate = (time.perf_counter() - start) * case.size / probe_size
    size = case.size
    while estimate > cfg['budget_s'] and size // 2 >= case.min_size:
        size //= 2
        estimate /= 2
    return size


def run_scaled_case(impl, case, cfg, row):
    make_op = getattr(impl, 'op_' + case.op)
    size = choose_size(make_op, case, cfg)
    op = make_op(size)
    note = check_result(case, op(), size)
    if note:
        row.notes.append(note)
        row.transferred = False
    samples = measure.sample_calls(op, cfg['scaled_reps'], cfg['batch_target_s'])
    if size != case.size:
        factor = case.size / size
        samples = [s * factor for s in samples]
        row.notes.append(f'scaled from {size:,} to {case.size:,} (× {factor:.3g}): over the '
                         f"{cfg['budget_s']:g} s budget")
    row.samples = samples


def run_steady_cases(impl, cfg, rows, problems):
    """The call, transfer and iteration cases, on one child started with the first method."""
    method = impl.start_methods[0]
    started = False
    for case in CASES:
        if case.kind not in ('call', 'scaled'):
            continue
        if impl.only_cases is not None and case.key not in impl.only_cases:
            continue
        row = Row(case.key, impl.name, impl.role)
        rows.append(row)
        try:
            with deadline(cfg['case_timeout_s'], f'{impl.name} {case.key}'):
                if not started:
                    impl.start(method)
                    started = True
                run = run_call_case if case.kind == 'call' else run_scaled_case
                run(impl, case, cfg, row)
        except NotApplicable as reason:
            row.status = f'n/a: {reason}'
        except (Exception, DeadlineExceeded) as error:
            row.status = f'failed: {describe(error)}'
            problems.append(f'{impl.name} {case.key}: {describe(error)}')
            traceback.print_exc()
            impl.close()   # the child may be wedged: the next case starts a new one
            started = False
        if not row.samples:
            row.notes = []
        row.notes += [impl.notes[key] for key in dict.fromkeys((case.key, case.op))
                      if key in impl.notes]
        log(f'  {case.key:22} {summary(row)}')
    impl.close()


def run_startup(impl, cfg, rows, problems):
    """Start a fresh child and get its first result, `startup_reps` times per start method.

    For this project's 'fork' start-ups, a bare fork + exit + wait is also timed right after
    each sample (untimed child stopped first): the reference in the parent's state of the
    moment, which has grown since the floor was measured at the start of the run (more
    modules and memory make every fork dearer)."""
    for method in impl.start_methods:
        row = Row('startup', impl.name, impl.role, method=method)
        rows.append(row)
        samples = []
        paired = []
        try:
            with deadline(cfg['case_timeout_s'], f'{impl.name} startup {method}'):
                for rep in range(1 + cfg['startup_reps']):   # the first one is a warm-up
                    start = time.perf_counter()
                    try:
                        impl.start(method)
                        result = impl.op_first_result()
                        elapsed = time.perf_counter() - start
                    finally:
                        impl.close()
                    expect(result == 2, result)
                    if rep:
                        samples.append(elapsed)
                        if impl.role == 'ours' and method == 'fork':
                            paired.append(measure.sample_each(floor.fork_exit_wait, 1, 0)[0])
            row.samples = samples
            if paired:
                rows.append(Row('startup', 'reference: bare os.fork + _exit + waitpid, right '
                                'after each of these start-ups', 'reference', method=method,
                                samples=paired))
                row.notes.append('%.2f× the bare fork timed right after it (median of the '
                                 'per-sample ratios)' % statistics.median(
                                     s / f for s, f in zip(samples, paired)))
        except (Exception, DeadlineExceeded) as error:
            row.status = f'failed: {describe(error)}'
            problems.append(f'{impl.name} startup {method}: {describe(error)}')
            traceback.print_exc()
        finally:
            impl.close()
        if 'startup' in impl.notes:
            row.notes.append(impl.notes['startup'])
        log(f"  {'startup (' + method + ')':22} {summary(row)}")


def run_crash_cycle(impl, cfg, rows, problems):
    """Crash the child inside a call, restart, first call: timed as one cycle."""
    method = impl.start_methods[0]
    row = Row('crash_restart', impl.name, impl.role, method=method)
    rows.append(row)
    samples = []
    try:
        with deadline(cfg['case_timeout_s'], f'{impl.name} crash_restart'):
            impl.start(method)
            impl.op_first_result()
            for rep in range(1 + cfg['crash_reps']):
                start = time.perf_counter()
                impl.crash()
                impl.restart(method)
                result = impl.op_first_result()
                elapsed = time.perf_counter() - start
                expect(result == 2, result)
                if rep:
                    samples.append(elapsed)
        row.samples = samples
        if impl.role == 'peer':
            row.notes.append('no restart of its own: stop the dead child, start a new one')
    except (Exception, DeadlineExceeded) as error:
        row.status = f'failed: {describe(error)}'
        problems.append(f'{impl.name} crash_restart: {describe(error)}')
        traceback.print_exc()
    finally:
        impl.close()
    log(f"  {'crash_restart':22} {summary(row)}")


def run_memory(impl, cfg, memory_rows, problems):
    """RSS of parent and child before and after many calls of mod.f(i) on one child.

    Stops early, at a multiple of MEMORY_CHUNK calls, once `memory_budget_s` has passed; the
    row then says how many calls were made.
    """
    row = MemoryRow(impl.name, impl.role)
    memory_rows.append(row)
    wanted = cfg['memory_calls']
    try:
        with deadline(cfg['memory_budget_s'] + 120, f'{impl.name} memory'):
            impl.start(impl.start_methods[0])
            op = impl.op_attr_call()
            for i in range(MEMORY_WARMUP_CALLS):
                op(i)
            child = impl.child_pid()
            measure.settle()
            row.parent_before = measure.rss_bytes(os.getpid())
            row.child_before = measure.rss_bytes(child)
            start = time.perf_counter()
            while row.calls < wanted:
                for i in range(row.calls, min(wanted, row.calls + MEMORY_CHUNK)):
                    op(i)
                row.calls = min(wanted, row.calls + MEMORY_CHUNK)
                elapsed = time.perf_counter() - start
                if not row.half_calls and (row.calls >= wanted // 2
                                           or elapsed > cfg['memory_budget_s'] / 2):
                    # Halfway: a one-off step (an allocator arena, a cache filling) shows up
                    # before this, a leak keeps growing after it.
                    measure.settle()
                    row.half_calls = row.calls
                    row.parent_half = measure.rss_bytes(os.getpid())
                    row.child_half = measure.rss_bytes(child)
                if elapsed > cfg['memory_budget_s']:
                    break
            row.seconds = time.perf_counter() - start
            measure.settle()
            row.parent_after = measure.rss_bytes(os.getpid())
            row.child_after = measure.rss_bytes(child)
        if row.calls < wanted:
            row.note = (f"stopped at the {cfg['memory_budget_s']:g} s budget "
                        f'({row.calls:,} of {wanted:,} calls)')
        log(f"  {'memory':22} {row.calls:,} calls, "
            f'{report.format_time(row.seconds / row.calls)}/call, '
            f'parent +{report.format_mib(row.parent_after - row.parent_before)} MiB, '
            f'child +{report.format_mib(row.child_after - row.child_before)} MiB '
            f'(second half: parent +{report.format_mib(row.parent_after - row.parent_half)}, '
            f'child +{report.format_mib(row.child_after - row.child_half)})')
    except (Exception, DeadlineExceeded) as error:
        row.status = f'failed: {describe(error)}'
        problems.append(f'{impl.name} memory: {describe(error)}')
        traceback.print_exc()
    finally:
        impl.close()


def run_implementation(impl, cfg, rows, memory_rows, problems):
    log(f'{impl.name}:')
    reason = impl.unavailable_reason()
    if reason is not None:
        status = f'not available: {reason}'
        log(f'  {status}')
        for case in CASES:
            if impl.only_cases is not None and case.key not in impl.only_cases:
                continue
            methods = impl.start_methods if case.kind == 'startup' else ('',)
            for method in methods:
                rows.append(Row(case.key, impl.name, impl.role, method=method, status=status))
        if impl.only_cases is None:
            memory_rows.append(MemoryRow(impl.name, impl.role, status=status))
        return
    try:
        run_steady_cases(impl, cfg, rows, problems)
        if impl.only_cases is None:
            run_memory(impl, cfg, memory_rows, problems)
            run_crash_cycle(impl, cfg, rows, problems)
            run_startup(impl, cfg, rows, problems)
    finally:
        impl.close()
    if threading.active_count() > 1:
        names = ', '.join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        problems.append(f'{impl.name} left threads running in the parent: {names}')


def leftover_children():
    """Descriptions of this process's children still present (running or unreaped), except
    multiprocessing's own helpers (fork server, resource tracker), which end with this process."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                command = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
        except OSError:
            continue   # it ended while we looked
        state, ppid = fields[0], int(fields[1])
        helper = any(name in command for name in MULTIPROCESSING_HELPERS)
        if ppid == os.getpid() and not helper:
            found.append(f'pid {entry} (state {state}): {command[:120]}')
    return found


def summary(row):
    if not row.samples:
        return row.status
    s = row.stats
    text = f"{report.format_time(s['median'])} (p25–p75 {report.format_time(s['p25'])} – " \
           f"{report.format_time(s['p75'])})"
    return text + (f"  [{'; '.join(row.notes)}]" if row.notes else '')


# --- the run ---------------------------------------------------------------------------------

def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def machine_info(argv):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
        with open('/proc/meminfo') as f:
            memory = f'{int(f.readline().split()[1]) / (1 << 20):.1f} GiB'
    except OSError:
        memory = '?'
    try:
        commit = subprocess.run(['git', '-C', BENCH_DIR, 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ''
    packages = ', '.join(f'{name} {package_version(name)}' for name in
                         ('process_isolation', 'rpyc', 'Pyro5', 'execnet', 'numpy', 'matplotlib'))
    return {
        'command': ' '.join(['python', 'bench/run.py'] + [shlex.quote(a) for a in argv]),
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'cpu': cpu,
        'cores': f'{os.cpu_count()} (usable by this run: {len(os.sched_getaffinity(0))})',
        'memory': memory,
        'os': platform.platform(),
        'python': f'{platform.python_implementation()} {platform.python_version()} '
                  f'({sys.executable})',
        'packages': packages,
        'load': 'load average at start: ' + ' '.join(f'{x:.2f}' for x in os.getloadavg()),
        'commit': commit or '(no commit)',
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='short smoke run (fewer reps, '
                        'smaller budgets, 2,000 calls in the memory case)')
    parser.add_argument('--memory-calls', type=int, metavar='N',
                        help='calls in the memory case (default 1,000,000; 2,000 with --quick); '
                        'an implementation stops early at the memory budget')
    parser.add_argument('--memory-budget', type=float, metavar='SECONDS',
                        help='time limit of the memory case per implementation '
                        '(default 60; 10 with --quick)')
    parser.add_argument('--cpp-bench', metavar='PATH',
                        help='the hot_path_bench program (Google Benchmark) to run and report')
    parser.add_argument('--only', metavar='NAMES', help='comma-separated implementation names '
                        'to run (default: all); the floor always runs')
    parser.add_argument('--output-dir', default=BENCH_DIR,
                        help='where RESULTS.md and results.png go (default: bench/)')
    return parser.parse_args(argv)


def measure_fault_cost(n=64 << 20, reps=5):
    """How much of moving a large payload is the cost of touching fresh memory (page faults),
    measured here: a copy into a freshly allocated buffer against the same copy into a buffer
    whose pages are already mapped (both plain memcpy through a memoryview)."""
    source = bytes(n)
    warm = bytearray(n)
    memoryview(warm)[:] = source  # fault its pages in once
    fresh_times, warm_times = [], []
    for _ in range(reps):
        t = time.perf_counter()
        fresh = bytearray(n)  # calloc: the kernel hands zero pages, faulted in on first touch
        memoryview(fresh)[:] = source
        fresh_times.append(time.perf_counter() - t)
        del fresh
        t = time.perf_counter()
        memoryview(warm)[:] = source
        warm_times.append(time.perf_counter() - t)
    return statistics.median(fresh_times), statistics.median(warm_times)


def run_cpp_bench(binary, quick):
    """Runs the Google Benchmark program of the C++ hot path; returns its rows or a problem."""
    import json
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix='.json') as out:
        subprocess.run([binary, f'--benchmark_out={out.name}', '--benchmark_out_format=json',
                        f'--benchmark_min_time={0.05 if quick else 0.5}'],
                       check=True, capture_output=True, timeout=600)
        data = json.load(open(out.name))
    return [(b['name'], b['real_time'], b['time_unit']) for b in data['benchmarks']]


def main(argv):
    args = parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.memory_calls is not None:
        cfg['memory_calls'] = max(1, args.memory_calls)
    if args.memory_budget is not None:
        cfg['memory_budget_s'] = max(0.0, args.memory_budget)
    chosen = (ours.ProcessIsolation, ours.ProcessIsolationSocket) + peers.ALL
    if args.only:
        wanted = {name.strip().lower() for name in args.only.split(',')}
        chosen = [cls for cls in chosen if cls.name.lower() in wanted]
    info = machine_info(argv)
    started = time.perf_counter()
    rows, memory_rows, problems = [], [], []

    log(f"{'quick' if args.quick else 'full'} run; {info['load']}")
    measure_floor(cfg, rows, problems)
    for cls in chosen:
        run_implementation(cls(), cfg, rows, memory_rows, problems)

    fault_cost = measure_fault_cost()
    cpp_rows = []
    if args.cpp_bench:
        try:
            cpp_rows = run_cpp_bench(args.cpp_bench, args.quick)
        except Exception as error:  # a failed extra section must not lose the whole run
            problems.append(f'the C++ benchmark failed: {error}')

    for cls in chosen:
        shutdown = getattr(cls, 'shutdown', None)
        if shutdown is not None:
            shutdown()
    for child in leftover_children():
        problems.append(f'a child process was still there at the end: {child}')
    info['load'] += '; at end: ' + ' '.join(f'{x:.2f}' for x in os.getloadavg())
    cfg['mode'] = 'quick' if args.quick else 'full'
    cfg['wall time'] = f'{time.perf_counter() - started:.0f} s'
    os.makedirs(args.output_dir, exist_ok=True)
    results = os.path.join(args.output_dir, 'RESULTS.md')
    picture = os.path.join(args.output_dir, 'results.png')
    report.write_markdown(results, info, cfg, rows, memory_rows, problems,
                          fault_cost=fault_cost, cpp_rows=cpp_rows,
                          analysis=os.path.join(os.path.dirname(__file__), 'ANALYSIS.md'))
    report.plot(picture, rows, memory_rows, f"process_isolation benchmarks, {info['date']}, "
                f"{cfg['mode']} run (bars: median; whiskers: p25–p75)")
    log(f'wrote {results} and {picture} in {cfg["wall time"]}')
    for problem in problems:
        log(f'problem: {problem}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
