"""The chapter's code against the chapter's formula, at tolerances that notice epsilon.

``adam_plugin.chapter.reference.adam`` (the chapter's ``adam()``, as printed) and
``adam_plugin.chapter.exercises.adam_folded`` (exercise 2: the bias correction folded into
the learning rate and epsilon) are stepped on drawn gradients and compared, step by step,
with :func:`chapter_formula`, the chapter's equations transcribed to NumPy in float64:

    v   <- beta1 v + (1 - beta1) g                  g = the gradient / batch_size
    s   <- beta2 s + (1 - beta2) g * g
    v_hat = v / (1 - beta1**t),  s_hat = s / (1 - beta2**t)
    x   <- x - eta v_hat / (sqrt(s_hat) + epsilon)   (epsilon outside the root: the code's
                                                      placement; the prose puts it inside)

with beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8. Each step's change of the parameter is
compared, relative to its own size: where ``|g|`` is near epsilon (drawn on purpose at some
steps) epsilon decides a good part of the step, and an epsilon off by any factor shows.
The other exercises' functions are checked against their definitions too.
"""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from mxnet import nd

from adam_plugin import MyAdam
from adam_plugin.chapter import exercises, reference
from oracles import NumpyAdam

BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8  # the chapter's

# float64 steps agree to this fraction of the step's scale (a few roundings); float32 to
# float32's. An epsilon off by 1% changes a step near epsilon by about 0.5%.
STEP_TOL = {'float64': 1e-12, 'float32': 2e-6}


def chapter_formula(x, v, s, grad, lr, batch_size, t, epsilon=EPSILON):
    """One step of the chapter's equations (float64 NumPy). Returns ``(x, v, s, scale)``,
    ``scale`` the size of the step's terms (a cancellation in ``v`` costs absolute, not
    relative, precision: the tolerance is a fraction of it)."""
    g = grad / batch_size
    terms = BETA1 * np.abs(v) + (1 - BETA1) * np.abs(g)
    v = BETA1 * v + (1 - BETA1) * g
    s = BETA2 * s + (1 - BETA2) * g * g
    v_hat, s_hat = v / (1 - BETA1 ** t), s / (1 - BETA2 ** t)
    denominator = np.sqrt(s_hat) + epsilon
    scale = lr * terms / (1 - BETA1 ** t) / denominator
    return x - lr * v_hat / denominator, v, s, scale


# Gradient magnitudes (after dividing by the batch size): decades around epsilon on purpose,
# and from tiny to typical.
NEAR_EPSILON = st.floats(-9.5, -6.5)
ANY_SCALE = st.floats(-12.0, 2.0)


@st.composite
def runs(draw):
    """``(dtype, lr, batch_size, shape, gradients)``: each step's gradients of one decade,
    at least one step near epsilon."""
    steps = draw(st.integers(1, 12))
    decades = [draw(st.one_of(NEAR_EPSILON, ANY_SCALE)) for _ in range(steps)]
    decades[draw(st.integers(0, steps - 1))] = draw(NEAR_EPSILON)
    batch_size = draw(st.integers(1, 256))
    shape = draw(st.sampled_from([(3,), (2, 5), (7, 1)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grads = [rng.choice([-1.0, 1.0], shape) * 10 ** (decade + rng.uniform(-0.5, 0.5, shape))
             * batch_size for decade in decades]
    return (draw(st.sampled_from(['float64', 'float32'])), draw(st.floats(1e-4, 1.0)),
            batch_size, shape, grads)


FUNCTIONS = {'adam': reference.adam, 'adam_folded': exercises.adam_folded}


@pytest.mark.parametrize('name', FUNCTIONS)
@given(run=runs())
@example(run=('float64', 0.1, 10, (3,), [np.array([1e-7, -2e-8, 5e-7])] * 3))
def test_the_chapters_code_takes_the_chapters_steps(name, run):
    dtype, lr, batch_size, shape, grads = run
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=shape)
    param = nd.array(x0, dtype=dtype)
    param.attach_grad()
    v, s = nd.zeros(shape, dtype=dtype), nd.zeros(shape, dtype=dtype)
    x, mv, ms = param.asnumpy().astype(np.float64), np.zeros(shape), np.zeros(shape)
    for t, grad in enumerate(grads, start=1):
        param.grad[:] = nd.array(grad, dtype=dtype)
        before = param.asnumpy().astype(np.float64)
        FUNCTIONS[name]([param], [v], [s], lr, batch_size, t)
        got = param.asnumpy().astype(np.float64) - before
        x, mv, ms, scale = chapter_formula(before, mv, ms, param.grad.asnumpy().astype(np.float64),
                                           lr, batch_size, t)
        want = x - before
        # the code's own moments feed the next step: its state, not the formula's, is carried
        mv, ms = v.asnumpy().astype(np.float64), s.asnumpy().astype(np.float64)
        bound = STEP_TOL[dtype] * scale + np.abs(np.spacing(before.astype(dtype))).astype(
            np.float64)
        assert (np.abs(got - want) <= bound).all(), (name, t, got, want)


def test_the_tolerance_notices_an_epsilon_off_by_one_percent():
    """Guard for the test above: the formula with epsilon 1% larger moves a step near
    epsilon by more than the float64 tolerance (and the float32 one)."""
    grad, zeros = np.array([1e-8, -3e-8, 2e-9]), np.zeros(3)
    x, _, _, scale = chapter_formula(zeros, zeros, zeros, grad, 0.1, 1, 1)
    y, _, _, _ = chapter_formula(zeros, zeros, zeros, grad, 0.1, 1, 1, epsilon=EPSILON * 1.01)
    assert (np.abs(x - y) > STEP_TOL['float32'] * scale * 100).all()


# --- the other exercises ---------------------------------------------------------------------

@given(t=st.integers(1, 10**6))
def test_reddis_losses_are_c_once_in_three_steps(t):
    assert exercises.reddi_losses(t) == (3.0 if t % 3 == 1 else -1.0)


@settings(max_examples=15)
@given(steps=st.integers(1, 40), lr=st.floats(0.01, 1.0),
       options=st.sampled_from([{}, {'amsgrad': True}, {'epsilon': 1e-3}]))
def test_reddis_problem_is_projected_adam_with_a_decaying_rate(steps, lr, options):
    """x from 0, the losses' gradients, the rate lr / sqrt(t), beta1 = 0, beta2 = 0.1, x clipped
    to [-1, 1] after each step: the NumPy oracle's path, in float32. (Not Yogi: with these
    gradients its ``v`` meets ``g * g`` exactly in float32 and not in the float64 oracle,
    where the sign of their difference decides the step.)"""
    path = exercises.reddi(steps=steps, lr=lr, **options)
    oracle = NumpyAdam(lr=lr, beta1=0.0, beta2=0.1, lr_at=lambda t: lr / math.sqrt(t),
                       epsilon=options.get('epsilon', 1e-8), amsgrad=options.get('amsgrad', False),
                       yogi=options.get('yogi', False))
    x = np.zeros(1, np.float32)
    for t in range(1, steps + 1):
        x = np.clip(oracle.step(0, x, [exercises.reddi_losses(t)]), -1, 1).astype(np.float32)
        np.testing.assert_allclose(path[t - 1], x[0], rtol=1e-5, atol=1e-6, err_msg=f'step {t}')


@given(step=st.integers(1, 20), factor=st.floats(0.05, 1.0), lr=st.floats(1e-4, 1.0),
       until=st.integers(1, 200))
def test_the_decay_schedule_multiplies_by_factor_every_step_updates(step, factor, lr, until):
    """MXNet's FactorScheduler: ``lr * factor**((t - 1) // step)``, never below its
    ``stop_factor_lr`` (1e-8)."""
    schedule = exercises.decay_schedule(lr, step, factor)
    for t in range(1, until + 1):
        assert schedule(t) == pytest.approx(max(lr * factor ** ((t - 1) // step), 1e-8),
                                            rel=1e-12)


@given(scales=st.tuples(st.floats(0.1, 10.0), st.floats(0.1, 10.0)))
def test_badly_scaled_multiplies_each_column_by_its_scale(scales):
    features = nd.array(np.random.default_rng(1).normal(size=(6, 2)))
    scaled = exercises.badly_scaled(features, scales).asnumpy()
    np.testing.assert_allclose(scaled, features.asnumpy() * np.float32(scales), rtol=1e-6)


def test_myadam_takes_the_chapters_steps_near_epsilon():
    """The package's own default rule is the chapter's code (epsilon outside the root): a
    step near epsilon as the formula takes it."""
    grad = np.array([1e-8, -4e-8, 3e-9])
    opt = MyAdam(learning_rate=0.1, rescale_grad=1 / 4)
    w = nd.zeros((3,), dtype='float64')
    opt.update(0, w, nd.array(grad * 4, dtype='float64'), opt.create_state(0, w))
    x, _, _, scale = chapter_formula(np.zeros(3), np.zeros(3), np.zeros(3), grad * 4, 0.1, 4, 1)
    assert (np.abs(w.asnumpy() - x) <= STEP_TOL['float64'] * scale).all()
