"""Bytes from the child that are not UTF-8 (in its crash report, its captured output, the text
fields of its messages) reach the parent as text with U+FFFD in their place: every call, and
ctx.alive, ctx.termination and ctx.terminate(), gives a value or a termination error, never a
UnicodeDecodeError."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from process_isolation import ClientStateError, ProcessTerminationError, ProtocolError

from conftest import child_pids
from transport_helpers import both_transports  # noqa: F401 (each test per transport)

SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'
BAD = b'\xff\xfe\xc3(\xed\xa0\x80\xf4\x90\x80\x80'  # as isofix_bad_text.BAD
PLACEHOLDER = '@' * len(BAD)  # encoded as ASCII, then replaced by BAD in the frame
REPLACED = BAD.decode('utf-8', 'replace')


def assert_every_ending_api_answers(ctx, pid):
    """Once the child ended: alive, termination and terminate() answer without raising."""
    deadline = time.monotonic() + 30
    while ctx.alive:  # a child that exits by itself may take a moment
        assert time.monotonic() < deadline, 'the child did not end'
        time.sleep(0.01)
    termination = ctx.termination
    assert termination['pid'] == pid
    for value in termination.values():
        if isinstance(value, str):
            value.encode('utf-8')  # a real str: no lone surrogates either
    ctx.terminate()
    assert pid not in child_pids()


def test_a_crash_report_and_output_that_are_not_utf8_are_shown_with_replacement_characters(
        new_context):
    ctx = new_context(stdout='capture', stderr='capture')
    bad = ctx.load_module('isofix_bad_text')
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        bad.crash_with_bad_report()
    error = caught.value
    assert error.exit_code == 3
    assert 'Fatal Python error: ' + REPLACED in error.child_traceback
    assert error.stdout_tail == 'out ' + REPLACED
    assert error.stderr_tail == 'err ' + REPLACED
    assert REPLACED in str(error)
    assert ctx.termination['child_traceback'] == error.child_traceback
    assert ctx.captured_output('stderr') == 'err ' + REPLACED
    assert_every_ending_api_answers(ctx, pid)
    with pytest.raises(ClientStateError):
        bad.crash_with_bad_report()


def test_output_that_is_not_utf8_is_read_with_replacement_characters_while_the_child_runs(
        new_context):
    ctx = new_context(stdout='capture', stderr='capture')
    bad = ctx.load_module('isofix_bad_text')
    assert bad.write_bad_output() is True
    assert ctx.captured_output('stdout') == 'out ' + REPLACED
    assert ctx.captured_output('stderr') == 'err ' + REPLACED
    assert ctx.alive


def test_a_child_that_dies_between_calls_with_a_report_that_is_not_utf8_is_seen_ending(
        new_context):
    ctx = new_context(stdout='capture', stderr='capture')
    bad = ctx.load_module('isofix_bad_text')
    pid = ctx.pid
    assert bad.crash_with_bad_report_soon() is True
    deadline = time.monotonic() + 30
    while ctx.alive:  # ctx.alive is what reaps it and reads its report
        assert time.monotonic() < deadline, 'the child did not die'
        time.sleep(0.01)
    termination = ctx.termination
    assert termination['exit_code'] == 3
    assert REPLACED in termination['child_traceback']
    assert termination['stderr_tail'] == 'err ' + REPLACED
    assert_every_ending_api_answers(ctx, pid)


def test_a_call_whose_description_cuts_a_character_in_its_arguments_still_reports_the_ending(
        ctx):
    bad = ctx.load_module('isofix_bad_text')
    pid = ctx.pid
    with pytest.raises(ProcessTerminationError) as caught:
        bad.die('\u20ac' * 40)  # its repr is cut after 57 bytes, inside a three-byte character
    assert caught.value.exit_code == 5
    assert caught.value.call.startswith("isofix_bad_text.die('\u20ac")
    assert_every_ending_api_answers(ctx, pid)


# Answers forged by hand: the `capnp` tool encodes them with an ASCII placeholder where the
# undecodable bytes go, then the placeholder is replaced (same length: the frame stays valid).

def forged_answer(call_id, body):
    capnp = shutil.which('capnp')
    if capnp is None:
        pytest.skip('the capnp tool (Debian package capnproto) is needed to write a message '
                    'by hand')
    text = f'(response = (callId = {call_id}, {body}))'
    encoded = subprocess.run([capnp, 'encode', str(SCHEMA), 'Message'], input=text.encode(),
                             capture_output=True, timeout=60)
    assert encoded.returncode == 0, encoded.stderr.decode()
    assert PLACEHOLDER.encode() in encoded.stdout
    return encoded.stdout.replace(PLACEHOLDER.encode(), BAD)


def send_forged_answer(ctx, body):
    """Calls the child, which answers with the forged `body` and dies; returns the outcome of
    the call (its value, or the exception it raised)."""
    bad = ctx.load_module('isofix_bad_text')
    answer_then_exit = bad.answer_then_exit  # fetched now, so the call is the next request
    call_id = ctx._connection.frame_counts()['sent']['request'] + 1
    frame = forged_answer(call_id, body)
    try:
        return answer_then_exit(frame)
    except Exception as error:  # what the parent made of the forged answer
        return error


def test_an_exception_whose_class_message_and_traceback_are_not_utf8_is_raised_readably(ctx):
    pid = ctx.ensure_started().pid
    bad_class = (f'(ref = (id = 901, typeId = 902, classInfo = (name = "Bad{PLACEHOLDER}", '
                 f'qualname = "Bad{PLACEHOLDER}", module = "mod{PLACEHOLDER}", '
                 f'bases = [(builtin = "ValueError")], doc = "doc{PLACEHOLDER}")))')
    bad_object = (f'(ref = (id = 903, typeId = 904, typeInfo = (name = "Bad{PLACEHOLDER}", '
                  f'module = "mod{PLACEHOLDER}", specials = [], flags = 4)))')
    error = send_forged_answer(
        ctx, f'error = (type = {bad_class}, args = [], message = "msg{PLACEHOLDER}", '
             f'traceback = "tb{PLACEHOLDER}", exception = {bad_object})')
    assert isinstance(error, ValueError), repr(error)
    assert type(error).__name__ == 'Bad' + REPLACED
    assert type(error).__module__ == 'mod' + REPLACED
    assert type(error).__doc__ == 'doc' + REPLACED
    assert str(error) == 'msg' + REPLACED
    assert str(error.__cause__).strip() == 'tb' + REPLACED
    assert_every_ending_api_answers(ctx, pid)


def test_a_value_whose_type_names_are_not_utf8_arrives_as_a_proxy(ctx):
    pid = ctx.ensure_started().pid
    proxy = send_forged_answer(
        ctx, f'value = (ref = (id = 905, typeId = 906, typeInfo = (name = "T{PLACEHOLDER}", '
             f'module = "m{PLACEHOLDER}", specials = ["__call__"])))')
    assert type(proxy).__qualname__ == 'T' + REPLACED
    assert type(proxy).__module__ == 'isolated.m' + REPLACED
    del proxy
    assert_every_ending_api_answers(ctx, pid)


def test_a_protocol_error_quoting_bytes_that_are_not_utf8_is_a_readable_termination(ctx):
    pid = ctx.ensure_started().pid
    error = send_forged_answer(ctx, f'value = (builtin = "x{PLACEHOLDER}")')
    assert isinstance(error, ProtocolError), repr(error)
    assert 'unknown builtin' in str(error)
    assert REPLACED in str(error)
    assert REPLACED in error.detail
    assert_every_ending_api_answers(ctx, pid)
