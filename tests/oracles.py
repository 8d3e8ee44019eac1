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
- MXNet's documented Optimizer semantics: ``grad * rescale_grad``, L2 added
  before clipping, per-parameter step counts.
"""
import numpy as np


class NumpyAdam:
    """Adam on NumPy arrays. ``step(w, g)`` returns the new weight; state is kept per key."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, epsilon_mode='outside',
                 amsgrad=False, decoupled_wd=False, wd=0.0, rescale_grad=1.0,
                 clip_gradient=None, lr_at=None):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, epsilon
        self.mode, self.amsgrad, self.decoupled = epsilon_mode, amsgrad, decoupled_wd
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


def gradients(rng, shape, steps, dtype=np.float32):
    """``steps`` random gradients whose magnitudes range over about 0.01 to 30."""
    out = []
    for _ in range(steps):
        scale = 10 ** rng.uniform(np.log10(0.01), np.log10(30), size=shape)
        out.append((rng.choice([-1.0, 1.0], size=shape) * scale).astype(dtype))
    return out
