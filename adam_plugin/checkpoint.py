"""Trainer checkpoints that fail clearly: :func:`save_states` and :func:`load_states`.

``gluon.Trainer.save_states`` pickles ``(states, optimizer)``; MXNet's
``Updater.set_states`` is ``pickle.loads`` and an assignment. So a truncated or
garbled file surfaces as a bare ``UnpicklingError``/``EOFError`` from deep inside
MXNet, and a file that unpickles but came from another optimizer or another
model is taken as it is: a Trainer built for ``'myadam'`` silently continues
with the file's ``sgd``. An optimizer plugin cannot change that: MXNet reads the
file, and a truncated file never reaches ``MyAdam``. These two functions wrap
the Trainer's own methods instead:

- :func:`load_states` reads the file, checks it and only then calls
  ``trainer.load_states``; a bad file raises ``ValueError`` naming the file and
  what is wrong, with the Trainer (weights, states, optimizer) untouched.
- :func:`save_states` writes to a temporary file beside the target and renames
  it, so an interrupted save leaves the previous checkpoint, never a truncated one.

A damaged file is caught when it no longer unpickles, or unpickles into
something that is not such a checkpoint; a changed number inside a
well-formed pickle cannot be told from a real one (the format has no checksum).
Like MXNet's loader these unpickle the file: load only checkpoints you trust.
"""
import os
import pickle
import warnings

import numpy
from mxnet.ndarray import NDArray
from mxnet.optimizer import Optimizer


def save_states(trainer, fname):
    """``trainer.save_states(fname)``, atomically: the file is complete or not replaced.

    Parameters
    ----------
    trainer : gluon.Trainer
    fname : str or path-like
    """
    partial = f'{os.fspath(fname)}.partial'
    try:
        trainer.save_states(partial)
        os.replace(partial, fname)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_states(trainer, fname):
    """``trainer.load_states(fname)``, after checking that the file fits this Trainer.

    The file must unpickle to ``(states, optimizer)`` as ``Trainer.save_states``
    writes it, the optimizer must be of the Trainer's optimizer class, and every
    saved state must have the structure, shapes and dtypes that optimizer creates
    for this Trainer's parameter of the same index.

    Parameters
    ----------
    trainer : gluon.Trainer
    fname : str or path-like

    Raises
    ------
    ValueError
        If the file is truncated, corrupted, or saved for another optimizer or
        other parameters. The message names the file; the Trainer is unchanged.
    """
    with open(fname, 'rb') as f:
        data = f.read()
    problem = _problem(trainer, data)
    if problem:
        raise ValueError(f"Invalid states file {os.fspath(fname)!r}: {problem}. "
                         "The Trainer was not changed.")
    trainer.load_states(fname)


def _problem(trainer, data):
    """What is wrong with ``data`` as states for ``trainer``, or None."""
    try:
        saved = pickle.loads(data)
    except Exception as err:  # noqa: BLE001  (any failure means a damaged file)
        return f"it is truncated or corrupted (unpickling failed: {type(err).__name__}: {err})"
    if not (isinstance(saved, tuple) and len(saved) == 2 and isinstance(saved[0], dict)
            and isinstance(saved[1], Optimizer)):
        return ("it does not hold (states, optimizer) as Trainer.save_states writes them "
                f"(found {type(saved).__name__})")
    states, optimizer = saved
    if type(optimizer) is not type(trainer.optimizer):
        return (f"it was saved for optimizer {type(optimizer).__name__}, "
                f"this Trainer uses {type(trainer.optimizer).__name__}")
    params = trainer._params  # pylint: disable=protected-access
    for index, state in states.items():
        if not (isinstance(index, int) and 0 <= index < len(params)):
            return f"it holds a state for parameter index {index!r}, this Trainer has {len(params)}"
        weight = params[index].list_data()[0]
        with warnings.catch_warnings():  # float16 without multi_precision warns here
            warnings.simplefilter('ignore')
            expected = optimizer.create_state_multi_precision(index, weight)
        if _layout(state) != _layout(expected):
            return (f"the state of parameter '{params[index].name}' has layout "
                    f"{_layout(state)}, expected {_layout(expected)}")
    return None


def _layout(state):
    """The nesting, shapes and dtypes of a state, with the numbers left out."""
    if isinstance(state, NDArray):
        return (state.shape, numpy.dtype(state.dtype).name, state.stype)
    if isinstance(state, (tuple, list)):
        return tuple(_layout(s) for s in state)
    return type(state).__name__
