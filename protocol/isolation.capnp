# The process_isolation wire protocol.
#
# Two endpoints, the parent and the child, exchange `Message`s over one SOCK_STREAM Unix socket,
# each message in the standard Cap'n Proto stream framing (see framing.h for the limits a reader
# enforces before it allocates). The protocol is symmetric: either side may send a `Request`
# while it is waiting for the answer to its own, and the other side serves it first (a callback
# nests inside the call that caused it). Requests are answered strictly last-in first-out.
#
# Object ids. Each side keeps an export table of the objects it has handed out by reference.
# An id is meaningful only in the table of the side that exported it: a `Value.ref` carries an
# id of the *sender's* table, a `Value.back` and `Request.target` an id of the *receiver's*.
# The receiver counts how many times it has been sent each id and gives the count back in a
# `Release` when its last proxy for that id is gone; the exporter drops the object when its own
# count of sends reaches zero. Id 0 is never used.
#
# Trust. The parent trusts nothing the child sends: every field below is validated where it is
# used, and an invalid one is a protocol error that ends the child. `Text` fields from the child
# (messages, tracebacks, names, doc strings) may hold any bytes: the parent shows ill-formed
# UTF-8 in them as U+FFFD (runtime/peer_text.h) rather than refusing the message.

@0xa1c8111f51d55767;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("pi::wire");

struct Message {
  # One frame on the wire.

  fdCount @5 :UInt16;
  # How many file descriptors travel with this frame (SCM_RIGHTS on its first byte). The
  # receiver takes exactly this many from what arrived, in order, and closes any the message
  # does not use; `Buffer.fd` indexes them.

  decodedFrames @7 :UInt32;
  # How many of the receiver's frames the sender had completely decoded when it wrote this one,
  # counting every frame from the first (setup or hello, releases and goodbye included), modulo
  # 2^32: the largest n such that the sender had finished decoding each of the receiver's first n
  # frames. A frame counts as decoded once its values are made (a request's arguments, before its
  # op runs; a response's value), so a frame written while one of the receiver's frames was still
  # being decoded (a `fetchBuffer`, or a callback that decoding a dict key ran) leaves that frame
  # out. The receiver lets go of the spans (`Buffer.address`) it sent in its frames up to this
  # count: the sender will read no more of them. A child that claims more frames than the parent
  # sent breaks the protocol.

  union {
    request @0 :Request;
    # Ask the peer to do something with one of its objects. The peer answers with a `response`
    # carrying the same `callId`, after serving any requests it sends back in the meantime.

    response @1 :Response;
    # The answer to the innermost request the receiver has outstanding.

    release @2 :Release;
    # The sender dropped its last proxies for these ids. Never answered. Sent right after the
    # next request or response, in the same write, so releases never cost a round trip; after,
    # not before, so the receiver has resolved every id that message names before it forgets any.

    hello @3 :Hello;
    # The child's first message, sent once it is ready to serve. The parent waits for it (with a
    # deadline) before it counts the child as started.

    goodbye @4 :Void;
    # The parent asks the child to stop serving and exit with status 0. Never answered.

    setup @6 :Setup;
    # The parent's first message, on the socket, written as soon as the child exists. The child
    # reads it before anything else, applies it, and only then says `hello`.
  }
}

struct Setup {
  # How the connection carries its frames from here on. Sent once, by the parent.

  sharedRings @0 :Bool;
  # When true, the frame carries one fd: a memfd holding two byte rings (see
  # runtime/shared_rings.h and docs/protocol.md, "Shared memory"). Both sides switch to the
  # rings right after this frame: the parent after writing it, the child after reading it. From
  # then on the socket carries only wake-up bytes and fd carriers. When false, everything stays
  # on the socket.

  parentPid @1 :Int32;
  # The parent's process id (its getpid()), offered so the child can copy large values the
  # parent leaves in its own memory (`Buffer.address`) with process_vm_readv. Children of every
  # start method (fork, forkserver, spawn) share the parent's pid namespace, so this names the
  # parent there. 0: the parent sends no spans on this connection (it was told not to, as a
  # sandboxed context must: see docs/protocol.md), and the other probe fields are 0 too, so the
  # child learns nothing of the parent's memory layout.

  probeAddress @2 :UInt64;
  # Where, in the parent's memory, 8 bytes holding `probeToken` stay for the life of the
  # connection. The child reads them once, before `hello`, with one process_vm_readv of
  # `parentPid`: that the read works and finds the token tells it both that the OS lets it read
  # the parent and that `parentPid` names the parent.

  probeToken @3 :UInt64;
  # A random value, made for this connection, that the child must find at `probeAddress`.
}

struct Hello {
  pid @0 :Int32;
  # The child's process id as the child sees it (differs from the parent's view in a pid
  # namespace). Informational only.

  pythonVersion @1 :Text;
  # `sys.version` in the child. Informational only.

  readsParentMemory @2 :Bool;
  # True when the setup offered the parent's memory (`Setup.parentPid` non-zero) and the child's
  # probe read `probeToken` there. Only then does the parent send spans (`Buffer.address`) of its
  # own memory to this child. False when it was not offered or the OS refused the read (EPERM:
  # the parent is not dumpable, the child lacks the right to read it, a Yama ptrace scope
  # above 0); the parent then sends large values in memfds, as before.
}

struct Request {
  callId @0 :UInt64;
  # Chosen by the sender, unique among its outstanding requests; echoed in the `Response`.

  op @1 :Op;
  # What to do. The receiver answers an op it does not know with a `NotImplementedError`.

  target @2 :UInt64;
  # An id in the receiver's export table: the object the op applies to. 0 for ops that have no
  # target (`import`, `callByName`). An unknown id is answered with an error, never trusted.

  name @3 :Text;
  # The op's name argument: an attribute name, a special method name (`__add__`), a dotted
  # module name for `import`, or `module:qualname` for `callByName`.

  args @4 :List(Value);
  # Positional arguments, decoded by the receiver before the op runs.

  kwargs @5 :List(NamedValue);
  # Keyword arguments, for the call ops.
}

enum Op {
  # Each op's meaning, in terms of the receiver's Python objects (`t` is the target object,
  # `a` the decoded args, `k` the decoded kwargs). The result is the response's value.

  import @0;       # importlib.import_module(name), after prepending a[0] (a list of str) to sys.path
  getattr @1;      # getattr(t, name)
  setattr @2;      # setattr(t, name, a[0]) -> None
  delattr @3;      # delattr(t, name) -> None
  call @4;         # t(*a, **k)
  callMethod @5;   # getattr(t, name)(*a, **k), in one round trip
  repr @6;         # repr(t) -> str
  str @7;          # str(t) -> str
  dir @8;          # dir(t) -> list of str
  len @9;          # len(t) -> int
  getitem @10;     # t[a[0]]
  setitem @11;     # t[a[0]] = a[1] -> None
  delitem @12;     # del t[a[0]] -> None
  contains @13;    # a[0] in t -> bool
  iter @14;        # iter(t)
  next @15;        # next(t); StopIteration crosses as an error
  compare @16;     # the rich comparison `name` (__lt__, __le__, __eq__, __ne__, __gt__, __ge__)
                   # of t with a[0], by type(t)'s own comparison slot only: NotImplemented when
                   # it declines (or has none). The sender then tries the reflected method and
                   # the default locally, as Python does; the receiver never tries a[0]'s method,
                   # which for the sender's object would send the comparison back (ping-pong)
  bool @17;        # bool(t)
  hash @18;        # hash(t) -> int
  special @19;     # type(t).name(t, *a): a special method looked up on the type, as the
                   # interpreter does; a NotImplemented result crosses as builtin "NotImplemented"
  isinstance @20;  # isinstance(a[0], t) -> bool (t is a class)
  issubclass @21;  # issubclass(a[0], t) -> bool (t is a class)
  byvalue @22;     # pickle.dumps(t) -> Value.pickled
  callByName @23;  # resolve name "module:qualname" in the receiver, call it with (*a, **k)
  format @24;      # format(t, a[0]) -> str
  iterBatch @25;   # next(t) up to a[0] times -> list; shorter than asked only at the end
  fetchBuffer @26; # sent while the sender decodes a message of the receiver's that holds a
                   # `Buffer.address` it could not read (the parent reading the child: EPERM; the
                   # child reading the parent: any failure, EPERM or EFAULT): asks for the payload
                   # at address a[0] (int) of size a[1] (int) again. The receiver answers with
                   # that buffer as a value (a memfd, or inline when small) and from then on sends
                   # no more addresses on this connection. It answers only for a span it sent and
                   # still holds (one of a frame the asker has not yet counted in
                   # `Message.decodedFrames`, which this request does not count): exactly that
                   # address and size, or a PermissionError. So a child can get from the parent
                   # only bytes the parent sent it.
}

struct Response {
  callId @0 :UInt64;
  # The `callId` of the request this answers.

  union {
    value @1 :Value;
    # The op's result.

    error @2 :Error;
    # The op raised.
  }
}

struct Error {
  # A Python exception raised by an op, to be raised again on the requesting side.

  type @0 :Value;
  # The exception's class: a `builtin` for the interpreter's own exception classes, a `ref` (with
  # `classInfo`) for any other class, or a `back` for one of the receiver's own classes.

  args @1 :List(Value);
  # The exception's `args`, by value where possible.

  message @2 :Text;
  # str(exception), for the report when the class or the args cannot be rebuilt.

  traceback @3 :Text;
  # The formatted traceback in the raising process, attached as the `__cause__` of the
  # re-raised exception. Empty for exceptions used for control flow (StopIteration).

  exception @4 :Value;
  # The exception object itself, by reference, so its other attributes can be read. `none`
  # when it is not worth the export (builtin exceptions).
}

struct Release {
  ids @0 :List(UInt64);
  # Ids of the *receiver's* export table that the sender no longer holds a proxy for.

  counts @1 :List(UInt32);
  # For each id, how many times the sender had been sent it. The receiver subtracts this from
  # its own count of sends and forgets the object when that count reaches zero. A count larger
  # than the receiver's own is a protocol error.
}

struct Value {
  # A Python value. Exact builtin kinds cross by value (a subclass of a builtin crosses by
  # reference), and so do the exact standard value types of `StandardValue`; everything else
  # crosses by reference.

  unread @21 :UInt32;
  # With `back` of an iterator the receiver fetched items from in batches (`iterBatch`): how
  # many items of its last batch the sender had not used yet. The receiver puts them back in
  # front (its object comes home as a chain of those items and the iterator), so none is lost.

  union {
    none @0 :Void;
    bool @1 :Bool;
    int @2 :Int64;            # an int that fits in 64 bits
    bigInt @3 :Data;          # any other int: two's complement, little-endian, minimal length
    float @4 :Float64;
    complex @5 :Complex;
    str @6 :Data;             # UTF-8, lone surrogates encoded as themselves ('surrogatepass');
                              # Data rather than Text because a str may contain NUL
    bytes @7 :Data;
    bytearray @8 :Data;
    list @9 :List(Value);
    tuple @10 :List(Value);
    dict @11 :List(Entry);    # insertion order kept
    set @12 :List(Value);
    frozenset @13 :List(Value);
    ref @14 :Ref;             # an object the sender owns; the receiver makes (or reuses) a proxy
    back @15 :UInt64;         # an id in the receiver's export table: its own object, coming home
                              # (see `unread` for an iterator)
    builtin @16 :Text;        # a class or singleton of the `builtins` module, by name, from a
                              # fixed table (int, KeyError, NotImplemented, Ellipsis, ...)
    pickled @17 :Data;        # pickle bytes; sent only in answer to `byvalue`
    slice @18 :Slice;         # a slice object (start, stop, step), so item access with slices
                              # crosses by value
    exception @19 :ExceptionValue;
                              # an instance of a builtin exception class, by value (class and
                              # args; its traceback and chained exceptions stay behind)
    buffer @20 :Buffer;       # a large bytes or bytearray (or a byvalue pickle buffer), out of
                              # band: in a sealed memfd, or left in the sender's memory
    standard @22 :StandardValue;
                              # an immutable value of a standard type (datetime, Decimal, UUID,
                              # an enum member, a numpy scalar, ...), rebuilt from its fields
  }
}

struct StandardValue {
  # An immutable value of a standard type, of exactly that type (an instance of a subclass
  # crosses by reference). The receiver rebuilds it from these fields with its own classes,
  # running no code the sender chose, and refuses fields out of range (a protocol error from the
  # child). It finds its classes in its `sys.modules` only, reading dicts, never importing
  # (process_isolation imports datetime, decimal, fractions, uuid and pathlib on both sides).
  # For the last three members, which depend on what the program imported, a receiver without
  # the class (or without numpy) uses `original` instead. See docs/protocol.md.

  union {
    date @0 :Date;                  # datetime.date
    time @1 :Time;                  # datetime.time
    datetime @2 :DateTime;          # datetime.datetime
    timedelta @3 :TimeDelta;        # datetime.timedelta
    timezone @4 :TimeZone;          # datetime.timezone (any other tzinfo crosses by reference,
                                    # and so does a time or datetime that has one)
    decimal @5 :DecimalNumber;      # decimal.Decimal
    fraction @6 :FractionNumber;    # fractions.Fraction
    uuid @7 :Uuid;                  # uuid.UUID
    path @8 :PathValue;             # pathlib.PurePosixPath, PureWindowsPath or PosixPath
    enumMember @9 :EnumMember;      # a member of an enum class
    numpyScalar @10 :NumpyScalar;   # a numpy scalar of a numeric, bool, datetime64 or
                                    # timedelta64 type
    numpyDtype @11 :NumpyDtype;     # a numpy dtype without fields, metadata or objects
  }
}

struct Date {
  year @0 :UInt16;                  # 1 to 9999
  month @1 :UInt8;                  # 1 to 12
  day @2 :UInt8;                    # 1 to the length of that month
}

struct Time {
  hour @0 :UInt8;                   # 0 to 23
  minute @1 :UInt8;                 # 0 to 59
  second @2 :UInt8;                 # 0 to 59
  microsecond @3 :UInt32;           # 0 to 999999
  fold @4 :Bool;                    # the `fold` attribute (which of two equal wall times)
  tzinfo :union {
    naive @5 :Void;                 # tzinfo None
    timezone @6 :TimeZone;          # an exact datetime.timezone
  }
}

struct DateTime {
  date @0 :Date;
  time @1 :Time;
}

struct TimeDelta {
  # As the receiver's timedelta normalizes it: each field in range, none carried over.
  days @0 :Int32;                   # -999999999 to 999999999
  seconds @1 :UInt32;               # 0 to 86399
  microseconds @2 :UInt32;          # 0 to 999999
}

struct TimeZone {
  offsetMicroseconds @0 :Int64;     # the UTC offset, strictly between -24 and 24 hours
  name :union {
    unnamed @1 :Void;               # made without a name: timezone(offset); an offset of 0 is
                                    # then the receiver's own `timezone.utc`
    named @2 :Data;                 # timezone(offset, name): UTF-8 ('surrogatepass', as
                                    # `Value.str`), at most kMaxStandardTextBytes
  }
}

struct DecimalNumber {
  # A Decimal exactly as `as_tuple()` describes it (sign, coefficient digits, exponent), so
  # trailing zeros, the sign of zero and a NaN's payload survive.
  negative @0 :Bool;
  digits @1 :Text;                  # the coefficient (a NaN's payload), ASCII '0'-'9', at most
                                    # kMaxDecimalDigits; empty only for infinities and NaNs
                                    # without a payload
  exponent @2 :Int64;               # for `finite` only: |exponent| at most kMaxDecimalExponent
  kind @3 :Kind;
  enum Kind {
    finite @0;
    infinite @1;
    quietNan @2;
    signalingNan @3;
  }
}

struct FractionNumber {
  # In lowest terms, as Fraction keeps it; the receiver normalizes again (its gcd is bounded by
  # the size limit).
  numerator @0 :Data;               # two's complement, little-endian, minimal length (as
                                    # `Value.bigInt`), at most kMaxFractionBits bits
  denominator @1 :Data;             # the same, and positive
}

struct Uuid {
  bytes @0 :Data;                   # exactly 16: UUID.bytes (big-endian)
  isSafe @1 :Safety;                # UUID.is_safe
  enum Safety {
    unknown @0;
    safe @1;
    unsafe @2;
  }
}

struct PathValue {
  flavour @0 :Flavour;
  enum Flavour {
    purePosix @0;                   # PurePosixPath
    pureWindows @1;                 # PureWindowsPath
    posix @2;                       # PosixPath (a concrete Path): the receiver's own Path
  }
  text @1 :Data;                    # str(path), UTF-8 ('surrogatepass': a path's undecodable
                                    # bytes are lone surrogates), at most kMaxStandardTextBytes
}

struct EnumMember {
  # A canonical member of an enum class (one its class lists by name; a combination of flags
  # crosses by reference). The receiver looks up `module` in its sys.modules (never importing),
  # the class by `qualname` in the module's and classes' own dicts, and `name` in the class's
  # member map: its own member, so `is` works. No code of either class runs.
  module @0 :Text;                  # type(member).__module__
  qualname @1 :Text;                # type(member).__qualname__
  name @2 :Text;                    # member._name_
  original @3 :Value;               # the member by `ref`, what the receiver uses (and otherwise
                                    # releases) when it has no such class or member
}

struct NumpyScalar {
  # Rebuilt only by a receiver that has numpy in its sys.modules; otherwise it uses `original`.
  dtype @0 :Text;                   # dtype.str, from a fixed grammar (byte order, then b1, i or
                                    # u with 1/2/4/8, f with 2/4/8/16, c with 8/16/32, or M8/m8
                                    # with an optional [unit]); never an object dtype
  data @1 :Data;                    # the scalar's bytes, exactly the dtype's itemsize
  original @2 :Value;               # the scalar by `ref` (see EnumMember.original)
}

struct NumpyDtype {
  # Rebuilt only by a receiver that has numpy in its sys.modules; otherwise it uses `original`.
  dtype @0 :Text;                   # dtype.str: the NumpyScalar grammar, or S/U with a length
  original @1 :Value;               # the dtype by `ref` (see EnumMember.original)
}

struct Buffer {
  # The bytes of a large bytes-like value, out of band: not in the frame, so no capnp copy and no
  # socket chunking. The receiver makes a new `bytes` or `bytearray` (as `kind` says) of `size`
  # bytes and copies the payload into it once, from where the union says.

  kind @0 :Kind;
  enum Kind {
    bytes @0;
    bytearray @1;             # also each out-of-band buffer of a `byvalue` pickle
  }
  size @1 :UInt64;            # bytes of payload, at most kMaxBufferBytes; the sizes of all the
                              # buffers of one message at most kMaxMessageBufferBytes. Checked
                              # when the frame arrives, before the receiver allocates anything

  union {
    fd @2 :UInt16;
    # Index into the frame's file descriptors: a memfd the sender wrote once and sealed against
    # shrinking, growing and writing. The receiver refuses an fd that is not a plain memfd (tmpfs)
    # with those seals, exactly `size` long and with no holes (so mapping it can neither fault
    # nor allocate), then maps it and copies it. Either direction, for values of at least
    # kBufferThresholdBytes that do not go as spans (bytearrays; everything when the receiver
    # cannot read the sender's memory).

    address @3 :UInt64;
    # A span: the payload's address in the sender's own memory, where it stays, for values of at
    # least kRemoteSpanThresholdBytes. The receiver copies `size` bytes from there with
    # process_vm_readv (one system call, straight into the new object) while it decodes this
    # message. The sender keeps the memory alive, in place and of that size until the receiver
    # says it has decoded this frame (`Message.decodedFrames`), and then lets it go. A bytearray
    # never goes this way (another thread could resize it): a copy, a memfd, or memory the sender
    # holds a buffer export on (a numpy array's pickle buffer).
    #
    # From the child: always (the parent knows its child's pid). The parent first checks that the
    # first and the last byte are readable, then allocates. A range the child does not have
    # mapped readable, or only in part, is a protocol error. If the operating system does not let
    # the parent read the child at all (EPERM: the child made itself non-dumpable, a security
    # module, another user), the parent asks for the bytes again with `fetchBuffer` and the
    # child answers with a memfd.
    #
    # From the parent: only to a child that said `Hello.readsParentMemory`, and only `bytes`
    # (the parent sends no byvalue buffers). The child copies from `Setup.parentPid`; if that
    # read fails in any way it asks again with `fetchBuffer`. A child never sends the parent
    # anything that makes the parent read or write its own memory on the child's behalf, beyond
    # answering `fetchBuffer` for a span it sent.
  }
}

struct ExceptionValue {
  # An exception object passed as a value (thrown into a generator, given to __exit__,
  # returned): the receiver gets a real exception of the right class, not a proxy.

  type @0 :Text;              # a builtin exception class, by name (as in `Value.builtin`);
                              # empty when `cls` names the class
  args @1 :List(Value);
  cls @2 :Value;              # a non-builtin class: a `ref` with classInfo, or a `back`
  original @3 :Value;         # for a non-builtin class, the object itself by `ref`, so the
                              # receiver's copy reads its other attributes and goes home as it
  message @4 :Text;           # str() of the exception in the sender
}

struct Slice {
  start @0 :Value;
  stop @1 :Value;
  step @2 :Value;
}

struct Complex {
  real @0 :Float64;
  imag @1 :Float64;
}

struct Entry {
  key @0 :Value;
  value @1 :Value;
}

struct NamedValue {
  name @0 :Text;
  value @1 :Value;
}

struct Ref {
  # An object exported by the sender.

  id @0 :UInt64;
  # Its id in the sender's export table.

  typeId @1 :UInt64;
  # The id of its type in the sender's export table. Types a ref names are pinned there for the
  # life of the connection, so a typeId stays valid.

  typeInfo @2 :TypeInfo;
  # Set the first time the sender names `typeId` on this connection, absent afterwards. The
  # receiver caches it; a ref naming a typeId it has never been told about is a protocol error.

  classInfo @3 :ClassInfo;
  # Set when the object itself is an exception class that is not a builtin: the receiver builds a
  # local class from it, so `except module.Error:` works.
}

struct TypeInfo {
  # What the receiver needs to build the proxy type for objects of one remote type.

  name @0 :Text;       # type.__qualname__
  module @1 :Text;     # type.__module__
  specials @2 :List(Text);
  # The special methods the type has (`__len__`, `__iter__`, `__add__`, ...), from a fixed set
  # the receiver knows; the proxy type carries exactly these. Unknown names are ignored.

  blocked @4 :List(Text);
  # Special methods the type sets to None (`__iter__ = None`), which makes the interpreter
  # refuse the operation rather than fall back to another protocol. The proxy type does the same.

  flags @3 :UInt32;
  # Bit 0: instances are classes (the type is a metaclass), so proxies answer isinstance.
  # Bit 1: instances are not hashable (`__hash__` is None).
  # Bit 2: instances are exceptions (subclass of BaseException).
  # Bit 3: instances are builtin iterators over a container (list, tuple, dict views, set, range,
  #        deque, ...): iterating has no side effects, so the receiver may fetch items in
  #        batches with `iterBatch` instead of one `next` per item.
}

struct ClassInfo {
  # An exception class defined outside `builtins`, to be mirrored by a local class.

  name @0 :Text;           # __name__
  qualname @1 :Text;       # __qualname__
  module @2 :Text;         # __module__
  bases @3 :List(Value);   # __bases__: builtins, refs with classInfo, or backs
  doc @4 :Text;            # __doc__ or empty
}
