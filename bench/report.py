"""Results of one benchmark run, and how they are written: bench/RESULTS.md and bench/results.png.

Every ratio is between two medians measured in the same run: a row against its case's floor row,
and a peer's row against this project's row for the same case (and start method).
"""

import os
import dataclasses

from cases import CASES
from measure import summarize

ROLE_ORDER = {'ours': 0, 'peer': 1, 'floor': 2, 'reference': 3}
ROLE_COLORS = {'ours': 'tab:red', 'peer': 'tab:blue', 'floor': 'dimgray', 'reference': 'silver'}


@dataclasses.dataclass
class Row:
    """One implementation (or floor) in one case."""
    case: str
    label: str
    role: str                     # 'ours', 'peer', 'floor' or 'reference'
    method: str = ''              # start method, for start-up rows
    samples: list = None          # seconds per operation (already extrapolated when scaled)
    status: str = ''              # '' when measured, else 'not available: ...', 'failed: ...'
    notes: list = dataclasses.field(default_factory=list)
    transferred: bool = True      # False: the child got a proxy, not the data; no ratios

    @property
    def stats(self):
        return summarize(self.samples) if self.samples else None


@dataclasses.dataclass
class MemoryRow:
    """RSS of the parent and of the child before and after `calls` calls of mod.f(i)."""
    label: str
    role: str
    calls: int = 0
    seconds: float = 0.0
    parent_before: int = 0
    parent_after: int = 0
    child_before: int = 0
    child_after: int = 0
    half_calls: int = 0           # calls made when the halfway readings were taken
    parent_half: int = 0
    child_half: int = 0
    status: str = ''              # '' when measured, else 'not available: ...', 'failed: ...'
    note: str = ''


def format_time(seconds):
    """Seconds as a short human figure with a unit (3 significant digits)."""
    for unit, scale in (('s', 1.0), ('ms', 1e-3), ('µs', 1e-6)):
        if seconds >= scale:
            return f'{seconds / scale:.3g} {unit}'
    return f'{seconds / 1e-9:.3g} ns'


def format_rate(nbytes, seconds):
    rate = nbytes / seconds
    if rate >= 1000 * (1 << 20):  # from 1000 MiB/s on, in GiB/s (not '1.02e+03 MiB/s')
        return f'{rate / (1 << 30):.3g} GiB/s'
    return f'{rate / (1 << 20):.3g} MiB/s'


def format_mib(nbytes):
    return f'{nbytes / (1 << 20):.1f}'


def format_ratio(value):
    return f'{value:.3g}×' if value is not None else ''


def ratio(row, other):
    if other is None or row is other or not (row.samples and other.samples):
        return None
    if not (row.transferred and other.transferred):
        return None
    return row.stats['median'] / other.stats['median']


def our_row_for(row, rows):
    """This project's row to compare `row` with: the same case; for start-up also the same start
    method (a peer started as a fresh subprocess is compared with 'spawn'), or none."""
    ours = [r for r in rows if r.role == 'ours' and r.case == row.case and r.samples]
    if not ours or row.role != 'peer':
        return None
    if row.case != 'startup':
        return ours[0]
    wanted = 'spawn' if row.method == 'subprocess' else row.method
    return next((r for r in ours if r.method == wanted), None)


def floor_row_for(case_key, rows):
    for r in rows:
        if r.case == case_key and r.role == 'floor' and r.samples:
            return r
    return None


def case_table(case, rows):
    """Markdown lines for one case's table."""
    case_rows = sorted((r for r in rows if r.case == case.key),
                       key=lambda r: ROLE_ORDER[r.role])
    floor = floor_row_for(case.key, rows)
    rate = bool(case.nbytes)
    header = ['implementation', 'median', 'spread (p25 – p75)', 'min', 'n']
    header += ['rate'] if rate else []
    header += ['÷ floor', '÷ ours', 'notes']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in case_rows:
        label = f'{row.label} ({row.method})' if row.method else row.label
        if row.role in ('floor', 'reference'):
            label = f'*{label}*'
        elif row.role == 'ours':
            label = f'**{label}**'
        if row.samples:
            s = row.stats
            cells = [label, format_time(s['median']),
                     f"{format_time(s['p25'])} – {format_time(s['p75'])}",
                     format_time(s['min']), str(s['n'])]
            if rate:
                cells.append(format_rate(case.nbytes, s['median']) if row.transferred else '')
            cells += [format_ratio(ratio(row, floor)),
                      format_ratio(ratio(row, our_row_for(row, rows)))]
        else:
            cells = [label, row.status, '', '', ''] + ([''] if rate else []) + ['', '']
        cells.append('; '.join(row.notes))
        lines.append('| ' + ' | '.join(cell.replace('|', '\\|') for cell in cells) + ' |')
    return lines


def memory_table(memory_rows):
    lines = ['| implementation | calls | time per call | parent RSS before → halfway → after (MiB) | '
             'parent growth (second half) | child RSS before → halfway → after (MiB) | '
             'child growth (second half) | notes |',
             '|---|---|---|---|---|---|---|---|']
    for m in sorted(memory_rows, key=lambda m: ROLE_ORDER[m.role]):
        label = f'**{m.label}**' if m.role == 'ours' else m.label
        if m.status:
            lines.append(f'| {label} | {m.status} | | | | | | |')
            continue
        lines.append(
            f'| {label} | {m.calls:,} | {format_time(m.seconds / m.calls)} | '
            f'{format_mib(m.parent_before)} → {format_mib(m.parent_half)} → '
            f'{format_mib(m.parent_after)} | '
            f'{format_mib(m.parent_after - m.parent_before)} MiB '
            f'({format_mib(m.parent_after - m.parent_half)}) | '
            f'{format_mib(m.child_before)} → {format_mib(m.child_half)} → '
            f'{format_mib(m.child_after)} | '
            f'{format_mib(m.child_after - m.child_before)} MiB '
            f'({format_mib(m.child_after - m.child_half)}) | {m.note} |')
    return lines


def write_markdown(path, info, settings, rows, memory_rows, problems, fault_cost=None,
                   cpp_rows=(), analysis=None):
    """Write RESULTS.md: machine and settings, how to read it, one table per case, memory."""
    out = ['# Benchmark results', '',
           f"Generated by `{info['command']}` on {info['date']}.", '',
           '## Machine', '', '| | |', '|---|---|']
    for key in ('cpu', 'cores', 'memory', 'os', 'python', 'packages', 'load', 'commit'):
        out.append(f'| {key} | {info[key]} |')
    out += ['', '## Settings', '', '| | |', '|---|---|']
    out += [f'| {key} | {value} |' for key, value in settings.items()]
    out += ['', '## How to read the tables', '',
            '- **median**: of the samples, after warm-up. A sample of a fast call is the mean '
            'time per call over a batch sized to last a few tens of milliseconds; a sample of a '
            'transfer, a start-up or a crash cycle is one operation. **spread**: 25th to 75th '
            'percentile of the samples; **min**: the fastest sample; **n**: samples.',
            '- **÷ floor**: this median divided by the floor row of the same case, measured in '
            'this run (a 64-byte round trip over an AF_UNIX socketpair between two C processes, '
            'times the round trips the case needs; memcpy of the payload for bulk cases; a bare '
            'fork + exit + wait for start-up and crash cycles).',
            "- **÷ ours** (peers only): this median divided by process_isolation's median in the "
            'same case (for start-up, the same start method; peers started as a fresh subprocess '
            "are compared with our 'spawn'). Above 1 means the peer is slower than this project. "
            'No ratio is given for a row whose child was handed a proxy instead of the data.',
            '- A round trip costs much less when the scheduler puts both processes on one CPU '
            'than when it wakes the other process on another CPU (the two pinned reference rows '
            'show both extremes; on a VM the gap can be ten times). Unpinned runs, the floor and '
            'every implementation, land anywhere in between, so fast-call medians vary between '
            'runs by up to that much.',
            '- *Italic* rows are the floor and other references; **bold** rows are this project.',
            '- "scaled from N" in notes: that implementation was too slow for the full size '
            'within the time budget, so it was measured at N units and its time multiplied by '
            'full size / N (a linear extrapolation).',
            '- The machine may have been busy with other work during the run (see load above).',
            '']
    if problems:
        out += ['## Problems during the run', ''] + [f'- {p}' for p in problems] + ['']
    for case in CASES:
        out += [f'## {case.title}', '', '```python', case.code, '```', '']
        out += case_table(case, rows) + ['']
    out += ['## Memory over many calls', '',
            '```python', 'for i in range(calls): mod.f(i)', '```', '',
            'Resident set size (VmRSS) of the parent and of the child after 1,000 warm-up calls, '
            'halfway through the timed calls and after them (garbage collected in the parent '
            'first each time). Growth that scales with the call count is a leak: it shows in the '
            'second half as much as in the first, where a one-off step (an allocator arena, a '
            'cache filling) shows only in the first.', '']
    out += memory_table(memory_rows) + ['']
    if fault_cost is not None:
        fresh, warm = fault_cost
        out += ['## Page-fault cost', '',
                'Copying 64 MiB into a freshly allocated buffer against the same copy into a '
                'buffer whose pages are already mapped, measured in this run (memcpy through a '
                'memoryview, from Python). Every transfer that ends in a new Python object pays '
                'the first figure at least once, on top of its other copies.', '',
                '| | median | rate |', '|---|---|---|',
                f'| fresh buffer (allocate + fault + copy) | {format_time(fresh)} | '
                f'{format_rate(64 << 20, fresh)} |',
                f'| warm buffer (copy only) | {format_time(warm)} | '
                f'{format_rate(64 << 20, warm)} |',
                f'| fault share of the fresh copy | {100 * (fresh - warm) / fresh:.0f}% | |', '']
    if cpp_rows:
        out += ['## C++ hot path (Google Benchmark)', '',
                'The work our own code adds to every call, outside the socket round trip: '
                'building and framing a request, and reading one back (`bench/cpp`).', '',
                '| benchmark | time |', '|---|---|']
        out += [f'| {name} | {value:.0f} {unit} |' for name, value, unit in cpp_rows] + ['']
    if analysis and os.path.exists(analysis):
        with open(analysis) as f:
            out += [f.read()]
    with open(path, 'w') as f:
        f.write('\n'.join(out))


def plot(path, rows, memory_rows, title):
    """Write results.png: one panel per case (median, p25–p75 whiskers, log scale), and memory."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    panels = len(CASES) + 1
    columns = 4
    lines = (panels + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(6 * columns, 3.6 * lines))
    axes = axes.flatten()
    for ax, case in zip(axes, CASES):
        case_rows = sorted((r for r in rows if r.case == case.key),
                           key=lambda r: ROLE_ORDER[r.role], reverse=True)
        labels, medians, low, high, colors = [], [], [], [], []
        for r in case_rows:
            labels.append(f'{r.label} ({r.method})' if r.method else r.label)
            if r.samples:
                s = r.stats
                medians.append(s['median'])
                low.append(s['median'] - s['p25'])
                high.append(s['p75'] - s['median'])
            else:
                medians.append(0)
                low.append(0)
                high.append(0)
            colors.append(ROLE_COLORS[r.role])
        positions = range(len(labels))
        ax.barh(positions, medians, xerr=[low, high], color=colors, capsize=2)
        ax.set_yticks(list(positions), labels, fontsize=7)
        if any(medians):
            ax.set_xscale('log')
            ax.xaxis.set_minor_formatter(NullFormatter())
        for position, r in zip(positions, case_rows):
            if r.samples:
                ax.text(r.stats['median'], position, ' ' + format_time(r.stats['median']),
                        va='center', fontsize=6)
            else:
                ax.text(0.02, position, (r.status or 'n/a')[:60],
                        transform=ax.get_yaxis_transform(), va='center', fontsize=6,
                        color='gray')
        ax.margins(x=0.15)
        ax.set_title(case.title, fontsize=9)
        ax.set_xlabel('seconds (log)', fontsize=7)
        ax.tick_params(axis='x', labelsize=7)

    ax = axes[len(CASES)]
    measured = [m for m in memory_rows if not m.status]
    positions = range(len(measured))
    mib = 1 << 20
    for offset, side, color in ((-0.2, 'parent', 'C0'), (0.2, 'child', 'C1')):
        whole = [(getattr(m, side + '_after') - getattr(m, side + '_before')) / mib
                 for m in measured]
        second = [(getattr(m, side + '_after') - getattr(m, side + '_half')) / mib
                  for m in measured]
        at = [p + offset for p in positions]
        ax.barh(at, whole, height=0.4, color=color, alpha=0.35, label=f'{side}, whole run')
        ax.barh(at, second, height=0.4, color=color, label=f'{side}, second half')
    ax.set_yticks(list(positions), [m.label for m in measured], fontsize=7)
    ax.set_title('RSS growth over the memory run (MiB; a leak grows in the second half too)',
                 fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes[panels:]:
        ax.axis('off')
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
