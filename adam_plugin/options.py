"""``MyAdam``'s options, declared once: name, default, check and doc of each.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

:class:`MyAdam`'s signature, its ``__init__`` and ``__setstate__`` (so both
``Trainer.load_states`` and :func:`adam_plugin.checkpoint.load_states`),
``set_learning_rate``, the ``Parameters`` section of its docstring and the command
line's flags (:mod:`adam_plugin.chapter.cli`) all read :data:`OPTIONS`;
``textbook.Step``'s fields are checked against it here, and tests hold the README's
signature and options table and docs/rule.md's list of checks to it. Adding an
option is one row here, plus its use in the update rule (:mod:`adam_plugin.textbook`)
and the kernel (and a line in those docs). A states file saved before an option
existed loads with the option's default.

Every check raises ``ValueError("Invalid NAME: VALUE (expected WHAT)")`` and
returns the value to keep. Like ``torch.optim``'s ``if not 0.0 <= lr``, a check
is written so that NaN fails it.
"""
import itertools
import math
import numbers
import sys
import textwrap
from typing import Callable, NamedTuple, Optional

import mxnet.lr_scheduler as _lrs  # a submodule: a KVStore server imports us mid-`import mxnet`
import numpy

from .textbook import EPSILON_MODES, Step

NONFINITE_POLICIES = ('skip', 'raise')

# With aggregate_num > 0, MXNet's Updater hands a whole list of parameters to one
# update call (one list per dtype, up to this many): a 'raise' is then decided for
# the whole step before anything changes, and the fused route makes one launch.
AGGREGATE_NUM = 1 << 20


class InvalidOption(ValueError):
    """A value an option (or the bookkeeping of a states file) may not take."""


def _refuse(name, value, expected):
    error = InvalidOption(f"Invalid {name}: {_shown(value)} (expected {expected})")
    error.expected = expected  # for a message of the caller's (MyAdam's per-step checks)
    raise error


def _shown(value):
    """``repr(value)``, or an int's size if it has more digits than Python prints (4300)."""
    try:
        return repr(value)
    except ValueError:
        return f"{'a negative' if value < 0 else 'an'} int of {value.bit_length()} bits"


def number(ok, expected, cast=None, zero=None):
    """A check: a real number (not a bool, not a string) with ``ok(float(value))``.

    A string is not a number here, even one that ``float`` would read: MXNet keeps
    ``learning_rate`` as given, and ``'0.1'`` would fail at the first step.
    ``cast`` (e.g. ``float``) is applied to the value kept. ``zero``: why 0 is
    refused, added to the message when the value is 0. The message of a value
    that is not a number says so, and that of a NaN or Inf says which it is.
    """
    def check(name, value):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            _refuse(name, value, f"{expected}; a {type(value).__name__} is not a number")
        try:
            real = float(value)
        except OverflowError:  # an int beyond float's range
            _refuse(name, value, f"{expected}, within a float's range")
        if not ok(real):
            if zero and real == 0:
                _refuse(name, value, f"{expected}: with 0, {zero}")
            if not math.isfinite(real):
                _refuse(name, value,
                        f"{expected}, not {'NaN' if math.isnan(real) else 'infinite'}")
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
    """A check: one of ``choices`` (kept as its ``choices``, for the command line's help)."""
    def check(name, value):
        if not (isinstance(value, str) and value in choices):
            _refuse(name, value, f'one of {choices}')
        return value
    check.choices = choices
    return check


def integer(low, high=None):
    """A check: an int (not a bool) >= ``low`` (and <= ``high``, if given)."""
    def check(name, value):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                and value >= low):
            _refuse(name, value, f'an int >= {low}')
        if high is not None and value > high:
            _refuse(name, value, f'an int <= {high}')
        return value
    return check


# The largest step or update count a states file may hold, 2**53: the step reads a
# count as a float64 (the bias correction ``beta ** t``), exact for every int up to
# 2**53; far beyond it (10**400) the conversion overflows and the step raises. No run
# reaches it: 2**53 steps at a million steps a second take 285 years.
MAX_COUNT = 2 ** 53


def counts(name, value):
    """A check: MXNet's per-index update counts, ``{index: count}``, each count from 1
    to :data:`MAX_COUNT` (``Optimizer._update_count`` starts an index at
    ``begin_num_update`` and adds 1 before the step uses it: a count of 0 would
    bias-correct a used state as new)."""
    if type(value) is not dict:
        _refuse(name, value, 'a dict of parameter index -> update count')
    for index, count in value.items():
        integer(0)(f"{name} key", index)
        integer(1, MAX_COUNT)(f"{name}[{index}]", count)
    return value


def step_count(name, value):
    """A check: the step count that ends a parameter's state, ``[t]`` (a one-item list, so
    that the update counts in place), ``t`` an int from 0 (``begin_num_update`` until the
    parameter's first update; the update adds 1 before it uses it) to :data:`MAX_COUNT`."""
    if not (type(value) is list and len(value) == 1):
        _refuse(name, value, 'a list holding one step count')
    integer(0, MAX_COUNT)(name, value[0])
    return value


def per_device_counts(name, value):
    """A check: ``{device: {index: count}}`` (``Optimizer._all_index_update_counts``)."""
    if type(value) is not dict or not value:
        _refuse(name, value, 'a dict of device -> update counts')
    for device, device_counts in value.items():
        integer(0)(f"{name} key", device)
        counts(f"{name}[{device}]", device_counts)
    return value


def shapes(name, value):
    """A check: ``{index: shape}`` of the parameters a file was saved for."""
    if not (type(value) is dict and all(
            type(shape) is tuple and all(type(n) is int for n in shape)
            for shape in value.values())):
        _refuse(name, value, 'None or a dict of parameter index -> shape')
    for index in value:
        integer(0)(f"{name} key", index)
    return value


_FINITE = number(lambda x: 0.0 <= x < math.inf, '>= 0')
_FACTOR = number(lambda x: 0.0 < x <= 1.0, 'in (0, 1]')


def _increasing_steps(name, value):
    if not (type(value) is list and value and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in value)
            and value[0] >= 1 and all(a < b for a, b in itertools.pairwise(value))):
        _refuse(name, value, 'an increasing list of ints >= 1')
    return value


# MXNet's scheduler classes -> the constraints of the fields they add (their
# constructors' own checks, and what keeps __call__ finite and returning).
SCHEDULER_FIELDS = {
    _lrs.LRScheduler: {'base_lr': _FINITE, 'warmup_steps': integer(0),
                       'warmup_begin_lr': _FINITE, 'warmup_final_lr': _FINITE,
                       'warmup_mode': one_of(('linear', 'constant'))},
    _lrs.FactorScheduler: {'step': integer(1), 'factor': _FACTOR,
                           'stop_factor_lr': _FINITE, 'count': integer(0)},
    _lrs.MultiFactorScheduler: {'step': _increasing_steps, 'cur_step_ind': integer(0),
                                'factor': _FACTOR, 'count': integer(0)},
    _lrs.PolyScheduler: {'power': number(lambda x: abs(x) < math.inf, 'finite'),
                         'base_lr_orig': _FINITE, 'max_update': integer(1),
                         'final_lr': _FINITE, 'max_steps': integer(0)},
    _lrs.CosineScheduler: {'base_lr_orig': _FINITE, 'max_update': integer(1),
                           'final_lr': _FINITE, 'max_steps': integer(0)},
}


def scheduler(name, value):
    """A check: None, or a callable schedule; MXNet's own classes' fields by their
    constraints (a subclass of the user's may keep other fields: not checked)."""
    if value is None:
        return value
    if not callable(value):
        _refuse(name, value, 'None or a callable lr_scheduler')
    if type(value) not in SCHEDULER_FIELDS:
        return value
    fields = vars(value)
    for cls in type(value).__mro__:
        for field, check in SCHEDULER_FIELDS.get(cls, {}).items():
            if field not in fields:
                _refuse(f"{name}.{field}", '<missing>', f"{type(value).__name__} to have it")
            check(f"{name}.{field}", fields[field])
    if isinstance(value, _lrs.MultiFactorScheduler) and fields['cur_step_ind'] > len(fields['step']):
        _refuse(f"{name}.cur_step_ind", fields['cur_step_ind'], f"<= {len(fields['step'])}")
    return value


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
           number(lambda x: 0.0 < x < math.inf, '> 0', cast=float,
                  zero='a zero gradient element makes the update 0 / 0'),
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
           "``num_skipped``; warned at the first skip of a parameter and every "
           "10th in a row after it, each warning with its counts), or raise ``FloatingPointError`` before "
           "modifying anything the update call received (under ``gluon.Trainer`` without "
           "``update_on_kvstore``, the whole step: see ``aggregate_num``; with it, one "
           "parameter, and the error comes out of the same ``Trainer.step`` or "
           "``Module.update`` through the KVStore's callback: see docs/mxnet-modes.md). "
           "``num_skipped`` counts skipped updates of parameter copies: with several "
           "devices updated by the Trainer, one skip per device. A second moment that "
           "overflows to Inf although the gradient was finite (``|g|`` near "
           "``sqrt(max / (1 - beta2))``: 8.1e3 for float16, 5.8e20 for float32, with "
           "the default ``beta2``) is found after the step, which was applied: that "
           "parameter's elements with ``v = Inf`` no longer move; so is a weight that a "
           "step with finite inputs takes to Inf (a float16 weight past 65504). Each counts "
           "as a skip (warned the same way) or, with ``'raise'``, raises "
           "``FloatingPointError``."),
    Option('fused', True, flag, 'bool',
           "Take the fast routes of the package's dispatch (docs/mxnet-modes.md): one compiled, "
           "multi-threaded pass over memory for float16 (with or without "
           "``multi_precision``), float32 and float64 parameters on CPU, dense or "
           "``row_sparse`` (a lazy update touching only the gradient's rows), all "
           "parameters of a ``Trainer`` step in one call; MXNet's ``adam_update`` "
           "where it is exact on other devices. ``False`` updates every parameter with "
           "the NDArray ops of :mod:`adam_plugin.textbook`. Both agree to float rounding."),
    Option('yogi', False, flag, 'bool',
           "Yogi's second moment (Zaheer et al., 2018, as in d2l.ai's Adam section): "
           "``v`` moves towards ``g * g`` by at most ``(1 - beta2) * g * g`` a step. Its "
           "authors and d2l use ``epsilon=1e-3``, the default of ``'myyogi'``."),
    Option('max_skips', 50, none_or(integer(1)), 'int or None',
           "Under ``nonfinite='skip'``, raise ``FloatingPointError`` when one parameter "
           "has had this many bad updates in a row (its copies' updates counted one by one: "
           "with several devices updated by the Trainer, one per device and step), before "
           "modifying anything: a run whose every step is skipped (a NaN stuck in an "
           "accumulated gradient, a NaN weight) cannot go on quietly. 50 is far above "
           "the 16 overflows in a row that a dynamic loss scaler (MXNet's AMP, starting "
           "at 2**16 and halving on each) needs to reach a scale of 1, and still ends "
           "such a run within 50 steps. ``None``: never raise."),
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
    Option('lr_scheduler', None, scheduler, 'LRScheduler or None',
           "The learning rate at update ``num_update`` is ``lr_scheduler(num_update)``. "
           "MXNet's scheduler classes are checked by their own constraints (``step >= 1``, "
           "``0 < factor <= 1``, finite rates, ...).", mxnet=True),
)


def check_step_fields(fields):
    """Raise ``TypeError`` unless ``fields`` (:class:`adam_plugin.textbook.Step`'s) are
    ``t``, then options by the attribute the optimizer keeps each in: ``lr`` and ``wd``
    (which the step takes per parameter), then the options of the rule. MyAdam fills a
    Step from its attributes of these names."""
    not_options = [f for f in fields[1:] if f not in {option.key for option in OPTIONS}]
    if fields[:3] != ('t', 'lr', 'wd') or not_options:
        raise TypeError("textbook.Step's fields must be 't', 'lr', 'wd', then options of "
                        "adam_plugin.options.OPTIONS by the attribute the optimizer keeps "
                        f"each in; not {fields}" + (f" ({', '.join(map(repr, not_options))}: "
                                                    "no option's)" if not_options else ''))


check_step_fields(Step._fields)


class Kept(NamedTuple):
    """An attribute of the optimizer's bookkeeping that a states file holds.

    ``default`` is what a file saved before it existed means by it; ``REQUIRED``
    if every file holds it (MXNet's own). ``update_count``: it counts updates (the
    states inspector shows it so, not as a setting).
    """
    key: str
    default: object
    check: Callable
    update_count: bool = False


REQUIRED = object()

# The bookkeeping a states file holds besides the options.
KEPT = (
    Kept('num_update', REQUIRED, integer(0, MAX_COUNT), update_count=True),
    Kept('begin_num_update', REQUIRED, integer(0, MAX_COUNT), update_count=True),
    Kept('_all_index_update_counts', REQUIRED, per_device_counts, update_count=True),
    Kept('_index_update_count', REQUIRED, counts, update_count=True),
    Kept('num_skipped', 0, integer(0), update_count=True),
    # MXNet's Updater loops ``current_index += aggregate_num``: 0 never returns.
    Kept('aggregate_num', AGGREGATE_NUM, integer(1)),
    # The Trainer's parameters when saved; None: unknown (an older file, or no Trainer).
    Kept('param_shapes', None, none_or(shapes)),
)


# What a step reads, by the attribute it reads it from -> the check of the option (or of
# the kept bookkeeping) of that name. ``lr`` is the rate itself: None means "ask
# lr_scheduler" only to the constructor.
STEP_CHECKS = {**{o.key: o.check for o in OPTIONS}, 'lr': LEARNING_RATE,
               **{k.key: k.check for k in KEPT}}

# The numbers a step uses in the weight's dtype. Not the betas: the step takes
# ``1 - beta`` and ``1 - beta**t`` in float64, so a beta that is 1.0 in float32
# (0.99999999) still steps as given.
ROUNDED = ('lr', 'wd', 'rescale_grad', 'clip_gradient', 'epsilon')


def step_value(name, value, dtypes=None):
    """``value`` of the attribute ``name`` checked by its check in :data:`STEP_CHECKS`,
    as a step takes it (a number that is not an int as a float).

    With ``dtypes``, ``(computed_in, stored_in)``, a number of :data:`ROUNDED` must
    pass its check once rounded to ``computed_in``, the dtype the step computes in
    (1e39 is Inf in float32, 1e-46 is 0), and be finite in ``stored_in``, the dtype of
    the weight the step writes (float16 for a float16 weight without a float32 master
    copy, where 7e4 is Inf).

    Raises
    ------
    InvalidOption
        Its ``expected`` says what the value is not.
    """
    value = STEP_CHECKS[name](name, value)
    if dtypes is not None and name in ROUNDED and value is not None and dtypes[0].kind == 'f':
        computed_in, stored_in = dtypes
        rounded = float(numpy.array(value, computed_in))
        try:
            STEP_CHECKS[name](name, rounded)
        except InvalidOption as error:
            _refuse(name, value, f"{error.expected}: in {computed_in.name} it is {rounded!r}")
        if not math.isfinite(numpy.array(value, stored_in)):
            _refuse(name, value, f"finite in {stored_in.name}, the weight's dtype")
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)  # MXNet's scalar operators refuse a Fraction
        if 0.0 < abs(value) < sys.float_info.min:
            _refuse(name, value, "0 or a normal float64 number: MXNet's scalar operators cannot "
                    "take a subnormal one")
    return value  # None, a string, a flag, an int


def checked(values):
    """``values`` (keyword -> value) with every option checked, defaults filled in.

    Keys that are not options are left as they are.
    """
    out = dict(values)
    for option in OPTIONS:
        out[option.name] = option.check(option.name, values.get(option.name, option.default))
    if out['learning_rate'] is None and out['lr_scheduler'] is None:  # MXNet would take 0.01
        _refuse('learning_rate', None, 'a number when there is no lr_scheduler')
    return out


def checked_state(state):
    """An optimizer's pickled ``state`` checked as :func:`checked` checks arguments.

    An option or bookkeeping the state lacks (saved before it existed) takes its
    default; lacking one that every file holds raises ``ValueError`` naming it.
    """
    values = checked({o.name: state[o.key] for o in OPTIONS if o.key in state})
    state = {**state, **{o.key: values[o.name] for o in OPTIONS}}
    for kept in KEPT:
        if kept.key not in state and kept.default is REQUIRED:
            _refuse(kept.key, '<missing>', 'every states file to hold it')
        state[kept.key] = kept.check(kept.key, state.get(kept.key, kept.default))
    highest = max([count for device in state['_all_index_update_counts'].values()
                   for count in device.values()] + list(state['_index_update_count'].values()),
                  default=0)
    if state['num_update'] < highest:  # Optimizer._update_count keeps it at their largest
        _refuse('num_update', state['num_update'],
                f'>= every update count, of which the file holds {highest}: lr_scheduler '
                'reads it')
    return state


def state_defaults():
    """Attribute -> the value a states file that lacks it means."""
    return {**{o.key: o.default for o in OPTIONS},
            **{k.key: k.default for k in KEPT if k.default is not REQUIRED}}


def parameters_doc():
    """The numpydoc ``Parameters`` entries of the options."""
    lines = []
    for option in OPTIONS:
        lines.append(f"{option.name} : {option.type}, default {option.default!r}")
        lines += textwrap.wrap(option.doc, 84, initial_indent='    ', subsequent_indent='    ',
                               break_on_hyphens=False)
    return "\n".join(lines)
