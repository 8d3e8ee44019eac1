"""A gradient holding NaN or Inf: skipped exactly (default) or refused before any change."""
import linecache
import math
import sys
import warnings

import mxnet as mx
import numpy as np
import pytest
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
    for p, g in zip(params, grads, strict=True):
        p.grad()[:] = nd.array(g)
        p.data()._fresh_grad = True
    trainer.step(1)


def snapshot(trainer, params):
    upd = trainer._updaters[0]
    return ([p.data().asnumpy().copy() for p in params],
            {i: [s.asnumpy().copy() if isinstance(s, nd.NDArray) else list(s)  # (.., [t])
                 for s in upd.states[i]] for i in upd.states},
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
    for a, b in zip(after[1][index], before[1][index], strict=True):
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
    for p, q in zip(params, clean, strict=True):
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
    grad = nd.array([np.nan, 1.0])  # outside: nd.array may warn itself (scipy's deprecation)
    with pytest.warns(RuntimeWarning, match='skipped') as direct:
        line = sys._getframe().f_lineno + 1
        opt.update(0, w, grad, state)
    assert (direct[0].filename, direct[0].lineno) == (__file__, line)
    _, _, bad_step = after_one_good_step({}, np.nan, 0)
    with pytest.warns(RuntimeWarning, match='skipped') as through_trainer:
        bad_step()
    warning, = [w for w in through_trainer if 'myadam' in str(w.message)]
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


# --- a huge but finite gradient: the second moment stays finite, or the failure is loud ---

def replay(optimizer, options, dtype, grads, multi_precision=False):
    """Weight ``[1.0]`` of ``dtype`` after ``grads`` (one float each) through ``optimizer``
    ('adam' is MXNet's own); returns the weight and the second moment, as float64."""
    opt = mx.optimizer.create(optimizer, learning_rate=0.01, multi_precision=multi_precision,
                              **options)
    w = nd.array([1.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # float16 without multi_precision
        state = opt.create_state_multi_precision(0, w)
    for g in grads:
        opt.update_multi_precision(0, w, nd.array([g], dtype=dtype), state)
    v = state[1] if not (multi_precision and dtype == 'float16') else state[1][1]
    return float(w.asscalar()), float(v.asscalar())


# (dtype, fused, the gradients, rtol of v against MXNet's Adam, atol of the weight). The
# big gradient squared overflows the dtype (1000**2 > 65504; 1e20**2 > 3.4e38) while
# (1 - beta2) * g * g does not. float16 without multi_precision: MXNet's half_t
# arithmetic computes in float32 but rounds its beta2 to float16 (0.99902), hence 3e-2 on
# v. float32: the big one at step 100, where v_hat = v / (1 - beta2**100) fits too.
HUGE = [('float16', False, [1000.0] + [1.0] * 29, 3e-2, 2e-3),
        ('float32', True, [1.0] * 99 + [1e20] + [1.0] * 10, 1e-4, 1e-5),
        ('float32', False, [1.0] * 99 + [1e20] + [1.0] * 10, 1e-4, 1e-5)]


@pytest.mark.parametrize('dtype, fused, grads, rtol, atol', HUGE)
def test_a_huge_finite_gradient_trains_as_mxnet_adam_does(dtype, fused, grads, rtol, atol):
    mine = replay('myadam', dict(epsilon_mode='hat', fused=fused), dtype, grads)
    theirs = replay('adam', {}, dtype, grads)
    assert math.isfinite(theirs[1])
    np.testing.assert_allclose(mine[1], theirs[1], rtol=rtol)
    np.testing.assert_allclose(mine[0], theirs[0], rtol=0, atol=atol)
    before_last = replay('myadam', dict(epsilon_mode='hat', fused=fused), dtype, grads[:-1])
    assert mine[0] < before_last[0]  # still moving at the last step


# (dtype, fused, multi_precision, gradient): the second moment overflows however it is
# computed: (1e-3 * 1e4) * 1e4 = 1e5 > 65504 stored as float16; (1e-3 * 1e30) * 1e30.
OVERFLOWS = [('float16', False, False, 1e4), ('float16', True, False, 1e4),
             ('float32', True, False, 1e30),
             ('float32', False, False, 1e30), ('float64', True, False, 1e200)]


@pytest.mark.parametrize('dtype, fused, multi_precision, big', OVERFLOWS)
def test_a_second_moment_that_overflows_anyway_is_loud(dtype, fused, multi_precision, big):
    opt = MyAdam(learning_rate=0.01, fused=fused, multi_precision=multi_precision)
    w = nd.array([1.0, 2.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        state = opt.create_state_multi_precision(0, w)
    grad = nd.array([big, 1.0], dtype=dtype)
    with pytest.warns(RuntimeWarning, match=r"second moment of parameter index 0 overflowed"
                                            r".* \(1 in a row for this parameter, 1 in all"):
        opt.update_multi_precision(0, w, grad, state)
    assert opt.num_skipped == 1
    raising = MyAdam(learning_rate=0.01, fused=fused, nonfinite='raise')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        state = raising.create_state_multi_precision(0, w)
    with pytest.raises(FloatingPointError, match='second moment of parameter index 0 '
                                                 'overflowed to Inf.*was applied'):
        raising.update_multi_precision(0, w, grad, state)


def test_a_lazy_step_reports_the_overflow_of_the_rows_it_wrote():
    """On the kernel, a lazy row_sparse step checks the second moments of its own rows in
    its pass: an overflow there is heard, and a row it did not touch is not read."""
    opt = MyAdam(learning_rate=0.01)
    w = nd.zeros((5, 3))
    state = opt.create_state(0, w)
    state[1][0] = np.inf  # row 0's v is already Inf, and this step does not touch row 0
    quiet = nd.sparse.row_sparse_array((np.ones((1, 3), np.float32), [2]), shape=(5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        opt.update(0, w, quiet, state)
    loud = nd.sparse.row_sparse_array((np.full((1, 3), 1e30, np.float32), [3]), shape=(5, 3))
    with pytest.warns(RuntimeWarning, match="second moment of parameter index 0 overflowed"):
        opt.update(0, w, loud, state)
    assert opt.num_skipped == 1
    assert np.isinf(state[1].asnumpy()[3]).all() and np.isfinite(state[1].asnumpy()[1:3]).all()


# --- a NaN that persists is heard ----------------------------------------------------------

def dense_net(grad_req):
    net = gluon.nn.Dense(1, in_units=2, prefix='net_')
    net.initialize(mx.init.Constant(0.5))
    if grad_req == 'add':
        net.collect_params().setattr('grad_req', 'add')
    return net


def train(net, trainer, batches):
    for x in batches:
        with mx.autograd.record():
            loss = net(nd.array(x)).sum()
        loss.backward()
        trainer.step(1)


def test_a_persistent_nan_is_warned_with_counts_under_the_default_filter():
    """Python shows a warning once per line: 60 skips in a row must not make one line."""
    net = dense_net('write')
    trainer = gluon.Trainer(net.collect_params(), 'myadam',
                            dict(learning_rate=0.1, max_skips=None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default')
        train(net, trainer, [[[np.nan, 1.0]]] * 60)
    lines = [str(w.message) for w in caught if 'myadam: skipped' in str(w.message)]
    # two parameters: the weight's gradient is NaN; the bias's is 1 (finite) ...
    assert [line.split('(')[1].split(' in a row')[0] for line in lines] == [
        '1', '10', '20', '30', '40', '50', '60']
    assert all("'net_weight'" in line for line in lines)
    assert trainer._optimizer.num_skipped == 60


@pytest.mark.parametrize('max_skips', [50, 3])
def test_grad_req_add_with_one_nan_batch_raises_after_max_skips(max_skips):
    """An accumulated gradient keeps a NaN for good: every later step is skipped, and the
    max_skips-th skip in a row raises, naming the parameter, before changing anything."""
    net = dense_net('add')
    trainer = gluon.Trainer(net.collect_params(), 'myadam',
                            dict(learning_rate=0.1, max_skips=max_skips))
    train(net, trainer, [[[1.0, 2.0]]] * 2)
    weight = net.weight.data().asnumpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        train(net, trainer, [[[np.nan, 1.0]]] + [[[1.0, 2.0]]] * (max_skips - 2))
        with pytest.raises(FloatingPointError, match=rf"'net_weight' has failed {max_skips} "
                                                     r"times in a row \(max_skips="):
            train(net, trainer, [[[1.0, 2.0]]])
    np.testing.assert_array_equal(net.weight.data().asnumpy(), weight)
    assert trainer._optimizer.num_skipped == max_skips - 1


def test_a_good_step_starts_the_count_again():
    opt = MyAdam(learning_rate=0.1, max_skips=3)
    w = nd.array([1.0])
    state = opt.create_state(0, w)
    grads = [nd.array([g]) for g in (np.nan, np.nan, 1.0, np.nan, np.nan, 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        for g in grads:
            opt.update(0, w, g, state)  # never 3 in a row
    assert opt.num_skipped == 4 and opt._index_update_count[0] == 2


# --- per-step values from outside the optimizer are checked before any change --------------

class Returns(mx.lr_scheduler.LRScheduler):
    """A user's scheduler returning ``value`` from update ``at`` on."""

    def __init__(self, value, at):
        super().__init__(base_lr=0.1)
        self.value, self.at = value, at

    def __call__(self, num_update):
        return self.value if num_update >= self.at else self.base_lr


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('value', [np.nan, -0.1, np.inf])
def test_a_bad_rate_from_the_scheduler_is_refused_naming_it(value, fused):
    params = two_params()
    trainer = gluon.Trainer(params, 'myadam', dict(lr_scheduler=Returns(value, 3), fused=fused))
    step(trainer, params, GOOD_W)
    step(trainer, params, GOOD_W)
    before = snapshot(trainer, params)
    with pytest.raises(ValueError, match=rf"Invalid learning rate: {value!r} at update 3 "
                                         rf"\(lr_scheduler\(3\), a Returns, returned {value!r}"):
        step(trainer, params, GOOD_W)
    after = snapshot(trainer, params)
    for index in (0, 1):
        assert_unchanged(before, after, index)
    assert trainer._optimizer.num_update == 2


# 1 / batch_size: 1e45 and 1e39 are Inf in float32, 1e320 in float64 (and in Python)
@pytest.mark.parametrize('batch_size, dtype', [(1e-45, 'float32'), (1e-39, 'float32'),
                                               (1e-320, 'float64')])
def test_a_bad_rescale_grad_from_trainer_step_is_refused_naming_it(batch_size, dtype):
    w = gluon.Parameter('w', shape=(2,), dtype=dtype)
    w.initialize(mx.init.One())
    trainer = gluon.Trainer([w], 'myadam', {'learning_rate': 0.1})
    w.grad()[:] = 1.0
    w.data()._fresh_grad = True
    with pytest.raises(ValueError, match=r"Invalid rescale_grad: .* at update 1 .*"
                                         r"Trainer.step\(batch_size\)"):
        trainer.step(batch_size)
    np.testing.assert_array_equal(w.data().asnumpy(), [1.0, 1.0])
    assert trainer._optimizer._index_update_count == {}
