"""The chapter's hand-rolled Adam, kept exactly as *Dive into Deep Learning* wrote it.

This is the outside reference the plugin is checked against: it shares no code
with :class:`adam_plugin.MyAdam` or :mod:`adam_plugin.textbook`.
"""
__all__ = ['adam']


def adam(params, vs, sqrs, lr, batch_size, t):
    """One Adam step over ``params``, from the chapter (epsilon outside the root).

    For each parameter with gradient ``param.grad``::

        g     = param.grad / batch_size
        v     = beta1 * v + (1 - beta1) * g
        sqr   = beta2 * sqr + (1 - beta2) * g**2
        param = param - lr * (v / (1 - beta1**t)) / (sqrt(sqr / (1 - beta2**t)) + eps)

    with ``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``.

    Parameters
    ----------
    params : list of NDArray
        Parameters with attached gradients; updated in place.
    vs, sqrs : list of NDArray
        First and second moment buffers, one per parameter; updated in place.
    lr : float
        Learning rate.
    batch_size : int
        The gradient is the sum over the batch; it is divided by this.
    t : int
        The step number, starting at 1.
    """
    beta1 = 0.9
    beta2 = 0.999
    eps_stable = 1e-8
    for param, v, sqr in zip(params, vs, sqrs):
        g = param.grad / batch_size
        v[:] = beta1 * v + (1 - beta1) * g
        sqr[:] = beta2 * sqr + (1 - beta2) * g.square()
        v_bias_corr = v / (1 - beta1 ** t)
        sqr_bias_corr = sqr / (1 - beta2 ** t)
        param[:] = param - lr * v_bias_corr / (
            sqr_bias_corr.sqrt() + eps_stable)
