"""``MyAdam``: the Adam optimizer registered with MXNet as ``'myadam'``."""
import math
import numbers

import mxnet.ndarray as nd
import numpy
from mxnet.optimizer import Optimizer

from . import _warn, dispatch, distributed
from .deferred import DeferredError
from .textbook import EPSILON_MODES, Step

NONFINITE_POLICIES = ('skip', 'raise')

# With aggregate_num > 0, MXNet's Updater hands a whole list of parameters to one
# update call (one list per dtype, up to this many): a 'raise' is then decided for
# the whole step before anything changes, and the fused route makes one launch.
AGGREGATE_NUM = 1 << 20


def _require(name, value, ok, expected):
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a real number with ``ok(value)``.

    A string is not a number here, even one that ``float`` would read: MXNet keeps
    ``learning_rate`` as given, and ``'0.1'`` would fail at the first step.
    NaN fails every comparison, so ``ok`` written as ``lo <= x`` rejects it.
    """
    try:
        good = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and ok(float(value)))
    except OverflowError:  # an int beyond float's range
        good = False
    if not good:
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected})")


def _flag(name, value):
    """``value`` as a bool; ``ValueError`` naming ``name`` unless it is True, False, 1 or 0.

    ``bool('no')`` is True: a flag read from a config file as a string would turn on.
    """
    if not (isinstance(value, (bool, numpy.bool_))
            or (isinstance(value, numbers.Integral) and value in (0, 1))):
        raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")
    return bool(value)


@Optimizer.register
class MyAdam(Optimizer):
    r"""Adam (Kingma & Ba, 2014) as an MXNet optimizer, registered as ``'myadam'``.

    Per parameter, with ``t`` its own step count (MXNet's ``_index_update_count``)::

        g     = rescale_grad * grad
        g     = g + wd * w                                  (coupled L2, default)
        g     = clip(g, -clip_gradient, clip_gradient)      (if clip_gradient)
        m     = beta1 * m + (1 - beta1) * g
        v     = beta2 * v + (1 - beta2) * g * g
        vmax  = max(vmax, v), used in place of v            (amsgrad)
        m_hat = m / (1 - beta1**t),   v_hat = v / (1 - beta2**t)
        u     = m_hat / (sqrt(v_hat) + epsilon)             epsilon_mode='outside'
        u     = m_hat / sqrt(v_hat + epsilon)               epsilon_mode='inside'
        u     = m_hat / (sqrt(v_hat) + epsilon / sqrt(1 - beta2**t))   'hat'
        w     = w * (1 - lr * wd)                           (decoupled_wd, no L2 in g)
        w     = w - lr * u

    The defaults equal ``torch.optim.Adam``; ``epsilon_mode='hat'`` equals
    ``mx.optimizer.Adam``; ``decoupled_wd=True`` equals ``torch.optim.AdamW``.

    Parameters
    ----------
    learning_rate : float, default 0.001
        Step size ``lr``, >= 0. ``None`` takes it from ``lr_scheduler``.
    beta1 : float, default 0.9
        Decay rate of the first moment, in [0, 1).
    beta2 : float, default 0.999
        Decay rate of the second moment, in [0, 1).
    epsilon : float, default 1e-8
        Stabilising constant, > 0. Zero is refused: a gradient element that has
        been 0 at every step so far (``m = v = 0``) would make the update ``0 / 0``,
        a NaN in the weight that the finiteness check of the gradient cannot see.
    epsilon_mode : {'outside', 'inside', 'hat'}, default 'outside'
        Where ``epsilon`` enters: outside the root (the chapter's code, PyTorch),
        inside it (the chapter's printed formula, optax ``eps_root``), or the
        paper's epsilon-hat (MXNet's built-in Adam).
    amsgrad : bool, default False
        Use the running maximum of ``v`` (Reddi et al., 2018; PyTorch's variant).
    decoupled_wd : bool, default False
        Decoupled weight decay (Loshchilov & Hutter, 2019; ``torch.optim.AdamW``).
    lazy_update : bool, default True
        With a ``row_sparse`` gradient, update only the rows present in it.
    nonfinite : {'skip', 'raise'}, default 'skip'
        What to do with a gradient holding NaN or Inf: leave that parameter, its
        moments and its step count untouched and warn (``'skip'``, counted in
        ``num_skipped``), or raise ``FloatingPointError`` before modifying anything
        the update call received (under ``gluon.Trainer`` without
        ``update_on_kvstore``, the whole step: see ``aggregate_num``; with it, the
        error comes out of the next ``Trainer.step``: see :mod:`adam_plugin.deferred`).
        ``num_skipped`` counts skipped updates of parameter copies: with several
        devices updated by the Trainer, one skip per device.
    fused : bool, default True
        Take the fast routes of :mod:`adam_plugin.dispatch`: one compiled,
        multi-threaded pass over memory for float16 (with or without
        ``multi_precision``), float32 and float64 parameters on CPU, dense or
        ``row_sparse`` (a lazy update touching only the gradient's rows), all
        parameters of a ``Trainer`` step in one call; MXNet's ``adam_update``
        where it is exact on other devices. ``False`` updates every parameter with
        the NDArray ops of :mod:`adam_plugin.textbook`. Both agree to float rounding.
    **kwargs
        Passed to :class:`mxnet.optimizer.Optimizer`: ``wd`` (>= 0),
        ``rescale_grad``, ``clip_gradient`` (None or > 0), ``lr_scheduler``,
        ``multi_precision``, ``param_idx2name``, ``begin_num_update``, ...

    Raises
    ------
    ValueError
        If a hyperparameter is out of range, NaN or not a number, or a flag is not
        True or False (1 or 0); the message names it.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 epsilon_mode='outside', amsgrad=False, decoupled_wd=False,
                 lazy_update=True, nonfinite='skip', fused=True, **kwargs):
        if learning_rate is not None:
            _require('learning_rate', learning_rate, lambda x: 0.0 <= x < math.inf, '>= 0')
        _require('beta1', beta1, lambda x: 0.0 <= x < 1.0, 'in [0, 1)')
        _require('beta2', beta2, lambda x: 0.0 <= x < 1.0, 'in [0, 1)')
        _require('epsilon', epsilon, lambda x: 0.0 < x < math.inf,
                 '> 0: with 0, a zero gradient element makes the update 0 / 0')
        _require('wd', kwargs.get('wd', 0.0), lambda x: 0.0 <= x < math.inf, '>= 0')
        _require('rescale_grad', kwargs.get('rescale_grad', 1.0),
                 lambda x: 0.0 < x < math.inf, '> 0')
        if kwargs.get('clip_gradient') is not None:
            _require('clip_gradient', kwargs['clip_gradient'], lambda x: 0.0 < x < math.inf,
                     'None or > 0')
        if epsilon_mode not in EPSILON_MODES:
            raise ValueError(f"Invalid epsilon_mode: {epsilon_mode!r} "
                             f"(expected one of {EPSILON_MODES})")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} "
                             f"(expected one of {NONFINITE_POLICIES})")
        amsgrad = _flag('amsgrad', amsgrad)
        decoupled_wd = _flag('decoupled_wd', decoupled_wd)
        lazy_update = _flag('lazy_update', lazy_update)
        fused = _flag('fused', fused)
        if 'multi_precision' in kwargs:
            kwargs['multi_precision'] = _flag('multi_precision', kwargs['multi_precision'])
        self._deferred = DeferredError()  # before Optimizer sets rescale_grad
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.epsilon = float(epsilon)
        self.epsilon_mode = epsilon_mode
        self.amsgrad = amsgrad
        self.decoupled_wd = decoupled_wd
        self.lazy_update = lazy_update
        self.nonfinite = nonfinite
        self.fused = fused
        self.num_skipped = 0
        self._layouts = dispatch.Layouts(self._name)  # a cache of MXNet reads; not pickled
        self.aggregate_num = AGGREGATE_NUM

    def __getstate__(self):
        self._deferred.raise_pending()  # never save over an update that failed
        distributed.watch_worker(self)  # a dist Trainer sending us to its servers: see there
        state = super().__getstate__()
        del state['_layouts']  # references to live arrays, not hyperparameters
        del state['_deferred']
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._layouts = dispatch.Layouts(self._name)
        self._deferred = DeferredError()

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
        _require('learning_rate', lr, lambda x: 0.0 <= x < math.inf, '>= 0')
        super().set_learning_rate(lr)

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
        batch = dispatch.Batch(self, layouts, weights, grads, states, multi_precision,
                               lambda i: self._name(indices[i]))
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
        return Step(t=self._index_update_count[index], lr=self._get_lr(index),
                    wd=self._get_wd(index), beta1=self.beta1, beta2=self.beta2,
                    epsilon=self.epsilon, epsilon_mode=self.epsilon_mode,
                    amsgrad=self.amsgrad, decoupled_wd=self.decoupled_wd,
                    rescale_grad=self.rescale_grad, clip_gradient=self.clip_gradient,
                    lazy_update=self.lazy_update)

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
