"""MyAdam against the two outside implementations: torch.optim and MXNet's built-in Adam."""
import mxnet as mx
import numpy as np
import pytest

import adam_plugin  # noqa: F401  (registers 'myadam')
from configs import CONFIGS, SHAPES, TOL, optimizer_kwargs
from oracles import gradients

STEPS = 20

# CONFIGS row -> the torch.optim class (by name) and its arguments with the same semantics.
# torch (the test extra) is imported by the test that runs it: it takes seconds to import,
# and every pytest-xdist worker imports every test module.
TORCH_EQUIVALENT = {
    'defaults': lambda c: ('Adam', {}),
    'wd': lambda c: ('Adam', dict(weight_decay=c['wd'])),
    'betas_epsilon': lambda c: ('Adam', dict(betas=(c['beta1'], c['beta2']), eps=c['epsilon'])),
    'amsgrad': lambda c: ('Adam', dict(amsgrad=True)),
    'amsgrad_wd': lambda c: ('Adam', dict(amsgrad=True, weight_decay=c['wd'])),
    'decoupled_wd': lambda c: ('AdamW', dict(weight_decay=c['wd'])),
    'decoupled_wd_amsgrad': lambda c: ('AdamW', dict(weight_decay=c['wd'], amsgrad=True)),
}

# CONFIGS rows that mx.optimizer.Adam can express; MyAdam runs them with epsilon_mode='hat'.
MXNET_ROWS = ['defaults', 'wd', 'rescale_grad', 'clip_gradient', 'lr_scheduler',
              'all_base_options', 'betas_epsilon']


def problem(rng, dtype='float32'):
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = list(zip(*[gradients(rng, s, STEPS, dtype) for s in SHAPES], strict=True))
    return weights, grads


def run_mx(opt, weights, grads):
    ws = [mx.nd.array(w) for w in weights]
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads, strict=True)):
            opt.update(i, w, mx.nd.array(g), states[i])
    return [w.asnumpy() for w in ws]


def run_torch(name, kwargs, lr, weights, grads):
    import torch
    params = [torch.tensor(w, requires_grad=True) for w in weights]
    opt = getattr(torch.optim, name)(params, lr=lr, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize('name', TORCH_EQUIVALENT)
def test_matches_torch(name, rng):
    config = CONFIGS[name]
    weights, grads = problem(rng)
    torch_name, torch_kwargs = TORCH_EQUIVALENT[name](config)
    kwargs = optimizer_kwargs(config)
    want = run_torch(torch_name, torch_kwargs, kwargs['learning_rate'], weights, grads)
    got = run_mx(mx.optimizer.create('myadam', **kwargs), weights, grads)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL['float32'])


@pytest.mark.parametrize('name', MXNET_ROWS)
def test_hat_mode_matches_mxnet_builtin_adam(name, rng):
    weights, grads = problem(rng)
    want = run_mx(mx.optimizer.create('adam', **optimizer_kwargs(CONFIGS[name])), weights, grads)
    got = run_mx(mx.optimizer.create('myadam', epsilon_mode='hat',
                                     **optimizer_kwargs(CONFIGS[name])), weights, grads)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL['float32'])


def test_default_mode_differs_from_mxnet_builtin_when_epsilon_matters(rng):
    # Guard for the test above: with a large epsilon 'outside' and 'hat' must disagree,
    # so agreement in 'hat' mode means something.
    weights, grads = problem(rng)
    kw = dict(learning_rate=0.01, epsilon=1e-1)
    builtin = run_mx(mx.optimizer.create('adam', **kw), weights, grads)
    outside = run_mx(mx.optimizer.create('myadam', **kw), weights, grads)
    assert not np.allclose(builtin[0], outside[0], **TOL['float32'])
