"""A parent whose hostile child forges every request op against every kind of parent object it
holds (and id 0, and an id the parent never exported), with missing, surplus and wrong-typed
arguments. Run as a script by test_forged_requests.py, so that a crash kills this process, not
pytest. Arguments: the transport (shm or socket), and `confined` for a child that may not use
private attributes of parent objects (IsolationContext(_deny_private=True)) or `unconfined`.
Prints one JSON summary line: how many answers were values or errors of each class, samples of
each, the refusals by what they refused, and what the parent did afterwards.

Messages are written and read with the `capnp` tool (capnp encode / decode of the schema), in
one run for each batch of requests."""

import collections
import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = HERE.parents[1] / 'protocol' / 'isolation.capnp'
FIXTURES = HERE / 'fixtures'
sys.path.insert(0, str(FIXTURES))

from process_isolation import IsolationContext  # noqa: E402

OPS = ['import', 'getattr', 'setattr', 'delattr', 'call', 'callMethod', 'repr', 'str', 'dir',
       'len', 'getitem', 'setitem', 'delitem', 'contains', 'iter', 'next', 'compare', 'bool',
       'hash', 'special', 'isinstance', 'issubclass', 'byvalue', 'callByName', 'format',
       'iterBatch', 'fetchBuffer']
NAMES = {
    'import': ['json'],
    'getattr': ['attr', 'no_such_name', '_private', '__dict__', '__class__'],
    'setattr': ['attr', '_private', '__class__'],
    'delattr': ['attr', 'no_such_name', '__dict__'],
    'callMethod': ['method', 'no_such_name'],
    'compare': ['__eq__', '__lt__', '__bogus__'],
    'special': ['__add__', '__len__', '__exit__', '__bogus__'],
    'callByName': ['os:getpid'],
}
UNKNOWN_ID = 10**12


class Plain:
    attr = 'class attribute'

    def method(self, *args, **kwargs):
        return 'method'


class Failure(Exception):
    pass


def function(*args, **kwargs):
    return 'function'


def generator():
    yield from range(1000)


class MyList(list):
    pass


class MyDict(dict):
    pass


def targets():
    """One parent object of each kind, by what it is."""
    return {
        'module': types.ModuleType('forged_requests_target'),
        'function': function,
        'builtin function': math.hypot,
        'class': Plain,
        'instance': Plain(),
        'list': MyList([1, 2, 3]),
        'dict': MyDict(key='value'),
        'iterator': iter(list(range(1000))),
        'generator': generator(),
        'exception instance': Failure('boom'),
        'exception class': Failure,
    }


def capnp(command, data):
    extra = ['--short'] if command == 'decode' else []
    done = subprocess.run(['capnp', command, *extra, str(SCHEMA), 'Message'], input=data,
                          capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f'capnp {command} failed: {done.stderr.decode()[-2000:]}')
    return done.stdout


def unescape(text):
    """The characters of a capnp text literal's contents."""
    simple = {'n': '\n', 't': '\t', 'r': '\r', '0': '\0', '\\': '\\', '"': '"', "'": "'"}
    return re.sub(r'\\(x[0-9a-fA-F]{2}|.)', lambda m: chr(int(m.group(1)[1:], 16))
                  if m.group(1)[0] == 'x' else simple.get(m.group(1), m.group(1)), text)


ANSWER = re.compile(r'\(response = \(callId = (\d+), (value|error) = (.*)')
STR_VALUE = re.compile(r'\(str = "((?:[^"\\]|\\.)*)"')
ERROR = re.compile(r'\(type = \((?:builtin = "(\w+)"|ref = .*?)[,)].*?message = "((?:[^"\\]|\\.)*)"')


def exchange(forger, requests):
    """Sends the requests (capnp text of Request) one at a time; returns {callId: answer}."""
    stream = capnp('encode', ''.join(f'(request = {r})\n' for r in requests).encode())
    answers = {}
    for line in capnp('decode', forger.exchange_each(stream)).decode().splitlines():
        found = ANSWER.match(line)
        if found is None:
            raise AssertionError(f'not a response: {line[:300]}')
        call_id, kind, rest = int(found.group(1)), found.group(2), found.group(3)
        if kind == 'value':
            text = STR_VALUE.match(rest)
            answers[call_id] = ['value', unescape(text.group(1)) if text else rest[:80]]
        else:
            error = ERROR.match(rest)
            answers[call_id] = (['error', error.group(1) or 'mirrored', unescape(error.group(2))]
                                if error else ['error', '?', rest[:300]])
    return answers


def argument_lists(other_id, iterator_id):
    """Arguments of every shape: none, one of each type, too many, a parent object coming home
    (`back`), one the parent never had, an iterator with unread items it never sent."""
    return [
        '',
        ', args = [(int = 1)]',
        ', args = [(str = "x")]',
        ', args = [(none = void), (none = void), (none = void)]',
        f', args = [(back = {other_id})]',
        ', args = [(int = -1), (bigInt = 0x"ffffffffffffffffffff")], '
        'kwargs = [(name = "k", value = (list = [(int = 1)]))]',
        f', args = [(back = {UNKNOWN_ID})]',
        f', args = [(back = {iterator_id}, unread = 3)]',
        ', args = [(int = 4096), (int = 16)]',
    ]


def refusal(message):
    """What a refusal refused, without the name it quoted: 'an isolated child may not import a
    module in the parent', 'a confined child may not use the private attribute', ...; or None
    for an error that is no refusal."""
    found = re.match(r"(an isolated|a confined) child may not [^'(]*", message)
    return found.group(0).strip() if found else None


def main(transport, confined):
    ctx = IsolationContext(paths=[str(FIXTURES)], timeout=120, transport=transport,
                           _deny_private=confined)
    forger = ctx.load_module('isofix_forger')
    objects = targets()
    forger.hold(*objects.values())
    # Which id is which: the parent's export ids are small numbers, and repr tells them apart.
    answers = exchange(forger, [f'(callId = {i}, op = repr, target = {i})' for i in range(1, 200)])
    by_repr = {repr(obj): kind for kind, obj in objects.items()}
    ids = {}  # id -> kind
    for call_id, answer in answers.items():
        if answer[0] == 'value':
            ids[call_id] = by_repr.get(answer[1], f'type or other: {answer[1]}')
    found = {kind for kind in ids.values()}
    missing = [kind for kind in objects if kind not in found]
    other_id = next(i for i, kind in ids.items() if kind == 'instance')
    iterator_id = next(i for i, kind in ids.items() if kind == 'iterator')
    ids[0] = 'id 0'
    ids[UNKNOWN_ID] = 'unknown id'
    summary = collections.Counter()
    refusals = collections.Counter()
    samples = collections.defaultdict(list)  # error class -> some of its (request, message)
    unanswered = []
    unclear = []
    call_id = 1000
    for target, kind in ids.items():
        requests = {}
        for op in OPS:
            for name in NAMES.get(op, ['']):
                for args in argument_lists(other_id, iterator_id):
                    call_id += 1
                    requests[call_id] = (f'(callId = {call_id}, op = {op}, target = {target}, '
                                         f'name = "{name}"{args})')
        answers = exchange(forger, list(requests.values()))
        for number, request in requests.items():
            answer = answers.get(number)
            if answer is None:
                unanswered.append(request)
            elif answer[0] == 'error' and (answer[1] == '?' or not answer[2]) and \
                    answer[1] not in ('StopIteration', 'KeyError'):
                unclear.append([request, answer])
            else:
                what = answer[0] if answer[0] == 'value' else answer[1]
                summary[what] += 1
                refused = refusal(answer[2]) if answer[0] == 'error' else None
                if refused:
                    refusals[f'{what}: {refused}'] += 1
                if len(samples[what]) < 40:
                    samples[what].append([request, answer[-1][:200]])
    # The parent goes on: plain calls, and a callback.
    after = [ctx.load_module('isofix_basic').add(2, 3), forger.call(lambda x: x * 2, 21),
             ctx.alive]
    print(json.dumps({'kinds': sorted(found), 'missing': missing, 'summary': summary,
                      'samples': samples, 'refusals': refusals,
                      'unanswered': unanswered[:20], 'unclear': unclear[:20], 'after': after}))
    ctx.terminate()


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'shm',
         len(sys.argv) > 2 and sys.argv[2] == 'confined')
