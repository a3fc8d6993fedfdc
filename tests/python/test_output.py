"""The child's stdout and stderr: 'inherit' (the parent's descriptors), 'capture' (a bounded tail
the parent keeps, attached to ProcessTerminationError and returned by captured_output; a child
flooding its output can neither block nor exhaust the parent), or a file path (appended to)."""

import contextlib
import fcntl
import io
import os
import subprocess
import sys
import textwrap

import pytest

from process_isolation import IsolationContext, ProcessTerminationError, timeout

from conftest import FIXTURES
from supervision_helpers import DEADLINE, memory_of_this_process
from supervision_helpers import no_core_files  # noqa: F401 (a fixture, for pytestmark)

pytestmark = pytest.mark.usefixtures('no_core_files')

MiB = 1 << 20


@contextlib.contextmanager
def parent_stream(name, stream):
    """Replaces sys.stdout or sys.stderr of this process for the block, as hosts do (IDEs,
    notebooks, test runners, logging set-ups); contexts started in the block fork with it."""
    saved = getattr(sys, name)
    setattr(sys, name, stream)
    try:
        yield stream
    finally:
        setattr(sys, name, saved)


@contextlib.contextmanager
def host_file_on_a_high_descriptor(path):
    """A text file on a descriptor number no child keeps (>= 100), like a test runner's
    capture file: a forked child has it closed."""
    low = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    high = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(low)
    with open(high, 'w') as file:
        yield file


def test_captured_stdout_keeps_the_last_lines_the_child_wrote(new_context):
    context = new_context(stdout='capture')
    chatty = context.load_module('isofix_chatty')
    chatty.numbered('stdout', 200)
    assert context.captured_output('stdout', 3) == 'line 197\nline 198\nline 199'
    assert context.captured_output('stdout', 1) == 'line 199'
    assert context.captured_output('stderr', 3) == ''  # not captured
    chatty.write('stdout', 'one more')
    assert context.captured_output('stdout', 2) == 'line 199\none more'


def test_captured_stdout_and_stderr_are_kept_apart(new_context):
    context = new_context(stdout='capture', stderr='capture')
    chatty = context.load_module('isofix_chatty')
    chatty.write('stdout', 'out 1', 'out 2')
    chatty.write('stderr', 'err 1')
    assert context.captured_output('stdout', 10) == 'out 1\nout 2'
    assert context.captured_output('stderr', 10) == 'err 1'


def test_a_crash_attaches_the_last_lines_of_captured_stderr_to_the_error(new_context):
    context = new_context(stderr='capture')
    chatty = context.load_module('isofix_chatty')
    chatty.numbered('stderr', 10000)
    with pytest.raises(ProcessTerminationError) as caught:
        chatty.write_then_crash('about to crash', 'last words')
    error = caught.value
    assert error.signal_name == 'SIGSEGV'
    lines = error.stderr_tail.splitlines()
    assert lines[-2:] == ['about to crash', 'last words']
    assert lines[-3] == 'line 9999'
    assert len(lines) < 1000  # the last lines, not everything
    assert 'line 0' not in lines
    assert error.stderr_tail in str(error)
    assert context.termination['stderr_tail'].endswith('about to crash\nlast words')


def test_a_crash_attaches_the_last_lines_of_captured_stdout_to_the_error(new_context):
    context = new_context(stdout='capture')
    chatty = context.load_module('isofix_chatty')
    chatty.write('stdout', 'progress 1', 'progress 2')
    with pytest.raises(ProcessTerminationError) as caught:
        chatty.write_then_crash('to stderr, not captured')
    assert caught.value.stdout_tail == 'progress 1\nprogress 2'
    assert caught.value.stderr_tail is None


def test_captured_output_after_the_child_ended_still_gives_the_last_lines_asked_for(
        new_context):
    context = new_context(stderr='capture')
    chatty = context.load_module('isofix_chatty')
    chatty.numbered('stderr', 100)
    assert context.captured_output('stderr', 2) == 'line 98\nline 99'
    context.terminate()
    assert context.captured_output('stderr', 2) == 'line 98\nline 99'


def test_a_child_flooding_its_captured_output_neither_blocks_nor_exhausts_the_parent(
        new_context):
    context = new_context(stdout='capture', stderr='capture')
    chatty = context.load_module('isofix_chatty')
    resident = memory_of_this_process('VmRSS')
    with timeout(DEADLINE):
        assert chatty.flood('stdout', 64) == 64
        assert chatty.flood('stderr', 64) == 64
    assert memory_of_this_process('VmRSS') - resident < 32 * MiB
    assert context.captured_output('stdout', 1) == 'the last line'
    assert context.captured_output('stderr', 1) == 'the last line'
    assert chatty.write('stdout', 'still talking') == 1
    assert context.captured_output('stdout', 1) == 'still talking'


def test_a_child_writing_more_than_a_pipe_holds_in_one_call_does_not_block(new_context):
    # One write() of 4 MiB finishes only if the parent reads while it waits for the answer.
    context = new_context(stdout='capture')
    context.start()
    with timeout(DEADLINE):
        context.call(os.write, 1, b'x' * (4 * MiB) + b'\nend of import\n')
    assert context.captured_output('stdout', 1) == 'end of import'


def test_output_to_a_file_path_is_appended_to_the_file(new_context, tmp_path):
    out, err = tmp_path / 'out.txt', tmp_path / 'err.txt'
    out.write_text('written before\n')
    context = new_context(stdout=str(out), stderr=err)
    chatty = context.load_module('isofix_chatty')
    chatty.write('stdout', 'to the out file')
    chatty.write('stderr', 'to the err file')
    context.terminate()
    assert out.read_text() == 'written before\nto the out file\n'
    assert err.read_text() == 'to the err file\n'
    assert context.captured_output('stdout') == ''


def test_inherited_output_goes_to_the_parents_descriptors(new_context, capfd):
    context = new_context()  # stdout and stderr 'inherit'
    chatty = context.load_module('isofix_chatty')
    chatty.write('stdout', 'child says hello on fd 1')
    chatty.write('stderr', 'child says hello on fd 2')
    captured = capfd.readouterr()
    assert 'child says hello on fd 1' in captured.out
    assert 'child says hello on fd 2' in captured.err


def test_print_in_the_child_goes_to_the_captured_stdout_whatever_the_parents_sys_stdout(
        new_context):
    context = new_context(stdout='capture')
    with parent_stream('stdout', io.StringIO()) as host_stdout:
        context.start()
    chatty = context.load_module('isofix_chatty')
    assert chatty.say('stdout', 'printed in the child') == 1
    assert context.captured_output('stdout', 1) == 'printed in the child'
    assert host_stdout.getvalue() == ''


def test_print_in_the_child_goes_to_the_stdout_file_whatever_the_parents_sys_stdout(
        new_context, tmp_path):
    out = tmp_path / 'out.txt'
    context = new_context(stdout=out)
    # The host's sys.stdout is a file whose descriptor the child does not keep (a test runner's
    # capture file, a notebook's stream): print() in the child must still work.
    with host_file_on_a_high_descriptor(tmp_path / 'host.txt') as host_file:
        with parent_stream('stdout', host_file):
            context.start()
    chatty = context.load_module('isofix_chatty')
    assert chatty.say('stdout', 'printed in the child') == 1
    context.terminate()
    assert out.read_text() == 'printed in the child\n'


def test_sys_exit_with_a_message_prints_it_to_stderr_and_exits_with_code_1(new_context,
                                                                            tmp_path):
    context = new_context(stderr='capture')
    with host_file_on_a_high_descriptor(tmp_path / 'host.txt') as host_file:
        with parent_stream('stderr', host_file):
            context.start()
    module = context.load_module('isofix_sys_exit')
    with pytest.raises(ProcessTerminationError) as caught:
        module.exit_with('goodbye from the child')
    assert caught.value.exit_code == 1
    assert caught.value.stderr_tail == 'goodbye from the child'


PRINT_NEXT_TO_THE_SOCKET = textwrap.dedent('''
    import os, sys
    from process_isolation import IsolationContext
    # The host's sys.stdout is a file on descriptor 3, where the child keeps its socket.
    fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT)
    os.dup2(fd, 3)
    sys.stdout = open(3, 'w', closefd=False)
    context = IsolationContext(paths=[sys.argv[1]], stdout='capture', timeout=20)
    chatty = context.load_module('isofix_chatty')
    try:
        chatty.say('stdout', 'printed in the child')
        print('ok', repr(context.captured_output('stdout', 1)), file=sys.stderr)
    except Exception as error:
        print('failed', type(error).__name__, error, file=sys.stderr)
    context.terminate()
''')


def test_print_in_the_child_never_writes_into_its_connection_to_the_parent(tmp_path):
    completed = subprocess.run(
        [sys.executable, '-c', PRINT_NEXT_TO_THE_SOCKET, str(FIXTURES), str(tmp_path / 'host')],
        capture_output=True, text=True, timeout=DEADLINE)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip() == "ok 'printed in the child'"


def test_captured_output_rejects_a_stream_other_than_stdout_or_stderr(new_context):
    context = new_context(stdout='capture')
    with pytest.raises(ValueError):
        context.captured_output('stdin')


@pytest.mark.parametrize('value', [3, 2.5, object()])
def test_an_output_option_that_is_no_mode_or_path_is_rejected(value):
    with pytest.raises(ValueError):
        IsolationContext(stdout=value)
    with pytest.raises(ValueError):
        IsolationContext(stderr=value)
