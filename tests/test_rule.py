"""MyAdam against the NumPy oracle written from the papers, one row per configuration."""
import numpy as np
import pytest
import mxnet as mx

import adam_plugin  # noqa: F401  (registers 'myadam')
from conftest import SHAPES, TOL
from oracles import NumpyAdam, gradients

STEPS = 20
LR = 0.01

# name -> MyAdam keyword arguments (the oracle takes the same names).
CONFIGS = {
    'defaults': {},
    'wd': dict(wd=0.05),
    'rescale_grad': dict(rescale_grad=0.1),
    'clip_gradient': dict(clip_gradient=2.0),
    'lr_scheduler': dict(lr_scheduler='factor'),
    'all_base_options': dict(wd=0.05, rescale_grad=0.1, clip_gradient=1.5,
                             lr_scheduler='factor'),
    'betas_epsilon': dict(beta1=0.8, beta2=0.99, epsilon=1e-3),
    'inside': dict(epsilon_mode='inside'),
    'inside_big_eps': dict(epsilon_mode='inside', epsilon=1e-3),
    'hat': dict(epsilon_mode='hat', epsilon=1e-3),
    'amsgrad': dict(amsgrad=True),
    'amsgrad_wd': dict(amsgrad=True, wd=0.05),
    'decoupled_wd': dict(decoupled_wd=True, wd=0.05),
    'decoupled_wd_amsgrad': dict(decoupled_wd=True, wd=0.05, amsgrad=True),
    'everything': dict(beta1=0.85, beta2=0.995, epsilon=1e-4, epsilon_mode='hat',
                       amsgrad=True, decoupled_wd=True, wd=0.1, rescale_grad=0.5,
                       clip_gradient=3.0, lr_scheduler='factor'),
}


def factor_schedule(t):
    """MXNet's FactorScheduler(step=5, factor=0.5), as documented: halve every 5 updates."""
    return LR * 0.5 ** ((t - 1) // 5)


def run_myadam(config, dtype, weights, grads):
    kwargs = dict(config)
    if kwargs.pop('lr_scheduler', None):
        kwargs['lr_scheduler'] = mx.lr_scheduler.FactorScheduler(step=5, factor=0.5, base_lr=LR)
    opt = mx.optimizer.create('myadam', learning_rate=LR, **kwargs)
    ws = [mx.nd.array(w, dtype=dtype) for w in weights]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads)):
            opt.update_multi_precision(i, w, mx.nd.array(g, dtype=dtype), states[i])
    return [w.asnumpy() for w in ws]


def run_oracle(config, weights, grads):
    kwargs = dict(config)
    lr_at = factor_schedule if kwargs.pop('lr_scheduler', None) else None
    oracle = NumpyAdam(lr=LR, lr_at=lr_at, **kwargs)
    ws = list(weights)
    for step_grads in grads:
        ws = [oracle.step(i, w, g) for i, (w, g) in enumerate(zip(ws, step_grads))]
    return ws


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('name', CONFIGS)
def test_matches_numpy_oracle(name, dtype, rng):
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    per_shape = [gradients(rng, s, STEPS, dtype) for s in SHAPES]
    grads = list(zip(*per_shape))
    got = run_myadam(CONFIGS[name], dtype, weights, grads)
    want = run_oracle(CONFIGS[name], weights, grads)
    for g, w, w0 in zip(got, want, weights):
        assert g.dtype == np.dtype(dtype)
        assert not np.allclose(w, w0), 'the oracle did not move: the comparison would be empty'
        np.testing.assert_allclose(g, w, **TOL[dtype])
