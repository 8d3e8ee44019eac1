"""What an update call reuses of the arrays MXNet hands it again (dispatch.Batches).

A Trainer's Updater hands the same weight, gradient and state objects at every step, and
the update call reuses what it made of them. Each test runs the same steps twice, once
as it is and once with nothing kept (``dispatch.BATCHES_KEPT = 0``), and asks for bitwise equal
weights and states: an object replaced between steps, an option changed, the kernel
gone, must each be seen, and a row_sparse gradient's rows read afresh.
"""
import operator
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from adam_plugin import MyAdam, dispatch, kernel
from helpers import state_arrays

SHAPES = [(4, 3), (5,), (2, 3, 2)]


@pytest.fixture
def made(monkeypatch):
    """Counts the Batches made."""
    count = [0]

    def counting(*args, batch=dispatch.Batch, **kwargs):
        count[0] += 1
        return batch(*args, **kwargs)

    monkeypatch.setattr(dispatch, 'Batch', counting)
    return count


def direct_run(change, steps=4, amsgrad=True, **options):
    """``steps`` update calls of one list of parameters, straight to the optimizer as
    MXNet's Updater makes them; before each, the gradients are written in place, then
    ``change(step, weights, grads, states, optimizer)`` may replace objects or set
    options. Returns the weights and states at the end, as NumPy arrays."""
    rng = np.random.default_rng(7)
    scheduler = mx.lr_scheduler.FactorScheduler(step=1, factor=0.7, base_lr=0.05)
    opt = MyAdam(learning_rate=0.05, lr_scheduler=scheduler, amsgrad=amsgrad, **options)
    weights = [nd.array(rng.normal(size=s)) for s in SHAPES]
    grads = [nd.zeros(s) for s in SHAPES]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(weights)]
    for step in range(steps):
        for g in grads:
            g[:] = rng.normal(size=g.shape)
        change(step, weights, grads, states, opt)
        opt.update_multi_precision(list(range(len(SHAPES))), weights, grads, states)
    return [w.asnumpy() for w in weights] + [a.asnumpy() for s in states for a in s[:-1]]


def same_as_fresh(monkeypatch, run, *args, **kwargs):
    """``run(*args, **kwargs)`` gives bitwise what it gives with nothing reused."""
    reused = run(*args, **kwargs)
    monkeypatch.setattr(dispatch, 'BATCHES_KEPT', 0)
    fresh = run(*args, **kwargs)
    assert len(reused) == len(fresh)
    for got, want in zip(reused, fresh, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_same_arrays_reuse_one_batch(made):
    direct_run(lambda *args: None)
    assert made[0] == 1


def _copy_state(state):
    return tuple(a.copy() for a in state[:-1]) + ([state[-1][0]],)


@pytest.mark.parametrize('what', ['weight', 'grad', 'state'])
def test_an_object_replaced_between_steps_is_the_one_stepped(monkeypatch, made, what):
    """From step 2 on, parameter 1's weight, gradient or state is a new object holding
    the same values (the old one is left as it was): the new one is read and written."""
    def change(step, weights, grads, states, opt):
        if step == 2:
            if what == 'weight':
                weights[1] = weights[1].copy()
            elif what == 'grad':
                grads[1] = grads[1].copy()
                grads[1] *= 3  # the old one no longer holds this step's gradient
            else:
                states[1] = _copy_state(states[1])

    same_as_fresh(monkeypatch, direct_run, change)
    assert made[0] == 2 + 4  # the reused run made 2, the fresh one 4


@pytest.mark.parametrize('option, value', [
    ('amsgrad', False), ('epsilon_mode', 'inside'), ('fused', False), ('yogi', True),
    ('decoupled_wd', True), ('lazy_update', False)])
def test_an_option_set_between_steps_takes_effect(monkeypatch, option, value):
    def change(step, weights, grads, states, opt):
        if step == 2:
            setattr(opt, option, value)

    same_as_fresh(monkeypatch, direct_run, change, wd=0.01)


def test_a_changed_option_of_the_route_makes_a_new_batch(monkeypatch, made):
    """fused=False sends the next calls to the textbook path, on the same arrays."""
    textbook = []
    monkeypatch.setattr(dispatch, 'textbook_step',
                        lambda *args, step=dispatch.textbook_step:
                        textbook.append(args) or step(*args))

    def change(step, weights, grads, states, opt):
        opt.fused = step < 2

    direct_run(change)
    assert made[0] == 2 and len(textbook) == 2 * len(SHAPES)


def test_the_kernel_gone_between_steps_is_seen(monkeypatch):
    """kernel.LIBRARY None (as without a built kernel): the next calls take MXNet's
    operator, on the same arrays."""
    if kernel.LIBRARY is None:
        pytest.skip('the kernel was not built')
    library = kernel.LIBRARY
    operator = []
    monkeypatch.setattr(dispatch, 'operator_step',
                        lambda *args, step=dispatch.operator_step:
                        operator.append(args) or step(*args))

    def change(step, weights, grads, states, opt):
        monkeypatch.setattr(kernel, 'LIBRARY', library if step < 2 else None)

    direct_run(change, amsgrad=False)
    assert len(operator) == 2 * len(SHAPES)


def test_a_variant_changed_between_steps_gives_the_same_numbers(monkeypatch):
    """The kernel picks its variant at each call: a reused batch follows it."""
    names = kernel.variants()
    if len(names) < 2:
        pytest.skip('one variant only')
    previous = kernel.variant()
    used = []

    def change(step, weights, grads, states, opt):
        kernel.use_variant(names[step % 2])
        used.append(kernel.variant())

    try:
        same_as_fresh(monkeypatch, direct_run, change)
    finally:
        kernel.use_variant(previous)
    assert used[:2] == names[:2]


def _model(ctx, sparse):
    net = gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(gluon.nn.Embedding(50, 4, sparse_grad=sparse), gluon.nn.Flatten(),
                gluon.nn.Dense(8, activation='relu'), gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net.collect_params('.*dense1.*').setattr('lr_mult', 0.5)
    return net


def trainer_run(ctx, sparse, update_on_kvstore, steps=6):
    """A Trainer's loop with a new backward each step under an lr_scheduler, the
    embedding's gradient row_sparse or not; every other step only the embedding and
    the last layer have fresh gradients (ignore_stale_grad), and step 3 has a NaN in
    the last layer's gradient (skipped)."""
    mx.random.seed(3)
    np.random.seed(3)
    net = _model(ctx, sparse)
    scheduler = mx.lr_scheduler.CosineScheduler(max_update=8, base_lr=0.02)
    trainer = gluon.Trainer(net.collect_params(), 'myadam',
                            {'learning_rate': 0.02, 'lr_scheduler': scheduler, 'wd': 1e-3},
                            update_on_kvstore=update_on_kvstore)
    rng = np.random.default_rng(5)
    params = list(net.collect_params().values())
    for step in range(steps):
        datas = [nd.array(rng.integers(0, 50, size=(6, 2)), ctx=c) for c in ctx]
        labels = [nd.array(rng.normal(size=(6, 3)), ctx=c) for c in ctx]
        with autograd.record():
            losses = [((net(d) - y) ** 2).sum() for d, y in zip(datas, labels, strict=True)]
        for loss in losses:
            loss.backward()
        if step % 2:
            for p in params[1:-2]:
                for d in p.list_data():
                    d._fresh_grad = False
        if step == 3:
            params[-1].list_grad()[0][0] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
            trainer.step(6, ignore_stale_grad=True)
    return [d.asnumpy() for p in params for d in p.list_data()]


@pytest.mark.parametrize('ctx, sparse, update_on_kvstore', [
    ([mx.cpu(0)], False, None), ([mx.cpu(0)], True, None),
    ([mx.cpu(0), mx.cpu(1)], False, False), ([mx.cpu(0), mx.cpu(1)], True, False)])
def test_a_trainers_loop_gives_what_it_gives_without_reuse(monkeypatch, made, ctx, sparse,
                                                           update_on_kvstore):
    same_as_fresh(monkeypatch, trainer_run, ctx, sparse, update_on_kvstore)
    assert made[0] < 2 * 6 * len(ctx)  # the first run reused some


def test_ignore_stale_grads_subsets_keep_only_the_last_kept(monkeypatch):
    """Every subset of parameters with fresh gradients is a list of its own: no more
    than BATCHES_KEPT Batches are kept in all."""
    params = [gluon.Parameter(f'p{i}', shape=(2,)) for i in range(7)]
    for p in params:
        p.initialize(mx.init.One())
    trainer = gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})
    for mask in range(1, 2 ** len(params) // 2):
        for i, p in enumerate(params):
            p.grad()[:] = 1.0
            p.data()._fresh_grad = bool(mask >> i & 1)
        trainer.step(1, ignore_stale_grad=True)
    assert len(trainer.optimizer._batches._kept) <= dispatch.BATCHES_KEPT
    assert trainer.optimizer._index_update_count[0] == 2 ** (len(params) - 1) // 2


def test_new_arrays_for_the_same_parameters_replace_the_kept_batch():
    """A net whose arrays are made anew (cast, moved, reinitialised) leaves no Batch that
    holds the old ones alive: the one for the same parameters on the same device is
    replaced; another device's is kept beside it."""
    opt = MyAdam(learning_rate=0.1)
    weights_of = {}
    for ctx in (mx.cpu(0), mx.cpu(0), mx.cpu(1)):
        weights = weights_of[ctx] = [nd.ones((3,), ctx=ctx) for _ in range(2)]
        states = [opt.create_state(i, w) for i, w in enumerate(weights)]
        opt.update([0, 1], weights, [nd.ones((3,), ctx=ctx) for _ in weights], states)
    kept_weights = [arrays[:2] for _, _, arrays, _ in opt._batches._kept]
    expected = [weights_of[mx.cpu(1)], weights_of[mx.cpu(0)]]  # newest first
    assert len(kept_weights) == len(expected)
    for kept, weights in zip(kept_weights, expected, strict=True):
        assert all(map(operator.is_, kept, weights))


def kvstore_run(case, steps=6):
    """A loop whose update calls come one parameter at a time from the KVStore's callback,
    with new weight and gradient objects each call, a backward every step: a
    SparseEmbedding (row_sparse weight and gradient, update_on_kvstore as MXNet forces
    it) beside a Dense layer, on one context or two; or a dense model on two contexts
    under nonfinite='raise' (whose calls are not queued in the engine). A NaN in the last
    layer's gradient at step 3 (skipped, or refused)."""
    mx.random.seed(3)
    ctx = [mx.cpu(0)] if case == 'sparse_weight' else [mx.cpu(0), mx.cpu(1)]
    net = gluon.nn.Sequential()  # SparseEmbedding is not a HybridBlock
    with net.name_scope():
        if case == 'dense_raise':
            net.add(gluon.nn.Embedding(50, 4), gluon.nn.Flatten(), gluon.nn.Dense(3))
        else:
            net.add(gluon.contrib.nn.SparseEmbedding(50, 4), gluon.nn.Flatten(),
                    gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    options = {'learning_rate': 0.02, 'wd': 1e-3,
               'lr_scheduler': mx.lr_scheduler.CosineScheduler(max_update=8, base_lr=0.02)}
    if case == 'dense_raise':
        options['nonfinite'] = 'raise'
    trainer = gluon.Trainer(net.collect_params(), 'myadam', options, update_on_kvstore=True)
    rng = np.random.default_rng(5)
    params = list(net.collect_params().values())
    for step in range(steps):
        datas = [nd.array(rng.integers(0, 50, size=(6, 2)), ctx=c) for c in ctx]
        with autograd.record():
            losses = [(net(d) ** 2).sum() for d in datas]
        for loss in losses:
            loss.backward()
        if step == 3:
            params[-1].list_grad()[0][0] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
            try:
                trainer.step(6)
            except FloatingPointError:
                assert case == 'dense_raise' and step == 3
    if case != 'dense_raise':  # the row_sparse weight: every row, from the KVStore
        return [params[0].row_sparse_data(nd.arange(50, ctx=ctx[0])).asnumpy()] + [
            d.asnumpy() for p in params[1:] for d in p.list_data()]
    return [d.asnumpy() for p in params for d in p.list_data()]


@pytest.mark.parametrize('case', ['sparse_weight', 'sparse_weight_two_contexts', 'dense_raise'])
def test_the_kvstores_new_objects_of_the_same_arrays_reuse_their_batch(monkeypatch, made,
                                                                        case):
    """The KVStore's callback hands new objects for the same arrays at every call: each
    parameter's Batch is made once and rebound (Batch.rebind), giving bitwise what new
    Batches give."""
    reused = kvstore_run(case)
    assert made[0] == 3  # one per parameter
    monkeypatch.setattr(dispatch, 'BATCHES_KEPT', 0)
    fresh = kvstore_run(case)
    assert made[0] > 2 * 3
    assert len(reused) == len(fresh)
    for got, want in zip(reused, fresh, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_weight_of_the_same_layout_storing_fewer_rows_is_not_stepped_whole(monkeypatch):
    """A row_sparse weight that stores every row is stepped by the kernel as a dense one;
    another weight object with the state of the first, of the same shape and dtype but
    storing fewer rows, takes the textbook route: a kept Batch is not rebound to it."""
    def run():
        opt = MyAdam(learning_rate=0.1)
        full = nd.array(np.arange(40, dtype='float32').reshape(10, 4)).tostype('row_sparse')
        state = opt.create_state(0, full)
        some = nd.sparse.row_sparse_array((np.ones((3, 4), 'float32'), [1, 4, 9]), shape=(10, 4))
        grad = nd.sparse.row_sparse_array((np.full((2, 4), 0.5, 'float32'), [4, 6]),
                                          shape=(10, 4))
        for weight in (full, full, some, full):
            opt.update(0, weight, grad, state)
        return [full.asnumpy(), some.tostype('default').asnumpy()] + state_arrays(state)

    textbook = []
    monkeypatch.setattr(dispatch, 'textbook_step',
                        lambda *args, step=dispatch.textbook_step:
                        textbook.append(args) or step(*args))
    same_as_fresh(monkeypatch, run)
    assert len(textbook) == 2  # the third call of each run


def test_a_single_parameters_batch_steps_the_arrays_of_each_call(monkeypatch, made):
    """One state, two weights (and gradients) of the same layout in turns: each call steps
    the arrays it is handed, as new Batches do, though one Batch is made and rebound."""
    def run():
        rng = np.random.default_rng(2)
        opt = MyAdam(learning_rate=0.1)
        weights = [nd.array(rng.normal(size=(4, 3))) for _ in range(2)]
        grads = [nd.array(rng.normal(size=(4, 3))) for _ in range(2)]
        state = opt.create_state(0, weights[0])
        for step in range(4):
            opt.update(0, weights[step % 2], grads[step % 2], state)
        return [w.asnumpy() for w in weights] + state_arrays(state)

    same_as_fresh(monkeypatch, run)
    assert made[0] == 1 + 4  # the reused run made 1, the fresh one 4
