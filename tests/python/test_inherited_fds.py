"""The library's fds never collide with the program's: a child that writes through, closes or
garbage-collects a file object it inherited at a low fd (3, 4, 5: the numbers a child's socket,
crash pipe and lifeline once took) harms neither its connection nor its crash reports, with
each start method. Each case runs in a subprocess parent, so that a regression fails the test
instead of disturbing pytest."""

import os
import subprocess
import sys

import pytest


from conftest import FIXTURES

METHODS = ['fork', 'forkserver', 'spawn']


# The fork server is process-wide: started before this module's fd accounting, stopped after it.
pytestmark = pytest.mark.usefixtures('fork_server_for_the_module')

# The parent opens its log file before anything else, so it gets one of the lowest fds. A forked
# child inherits that file object; the fork server's and spawned children inherit the one their
# own interpreter's sitecustomize opened at its start-up (ISOFIX_SITE_LOG).
PARENT = r'''
import os, sys
log = open(sys.argv[2], 'w')
assert log.fileno() in (3, 4, 5), log.fileno()
log.write('written by the parent\n')
log.flush()
from process_isolation import IsolationContext, ProcessTerminationError
ctx = IsolationContext(start_method=sys.argv[1], paths=[sys.argv[3]], timeout=60)
inherited = ctx.load_module('isofix_inherited_log')
print('fd of the inherited log:', inherited.write_flush_close_collect())
print('a call after that:', ctx.load_module('isofix_basic').add(1, 2))
try:
    inherited.crash()
except ProcessTerminationError as error:
    print('crash:', error.signal_name)
    print('traceback names the crashing function:', 'in crash' in (error.child_traceback or ''))
ctx.terminate()
log.close()
print('parent done')
'''


@pytest.mark.parametrize('method', METHODS)
def test_a_child_that_writes_closes_and_collects_an_inherited_low_fd_file_keeps_working(
        tmp_path, method):
    parent_log = tmp_path / 'parent.log'
    site_log = tmp_path / 'site-%d.log'
    env = dict(os.environ, ISOFIX_SITE_LOG=str(site_log),
               PYTHONPATH=os.pathsep.join([str(FIXTURES / 'site_log'),
                                           os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep))
    result = subprocess.run(
        [sys.executable, '-c', PARENT, method, str(parent_log), str(FIXTURES)],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    inherited_fd = int(lines[0].rsplit(':', 1)[1])
    assert 3 <= inherited_fd <= 5, lines
    assert lines[1:] == ['a call after that: 3', 'crash: SIGSEGV',
                         'traceback names the crashing function: True', 'parent done'], result
    # The child's writes went to the /dev/null behind the inherited fd, not into the parent's
    # file (nor into its own socket).
    assert parent_log.read_text() == 'written by the parent\n'


def test_the_library_fds_of_a_forked_child_lie_above_every_fd_it_inherited(new_context):
    fds = new_context().load_module('isofix_introspect').open_fds()
    ours = sorted(fd for fd, target in fds.items() if target.startswith(('socket:', 'pipe:')))
    # The socket, the crash pipe and the lifeline, above everything else it inherited from this
    # process (behind /dev/null now) and stdio.
    assert len(ours) == 3, fds
    inherited = [fd for fd, target in fds.items()
                 if fd > 2 and fd not in ours and not target.startswith('anon_inode:')]
    assert inherited and all(target == '/dev/null' for fd, target in fds.items()
                             if fd in inherited), fds
    assert min(ours) > max(inherited), fds
