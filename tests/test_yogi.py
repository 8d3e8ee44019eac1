"""Yogi (``yogi=True``, ``'myyogi'``) against its outside oracles, on every route and storage.

Oracles sharing no code with the package: d2l.ai's ``yogi`` transcribed to NumPy
(:func:`oracles.d2l_yogi`, eps=1e-3 outside the root, ``s`` from 0), optax 0.1.7's
``yogi`` transcribed to NumPy (:func:`oracles.optax_yogi`: eps=1e-3 outside the root,
both moments from ``initial_accumulator_value=1e-6``), and Zaheer et al.'s Algorithm 2 in
:class:`oracles.NumpyAdam` (every CONFIGS row, in test_rule.py and here for sparse storage).
"""
import pickle

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import MyAdam, MyYogi, dispatch, kernel
from adam_plugin.chapter import linreg
from configs import FUSED_TOL, SHAPES, TOL
from oracles import NumpyAdam, d2l_yogi, gradients, optax_yogi
from row_sparse import ROW_SETS, SHAPE, rsp_grads, run as run_sparse

STEPS = 20
LR = 0.01
# The package's routes for a dense parameter: (MyAdam keywords, the route taken).
ROUTES = {'kernel': dict(), 'textbook': dict(fused=False)}


def run(opt, dtype, weights, grads, init=None):
    """Step ``opt`` through ``grads``; ``init`` fills every moment buffer first."""
    ws = [nd.array(w, dtype=dtype) for w in weights]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    if init is not None:
        for state in states:
            for buf in state[:-1]:  # (m, v, [t])
                buf[:] = init
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads, strict=True)):
            opt.update_multi_precision(i, w, nd.array(g, dtype=dtype), states[i])
    return [w.asnumpy() for w in ws]


def problem(rng, dtype):
    weights = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    return weights, list(zip(*[gradients(rng, s, STEPS, dtype) for s in SHAPES], strict=True))


def check(got, want, weights, dtype):
    for g, w, w0 in zip(got, want, weights, strict=True):
        assert g.dtype == np.dtype(dtype)
        assert not np.allclose(w, w0, **TOL[dtype]), 'the oracle did not move'
        np.testing.assert_allclose(g, w, **TOL[dtype])


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('name', ['myyogi', 'myadam'])
def test_matches_d2l_yogi(name, route, dtype, rng):
    weights, grads = problem(rng, dtype)
    kwargs = dict(learning_rate=LR, **ROUTES[route])
    if name == 'myadam':
        kwargs.update(yogi=True, epsilon=1e-3)
    opt = mx.optimizer.create(name, **kwargs)
    assert dispatch.route(dispatch.CheckedLayouts(str)(0, nd.array(weights[0], dtype=dtype),
                                                nd.array(grads[0][0], dtype=dtype)),
                          opt) == route
    got = run(opt, dtype, weights, grads)
    params = [(np.array(w, np.float64), None) for w in weights]
    states = [(np.zeros(w.shape), np.zeros(w.shape)) for w in weights]
    hyper = {'lr': LR, 't': 1}
    for step_grads in grads:
        params = [(p, np.asarray(g, np.float64)) for (p, _), g in zip(params, step_grads, strict=True)]
        d2l_yogi(params, states, hyper)
    check(got, [p for p, _ in params], weights, dtype)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('route', ROUTES)
def test_matches_optax_yogi(route, dtype, rng):
    """optax at its defaults: eps=1e-3 outside the root, m and v from 1e-6 (set here)."""
    weights, grads = problem(rng, dtype)
    got = run(MyYogi(learning_rate=LR, **ROUTES[route]), dtype, weights, grads, init=1e-6)
    check(got, optax_yogi(LR, grads, weights), weights, dtype)


def test_every_kernel_variant_computes_yogi_as_the_textbook(rng):
    weights, grads = problem(rng, 'float32')
    textbook = run(MyYogi(learning_rate=LR, fused=False), 'float32', weights, grads)
    for name in kernel.variants():
        if not kernel.runs_here(name):
            continue
        previous = kernel.use_variant(name)
        try:
            stepped = run(MyYogi(learning_rate=LR), 'float32', weights, grads)
        finally:
            kernel.use_variant(previous)
        for a, b in zip(stepped, textbook, strict=True):
            np.testing.assert_allclose(a, b, **FUSED_TOL['float32'], err_msg=name)


def test_optax_init_matters(rng):
    # Guard for the test above: starting m and v from 0 instead of optax's 1e-6 must
    # show at these tolerances, so that agreement there means the states matched.
    weights, grads = problem(rng, 'float64')
    from_zero = run(MyYogi(learning_rate=LR), 'float64', weights, grads)
    from_optax = run(MyYogi(learning_rate=LR), 'float64', weights, grads, init=1e-6)
    assert not all(np.allclose(a, b, **TOL['float64']) for a, b in zip(from_zero, from_optax, strict=True))


@pytest.mark.parametrize('w_stype', ['default', 'row_sparse'])
@pytest.mark.parametrize('lazy_update', [True, False])
def test_row_sparse_matches_the_paper_oracle_in_every_buffer(lazy_update, w_stype, rng):
    """Lazy (the textbook's rows) and densified (the kernel) row_sparse gradients."""
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    ours = run_sparse(MyYogi(learning_rate=0.1, lazy_update=lazy_update), grads, w0, w_stype)
    oracle = NumpyAdam(lr=0.1, epsilon=1e-3, yogi=True)
    w = w0
    for rows, g, (mine, state) in zip(ROW_SETS, grads, ours, strict=True):
        if lazy_update:
            w = oracle.step(0, w, g.data.asnumpy(), rows=rows)
        else:
            w = oracle.step(0, w, g.asnumpy())
        np.testing.assert_allclose(mine, w, **TOL['float32'])
        for name, buf in zip(('m', 'v'), state[:2], strict=True):
            np.testing.assert_allclose(buf, oracle.state[0][name], **TOL['float32'],
                                       err_msg=name)


def test_float16_master_copy_matches_float32(rng):
    weights, grads = problem(rng, 'float16')
    w16 = run(MyYogi(learning_rate=LR, multi_precision=True), 'float16', weights, grads)
    w32 = run(MyYogi(learning_rate=LR), 'float32', weights, grads)
    for a, b, w0 in zip(w16, w32, weights, strict=True):
        assert a.dtype == np.float16
        assert np.abs(b - w0).max() > 0.05  # the run really moved
        np.testing.assert_allclose(a.astype(np.float32), b, atol=2e-3)  # float16 rounding


def test_operator_route_refuses_yogi():
    layout = dispatch.Layout(dense=True, dtype=np.dtype('float32'), device_type='gpu', shape=(4,))
    assert dispatch.route(layout, MyAdam()) == dispatch.OPERATOR
    assert dispatch.route(layout, MyAdam(yogi=True)) == dispatch.TEXTBOOK


def test_myyogi_is_myadam_with_yogi_and_d2l_epsilon():
    opt = mx.optimizer.create('myyogi')
    assert isinstance(opt, MyAdam) and opt.yogi and opt.epsilon == 1e-3
    assert not MyAdam().yogi
    with pytest.raises(ValueError, match=r"Invalid yogi: False"):
        MyYogi(yogi=False)
    with pytest.raises(ValueError, match=r"Invalid yogi: 'yes'"):
        MyAdam(yogi='yes')


def test_myyogi_takes_a_redundant_yogi_true_and_refuses_false():
    for opt in (MyYogi(yogi=True), MyYogi(yogi=1), mx.optimizer.create('myyogi', yogi=True)):
        assert type(opt) is MyYogi and opt.yogi is True and opt.epsilon == 1e-3
    with pytest.raises(ValueError) as err:
        MyYogi(yogi=False)
    assert str(err.value) == ("Invalid yogi: False (expected True: 'myyogi' is always Yogi; "
                              "use 'myadam' for yogi=False)")
    with pytest.raises(ValueError, match=r"^Invalid yogi: 'yes' \(expected True or False\)$"):
        MyYogi(yogi='yes')


def test_myyogi_pickles_with_its_class_and_options():
    opt = pickle.loads(pickle.dumps(MyYogi(learning_rate=0.3, amsgrad=True)))
    assert type(opt) is MyYogi and opt.yogi and opt.amsgrad and opt.lr == 0.3


def test_checkpoint_of_myyogi_round_trips(tmp_path):
    from adam_plugin import checkpoint
    features, labels = linreg.make_dataset(num_examples=40)
    kw = dict(optimizer='myyogi', batch_size=8, optimizer_params={'amsgrad': True})
    saved = linreg.train_trainer(features, labels, num_epochs=2, lr=0.1, **kw).trainer
    other = linreg.train_trainer(features, labels, num_epochs=1, lr=0.2, **kw).trainer
    checkpoint.save_states(saved, tmp_path / 'yogi.states')
    checkpoint.load_states(other, tmp_path / 'yogi.states')
    opt = other._optimizer
    assert type(opt) is MyYogi and opt.yogi and opt.amsgrad and opt.lr == 0.1
    assert opt.num_update == saved._optimizer.num_update == 10
    mine, theirs = other._updaters[0].states, saved._updaters[0].states
    assert sorted(mine) == sorted(theirs) == [0, 1]
    for index in mine:
        assert len(mine[index]) == 4 and mine[index][-1] == theirs[index][-1] == [10]
        for a, b in zip(mine[index][:-1], theirs[index][:-1], strict=True):  # m, v, vmax
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    adam = linreg.train_trainer(features, labels, num_epochs=1, lr=0.1).trainer
    with pytest.raises(ValueError, match='saved for optimizer MyYogi, this Trainer uses MyAdam'):
        checkpoint.load_states(adam, tmp_path / 'yogi.states')


def test_trains_the_chapters_regression():
    features, labels = linreg.make_dataset()
    floor = linreg.noise_floor(features, labels)
    run_ = linreg.train_trainer(features, labels, lr=0.1, optimizer='myyogi')
    assert run_.losses[0] > 100 * floor
    assert run_.loss < 2 * floor
    np.testing.assert_allclose(run_.w, linreg.TRUE_W, atol=0.01)
    np.testing.assert_allclose(run_.b, linreg.TRUE_B, atol=0.01)


def test_myyogi_takes_myadams_arguments_in_their_places():
    """``MyYogi`` binds ``MyAdam``'s signature: a first positional argument is the learning
    rate, epsilon defaults to d2l's 1e-3 unless given (by name or position), yogi is fixed."""
    assert (MyYogi(0.01).lr, MyYogi(0.01).epsilon, MyYogi(0.01).yogi) == (0.01, 1e-3, True)
    assert MyYogi(0.01, 0.8, 0.99, 1e-6).epsilon == 1e-6
    assert MyYogi(epsilon=1e-4).epsilon == 1e-4
    with pytest.raises(ValueError, match=r"^Invalid yogi: False"):
        MyYogi(yogi=False)
