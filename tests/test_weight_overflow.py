"""A weight that a finite step takes to Inf is heard of, as a second moment's overflow is.

A float16 weight stepped past 65504 (its float32 master copy rounded, or the float32
result stored) becomes Inf; so does a float32 weight when ``lr * update`` passes 3.4e38,
every value the step read being finite. The step is applied (it is found in the same
pass that writes it), then warned about and counted as a bad update (``num_skipped``,
``max_skips``), or raised under ``nonfinite='raise'``: on the kernel, the textbook
route, and the steps queued in MXNet's engine.
"""
import math
import warnings

import mxnet as mx
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from mxnet import gluon, nd

from adam_plugin import MyAdam

pytestmark = pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')

ROUTES = [True, False]
ROUTE_IDS = ['kernel', 'textbook']
# (weight dtype, multi_precision, the weight, the learning rate): the first element steps
# by lr against a gradient of -1 (one Adam step moves by lr * g / (|g| + epsilon)), the
# second, whose gradient is 0, stays.
OVERFLOWING = {
    'float16': ('float16', False, 65504.0, 100.0),
    'float16_master': ('float16', True, 65504.0, 100.0),
    'float16_master_lr_7e4': ('float16', True, 0.5, 7e4),  # finite in the float32 master
    'float32': ('float32', False, 3e38, 1e38),
    'float64': ('float64', False, 1.5e308, 1e308),
}
WARNING = (r"the weight of parameter index 0 holds Inf or NaN after the update although the "
           r"gradient was finite")


def first_update(dtype, multi_precision, w0, lr, fused, **options):
    """The optimizer, weight and state after one update of ``[w0, 1]`` with gradient
    ``[-1, 0]``."""
    opt = MyAdam(learning_rate=lr, fused=fused, multi_precision=multi_precision, **options)
    w = nd.array([w0, 1.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        state = opt.create_state_multi_precision(0, w)
    opt.update_multi_precision(0, w, nd.array([-1.0, 0.0], dtype=dtype), state)
    return opt, w, state


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('case', OVERFLOWING)
def test_a_weight_stepped_past_its_dtypes_range_is_warned_and_counted(case, fused):
    with pytest.warns(RuntimeWarning, match=WARNING + r".*\(1 in a row for this parameter, "
                                                      r"1 in all"):
        opt, w, _ = first_update(*OVERFLOWING[case], fused=fused)
    got = w.asnumpy()
    assert np.isposinf(got[0]) and got[1] == 1.0  # applied
    assert opt.num_skipped == 1 and opt._index_update_count == {0: 1}


# (weight dtype, multi_precision): each storage's largest finite weight.
LARGEST = {'float16': ('float16', False), 'float16_master': ('float16', True),
           'float32': ('float32', False), 'float64': ('float64', False)}


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('case', LARGEST)
def test_a_weight_at_its_dtypes_largest_finite_value_is_not_reported(case, fused):
    """A weight that holds exactly its dtype's largest finite value after the step (a zero
    gradient leaves it there) is finite: nothing is warned or counted."""
    dtype, multi_precision = LARGEST[case]
    largest = float(np.finfo(dtype).max)
    opt = MyAdam(learning_rate=0.1, fused=fused, multi_precision=multi_precision)
    w = nd.array([largest, -largest, 1.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)  # what a report would be
        state = opt.create_state_multi_precision(0, w)
        opt.update_multi_precision(0, w, nd.array([0.0, 0.0, 1.0], dtype=dtype), state)
        got = w.asnumpy()
    assert got[0] == largest and got[1] == -largest and got[2] < 1.0
    assert opt.num_skipped == 0


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
def test_max_skips_overflows_in_a_row_raise(fused):
    """A weight that is Inf already overflows at every step: the max_skips-th in a row
    raises, as the max_skips-th skipped gradient does, after that step was applied."""
    opt = MyAdam(learning_rate=0.1, fused=fused, max_skips=3)
    w, g = nd.array([np.inf, 1.0]), nd.array([-1.0, 0.5])
    state = opt.create_state(0, w)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        for _ in range(2):
            opt.update(0, w, g, state)
        with pytest.raises(FloatingPointError, match=r"the update of parameter index 0 has gone "
                           r"wrong 3 times in a row \(max_skips=3\): it overflowed again"):
            opt.update(0, w, g, state)
    assert opt.num_skipped == 3 and opt._index_update_count == {0: 3}
    assert w.asnumpy()[1] < 1.0 - 0.25  # applied, all three times


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('case', OVERFLOWING)
def test_under_nonfinite_raise_it_is_a_floating_point_error(case, fused):
    with pytest.raises(FloatingPointError, match=r"^myadam: " + WARNING + r".*; this update "
                                                 r"call was applied$"):
        first_update(*OVERFLOWING[case], fused=fused, nonfinite='raise')


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('multi_precision', [False, True], ids=['float16', 'float16_master'])
@settings(max_examples=30)
@given(lr=st.floats(0.0, 40.0, allow_subnormal=False))  # MXNet's scalars take no subnormal
def test_a_float16_weight_is_warned_about_exactly_when_it_rounds_to_inf(lr, multi_precision,
                                                                        fused):
    """From 65504, a step of lr (times 1 / (1 + 1e-8)): the float32 result rounds to
    Inf in float16 from 65520 on (65504 plus half the last float16 step); a band of
    +-0.01 around it is left out, where float32's own rounding (steps of 2**-8) decides."""
    final = 65504.0 + lr / (1 + 1e-8)
    assume(abs(final - 65520.0) > 0.01)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        opt, w, _ = first_update('float16', multi_precision, 65504.0, lr, fused)
    heard = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert bool(heard) is (final > 65520.0), heard
    assert bool(np.isinf(w.asnumpy()[0])) is (final > 65520.0)
    assert opt.num_skipped == (final > 65520.0)


def test_a_queued_step_reports_the_weight_that_overflowed():
    """Under the KVStore, the step queued in MXNet's engine reports it through its flags;
    a later call warns about it, the next Trainer.step at the latest."""
    params = []
    for name, init in (('first', [65504.0, 1.0]), ('second', [1.0, 2.0])):
        p = gluon.Parameter(name, shape=(2,), dtype='float16')
        p.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
        p.set_data(nd.array(init, dtype='float16'))
        params.append(p)
    trainer = gluon.Trainer(params, 'myadam', {'learning_rate': 0.1}, kvstore='device',
                            update_on_kvstore=True)

    def step(first):
        for p in params:
            for g in p.list_grad():
                g[:] = nd.array(first if p.name == 'first' else [1.0, 1.0], dtype='float16')
            for d in p.list_data():
                d._fresh_grad = True
        trainer.step(1)

    step([1.0, 1.0])  # the first step of each parameter runs on the calling thread
    assert list(trainer.optimizer._engine.plans) == [0, 1]
    trainer.set_learning_rate(1e4)  # the second step moves 'first' by about 0.05 lr
    with pytest.warns(RuntimeWarning, match=r"the weight of parameter 'first' holds Inf"):
        step([-1.0, 1.0])
        trainer.optimizer.rescale_grad = 1.0  # what the next Trainer.step does first
    assert trainer.optimizer.num_skipped == 1
    assert all(np.isinf(d.asnumpy()[0]) for d in params[0].list_data())
    assert math.isfinite(params[1].data().asnumpy()[0])


# (size, position of the element that overflows): a vector tail, the ends of the kernel's
# 1024-element float16 blocks, a third block
SPOTS = [(1, 0), (7, 6), (1024, 1023), (1025, 1024), (2500, 2499)]


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('case', ['float16', 'float16_master', 'float32'])
def test_one_call_names_exactly_the_weights_that_overflowed(case, fused):
    """Many parameters in one call, each with one element stepped past the range at a
    spot of SPOTS, each beside a clean twin: exactly the first of each pair is named."""
    dtype, multi_precision, big, lr = OVERFLOWING[case]
    opt = MyAdam(learning_rate=lr, fused=fused, multi_precision=multi_precision,
                 nonfinite='raise')
    weights, grads, states = [], [], []
    for size, spot in SPOTS:
        for bad in (True, False):
            w = np.ones(size)
            g = np.zeros(size)
            w[spot], g[spot] = (big, -1.0) if bad else (1.0, -1.0)
            weights.append(nd.array(w, dtype=dtype))
            grads.append(nd.array(g, dtype=dtype))
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)
                states.append(opt.create_state_multi_precision(len(states), weights[-1]))
    with pytest.raises(FloatingPointError) as error:
        opt.update_multi_precision(list(range(len(weights))), weights, grads, states)
    named = ', '.join(f'parameter index {i}' for i in range(0, len(weights), 2))
    assert str(error.value).startswith(f"myadam: the weight of {named} holds Inf or NaN")


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize('where', ['weight', 'v'])
def test_a_lazy_step_reports_only_the_rows_it_wrote(where, fused):
    """A lazy step of a row_sparse gradient holding row 0 leaves row 1, whose weight (or
    second moment) was Inf before: nothing the step wrote is Inf, nothing is reported, on
    either route; row 0 is stepped."""
    opt = MyAdam(learning_rate=0.1, fused=fused, lazy_update=True, nonfinite='raise')
    w = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    state = opt.create_state(0, w)
    (w if where == 'weight' else state[1])[1] = np.inf
    grad = nd.sparse.row_sparse_array((nd.array([[0.5, -0.5, 0.5]]), nd.array([0], dtype='int64')),
                                      shape=(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        opt.update(0, w, grad, state)
    got = w.asnumpy()
    np.testing.assert_allclose(got[0], [0.9, 2.1, 2.9], rtol=1e-6)
    assert (got[1] == ([np.inf] * 3 if where == 'weight' else [4.0, 5.0, 6.0])).all()
    assert opt.num_skipped == 0


@pytest.mark.parametrize('fused', ROUTES, ids=ROUTE_IDS)
def test_a_weight_and_a_second_moment_in_different_float16_blocks_are_both_reported(fused):
    """A float16 weight without a master copy, stepped by the kernel in blocks of 1024:
    its weight Inf in the first block (before the step), its second moment overflowing in
    the third (a gradient of 65504: (1 - beta2) * g * g is 4.3e6). One warning names
    both."""
    opt = MyAdam(learning_rate=0.01, fused=fused)
    w = nd.ones((3000,), dtype='float16')
    w[5] = np.inf
    g = np.full(3000, 0.5)
    g[2100] = 65504.0
    state = opt.create_state(0, w)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        opt.update(0, w, nd.array(g, dtype='float16'), state)
    heard = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(heard) == 1 and heard[0].startswith(
        "myadam: the second moment of parameter index 0 overflowed to Inf although the "
        "gradient was finite (its elements with v = Inf no longer move); the weight of "
        "parameter index 0 holds Inf or NaN after the update"), heard
    assert np.isinf(state[1].asnumpy()[2100]) and opt.num_skipped == 1
