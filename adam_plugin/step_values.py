"""What a step of MyAdam reads, checked where it reads it: :class:`StepValues`.

Internal: not part of the public API (see :mod:`adam_plugin`); its names may change.

Every value the rule reads is checked by its check in the option table
(:func:`adam_plugin.options.step_value`), in the dtypes of the parameters it steps, each
time a step reads it: an attribute set after the constructor (a one-cycle schedule's
``beta1``), what ``lr_scheduler`` returns, a Parameter's ``lr_mult`` and ``wd_mult``,
``rescale_grad`` from ``Trainer.step``. What was found good is remembered by value, type
and dtypes (``True == 1 == 1.0``, and a value may be finite in float64 only), so a step
pays a dict lookup per call and per parameter.
"""
import operator

from . import options
from .textbook import Step

# What StepValues.rule reads of the optimizer's attributes (one C call): the rest of a Step,
# of the same names, then wd and what else the update reads.
_RULE_FIELDS = Step._fields[3:]
assert Step._fields[:3] == ('t', 'lr', 'wd')
_READ_NAMES = _RULE_FIELDS + ('wd', 'nonfinite', 'max_skips', 'begin_num_update')
_READ = operator.attrgetter(*_READ_NAMES)

# Said in MyAdam's messages about them, after "the optimizer's attribute NAME".
_NOTES = {'rescale_grad': ', which gluon.Trainer sets to 1 / batch_size in '
                          'Trainer.step(batch_size)',
          'begin_num_update': ", a parameter's step count before its first update"}

# Values MyAdam remembers as checked (see StepValues.rule), at most.
REMEMBERED = 4096


def _get(table, key):
    """``table.get(key)``, None for an unhashable key."""
    try:
        return table.get(key)
    except TypeError:
        return None


def _times(value, multiplier):
    """``value * multiplier``, or ``multiplier`` when that is not a number (its check
    then refuses it)."""
    try:
        return value * multiplier
    except TypeError:
        return multiplier


class StepValues:
    """The values the steps of ``optimizer`` read, checked (see the module's docstring).

    Parameters
    ----------
    optimizer : MyAdam
        Whose attributes, ``lr_scheduler``, ``param_dict`` (``lr_mult``, ``wd_mult``) and
        ``num_update`` a step reads.
    name : callable
        ``name(index)``, the parameter as error messages call it.
    """

    def __init__(self, optimizer, name):
        self.optimizer, self.name = optimizer, name
        self._checked = {}  # values a step reads, with their types and dtypes -> found good

    def steps(self, indices, ts, rule, dtypes, num_update):
        """The Step of each parameter of ``indices`` whose new step count in ``ts`` is not
        None (None for the others), with ``rule`` (:meth:`rule`) and the parameters'
        ``dtypes`` (:attr:`adam_plugin.dispatch.Batch.dtypes`); ``num_update`` is the
        optimizer's before these counts.

        Each parameter takes the learning rate at the ``num_update`` its own count left
        (the largest count so far), as MXNet's ``Optimizer.update`` gives, which counts
        and asks ``_get_lr`` parameter by parameter: the scheduler is asked once per run
        of parameters that saw the same ``num_update``. Parameters stepped alike (the
        same ``t``, ``lr`` and ``wd``) share one Step object.
        """
        params, out, made, base = self.optimizer.param_dict, [], {}, None
        for index, t, pair in zip(indices, ts, dtypes, strict=True):
            if t is None:
                out.append(None)
                continue
            if base is None or t > num_update:  # num_update moves: a new run
                num_update = max(num_update, t)
                base, rates_of = self.base_lr(num_update), {}  # rates_of: for this run
            param = params.get(index)  # a Trainer's: its multipliers, else by index
            key = (index if param is None else (param.lr_mult, param.wd_mult), pair)
            rates = _get(rates_of, key)
            if rates is None:  # checked (an unhashable multiplier is refused there)
                rates = rates_of[key] = self._rates(index, base, rule[1], pair, num_update)
            step = made.get((t, rates))
            if step is None:
                step = made[t, rates] = Step(t, *rates, *rule[0])
            out.append(step)
        return out

    def rule(self, batch):
        """The Step's fields after ``t``, ``lr`` and ``wd``, and ``wd``, as the step of
        ``batch`` reads them from the optimizer's attributes (``nonfinite``, ``max_skips``
        and ``begin_num_update`` are checked with them); ``ValueError`` naming the first
        one that is not good in every dtype of ``batch``."""
        values = _READ(self.optimizer)
        key = (values, tuple(map(type, values)), batch.distinct_dtypes)
        rule = _get(self._checked, key)
        if rule is None:
            update = self.optimizer.num_update + 1
            for dtypes in (None, *batch.distinct_dtypes):  # as given, then in each dtype
                param = dtypes and batch.name(batch.dtypes.index(dtypes))
                checked = [self._value(name, value, dtypes, update, param,
                                       lambda name=name: "the optimizer's attribute "
                                                         f"{name}{_NOTES.get(name, '')}")
                           for name, value in zip(_READ_NAMES, values, strict=True)]
            rule = self._remember(key, (tuple(checked[:len(_RULE_FIELDS)]),
                                        checked[len(_RULE_FIELDS)]))
        return rule

    def base_lr(self, num_update):
        """The learning rate before ``lr_mult`` at ``num_update``: ``lr_scheduler(num_update)``,
        or ``lr`` without one; ``ValueError`` unless it is a number >= 0 and finite."""
        opt = self.optimizer
        value = opt.lr if opt.lr_scheduler is None else opt.lr_scheduler(num_update)
        key = ('lr', value, type(value))
        lr = _get(self._checked, key)
        if lr is None:
            lr = self._remember(key, self._value('lr', value, None, num_update, None,
                                                 lambda: self._lr_source(value, num_update)))
        return lr

    def _lr_source(self, base, num_update):
        """Where the learning rate ``base`` at ``num_update`` came from, as error messages
        say it."""
        opt = self.optimizer
        if opt.lr_scheduler is None:
            return f"learning_rate {base!r}"
        return (f"lr_scheduler({num_update}), a {type(opt.lr_scheduler).__name__}, "
                f"returned {base!r}")

    def step(self, index, t, base, rule, dtypes, num_update):
        """The Step of parameter ``index``: its count ``t``, the learning rate ``base`` (at
        ``num_update``) times its ``lr_mult``, ``rule[1]`` (``wd``) times its ``wd_mult``,
        both checked in its ``dtypes``, and ``rule[0]``."""
        return Step(t, *self._rates(index, base, rule[1], dtypes, num_update), *rule[0])

    def _rates(self, index, base, base_wd, dtypes, num_update):
        """``(lr, wd)`` of parameter ``index``: ``base`` times its ``lr_mult``, ``base_wd``
        times its ``wd_mult``, each checked in its ``dtypes``."""
        param = self.optimizer.param_dict.get(index)  # a Trainer's: both multipliers
        if param is None:
            lr_mult, wd_mult = (self._multiplier(index, kind)[0] for kind in ('lr_mult', 'wd_mult'))
        else:
            lr_mult, wd_mult = param.lr_mult, param.wd_mult
        lr, wd = _times(base, lr_mult), _times(base_wd, wd_mult)
        key = (lr, type(lr), wd, type(wd), dtypes)
        rates = _get(self._checked, key)
        if rates is None:
            rates = self._remember(key, (
                self._value('lr', lr, dtypes, num_update, self.name(index),
                            lambda: self._times_source(self._lr_source(base, num_update),
                                                       index, 'lr_mult')),
                self._value('wd', wd, dtypes, num_update, self.name(index),
                            lambda: self._times_source(f"wd {base_wd!r}", index, 'wd_mult'))))
        return rates

    def _multiplier(self, index, kind, describe=False):
        """``(value, where)``: parameter ``index``'s ``kind``, ``'lr_mult'`` or
        ``'wd_mult'``, where MXNet's ``_get_lrs`` and ``_get_wds`` find it (1.0 when
        nowhere); with ``describe``, ``where`` is that place as error messages say it
        (None when nowhere)."""
        param = self.optimizer.param_dict.get(index)
        if param is not None:
            return getattr(param, kind), describe and f"param '{param.name}' {kind}"
        multipliers = getattr(self.optimizer, kind)
        key = index if index in multipliers else self.optimizer.idx2name.get(index)
        if key in multipliers:
            return multipliers[key], describe and f"{kind}[{key!r}]"
        return 1.0, None

    def _times_source(self, source, index, kind):
        """``source`` times parameter ``index``'s ``kind``, as error messages say it."""
        value, where = self._multiplier(index, kind, describe=True)
        return source if where is None else f"{source} times {where} {value!r}"

    def _value(self, name, value, dtypes, update, param, source):
        """:func:`adam_plugin.options.step_value`, its error a ``ValueError`` that names
        the value, the update, the parameter (when given) and where the value came from,
        ``source()``."""
        try:
            return options.step_value(name, value, dtypes)
        except options.InvalidOption as error:
            where = f" for {param}" if param else ""
            raise ValueError(
                f"myadam: Invalid {'learning rate' if name == 'lr' else name}: {value!r} at "
                f"update {update}{where} ({source()}; expected {error.expected}); nothing was "
                "updated") from None

    def _remember(self, key, found):
        """Keep ``found`` for ``key`` (the last :data:`REMEMBERED` at most); return it."""
        if len(self._checked) >= REMEMBERED:  # a schedule gives a new rate each step
            self._checked.clear()
        try:
            self._checked[key] = found
        except TypeError:
            pass
        return found
