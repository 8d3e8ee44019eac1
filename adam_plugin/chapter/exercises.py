"""The exercises of the chapter's later edition (d2l.ai, "Adam"), as runnable experiments.

Each function drives the real optimizers (``MyAdam``, MXNet's built-in ones) and
returns what the notebook prints and plots; :mod:`adam_plugin.chapter.cli` runs the
same functions from the command line.
"""
__all__ = ['adam_folded', 'decay_schedule', 'reddi_losses', 'reddi', 'badly_scaled']

import math

import mxnet as mx
import numpy as np
from mxnet import nd

from ..optimizer import MyAdam


def adam_folded(params, vs, sqrs, lr, batch_size, t):
    """The chapter's ``adam()`` without bias correction: it is folded into ``lr`` and epsilon.

    Exercise 2. ``lr * v_hat / (sqrt(s_hat) + eps)`` with ``v_hat = v / (1 - beta1**t)``
    and ``s_hat = s / (1 - beta2**t)`` equals ``lr_t * v / (sqrt(s) + eps_t)`` with
    ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` and ``eps_t = eps * sqrt(1 - beta2**t)``
    (multiply numerator and denominator by ``sqrt(1 - beta2**t)``). The moments are
    the raw ones; only two scalars change per step. ``adam_plugin.dispatch.operator_step``
    hands MXNet's ``adam_update`` exactly these two scalars.
    """
    beta1, beta2, eps_stable = 0.9, 0.999, 1e-8
    root = math.sqrt(1 - beta2 ** t)
    lr_t = lr * root / (1 - beta1 ** t)
    eps_t = eps_stable * root
    for param, v, sqr in zip(params, vs, sqrs):
        g = param.grad / batch_size
        v[:] = beta1 * v + (1 - beta1) * g
        sqr[:] = beta2 * sqr + (1 - beta2) * g.square()
        param[:] = param - lr_t * v / (sqr.sqrt() + eps_t)


def decay_schedule(lr, step, factor):
    """MXNet's ``FactorScheduler``: ``lr`` times ``factor`` every ``step`` updates (exercise 3)."""
    return mx.lr_scheduler.FactorScheduler(step=step, factor=factor, base_lr=lr)


def reddi_losses(t):
    """Reddi et al. (2018), section 3: ``f_t(x) = C x`` when ``t mod 3 == 1``, else ``-x``.

    Returns the gradient ``C`` or ``-1`` of step ``t`` (1, 2, ...) with ``C = 3``.
    """
    return 3.0 if t % 3 == 1 else -1.0


def reddi(steps=3000, lr=0.5, beta1=0.0, beta2=0.1, **options):
    """The online convex problem on which Adam fails (Reddi, Kale & Kumar, 2018, Theorem 1).

    ``x`` in ``[-1, 1]``, the losses of :func:`reddi_losses` (``C = 3``), learning rate
    ``lr / sqrt(t)``, ``beta1 = 0`` and ``beta2 = 1 / (1 + C**2) = 0.1`` as in the
    theorem. Over every three steps the sum of the losses is ``(C - 2) x = x``, lowest
    at ``x = -1``; the large gradient ``C`` comes once in three steps, and Adam's
    second moment forgets it fast enough to let the two ``-1`` steps win.
    ``MyAdam`` steps; ``x`` is projected back onto ``[-1, 1]`` after each step.

    Parameters
    ----------
    **options
        Other ``MyAdam`` arguments (``amsgrad=True``, ``yogi=True``, ``epsilon``, ...).

    Returns
    -------
    ndarray of shape (steps,)
        ``x`` after each step, from ``x = 0``.
    """
    opt = MyAdam(learning_rate=lr, beta1=beta1, beta2=beta2, **options)
    x = nd.zeros((1,))
    state = opt.create_state(0, x)
    path = []
    for t in range(1, steps + 1):
        opt.set_learning_rate(lr / math.sqrt(t))
        opt.update(0, x, nd.array([reddi_losses(t)]), state)
        x[:] = nd.clip(x, -1.0, 1.0)
        path.append(x.asscalar())
    return np.array(path)


def badly_scaled(features, scales=(10.0, 0.5)):
    """The chapter's features with column ``j`` multiplied by ``scales[j]`` (a case for Adam).

    The labels stay: the true weights become ``TRUE_W / scales``, and the noise floor
    is unchanged. Plain SGD must keep ``lr`` below about ``2 / scales[0]**2`` (the
    largest curvature of the loss) and then crawls along the feature of scale
    ``scales[1]`` (curvature ``scales[1]**2``); Adam's step per parameter is about
    ``lr`` whatever the scale.
    """
    return features * nd.array(scales).reshape((1, -1))
