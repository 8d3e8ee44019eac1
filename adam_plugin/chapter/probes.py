"""Small probes of ``MyAdam`` on one scalar parameter, for the notebook's figures.

Each probe drives the real optimizer (``MyAdam.update``) and reads back what it
did, so the figures show the plugin's behaviour, not a re-derivation of it.
"""
__all__ = ['Moments', 'moments', 'first_step']

from typing import NamedTuple

import mxnet.ndarray as nd
import numpy as np

from ..optimizer import MyAdam


class Moments(NamedTuple):
    """What :func:`moments` reads from ``MyAdam``, one entry per step, in the chapter's names."""
    v: np.ndarray       # first moment, raw
    v_hat: np.ndarray   # v / (1 - beta1**t)
    s: np.ndarray       # second moment, raw
    s_hat: np.ndarray   # s / (1 - beta2**t)


def moments(grads, beta1=0.9, beta2=0.999):
    """Feed ``grads`` to a fresh ``MyAdam`` one step at a time and read back both moments.

    In the chapter's notation, ``v_t = beta1 * v_{t-1} + (1 - beta1) * g_t`` and
    ``s_t = beta2 * s_{t-1} + (1 - beta2) * g_t**2``, both from 0; so ``v_1 = (1 - beta1) g_1``
    and ``s_1 = (1 - beta2) g_1**2``, while ``v_hat_1 = g_1`` and ``s_hat_1 = g_1**2``.
    ``v`` and ``s`` are the optimizer's own state after each step; the corrected
    values divide them by ``1 - beta**t`` with ``t`` the optimizer's own step count.

    Parameters
    ----------
    grads : sequence of float
        The gradient of one scalar parameter at steps 1, 2, ...
    beta1, beta2 : float

    Returns
    -------
    Moments
    """
    opt = MyAdam(beta1=beta1, beta2=beta2)
    weight = nd.zeros((1,))
    state = opt.create_state(0, weight)
    rows = []
    for g in grads:
        opt.update(0, weight, nd.array([g]), state)
        t = opt._index_update_count[0]
        v, s = state[0].asscalar(), state[1].asscalar()
        rows.append((v, v / (1 - beta1 ** t), s, s / (1 - beta2 ** t)))
    return Moments(*(np.array(column) for column in zip(*rows, strict=True)))


def first_step(grads, **kwargs):
    """The size of ``MyAdam``'s first step, in units of the learning rate, for each gradient.

    At ``t = 1`` bias correction gives ``v_hat = g`` and ``s_hat = g**2``, so without
    epsilon every first step would be exactly ``lr * sign(g)``: Adam ignores the
    gradient's scale. Where epsilon sits decides below which ``|g|`` that stops.

    Parameters
    ----------
    grads : sequence of float
        One gradient per probe; each probe starts from a fresh optimizer.
    **kwargs
        ``MyAdam`` arguments (``epsilon``, ``epsilon_mode``, ...), except ``learning_rate``.

    Returns
    -------
    ndarray of shape (len(grads),)
        ``|w_1 - w_0| / lr``.
    """
    sizes = []
    for g in grads:
        opt = MyAdam(learning_rate=1.0, **kwargs)  # so the move is the step / lr
        weight = nd.zeros((1,))
        opt.update(0, weight, nd.array([g]), opt.create_state(0, weight))
        sizes.append(abs(weight.asscalar()))
    return np.array(sizes)
