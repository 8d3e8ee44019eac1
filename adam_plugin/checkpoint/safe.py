"""Unpickle a Trainer checkpoint without running anything the file names.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

A pickle is a program: ``GLOBAL`` looks a callable up by name, ``REDUCE`` calls it
with arguments from the file, ``BUILD`` hands an object its state. The
:class:`_Unpickler` here gives every name the file asks for a :class:`Record`
instead, so calling or building one only writes down what the file asked for.
Only the names a real checkpoint uses get a record at all (:data:`ALLOWED` plus
the registered optimizer classes); any other name is refused on sight.

:func:`read` then checks each record against how pickle rebuilds that class in
a file ``Trainer.save_states`` wrote (the arguments it is called with, the exact
set of attributes it is built with, an array's raw bytes) and where it may
appear, and :func:`build` makes the real objects from checked records the way
pickle would have: ``cls(*args)`` and ``__setstate__`` for arrays,
``cls.__new__(cls)`` and its own ``__setstate__`` for the optimizer (``MyAdam``'s
checks the values), ``cls.__new__(cls)`` and the instance ``__dict__`` for its
``lr_scheduler`` and objects of classes the user allowed, whose ``__setstate__``
is never called with the file's data.
"""
import _compat_pickle
import io
import pickle
import pickletools
import re
import reprlib
import sys

import numpy
from mxnet import lr_scheduler
from mxnet.ndarray.ndarray import NDArray
from mxnet.ndarray.sparse import CSRNDArray, RowSparseNDArray
from mxnet.numpy import ndarray as NumpyArray

from . import rawarray

# Deeper nesting than this is refused (a real checkpoint nests about 6 deep).
MAX_DEPTH = 32
PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray)
CONTAINERS = (tuple, list, dict, set, frozenset)
_NO_STATE = object()


class Refused(Exception):
    """The file is not a checkpoint that may be rebuilt; the message says why."""


def name_of(obj):
    """The full name a pickle gives a class or function: ``module.qualified.name``."""
    return f"{obj.__module__}.{obj.__qualname__}"


class Record:
    """An object the file asks for, written down instead of made.

    Subclassed once per allowed name, with ``kind`` (how such an object is
    checked and built) and ``name``. ``args`` are the arguments the file gives,
    ``called`` says whether it calls the name (``REDUCE``) or only its
    ``__new__`` (``NEWOBJ``), ``state`` is what ``BUILD`` hands it.
    """
    kind = name = None

    def __new__(cls, *args):
        record = object.__new__(cls)
        record.args, record.called, record.state = args, False, _NO_STATE
        return record

    def __init__(self, *args):
        self.called = True

    def __setstate__(self, state):
        if self.state is not _NO_STATE:
            raise Refused(f"it builds {self.name} twice")
        self.state = state

    def refuse(self, what):
        raise Refused(f"{self.name} is rebuilt {what}, which no checkpoint does")


class _Array:
    """An MXNet array: ``cls(None)``, then ``__setstate__({'handle': raw bytes})``."""

    def __init__(self, cls, stype):
        self.cls, self.stype = cls, stype

    def check(self, record):
        if hasattr(record, 'header'):  # referenced again (BINGET): parsed once
            return
        if not (record.called and record.args == (None,)):
            record.refuse(f"from arguments {reprlib.repr(record.args)}")
        state = record.state
        if not (type(state) is dict and list(state) == ['handle']):
            record.refuse(f"with state {reprlib.repr(state)}")
        handle = state['handle']
        if isinstance(handle, Record) and handle.kind is BYTES:
            raw = BYTES.check(handle)
        elif type(handle) is bytearray:  # protocol 5 writes a bytearray as such
            raw = handle
        else:
            record.refuse(f"with a handle of {_what(handle)}")
        try:
            record.header = rawarray.parse(raw)
        except ValueError as err:
            raise Refused(f"an array's raw bytes are not an MXNet array: {err}") from None
        if record.header.stype != self.stype:
            record.refuse(f"from the bytes of a {record.header.stype} array")

    def build(self, record, build):
        array = self.cls(*record.args)
        array.__setstate__({'handle': build(record.state['handle'])})
        return array


class _Bytes:
    """An array's raw bytes: ``bytearray(data)``, or ``bytearray(text, 'latin-1')`` as
    pickle protocols 0 to 2 write it."""

    def check(self, record):
        args = record.args
        if record.called and record.state is _NO_STATE:
            if len(args) == 1 and type(args[0]) is bytes:
                return args[0]
            if len(args) == 2 and type(args[0]) is str and args[1] == 'latin-1':
                try:
                    return args[0].encode('latin-1')
                except UnicodeEncodeError:
                    pass
        return record.refuse(f"from arguments {reprlib.repr(args)}")

    def build(self, record, build):
        return bytearray(self.check(record))


class _Dtype:
    """A numeric NumPy dtype: ``numpy.dtype(code, False, True)`` and its pickled state."""
    CODE = re.compile(r'[biufc][0-9]{1,2}')

    def check(self, record):
        code = record.args[0] if record.called and len(record.args) == 3 else None
        try:
            reference = numpy.dtype(code) if self.CODE.fullmatch(str(code)) else None
        except TypeError:  # a size numpy has no such type for, e.g. 'f3'
            reference = None
        if reference is None or reference.kind not in 'biufc' or \
                (record.args, record.state) != reference.__reduce__()[1:]:
            record.refuse(f"from {reprlib.repr(record.args)}, state "
                          f"{reprlib.repr(record.state)}, not a numeric dtype's")
        return reference

    def build(self, record, build):
        return self.check(record)


class _Scalar:
    """A NumPy scalar of a numeric dtype: ``scalar(dtype, its bytes)``."""

    def check(self, record):
        if record.called and len(record.args) == 2 and isinstance(record.args[0], Record) \
                and record.args[0].kind is DTYPE and record.state is _NO_STATE:
            dtype = DTYPE.check(record.args[0])
            if type(record.args[1]) is bytes and len(record.args[1]) == dtype.itemsize:
                return numpy.frombuffer(record.args[1], dtype)[0]
        return record.refuse(f"from arguments {reprlib.repr(record.args)}")

    def build(self, record, build):
        return self.check(record)


class _Instance:
    """An optimizer, an lr_scheduler or a class the user allowed: ``cls.__new__(cls)``,
    then its attributes.

    ``reference`` is an instance whose attributes a checkpoint's must match (MXNet's
    schedulers; the optimizer's is given to :meth:`check`). ``leaf`` checks what its
    attributes hold: plain data (:func:`_plain`), or, for a class the user allowed,
    plain data and objects of allowed classes (:func:`_object`). ``setstate``: the
    attributes go through the class's own ``__setstate__`` (an optimizer's, which
    checks them: ``MyAdam``'s); otherwise they become the object's ``__dict__``, and
    no code of the class runs but ``__new__``.
    """

    def __init__(self, cls, reference=None, leaf=None, setstate=False):
        self.cls, self.reference, self.leaf, self.setstate = cls, reference, leaf, setstate

    @property
    def schedule(self):
        """Whether it may stand as an lr_scheduler (or inside an allowed object)."""
        return self.leaf is not None

    def check(self, record, reference=None):
        if getattr(record, 'checked', False):  # met again, or inside itself
            return
        record.checked = True
        if not (self.setstate or self.cls.__dictoffset__):  # instances without a __dict__
            raise Refused(f"{record.name} cannot be rebuilt from its attributes: its objects "
                          "have no __dict__ (__slots__), and the __setstate__ of a class "
                          "allowed by the user is not called")
        if record.called or record.args != ():
            record.refuse(f"by calling it with {reprlib.repr(record.args)}")
        state = record.state
        if type(state) is not dict or not all(type(key) is str for key in state):
            record.refuse(f"with state {reprlib.repr(state)}")
        reference = reference if reference is not None else self.reference
        if reference is not None:
            self._attributes(record, set(reference.__getstate__()))
        for key, value in state.items():
            where = f"attribute {key!r} of {record.name}"
            if self.schedule or key != 'lr_scheduler' or value is None:
                _walk(value, self.leaf or _plain, where)
            elif isinstance(value, Record) and getattr(value.kind, 'schedule', False):
                value.kind.check(value)
            else:
                raise Refused(f"{where} holds {_what(value)}, not one of MXNet's schedulers "
                              f"(a class you trust may be allowed: {HOW_TO_ALLOW})")

    def _attributes(self, record, expected):
        state = record.state
        optional = set(getattr(self.cls, 'state_defaults', {}))  # a file from before they were
        extra, missing = sorted(set(state) - expected), sorted(expected - optional - set(state))
        if extra:
            raise Refused(f"its {record.name} has attributes {extra}, which this release's "
                          f"{self.cls.__name__} does not know")
        if missing:
            record.refuse(f"without its attributes {missing}")

    def build(self, record, build):
        obj = self.cls.__new__(self.cls)
        state = build(record.state)
        if self.setstate:
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj


def _what(value):
    return value.name if isinstance(value, Record) else type(value).__name__


def _walk(value, leaf, where, depth=0, done=None):
    """Check ``value``: containers recursed into (keys too), the rest handed to ``leaf``.

    A container met again is checked once (``done``), so shared ones cost nothing.
    """
    done = set() if done is None else done
    if depth > MAX_DEPTH:
        raise Refused(f"{where} is nested deeper than {MAX_DEPTH} levels (or contains itself)")
    if type(value) not in CONTAINERS:
        leaf(value, where)
    elif id(value) not in done:
        items = [x for pair in value.items() for x in pair] if type(value) is dict else value
        for item in items:
            _walk(item, leaf, where, depth + 1, done)
        done.add(id(value))


def _plain(value, where):
    """Plain data: numbers, strings, NumPy scalars and dtypes."""
    if isinstance(value, Record) and value.kind in (SCALAR, DTYPE):
        value.kind.check(value)
    elif type(value) not in PLAIN:
        raise Refused(f"{where} holds {_what(value)}, which does not belong there")


def _object(value, where):
    """What an object of a class the user allowed holds: plain data, and objects of
    allowed classes (or MXNet's schedulers)."""
    if isinstance(value, Record) and getattr(value.kind, 'schedule', False):
        value.kind.check(value)
    else:
        _plain(value, where)


def _array(value, where):
    """An optimizer state: MXNet arrays (or None), and ints (``MyAdam``'s step count)."""
    if isinstance(value, Record) and isinstance(value.kind, _Array):
        value.kind.check(value)
    elif value is not None and type(value) is not int:
        raise Refused(f"{where} holds {_what(value)}, not an MXNet array")


BYTES, DTYPE, SCALAR = _Bytes(), _Dtype(), _Scalar()

# MXNet's schedulers, each with the constructor arguments of a reference instance.
SCHEDULERS = {
    lr_scheduler.LRScheduler: {},
    lr_scheduler.FactorScheduler: {'step': 1},
    lr_scheduler.MultiFactorScheduler: {'step': [1]},
    lr_scheduler.PolyScheduler: {'max_update': 1},
    lr_scheduler.CosineScheduler: {'max_update': 1},
}

# Every name a checkpoint may hold besides its optimizer's class -> its kind.
ALLOWED = {
    name_of(NDArray): _Array(NDArray, 'default'),
    name_of(RowSparseNDArray): _Array(RowSparseNDArray, 'row_sparse'),
    name_of(CSRNDArray): _Array(CSRNDArray, 'csr'),
    name_of(NumpyArray): _Array(NumpyArray, 'default'),
    'builtins.bytearray': BYTES,
    name_of(numpy.dtype): DTYPE,
    f"{numpy.core.multiarray.scalar.__module__}.scalar": SCALAR,
    **{name_of(cls): _Instance(cls, cls(**kwargs), _plain) for cls, kwargs in SCHEDULERS.items()},
}

HOW_TO_ALLOW = ("adam_plugin.checkpoint.add_safe_globals([cls]), or "
                "'with adam_plugin.checkpoint.safe_globals([cls]):', or inspect's --allow")


# Deeper nesting of the objects a pickle builds than this is refused before unpickling:
# a tuple nested 10**6 deep as a dict key crashes the process when the dict hashes it.
# Counted as the pre-scan counts (every call and build a level): a real checkpoint is
# about 8 deep.
MAX_PICKLE_DEPTH = 4 * MAX_DEPTH
# The opcodes that change the object below their arguments rather than make a new one.
_MUTATORS = {'APPEND', 'APPENDS', 'SETITEM', 'SETITEMS', 'ADDITEMS', 'BUILD'}


class _Nest:
    """An object the pickle builds, in :func:`_prescan`: how deep it nests, and what holds it."""
    __slots__ = ('depth', 'holders')

    def __init__(self):
        self.depth, self.holders = 0, []

    def hold(self, item):
        """``item`` is put inside this object: this one is at least one level deeper."""
        item.holders.append(self)
        pending = [(self, item.depth + 1)]
        while pending:  # each object deepens at most MAX_PICKLE_DEPTH times: linear
            nest, depth = pending.pop()
            if depth > nest.depth:
                if depth > MAX_PICKLE_DEPTH:
                    raise Refused(f"it nests objects deeper than {MAX_PICKLE_DEPTH} levels "
                                  "(or in themselves); refused before unpickling")
                nest.depth = depth
                pending += [(holder, depth + 1) for holder in nest.holders]


class _Reader:
    """A binary file as :mod:`pickletools` reads it (``read``, ``readline``, ``tell``),
    never past ``bound`` bytes; what it read is kept, in ``kept``."""

    def __init__(self, file, bound):
        self.file, self.bound, self.kept = file, bound, io.BytesIO()
        self.tell = self.kept.tell

    def read(self, size):
        data = self.file.read(min(size, self.bound - self.tell()))
        self.kept.write(data)
        return data

    def readline(self):
        data = self.file.readline(self.bound - self.tell())
        self.kept.write(data)
        return data


def _pickle(file, limit):
    """The pickle at the start of the binary ``file``, pre-scanned (:func:`_prescan`), in
    a file object of its own: read up to its end (the ``STOP`` opcode) and no further.

    A file of more than ``limit`` bytes is refused before anything is read, and bytes
    after the pickle are refused by the file's size, unread (a stream that cannot seek,
    with no size: by reading one byte past the pickle; it is read up to ``limit``).
    """
    size = None
    if file.seekable():
        size = file.seek(0, io.SEEK_END)
        file.seek(0)
        if limit is not None and size > limit:
            raise Refused(f"it is {size} bytes, more than a states file for these parameters "
                          f"holds ({limit} at most); refused before reading it")
    reader = _Reader(file, size if size is not None else
                     sys.maxsize if limit is None else limit)
    _prescan(reader)
    after = size - reader.tell() if size is not None else len(file.read(1))
    if after:
        raise Refused("it is corrupted (bytes after the end of the pickle)")
    reader.kept.seek(0)
    return reader.kept


def _prescan(data):
    """Read the opcodes once, before unpickling, and refuse:

    - the ``EXT`` opcodes: they name a callable by a number in ``copyreg``'s
      extension registry, and pickle caches what a number resolved to for every
      unpickler in the process, past ``find_class``. No checkpoint uses them;
    - nesting deeper than :data:`MAX_PICKLE_DEPTH` (or an object inside itself),
      followed through the memo as the unpickler would, in time linear in the file.

    A sequence of opcodes no unpickler could follow fails here (reported as a
    damaged file).
    """
    stack, marks, memo = [], [], {}
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name.startswith('EXT'):
            raise Refused(f"it names a callable by copyreg extension code {arg} "
                          f"({name}), which no checkpoint does")
        if name == 'MARK':
            marks.append(stack)
            stack = []
        elif name in ('PUT', 'BINPUT', 'LONG_BINPUT', 'MEMOIZE'):
            memo[len(memo) if name == 'MEMOIZE' else arg] = stack[-1]
        elif name in ('GET', 'BINGET', 'LONG_BINGET', 'DUP'):
            stack.append(memo[arg] if name != 'DUP' else stack[-1])
        else:
            before = opcode.stack_before
            if pickletools.markobject in before:  # what was pushed since the mark
                below = before.index(pickletools.markobject)  # and the object below it
                items, stack = stack, marks.pop()
            else:
                below, items = len(before), []
            if below:
                items = stack[-below:] + items
                del stack[-below:]
            if opcode.stack_after:
                nest = items[0] if name in _MUTATORS else _Nest()
                for item in items[1:] if name in _MUTATORS else items:
                    nest.hold(item)
                stack.append(nest)


def _latin1(text, encoding):
    """``_codecs.encode(text, 'latin1')``: how pickle protocols 0 to 2 write ``bytes``."""
    if type(text) is not str or encoding != 'latin1':
        raise Refused(f"it calls _codecs.encode with {reprlib.repr((text, encoding))}, "
                      "which no checkpoint does")
    try:
        return text.encode('latin1')
    except UnicodeEncodeError:
        raise Refused("it calls _codecs.encode with text beyond latin1") from None


_OBJECT = object()  # stands for builtins.object, only as _reconstructor's base


def _int(value):
    """``int(value)`` of an int: how a step count whose update was still queued when the
    states were saved is pickled (see ``adam_plugin.engine.QueuedCount``)."""
    if type(value) is not int:
        raise Refused(f"it calls builtins.int with {reprlib.repr(value)}, which no "
                      "checkpoint does")
    return value


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor(cls, object, None)``: protocols 0 and 1's ``cls.__new__(cls)``."""
    if not (isinstance(cls, type) and issubclass(cls, Record) and base is _OBJECT
            and state is None):
        raise Refused(f"it calls copyreg._reconstructor with {reprlib.repr((cls, base, state))}"
                      ", which no checkpoint does")
    return cls.__new__(cls)


# What pickle protocols 0 to 2 name besides a checkpoint's classes, and builtins.int
# (see _int) -> what the name stands for here (each checks its arguments and makes what
# a genuine file means).
_OLD_PROTOCOLS = {'_codecs.encode': _latin1, 'copyreg._reconstructor': _reconstructor,
                  'builtins.object': _OBJECT, 'builtins.int': _int}


class _Unpickler(pickle.Unpickler):
    """Unpickles into :class:`Record` objects; refuses names not in ``allowed``."""

    def __init__(self, file, allowed):
        super().__init__(file)
        self.allowed, self.records = allowed, {}

    def find_class(self, module, name):
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # Python 2's names
        full = f"{module}.{name}"
        if full in _OLD_PROTOCOLS:
            return _OLD_PROTOCOLS[full]
        if full not in self.allowed:
            raise Refused(f"it names {full}, which is not allowed (refused, nothing from the "
                          f"file was run; a class you trust may be allowed: {HOW_TO_ALLOW})")
        if full not in self.records:
            self.records[full] = type(name, (Record,), {'kind': self.allowed[full], 'name': full})
        return self.records[full]

    def persistent_load(self, pid):
        raise Refused("it holds a persistent id, which no checkpoint holds")


def read(file, optimizer_classes, reference, allowed_classes=(), limit=None):
    """The checked records of a states file: ``(states, optimizer)``.

    Parameters
    ----------
    file : binary file object
        The file, as ``Trainer.save_states`` writes it, from its start. It is read up
        to the end of the pickle only.
    optimizer_classes : iterable of type
        The optimizer classes whose names the file may hold.
    reference : callable
        ``reference(cls)`` returns an instance of the file's optimizer class
        whose attributes the file's must match, or raises :class:`Refused`.
    allowed_classes : iterable of type
        Classes the user allowed (an lr_scheduler of their own): rebuilt as plain
        objects, ``cls.__new__(cls)`` and then their attributes as its ``__dict__``
        (not through its ``__setstate__``), which may hold only plain data and
        objects of allowed classes.
    limit : int, optional
        The most bytes the file may have, refused before reading.

    Returns
    -------
    states : dict
        Parameter index -> state, as :class:`Record` objects; each array record
        has a ``header`` (:class:`rawarray.Header`).
    optimizer : Record

    Raises
    ------
    Refused
        If the file names anything else, or rebuilds an allowed name in a way
        that no real checkpoint does, or is larger than ``limit``. Nothing the
        file names is ever called.
    """
    allowed = dict({name_of(cls): _Instance(cls, leaf=_object) for cls in allowed_classes},
                   **ALLOWED,
                   **{name_of(cls): _Instance(cls, setstate=True) for cls in optimizer_classes})
    try:
        saved = _Unpickler(_pickle(file, limit), allowed).load()
    except Refused:
        raise
    except Exception as err:  # any failure means a damaged file
        raise Refused("it is truncated or corrupted (unpickling failed: "
                      f"{type(err).__name__}: {err})") from None
    if not (type(saved) is tuple and len(saved) == 2 and type(saved[0]) is dict):
        raise Refused("it does not hold (states, optimizer) as Trainer.save_states writes them "
                      f"(found {_what(saved)})")
    states, optimizer = saved
    if not (isinstance(optimizer, Record) and isinstance(optimizer.kind, _Instance)
            and optimizer.kind.cls in set(optimizer_classes)):
        raise Refused("it does not hold (states, optimizer) as Trainer.save_states writes them "
                      f"(its second element is {_what(optimizer)}, not an optimizer)")
    optimizer.kind.check(optimizer, reference(optimizer.kind.cls))
    for index, state in states.items():
        if type(index) is not int:
            raise Refused(f"it holds a state for parameter index {index!r}")
        _walk(state, _array, f"the state of parameter index {shown(index)}")
    return states, optimizer


def shown(number):
    """An int as a message shows it: its digits, or how many hex digits it has when it is
    too long to print (Python refuses to print an int of more than 4300 digits)."""
    return number if number.bit_length() <= 64 else f"of {len(hex(abs(number))) - 2} hex digits"


def build(value, memo=None):
    """The real object a checked record (or container of them) stands for.

    Objects shared in the file are shared in the result, as with pickle.
    """
    memo = {} if memo is None else memo
    if type(value) in PLAIN:
        return value
    if id(value) not in memo:
        if isinstance(value, Record):
            built = value.kind.build(value, lambda v: build(v, memo))
        elif type(value) is dict:
            built = {build(k, memo): build(v, memo) for k, v in value.items()}
        else:
            built = type(value)(build(v, memo) for v in value)
        memo[id(value)] = built
    return memo[id(value)]


def layout(state, memo=None):
    """The nesting (tuples and lists), shapes, dtypes and storage types of a state
    (records or arrays); the type's name of anything else (``'int'``)."""
    memo = {} if memo is None else memo
    if isinstance(state, Record):
        return (state.header.shape, state.header.dtype, state.header.stype)
    if isinstance(state, NDArray):
        return (state.shape, numpy.dtype(state.dtype).name, state.stype)
    if type(state) in (tuple, list):
        if id(state) not in memo:  # a nesting shared in the file is laid out once
            memo[id(state)] = type(state)(layout(s, memo) for s in state)
        return memo[id(state)]
    return type(state).__name__
