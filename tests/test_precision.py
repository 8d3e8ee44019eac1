"""float16 weights: a float32 master copy with multi_precision, a warning without it."""
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import MyAdam
from configs import CONFIGS, optimizer_kwargs
from helpers import state_arrays
from oracles import gradients

SHAPES = [(3, 4, 5), (10, 4), (7,)]
OPTIONS = [dict(), dict(amsgrad=True, wd=0.01), dict(decoupled_wd=True, wd=0.01),
           dict(epsilon_mode='hat')]


def run(dtype, options, weights, grads, multi_precision):
    opt = MyAdam(**dict(dict(learning_rate=0.01), **options), multi_precision=multi_precision)
    ws = [nd.array(w, dtype=dtype) for w in weights]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads, strict=True)):
            opt.update_multi_precision(i, w, nd.array(g, dtype=dtype), states[i])
    return ws, states


@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_master_weights_keep_float16_close_to_float32(options, rng):
    weights = [rng.normal(size=s).astype('float16') for s in SHAPES]
    grads = list(zip(*[gradients(rng, s, 20, 'float16') for s in SHAPES], strict=True))
    w16, states = run('float16', options, weights, grads, multi_precision=True)
    w32, _ = run('float32', options, weights, grads, multi_precision=False)
    for w, s, ref, w0 in zip(w16, states, w32, weights, strict=True):
        assert w.dtype == np.float16
        master = s[0]
        assert master.dtype == np.float32 and all(b.dtype == np.float32 for b in s[1][:-1])
        np.testing.assert_array_equal(w.asnumpy(), master.asnumpy().astype(np.float16))
        np.testing.assert_allclose(w.asnumpy().astype(np.float32), ref.asnumpy(), atol=2e-3)
        assert np.abs(ref.asnumpy() - w0).max() > 0.05  # the runs really moved


def test_plain_float16_drifts_more_than_master_weights(rng):
    # Why master weights exist: tiny steps vanish when added to float16 weights.
    # 20 steps of 1e-4 from 1.0: each is below half a float16 ulp (4.9e-4) at 1.0.
    weights = [np.full((100,), 1.0, 'float16')]
    grads = [(np.full((100,), 1.0, 'float16'),)] * 20
    small = dict(learning_rate=1e-4)
    ref, _ = run('float32', small, weights, grads, multi_precision=False)
    with pytest.warns(UserWarning, match='multi_precision'):
        plain, _ = run('float16', small, weights, grads, multi_precision=False)
    master, _ = run('float16', small, weights, grads, multi_precision=True)
    assert np.all(plain[0].asnumpy() == 1.0)  # every step was lost
    err_plain = np.abs(plain[0].asnumpy() - ref[0].asnumpy()).max()
    err_master = np.abs(master[0].asnumpy() - ref[0].asnumpy()).max()
    assert err_master < 0.5 * err_plain


def test_float16_without_multi_precision_warns_as_mxnet_does():
    with pytest.warns(UserWarning, match='multi_precision'):
        MyAdam().create_state_multi_precision(0, nd.ones((2,), dtype='float16'))


# --- float16 on the compiled kernel ---------------------------------------------------------

STEPS = 12
KERNEL_SHAPES = [(3, 4, 5), (10, 4), (7,), (1037,)]  # the last: vector lanes and a tail


def _inputs(rng):
    weights = [rng.normal(size=s).astype('float16') for s in KERNEL_SHAPES]
    grads = list(zip(*[gradients(rng, s, STEPS, 'float16') for s in KERNEL_SHAPES], strict=True))
    return weights, grads


@pytest.mark.parametrize('name', CONFIGS)
def test_master_copy_on_the_kernel_is_bitwise_the_textbook(name, variant, rng):
    """float16 weights stepping their float32 master copy, the whole list in one call:
    the master copy and moments as the textbook's float32 step, the weight its rounding."""
    weights, grads = _inputs(rng)
    fast = run('float16', optimizer_kwargs(CONFIGS[name]), weights, grads, multi_precision=True)
    slow = run('float16', dict(optimizer_kwargs(CONFIGS[name]), fused=False), weights, grads,
               multi_precision=True)  # a scheduler of its own: they keep state
    for w, v, w0 in zip(fast[0], slow[0], weights, strict=True):
        assert w.dtype == np.float16
        np.testing.assert_array_equal(w.asnumpy(), v.asnumpy())
        assert not np.array_equal(w.asnumpy(), w0)
    for a, b in zip(state_arrays(fast[1]), state_arrays(slow[1]), strict=True):
        assert a.dtype == (np.float32 if a.ndim else np.int64)  # the arrays, then [t]
        np.testing.assert_array_equal(a, b)


def float32_rounded_to_float16(options, weights, grads):
    """Each step computed in float32 from the float16 values and every result stored as
    float16: the textbook route on float32 copies, rounded after each step."""
    opt = MyAdam(fused=False, **options)
    ws = [nd.array(w, dtype='float32') for w in weights]
    states = [opt.create_state(i, w) for i, w in enumerate(ws)]
    for step_grads in grads:
        for i, (w, g) in enumerate(zip(ws, step_grads, strict=True)):
            opt.update(i, w, nd.array(g, dtype='float32'), states[i])
            for a in (w, *states[i][:-1]):  # (m, v[, vmax], [t])
                a[:] = a.astype('float16').astype('float32')
    return ws, states


@pytest.mark.filterwarnings('ignore:Accumulating with float16')
@pytest.mark.parametrize('name', CONFIGS)
def test_plain_float16_on_the_kernel_computes_in_float32(name, variant, rng):
    """float16 weights and moments without a master copy: each element read as float32,
    stepped in float32 and stored rounded to float16, as MXNet's half_t arithmetic does."""
    weights, grads = _inputs(rng)
    fast, states = run('float16', optimizer_kwargs(CONFIGS[name]), weights, grads,
                       multi_precision=False)
    expected, expected_states = float32_rounded_to_float16(optimizer_kwargs(CONFIGS[name]),
                                                           weights, grads)
    for w, e, w0 in zip(fast, expected, weights, strict=True):
        assert w.dtype == np.float16
        np.testing.assert_array_equal(w.asnumpy(), e.asnumpy().astype(np.float16))
        assert not np.array_equal(w.asnumpy(), w0)
    for state, reference in zip(states, expected_states, strict=True):
        assert state[-1] == reference[-1] == [STEPS]  # (m, v[, vmax], [t])
        for a, b in zip(state[:-1], reference[:-1], strict=True):
            assert a.dtype == np.float16
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy().astype(np.float16))
