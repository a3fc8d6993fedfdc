"""The runnable examples run and say what they promise."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


def run(name):
    return subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=120)


def test_crash_demo_reports_the_segfault_and_carries_on():
    result = run('crash_demo.py')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'signal:      SIGSEGV' in out
    assert 'call:        buggy.dragons_here(3)' in out
    assert 'buggy.py' in out  # the child's traceback names the crashing module
    assert 'ClientStateError' in out
    assert 'buggy.add(40, 2) = 42' in out
    assert 'The parent is still alive' in out


def test_two_versions_uses_both_versions_side_by_side():
    result = run('two_versions.py')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'Session: tinyver 1.4.2 -> Hello, Ada.' in out
    assert 'Session: tinyver 2.0.0 -> Hello, Ada!' in out
    assert 'Isolated: tinyver 1.4.2 -> Hello, Ada.' in out
    assert 'Isolated: tinyver 2.0.0 -> Hello, Ada!' in out
