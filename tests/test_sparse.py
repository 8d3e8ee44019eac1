"""Row-sparse gradients: lazy updates touch only the rows present; dense semantics otherwise."""
import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon, nd

from adam_plugin import MyAdam
from conftest import TOL

SHAPE = (10, 4)
# rows present in the gradient, one entry per step
ROW_SETS = [[1, 4, 7], [0, 4], [7, 8, 9], [4], [1, 2, 3, 5]]
OPTIONS = [dict(), dict(wd=0.1), dict(clip_gradient=0.5, rescale_grad=0.5)]


def rsp_grads(rng):
    out = []
    for rows in ROW_SETS:
        data = rng.normal(size=(len(rows), SHAPE[1])).astype('float32') * 3
        out.append(nd.sparse.row_sparse_array((nd.array(data), nd.array(rows, dtype='int64')),
                                              shape=SHAPE))
    return out


def run(opt, grads, w0):
    w = nd.array(w0)
    state = opt.create_state(0, w)
    history = []
    for g in grads:
        opt.update(0, w, g, state)
        history.append((w.asnumpy().copy(), [s.asnumpy().copy() for s in state]))
    return history


@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_lazy_update_touches_only_present_rows(options, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    history = run(MyAdam(learning_rate=0.1, **options), rsp_grads(rng), w0)
    previous = (w0, [np.zeros(SHAPE, 'float32')] * 2)
    for rows, (w, state) in zip(ROW_SETS, history):
        absent = [r for r in range(SHAPE[0]) if r not in rows]
        np.testing.assert_array_equal(w[absent], previous[0][absent])
        for s, p in zip(state, previous[1]):
            np.testing.assert_array_equal(s[absent], p[absent])
        assert np.all(w[rows] != previous[0][rows])
        previous = (w, state)


@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_lazy_hat_mode_matches_mxnet_lazy_adam(options, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    ours = run(MyAdam(learning_rate=0.1, epsilon_mode='hat', epsilon=1e-3, **options), grads, w0)
    builtin = run(mx.optimizer.Adam(learning_rate=0.1, epsilon=1e-3, lazy_update=True, **options),
                  grads, w0)
    for (w, _), (v, _) in zip(ours, builtin):
        np.testing.assert_allclose(w, v, **TOL['float32'])


@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_without_lazy_update_sparse_equals_dense(options, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    sparse = run(MyAdam(learning_rate=0.1, lazy_update=False, **options), grads, w0)
    dense = run(MyAdam(learning_rate=0.1, **options), [g.tostype('default') for g in grads], w0)
    lazy = run(MyAdam(learning_rate=0.1, **options), grads, w0)
    for (w, s), (v, t) in zip(sparse, dense):
        np.testing.assert_array_equal(w, v)
        for a, b in zip(s, t):
            np.testing.assert_array_equal(a, b)
    # and it is not the lazy result: momentum moved rows absent from a step
    assert not np.array_equal(sparse[-1][0], lazy[-1][0])


def test_embedding_with_sparse_grad_trains_through_trainer():
    mx.random.seed(0)
    emb = gluon.nn.Embedding(20, 3, sparse_grad=True)
    emb.initialize(mx.init.Normal(0.5))
    trainer = gluon.Trainer(emb.collect_params(), 'myadam', {'learning_rate': 0.05})
    tokens = nd.array([2, 5, 5, 11])
    target = nd.ones((4, 3))
    before = emb.weight.data().asnumpy().copy()
    losses = []
    for _ in range(30):
        with autograd.record():
            loss = ((emb(tokens) - target) ** 2).sum()
        loss.backward()
        assert emb.weight.grad().stype == 'row_sparse'
        trainer.step(4)
        losses.append(loss.asscalar())
    after = emb.weight.data().asnumpy()
    unused = [r for r in range(20) if r not in (2, 5, 11)]
    np.testing.assert_array_equal(after[unused], before[unused])
    assert losses[-1] < 0.1 * losses[0]
