"""``MyAdam``: the Adam optimizer registered with MXNet as ``'myadam'``."""
__all__ = ['MyAdam', 'MyYogi']

import inspect
import operator
import textwrap

import mxnet.ndarray as nd
from mxnet.optimizer import Optimizer

from . import _warn, dispatch, distributed, options
from .deferred import DeferredError
from .options import AGGREGATE_NUM, OPTIONS
from .textbook import Step


@Optimizer.register
class MyAdam(Optimizer):
    r"""Adam (Kingma & Ba, 2014) as an MXNet optimizer, registered as ``'myadam'``.

    Per parameter, with ``t`` its own step count (MXNet's ``_index_update_count``)::

        g     = rescale_grad * grad
        g     = g + wd * w                                  (coupled L2, default)
        g     = clip(g, -clip_gradient, clip_gradient)      (if clip_gradient)
        m     = beta1 * m + (1 - beta1) * g
        v     = beta2 * v + (1 - beta2) * g * g
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
        Passed to :class:`mxnet.optimizer.Optimizer`: ``lr_scheduler``,
        ``param_idx2name``, ``begin_num_update``, ...

    Raises
    ------
    ValueError
        If a hyperparameter is out of range, NaN or not a number, or a flag is not
        True or False (1 or 0); the message names it.
    """

    # What a states file saved before an attribute existed means by it (the safe loader's
    # list of attributes a file may lack).
    state_defaults = options.state_defaults()

    def __init__(self, *args, **kwargs):
        given = _SIGNATURE.bind(self, *args, **kwargs).arguments
        del given['self']
        values = options.checked(given)
        self._deferred = DeferredError()  # before Optimizer sets rescale_grad
        super().__init__(**{o.name: values[o.name] for o in OPTIONS if o.mxnet},
                         **given.get('kwargs', {}))
        for option in OPTIONS:
            if not option.mxnet:
                setattr(self, option.key, values[option.name])
        self.num_skipped = 0
        self.param_shapes = None  # set on saving, checked on loading: see param_dict
        self._layouts = dispatch.Layouts(self._name)  # a cache of MXNet reads; not pickled
        self.aggregate_num = AGGREGATE_NUM

    def __getstate__(self):
        self._deferred.raise_pending()  # never save over an update that failed
        distributed.watch_worker(self)  # a dist Trainer sending us to its servers: see there
        state = super().__getstate__()
        del state['_layouts']  # references to live arrays, not hyperparameters
        del state['_deferred']
        if self.param_dict:
            state['param_shapes'] = {i: tuple(p.shape) for i, p in self.param_dict.items()}
        return state

    def __setstate__(self, state):
        """Checked as :meth:`__init__` checks its arguments (so ``Trainer.load_states``
        refuses a bad file too); see :func:`adam_plugin.options.checked_state`."""
        super().__setstate__(options.checked_state(state))
        self._layouts = dispatch.Layouts(self._name)
        self._deferred = DeferredError()

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
    def rescale_grad(self):
        """Gradient scale; ``Trainer.step`` sets it first thing, which raises an error
        an update left inside the KVStore callback (see :mod:`adam_plugin.deferred`)."""
        return self.__dict__['rescale_grad']

    @rescale_grad.setter
    def rescale_grad(self, value):
        self._deferred.raise_pending()
        self.__dict__['rescale_grad'] = value

    def set_learning_rate(self, lr):
        """Set the learning rate; a negative or NaN ``lr`` raises ``ValueError``."""
        super().set_learning_rate(options.LEARNING_RATE('learning_rate', lr))

    def create_state(self, index, weight):
        """Zero moments ``(m, v)``, plus ``vmax`` with AMSGrad, on ``weight``'s context and dtype."""
        count = 3 if self.amsgrad else 2
        return tuple(nd.zeros(weight.shape, weight.context, dtype=weight.dtype)
                     for _ in range(count))

    def update(self, index, weight, grad, state):
        """Update one parameter (or lists of them) in place; see the class docstring.

        An exception raised inside the KVStore's callback reaches the user from the
        next ``Trainer.step`` (see :mod:`adam_plugin.deferred`).
        """
        self._deferred.run(self._update_impl, index, weight, grad, state, False)

    def update_multi_precision(self, index, weight, grad, state):
        """As :meth:`update`; float16 weights step on their float32 master copy."""
        self._deferred.run(self._update_impl, index, weight, grad, state,
                           self.multi_precision)

    def _update_impl(self, indices, weights, grads, states, multi_precision):
        if not isinstance(indices, (list, tuple)):
            indices, weights, grads, states = [indices], [weights], [grads], [states]
        distributed.refuse_worker_update(self, indices)  # update_on_kvstore=False in a dist job
        layouts = [self._layouts(*args) for args in zip(indices, weights, grads)]
        batch = dispatch.Batch(self, layouts, weights, grads, states, multi_precision)
        steps = []
        for index, ok in zip(indices, self._finite(indices, batch)):
            if ok:
                self._update_count(index)
                steps.append(self._step(index))
            else:
                self.num_skipped += 1
                _warn.warn(f"myadam: skipped the update of {self._name(index)}: its "
                           "gradient holds NaN or Inf")
                steps.append(None)
        batch.apply(steps)

    def _step(self, index):
        return Step(self._index_update_count[index], self._get_lr(index), self._get_wd(index),
                    *_RULE_OPTIONS(self))

    def _finite(self, indices, batch):
        """One flag per gradient of ``batch``: does it hold only finite values?

        Under ``nonfinite='raise'`` a bad gradient raises before any update.
        """
        finite = batch.finite()
        if self.nonfinite == 'raise' and not all(finite):
            bad = ', '.join(self._name(i) for i, ok in zip(indices, finite) if not ok)
            raise FloatingPointError(f"myadam: the gradient of {bad} holds NaN or Inf; "
                                     "nothing was updated")
        return finite

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
                a == b or a <= 0 or b <= 0 for a, b in zip(have[index], saved[index])):
            raise ValueError(f"the states were saved for a parameter {index} of shape "
                             f"{saved[index]}, the Trainer's, '{params[index].name}', has "
                             f"shape {have[index]}")


# The rest of a Step, read from the optimizer's attributes of the same names (one C call).
_RULE_OPTIONS = operator.attrgetter(*Step._fields[3:])
assert Step._fields[:3] == ('t', 'lr', 'wd')

# The signature and the Parameters section are the option table's (adam_plugin.options).
_SIGNATURE = inspect.Signature(
    [inspect.Parameter('self', inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default)
       for o in OPTIONS]
    + [inspect.Parameter('kwargs', inspect.Parameter.VAR_KEYWORD)])
MyAdam.__init__.__signature__ = _SIGNATURE
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
        if 'yogi' in named:
            raise ValueError(f"Invalid yogi: {named['yogi']!r} ('myyogi' is always Yogi; "
                             "use 'myadam' for yogi=False)")
        named.setdefault('epsilon', 1e-3)
        super().__init__(yogi=True, **named, **bound.get('kwargs', {}))
