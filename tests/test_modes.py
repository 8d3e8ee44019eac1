"""The other ways MXNet 1.9.1 trains: numpy mode (``npx.set_np()``), the Module API, and
AMP's dynamic loss scaling (``mxnet.contrib.amp``).

Each trains the same model from the same start with ``'myadam'`` in 'hat' mode and
with MXNet's ``'adam'``, and compares the weights.
"""
import json
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, npx

from adam_plugin import dispatch
from configs import TOL

STEPS = 20
OPTIONS = dict(learning_rate=0.01, wd=0.01)


@pytest.fixture
def routes(monkeypatch):
    """The routes dispatch.route chose during the test."""
    taken = set()
    original = dispatch.route

    def recording(layout, options):
        way = original(layout, options)
        taken.add(way)
        return way

    monkeypatch.setattr(dispatch, 'route', recording)
    return taken


@pytest.fixture
def numpy_mode():
    npx.set_np()
    try:
        yield
    finally:
        npx.reset_np()


def train_numpy_mode(optimizer, options):
    """A two-layer Gluon MLP on ``mx.np`` arrays; its parameters after STEPS steps, in order."""
    rng = np.random.default_rng(0)
    x = mx.np.array(rng.standard_normal((32, 5)), dtype='float32')
    y = mx.np.array(rng.standard_normal((32, 1)), dtype='float32')
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, activation='tanh', in_units=5), gluon.nn.Dense(1, in_units=8))
    mx.random.seed(1)
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), optimizer, dict(OPTIONS, **options))
    loss_fn = gluon.loss.L2Loss()
    for _ in range(STEPS):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(32)
    params = net.collect_params()
    assert all(isinstance(p.data(), mx.np.ndarray) for p in params.values())
    return [p.data().asnumpy() for p in params.values()]


# MyAdam options -> the route its parameters take.
NUMPY_MODE_ROUTES = [(dict(), 'kernel'), (dict(fused=False), 'textbook')]


@pytest.mark.parametrize('options, route', NUMPY_MODE_ROUTES)
def test_numpy_mode_trains_as_adam(options, route, routes, numpy_mode):
    adam = train_numpy_mode('adam', {})
    mine = train_numpy_mode('myadam', dict(options, epsilon_mode='hat'))
    assert routes == {route}
    assert [a.shape for a in mine] == [a.shape for a in adam] == [(8, 5), (8,), (1, 8), (1,)]
    for a, b in zip(mine, adam, strict=True):
        np.testing.assert_allclose(a, b, **TOL['float32'])


def test_numpy_mode_is_reset():
    assert not mx.util.is_np_array()  # the fixture left no trace for the other tests


def fit_module(optimizer, options):
    """``Module.fit`` of a linear regression for 4 epochs; its parameters."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = (x @ np.array([[2.0], [-3.4], [1.0]]) + 4.2).astype(np.float32)
    data = mx.io.NDArrayIter(x, y, batch_size=10, shuffle=False, label_name='lin_reg_label')
    out = mx.sym.FullyConnected(mx.sym.Variable('data'), num_hidden=1, name='fc')
    out = mx.sym.LinearRegressionOutput(out, mx.sym.Variable('lin_reg_label'))
    module = mx.mod.Module(out, data_names=['data'], label_names=['lin_reg_label'])
    start = {'fc_weight': mx.nd.array(rng.standard_normal((1, 3))), 'fc_bias': mx.nd.zeros((1,))}
    module.fit(data, num_epoch=4, optimizer=optimizer,
               optimizer_params=dict(OPTIONS, **options), arg_params=start)
    assert module._optimizer.__class__.__name__ == {'myadam': 'MyAdam', 'adam': 'Adam'}[optimizer]
    arg_params, _ = module.get_params()
    return {name: a.asnumpy() for name, a in arg_params.items()}


@pytest.mark.parametrize('options, route', NUMPY_MODE_ROUTES)
def test_module_fit_trains_as_adam(options, route, routes):
    adam = fit_module('adam', {})
    mine = fit_module('myadam', dict(options, epsilon_mode='hat'))
    assert routes == {route}
    assert sorted(mine) == sorted(adam) == ['fc_bias', 'fc_weight']
    assert not np.array_equal(mine['fc_bias'], 0)  # it trained
    for name in adam:
        np.testing.assert_allclose(mine[name], adam[name], **TOL['float32'], err_msg=name)


# AMP patches MXNet's operators for the whole process, so it runs in a Python of its own.
# bfloat16 FullyConnected needs a CPU with bfloat16 support (this development machine's
# MKL-DNN refuses it), so the model is elementwise: AMP casts nothing, and what is tested is
# its loss scaler, which sets the Trainer's scale each step and skips a step whose
# gradients overflow. Step 2's input holds an Inf.
AMP_SCRIPT = """
import json, sys
import numpy as np, mxnet as mx
from mxnet import autograd, gluon
from mxnet.contrib import amp
import adam_plugin
amp.init(target_dtype='bfloat16')
optimizer, options, update_on_kvstore = json.loads(sys.argv[1])
contexts = [mx.cpu(0), mx.cpu(1)]
w = gluon.Parameter('w', shape=(6,))
w.initialize(mx.init.Constant(0.5), ctx=contexts)
trainer = gluon.Trainer([w], optimizer, dict(options, learning_rate=0.01),
                        update_on_kvstore=update_on_kvstore)
amp.init_trainer(trainer)
rng = np.random.default_rng(0)
for step in range(6):
    x = rng.standard_normal((2, 6)).astype('float32')
    if step == 2:
        x[0, 0] = np.inf
    with autograd.record():
        losses = [(w.data(ctx) * mx.nd.array(x[i], ctx=ctx)).sum()
                  for i, ctx in enumerate(contexts)]
        with amp.scale_loss(losses, trainer) as scaled:
            autograd.backward(scaled)
    trainer.step(2)
print(json.dumps({'w': w.data(contexts[1]).asnumpy().tolist(),
                  'loss_scale': trainer._amp_loss_scaler.loss_scale,
                  'num_skipped': getattr(trainer._optimizer, 'num_skipped', None)}))
"""


def amp_train(optimizer, options, update_on_kvstore):
    done = subprocess.run(
        [sys.executable, '-c', AMP_SCRIPT, json.dumps([optimizer, options, update_on_kvstore])],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # four Pythons, each importing MXNet
def test_amp_loss_scaling_skips_the_overflow_step_in_both_trainer_modes():
    """With ``update_on_kvstore=True`` the KVStore updates inside ``Trainer.step`` before
    AMP's overflow check, so MXNet's own Adam writes the Inf step's NaN into the weight;
    'myadam' skips that gradient itself and ends where the Trainer-updated run ends."""
    adam = {kv: amp_train('adam', {}, kv) for kv in (False, True)}
    mine = {kv: amp_train('myadam', {'epsilon_mode': 'hat'}, kv) for kv in (False, True)}
    for run in (*adam.values(), *mine.values()):
        assert run['loss_scale'] == 2.0 ** 15  # 2**16, halved once, after the overflow
    assert np.isnan(adam[True]['w']).any()  # MXNet's Adam, for contrast
    assert np.isfinite(adam[False]['w']).all()
    assert (mine[False]['num_skipped'], mine[True]['num_skipped']) == (0, 1)
    np.testing.assert_array_equal(mine[True]['w'], mine[False]['w'])
    np.testing.assert_allclose(mine[False]['w'], adam[False]['w'], **TOL['float32'])
    assert not np.allclose(mine[False]['w'], 0.5)  # it trained
