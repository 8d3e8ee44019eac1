"""Each parameter keeps its own step count ``t``, through a checkpoint too.

Four parameters updated unequally often under one Trainer: 'always' every step,
'frozen' not at steps 3 to 5 (``grad_req='null'``), 'late' only from step 5 on
(as if added to the model then), 'nan' skipped at step 2 for a NaN gradient. Each
must bias-correct with its own ``t`` (MXNet's ``_index_update_count``), while the
learning rate follows MXNet's rule for every parameter: ``lr_scheduler(num_update)``,
``num_update`` being the largest count so far. The oracle (tests/oracles.py) is told
both; a checkpoint at step 6 keeps every count, and the resumed run is the straight one.
"""
import math
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from adam_plugin import MyAdam, checkpoint
from checkpoints import LOADERS
from configs import TOL
from oracles import NumpyAdam

STEPS, SAVE_AFTER, LR = 10, 6, 0.01
NAMES = ('always', 'frozen', 'late', 'nan')
ACTIVE = {  # name -> the steps it is updated at (its gradient is fresh and finite)
    'always': set(range(1, STEPS + 1)),
    'frozen': set(range(1, STEPS + 1)) - {3, 4, 5},
    'late': set(range(5, STEPS + 1)),
    'nan': set(range(1, STEPS + 1)) - {2},
}
COUNTS = {i: len(ACTIVE[name]) for i, name in enumerate(NAMES)}
W0 = np.array([0.5, -1.0, 2.0], np.float32)


def schedule(num_update):
    """MXNet's CosineScheduler(max_update=12, base_lr=LR), as documented. It computes the
    rate from ``num_update`` alone (FactorScheduler only ever lowers it, so it would not
    show a parameter asking with its own, smaller, count)."""
    return LR * (1 + math.cos(math.pi * num_update / 12)) / 2


def grad(name, t):
    if name == 'nan' and t == 2:
        return np.array([1.0, np.nan, 0.5], np.float32)
    rng = np.random.default_rng(10 * t + NAMES.index(name))
    return rng.normal(size=3).astype(np.float32) * (NAMES.index(name) + 1)


def job(weights=None):
    params = [gluon.Parameter(name, shape=(3,)) for name in NAMES]
    for param, w in zip(params, weights or [W0] * len(NAMES), strict=True):
        param.initialize(mx.init.Constant(0.0))
        param.set_data(nd.array(w))
    scheduler = mx.lr_scheduler.CosineScheduler(max_update=12, base_lr=LR)
    return params, gluon.Trainer(params, 'myadam', {'learning_rate': LR,
                                                    'lr_scheduler': scheduler})


def train(params, trainer, steps):
    for t in steps:
        for name, param in zip(NAMES, params, strict=True):
            param.grad_req = 'write' if (t in ACTIVE[name] or name == 'nan') else 'null'
            if param.grad_req == 'write':
                param.grad()[:] = grad(name, t)
                param.data()._fresh_grad = True
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the NaN skip warns
            trainer.step(1)


def oracle_weights():
    num_update = [0]
    oracle = NumpyAdam(lr=LR, lr_at=lambda t: schedule(num_update[0]))
    weights = {name: W0.astype(np.float64) for name in NAMES}
    for t in range(1, STEPS + 1):
        num_update[0] = t  # 'always' is updated first, at every step
        for name in NAMES:
            if t in ACTIVE[name]:
                weights[name] = oracle.step(name, weights[name], grad(name, t))
    assert {n: oracle.state[n]['t'] for n in NAMES} == {n: len(ACTIVE[n]) for n in NAMES}
    return [weights[name] for name in NAMES]


def test_each_parameter_bias_corrects_with_its_own_count():
    params, trainer = job()
    train(params, trainer, range(1, STEPS + 1))
    assert trainer.optimizer._index_update_count == COUNTS
    assert trainer.optimizer.num_update == STEPS
    for param, want in zip(params, oracle_weights(), strict=True):
        np.testing.assert_allclose(param.data().asnumpy(), want, err_msg=param.name,
                                   **TOL['float32'])


@pytest.mark.parametrize('loader', LOADERS)
def test_a_checkpoint_keeps_each_count(loader, tmp_path):
    straight, trainer = job()
    train(straight, trainer, range(1, STEPS + 1))

    first, trainer = job()
    train(first, trainer, range(1, SAVE_AFTER + 1))
    checkpoint.save_states(trainer, tmp_path / 'trainer.states')
    saved = dict(trainer.optimizer._index_update_count)
    assert saved == {0: 6, 1: 3, 2: 2, 3: 5}
    params, trainer = job([p.data().asnumpy() for p in first])
    LOADERS[loader](trainer, tmp_path / 'trainer.states')
    assert trainer.optimizer._index_update_count == saved
    train(params, trainer, range(SAVE_AFTER + 1, STEPS + 1))
    assert trainer.optimizer._index_update_count == COUNTS
    for got, want in zip(params, straight, strict=True):
        np.testing.assert_array_equal(got.data().asnumpy(), want.data().asnumpy())


def test_begin_num_update_starts_the_state_s_count():
    """MXNet's ``begin_num_update``: a state's step count starts there, so a parameter's
    first update bias-corrects with ``t = begin_num_update + 1``, and ``num_update``, which
    the scheduler reads, follows it."""
    begin = 7
    opt = MyAdam(learning_rate=LR, begin_num_update=begin,
                 lr_scheduler=mx.lr_scheduler.CosineScheduler(max_update=12, base_lr=LR))
    weight = nd.array(W0)
    state = opt.create_state(0, weight)
    assert state[-1] == [begin]
    oracle = NumpyAdam(lr=LR, lr_at=schedule)
    oracle.state[0] = dict(t=begin, m=np.zeros(3), v=np.zeros(3), vmax=np.zeros(3))
    want = W0.astype(np.float64)
    for t in range(1, 4):
        opt.update(0, weight, nd.array(grad('always', t)), state)
        want = oracle.step(0, want, grad('always', t))
    assert state[-1] == [begin + 3] and opt.num_update == begin + 3
    np.testing.assert_allclose(weight.asnumpy(), want, **TOL['float32'])


def test_a_parameter_counted_before_num_update_moves_keeps_the_rate_it_saw():
    """In one update call, 'behind' (first in the list, one update behind) is counted
    while num_update is still 1, then 'ahead' moves it to 2: each takes the scheduler's
    rate at the num_update its own count left, as MXNet's Adam (one _get_lr after each
    count) gives; one rate after all counts would give 'behind' schedule(2)."""
    params = [gluon.Parameter(name, shape=(3,)) for name in ('behind', 'ahead')]
    for param in params:
        param.initialize(mx.init.Constant(0.0))
        param.set_data(nd.array(W0))
    scheduler = mx.lr_scheduler.CosineScheduler(max_update=12, base_lr=LR)
    trainer = gluon.Trainer(params, 'myadam', {'learning_rate': LR, 'lr_scheduler': scheduler})
    g = {name: grad('always', t) for t, name in enumerate(('behind', 'ahead'), 1)}
    for active in (['ahead'], ['behind', 'ahead']):
        for param in params:
            param.grad_req = 'write' if param.name in active else 'null'
            if param.name in active:
                param.grad()[:] = g[param.name]
                param.data()._fresh_grad = True
        trainer.step(1)
    assert trainer.optimizer._index_update_count == {0: 1, 1: 2}
    assert schedule(1) != pytest.approx(schedule(2), rel=1e-3)
    behind = NumpyAdam(lr_at=lambda t: schedule(1)).step('w', W0, g['behind'])
    at = iter([schedule(1), schedule(2)])  # 'ahead' saw num_update 1, then 2
    ahead = NumpyAdam(lr_at=lambda t: next(at))
    want = ahead.step('w', ahead.step('w', W0, g['ahead']), g['ahead'])
    for param, w in zip(params, (behind, want), strict=True):
        np.testing.assert_allclose(param.data().asnumpy(), w, err_msg=param.name,
                                   **TOL['float32'])
