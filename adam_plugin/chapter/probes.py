"""Small probes of ``MyAdam`` on one scalar parameter, for the notebook's figures.

Each probe drives the real optimizer (``MyAdam.update``) and reads back what it
did, so the figures show the plugin's behaviour, not a re-derivation of it.
"""
__all__ = ['first_moment', 'first_step']

import numpy as np
import mxnet.ndarray as nd

from ..optimizer import MyAdam


def first_moment(grads, beta1=0.9):
    """Feed ``grads`` to ``MyAdam`` one step at a time and read back its first moment.

    In the chapter's notation, ``v_t = beta1 * v_{t-1} + (1 - beta1) * g_t`` with
    ``v_0 = 0`` and ``v_hat_t = v_t / (1 - beta1**t)``; so ``v_1 = (1 - beta1) * g_1``
    while ``v_hat_1 = g_1``.

    Parameters
    ----------
    grads : sequence of float
        The gradient of one scalar parameter at steps 1, 2, ...
    beta1 : float, default 0.9

    Returns
    -------
    raw, corrected : ndarray of shape (len(grads),)
        ``v_t`` read from the optimizer's state after each step, and ``v_hat_t``.
    """
    opt = MyAdam(beta1=beta1)
    weight = nd.zeros((1,))
    state = opt.create_state(0, weight)
    raw = []
    for g in grads:
        opt.update(0, weight, nd.array([g]), state)
        raw.append(state[0].asscalar())
    raw = np.array(raw)
    t = np.arange(1, len(raw) + 1)
    return raw, raw / (1 - beta1 ** t)


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
