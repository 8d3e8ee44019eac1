"""Trainer checkpoints that fail clearly and run no code: :func:`save_states`, :func:`load_states`.

``gluon.Trainer.save_states`` pickles ``(states, optimizer)``, and MXNet's
``Trainer.load_states`` is ``pickle.loads``: a states file runs whatever
callable its author named the moment it is loaded, a truncated file surfaces as
a bare ``UnpicklingError`` from deep inside MXNet, and a file from another
optimizer or model is taken as it is. These functions wrap the Trainer instead:

- :func:`load_states` reads the file with its own reader, which calls nothing the
  file names: it admits only what a real checkpoint holds (MXNet arrays of every
  storage type and the NumPy interface's arrays, the registered optimizer
  classes, MXNet's lr_scheduler classes, NumPy numeric dtypes and scalars, plain
  Python containers and numbers), each rebuilt exactly as pickle rebuilds it in
  a real checkpoint, in any pickle protocol (0 to 5). Each array is parsed once
  however often the file refers to it, and nesting deeper than the loader's
  limit is refused by a pre-scan of the opcodes before anything is unpickled.
  The file is read up to the end of its pickle, bytes after it refused by the
  file's size, unread; a file larger than the states of the Trainer's
  parameters can be (see :func:`load_states`) is refused before it is read.
  The optimizer is checked as its own constructor checks its arguments
  (``MyAdam``: its option table's checks, which ``Trainer.load_states`` runs too);
  an attribute the file lacks takes its declared default (a file saved before it
  existed), one this release does not know is refused, naming it. It then checks
  that the file fits this Trainer (its optimizer class; the parameters it was
  saved for, their count and shapes; a state of the right structure, shapes and
  dtypes for each parameter, and ``MyAdam``'s step count in it an int >= 0). Only
  then is it loaded, by ``Trainer.load_states`` itself, from the rebuilt objects
  pickled anew by the standard pickler: bytes that name nothing the file was not
  allowed to (and, for an object of a class the user allowed, a function of this
  module that sets its attributes, as the reader rebuilds it). A bad file raises
  ``ValueError`` naming the file and what is wrong (the callable it names, if it
  names one it may not), with the Trainer (weights, states, update counts,
  optimizer) untouched.
- A class of your own (say, an ``lr_scheduler`` from your code or GluonCV's
  ``LRSequential``) is refused unless you allow it, as with PyTorch's
  ``torch.serialization.add_safe_globals``: :func:`add_safe_globals` for the
  process, :func:`safe_globals` within a ``with`` block. An allowed class is
  rebuilt as pickle rebuilds a plain object, never by calling anything the file
  names, and without running its ``__init__`` or ``__setstate__``:
  ``cls.__new__(cls)``, then ``obj.__dict__.update(attributes)``; its attributes
  may hold plain data only (numbers, strings, bytes, NumPy scalars and dtypes,
  tuples, lists, dicts and sets of them) and objects of allowed classes or MXNet's
  schedulers. A class pickled any other way (its own ``__reduce__``), or whose
  objects have no ``__dict__`` (``__slots__``), is refused, naming it.
- :func:`save_states` writes to a temporary file beside the target and renames
  it, so an interrupted save leaves the previous checkpoint, never a truncated one.
- ``python -m adam_plugin.checkpoint inspect FILE [--json] [--allow MODULE.CLASS]``
  prints what a file holds, read and refused the same way.

A changed number inside a well-formed file cannot be told from a real one (the
format has no checksum).
"""
__all__ = ['save_states', 'load_states', 'add_safe_globals', 'safe_globals', 'get_safe_globals',
           'clear_safe_globals']

import contextlib
import copyreg
import io
import os
import pickle
import reprlib
import tempfile
import types
import warnings

import numpy
from mxnet.optimizer import Optimizer

from .. import mxnet_internals
from ..dispatch import state_objects
from ..options import InvalidOption, step_count
from . import safe


def save_states(trainer, fname):
    """``trainer.save_states(fname)``, atomically: the file is complete or not replaced.

    Parameters
    ----------
    trainer : gluon.Trainer
    fname : str or path-like
    """
    # MyAdam's updates still queued in MXNet's engine, taken in first: the file then holds
    # their step counts as plain ints (see adam_plugin.engine.QueuedCount)
    getattr(trainer.optimizer, '_take_queued', lambda: None)()
    partial = f'{os.fspath(fname)}.partial'
    try:
        trainer.save_states(partial)
        os.replace(partial, fname)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_states(trainer, fname):
    """``trainer.load_states(fname)``, without running code from the file, once it fits.

    The file must hold ``(states, optimizer)`` as ``Trainer.save_states`` writes
    it, built only from what such a file holds; the optimizer must be of the
    Trainer's optimizer class, with the attributes such an optimizer has; and
    every saved state must have the structure, shapes and dtypes that optimizer
    creates for this Trainer's parameter of the same index.

    Parameters
    ----------
    trainer : gluon.Trainer
    fname : str or path-like

    Raises
    ------
    ValueError
        If the file names a callable a checkpoint does not hold, or is truncated,
        corrupted, larger than a states file for the Trainer's parameters can be
        (the bound docs/checkpoints.md states), or saved for another optimizer or
        other parameters.
        The message names the file; the Trainer is unchanged.
    """
    with open(fname, 'rb') as f:
        try:
            optimizer, states = _rebuild(trainer, f)
            rebuilt = _pickled((states, optimizer), safe.ALLOWED.keys() | {
                safe.name_of(cls) for cls in registered_optimizers() + _ALLOWED_CLASSES})
        except safe.Refused as err:
            raise ValueError(f"{invalid(fname, err)} The Trainer was not changed.") from None
    _install(trainer, rebuilt)


# The most arrays of a parameter's shape its state holds: MyAdam's m, v, AMSGrad's running
# maximum and, for a float16 weight with multi_precision, a float32 master copy.
STATE_ARRAYS = 4
# The bytes of a states file for one array besides its values: its header (shape, dtype,
# device) and the pickle's opcodes, and the parameter's share of the optimizer (its count
# on each device, its name and shape). A real file's: 70 to 280 bytes an array (pickle
# protocols 4 to 0; 2000 small AMSGrad parameters on two devices).
PER_ARRAY = 1024
# Pickle protocol 0 writes a zero byte of an array as 6 bytes ('\u0000').
PICKLE_EXPANSION = 6
# The rest of a states file: the optimizer's hyperparameters and lr_scheduler, the pickle's
# framing. A real file's: under 2 KB.
ALLOWANCE = 16 << 20


def size_limit(params):
    """The most bytes a states file for the Trainer's ``params`` may have, or None if
    a shape is not known yet (deferred initialisation).

    Each parameter's state holds at most :data:`STATE_ARRAYS` arrays of its shape,
    in its dtype or float32, whichever is wider (with an int64 index a row if it is
    row_sparse), written in any pickle protocol, plus :data:`ALLOWANCE`.
    """
    total = 0
    for param in params:
        shape = param.shape
        if shape is None or any(n <= 0 for n in shape):
            return None
        sparse = mxnet_internals.parameter_stype(param) == 'row_sparse'
        values = int(numpy.prod(shape)) * max(numpy.dtype(param.dtype).itemsize, 4)
        total += STATE_ARRAYS * (values + (8 * shape[0] if sparse else 0) + PER_ARRAY)
    return PICKLE_EXPANSION * total + ALLOWANCE


_ALLOWED_CLASSES = []


def add_safe_globals(classes):
    """Allow ``classes`` in the states files this process reads (PyTorch's idiom).

    See the module's docstring for how an object of an allowed class is rebuilt.

    Parameters
    ----------
    classes : list of type
    """
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"add_safe_globals takes classes, not {cls!r}")
        if cls not in _ALLOWED_CLASSES:
            _ALLOWED_CLASSES.append(cls)


def get_safe_globals():
    """The classes allowed by :func:`add_safe_globals` (and any :func:`safe_globals` block)."""
    return list(_ALLOWED_CLASSES)


def clear_safe_globals():
    """Allow no class of the user's any more."""
    _ALLOWED_CLASSES.clear()


@contextlib.contextmanager
def safe_globals(classes):
    """Allow ``classes`` within a ``with`` block only, as :func:`add_safe_globals` does."""
    before = list(_ALLOWED_CLASSES)
    add_safe_globals(classes)
    try:
        yield
    finally:
        _ALLOWED_CLASSES[:] = before


def invalid(fname, problem):
    """The message for a refused file."""
    return f"Invalid states file {os.fspath(fname)!r}: {problem}."


def registered_optimizers():
    """The optimizer classes registered with MXNet (the names a file may hold)."""
    return list(Optimizer.opt_registry.values())


def _rebuild(trainer, file):
    """The states file ``file``'s optimizer and states, rebuilt.

    Everything in the file is checked before anything is built; nothing of
    ``trainer`` changes. Raises :class:`safe.Refused`.
    """
    ours = trainer.optimizer

    def reference(cls):
        if cls is not type(ours):
            raise safe.Refused(f"it was saved for optimizer {cls.__name__}, "
                               f"this Trainer uses {type(ours).__name__}")
        return ours

    params = mxnet_internals.trainer_parameters(trainer)
    states, record = safe.read(file, registered_optimizers(), reference, _ALLOWED_CLASSES,
                               size_limit(params))
    optimizer = built(record)
    try:  # MyAdam checks that the file was saved for these parameters
        getattr(optimizer, 'check_fits', lambda params: None)(dict(enumerate(params)))
    except ValueError as err:
        raise safe.Refused(str(err)) from None
    for index in states:
        if not 0 <= index < len(params):
            raise safe.Refused(f"it holds a state for parameter index {safe.shown(index)}, "
                               f"this Trainer has {len(params)}")
    for index, state in states.items():
        param = params[index]
        weight = mxnet_internals.parameter_arrays(param)[0]
        try:
            with warnings.catch_warnings():  # float16 without multi_precision warns here
                warnings.simplefilter('ignore')
                expected = optimizer.create_state_multi_precision(index, weight)
        except Exception as err:  # any error: the file's hyperparameters are bad
            raise safe.Refused(f"its optimizer cannot create a state for parameter "
                               f"'{param.name}' ({type(err).__name__}: {err})") from None
        if safe.layout(state) not in (safe.layout(expected), _uncounted(safe.layout(expected))):
            raise safe.Refused(f"the state of parameter '{param.name}' has layout "
                               f"{reprlib.repr(safe.layout(state))}, "
                               f"expected {safe.layout(expected)}")
        for count in _lists(state):  # where the layout has them: step counts
            try:
                step_count(f"step count of parameter '{param.name}'", count)
            except InvalidOption as err:
                raise safe.Refused(str(err)) from None
    rebuilt = built(states)
    _refuse_shared(rebuilt, params)
    return optimizer, rebuilt


def _refuse_shared(states, params):
    """Refuse ``states`` (index -> rebuilt state) where one array or step count is held
    twice (a pickle may name an object twice): each holder would step it, so two
    parameters' moments (or one parameter's ``m`` and ``v``), or their counts, would be one."""
    held = {}  # id of an array or [t] -> the index whose state holds it
    for index, state in states.items():
        for item in state_objects(state):
            first = held.get(id(item))
            if first is not None:
                where = (f"parameter '{params[index].name}'" if first == index else
                         f"parameters '{params[first].name}' and '{params[index].name}'")
                what = 'step count' if type(item) is list else 'array'
                raise safe.Refused(f"one {what} is held twice, by the states of {where}")
            held[id(item)] = index


_COUNT = ['int']  # the layout of a step count, [t] (see MyAdam.create_state)


def _uncounted(layout):
    """``layout`` without its step counts: a state saved by a release that kept them in
    the optimizer only, ``(m, v[, vmax])``, which counts from the optimizer's counts."""
    if type(layout) is tuple:
        return tuple(_uncounted(item) for item in layout if item != _COUNT)
    return layout


def _lists(state):
    """The lists in ``state``, a nesting of tuples and lists."""
    if type(state) is list:
        return [state]
    if type(state) is tuple:
        return [found for item in state for found in _lists(item)]
    return []


def built(records):
    """The real objects of checked ``records``: :func:`safe.build`, its errors refused.

    The optimizer's own checks (for ``MyAdam``, its option table's: a
    hyperparameter, schedule or update count out of range) are refused with their
    message; anything else MXNet raises, with its last line or the error's name.
    """
    try:
        return safe.build(records)
    except InvalidOption as err:
        raise safe.Refused(str(err)) from None
    except Exception as err:  # any error: MXNet refused checked bytes (e.g. np shape)
        lines = str(err).strip().splitlines() or [type(err).__name__]  # MXNet's message
        raise safe.Refused(f"it could not be rebuilt ({lines[-1]})") from None  # comes last


class _Pickler(pickle.Pickler):
    """The standard pickler, refusing to name a class or function not in ``allowed`` (full
    names), and pickling an object of a class the user allowed (``plain``) as the safe
    reader rebuilds it: ``cls.__new__(cls)``, then its attributes by
    :func:`_set_attributes`, never through its own ``__setstate__``."""

    def __init__(self, file, allowed, plain):
        super().__init__(file, pickle.DEFAULT_PROTOCOL)
        self.allowed, self.plain = allowed, plain

    def reducer_override(self, obj):
        if type(obj) in self.plain:
            return copyreg.__newobj__, (type(obj),), dict(vars(obj)), None, None, _set_attributes
        if (isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))
                and obj is not _set_attributes and safe.name_of(obj) not in self.allowed):
            raise safe.Refused(f"its rebuilt objects pickle as {safe.name_of(obj)}, which the "
                               "file may not name")
        return NotImplemented


def _set_attributes(obj, attributes):
    """``obj.__dict__.update(attributes)``: an object of a class the user allowed, unpickled."""
    obj.__dict__.update(attributes)


def _pickled(value, allowed):
    """``value``, checked objects rebuilt from a states file, pickled anew (see
    :class:`_Pickler`)."""
    data = io.BytesIO()
    _Pickler(data, allowed, set(_ALLOWED_CLASSES)).dump(value)
    return data.getvalue()


def _install(trainer, data):
    """``trainer.load_states`` of ``data``, a states file's contents (:func:`_pickled`).

    ``Trainer.load_states`` reads a file by its name: ``data`` goes through a temporary
    file, removed afterwards.
    """
    with tempfile.NamedTemporaryFile('wb', suffix='.states', delete=False) as file:
        file.write(data)
    try:
        trainer.load_states(file.name)
    except (AssertionError, AttributeError):  # KVStore.load_optimizer_states: no Updater
        if mxnet_internals.states_on_servers(trainer):
            raise ValueError("Cannot load states for distributed training: the KVStore's "
                             "servers hold them. The Trainer was not changed.") from None
        raise
    finally:
        os.remove(file.name)
