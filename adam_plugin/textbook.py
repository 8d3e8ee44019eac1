"""The Adam update rule as plain NDArray operations: the ground truth.

Every fast route of the package's dispatch is tested against :func:`adam_step`.
This module imports MXNet submodules only (``mxnet.ndarray``), never ``from mxnet
import nd``: a distributed-KVStore server imports this package from inside a
half-initialised ``import mxnet``, where the ``nd`` alias does not exist yet.
"""
__all__ = ['EPSILON_MODES', 'Step', 'adam_step']

import math
from typing import NamedTuple, Optional

import mxnet.ndarray as nd

#: The values of ``epsilon_mode``: where epsilon enters the update.
EPSILON_MODES = ('outside', 'inside', 'hat')


class Step(NamedTuple):
    """Everything the rule needs to update one parameter at one step (immutable, hashable).

    A named tuple rather than a dataclass: one is built per parameter per step, and
    a tuple is cheaper to build. After ``t``, each field is an option of
    ``MyAdam`` named as the attribute the optimizer keeps it in (``lr`` for
    ``learning_rate``), which the option table checks when it is imported.

    Attributes
    ----------
    t : int
        The parameter's own step count, 1 on its first update.
    lr, wd : float
        Learning rate and weight decay for this parameter (``lr_mult`` and
        ``wd_mult`` already applied, ``lr_scheduler`` already evaluated).
    beta1, beta2, epsilon : float
        Adam's decay rates and its stabilising constant.
    epsilon_mode : {'outside', 'inside', 'hat'}
        Where ``epsilon`` enters the denominator (see :func:`adam_step`).
    amsgrad : bool
        Divide by the running maximum of the second moment (PyTorch's AMSGrad).
    yogi : bool
        Yogi's second moment (Zaheer et al., 2018): ``v`` moves towards ``g * g``
        by ``(1 - beta2) * g * g`` at most, instead of by ``(1 - beta2) * (g * g - v)``.
    decoupled_wd : bool
        Decay the weight directly (AdamW) instead of adding ``wd * w`` to the gradient.
    rescale_grad : float
        Factor applied to the raw gradient first (``1 / batch_size`` under ``Trainer.step``).
    clip_gradient : float or None
        Clip the rescaled gradient to ``[-clip_gradient, clip_gradient]``.
    lazy_update : bool
        With a ``row_sparse`` gradient, update only the rows it holds.
    """
    t: int
    lr: float
    wd: float
    beta1: float
    beta2: float
    epsilon: float
    epsilon_mode: str
    amsgrad: bool
    yogi: bool
    decoupled_wd: bool
    rescale_grad: float
    clip_gradient: Optional[float]
    lazy_update: bool

    @property
    def bias_correction1(self):
        """``1 - beta1**t``."""
        return 1.0 - self.beta1 ** self.t

    @property
    def bias_correction2(self):
        """``1 - beta2**t``."""
        return 1.0 - self.beta2 ** self.t

    @property
    def coupled_wd(self):
        """The L2 coefficient added to the gradient (0 when decay is decoupled)."""
        return 0.0 if self.decoupled_wd else self.wd


def adam_step(weight, grad, state, step):
    """Apply one Adam step in place to ``weight`` and its moment buffers.

    With ``g`` the incoming gradient and ``t = step.t``::

        g     = rescale_grad * g
        g     = g + wd * w                          (unless decoupled_wd)
        g     = clip(g, -clip_gradient, clip_gradient)   (if clip_gradient is set)
        m     = beta1 * m + (1 - beta1) * g
        v     = beta2 * v + ((1 - beta2) * g) * g
        v     = v + ((1 - beta2) * g) * g * sign(g**2 - v)   (yogi, instead)
        vmax  = max(vmax, v);  v <- vmax            (amsgrad only)
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        u     = m_hat / (sqrt(v_hat) + epsilon)                     'outside'
        u     = m_hat / sqrt(v_hat + epsilon)                       'inside'
        u     = m_hat / (sqrt(v_hat) + epsilon / sqrt(1 - beta2**t)) 'hat'
        w     = w * (1 - lr * wd)                   (decoupled_wd only)
        w     = w - lr * u

    'outside' is the chapter's code and ``torch.optim.Adam``; 'inside' is the
    chapter's printed formula and optax's ``eps_root``; 'hat' is the epsilon-hat
    of Kingma & Ba (2014), section 2, which is what ``mx.optimizer.Adam`` computes.
    Yogi's second moment is d2l.ai's (section "Adam", Yogi) and Zaheer et al.
    (2018)'s, Algorithm 2, starting from ``v = 0``: it moves by ``(1 - beta2) * g**2``
    towards ``g**2`` whatever its distance, where Adam's moves by ``(1 - beta2)`` times
    the distance; so after large gradients a large ``v`` shrinks slowly when the
    gradients become small, and the step ``lr * m_hat / sqrt(v_hat)`` grows slowly.

    A ``row_sparse`` gradient with ``step.lazy_update`` updates only the rows it
    holds (weights and moments of other rows keep their values, as in MXNet's
    lazy Adam; a gradient holding no rows changes nothing); without
    ``lazy_update`` it is densified first, absent rows counting as zero gradient.
    A ``row_sparse`` weight is updated through a dense copy, written back.

    Parameters
    ----------
    weight : NDArray
        The parameter, dense or ``row_sparse``, updated in place.
    grad : NDArray
        Its gradient, dense or ``row_sparse``; not modified.
    state : tuple of NDArray
        ``(m, v)``, or ``(m, v, vmax)`` with AMSGrad, dense; updated in place.
    step : Step
        Hyperparameters and step count for this parameter.
    """
    if weight.stype == 'row_sparse':
        dense = weight.tostype('default')
        adam_step(dense, grad, state, step)
        weight[:] = dense.tostype('row_sparse')
    elif grad.stype == 'row_sparse' and step.lazy_update:
        if grad.indices.shape[0]:
            _lazy_rows_step(weight, grad, state, step)
    else:
        _dense_step(weight, _dense(grad), state, step)


def _dense(array):
    """``array`` itself if dense, else a dense copy."""
    return array if array.stype == 'default' else array.tostype('default')


def _dense_step(weight, grad, state, step):
    """The rule on every element of dense arrays."""
    new_weight, new_state = _rule(weight, grad, state, step)
    weight[:] = new_weight
    for buf, new in zip(state, new_state, strict=True):
        buf[:] = new


def _lazy_rows_step(weight, grad, state, step):
    """The rule on the rows a ``row_sparse`` gradient holds, of a dense weight and state."""
    rows = grad.indices
    sub_state = tuple(nd.take(buf, rows) for buf in state)
    new_weight, new_state = _rule(nd.take(weight, rows), grad.data, sub_state, step)
    weight[rows] = new_weight
    for buf, new in zip(state, new_state, strict=True):
        buf[rows] = new


def _rule(w, g, state, step):
    """Return ``(new_w, new_state)``; pure: nothing passed in is modified."""
    g = g * step.rescale_grad
    if step.coupled_wd:
        g = g + step.coupled_wd * w
    if step.clip_gradient is not None:
        g = nd.clip(g, -step.clip_gradient, step.clip_gradient)
    m = step.beta1 * state[0] + (1.0 - step.beta1) * g
    # (1 - beta2) * g first (MXNet's order): g * g alone overflows for |g| > sqrt(max),
    # 256 in float16, 1.8e19 in float32, where the moment itself is representable.
    if step.yogi:
        v = state[1] + ((1.0 - step.beta2) * g) * g * nd.sign(nd.square(g) - state[1])
    else:
        v = step.beta2 * state[1] + ((1.0 - step.beta2) * g) * g
    new_state = (m, v)
    if step.amsgrad:
        v = nd.maximum(state[2], v)
        new_state += (v,)
    m_hat = m / step.bias_correction1
    v_hat = v / step.bias_correction2
    if step.epsilon_mode == 'outside':
        u = m_hat / (nd.sqrt(v_hat) + step.epsilon)
    elif step.epsilon_mode == 'inside':
        u = m_hat / nd.sqrt(v_hat + step.epsilon)
    else:  # 'hat'
        u = m_hat / (nd.sqrt(v_hat) + step.epsilon / math.sqrt(step.bias_correction2))
    if step.decoupled_wd:
        w = w * (1.0 - step.lr * step.wd)
    return w - step.lr * u, new_state
