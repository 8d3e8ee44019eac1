"""Helpers several test modules use: the kernel's variants this CPU runs, a spy on the kernel
library's entry points, the Step of an update, a custom operator, an error raised from the
KVStore's callback, a state as NumPy arrays."""
import warnings
from contextlib import contextmanager

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import kernel, textbook

# The kernel's variants this CPU runs (test_variants_follow_the_cpu checks the list).
VARIANTS = [v for v in kernel.variants() if kernel.runs_here(v)] if kernel.LIBRARY else []

ENTRY_POINTS = ('adam_float32', 'adam_float64', 'finite_float32', 'finite_float64',
                'checked_adam_float32', 'checked_adam_float64')


def spy(monkeypatch, library, names, record):
    """Make each of ``library``'s functions ``names`` call ``record(name, args)`` first."""
    def spying(name, original):
        def wrapper(*args):
            record(name, args)
            return original(*args)
        return wrapper
    for name in names:
        monkeypatch.setattr(library, name, spying(name, getattr(library, name)))


def record_calls(monkeypatch, library):
    """The list to which every later call into ``library`` appends (function name, arguments)."""
    seen = []
    spy(monkeypatch, library, ENTRY_POINTS, lambda name, args: seen.append((name, args)))
    return seen


def optimizer_step(opt, index):
    """The Step of ``opt``'s next update of ``index``, once counted: its count, the
    learning rate and weight decay MXNet's ``Optimizer`` gives it, ``opt``'s options."""
    return textbook.Step(opt._index_update_count[index], opt._get_lr(index), opt._get_wd(index),
                         *(getattr(opt, field) for field in textbook.Step._fields[3:]))


def register_custom_op(name, make):
    """Register with MXNet, as ``name``, a custom operator of one input and one output of
    the input's shape, whose work is the ``mx.operator.CustomOp`` that ``make()`` returns."""

    class Prop(mx.operator.CustomOpProp):
        def __init__(self):
            super().__init__(need_top_grad=True)

        def list_arguments(self):
            return ['data']

        def list_outputs(self):
            return ['output']

        def infer_shape(self, in_shape):
            return in_shape, in_shape, []

        def create_operator(self, ctx, shapes, dtypes):
            return make()

    mx.operator.register(name)(Prop)


@contextmanager
def raised_from_the_callback(kind, message):
    """``pytest.raises(kind, match=message)``, and the warning the callback gives at once;
    yields ``(the ExceptionInfo, the warnings)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(kind, match=message) as error:
            yield error, caught
    assert [w for w in caught if 'raised as soon as MXNet returns' in str(w.message)]


def state_arrays(state):
    """A state as NumPy arrays, nested as ``(master, (m, v, [t]))`` under multi_precision:
    its arrays, and MyAdam's step count ``[t]``."""
    if isinstance(state, (tuple, list)):
        return [a for s in state for a in state_arrays(s)]
    return [state.asnumpy() if isinstance(state, nd.NDArray) else np.array(state)]
