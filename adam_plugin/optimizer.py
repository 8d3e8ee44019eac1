"""``MyAdam``: the Adam optimizer registered with MXNet as ``'myadam'``."""
__all__ = ['MyAdam', 'MyYogi']

import inspect
import textwrap

import mxnet.ndarray as nd
from mxnet.optimizer import Optimizer

from . import dispatch, distributed, mxnet_internals, options
from .counts import BadUpdates, StepCounts
from .deferred import ErrorCarrier
from .engine import EngineQueue
from .options import AGGREGATE_NUM, OPTIONS
from .step_values import StepValues


@Optimizer.register
class MyAdam(Optimizer):
    r"""Adam (Kingma & Ba, 2014) as an MXNet optimizer, registered as ``'myadam'``.

    Per parameter, with ``t`` its own step count, kept in its state (see
    :meth:`create_state`)::

        g     = rescale_grad * grad
        g     = g + wd * w                                  (coupled L2, default)
        g     = clip(g, -clip_gradient, clip_gradient)      (if clip_gradient)
        m     = beta1 * m + (1 - beta1) * g
        v     = beta2 * v + ((1 - beta2) * g) * g
        v     = v + ((1 - beta2) * g) * g * sign(g * g - v)  (yogi, instead)
        vmax  = max(vmax, v), used in place of v            (amsgrad)
        m_hat = m / (1 - beta1**t),   v_hat = v / (1 - beta2**t)
        u     = m_hat / (sqrt(v_hat) + epsilon)             epsilon_mode='outside'
        u     = m_hat / sqrt(v_hat + epsilon)               epsilon_mode='inside'
        u     = m_hat / (sqrt(v_hat) + epsilon / sqrt(1 - beta2**t))   'hat'
        w     = w * (1 - lr * wd)                           (decoupled_wd, no L2 in g)
        w     = w - lr * u

    The defaults equal ``torch.optim.Adam``; ``decoupled_wd=True`` equals
    ``torch.optim.AdamW``; ``epsilon_mode='hat'`` agrees with ``mx.optimizer.Adam`` to
    the float32 rounding of each step (MXNet's ``adam_update`` takes float32 betas);
    ``yogi=True, epsilon=1e-3`` is d2l.ai's Yogi (registered as ``'myyogi'``, see
    :class:`MyYogi`).

    Parameters
    ----------
{parameters}
    **kwargs
        Passed to :class:`mxnet.optimizer.Optimizer`: ``param_idx2name``,
        ``begin_num_update``, ...

    Raises
    ------
    ValueError
        If a hyperparameter is out of range, NaN or not a number, or a flag is not
        True or False (1 or 0), or ``learning_rate`` is None without an
        ``lr_scheduler``; the message names it.
    TypeError
        For a keyword that neither ``MyAdam`` nor ``mxnet.optimizer.Optimizer`` takes,
        naming the valid one meant: for another library's name (PyTorch's ``lr``,
        ``betas``, ``eps``, ``weight_decay``, ...) MXNet's, for a typo the nearest.
    """

    # What a states file saved before an attribute existed means by it (the safe loader's
    # list of attributes a file may lack).
    state_defaults = options.state_defaults()

    def __init__(self, *args, **kwargs):
        given = _SIGNATURE.bind(self, *args, **kwargs).arguments
        del given['self']
        _refuse_unknown(type(self), given.get('kwargs', {}))
        values = options.checked(given)
        if 'begin_num_update' in given.get('kwargs', {}):  # Optimizer's: the first t is it + 1
            options.STEP_CHECKS['begin_num_update']('begin_num_update',
                                                    given['kwargs']['begin_num_update'])
        self._start_run()  # before Optimizer sets rescale_grad
        super().__init__(**{o.name: values[o.name] for o in OPTIONS if o.mxnet},
                         **given.get('kwargs', {}))
        for option in OPTIONS:
            if not option.mxnet:
                setattr(self, option.key, values[option.name])
        self.num_skipped = 0
        self.param_shapes = None  # set on saving, checked on loading: see param_dict
        self.aggregate_num = AGGREGATE_NUM

    def _start_run(self):
        """Make the attributes of this process's run, :data:`_RUN`, which are not pickled."""
        for name, make in _RUN.items():
            setattr(self, name, make(self))

    def __getstate__(self):
        self._carrier.raise_pending()  # never save over an update that failed
        self._engine.take_all()
        # a distributed Trainer sending us to its servers: see adam_plugin.distributed
        distributed.watch_worker(mxnet_internals.in_distributed_trainer(self.param_dict))
        state = super().__getstate__()
        for name in _RUN:
            del state[name]
        if self.param_dict:
            state['param_shapes'] = {i: tuple(p.shape) for i, p in self.param_dict.items()}
        return state

    def __setstate__(self, state):
        """Checked as :meth:`__init__` checks its arguments (so ``Trainer.load_states``
        refuses a bad file too); see :func:`adam_plugin.options.checked_state`."""
        super().__setstate__(options.checked_state(state))
        self._start_run()
        self._counts.load(self._all_index_update_counts)

    @property
    def param_dict(self):
        """Parameter index -> ``gluon.Parameter``, set by the Trainer (also on loading)."""
        return self.__dict__['param_dict']

    @param_dict.setter
    def param_dict(self, params):
        try:
            self.check_fits(params)
        except ValueError as err:  # Trainer.load_states sets param_dict last
            raise ValueError(f"{err}. A Trainer that loaded them with Trainer.load_states "
                             "holds them now; adam_plugin.checkpoint.load_states refuses "
                             "such a file before changing anything") from None
        self.__dict__['param_dict'] = params

    def check_fits(self, params):
        """``ValueError`` unless ``params`` (index -> ``gluon.Parameter``) are those the
        optimizer was saved for (``param_shapes``): the same indices, each of the same
        shape (a dimension not known yet, 0 or -1, fits any). Nothing to check if it
        was not saved with a Trainer's parameters."""
        saved = self.__dict__.get('param_shapes')  # Optimizer.__init__ sets params first
        if params and saved is not None:
            _check_fits(saved, params)

    @property
    def aggregate_num(self):
        """The most parameters MXNet's ``Updater`` hands one update call: all of them
        (``adam_plugin.options.AGGREGATE_NUM``, one kernel pass steps them together),
        but none for an Updater a KVStore makes for itself (``KVStore.set_optimizer``,
        on a worker or a server): the KVStore calls it one parameter at a time, and
        the Updater's aggregating loop would only add Python to each call."""
        if mxnet_internals.read_by_kvstore_updater():
            return 0
        return self.__dict__['aggregate_num']

    @aggregate_num.setter
    def aggregate_num(self, value):
        self.__dict__['aggregate_num'] = value

    @property
    def rescale_grad(self):
        """Gradient scale; ``Trainer.step`` sets it first thing, which raises an error
        an update left inside the KVStore callback (see docs/mxnet-modes.md)."""
        return self.__dict__['rescale_grad']

    @rescale_grad.setter
    def rescale_grad(self, value):
        self._carrier.raise_pending()
        self._engine.take_all()
        self.__dict__['rescale_grad'] = value

    def set_learning_rate(self, lr):
        """Set the learning rate; a negative or NaN ``lr`` raises ``ValueError``."""
        super().set_learning_rate(options.LEARNING_RATE('learning_rate', lr))

    def create_state(self, index, weight):
        """``(m, v[, vmax], [t])``: zero moments ``m`` and ``v``, plus ``vmax`` with
        AMSGrad, on ``weight``'s context and dtype, then the parameter's step count ``t``
        in a one-item list, ``begin_num_update`` until its first update (each update
        adds 1 before using it; a skipped one does not).

        Kept in the state, the step count goes wherever the moments go: into every
        device's Updater when a states file is loaded into another device layout, and
        into the files of ``Module.save_optimizer_states``, which hold the Updater's
        states but not the optimizer. MXNet's per-device counts in the optimizer
        (``_index_update_count``) and ``num_update``, which ``lr_scheduler`` reads,
        follow it at each update.
        """
        moments = 3 if self.amsgrad else 2
        return tuple(nd.zeros(weight.shape, weight.context, dtype=weight.dtype)
                     for _ in range(moments)) + ([self.begin_num_update],)

    def update(self, index, weight, grad, state):
        """Update one parameter (or lists of them) in place; see the class docstring.

        An exception raised inside the KVStore's callback reaches the user from the
        call that ran it, ``Trainer.step``, ``Module.update`` (see docs/mxnet-modes.md).
        """
        self._carrier.run(self._update_impl, index, weight, grad, state, False,
                          mxnet_internals.callers_caller())

    def update_multi_precision(self, index, weight, grad, state):
        """As :meth:`update`; float16 weights step on their float32 master copy."""
        self._carrier.run(self._update_impl, index, weight, grad, state,
                          self.multi_precision, mxnet_internals.callers_caller())

    def _update_impl(self, indices, weights, grads, states, multi_precision, caller):
        """The update; ``caller``, the frame that called :meth:`update` (or
        :meth:`update_multi_precision`): where :class:`adam_plugin.engine.EngineQueue`
        starts to look for the KVStore's callback up the stack."""
        if not isinstance(indices, (list, tuple)):  # one parameter, as the KVStore calls
            if self._engine.queue(indices, weights, grads, states, multi_precision, caller):
                return
            indices, weights, grads, states = [indices], [weights], [grads], [states]
        one = len(indices) == 1
        distributed.refuse_worker_update(  # update_on_kvstore=False in a distributed job
            mxnet_internals.in_distributed_trainer(self.param_dict, indices[:1]))
        self._engine.take_all()
        batch = self._batches(self, indices, weights, grads, states, multi_precision)
        rule = self._values.rule(batch)
        if one:
            self._engine.plan(indices[0], states[0], multi_precision, batch, caller)

        def steps_of(ts, num_update):
            return self._values.steps(indices, ts, rule, batch.dtypes, num_update)

        if (batch.kernel_groups and self._bad.skips_alone(indices)
                and (self.lr_scheduler is None or self._counts.alike(batch.step_counts))):
            # each gradient checked by the kernel as it steps (see StepCounts.counted_first)
            steps, finite, overflow = self._counts.counted_first(
                indices, batch.step_counts, steps_of, batch.checked_apply)
        else:
            finite = batch.finite()
            self._bad.refuse_bad_gradients(indices, finite)
            steps = self._counts.counted(indices, batch.step_counts, finite, steps_of)
            overflow = batch.apply(steps)
        self._bad.count_skips(indices, finite)
        self._bad.check_overflows(indices, steps, overflow)

    def _take_queued(self):
        """Take in the updates queued in MXNet's engine (see :mod:`adam_plugin.engine`)."""
        self._engine.take_all()

    def _name(self, index):
        if index in self.param_dict:
            return f"parameter '{self.param_dict[index].name}'"
        if index in self.idx2name:
            return f"parameter '{self.idx2name[index]}'"
        return f"parameter index {index}"


def _check_fits(saved, params):
    """``ValueError`` unless ``params`` (index -> Parameter) are those ``saved`` (index ->
    shape) describes: the same indices, each of the same shape (a dimension that is not
    known yet, 0 or -1, fits any)."""
    have = {i: tuple(p.shape) for i, p in params.items()}
    if set(have) != set(saved):
        raise ValueError(f"the states were saved for {len(saved)} parameters (indices "
                         f"{sorted(saved)}), the Trainer has {len(have)} "
                         f"(indices {sorted(have)})")
    for index in sorted(saved):
        if len(have[index]) != len(saved[index]) or not all(
                a == b or a <= 0 or b <= 0 for a, b in zip(have[index], saved[index], strict=True)):
            raise ValueError(f"the states were saved for a parameter {index} of shape "
                             f"{saved[index]}, the Trainer's, '{params[index].name}', has "
                             f"shape {have[index]}")


# This process's run of the optimizer, made by MyAdam._start_run, never pickled (references
# to live arrays, queued updates, runs of bad updates, an error not raised yet, the step
# counts of the states file it was loaded from): attribute -> what makes it of the
# optimizer (self), in this order.
_RUN = {
    '_carrier': lambda self: ErrorCarrier(),  # an error kept from the KVStore callback
    '_bad': lambda self: BadUpdates(self, self._name),  # bad updates: num_skipped, max_skips
    '_layouts': lambda self: dispatch.CheckedLayouts(self._name),  # a cache of MXNet reads
    '_batches': lambda self: dispatch.Batches(self._layouts, self._name),  # of the same arrays
    '_values': lambda self: StepValues(self, self._name),  # what a step reads, checked
    '_counts': StepCounts,  # each parameter's step count
    '_engine': lambda self: EngineQueue(self, self._counts, self._values, self._bad),
}

# The signature and the Parameters section are the option table's (adam_plugin.options).
_SIGNATURE = inspect.Signature(
    [inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default)
       for o in OPTIONS]
    + [inspect.Parameter('kwargs', inspect.Parameter.VAR_KEYWORD)])
MyAdam.__init__.__signature__ = _SIGNATURE

_OPTION = {o.name: o for o in OPTIONS}

# The keywords MyAdam takes: its options and what mx.optimizer.Optimizer.__init__ takes.
_KEYWORDS = sorted(set(_OPTION) | set(inspect.signature(Optimizer.__init__).parameters)
                   - {'self'})

# Other libraries' names for MyAdam's options (PyTorch's, optax's, Keras's): suggested in the
# error, never accepted (MXNet's names are the only ones).
_OTHER_NAMES = {
    'lr': "'learning_rate'",
    'betas': "'beta1' and 'beta2'",
    'b1': "'beta1'",
    'b2': "'beta2'",
    'eps': "'epsilon'",
    'eps_root': "'epsilon' with epsilon_mode='inside'",
    'weight_decay': "'wd' (with decoupled_wd=True for AdamW's)",
    'decoupled_weight_decay': "'decoupled_wd'",
}


def _edit_distance(a, b):
    """Levenshtein's: the fewest insertions, deletions and substitutions that make ``a`` ``b``."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _refuse_unknown(cls, keywords):
    """``TypeError`` for the first keyword of ``keywords`` that ``cls`` does not take, as
    Python words it, with the valid name meant: another library's name's, or the
    nearest by edit distance (at most a third of the keyword's length)."""
    for keyword in keywords:
        if keyword in _KEYWORDS:
            continue
        nearest = min(_KEYWORDS, key=lambda name: _edit_distance(keyword, name))
        hint = (_OTHER_NAMES.get(keyword)
                or (f"'{nearest}'" if _edit_distance(keyword, nearest) <= len(keyword) // 3
                    else None))
        raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument "
                        f"{keyword!r}; " + (f"did you mean {hint}?" if hint else
                                            f"it takes {', '.join(_KEYWORDS)}"))
MyAdam.__doc__ = MyAdam.__doc__.replace(
    '{parameters}', textwrap.indent(options.parameters_doc(), '    '))


@Optimizer.register
class MyYogi(MyAdam):
    """Yogi (Zaheer et al., 2018) as d2l.ai teaches it, registered as ``'myyogi'``.

    ``MyAdam(yogi=True)`` with the ``epsilon=1e-3`` that d2l.ai, the paper and optax's
    ``yogi`` use (epsilon outside the root, as ``MyAdam``'s default mode). Takes every
    other argument of :class:`MyAdam`, in the same positions; ``v`` starts at 0 as in
    d2l (optax starts it at ``initial_accumulator_value=1e-6``).
    """

    def __init__(self, *args, **kwargs):
        bound = _SIGNATURE.bind(self, *args, **kwargs).arguments
        named = {k: v for k, v in bound.items() if k not in ('self', 'kwargs')}
        if not _OPTION['yogi'].check('yogi', named.setdefault('yogi', True)):
            raise ValueError(f"Invalid yogi: {named['yogi']!r} (expected True: 'myyogi' is "
                             "always Yogi; use 'myadam' for yogi=False)")
        named.setdefault('epsilon', 1e-3)
        super().__init__(**named, **bound.get('kwargs', {}))


# What help() and the API reference show: MyAdam's parameters, with MyYogi's defaults.
MyYogi.__init__.__signature__ = _SIGNATURE.replace(parameters=[
    p.replace(default={'epsilon': 1e-3, 'yogi': True}.get(p.name, p.default))
    for p in _SIGNATURE.parameters.values()])
