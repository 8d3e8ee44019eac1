"""Property-based tests: every route against the NumPy oracle on drawn inputs.

Shapes (empty and one-element included), dtypes, every option combination and
hyperparameters from their valid ranges are drawn by Hypothesis; each step of each
route (the compiled kernel, MXNet's ``adam_update`` where it is exact, the textbook
NDArray ops) is compared with ``oracles.NumpyAdam``. Invalid hyperparameters drawn
from outside their ranges are always refused with a ``ValueError`` naming them.
The profile (derandomized, bounded) is loaded in conftest.py.

MXNet 1.x reads a 0 in a shape as "unknown" unless NumPy shape semantics are on, so
arrays with a zero-length axis are made and stepped under ``mx.util.np_shape(True)``.
"""
import contextlib
import itertools
import math

import mxnet as mx
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from mxnet import nd

from adam_plugin import MyAdam, dispatch
from adam_plugin.textbook import EPSILON_MODES, Step
from configs import ORACLE_TOL as TOL
from oracles import NumpyAdam

MAX_STEPS = 3


def real(low, high, width=64):
    # No subnormal hyperparameters: MXNet's scalar operators parse their scalar with
    # std::stod, which refuses them ("Out of range value for scalar"), so the textbook
    # route raises MXNetError for, e.g., beta2=5e-324. A known limitation, not drawn.
    return st.floats(low, high, allow_subnormal=False, width=width)


hyper = st.fixed_dictionaries({
    'lr': real(0.0, 1.0),
    'beta1': real(0.0, 0.999),
    'beta2': real(0.0, 0.9999),
    'epsilon': real(1e-8, 1.0),
    'epsilon_mode': st.sampled_from(EPSILON_MODES),
    'amsgrad': st.booleans(),
    'decoupled_wd': st.booleans(),
    'wd': real(0.0, 0.5),
    'rescale_grad': real(0.01, 10.0),
    # MXNet's clip operator takes its bounds as float32, so the textbook route clips a
    # float64 gradient at clip_gradient rounded to float32: drawn exact in float32.
    'clip_gradient': st.one_of(st.none(), real(0.125, 10.0, width=32)),
})
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6)


@st.composite
def problems(draw, dtypes=('float32', 'float64')):
    """(dtype, hyperparameters, initial weight, list of gradients) as float64 arrays
    holding values exact in ``dtype``."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(shapes)
    values = st.floats(-10.0, 10.0, width=16 if dtype == 'float16' else 32)
    w0 = draw(hnp.arrays(np.float64, shape, elements=values))
    grads = draw(st.lists(hnp.arrays(np.float64, shape, elements=values),
                          min_size=1, max_size=MAX_STEPS))
    return dtype, draw(hyper), w0, grads


def myadam_kwargs(h):
    return dict(learning_rate=h['lr'], beta1=h['beta1'], beta2=h['beta2'],
                epsilon=h['epsilon'], epsilon_mode=h['epsilon_mode'], amsgrad=h['amsgrad'],
                decoupled_wd=h['decoupled_wd'], wd=h['wd'], rescale_grad=h['rescale_grad'],
                clip_gradient=h['clip_gradient'])


def oracle_walk(h, w0, grads):
    """The oracle's weight after each step, and the largest step it took."""
    oracle = NumpyAdam(**dict(h))
    walk, w = [], w0
    for g in grads:
        w = oracle.step(0, w, g)
        walk.append(w)
    steps = [np.abs(b - a).max(initial=0.0) for a, b in itertools.pairwise([w0] + walk)]
    return walk, max(steps)


def shape_semantics(shape):
    return mx.util.np_shape(True) if 0 in shape else contextlib.nullcontext()


def check(dtype, walk, biggest, got, tol=None):
    tol = TOL[dtype] if tol is None else tol
    for t, (want, have) in enumerate(zip(walk, got, strict=True), start=1):
        assert have.dtype == np.dtype(dtype) and have.shape == want.shape
        error = np.abs(have.astype(np.float64) - want)
        bound = tol * (np.abs(want) + biggest) + np.abs(np.spacing(want.astype(dtype)))
        assert (error <= bound).all(), (t, have, want, error.max())


def run_myadam(dtype, kwargs, w0, grads, multi_precision=False):
    """The weights after each step, updating through MyAdam (its dispatch picks the route)."""
    with shape_semantics(w0.shape):
        opt = MyAdam(multi_precision=multi_precision, **kwargs)
        weight = nd.array(w0, dtype=dtype)
        state = opt.create_state_multi_precision(0, weight)
        out = []
        for g in grads:
            opt.update_multi_precision(0, weight, nd.array(g, dtype=dtype), state)
            out.append(weight.asnumpy())
        return out


@given(problems())
def test_kernel_and_textbook_match_the_oracle(problem):
    dtype, h, w0, grads = problem
    walk, biggest = oracle_walk(h, w0, grads)
    kwargs = myadam_kwargs(h)
    layout = dispatch.Layout(dense=True, dtype=np.dtype(dtype), device_type='cpu',
                             shape=w0.shape)
    assert dispatch.route(layout, MyAdam(**kwargs)) == 'kernel'
    assert dispatch.route(layout, MyAdam(fused=False, **kwargs)) == 'textbook'
    check(dtype, walk, biggest, run_myadam(dtype, dict(kwargs), w0, grads))
    check(dtype, walk, biggest, run_myadam(dtype, dict(kwargs, fused=False), w0, grads))


@given(problems(dtypes=('float16',)))
def test_float16_on_a_float32_master_copy_matches_the_oracle(problem):
    dtype, h, w0, grads = problem
    walk, biggest = oracle_walk(h, w0, grads)
    check(dtype, walk, biggest, run_myadam(dtype, myadam_kwargs(h), w0, grads,
                                           multi_precision=True))


# adam_update takes its hyperparameters as float32, which bounds its agreement on float64
# weights to float32's precision; the betas are drawn exact in float32 (as clip_gradient
# is), since ``1 - beta2`` for beta2 near 1 loses that rounding's relative error a
# thousandfold. A value float32 cannot hold as a normal number (wd=2e-106, or a learning
# rate tiny once the bias corrections are folded in) is drawn too: operator_step hands
# that step to the textbook route, as adam_update would refuse it.
@given(problems(), st.sampled_from(['outside', 'hat']))
def test_mxnet_operator_matches_the_oracle_where_exact(problem, mode):
    dtype, h, w0, grads = problem
    h = dict(h, beta1=float(np.float32(h['beta1'])), beta2=float(np.float32(h['beta2'])))
    h.update(epsilon_mode=mode, amsgrad=False, decoupled_wd=False)
    walk, biggest = oracle_walk(h, w0, grads)
    got = []
    with shape_semantics(w0.shape):
        weight = nd.array(w0, dtype=dtype)
        state = (nd.array(np.zeros_like(w0), dtype=dtype),
                 nd.array(np.zeros_like(w0), dtype=dtype))
        for t, g in enumerate(grads, start=1):
            step = Step(t=t, lr=h['lr'], wd=h['wd'], beta1=h['beta1'], beta2=h['beta2'],
                        epsilon=h['epsilon'], epsilon_mode=mode, amsgrad=False, yogi=False,
                        decoupled_wd=False, rescale_grad=h['rescale_grad'],
                        clip_gradient=h['clip_gradient'], lazy_update=True)
            dispatch.operator_step(weight, nd.array(g, dtype=dtype), state, step)
            got.append(weight.asnumpy())
    check(dtype, walk, biggest, got, tol=TOL['float32'])


def test_a_step_adam_update_cannot_parse_is_taken_by_the_textbook_route():
    """A learning rate of 1e-39 once the bias corrections are folded in, or a wd of 1e-100,
    is no normal float32: adam_update would refuse it ("Out of range value for lr"), so
    operator_step gives that step to the textbook route, whose result it then is."""
    for lr, wd in ((3e-39, 0.0), (0.1, 1e-100), (0.1, 1e39)):
        step = Step(t=1, lr=lr, wd=wd, beta1=0.9, beta2=0.999, epsilon=1e-8,
                    epsilon_mode='hat', amsgrad=False, yogi=False, decoupled_wd=False,
                    rescale_grad=1.0, clip_gradient=None, lazy_update=True)
        results = []
        for route in (dispatch.operator_step,
                      lambda w, g, s, step: dispatch.textbook_step(w, g, s, step, False)):
            weight = nd.array([0.5, -1.0], dtype='float64')
            state = (nd.zeros((2,), dtype='float64'), nd.zeros((2,), dtype='float64'), [0])
            route(weight, nd.array([0.25, -2.0], dtype='float64'), state, step)
            results.append([weight.asnumpy(), state[0].asnumpy(), state[1].asnumpy()])
        for got, want in zip(*results, strict=True):
            np.testing.assert_array_equal(got, want)


# --- Invalid hyperparameters --------------------------------------------------------------

NAN, INF = math.nan, math.inf
not_a_number = st.one_of(st.text(max_size=5), st.just([1.0]), st.just(True))


def outside(*ranges, none=True):
    """``ranges``, NaN, non-numbers and, where ``none`` (None is not valid), None."""
    return st.one_of(*ranges, st.just(NAN), not_a_number, *([st.just(None)] if none else []))


# name -> values outside its valid range (each refused with a ValueError naming it)
INVALID = {
    'learning_rate': outside(st.floats(max_value=-1e-300), st.just(INF), none=False),
    'beta1': outside(st.floats(max_value=-1e-300), st.floats(min_value=1.0)),
    'beta2': outside(st.floats(max_value=-1e-300), st.floats(min_value=1.0)),
    'epsilon': outside(st.floats(max_value=0.0), st.just(INF)),
    'wd': outside(st.floats(max_value=-1e-300), st.just(INF)),
    'rescale_grad': outside(st.floats(max_value=0.0), st.just(INF)),
    'clip_gradient': outside(st.floats(max_value=0.0), st.just(INF), none=False),
    'epsilon_mode': st.one_of(st.text(max_size=8).filter(lambda s: s not in EPSILON_MODES),
                              st.just(None), st.just(1)),
    'nonfinite': st.one_of(st.text(max_size=8).filter(lambda s: s not in ('skip', 'raise')),
                           st.just(None)),
    **{flag: st.one_of(st.text(max_size=5), st.just(None), st.floats(),
                       st.integers().filter(lambda i: i not in (0, 1)))
       for flag in ('amsgrad', 'decoupled_wd', 'lazy_update', 'fused', 'multi_precision')},
}


@st.composite
def invalid_settings(draw):
    name = draw(st.sampled_from(sorted(INVALID)))
    return name, draw(INVALID[name])


@given(hyper, invalid_settings())
def test_an_invalid_hyperparameter_is_refused_naming_it(h, invalid):
    name, value = invalid
    kwargs = dict(myadam_kwargs(h), **{name: value})
    try:
        MyAdam(**kwargs)
    except ValueError as err:
        assert name in str(err), (name, value, str(err))
    else:
        raise AssertionError(f'MyAdam accepted {name}={value!r}')
