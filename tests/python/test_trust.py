"""Tests of what a child may not do to the parent: copy parent objects by value, or ask the
parent to import a module or call a function by name, whether it is confined or not. A confined
child (IsolationContext(_deny_private=True), which a sandboxed context sets) may also not read or
set private attributes of the parent objects passed to it (an AttributeError saying why); an
unconfined one may, as local code would (DESIGN.md, "Trust"). A refusal is an error in the
child, which surfaces in the parent."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from process_isolation import context as context_module

SCHEMA = Path(__file__).resolve().parents[2] / 'protocol' / 'isolation.capnp'
CAPNP = shutil.which('capnp')
TOOL_SECONDS = 60


class Holder:
    public = 'visible'

    def __init__(self):
        self._secret = 'hidden'


def parent_function():
    return 'parent'


@pytest.fixture(params=[False, True], ids=['unconfined', 'confined'])
def any_ctx(request, new_context):
    """A context whose child is unconfined, then one whose child is confined."""
    return new_context(_deny_private=request.param)


@pytest.fixture
def snoop(ctx):
    return ctx.load_module('isofix_snoop')


@pytest.fixture
def confined_snoop(new_context):
    return new_context(_deny_private=True).load_module('isofix_snoop')


def test_the_child_reads_public_attributes_of_a_parent_object(snoop, confined_snoop):
    assert snoop.read_attribute(Holder(), 'public') == 'visible'
    assert confined_snoop.read_attribute(Holder(), 'public') == 'visible'


def test_an_unconfined_child_reads_private_attributes_of_a_parent_object(snoop):
    assert snoop.read_attribute(Holder(), '_secret') == 'hidden'
    assert snoop.read_attribute(Holder(), '__dict__') == {'_secret': 'hidden'}
    assert snoop.try_read_attribute(Holder(), '_Holder__private')[0] == 'AttributeError'


@pytest.mark.parametrize('name', ['_secret', '__dict__', '_Holder__private'])
def test_a_confined_child_cannot_read_private_attributes_of_a_parent_object(confined_snoop,
                                                                            name):
    with pytest.raises(AttributeError, match='confined child may not use the private attribute'
                       ) as caught:
        confined_snoop.read_attribute(Holder(), name)
    assert 'read_attribute' in caught.value.__cause__.text  # raised in the child, came back
    kind, message = confined_snoop.try_read_attribute(Holder(), name)
    assert kind == 'AttributeError'
    assert name in message


def test_a_confined_child_cannot_reach_a_parent_functions_globals(snoop, confined_snoop):
    with pytest.raises(AttributeError, match='private attribute'):
        confined_snoop.read_attribute(parent_function, '__globals__')
    with pytest.raises(AttributeError, match='private attribute'):
        confined_snoop.read_attribute(parent_function, '__code__')
    assert confined_snoop.read_attribute(parent_function, '__call__')() == 'parent'
    # Unconfined, the child can do what local code can.
    assert snoop.read_attribute(parent_function, '__code__').co_name == 'parent_function'


def test_a_confined_child_cannot_set_or_delete_private_attributes_of_a_parent_object(
        snoop, confined_snoop):
    holder = Holder()
    with pytest.raises(AttributeError, match='private attribute'):
        confined_snoop.set_attribute(holder, '_secret', 'overwritten')
    assert holder._secret == 'hidden'
    confined_snoop.set_attribute(holder, 'public', 'changed by the child')
    assert holder.public == 'changed by the child'
    snoop.set_attribute(holder, '_secret', 'changed by an unconfined child')
    assert holder._secret == 'changed by an unconfined child'


def test_the_child_cannot_copy_a_parent_object_by_value(any_ctx):
    with pytest.raises(PermissionError, match='by value'):
        any_ctx.load_module('isofix_snoop').copy_by_value(Holder())


def capnp_tool(command, data):
    if CAPNP is None:
        pytest.skip('the capnp tool (Debian package capnproto) is needed to write a request '
                    'by hand')
    result = subprocess.run([CAPNP, command, *(['--short'] if command == 'decode' else []),
                             str(SCHEMA), 'Message'], input=data, capture_output=True,
                            timeout=TOOL_SECONDS)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def send_hostile_request(context, request):
    """Has the child write `request` (capnp text of a Request) to the parent itself; returns the
    parent's response, decoded to capnp text."""
    raw = context.load_module('isofix_raw_request')
    frame = capnp_tool('encode', f'(request = {request})'.encode())
    frames = raw.exchange(frame)
    return capnp_tool('decode', frames[-1]).decode()


def test_the_child_cannot_make_the_parent_import_a_module(any_ctx):
    ctx = any_ctx
    assert 'colorsys' not in sys.modules
    answer = send_hostile_request(
        ctx, '(callId = 900, op = import, name = "colorsys", args = [(list = [])])')
    assert answer.startswith('(response = (callId = 900, error = ')
    assert 'builtin = "PermissionError"' in answer
    assert 'may not import a module in the parent' in answer
    assert 'colorsys' not in sys.modules
    assert ctx.load_module('isofix_basic').add(1, 2) == 3  # both ends still agree


def test_the_child_cannot_make_the_parent_call_a_function_by_name(any_ctx, tmp_path):
    ctx = any_ctx
    canary = tmp_path / 'made by the child'
    answer = send_hostile_request(
        ctx, f'(callId = 901, op = callByName, name = "os:mkdir", '
             f'args = [(str = {json.dumps(str(canary))})])')
    assert answer.startswith('(response = (callId = 901, error = ')
    assert 'builtin = "PermissionError"' in answer
    assert 'may not call a parent function by name' in answer
    assert not canary.exists()
    assert ctx.load_module('isofix_basic').add(1, 2) == 3


@pytest.fixture
def fork_server():
    """The process-wide fork server, started before the test's own fd accounting and stopped
    after it, so the leak checks see nothing of it."""
    context_module._get_fork_server(60.0)
    yield
    context_module._stop_fork_server()


@pytest.mark.parametrize('start_method', ['fork', 'forkserver', 'spawn'])
def test_a_confined_child_is_refused_private_attributes_whatever_its_start_method(
        fork_server, new_context, start_method):
    snoop = new_context(_deny_private=True, start_method=start_method).load_module('isofix_snoop')
    kind, message = snoop.try_read_attribute(Holder(), '_secret')
    assert kind == 'AttributeError' and 'confined child' in message
    unconfined = new_context(start_method=start_method).load_module('isofix_snoop')
    assert unconfined.read_attribute(Holder(), '_secret') == 'hidden'
