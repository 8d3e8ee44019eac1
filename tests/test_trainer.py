"""MyAdam as MXNet sees it: registration, state placement, Trainer options, contexts."""
import itertools

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

import adam_plugin
from adam_plugin import MyAdam
from adam_plugin.chapter import linreg
from configs import TOL
from oracles import NumpyAdam


def test_registered_under_myadam():
    opt = mx.optimizer.create('myadam', learning_rate=0.1)
    assert isinstance(opt, MyAdam) and isinstance(opt, mx.optimizer.Optimizer)
    assert opt.learning_rate == 0.1


def test_defaults():
    opt = MyAdam()
    assert (opt.lr, opt.beta1, opt.beta2, opt.epsilon) == (0.001, 0.9, 0.999, 1e-8)
    assert opt.epsilon_mode == 'outside'
    assert not opt.amsgrad and not opt.decoupled_wd


@pytest.mark.parametrize('ctx', [mx.cpu(0), mx.cpu(1)])
@pytest.mark.parametrize('dtype', ['float32', 'float64', 'float16'])
@pytest.mark.parametrize('amsgrad', [False, True])
def test_state_lives_on_the_weights_context_and_dtype(ctx, dtype, amsgrad):
    weight = nd.ones((3, 2), ctx=ctx, dtype=dtype)
    *moments, count = MyAdam(amsgrad=amsgrad).create_state(0, weight)
    assert len(moments) == (3 if amsgrad else 2) and count == [0]  # (m, v[, vmax], [t])
    for buf in moments:
        assert buf.context == ctx and buf.dtype == np.dtype(dtype) and buf.shape == (3, 2)
        assert buf.asnumpy().sum() == 0


ONE_CPU = (mx.cpu(),)


def _train(params, optimizer, batch_size=8, steps=5, ctxs=ONE_CPU, **trainer_kw):
    trainer = gluon.Trainer(params, optimizer, **trainer_kw)
    features, labels = linreg.make_dataset(num_examples=40, seed=5)
    for X, y in itertools.islice(linreg.data_iter(batch_size, features, labels, seed=1), steps):
        Xs = gluon.utils.split_and_load(X, list(ctxs))
        ys = gluon.utils.split_and_load(y, list(ctxs))
        with autograd.record():
            ls = [linreg.squared_loss(linreg.linreg(Xi, params[0].data(c), params[1].data(c)), yi)
                  for Xi, yi, c in zip(Xs, ys, ctxs, strict=True)]
        autograd.backward(ls)
        trainer.step(batch_size)
    return trainer


def _params(ctxs=ONE_CPU, lr_mult=1.0):
    w = gluon.Parameter('w', shape=(2, 1), lr_mult=lr_mult)
    b = gluon.Parameter('b', shape=(1,))
    for p, v in ((w, [[0.1], [0.2]]), (b, [0.3])):
        p.initialize(ctx=list(ctxs))
        p.set_data(nd.array(v))
    return [w, b]


def test_lr_mult_zero_freezes_a_parameter():
    w, b = _params(lr_mult=0.0)
    _train([w, b], 'myadam', optimizer_params={'learning_rate': 0.1})
    np.testing.assert_array_equal(w.data().asnumpy(), np.float32([[0.1], [0.2]]))
    assert abs(b.data().asscalar() - 0.3) > 0.1  # the other one moved


def test_wd_mult_zero_exempts_a_parameter():
    # Zero gradient: only weight decay can move a parameter.
    w = gluon.Parameter('w', shape=(3,), wd_mult=0.0)
    b = gluon.Parameter('b', shape=(3,))
    for p in (w, b):
        p.initialize(init=mx.init.One())
    trainer = gluon.Trainer([w, b], 'myadam', {'learning_rate': 0.1, 'wd': 0.5,
                                               'decoupled_wd': True})
    for p in (w, b):
        p.grad()[:] = 0
        p.data()._fresh_grad = True
    trainer.step(1)
    np.testing.assert_array_equal(w.data().asnumpy(), np.ones(3))
    np.testing.assert_allclose(b.data().asnumpy(), np.full(3, 1 - 0.1 * 0.5), rtol=1e-6)


def test_lr_mult_half_makes_the_first_step_half_as_long():
    # Adam's first step is lr * g / (|g| + epsilon): lr * sign(g) for |g| >> epsilon.
    w = gluon.Parameter('w', shape=(3,), lr_mult=0.5)
    b = gluon.Parameter('b', shape=(3,))
    for p in (w, b):
        p.initialize(init=mx.init.One())
        p.grad()[:] = nd.array([0.3, -2.0, 50.0])
        p.data()._fresh_grad = True
    gluon.Trainer([w, b], 'myadam', {'learning_rate': 0.1}).step(1)
    np.testing.assert_allclose(w.data().asnumpy(), 1 - 0.05 * np.array([1, -1, 1]), rtol=1e-6)
    np.testing.assert_allclose(b.data().asnumpy(), 1 - 0.1 * np.array([1, -1, 1]), rtol=1e-6)


# (Trainer's optimizer params, lr_mult, wd_mult of the parameter under test)
MULTS = [
    (dict(), 0.5, 1.0),
    (dict(), 3.0, 1.0),
    (dict(wd=0.2), 1.0, 0.5),
    (dict(wd=0.2, decoupled_wd=True), 1.0, 0.5),
    (dict(wd=0.2, decoupled_wd=True), 0.5, 0.25),
    (dict(wd=0.1, amsgrad=True), 2.0, 3.0),
]
MULT_GRADS = [np.array([0.3, -2.0, 5.0, 0.0]), np.array([-0.1, -1.0, 4.0, 0.01]),
              np.array([0.2, 3.0, -6.0, -0.02])]


def _oracle_walk(lr, opts, w0):
    oracle = NumpyAdam(lr=lr, wd=opts.get('wd', 0.0), decoupled_wd=opts.get('decoupled_wd', False),
                       amsgrad=opts.get('amsgrad', False))
    walk = w0
    for g in MULT_GRADS:
        walk = oracle.step(0, walk, g.astype(np.float32))
    return walk


@pytest.mark.parametrize('fused', [True, False], ids=['kernel', 'textbook'])
@pytest.mark.parametrize('opts,lr_mult,wd_mult', MULTS)
def test_trainer_applies_lr_mult_and_wd_mult(opts, lr_mult, wd_mult, fused):
    w0 = np.float32([0.5, -1.5, 2.0, 1.0])
    w = gluon.Parameter('w', shape=(4,), lr_mult=lr_mult, wd_mult=wd_mult)
    b = gluon.Parameter('b', shape=(4,))
    for p in (w, b):
        p.initialize()
        p.set_data(nd.array(w0))
    trainer = gluon.Trainer([w, b], 'myadam', dict(learning_rate=0.1, fused=fused, **opts))
    for g in MULT_GRADS:
        for p in (w, b):
            p.grad()[:] = nd.array(g)
            p.data()._fresh_grad = True
        trainer.step(1)
    want_w = _oracle_walk(0.1 * lr_mult, dict(opts, wd=opts.get('wd', 0.0) * wd_mult), w0)
    want_b = _oracle_walk(0.1, opts, w0)
    np.testing.assert_allclose(w.data().asnumpy(), want_w, **TOL['float32'])
    np.testing.assert_allclose(b.data().asnumpy(), want_b, **TOL['float32'])
    assert np.abs(want_w - want_b).max() > 1e-3  # the multipliers made a difference


def test_optimizer_set_lr_mult_and_set_wd_mult_by_name():
    # Without a Trainer: multipliers by parameter name (MXNet zeroes wd_mult for names
    # not ending in _weight or _gamma, so the name is a weight's).
    opt = MyAdam(learning_rate=0.1, wd=0.2, decoupled_wd=True, param_idx2name={0: 'fc_weight'})
    opt.set_lr_mult({'fc_weight': 0.5})
    opt.set_wd_mult({'fc_weight': 0.25})
    w0 = np.float32([0.5, -1.5, 2.0, 1.0])
    weight = nd.array(w0)
    state = opt.create_state(0, weight)
    for g in MULT_GRADS:
        opt.update(0, weight, nd.array(g), state)
    want = _oracle_walk(0.05, dict(wd=0.05, decoupled_wd=True), w0)
    np.testing.assert_allclose(weight.asnumpy(), want, **TOL['float32'])


def test_trainer_step_rescales_by_batch_size():
    # A large epsilon makes the step depend on the gradient's scale (Adam alone is
    # scale-invariant), so a missing 1/batch_size would show.
    def direct(rescale_grad):
        opt = MyAdam(learning_rate=1.0, epsilon=1.0, rescale_grad=rescale_grad)
        w = nd.array([1.0])
        opt.update(0, w, nd.array([0.2]), opt.create_state(0, w))
        return w.asscalar()

    w = gluon.Parameter('w', shape=(1,))
    w.initialize(init=mx.init.One())
    trainer = gluon.Trainer([w], 'myadam', {'learning_rate': 1.0, 'epsilon': 1.0})
    w.grad()[:] = 0.2
    w.data()._fresh_grad = True
    trainer.step(4)
    assert w.data().asscalar() == pytest.approx(direct(0.25), rel=1e-6)
    assert direct(0.25) != pytest.approx(direct(1.0), rel=1e-2)


def test_two_contexts_train():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    features, labels = linreg.make_dataset(seed=0)
    run = linreg.train_trainer(features, labels, batch_size=10, lr=0.1, num_epochs=3, ctx=ctxs)
    np.testing.assert_allclose(run.w, linreg.TRUE_W, atol=0.01)
    assert abs(run.b - linreg.TRUE_B) <= 0.01


def test_package_exports():
    from importlib.metadata import version
    assert adam_plugin.__all__ == ['MyAdam', 'MyYogi']
    assert adam_plugin.MyAdam is MyAdam
    assert mx.optimizer.Optimizer.opt_registry['myyogi'] is adam_plugin.MyYogi
    assert issubclass(MyAdam, mx.optimizer.Optimizer)
    assert type(mx.optimizer.create('myadam')) is MyAdam
    assert mx.optimizer.Optimizer.opt_registry['myadam'] is MyAdam
    assert adam_plugin.__version__ == version('adam_plugin')
