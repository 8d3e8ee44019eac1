"""``MyAdam``'s options, declared once: name, default, check and doc of each.

:class:`MyAdam`'s signature, its ``__init__`` and ``__setstate__`` (so both
``Trainer.load_states`` and :func:`adam_plugin.checkpoint.load_states`),
``set_learning_rate`` and the ``Parameters`` section of its docstring all read
:data:`OPTIONS`. Adding an option is one row here, plus its use in the update
rule (:mod:`adam_plugin.textbook`) and the kernel. A states file saved before an
option existed loads with the option's default.

Every check raises ``ValueError("Invalid NAME: VALUE (expected WHAT)")`` and
returns the value to keep. Like ``torch.optim``'s ``if not 0.0 <= lr``, a check
is written so that NaN fails it.
"""
import math
import numbers
import textwrap
from typing import Callable, NamedTuple, Optional

import numpy

from .textbook import EPSILON_MODES

NONFINITE_POLICIES = ('skip', 'raise')


def _refuse(name, value, expected):
    raise ValueError(f"Invalid {name}: {value!r} (expected {expected})")


def number(ok, expected, cast=None):
    """A check: a real number (not a bool, not a string) with ``ok(float(value))``.

    A string is not a number here, even one that ``float`` would read: MXNet keeps
    ``learning_rate`` as given, and ``'0.1'`` would fail at the first step.
    ``cast`` (e.g. ``float``) is applied to the value kept.
    """
    def check(name, value):
        try:
            good = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and ok(float(value)))
        except OverflowError:  # an int beyond float's range
            good = False
        if not good:
            _refuse(name, value, expected)
        return cast(value) if cast else value
    return check


def none_or(check):
    """A check that also takes ``None``."""
    return lambda name, value: None if value is None else check(name, value)


def flag(name, value):
    """A check: True, False, 1 or 0, kept as a bool (``bool('no')`` is True)."""
    if not (isinstance(value, (bool, numpy.bool_))
            or (isinstance(value, numbers.Integral) and value in (0, 1))):
        _refuse(name, value, 'True or False')
    return bool(value)


def one_of(choices):
    """A check: one of ``choices``."""
    def check(name, value):
        if not (isinstance(value, str) and value in choices):
            _refuse(name, value, f'one of {choices}')
        return value
    return check


LEARNING_RATE = number(lambda x: 0.0 <= x < math.inf, '>= 0')
_BETA = number(lambda x: 0.0 <= x < 1.0, 'in [0, 1)', cast=float)


class Option(NamedTuple):
    """One hyperparameter: its keyword (MXNet's name), default, check and doc.

    ``attr`` is the attribute it is kept in when that is not ``name``;
    ``mxnet`` says that :class:`mxnet.optimizer.Optimizer` keeps it (checked here,
    passed on to ``Optimizer.__init__``).
    """
    name: str
    default: object
    check: Callable
    type: str
    doc: str
    attr: Optional[str] = None
    mxnet: bool = False

    @property
    def key(self):
        """The attribute the optimizer keeps the value in (and a states file holds)."""
        return self.attr or self.name


OPTIONS = (
    Option('learning_rate', 0.001, none_or(LEARNING_RATE), 'float or None',
           "Step size ``lr``, >= 0. ``None`` takes it from ``lr_scheduler``.",
           attr='lr', mxnet=True),
    Option('beta1', 0.9, _BETA, 'float', "Decay rate of the first moment, in [0, 1)."),
    Option('beta2', 0.999, _BETA, 'float', "Decay rate of the second moment, in [0, 1)."),
    Option('epsilon', 1e-8,
           number(lambda x: 0.0 < x < math.inf,
                  '> 0: with 0, a zero gradient element makes the update 0 / 0', cast=float),
           'float',
           "Stabilising constant, > 0. Zero is refused: a gradient element that has been "
           "0 at every step so far (``m = v = 0``) would make the update ``0 / 0``, a NaN "
           "in the weight that the finiteness check of the gradient cannot see."),
    Option('epsilon_mode', 'outside', one_of(EPSILON_MODES), "{'outside', 'inside', 'hat'}",
           "Where ``epsilon`` enters: outside the root (the chapter's code, PyTorch), "
           "inside it (the chapter's printed formula, optax ``eps_root``), or the paper's "
           "epsilon-hat (MXNet's built-in Adam)."),
    Option('amsgrad', False, flag, 'bool',
           "Use the running maximum of ``v`` (Reddi et al., 2018; PyTorch's variant)."),
    Option('decoupled_wd', False, flag, 'bool',
           "Decoupled weight decay (Loshchilov & Hutter, 2019; ``torch.optim.AdamW``)."),
    Option('lazy_update', True, flag, 'bool',
           "With a ``row_sparse`` gradient, update only the rows present in it."),
    Option('nonfinite', 'skip', one_of(NONFINITE_POLICIES), "{'skip', 'raise'}",
           "What to do with a gradient holding NaN or Inf: leave that parameter, its "
           "moments and its step count untouched and warn (``'skip'``, counted in "
           "``num_skipped``), or raise ``FloatingPointError`` before modifying anything "
           "the update call received (under ``gluon.Trainer`` without "
           "``update_on_kvstore``, the whole step: see ``aggregate_num``; with it, the "
           "error comes out of the next ``Trainer.step``: see :mod:`adam_plugin.deferred`). "
           "``num_skipped`` counts skipped updates of parameter copies: with several "
           "devices updated by the Trainer, one skip per device."),
    Option('fused', True, flag, 'bool',
           "Take the fast routes of :mod:`adam_plugin.dispatch`: one compiled, "
           "multi-threaded pass over memory for dense float32/float64 parameters on CPU "
           "(all parameters of a ``Trainer`` step in one call), MXNet's ``adam_update`` "
           "where it is exact on other devices. ``False`` updates every parameter with "
           "the NDArray ops of :mod:`adam_plugin.textbook`. Both agree to float rounding."),
    Option('wd', 0.0, number(lambda x: 0.0 <= x < math.inf, '>= 0'), 'float',
           "Weight decay, >= 0: coupled L2 (``g + wd * w``), or decoupled with "
           "``decoupled_wd``.", mxnet=True),
    Option('rescale_grad', 1.0, number(lambda x: 0.0 < x < math.inf, '> 0'), 'float',
           "Factor applied to the gradient first; ``Trainer.step(batch_size)`` sets it "
           "to ``1 / batch_size``.", mxnet=True),
    Option('clip_gradient', None,
           none_or(number(lambda x: 0.0 < x < math.inf, 'None or > 0')), 'float or None',
           "Clip the rescaled gradient to ``[-clip_gradient, clip_gradient]``; ``None`` "
           "does not clip.", mxnet=True),
    Option('multi_precision', False, flag, 'bool',
           "Step float16 weights on a float32 master copy.", mxnet=True),
)


def checked(values):
    """``values`` (keyword -> value) with every option checked, defaults filled in.

    Keys that are not options are left as they are.
    """
    out = dict(values)
    for option in OPTIONS:
        out[option.name] = option.check(option.name, values.get(option.name, option.default))
    return out


def parameters_doc():
    """The numpydoc ``Parameters`` entries of the options."""
    lines = []
    for option in OPTIONS:
        lines.append(f"{option.name} : {option.type}, default {option.default!r}")
        lines += textwrap.wrap(option.doc, 84, initial_indent='    ', subsequent_indent='    ',
                               break_on_hyphens=False)
    return "\n".join(lines)
