"""Every value a step reads is checked when the step reads it, before anything changes.

The constructor checks what it is given; a step reads more: the learning rate after
``lr_scheduler`` and ``lr_mult``, ``wd`` after ``wd_mult``, ``rescale_grad`` from
``Trainer.step``, attributes set on the optimizer after it was made, all of them in the
dtype the step computes in. Each is refused with a ``ValueError`` naming the value,
the update, the parameter and where the value came from, on every route, with the
weights, states, step counts, ``num_update`` and ``num_skipped`` left as they were.
"""
import decimal
import fractions
import math
import warnings

import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from mxnet import gluon, nd

from adam_plugin import MyAdam
from configs import TOL
from helpers import raised_from_the_callback, state_arrays
from oracles import NumpyAdam

NAN, INF = math.nan, math.inf
INIT = {'first': [0.5, -1.0, 2.0, 0.25], 'second': [1.0, -0.5, 0.75]}
GRADS = {'first': [0.3, -0.2, 0.1, 0.5], 'second': [1.0, -1.0, 2.0]}
ROUTES = [True, False]  # fused: the kernel, the textbook
# The weight dtypes and multi_precision: float16 steps in float32, with or without a
# float32 master copy.
STORAGES = [('float32', False), ('float64', False), ('float16', False), ('float16', True)]
STORAGE_IDS = ['float32', 'float64', 'float16', 'float16_master']
# The largest finite value of a dtype plus half its last step: the values at and above it
# round to Inf (ties to even: the largest has an odd last digit).
OVERFLOW = {'float16': 65504.0 + 16.0, 'float32': 2.0 ** 128 - 2.0 ** 103}
# The smallest positive float32 (2**-149) over two: at and below it a value rounds to 0.
FLOAT32_UNDERFLOW = 2.0 ** -150

pytestmark = pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')


def trainer_of(dtype='float32', ctx=None, update_on_kvstore=None, **options):
    """Parameters 'first' (index 0) and 'second' (index 1) of ``dtype`` and their Trainer."""
    params = []
    for name, init in INIT.items():
        p = gluon.Parameter(name, shape=(len(init),), dtype=dtype)
        p.initialize(ctx=ctx)
        p.set_data(nd.array(init, dtype=dtype))
        params.append(p)
    trainer = gluon.Trainer(params, 'myadam', dict(dict(learning_rate=0.1), **options),
                            update_on_kvstore=update_on_kvstore)
    return params, trainer


def step(trainer, params):
    for p in params:
        for g in p.list_grad():
            g[:] = nd.array(GRADS[p.name], dtype=g.dtype)
        for d in p.list_data():
            d._fresh_grad = True
    trainer.step(1)


def snapshot(trainer, params):
    """Everything a refused step must leave as it was: every device's weights, every
    updater's states, the step counts, num_update and num_skipped."""
    opt = trainer.optimizer
    updaters = [trainer._kvstore._updater] if trainer._update_on_kvstore else trainer._updaters
    return ([d.asnumpy() for p in params for d in p.list_data()],
            [s for u in updaters for i in sorted(u.states) for s in state_arrays(u.states[i])],
            {d: dict(c) for d, c in opt._all_index_update_counts.items()},
            opt.num_update, opt.num_skipped)


def assert_same(before, after):
    assert len(before[0]) == len(after[0])
    for a, b in zip(before[0] + before[1], after[0] + after[1][:len(before[1])], strict=True):
        np.testing.assert_array_equal(a, b)
    if before[1]:
        assert len(before[1]) == len(after[1])
    else:  # refused at the first step: MXNet's Updater made the states before the call
        for state in after[1]:
            assert not state.any() or any(np.array_equal(state, w.astype(state.dtype))
                                          for w in after[0])  # zeros, or a master copy
    assert before[2:] == after[2:]


def refused(trainer, params, message):
    """Step: a ValueError whose message starts with ``message``; nothing changed."""
    before = snapshot(trainer, params)
    with pytest.raises(ValueError) as error:
        step(trainer, params)
    assert str(error.value).startswith(message), str(error.value)
    assert str(error.value).endswith('; nothing was updated')
    assert_same(before, snapshot(trainer, params))
    return str(error.value)


def after_a_step(dtype='float32', **options):
    """A Trainer after one good step (so the refused one is update 2)."""
    params, trainer = trainer_of(dtype, **options)
    step(trainer, params)
    return params, trainer


# --- wd after wd_mult ----------------------------------------------------------------------

# (how to spoil it, the message's start) with wd=0.01; the Trainer's second parameter
WD_CASES = {
    'wd_mult_nan': (lambda opt, second: setattr(second, 'wd_mult', NAN),
                    "myadam: Invalid wd: nan at update 2 for parameter 'second' (wd 0.01 times "
                    "param 'second' wd_mult nan; expected >= 0"),
    'wd_mult_inf': (lambda opt, second: setattr(second, 'wd_mult', INF),
                    "myadam: Invalid wd: inf at update 2 for parameter 'second' (wd 0.01 times "
                    "param 'second' wd_mult inf; expected >= 0"),
    'wd_mult_1e300': (lambda opt, second: setattr(second, 'wd_mult', 1e300),
                      f"myadam: Invalid wd: {0.01 * 1e300!r} at update 2 for parameter 'second' "
                      "(wd 0.01 times param 'second' wd_mult 1e+300; expected >= 0, not infinite: "
                      "in float32 it is inf)"),
    'wd_mult_negative': (lambda opt, second: setattr(second, 'wd_mult', -1.0),
                         "myadam: Invalid wd: -0.01 at update 2 for parameter 'second' (wd "
                         "0.01 times param 'second' wd_mult -1.0; expected >= 0"),
    'wd_nan': (lambda opt, second: setattr(opt, 'wd', NAN),
               "myadam: Invalid wd: nan at update 2 (the optimizer's attribute wd; expected "
               ">= 0"),
    'wd_negative': (lambda opt, second: setattr(opt, 'wd', -0.5),
                    "myadam: Invalid wd: -0.5 at update 2 (the optimizer's attribute wd; "
                    "expected >= 0"),
    'wd_1e300': (lambda opt, second: setattr(opt, 'wd', 1e300),
                 "myadam: Invalid wd: 1e+300 at update 2 for parameter 'first' (the "
                 "optimizer's attribute wd; expected >= 0, not infinite: in float32 it is inf)"),
}


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('case', WD_CASES)
def test_wd_times_wd_mult_is_checked_at_the_step(case, fused):
    spoil, message = WD_CASES[case]
    params, trainer = after_a_step(wd=0.01, fused=fused)
    spoil(trainer.optimizer, params[1])
    refused(trainer, params, message)


def test_a_zero_wd_times_a_nan_wd_mult_is_refused_too():
    params, trainer = after_a_step()
    params[0].wd_mult = NAN
    refused(trainer, params, "myadam: Invalid wd: nan at update 2 for parameter 'first' "
                             "(wd 0.0 times param 'first' wd_mult nan; expected >= 0")


# --- a learning rate finite in float64, not in the dtype the step computes in --------------

class Returns(mx.lr_scheduler.LRScheduler):
    """A user's scheduler returning ``value`` from update ``at`` on, 0.1 before."""

    def __init__(self, value, at=1):
        super().__init__(base_lr=0.1)
        self.value, self.at = value, at

    def __call__(self, num_update):
        return self.value if num_update >= self.at else self.base_lr


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('dtype, options, message', [
    ('float32', dict(learning_rate=1e39),
     "myadam: Invalid learning rate: 1e+39 at update 1 for parameter 'first' (learning_rate "
     "1e+39 times param 'first' lr_mult 1.0; expected >= 0, not infinite: in float32 it is inf)"),
    ('float16', dict(learning_rate=7e4),
     "myadam: Invalid learning rate: 70000.0 at update 1 for parameter 'first' (learning_rate "
     "70000.0 times param 'first' lr_mult 1.0; expected finite in float16, the weight's "
     "dtype)"),
    ('float32', dict(learning_rate=None, lr_scheduler=Returns(1e300)),
     "myadam: Invalid learning rate: 1e+300 at update 1 for parameter 'first' "
     "(lr_scheduler(1), a Returns, returned 1e+300 times param 'first' lr_mult 1.0; expected "
     ">= 0, not infinite: in float32 it is inf)"),
    ('float16', dict(learning_rate=None, lr_scheduler=Returns(1e300), multi_precision=True),
     "myadam: Invalid learning rate: 1e+300 at update 1 for parameter 'first' "
     "(lr_scheduler(1), a Returns, returned 1e+300 times param 'first' lr_mult 1.0; expected "
     ">= 0, not infinite: in float32 it is inf)"),
], ids=['1e39_float32', '7e4_float16', 'scheduler_1e300', 'scheduler_1e300_master'])
def test_a_learning_rate_not_finite_in_the_step_dtype_is_refused(dtype, options, message,
                                                                  fused):
    params, trainer = trainer_of(dtype, fused=fused, **options)
    refused(trainer, params, message)


def test_an_lr_mult_that_takes_the_rate_past_float32_is_refused_naming_it():
    params, trainer = after_a_step()
    params[1].lr_mult = 1e40
    refused(trainer, params, f"myadam: Invalid learning rate: {0.1 * 1e40!r} at update 2 for "
                             "parameter 'second' (learning_rate 0.1 times param 'second' "
                             "lr_mult 1e+40; expected >= 0, not infinite: in float32 it is inf)")


# (how to make a value subnormal in float64, the message's start) on the Trainer's
# optimizer or its second parameter, after a first good step.
SUBNORMAL = 1e-310
SUBNORMALS = {
    'lr_mult': (lambda opt, second: setattr(second, 'lr_mult', SUBNORMAL * 10),
                "myadam: Invalid learning rate: 1e-310 at update 2 for parameter 'second'"),
    'wd': (lambda opt, second: setattr(opt, 'wd', SUBNORMAL),
           "myadam: Invalid wd: 1e-310 at update 2"),
    'epsilon': (lambda opt, second: setattr(opt, 'epsilon', SUBNORMAL),
                "myadam: Invalid epsilon: 1e-310 at update 2"),
    'beta1': (lambda opt, second: setattr(opt, 'beta1', SUBNORMAL),
              "myadam: Invalid beta1: 1e-310 at update 2"),
    'clip_gradient': (lambda opt, second: setattr(opt, 'clip_gradient', SUBNORMAL),
                      "myadam: Invalid clip_gradient: 1e-310 at update 2"),
}


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('dtype', ['float64', 'float32'])
@pytest.mark.parametrize('case', SUBNORMALS)
def test_a_subnormal_float64_value_is_refused_by_every_route(case, dtype, fused):
    """MXNet's scalar operators cannot parse a subnormal float64 (the textbook route raised
    MXNetError midway, m already written, where the kernel stepped): every route refuses
    it before anything changes, naming it."""
    spoil, message = SUBNORMALS[case]
    params, trainer = after_a_step(dtype, fused=fused, wd=0.01)
    spoil(trainer.optimizer, params[1])
    text = refused(trainer, params, message)
    assert ("expected 0 or a normal float64 number: MXNet's scalar operators cannot take a "
            "subnormal one") in text


def one_update(opt, dtype, multi_precision=False):
    """One update of a fresh two-element weight: True if it stepped, False if it was
    refused (with a ValueError, the weight, state and count untouched)."""
    w = nd.array([0.5, -1.0], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        state = opt.create_state_multi_precision(0, w)
    before = state_arrays([w, state])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # a float16 weight past 65504
            opt.update_multi_precision(0, w, nd.array([1.0, -1.0], dtype=dtype), state)
    except ValueError:
        for a, b in zip(before, state_arrays([w, state]), strict=True):
            np.testing.assert_array_equal(a, b)
        assert not opt._index_update_count
        return False
    assert opt._index_update_count == {0: 1}
    return True


def around(limit):
    """Floats near ``limit``, a relative 1e-4 either side, and the float just below it."""
    return st.one_of(st.floats(limit * (1 - 1e-4), limit * (1 + 1e-4)),
                     st.just(limit), st.just(math.nextafter(limit, 0)))


# (weight dtype, multi_precision, the rate from which on it is refused)
LR_LIMITS = [('float32', False, OVERFLOW['float32']), ('float16', True, OVERFLOW['float32']),
             ('float16', False, OVERFLOW['float16'])]


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('dtype, multi_precision, limit', LR_LIMITS,
                         ids=['float32', 'float16_master', 'float16'])
@settings(max_examples=30)
@given(data=st.data())
def test_a_learning_rate_is_refused_exactly_where_it_rounds_to_inf(dtype, multi_precision,
                                                                   limit, fused, data):
    lr = data.draw(around(limit), label='learning_rate')
    opt = MyAdam(learning_rate=lr, fused=fused, multi_precision=multi_precision)
    assert one_update(opt, dtype, multi_precision) is (lr < limit)


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('dtype, multi_precision', [('float32', False), ('float16', False),
                                                    ('float16', True)],
                         ids=['float32', 'float16', 'float16_master'])
@pytest.mark.parametrize('name', ['rescale_grad', 'epsilon'])
@settings(max_examples=30)
@given(data=st.data())
def test_rescale_grad_and_epsilon_are_refused_where_they_round_to_zero(name, dtype,
                                                                       multi_precision, fused,
                                                                       data):
    """Both steps compute float16 weights in float32: the limit is float32's, for the
    default epsilon=1e-8 (0 in float16) and a loss scaler's rescale_grad of 2**-32."""
    value = data.draw(st.one_of(around(FLOAT32_UNDERFLOW), st.just(2.0 ** -32),
                                st.just(1e-8)), label=name)
    opt = MyAdam(learning_rate=0.1, fused=fused, multi_precision=multi_precision)
    setattr(opt, name, value)
    assert one_update(opt, dtype, multi_precision) is (value > FLOAT32_UNDERFLOW)


def test_a_value_refused_in_float32_is_refused_after_it_passed_in_float64():
    """What was found good is remembered per dtype: the same rate, good for a float64
    weight, is refused for a float32 one of the same optimizer."""
    opt = MyAdam(learning_rate=1e39)
    w64, w32 = nd.ones((2,), dtype='float64'), nd.ones((2,), dtype='float32')
    s64, s32 = opt.create_state(0, w64), opt.create_state(1, w32)
    opt.update(0, w64, nd.ones((2,), dtype='float64'), s64)
    opt.rescale_grad = 1e39  # and a rescale_grad, remembered per call
    opt.update(0, w64, nd.ones((2,), dtype='float64'), s64)
    with pytest.raises(ValueError, match=r"Invalid rescale_grad: 1e\+39 at update 3 for "
                                         r"parameter index 1 \(.*not infinite: in float32 it is inf"):
        opt.update(1, w32, nd.ones((2,), dtype='float32'), s32)
    opt.rescale_grad = 1.0
    with pytest.raises(ValueError, match=r"Invalid learning rate: 1e\+39 at update 2 for "
                                         r"parameter index 1 \(.*not infinite: in float32 it is inf"):
        opt.update(1, w32, nd.ones((2,), dtype='float32'), s32)
    np.testing.assert_array_equal(w32.asnumpy(), [1.0, 1.0])
    assert opt._index_update_count == {0: 2}


# --- attributes set after the constructor --------------------------------------------------

# attribute -> (a bad value, the message's start); the update is the second
ATTRIBUTES = {
    'beta1': (1.0, "myadam: Invalid beta1: 1.0 at update 2 (the optimizer's attribute beta1; "
                   "expected in [0, 1))"),
    'beta2': (NAN, "myadam: Invalid beta2: nan at update 2 (the optimizer's attribute beta2; "
                   "expected in [0, 1), not NaN)"),
    'epsilon': (-1, "myadam: Invalid epsilon: -1 at update 2 (the optimizer's attribute "
                    "epsilon; expected > 0"),
    'epsilon_mode': ('bogus', "myadam: Invalid epsilon_mode: 'bogus' at update 2 (the "
                              "optimizer's attribute epsilon_mode; expected one of "),
    'clip_gradient': (-1.0, "myadam: Invalid clip_gradient: -1.0 at update 2 (the optimizer's "
                            "attribute clip_gradient; expected None or > 0"),
    'amsgrad': ('no', "myadam: Invalid amsgrad: 'no' at update 2 (the optimizer's attribute "
                      "amsgrad; expected True or False"),
    'nonfinite': ('ignore', "myadam: Invalid nonfinite: 'ignore' at update 2 (the optimizer's "
                            "attribute nonfinite; expected one of "),
    'max_skips': (0, "myadam: Invalid max_skips: 0 at update 2 (the optimizer's attribute "
                     "max_skips; expected "),
    'begin_num_update': (-1, "myadam: Invalid begin_num_update: -1 at update 2 (the "
                             "optimizer's attribute begin_num_update, a parameter's step count "
                             "before its first update; expected an int >= 0"),
    'rescale_grad': (0.0, "myadam: Invalid rescale_grad: 0.0 at update 2 (the optimizer's "
                          "attribute rescale_grad, which gluon.Trainer sets to 1 / batch_size "
                          "in Trainer.step(batch_size); expected > 0"),
}


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('attribute', ATTRIBUTES)
def test_an_attribute_set_after_the_constructor_is_checked_at_the_next_step(attribute,
                                                                            fused):
    value, message = ATTRIBUTES[attribute]
    params, trainer = after_a_step(fused=fused)
    opt = trainer.optimizer
    if attribute == 'rescale_grad':  # Trainer.step sets it: the updater's call reads it
        trainer._scale = value
    else:
        setattr(opt, attribute, value)
    refused(trainer, params, message)


@pytest.mark.parametrize('value', [-1, -3, 0.5, '0'])
def test_begin_num_update_is_checked_by_the_constructor(value):
    with pytest.raises(ValueError) as error:
        MyAdam(begin_num_update=value)
    assert str(error.value).startswith(f"Invalid begin_num_update: {value!r} (expected ")
    p = gluon.Parameter('w', shape=(2,))
    p.initialize()
    with pytest.raises(ValueError, match='begin_num_update'):
        gluon.Trainer([p], 'myadam', {'begin_num_update': value})


def test_a_flag_equal_to_a_good_one_is_refused_by_its_type():
    """What was found good is remembered per type: 0.0 == False, but is not a flag."""
    params, trainer = after_a_step()
    trainer.optimizer.amsgrad = False
    step(trainer, params)
    trainer.optimizer.amsgrad = 0.0
    refused(trainer, params, "myadam: Invalid amsgrad: 0.0 at update 3 (the optimizer's "
                             "attribute amsgrad; expected True or False")


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
def test_valid_changes_between_steps_keep_working_as_the_oracle(fused):
    """A one-cycle schedule changes beta1 (and the rate) at every step; epsilon and wd
    change too: each step follows the values of its own time."""
    opt = MyAdam(learning_rate=0.01, fused=fused)
    oracle = NumpyAdam(lr=0.01)
    w = nd.array(INIT['first'])
    state = opt.create_state(0, w)
    want = np.array(INIT['first'])
    rng = np.random.default_rng(7)
    for t in range(12):
        beta1 = 0.85 + 0.01 * abs(6 - t)
        for target in (opt, oracle):
            target.beta1 = beta1
            target.wd = 0.001 * (t % 3)
        opt.epsilon = oracle.eps = 10.0 ** -(6 + t % 3)
        opt.set_learning_rate(0.01 / (1 + t))
        oracle.lr_at = lambda _, rate=0.01 / (1 + t): rate
        g = rng.normal(size=4)
        opt.update(0, w, nd.array(g), state)
        want = oracle.step(0, want, g.astype('float32'))
    np.testing.assert_allclose(w.asnumpy(), want, **TOL['float32'])


# --- what lr_scheduler returns ---------------------------------------------------------

@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('value', ['0.01', None, True, np.bool_(True), [0.01],
                                   decimal.Decimal('0.01'), -0.1, NAN, INF],
                         ids=['str', 'None', 'True', 'numpy_bool', 'list', 'Decimal', 'negative',
                              'nan', 'inf'])
def test_a_scheduler_returning_something_else_than_a_rate_is_refused(value, fused):
    params, trainer = trainer_of(learning_rate=None, lr_scheduler=Returns(value, at=3),
                                 fused=fused)
    step(trainer, params)
    step(trainer, params)
    refused(trainer, params, f"myadam: Invalid learning rate: {value!r} at update 3 "
                             f"(lr_scheduler(3), a Returns, returned {value!r}; expected ")


@pytest.mark.parametrize('fused', ROUTES, ids=['kernel', 'textbook'])
@pytest.mark.parametrize('value', [np.float32(0.01), np.float64(0.01), np.float16(0.01),
                                   fractions.Fraction(1, 100), 0],
                         ids=['float32', 'float64', 'float16', 'Fraction', 'int_0'])
def test_a_scheduler_returning_a_real_number_trains_as_that_rate(value, fused):
    """A real number that is not a bool is a rate, as the constructor takes it: the same
    weights, bitwise, as the rate given as a Python float."""
    weights = []
    for options in (dict(learning_rate=None, lr_scheduler=Returns(value)),
                    dict(learning_rate=float(value))):
        params, trainer = trainer_of(fused=fused, **options)
        for _ in range(3):
            step(trainer, params)
        weights.append([p.data().asnumpy() for p in params])
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    if value:
        assert not np.array_equal(weights[0][0], np.float32(INIT['first']))


# --- the KVStore's callback, and the steps it queues --------------------------------------

TWO = [mx.cpu(0), mx.cpu(1)]


@pytest.mark.parametrize('nonfinite', ['skip', 'raise'], ids=['queued', 'in_the_callback'])
def test_under_the_kvstore_a_bad_attribute_comes_out_of_trainer_step(nonfinite):
    """update_on_kvstore=True over two devices: the KVStore runs the update in its
    callback (under 'skip', after a parameter's first step, queued in MXNet's engine:
    MyAdam._queue). The first call refuses, so nothing is stepped."""
    params, trainer = trainer_of(ctx=TWO, update_on_kvstore=True, nonfinite=nonfinite)
    step(trainer, params)
    step(trainer, params)
    opt = trainer.optimizer
    assert list(opt._engine.plans) == ([0, 1] if nonfinite == 'skip' else [])
    opt._take_queued()
    opt.beta1 = 1.0
    before = snapshot(trainer, params)
    with raised_from_the_callback(ValueError, r"^myadam: Invalid beta1: 1\.0 at update 3 "):
        step(trainer, params)
    assert_same(before, snapshot(trainer, params))
    opt.beta1 = 0.9
    step(trainer, params)
    assert opt._index_update_count == {0: 3, 1: 3}


def test_under_the_kvstore_a_bad_wd_mult_stops_the_step_at_its_parameter():
    """The KVStore updates one parameter a call: 'first' keeps its step, 'second' is
    refused and unchanged, and the error comes out of Trainer.step."""
    params, trainer = trainer_of(ctx=TWO, update_on_kvstore=True, wd=0.01)
    step(trainer, params)
    step(trainer, params)
    trainer.optimizer._take_queued()
    params[1].wd_mult = NAN
    second = [d.asnumpy() for d in params[1].list_data()]
    first = [d.asnumpy() for d in params[0].list_data()]
    with raised_from_the_callback(ValueError, r"^myadam: Invalid wd: nan at update 3 for "
                                              r"parameter 'second' \(wd 0\.01 times param "
                                              r"'second' wd_mult nan; expected >= 0"):
        step(trainer, params)
    for a, b in zip(second, params[1].list_data(), strict=True):
        np.testing.assert_array_equal(a, b.asnumpy())
    for a, b in zip(first, params[0].list_data(), strict=True):
        assert not np.array_equal(a, b.asnumpy())
    assert trainer.optimizer._index_update_count == {0: 3, 1: 2}
