"""MyAdam against the NumPy oracle written from the papers, one row per configuration."""
import mxnet as mx
import numpy as np
import pytest

import adam_plugin  # noqa: F401  (registers 'myadam')
from configs import CONFIGS, LR, SHAPES, TOL, factor_schedule, optimizer_kwargs
from oracles import NumpyAdam, gradients

STEPS = 20


def run_myadam(config, dtype, weights, grads):
    opt = mx.optimizer.create('myadam', **optimizer_kwargs(config))
    ws = [mx.nd.array(w, dtype=dtype) for w in weights]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads, strict=True)):
            opt.update_multi_precision(i, w, mx.nd.array(g, dtype=dtype), states[i])
    return [w.asnumpy() for w in ws]


def run_oracle(config, weights, grads):
    kwargs = dict(config)
    lr_at = factor_schedule if kwargs.pop('lr_scheduler', None) else None
    oracle = NumpyAdam(lr=LR, lr_at=lr_at, **kwargs)
    ws = list(weights)
    for step_grads in grads:
        ws = [oracle.step(i, w, g) for i, (w, g) in enumerate(zip(ws, step_grads, strict=True))]
    return ws


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('name', CONFIGS)
def test_matches_numpy_oracle(name, dtype, rng):
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    per_shape = [gradients(rng, s, STEPS, dtype) for s in SHAPES]
    grads = list(zip(*per_shape, strict=True))
    got = run_myadam(CONFIGS[name], dtype, weights, grads)
    want = run_oracle(CONFIGS[name], weights, grads)
    for g, w, w0 in zip(got, want, weights, strict=True):
        assert g.dtype == np.dtype(dtype)
        assert not np.allclose(w, w0), 'the oracle did not move: the comparison would be empty'
        np.testing.assert_allclose(g, w, **TOL[dtype])


# --- Where epsilon goes, with gradients small enough that the placement shows ---------------

MODES = ['outside', 'inside', 'hat']
# (epsilon, smallest and largest gradient magnitude): around each mode's scale, where
# 'outside' uses epsilon, 'inside' sqrt(epsilon), 'hat' epsilon / sqrt(1 - beta2**t).
PLACEMENT = {'eps1e-8': (1e-8, 1e-9, 1e-3), 'eps1e-3': (1e-3, 1e-5, 1e-1)}


def small_gradients(rng, shape, low, high, dtype):
    out = []
    for _ in range(STEPS):
        scale = 10 ** rng.uniform(np.log10(low), np.log10(high), size=shape)
        out.append((rng.choice([-1.0, 1.0], size=shape) * scale).astype(dtype))
    return out


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('placement', PLACEMENT)
def test_epsilon_placement_shows_and_matches_the_oracle(placement, dtype, rng):
    epsilon, low, high = PLACEMENT[placement]
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = list(zip(*[small_gradients(rng, s, low, high, dtype) for s in SHAPES], strict=True))
    want = {}
    for mode in MODES:
        config = dict(epsilon=epsilon, epsilon_mode=mode)
        got = run_myadam(config, dtype, weights, grads)
        want[mode] = run_oracle(config, weights, grads)
        for g, w in zip(got, want[mode], strict=True):
            np.testing.assert_allclose(g, w, **TOL[dtype])
    # The modes differ by far more than the tolerance, so a mode mixed up with another fails.
    tol = TOL[dtype]
    for a, b in [('outside', 'inside'), ('outside', 'hat'), ('inside', 'hat')]:
        for wa, wb in zip(want[a], want[b], strict=True):
            gap = np.abs(wa - wb).max()
            assert gap > 100 * (tol['atol'] + tol['rtol'] * np.abs(wb).max()), (a, b, gap)
