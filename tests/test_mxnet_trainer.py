"""MXNet 1.9.1's own Gluon Trainer tests, with ``'myadam'`` as the optimizer.

Ported from apache/mxnet, tag 1.9.1, ``tests/python/unittest/test_gluon_trainer.py``.
Each test keeps MXNet's steps and its assertions about the Trainer: which KVStore it
made, ``update_on_kvstore``, the errors it raises, the learning rate after
``load_states`` and under an ``lr_scheduler``, the parameters' order. Those hold for any
optimizer, and ``'myadam'`` must not change them.

MXNet wrote these tests for SGD and asserts the weights SGD gives. Here each weight-checking
test runs twice, once with MXNet's own ``'adam'`` and once with ``'myadam'`` in its
``epsilon_mode='hat'`` (MXNet's rule). The two runs' weights must agree at the tolerances
of MXNet's own ``test_adam`` (``RTOL``, ``ATOL`` below).

Changes from the original:
- SGD's ``momentum`` is dropped; Adam has none.
- States files go to ``tmp_path``.
- ``dict_equ`` compares tuple states item by item (Adam's are ``(mean, var)``, MyAdam's
  ``(mean, var, [t])``).
- ``test_trainer_reset_kv`` expects different weights from the two: see there.
- The save/load tests also run with :func:`adam_plugin.checkpoint.load_states`
  (``test_checkpoint.LOADERS``).
- ``check_trainer_sparse_kv`` expects its exception with ``pytest.raises``. The original
  caught every exception and compared its type.
"""
import copy
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon
from mxnet.gluon import nn

from checkpoints import LOADERS
from configs import ATOL, RTOL
from oracles import NumpyAdam

# registered optimizer -> its options (trainer_for adds the learning rate MXNet's test gives)
OPTIMIZERS = {'adam': {}, 'myadam': {'epsilon_mode': 'hat'}}

# RTOL, ATOL: test_adam's own. They are needed here: MXNet's adam_update computes 1 - beta2
# in float32, 1.3e-5 too small for beta2 = 0.999, while its bias correction is exact. At
# learning rate 1 a weight that steps from 1 to about 0 shows that: MXNet's Adam gives
# -6.4e-6 in test_trainer_multi_layer_init, 'myadam' 1.2e-7. The rule gives 1.6e-7 and
# 7.9e-8 there (gradients 2 and 4); float32 steps by 6e-8 below 1.

def trainer_for(params, name, learning_rate, **kwargs):
    return gluon.Trainer(params, name, dict(OPTIMIZERS[name], learning_rate=learning_rate),
                         **kwargs)


def assert_same_weights(run):
    """``run(name)`` returns weights; MXNet's Adam and 'myadam' must give the same ones."""
    adam, mine = run('adam'), run('myadam')
    assert len(adam) == len(mine) > 0
    for a, b in zip(adam, mine, strict=True):
        assert not np.array_equal(a, 0)  # it stepped
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


def dict_equ(a, b):
    assert set(a) == set(b)
    for k in a:
        x, y = (s if isinstance(s, (tuple, list)) else (s,) for s in (a[k], b[k]))
        assert len(x) == len(y)
        for p, q in zip(x, y, strict=True):
            if isinstance(p, mx.nd.NDArray):
                assert (p.asnumpy() == q.asnumpy()).all()
            else:  # MyAdam's step count [t]
                assert p == q


def step_plus_one(trainer, data):
    with mx.autograd.record():
        for w in data:
            y = w + 1
            y.backward()
    trainer.step(1)


def test_multi_trainer():
    x = gluon.Parameter('x', shape=(10,), stype='row_sparse')
    x.initialize()
    # test set trainer
    trainer0 = gluon.Trainer([x], 'myadam')
    assert x._trainer is trainer0
    # test unset trainer
    x._set_trainer(None)
    assert x._trainer is None
    x._set_trainer(trainer0)
    # multiple trainers for a sparse Parameter is not allowed
    with pytest.raises(RuntimeError):
        gluon.Trainer([x], 'myadam')


def test_trainer_with_sparse_grad_on_single_context():
    def run(name):
        x = gluon.Parameter('x', shape=(10,), grad_stype='row_sparse')
        x.initialize(ctx=[mx.cpu(0)], init='zeros')
        trainer = trainer_for([x], name, 1.0)
        step_plus_one(trainer, x.list_data())
        assert trainer._update_on_kvstore is None
        assert trainer._kvstore is None  # No kvstore created for single-device training
        return [x.data(mx.cpu(0)).asnumpy()]
    assert_same_weights(run)


def test_trainer_with_teststore():
    def run(name):
        x = gluon.Parameter('x', shape=(10,))
        x.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
        kv = mx.kv.create('teststore')
        trainer = trainer_for([x], name, 1.0, kvstore=kv)
        step_plus_one(trainer, x.list_data())
        assert trainer._update_on_kvstore is False
        # Expect exceptions if update_on_kvstore is set to True,
        # because TestStore does not support that
        invalid_trainer = trainer_for([x], name, 1.0, kvstore=kv, update_on_kvstore=True)
        with pytest.raises(ValueError):
            invalid_trainer._init_kvstore()
        return [x.data(mx.cpu(1)).asnumpy()]
    assert_same_weights(run)


@pytest.mark.parametrize('loader', LOADERS)
def test_trainer(loader, tmp_path):
    def run(name):
        x = gluon.Parameter('x', shape=(10,))
        x.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
        trainer = trainer_for([x], name, 1.0)
        step_plus_one(trainer, x.list_data())
        assert trainer._optimizer.param_dict == trainer._optimizer.param_dict
        after_one = x.data(mx.cpu(1)).asnumpy()

        x.lr_mult = 0.5
        step_plus_one(trainer, x.list_data())
        after_two = x.data(mx.cpu(1)).asnumpy()

        trainer.save_states(tmp_path / f'{name}.states')
        states = copy.deepcopy(trainer._kvstore._updater.states) if trainer._update_on_kvstore \
            else copy.deepcopy(trainer._updaters[0].states)
        LOADERS[loader](trainer, tmp_path / f'{name}.states')
        if trainer._update_on_kvstore:
            dict_equ(trainer._kvstore._updater.states, states)
            assert trainer._optimizer == trainer._kvstore._updater.optimizer
            # invalid usage of update and allreduce_grads if update_on_kvstore
            with pytest.raises(AssertionError):
                trainer.update(1)
            with pytest.raises(AssertionError):
                trainer.allreduce_grads()
        else:
            for updater in trainer._updaters:
                dict_equ(updater.states, states)
            assert trainer._optimizer == trainer._updaters[0].optimizer

        x = gluon.Parameter('x', shape=(10,))
        x.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
        trainer2 = trainer_for([x], name, 1.0, update_on_kvstore=False)
        with mx.autograd.record():
            for i, w in enumerate(x.list_data()):
                y = i * w
                y.backward()
        assert (x.grad(mx.cpu(0)).asnumpy() != x.grad(mx.cpu(1)).asnumpy()).all()
        trainer2.allreduce_grads()
        assert (x.grad(mx.cpu(0)).asnumpy() == x.grad(mx.cpu(1)).asnumpy()).all()
        trainer2.update(1)
        return [after_one, after_two, x.data(mx.cpu(1)).asnumpy()]
    assert_same_weights(run)


@pytest.mark.parametrize('loader', LOADERS)
def test_trainer_save_load(loader, tmp_path):
    previous_update_on_kvstore = os.getenv('MXNET_UPDATE_ON_KVSTORE', "1")
    os.putenv('MXNET_UPDATE_ON_KVSTORE', '1')

    x = gluon.Parameter('x', shape=(10,), lr_mult=1.0)
    x.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
    trainer = trainer_for([x], 'myadam', 0.1)
    step_plus_one(trainer, x.list_data())
    assert trainer._kvstore._updater.optimizer._get_lr(0) == 0.1
    trainer.save_states(tmp_path / 'test_trainer_save_load.states')
    LOADERS[loader](trainer, tmp_path / 'test_trainer_save_load.states')
    x.lr_mult = 2.0
    # check if parameter dict is correctly associated with optimizer after load_state
    assert trainer._kvstore._updater.optimizer._get_lr(0) == 0.2
    os.putenv('MXNET_UPDATE_ON_KVSTORE', previous_update_on_kvstore)


@pytest.mark.parametrize('loader', LOADERS)
def test_trainer_sparse_save_load(loader, tmp_path):
    x = gluon.Parameter('x', shape=(10, 1), lr_mult=1.0,
                        stype='row_sparse', grad_stype='row_sparse')
    x.initialize(ctx=[mx.cpu(0)], init='zeros')
    trainer = trainer_for([x], 'myadam', 0.1)
    all_rows = mx.nd.arange(0, 10, ctx=mx.cpu(0))
    with mx.autograd.record():
        for w in x.list_row_sparse_data(all_rows):
            y = w * 1
            y.backward()
    trainer.step(1)
    assert trainer._kvstore._updater.optimizer._get_lr(0) == 0.1
    trainer.save_states(tmp_path / 'test_trainer_sparse_save_load.states')
    LOADERS[loader](trainer, tmp_path / 'test_trainer_sparse_save_load.states')
    x.lr_mult = 2.0
    # check if parameter dict is correctly associated with optimizer after load_state
    assert trainer._kvstore._updater.optimizer._get_lr(0) == 0.2


class Net(gluon.Block):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            # sparse param
            self.embed_weight = self.params.get('embed_weight', stype='row_sparse',
                                                shape=(4, 3), grad_stype='row_sparse')
            # dense param from a hybrid block
            self.dense0 = nn.Dense(2)

    def forward(self, x):
        embed_weight = self.embed_weight.row_sparse_data(x)
        embed = mx.nd.Embedding(data=x, weight=embed_weight,
                                input_dim=4, output_dim=3, sparse_grad=True)
        return self.dense0(embed)


@pytest.mark.parametrize('ctxes', [[mx.cpu(1), mx.cpu(2)], [mx.cpu(1)]], ids=['two', 'one'])
def test_trainer_multi_layer_init(ctxes):
    def run(name):
        net = Net(prefix='net_')
        net.initialize(mx.init.One(), ctx=ctxes)
        trainer = trainer_for(net.collect_params(), name, 1)
        data = mx.nd.array([[0, 2], [1, 2]])
        xs = gluon.utils.split_and_load(data, ctxes)
        ys = []
        with mx.autograd.record():
            for x in xs:
                y = net(x)
                ys.append(y)
        for y in ys:
            y.backward()
        trainer.step(1)
        # all parameters should be initialized
        assert not trainer._params_to_init
        all_rows = mx.nd.arange(0, 4, ctx=mx.cpu(1))
        # check the updated weights (row 3 has no gradient: SGD and lazy Adam leave it at 1)
        weight = net.embed_weight.row_sparse_data(all_rows).asnumpy()
        assert (weight[3] == 1).all()
        return [weight[:3]]
    assert_same_weights(run)


@pytest.mark.parametrize('kv', ['local', 'device'])
def test_trainer_reset_kv(kv, tmp_path):
    def run(name):
        params = gluon.ParameterDict()
        x = params.get('x', shape=(10,), lr_mult=1.0)
        params.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
        trainer = trainer_for(params, name, 0.1, kvstore=kv)
        params.save(str(tmp_path / 'test_trainer_reset_kv.params'))
        step_plus_one(trainer, x.list_data())
        assert trainer._kvstore.type == kv
        # load would reset kvstore
        mx.nd.waitall()
        params.load(str(tmp_path / 'test_trainer_reset_kv.params'))
        if trainer._update_on_kvstore:
            # drop kvstore state if new parameters are loaded
            assert trainer._kvstore is None
            assert trainer._kv_initialized is False
        step_plus_one(trainer, x.list_data())
        # the updated parameter should be based on the loaded checkpoint
        return [x.data(mx.cpu()).asnumpy()]
    # The Trainer's new KVStore starts new states, m = v = 0, for the loaded weights 0, and
    # 'myadam' its step count t with them: the first step of the rule. MXNet's 'adam' keeps
    # t in the optimizer, and steps the new moments at t = 2. Gradient: 1 on each device.
    oracle = NumpyAdam(lr=0.1, epsilon_mode='hat')
    first = oracle.step('x', np.zeros(10), np.full(10, 2.0))
    oracle.state['x'].update(m=np.zeros(10), v=np.zeros(10))  # t = 1 kept
    second = oracle.step('x', np.zeros(10), np.full(10, 2.0))
    assert second[0] != pytest.approx(first[0], rel=0.1)
    for name, want in (('myadam', first), ('adam', second)):
        np.testing.assert_allclose(run(name)[0], want, rtol=RTOL, atol=ATOL, err_msg=name)


GLOBAL_UPDATE_ON_KVSTORE = bool(int(os.getenv('MXNET_UPDATE_ON_KVSTORE', "1")))

# (weight stype, gradient stype, update_on_kvstore, what Trainer makes of it: its
# update_on_kvstore, or the error it raises), in check_trainer_sparse_kv's order.
SPARSE_KV = [
    ('default', 'default', True, True),
    ('default', 'default', False, False),
    ('default', 'default', None, GLOBAL_UPDATE_ON_KVSTORE),
    ('default', 'row_sparse', None, False),
    ('default', 'row_sparse', True, True),
    ('default', 'row_sparse', False, False),
    ('row_sparse', 'row_sparse', None, True),
    ('row_sparse', 'row_sparse', False, ValueError),
]


@pytest.mark.parametrize('kv', ['local', 'device'])
@pytest.mark.parametrize('stype, grad_stype, update_on_kv, expected', SPARSE_KV)
def test_trainer_sparse_kv(kv, stype, grad_stype, update_on_kv, expected):
    def run(name):
        params = gluon.ParameterDict()
        x = params.get('x', shape=(10, 1), lr_mult=1.0, stype=stype, grad_stype=grad_stype)
        params.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
        trainer = trainer_for(params, name, 0.1, kvstore=kv, update_on_kvstore=update_on_kv)
        all_rows = mx.nd.arange(0, 10, ctx=mx.cpu(0))
        ws = x.list_data() if stype == 'default' else x.list_row_sparse_data(all_rows)
        step_plus_one(trainer, ws)
        assert trainer._kvstore.type == kv
        assert trainer._kv_initialized
        assert trainer._update_on_kvstore is expected
        mx.nd.waitall()
        updated_w = x.data(mx.cpu(0)) if stype == 'default' else x.row_sparse_data(all_rows)
        return [updated_w.asnumpy()]

    if isinstance(expected, type):
        for name in OPTIMIZERS:
            with pytest.raises(expected):
                run(name)
    else:
        assert_same_weights(run)


@pytest.mark.parametrize('update_on_kvstore', [None, False])
def test_trainer_lr_sched(update_on_kvstore):
    x = gluon.Parameter('x', shape=(10,))
    x.initialize(ctx=[mx.cpu(0), mx.cpu(1)], init='zeros')
    freq = 2
    factor = 0.1
    lr = 1
    lr_sched = mx.lr_scheduler.FactorScheduler(freq, factor=factor, base_lr=lr)
    trainer = gluon.Trainer([x], 'myadam', {'learning_rate': lr, 'lr_scheduler': lr_sched},
                            update_on_kvstore=update_on_kvstore)
    for i in range(10):
        step_plus_one(trainer, x.list_data())
        if i % freq == 0:
            assert trainer.learning_rate == lr, (lr, trainer.learning_rate, i)
            lr *= factor
    mx.nd.waitall()


def test_gluon_trainer_param_order():
    net = mx.gluon.nn.Sequential()
    # layers may be added in a random order for all workers
    layers = {'ones_': 1, 'zeros_': 0}
    for name, init in layers.items():
        net.add(mx.gluon.nn.Dense(10, in_units=10, weight_initializer=mx.init.Constant(init),
                                  use_bias=False, prefix=name))
    params = net.collect_params()
    net.initialize()
    trainer = gluon.Trainer(params, 'myadam')
    for name in layers:
        expected_idx = 0 if name == 'ones_' else 1
        expected_name = name + 'weight'
        assert trainer._params[expected_idx].name == expected_name
