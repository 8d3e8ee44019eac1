"""A gradient holding NaN or Inf: skipped exactly (default) or refused before any change."""
import linecache
import sys
import warnings

import numpy as np
import pytest
import mxnet as mx
from mxnet import gluon, nd

from adam_plugin import MyAdam, dispatch

BAD_VALUES = [np.nan, np.inf, -np.inf]


def two_params():
    w = gluon.Parameter('weight', shape=(4,))
    b = gluon.Parameter('bias', shape=(3,))
    for p, v in ((w, np.linspace(-1, 1, 4)), (b, np.linspace(0.5, 1.5, 3))):
        p.initialize()
        p.set_data(nd.array(v))
    return w, b


def step(trainer, params, grads):
    for p, g in zip(params, grads):
        p.grad()[:] = nd.array(g)
        p.data()._fresh_grad = True
    trainer.step(1)


def snapshot(trainer, params):
    upd = trainer._updaters[0]
    return ([p.data().asnumpy().copy() for p in params],
            {i: [s.asnumpy().copy() for s in upd.states[i]] for i in upd.states},
            dict(trainer._optimizer._index_update_count))


GOOD_W = [np.array([0.3, -0.2, 0.1, 0.5]), np.array([1.0, -1.0, 2.0])]


def after_one_good_step(options, bad, position):
    """A Trainer after one finite step, its snapshot, and the next step, whose 'bias' gradient
    holds ``bad`` at ``position``."""
    params = two_params()
    trainer = gluon.Trainer(params, 'myadam', dict(learning_rate=0.1, **options))
    step(trainer, params, GOOD_W)
    bad_grad = GOOD_W[1].copy()
    bad_grad[position] = bad
    return trainer, snapshot(trainer, params), lambda: step(trainer, params, [GOOD_W[0], bad_grad])


def assert_unchanged(before, after, index):
    """Weight, state buffers and step count of parameter ``index`` are bitwise the same."""
    np.testing.assert_array_equal(after[0][index], before[0][index])
    for a, b in zip(after[1][index], before[1][index]):
        np.testing.assert_array_equal(a, b)
    assert after[2][index] == before[2][index]


@pytest.mark.parametrize('bad', BAD_VALUES)
def test_skip_leaves_the_parameter_exactly_as_it_was(bad):
    trainer, before, bad_step = after_one_good_step({'amsgrad': True}, bad, position=1)
    with pytest.warns(RuntimeWarning, match="'bias'"):
        bad_step()
    after = snapshot(trainer, trainer._params)
    assert_unchanged(before, after, 1)
    assert after[2][1] == 1
    assert after[2][0] == 2 and not np.array_equal(after[0][0], before[0][0])
    assert trainer._optimizer.num_skipped == 1


@pytest.mark.parametrize('bad', BAD_VALUES)
def test_the_next_finite_step_proceeds_as_if_the_bad_one_never_happened(bad):
    params = two_params()
    trainer = gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})
    bad_grad = [GOOD_W[0] * bad, GOOD_W[1] * bad]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        step(trainer, params, GOOD_W)
        step(trainer, params, bad_grad)
        step(trainer, params, [2 * g for g in GOOD_W])
    assert trainer._optimizer.num_skipped == 2
    clean = two_params()
    clean_trainer = gluon.Trainer(clean, 'myadam', {'learning_rate': 0.1})
    step(clean_trainer, clean, GOOD_W)
    step(clean_trainer, clean, [2 * g for g in GOOD_W])
    for p, q in zip(params, clean):
        np.testing.assert_array_equal(p.data().asnumpy(), q.data().asnumpy())


@pytest.mark.parametrize('bad', BAD_VALUES)
def test_raise_names_the_parameter_and_modifies_nothing(bad):
    trainer, before, bad_step = after_one_good_step({'nonfinite': 'raise'}, bad, position=0)
    with pytest.raises(FloatingPointError, match="'bias'"):
        bad_step()
    after = snapshot(trainer, trainer._params)
    for index in (0, 1):  # the finite 'weight' did not move either
        assert_unchanged(before, after, index)
    assert trainer._optimizer.num_skipped == 0


def test_skip_works_on_a_bare_optimizer_call():
    opt = MyAdam(learning_rate=0.1)
    w = nd.array([1.0, 2.0])
    state = opt.create_state(7, w)
    with pytest.warns(RuntimeWarning, match='index 7'):
        opt.update(7, w, nd.array([np.nan, 1.0]), state)
    np.testing.assert_array_equal(w.asnumpy(), [1.0, 2.0])
    assert 7 not in opt._index_update_count and opt.num_skipped == 1


def test_the_skip_warning_names_the_users_line():
    """Called by the user or by the Trainer's Updater (MXNet's code), the skip warning
    points at the user's line, not at adam_plugin's or MXNet's."""
    opt = MyAdam(learning_rate=0.1)
    w = nd.array([1.0, 2.0])
    state = opt.create_state(0, w)
    with pytest.warns(RuntimeWarning, match='skipped') as direct:
        line = sys._getframe().f_lineno + 1
        opt.update(0, w, nd.array([np.nan, 1.0]), state)
    assert (direct[0].filename, direct[0].lineno) == (__file__, line)
    _, _, bad_step = after_one_good_step({}, np.nan, 0)
    with pytest.warns(RuntimeWarning, match='skipped') as through_trainer:
        bad_step()
    warning = through_trainer[0]
    assert warning.filename == __file__
    assert linecache.getline(warning.filename, warning.lineno).strip() == 'trainer.step(1)'


# (fused, how many arrays, index of the one bad gradient). float32 and float64 arrays take
# the kernel when fused; float16 ones (index 2 mod 3), and all of them without it, take
# MXNet's multi_all_finite in groups (one per context and dtype) of up to _FINITE_CHUNK
# arrays. Here that is 4, so that 60 arrays make groups of 3 chunks; the slow row keeps
# MXNet's 200, with groups of 217.
MIXED = [(True, 60, None), (True, 60, 0), (True, 60, 2), (True, 60, 59), (False, 60, 0),
         (False, 60, 30), pytest.param(False, 1300, 650, marks=pytest.mark.slow)]


@pytest.mark.parametrize('fused, n, bad_at', MIXED)
def test_many_mixed_arrays_in_one_call(fused, n, bad_at, monkeypatch):
    # More arrays than MXNet's multi_all_finite takes at once, of three dtypes and two
    # contexts, and a lazy row_sparse gradient without rows (nothing to check; no step):
    # the check must neither crash nor miss the one bad gradient.
    if n < 1000:
        monkeypatch.setattr(dispatch, '_FINITE_CHUNK', 4)
    dtypes = ['float32', 'float64', 'float16']
    ctxs = [mx.cpu(0), mx.cpu(1)]
    opt = MyAdam(learning_rate=0.1, multi_precision=True, fused=fused)
    weights = [nd.ones((2,), ctx=ctxs[i % 2], dtype=dtypes[i % 3]) for i in range(n)]
    grads = [nd.ones((2,), ctx=ctxs[i % 2], dtype=dtypes[i % 3]) for i in range(n)]
    weights.append(nd.ones((3, 2)))
    grads.append(nd.sparse.zeros('row_sparse', (3, 2)))
    if bad_at is not None:
        grads[bad_at][0] = np.nan
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(weights)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', RuntimeWarning)
        opt.update_multi_precision(list(range(n + 1)), weights, grads, states)
    moved = [i for i, w in enumerate(weights[:n]) if not np.all(w.asnumpy() == 1.0)]
    expected = [i for i in range(n) if i != bad_at]
    assert moved == expected
    assert opt.num_skipped == (0 if bad_at is None else 1)
    assert n in opt._index_update_count  # the gradient without rows counted its step
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == opt.num_skipped
