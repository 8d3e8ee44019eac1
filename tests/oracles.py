"""Reference implementations for the tests, written from the papers in NumPy.

Nothing here imports ``adam_plugin``: these are the outside oracles the package
is measured against. Computation is in float64 on the given (already rounded) inputs.

Sources
-------
- Kingma & Ba (2014), *Adam*, Algorithm 1 (epsilon outside the root), and the
  end of section 2 for the epsilon-hat form with the step size
  ``alpha_t = alpha * sqrt(1 - beta2^t) / (1 - beta1^t)``.
- Reddi, Kale & Kumar (2018), *On the Convergence of Adam and Beyond*, AMSGrad,
  in PyTorch's variant (the maximum of the raw second moment, then bias-corrected).
- Loshchilov & Hutter (2019), *Decoupled Weight Decay Regularization*, AdamW
  with the schedule multiplier folded into lr (PyTorch's ``w -= lr * wd * w``).
- Zaheer, Reddi, Sachan, Kale & Kumar (2018), *Adaptive Methods for Nonconvex
  Optimization*, Algorithm 2 (Yogi): ``v_t = v_{t-1} - (1 - beta2) sign(v_{t-1} - g_t^2) g_t^2``,
  here with Adam's bias correction and epsilon placement around it (``yogi=True``).
- d2l.ai, chapter "Optimization Algorithms", section "Adam", Yogi (MXNet tab):
  :func:`d2l_yogi`, transcribed to NumPy as the book prints it.
- d2l.ai, chapter "Optimization Algorithms", section "Adam", ``adam`` (MXNet tab):
  :func:`d2l_adam`, transcribed to NumPy as the book prints it.
- optax 0.1.7, ``optax.yogi`` = ``scale_by_yogi`` then ``scale(-learning_rate)``:
  :func:`optax_yogi`, and ``optax.adam`` = ``scale_by_adam`` then the same:
  :func:`optax_adam`, transcribed to NumPy (jax itself needs SciPy, whose presence
  makes MXNet 1.9.1 import deprecated ``scipy.sparse`` names and warn).
- MXNet's documented Optimizer semantics: ``grad * rescale_grad``, L2 added
  before clipping, per-parameter step counts.
"""
import numpy as np


class NumpyAdam:
    """Adam on NumPy arrays. ``step(w, g)`` returns the new weight; state is kept per key."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, epsilon_mode='outside',
                 amsgrad=False, yogi=False, decoupled_wd=False, wd=0.0, rescale_grad=1.0,
                 clip_gradient=None, lr_at=None):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, epsilon
        self.mode, self.amsgrad, self.decoupled = epsilon_mode, amsgrad, decoupled_wd
        self.yogi = yogi
        self.wd, self.rescale, self.clip = wd, rescale_grad, clip_gradient
        self.lr_at = lr_at or (lambda t: lr)
        self.state = {}

    def step(self, key, w, g, rows=None):
        """The new weight after one step of ``w`` with gradient ``g``.

        With ``rows`` (MXNet's lazy row_sparse update), ``g`` holds the gradient of
        those rows of ``w`` only: they alone change, weights and moments; the step
        count ``t`` counts the step all the same.
        """
        w = np.array(w, np.float64)
        if key not in self.state:
            self.state[key] = dict(t=0, m=np.zeros_like(w), v=np.zeros_like(w),
                                   vmax=np.zeros_like(w))
        s = self.state[key]
        s['t'] += 1
        rows = slice(None) if rows is None else np.asarray(rows, dtype=np.intp)
        moments = {name: s[name][rows] for name in ('m', 'v', 'vmax')}
        w[rows] = self._rule(s['t'], w[rows], np.asarray(g, np.float64) * self.rescale, moments)
        for name, value in moments.items():
            s[name][rows] = value
        return w

    def _rule(self, t, w, g, s):
        """Adam on float64 arrays; updates the moments in the dict ``s``; returns the weight."""
        b1, b2 = self.beta1, self.beta2
        lr = self.lr_at(t)
        if self.wd and not self.decoupled:
            g = g + self.wd * w
        if self.clip is not None:
            g = np.clip(g, -self.clip, self.clip)
        s['m'] = b1 * s['m'] + (1 - b1) * g
        if self.yogi:  # Zaheer et al. (2018), Algorithm 2
            s['v'] = s['v'] - (1 - b2) * np.sign(s['v'] - g ** 2) * g ** 2
        else:
            s['v'] = b2 * s['v'] + (1 - b2) * g ** 2
        v = s['v']
        if self.amsgrad:
            s['vmax'] = np.maximum(s['vmax'], s['v'])
            v = s['vmax']
        if self.decoupled:
            w = w - lr * self.wd * w
        if self.mode == 'hat':
            # Kingma & Ba, section 2: fold both corrections into the step size.
            alpha_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            return w - alpha_t * s['m'] / (np.sqrt(v) + self.eps)
        m_hat = s['m'] / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        if self.mode == 'outside':
            return w - lr * m_hat / (np.sqrt(v_hat) + self.eps)
        if self.mode == 'inside':
            return w - lr * m_hat / np.sqrt(v_hat + self.eps)
        raise ValueError(self.mode)


def d2l_yogi(params, states, hyperparams):
    """d2l.ai's ``yogi`` (section "Adam", MXNet tab), with NumPy arrays for NDArrays.

    ``params`` and ``p.grad`` become pairs ``(p, grad)`` of float64 arrays; ``states``
    holds ``(v, s)`` pairs, zeros at first; ``hyperparams`` has ``'lr'`` and ``'t'``
    (1 at the first call). As in the book: beta1=0.9, beta2=0.999, eps=1e-3.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-3
    for (p, grad), (v, s) in zip(params, states, strict=True):
        v[:] = beta1 * v + (1 - beta1) * grad
        s[:] = s + (1 - beta2) * np.sign(
            np.square(grad) - s) * np.square(grad)
        v_bias_corr = v / (1 - beta1 ** hyperparams['t'])
        s_bias_corr = s / (1 - beta2 ** hyperparams['t'])
        p[:] -= hyperparams['lr'] * v_bias_corr / (np.sqrt(s_bias_corr)
                                                    + eps)
    hyperparams['t'] += 1


def d2l_adam(params, states, hyperparams):
    """d2l.ai's ``adam`` (section "Adam", MXNet tab), with NumPy arrays for NDArrays.

    ``params`` and ``p.grad`` become pairs ``(p, grad)`` of float64 arrays; ``states``
    holds ``(v, s)`` pairs, zeros at first; ``hyperparams`` has ``'lr'`` and ``'t'``
    (1 at the first call). As in the book: beta1=0.9, beta2=0.999, eps=1e-6.
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-6
    for (p, grad), (v, s) in zip(params, states, strict=True):
        v[:] = beta1 * v + (1 - beta1) * grad
        s[:] = beta2 * s + (1 - beta2) * np.square(grad)
        v_bias_corr = v / (1 - beta1 ** hyperparams['t'])
        s_bias_corr = s / (1 - beta2 ** hyperparams['t'])
        p[:] -= hyperparams['lr'] * v_bias_corr / (np.sqrt(s_bias_corr) + eps)
    hyperparams['t'] += 1


def optax_adam(learning_rate, grads_per_step, params, b1=0.9, b2=0.999, eps=1e-8,
               eps_root=0.0):
    """optax 0.1.7's ``adam(learning_rate, b1, b2, eps, eps_root)``, in NumPy; returns the
    params.

    As its ``scale_by_adam``: ``mu`` and ``nu`` start at 0; bias-corrected with the count
    after the increment; ``mu_hat / (sqrt(nu_hat + eps_root) + eps)``.
    """
    params = [np.array(p, np.float64) for p in params]
    mu = [np.zeros_like(p) for p in params]
    nu = [np.zeros_like(p) for p in params]
    count = 0
    for grads in grads_per_step:
        count += 1
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            mu[i] = (1 - b1) * g + b1 * mu[i]
            nu[i] = (1 - b2) * g ** 2 + b2 * nu[i]
            mu_hat = mu[i] / (1 - b1 ** count)
            nu_hat = nu[i] / (1 - b2 ** count)
            params[i] = params[i] + -learning_rate * (mu_hat / (np.sqrt(nu_hat + eps_root) + eps))
    return params


def optax_yogi(learning_rate, grads_per_step, params, b1=0.9, b2=0.999, eps=1e-3,
               eps_root=0.0, initial_accumulator_value=1e-6):
    """optax 0.1.7's ``yogi(learning_rate)`` at its defaults, in NumPy; returns the params.

    As its ``scale_by_yogi``: ``mu`` and ``nu`` both start at
    ``initial_accumulator_value``; ``nu = nu - (1 - b2) * sign(nu - g**2) * g**2``;
    bias-corrected with the count after the increment; ``m / (sqrt(v + eps_root) + eps)``.
    """
    params = [np.array(p, np.float64) for p in params]
    mu = [np.full_like(p, initial_accumulator_value) for p in params]
    nu = [np.full_like(p, initial_accumulator_value) for p in params]
    count = 0
    for grads in grads_per_step:
        count += 1
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            mu[i] = (1 - b1) * g + b1 * mu[i]
            nu[i] = nu[i] - (1 - b2) * np.sign(nu[i] - g ** 2) * g ** 2
            mu_hat = mu[i] / (1 - b1 ** count)
            nu_hat = nu[i] / (1 - b2 ** count)
            params[i] = params[i] + -learning_rate * (mu_hat / (np.sqrt(nu_hat + eps_root) + eps))
    return params


def gradients(rng, shape, steps, dtype=np.float32):
    """``steps`` random gradients whose magnitudes range over about 0.01 to 30."""
    out = []
    for _ in range(steps):
        scale = 10 ** rng.uniform(np.log10(0.01), np.log10(30), size=shape)
        out.append((rng.choice([-1.0, 1.0], size=shape) * scale).astype(dtype))
    return out
