"""MyAdam against the NumPy oracle written from the papers, one row per configuration."""
import numpy as np
import pytest
import mxnet as mx

import adam_plugin  # noqa: F401  (registers 'myadam')
from configs import CONFIGS, LR, factor_schedule, optimizer_kwargs
from conftest import SHAPES, TOL
from oracles import NumpyAdam, gradients

STEPS = 20


def run_myadam(config, dtype, weights, grads):
    opt = mx.optimizer.create('myadam', **optimizer_kwargs(config))
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
