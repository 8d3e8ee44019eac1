"""The other ways MXNet 1.9.1 trains: numpy mode (``npx.set_np()``) and the Module API.

Each trains the same model from the same start with ``'myadam'`` in 'hat' mode and
with MXNet's ``'adam'``, and compares the weights.
"""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon, npx

from adam_plugin import dispatch
from conftest import TOL

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
    for a, b in zip(mine, adam):
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
