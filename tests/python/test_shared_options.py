"""env, inherit_env, paths and inherit_paths mean the same for IsolationContext as for Session."""

import os
import sys

import pytest

from process_isolation import Session

from conftest import FIXTURES


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_env_wins_over_the_inherited_environment_in_the_child_as_in_a_session(
        new_context, monkeypatch, method):
    monkeypatch.setenv('PI_SHARED_KEEP', 'inherited')
    monkeypatch.setenv('PI_SHARED_OVERRIDE', 'inherited')
    env = {'PI_SHARED_OVERRIDE': 'mine', 'PI_SHARED_NEW': 'new'}
    with Session(env=env):
        in_session = {k: os.environ.get(k) for k in
                      ('PI_SHARED_KEEP', 'PI_SHARED_OVERRIDE', 'PI_SHARED_NEW')}
    ctx = new_context(start_method=method, env=env)
    in_child = {k: ctx.call(os.getenv, k) for k in in_session}
    assert in_child == in_session == {'PI_SHARED_KEEP': 'inherited',
                                      'PI_SHARED_OVERRIDE': 'mine', 'PI_SHARED_NEW': 'new'}


def test_without_env_a_forked_child_has_the_parents_environment_as_a_session_does(
        new_context, monkeypatch):
    # (A spawned child starts from the C-level environment instead, which os.environ of a
    # process may not mirror exactly.)
    monkeypatch.setenv('PI_SHARED_KEEP', 'inherited')
    monkeypatch.delenv('PI_SHARED_ABSENT', raising=False)
    with Session():
        in_session = dict(os.environ)
    ctx = new_context()
    in_child = ctx.call(dict, ctx.load_module('os').environ)
    assert in_child == in_session == dict(os.environ)
    assert in_child['PI_SHARED_KEEP'] == 'inherited' and 'PI_SHARED_ABSENT' not in in_child


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_inherit_env_false_leaves_only_env_in_the_child_as_in_a_session(new_context, method):
    env = {'PI_SHARED_ONLY': 'this'}
    with Session(env=env, inherit_env=False):
        in_session = dict(os.environ)
    ctx = new_context(start_method=method, env=env, inherit_env=False)
    in_child = ctx.call(dict, ctx.load_module('os').environ)
    assert in_child == in_session == env


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_paths_come_first_and_inherit_paths_false_keeps_only_the_standard_library(
        new_context, tmp_path, method):
    extra = str(tmp_path)
    with Session(paths=[extra], inherit_paths=False):
        session_path = list(sys.path)
    ctx = new_context(start_method=method, paths=[extra], inherit_paths=False)
    child_path = ctx.call(list, ctx.load_module('sys').path)
    assert child_path[0] == session_path[0] == extra
    assert not any('site-packages' in entry for entry in child_path)
    # The child still imports the standard library.
    assert ctx.load_module('json').dumps([1]) == '[1]'
    ctx2 = new_context(start_method=method, paths=[extra])
    inherited = ctx2.call(list, ctx2.load_module('sys').path)
    assert inherited[0] == extra and any('site-packages' in entry for entry in inherited)


def test_both_refuse_the_same_malformed_env():
    from process_isolation import IsolationContext
    for bad in ({'A': 1}, {1: 'a'}):
        with pytest.raises(TypeError):
            Session(env=bad)
        with pytest.raises(TypeError):
            IsolationContext(env=bad)
