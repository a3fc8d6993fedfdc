"""A realistic workload for the recorder: what users do with isolated modules (values of every
kind both ways, attributes, calls with keyword arguments, iteration, errors, callbacks into the
parent, large bytes, byvalue)."""

import fractions


def run(ctx, load):
    """Exercises the child of `ctx`; `load(name)` imports a module there."""
    json = load('json')
    collections = load('collections')
    math = load('math')
    builtins = load('builtins')
    fractions_remote = load('fractions')
    assert json.loads(json.dumps({'a': [1, 2.5, None, True], 'b': 'h\u00e9'})) == {
        'a': [1, 2.5, None, True], 'b': 'h\u00e9'}
    counter = collections.Counter('abracadabra')
    counter.most_common(2)
    len(counter)
    'a' in counter
    list(counter.items())
    deque = collections.deque(range(50), maxlen=40)
    deque.append(b'\x00\xff')
    deque.rotate(3)
    list(iter(deque))
    math.gcd(2 ** 80 + 1, -(2 ** 70))
    math.fsum([0.1] * 10)
    builtins.complex(1.5, -2)
    builtins.slice(1, 10, 2)
    builtins.frozenset({1, 'x', (2, 3)})
    builtins.bytearray(b'abc')
    builtins.sorted({3: 'c', 1: 'a'}, key=lambda k: -k)  # a callback into the parent
    builtins.list(map(lambda x: x * 2, [1, 2, 3]))
    builtins.bytes(100_000)   # a span from the child
    builtins.bytes(1_200_000)  # a large one
    f = fractions_remote.Fraction(3, 7)
    repr(f), str(f), f + 1, f < 1, hash(f), format(f, '')
    try:
        json.loads('{not json')
    except ValueError:
        pass
    try:
        builtins.int('x')
    except ValueError:
        pass
    try:
        collections.OrderedDict().popitem()
    except KeyError:
        pass
    try:
        getattr(math, 'no_such_attribute')
    except AttributeError:
        pass
    try:
        next(iter(builtins.list()))
    except StopIteration:
        pass
    from process_isolation import byvalue
    byvalue(fractions_remote.Fraction(5, 11)) == fractions.Fraction(5, 11)
    byvalue(collections.OrderedDict(a=1))
    dir(math)
    ns = builtins.dict(x=1)
    ns['y'] = [1, 2]
    del ns['x']
    for key in ns:
        pass
