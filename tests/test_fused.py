"""The fast routes of adam_plugin.dispatch against the textbook NDArray path."""
import ctypes
import functools
import os
import pickle
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import mxnet as mx
from mxnet import nd
from mxnet.base import _LIB

import adam_plugin  # noqa: F401  (registers 'myadam')
from adam_plugin import MyAdam, dispatch, kernel, mxnet_internals, textbook
from configs import CONFIGS, FUSED_TOL, optimizer_kwargs
from oracles import gradients
from test_kernel_calls import record_calls

STEPS = 20
# (3,4,5), (10,4), (7,) as in the option tests, and one of 100K elements.
SHAPES = [(3, 4, 5), (10, 4), (7,), (100_003,)]
# The kernel's variants this CPU runs (test_variants_follow_the_cpu checks the list).
VARIANTS = [v for v in kernel.variants() if kernel.runs_here(v)] if kernel.LIBRARY else []


# The quick tier runs the variant the kernel chose at load, on float32 (float64 on the kernel:
# test_properties); the full one runs every variant on both.
@pytest.fixture(params=[v if v == kernel.variant() else pytest.param(v, marks=pytest.mark.slow)
                        for v in VARIANTS])
def variant(request):
    """Each variant of the kernel's loops this CPU runs, in turn, for the test."""
    previous = kernel.use_variant(request.param)
    yield request.param
    kernel.use_variant(previous)


def run(config, dtype, fused, aggregated, weights, grads):
    """20 steps of MyAdam; returns the weights and every state buffer as NumPy arrays."""
    opt = MyAdam(fused=fused, **optimizer_kwargs(config))
    ws = [nd.array(w, dtype=dtype) for w in weights]
    states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(ws)]
    indices = list(range(len(ws)))
    for step_grads in grads:
        gs = [nd.array(g, dtype=dtype) for g in step_grads]
        if aggregated:  # as the Updater calls it when aggregate_num > 0
            opt.update_multi_precision(indices, ws, gs, states)
        else:
            for i in indices:
                opt.update_multi_precision(i, ws[i], gs[i], states[i])
    assert [s[-1] for s in states] == [[len(grads)]] * len(states)  # (m, v[, vmax], [t])
    return [w.asnumpy() for w in ws] + [b.asnumpy() for s in states for b in s[:-1]]


def inputs(rng, dtype, shapes=SHAPES):
    weights = [rng.normal(size=s).astype(dtype) for s in shapes]
    grads = list(zip(*[gradients(rng, s, STEPS, dtype) for s in shapes]))
    return weights, grads


@functools.lru_cache(maxsize=None)
def textbook_run(name, dtype):
    """The inputs of test_fused_matches_textbook and the textbook route's result on them,
    computed once per row and dtype for every variant and calling convention: the textbook
    route runs no kernel, and its one-by-one and list calls give bitwise the same result."""
    weights, grads = inputs(np.random.default_rng(1234), dtype)
    return weights, grads, run(CONFIGS[name], dtype, False, False, weights, grads)


@pytest.mark.parametrize('name', CONFIGS)
def test_textbook_list_call_equals_one_by_one(name, rng):
    """What lets textbook_run serve both calling conventions."""
    weights, grads = inputs(rng, 'float32', SHAPES[:3])
    one_by_one = run(CONFIGS[name], 'float32', False, False, weights, grads)
    as_list = run(CONFIGS[name], 'float32', False, True, weights, grads)
    for a, b in zip(one_by_one, as_list):
        np.testing.assert_array_equal(a, b)


# One pytest-xdist worker runs them all, so that each textbook_run is computed once.
@pytest.mark.xdist_group('textbook_run')
@pytest.mark.parametrize('aggregated', [False, True], ids=['single', 'list'])
@pytest.mark.parametrize('dtype', ['float32', pytest.param('float64', marks=pytest.mark.slow)])
@pytest.mark.parametrize('name', CONFIGS)
def test_fused_matches_textbook(name, dtype, aggregated, variant):
    weights, grads, slow = textbook_run(name, dtype)
    fast = run(CONFIGS[name], dtype, True, aggregated, weights, grads)
    for w, w0 in zip(slow, weights):
        assert not np.allclose(w, w0), 'the weights did not move: the comparison would be empty'
    for f, s in zip(fast, slow):
        assert f.dtype == np.dtype(dtype)
        np.testing.assert_allclose(f, s, **FUSED_TOL[dtype])


# More than 3 of the kernel's 2^18-element pieces, so that every thread gets some.
LARGE = [(3, 4, 5), (800_003,), (7,)]


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.slow
def test_fused_matches_textbook_on_several_threads(name, variant, rng, monkeypatch):
    """As above with the kernel's calls shared by three threads, whatever their size
    (two threads: the fork and concurrency tests below)."""
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)
    monkeypatch.setattr(kernel, 'THREADS', 3)
    weights, grads = inputs(rng, 'float32', LARGE)
    fast = run(CONFIGS[name], 'float32', True, True, weights, grads)
    slow = run(CONFIGS[name], 'float32', False, True, weights, grads)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, **FUSED_TOL['float32'])


# --- which route each parameter takes ---------------------------------------------------

def layout(dense=True, dtype=np.float32, device='cpu', grad_in_host_memory=True):
    """The layout of a 12-element weight and its gradient, anywhere (a GPU too)."""
    return dispatch.Layout(dense=dense, dtype=np.dtype(dtype), device_type=device,
                           shape=(12,), grad_in_host_memory=grad_in_host_memory)


def options(fused=True, amsgrad=False, decoupled_wd=False, epsilon_mode='outside', yogi=False):
    return types.SimpleNamespace(fused=fused, amsgrad=amsgrad, decoupled_wd=decoupled_wd,
                                 epsilon_mode=epsilon_mode, yogi=yogi)


ROUTES = [  # (layout, options, expected route)
    (layout(), options(), 'kernel'),
    (layout(dtype=np.float64), options(amsgrad=True), 'kernel'),
    (layout(), options(epsilon_mode='inside'), 'kernel'),
    (layout(), options(fused=False), 'textbook'),
    (layout(dense=False), options(), 'kernel'),
    (layout(dtype=np.float16), options(), 'kernel'),
    (layout(dtype=np.int32), options(), 'textbook'),
    (layout(device='gpu'), options(), 'operator'),
    (layout(device='gpu'), options(epsilon_mode='hat'), 'operator'),
    (layout(device='gpu'), options(epsilon_mode='inside'), 'textbook'),
    (layout(device='gpu'), options(amsgrad=True), 'textbook'),
    (layout(device='gpu'), options(yogi=True), 'textbook'),
    (layout(), options(yogi=True), 'kernel'),
    (layout(device='gpu'), options(decoupled_wd=True), 'textbook'),
    (layout(device='gpu'), options(fused=False), 'textbook'),
    (layout(device='gpu', dense=False), options(), 'textbook'),
    (layout(device='gpu', dtype=np.float16), options(), 'textbook'),
    # the kernel reads the gradient's memory too: elsewhere, MXNet's own refusal
    (layout(grad_in_host_memory=False), options(), 'operator'),
    (layout(grad_in_host_memory=False), options(amsgrad=True), 'textbook'),
]

# Where a CPU parameter goes when the kernel was not built: where a GPU one goes.
WITHOUT_KERNEL = [  # (layout, options, expected route)
    (layout(), options(), 'operator'),
    (layout(dtype=np.float64), options(epsilon_mode='hat'), 'operator'),
    (layout(), options(epsilon_mode='inside'), 'textbook'),
    (layout(), options(amsgrad=True), 'textbook'),
    (layout(), options(decoupled_wd=True), 'textbook'),
    (layout(), options(fused=False), 'textbook'),
    (layout(dtype=np.float16), options(), 'textbook'),
    (layout(dense=False), options(), 'textbook'),
]


@pytest.mark.parametrize('where, opts, expected', ROUTES)
def test_route(where, opts, expected):
    assert dispatch.route(where, opts) == expected


@pytest.mark.parametrize('where, opts, expected', WITHOUT_KERNEL)
def test_route_without_the_kernel(where, opts, expected, monkeypatch):
    monkeypatch.setattr(kernel, 'LIBRARY', None)
    assert dispatch.route(where, opts) == expected


def test_layouts_are_read_from_the_arrays_and_kept_while_they_are_the_same():
    layouts = dispatch.CheckedLayouts(lambda index: f'p{index}')
    weight, grad = nd.ones((4, 3), dtype='float64'), nd.ones((4, 3), dtype='float64')
    first = layouts(0, weight, grad)
    assert first == dispatch.Layout(dense=True, dtype=np.dtype('float64'), device_type='cpu',
                                    shape=(4, 3))
    assert layouts(0, weight, grad) is first
    sparse = nd.sparse.row_sparse_array((np.ones((1, 3)), [2]), shape=(4, 3), dtype='float64')
    assert layouts(0, weight, sparse) == first._replace(row_sparse_grad=True)  # read afresh
    with pytest.raises(ValueError) as error:
        layouts(1, nd.ones((4, 3), dtype='float32'), nd.ones((3,), dtype='float16'))
    assert str(error.value) == ("myadam: the gradient of p1 has shape (3,) and dtype float16, "
                                "its weight (4, 3) and float32; nothing was updated")


def _state(shape=(4, 3), dtype='float32', count=2, **kwargs):
    return tuple(nd.zeros(shape, dtype=dtype, **kwargs) for _ in range(count))


# (weight dtype, multi_precision, state, what the error says): states the kernel would read
# or write past their end, or as another dtype, refused before anything changes
MISFITS = [
    ('float32', False, lambda: _state(shape=(3,)), 'its m has shape (3,)'),
    ('float32', False, lambda: _state(shape=(4, 2)), 'its m has shape (4, 2)'),
    ('float32', False, lambda: (nd.zeros((4, 3)), nd.zeros((12,))), 'its v has shape (12,)'),
    ('float32', False, lambda: _state(dtype='float16'), 'its m is float16'),
    ('float64', False, lambda: _state(dtype='float32'), 'its m is float32'),
    ('float32', False, lambda: _state(count=1), 'it holds 1 moments, not (m, v[, vmax], [t])'),
    ('float32', False, lambda: _state(count=4), 'it holds 4 moments, not (m, v[, vmax], [t])'),
    ('float32', False, lambda: nd.zeros((4, 3)), 'it is NDArray, not (m, v[, vmax], [t])'),
    ('float32', False, lambda: _state(count=1) + ([2],),
     'it holds 1 moments, not (m, v[, vmax], [t])'),
    # the step count t, a one-item list at the end (it counts in place)
    ('float32', False, lambda: _state() + ([-1],),
     'Invalid step count: -1 (expected an int >= 0)'),
    ('float32', False, lambda: _state() + (['3'],),
     "Invalid step count: '3' (expected an int >= 0)"),
    ('float32', False, lambda: _state(count=3) + ([1.5],),
     'Invalid step count: 1.5 (expected an int >= 0)'),
    ('float32', False, lambda: _state() + ([1, 2],),
     'Invalid step count: [1, 2] (expected a list holding one step count)'),
    ('float16', True, lambda: (nd.zeros((4, 3)), _state() + ([True],)),
     'Invalid step count: True (expected an int >= 0)'),
    ('float32', False, lambda: (nd.zeros((4, 3)), np.zeros((4, 3), np.float32)),
     'its v is a ndarray, not an NDArray'),
    ('float32', False, lambda: (nd.zeros((4, 3)), nd.zeros((4, 3)).tostype('row_sparse')),
     'its v is row_sparse'),
    ('float16', True, lambda: _state(dtype='float16'),
     'it is (NDArray, NDArray), not (master copy, (m, v[, vmax], [t]))'),
    ('float16', True, lambda: (nd.zeros((4, 3), dtype='float16'), _state()),
     'its master copy is float16'),
    ('float16', True, lambda: (nd.zeros((4, 3)), _state(dtype='float16')), 'its m is float16'),
    ('float16', True, lambda: (nd.zeros((2, 3)), _state()), 'its master copy has shape (2, 3)'),
    ('float16', False, lambda: _state(), 'its m is float32'),
    ('float32', False, lambda: _state(ctx=mx.cpu(1)), 'its m is on cpu(1)'),
]


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')  # MXNet's advice
@pytest.mark.parametrize('dtype, multi_precision, make, says', MISFITS,
                         ids=[says for *_, says in MISFITS])
def test_a_state_that_does_not_fit_its_weight_is_refused(dtype, multi_precision, make, says):
    """The kernel reads and writes the states as raw memory of the weight's size and
    dtype: a state of another shape, dtype, storage or structure is refused by name
    (MXNet's operators refuse such states too), before anything changes."""
    from adam_plugin import MyAdam
    opt = MyAdam(multi_precision=multi_precision, param_idx2name={0: 'w'})
    weight, grad = nd.ones((4, 3), dtype=dtype), nd.ones((4, 3), dtype=dtype)
    state = make()
    with pytest.raises(ValueError) as error:
        opt.update_multi_precision(0, weight, grad, state)
    assert str(error.value).startswith("myadam: the state of parameter 'w' does not fit its "
                                       "weight (shape (4, 3), ")
    assert " on cpu(0)): " in str(error.value)
    assert str(error.value).endswith(f"{says}; nothing was updated")
    np.testing.assert_array_equal(weight.asnumpy(), 1)
    assert opt._index_update_count == {} and opt.num_update == 0
    good = opt.create_state_multi_precision(0, weight)
    opt.update_multi_precision(0, weight, grad, good)  # the same optimizer, a fitting state
    assert (weight.asnumpy() < 1).all()


def test_layouts_and_states_are_read_once_while_they_come_back(monkeypatch):
    """Reading a layout and checking a state are calls into MXNet (one per property); a
    Trainer hands the same weight, gradient and state objects at every step, one set per
    device: each is read once."""
    from adam_plugin import MyAdam
    opt = MyAdam()
    devices = [(nd.ones((4, 3)), nd.ones((4, 3))) for _ in range(2)]
    states = [opt.create_state(0, weight) for weight, _ in devices]
    checked = []
    original = dispatch._misfit
    monkeypatch.setattr(dispatch, '_misfit', lambda *args: checked.append(args[0]) or original(*args))
    for _ in range(3):
        for (weight, grad), state in zip(devices, states):
            opt.update(0, weight, grad, state)
    assert [id(s) for s in checked] == [id(s) for s in states]
    weight, grad = devices[0]
    for _ in range(3):  # as the KVStore's callback: new objects for the same arrays
        opt.update(0, weight.reshape((4, 3)), grad.reshape((4, 3)), states[0])
    assert len(checked) == 2
    elsewhere = nd.ones((4, 3), ctx=mx.cpu(1))  # the same layout on another context
    with pytest.raises(ValueError, match=r"its m is on cpu\(0\)"):
        opt.update(0, elsewhere, elsewhere, states[0])
    assert len(checked) == 3


@pytest.fixture
def taken(monkeypatch):
    """Counts the parameters each route updates during the test."""
    counts = {'kernel': 0, 'operator': 0, 'textbook': 0}

    def counting(name, original, size_of):
        def wrapper(*args, **kwargs):
            counts[name] += size_of(*args)
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(kernel.HandleTable, 'adam_steps', counting(
        'kernel', kernel.HandleTable.adam_steps,
        lambda self, steps: sum(s is not None for s in steps)))
    monkeypatch.setattr(dispatch, 'operator_step', counting(
        'operator', dispatch.operator_step, lambda *args: 1))
    monkeypatch.setattr(dispatch, 'textbook_step', counting(
        'textbook', dispatch.textbook_step, lambda *args: 1))
    return counts


def _dense(dtype):
    return nd.ones((4, 3), dtype=dtype), nd.ones((4, 3), dtype=dtype)


def _row_sparse():
    grad = nd.sparse.row_sparse_array((np.ones((1, 3), np.float32), [2]), shape=(4, 3))
    return nd.ones((4, 3)), grad


def _row_sparse_weight():
    """A row_sparse weight storing every row, as a Trainer's SparseEmbedding weight."""
    return nd.ones((4, 3)).tostype('row_sparse'), _row_sparse()[1]


def _row_sparse_weight_missing_rows():
    """A row_sparse weight without row 1: the kernel cannot see it as a dense weight."""
    weight = nd.sparse.row_sparse_array((np.ones((3, 3), np.float32), [0, 2, 3]), shape=(4, 3))
    return weight, _row_sparse()[1]


PATHS = [  # (MyAdam kwargs, weight and grad, expected counts)
    (dict(), lambda: _dense('float32'), dict(kernel=1, operator=0, textbook=0)),
    (dict(), lambda: _dense('float64'), dict(kernel=1, operator=0, textbook=0)),
    (dict(amsgrad=True, decoupled_wd=True, wd=0.1, epsilon_mode='inside', clip_gradient=1.0),
     lambda: _dense('float32'), dict(kernel=1, operator=0, textbook=0)),
    (dict(fused=False), lambda: _dense('float32'), dict(kernel=0, operator=0, textbook=1)),
    (dict(), _row_sparse, dict(kernel=1, operator=0, textbook=0)),
    (dict(lazy_update=False), _row_sparse, dict(kernel=1, operator=0, textbook=0)),
    (dict(fused=False), _row_sparse, dict(kernel=0, operator=0, textbook=1)),
    (dict(multi_precision=True), lambda: _dense('float16'), dict(kernel=1, operator=0, textbook=0)),
    (dict(), lambda: _dense('float16'), dict(kernel=1, operator=0, textbook=0)),
    (dict(), _row_sparse_weight, dict(kernel=1, operator=0, textbook=0)),
    (dict(), _row_sparse_weight_missing_rows, dict(kernel=0, operator=0, textbook=1)),
]


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')  # MXNet's advice
@pytest.mark.parametrize('kwargs, make, expected', PATHS)
def test_dispatch_takes_the_route(kwargs, make, expected, taken):
    opt = MyAdam(learning_rate=0.1, **kwargs)
    weight, grad = make()
    before = weight.asnumpy().copy()
    opt.update_multi_precision(0, weight, grad, opt.create_state_multi_precision(0, weight))
    assert taken == expected
    assert not np.array_equal(weight.asnumpy(), before)


def test_a_list_mixing_routes_takes_each(taken):
    opt = MyAdam(learning_rate=0.1)
    pairs = [_dense('float32'), _row_sparse_weight_missing_rows(), _row_sparse(),
             _dense('float64'), _dense('float16')]
    weights, grads = [p[0] for p in pairs], [p[1] for p in pairs]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    opt.update(list(range(5)), weights, grads, states)
    assert taken == dict(kernel=4, operator=0, textbook=1)


# --- MXNet's adam_update with the remap (the route for GPUs), exercised on CPU -------------

OPERATOR_CONFIGS = [name for name, config in CONFIGS.items()
                    if dispatch.route(layout(device='gpu'),
                                      MyAdam(**optimizer_kwargs(config))) == 'operator']


def test_operator_configs_are_not_empty():
    assert {'defaults', 'hat', 'all_base_options'} <= set(OPERATOR_CONFIGS)


def optimizer_step(opt, index):
    """The Step of ``opt``'s next update of ``index``, once counted: its count, the
    learning rate and weight decay MXNet's ``Optimizer`` gives it, ``opt``'s options."""
    return textbook.Step(opt._index_update_count[index], opt._get_lr(index), opt._get_wd(index),
                         *(getattr(opt, field) for field in textbook.Step._fields[3:]))


@pytest.mark.parametrize('name', OPERATOR_CONFIGS)
def test_operator_step_matches_textbook(name, rng):
    opt = MyAdam(**optimizer_kwargs(CONFIGS[name]))
    weights, grads = inputs(rng, 'float32', SHAPES[:3])
    steps = []
    for _ in grads:  # the optimizer's own bookkeeping, once, shared by both runs
        opt._update_count(0)
        steps.append(optimizer_step(opt, 0))
    results = []
    for step_fn in (dispatch.operator_step, textbook.adam_step):
        ws = [nd.array(w) for w in weights]
        states = [(nd.zeros(w.shape), nd.zeros(w.shape)) for w in ws]
        for step, step_grads in zip(steps, grads):
            for w, g, s in zip(ws, step_grads, states):
                step_fn(w, nd.array(g), s, step)
        results.append([w.asnumpy() for w in ws])
    for op, ref, w0 in zip(*results, weights):
        assert not np.allclose(ref, w0)
        np.testing.assert_allclose(op, ref, rtol=1e-5, atol=1e-6)


# --- non-finite gradients through the kernel's check ----------------------------------------

BAD_VALUES = [np.nan, np.inf, -np.inf]
BAD_SIZE = 800_003  # 4 of the kernel's 2^18-element pieces
BAD_SPOTS = [0, 400_000, BAD_SIZE - 1]  # first element, a middle piece, the last element


@pytest.mark.parametrize('threads', [1, 3])
@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('spot', BAD_SPOTS)
@pytest.mark.parametrize('bad', BAD_VALUES)
def test_nonfinite_gradient_is_skipped_untouched(bad, spot, dtype, threads, variant,
                                                monkeypatch):
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)  # the check shared by `threads` threads
    monkeypatch.setattr(kernel, 'THREADS', threads)
    opt = MyAdam(learning_rate=0.1)
    weights = [nd.ones((BAD_SIZE,), dtype=dtype), nd.ones((5,), dtype=dtype)]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    grad = np.ones(BAD_SIZE, dtype)
    grad[spot] = bad
    with pytest.warns(RuntimeWarning, match='index 0'):
        opt.update([0, 1], weights, [nd.array(grad, dtype=dtype), nd.ones((5,), dtype=dtype)],
                   states)
    assert opt.num_skipped == 1
    assert 0 not in opt._index_update_count and opt._index_update_count[1] == 1
    np.testing.assert_array_equal(weights[0].asnumpy(), np.ones(BAD_SIZE))
    *moments, count = states[0]
    for buf in moments:
        np.testing.assert_array_equal(buf.asnumpy(), np.zeros(BAD_SIZE))
    assert count == [0] and states[1][-1] == [1]  # (m, v, [t]): the skip is not counted
    assert (weights[1].asnumpy() < 1).all()  # the finite one stepped


def test_nonfinite_raise_modifies_nothing():
    opt = MyAdam(learning_rate=0.1, nonfinite='raise')
    weights = [nd.ones((7,)), nd.ones((100_003,))]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    grad = np.ones(100_003, np.float32)
    grad[-1] = np.inf
    with pytest.raises(FloatingPointError, match='index 1'):
        opt.update([0, 1], weights, [nd.ones((7,)), nd.array(grad)], states)
    for w, s in zip(weights, states):
        np.testing.assert_array_equal(w.asnumpy(), np.ones(w.shape))
        assert all(not b.asnumpy().any() for b in s[:-1]) and s[-1] == [0]  # (m, v, [t])
    assert not opt._index_update_count


def test_huge_finite_values_are_finite():
    """The gradient check takes 3e38 and 1e-45 as finite: the step is taken. The second
    moment of 3e38 overflows (1e-3 * 3e38 * 3e38 > 3.4e38), which is reported as that."""
    opt = MyAdam(learning_rate=0.1)
    weight = nd.ones((3,))
    grad = nd.array([3e38, -3e38, 1e-45])
    with pytest.warns(RuntimeWarning, match='second moment of parameter index 0 overflowed'):
        opt.update(0, weight, grad, opt.create_state(0, weight))
    assert opt._index_update_count == {0: 1} and np.isfinite(weight.asnumpy()).all()


# --- MXNet's engine: pending operations around the step --------------------------------------

def test_pending_writer_and_reader_around_the_step(rng):
    """A gradient still being computed, and a pending read of the weight, are both waited for."""
    x = nd.array(rng.normal(size=(600, 600)).astype(np.float32))
    weight = nd.array(rng.normal(size=(600 * 600,)).astype(np.float32))
    w0 = weight.asnumpy()
    opt, ref_opt = MyAdam(learning_rate=0.1), MyAdam(learning_rate=0.1, fused=False)
    state, ref_state = opt.create_state(0, weight), ref_opt.create_state(0, weight)
    nd.waitall()
    heavy = nd.dot(nd.dot(x, x), x)          # slow, so what follows is still queued
    grad = (heavy / 1e4).reshape((-1,))       # a writer the step must wait for
    snapshot = weight + heavy[0, 0] * 0       # a reader of the old weight, queued behind it
    opt.update(0, weight, grad, state)
    np.testing.assert_array_equal(snapshot.asnumpy(), w0)
    ref_weight = nd.array(w0)
    ref_opt.update(0, ref_weight, grad, ref_state)
    np.testing.assert_allclose(weight.asnumpy(), ref_weight.asnumpy(), **FUSED_TOL['float32'])


# --- packaging --------------------------------------------------------------------------------

def test_the_kernel_was_built():
    """The tests run with the compiled kernel, or the fused tests above test nothing new."""
    assert kernel.LIBRARY is not None, (
        'adam_plugin/_kernel.cpp was not built: setup.py needs a C++ compiler (g++)')


def test_a_missing_kernel_warns_and_is_none(tmp_path):
    with pytest.warns(RuntimeWarning) as warned:
        assert kernel.load(str(tmp_path / 'libadam_kernel.so')) is None
    assert str(warned[0].message) == (
        "adam_plugin: the compiled kernel adam_plugin/_kernel.cpp was not built (it needs a "
        "C++ compiler when the package is installed); CPU parameters take MXNet's adam_update "
        "where it is exact, else the slower textbook path")


def test_a_kernel_built_with_other_columns_warns_and_is_none(monkeypatch):
    """The constants' columns come by name: a library whose ``enum Column`` is not the
    Python side's (here: two columns swapped on the Python side) is not used."""
    columns = list(kernel.COLUMNS)
    order = list(columns)
    i, j = order.index('BETA1'), order.index('BETA2')
    order[i], order[j] = order[j], order[i]
    monkeypatch.setattr(kernel, 'COLUMNS', {name: kernel.COLUMNS[name] for name in order})
    with pytest.warns(RuntimeWarning) as warned:
        assert kernel.load() is None
    assert str(warned[0].message) == (
        f"adam_plugin: the compiled kernel {kernel.PATH} was built from another "
        f"adam_plugin/_kernel.cpp: its constants' columns ({' '.join(columns)}) are not this "
        f"package's ({' '.join(kernel.COLUMNS)}); reinstalling the package rebuilds it. CPU "
        "parameters take MXNet's adam_update where it is exact, else the slower textbook path")


def test_a_library_without_columns_warns_and_is_none():
    """A library that does not give its columns (built from an older _kernel.cpp; here
    MXNet's own) is not used."""
    with pytest.warns(RuntimeWarning, match=r"its constants' columns \(not given\) are not "
                                            r"this package's \(RESCALE WD CLIP "):
        assert kernel.load(_LIB._name) is None


def test_the_kernel_warning_names_the_users_line(tmp_path):
    with pytest.warns(RuntimeWarning, match='_kernel.cpp was not built') as warned:
        kernel.load(str(tmp_path / 'libadam_kernel.so'))
    assert warned[0].filename == __file__


IMPORT_WITHOUT_KERNEL = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import adam_plugin
print(*[f'{w.filename}:{w.lineno}' for w in caught if 'was not built' in str(w.message)])
"""


@pytest.mark.slow  # a Python that imports MXNet
def test_without_the_kernel_the_import_warns_at_the_users_import(tmp_path):
    """A copy of the package without its kernel: ``import adam_plugin`` warns once, and the
    warning names the user's import line (past the import machinery's frames)."""
    shutil.copytree(os.path.dirname(adam_plugin.__file__), tmp_path / 'adam_plugin',
                    ignore=shutil.ignore_patterns('*.so', '__pycache__'))
    script = tmp_path / 'user.py'
    script.write_text(IMPORT_WITHOUT_KERNEL)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f'{script}:5']


def _cpu_flags():
    with open('/proc/cpuinfo') as f:
        return next(line for line in f if line.startswith('flags')).split(':')[1].split()


def test_variants_follow_the_cpu():
    """The portable build's variants, and which of them run here, by the kernel's own
    cpuid check against Linux's (/proc/cpuinfo); the vector variants need F16C too."""
    assert kernel.variants() == ['avx512f', 'avx2', 'baseline'], 'not the portable build'
    flags = _cpu_flags()
    expected = [v for v in ('avx512f', 'avx2') if v in flags and 'f16c' in flags] + ['baseline']
    assert VARIANTS == expected
    assert kernel.variant() == expected[0]  # the widest, chosen when the library was loaded


def test_use_variant_refuses_what_it_cannot_use():
    before = kernel.variant()
    for name in kernel.variants():
        if name not in VARIANTS:
            with pytest.raises(ValueError, match='this CPU cannot run'):
                kernel.use_variant(name)
    with pytest.raises(ValueError, match="name='sse9'"):
        kernel.use_variant('sse9')
    assert kernel.variant() == before


def test_the_old_module_name_is_a_deprecated_alias(monkeypatch):
    """adam_plugin.fused, the kernel's module before it was adam_plugin.kernel (``fused`` is
    also an option), still gives its public functions, and says it is deprecated."""
    monkeypatch.delitem(sys.modules, 'adam_plugin.fused', raising=False)
    names = {}
    with pytest.warns(DeprecationWarning, match='adam_plugin.fused is deprecated: import '
                                                'adam_plugin.kernel') as warned:
        exec(compile('import adam_plugin.fused as fused', 'users_script.py', 'exec'), names)
    assert warned[0].filename == 'users_script.py'  # the line that imported it
    fused = names['fused']
    assert fused.__all__ == ['variants', 'variant', 'use_variant']
    assert (fused.variants(), fused.variant()) == (kernel.variants(), kernel.variant())
    assert fused.use_variant(kernel.variant()) == kernel.variant()


VARIANTS_WITHOUT_KERNEL = """
import warnings
warnings.simplefilter('ignore')  # the import's warning that the kernel was not built
from adam_plugin import kernel
print(kernel.__file__, kernel.variants(), kernel.variant())
kernel.use_variant('baseline')
"""


@pytest.mark.slow  # a Python that imports MXNet
def test_without_the_kernel_the_variant_functions_say_there_is_none(tmp_path):
    """A copy of the package without its kernel, as pip installs it without a compiler:
    no variants, none in use, and use_variant refuses, saying why."""
    shutil.copytree(os.path.dirname(adam_plugin.__file__), tmp_path / 'adam_plugin',
                    ignore=shutil.ignore_patterns('*.so', '__pycache__'))
    done = subprocess.run([sys.executable, '-c', VARIANTS_WITHOUT_KERNEL], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert done.stdout.split() == [str(tmp_path / 'adam_plugin' / 'kernel.py'), '[]', 'None']
    assert done.stderr.strip().splitlines()[-1] == (
        "ValueError: use_variant: name='baseline': the compiled kernel was not built (it needs "
        "a C++ compiler when the package is installed), so it has no variants")


def test_without_the_kernel_cpu_parameters_step_by_the_operator(taken, monkeypatch):
    monkeypatch.setattr(kernel, 'LIBRARY', None)
    opt = MyAdam(learning_rate=0.1)
    weights = [nd.ones((4, 3)), nd.ones((5,))]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    opt.update([0, 1], weights, [nd.ones((4, 3)), nd.ones((5,))], states)
    assert taken == dict(kernel=0, operator=2, textbook=0)
    for w in weights:  # the first step of Adam moves every weight by lr against the gradient
        np.testing.assert_allclose(w.asnumpy(), 0.9, rtol=1e-6)


def _threaded_update(weight, grad):
    """One update of ``weight`` by a new MyAdam (with the caller's settings of fused)."""
    opt = MyAdam(learning_rate=0.1)
    opt.update(0, weight, grad, opt.create_state(0, weight))
    return weight.asnumpy()


def test_a_forked_child_steps_on_several_threads(monkeypatch):
    """The kernel's thread pool, started in the parent, is started afresh in a forked child."""
    import multiprocessing
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)
    monkeypatch.setattr(kernel, 'THREADS', 2)
    shape = (800_003,)
    np.testing.assert_allclose(_threaded_update(nd.ones(shape), nd.ones(shape)), 0.9, rtol=1e-6)
    context = multiprocessing.get_context('fork')
    with context.Pool(1) as pool:
        result = pool.apply_async(_threaded_update, (nd.ones(shape), nd.ones(shape)))
        np.testing.assert_allclose(result.get(timeout=60), 0.9, rtol=1e-6)


@pytest.mark.slow
def test_concurrent_callers_each_get_their_step(rng, monkeypatch):
    """Python threads calling the kernel at once (it releases the GIL) share its threads."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)
    monkeypatch.setattr(kernel, 'THREADS', 2)
    weights, grads = inputs(rng, 'float32', LARGE)
    slow = run(CONFIGS['defaults'], 'float32', False, True, weights, grads)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run(CONFIGS['defaults'], 'float32', True, True,
                                              weights, grads), range(4)))
    for fast in results:
        for f, s in zip(fast, slow):
            np.testing.assert_allclose(f, s, **FUSED_TOL['float32'])


THREAD_SETTINGS = [  # (OMP_NUM_THREADS, the kernel's threads, or words of the error)
    ('1', 1),
    ('3', 3),
]


@pytest.mark.parametrize('setting, expected', THREAD_SETTINGS)
@pytest.mark.slow
def test_threads_follow_omp_num_threads(setting, expected):
    result = subprocess.run(
        [sys.executable, '-c', 'from adam_plugin import kernel; print(kernel.THREADS)'],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=setting))
    if isinstance(expected, int):
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) == expected
    else:
        assert result.returncode != 0 and expected in result.stderr


SETTINGS_IN_PROCESS = THREAD_SETTINGS + [
    (None, 3), ('', 3), (' 2 ', 2), ('+2', 2),
    ('2.5', "OMP_NUM_THREADS='2.5' is not an integer"),  # import mxnet aborts on it first
    ('two', "OMP_NUM_THREADS='two' is not an integer"),
    ('1,2', "OMP_NUM_THREADS='1,2' is not an integer"),
    ('1_0', "OMP_NUM_THREADS='1_0' is not an integer")]
# Integers below 1: OpenMP (libgomp) ignores them, and MXNet runs with its default.
IGNORED_SETTINGS = ['0', '-1', ' -4 ']


# ids name the setting only (make mutants deselects tests by words such as omp_num_threads)
@pytest.mark.parametrize('setting, expected', SETTINGS_IN_PROCESS,
                         ids=[repr(setting) for setting, _ in SETTINGS_IN_PROCESS])
def test_what_threads_makes_of_the_setting(setting, expected, monkeypatch):
    """kernel._threads(), which the import ran before any test could change its input, called
    here: OMP_NUM_THREADS, else (unset or blank) the CPUs this process may run on."""
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 4, 5} if pid == 0 else None)
    monkeypatch.setattr(os, 'cpu_count', lambda: 7)
    if setting is None:
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    else:
        monkeypatch.setenv('OMP_NUM_THREADS', setting)
    if isinstance(expected, int):
        assert kernel._threads() == expected
    else:
        with pytest.raises(ValueError) as error:
            kernel._threads()
        assert str(error.value) == f'adam_plugin: {expected}'


@pytest.mark.parametrize('setting', IGNORED_SETTINGS)
def test_a_setting_below_one_warns_and_takes_the_default(setting, monkeypatch):
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 4, 5} if pid == 0 else None)
    monkeypatch.setenv('OMP_NUM_THREADS', setting)
    with pytest.warns(RuntimeWarning, match=rf"OMP_NUM_THREADS={setting.strip()!r} is not a "
                                            r"positive integer.*3 threads"):
        assert kernel._threads() == 3


@pytest.mark.slow
def test_import_runs_where_mxnet_runs_with_omp_num_threads_0():
    """MXNet itself runs with OMP_NUM_THREADS=0 (libgomp ignores it): so does the import."""
    result = subprocess.run(
        [sys.executable, '-c', 'import mxnet as mx; print(mx.nd.ones((2,)).sum().asscalar()); '
         'from adam_plugin import kernel; print(kernel.THREADS)'],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='0'))
    assert result.returncode == 0, result.stderr
    total, threads = result.stdout.split()
    assert float(total) == 2.0 and int(threads) == len(os.sched_getaffinity(0))
    assert "OMP_NUM_THREADS='0' is not a positive integer" in result.stderr


def test_without_an_affinity_call_threads_counts_the_cpus(monkeypatch):
    monkeypatch.delattr(os, 'sched_getaffinity')
    monkeypatch.setattr(os, 'cpu_count', lambda: 7)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    assert kernel._threads() == 7


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
def test_a_fresh_load_of_the_kernel_steps_as_the_textbook(dtype, monkeypatch, rng):
    """kernel.load(), which the import ran before any test could watch it, run here: the
    library it returns answers for its variants and steps as the textbook route does."""
    library = kernel.load()
    monkeypatch.setattr(kernel, 'LIBRARY', library)
    assert (kernel.variants(), kernel.variant()) == (['avx512f', 'avx2', 'baseline'], VARIANTS[0])
    assert [kernel.runs_here(v) for v in kernel.variants()] == [
        v in VARIANTS for v in kernel.variants()]
    weights, grads = inputs(rng, dtype, SHAPES[:3])
    calls = record_calls(monkeypatch, library)
    fast = run(CONFIGS['everything'], dtype, True, True, weights, grads)
    # per step: the gradients' check, then the update (which checks the second moments
    # it writes in the same pass)
    assert [name for name, _ in calls] == [f'finite_{dtype}', f'adam_{dtype}'] * STEPS
    slow = run(CONFIGS['everything'], dtype, False, True, weights, grads)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, **FUSED_TOL[dtype])
    # Typed entry points (after the steps above, which use what load() set): names only
    # as bytes (untyped, ctypes would pass a str as wchar_t*), and MXNet's accessor as a
    # 64-bit address even from a Python int (untyped, ctypes would pass a 32-bit int).
    for entry_point in (library.use_variant, library.variant_runs_here):
        with pytest.raises(ctypes.ArgumentError):
            entry_point(VARIANTS[0])
    library.use_mxnet(*(ctypes.cast(getattr(_LIB, f), ctypes.c_void_p).value
                        for f in mxnet_internals.KERNEL_FUNCTIONS))
    again = run(CONFIGS['everything'], dtype, True, True, weights, grads)
    for a, f in zip(again, fast):
        np.testing.assert_array_equal(a, f)


def test_amsgrad_without_its_third_buffer_is_refused_before_the_kernel_reads_it():
    """States made without AMSGrad hold no vmax for the kernel to read."""
    opt = MyAdam(learning_rate=0.1)
    weight = nd.ones((3,))
    state = opt.create_state(0, weight)
    opt.amsgrad = True
    with pytest.raises(ValueError, match=r'^myadam: amsgrad needs \(m, v, vmax\) states$'):
        opt.update(0, weight, nd.ones((3,)), state)
    np.testing.assert_array_equal(weight.asnumpy(), 1.0)
    other = nd.ones((2,))
    mixed = [state, opt.create_state(1, other)]  # made after the switch: with vmax
    with pytest.raises(ValueError) as error:
        opt.update([0, 1], [weight, other], [nd.ones((3,)), nd.ones((2,))], mixed)
    assert str(error.value) == (
        "myadam: states of one call must all be (m, v) or all (m, v, vmax)")
    for w in (weight, other):
        np.testing.assert_array_equal(w.asnumpy(), 1.0)


def test_fused_flag_survives_pickle():
    for flag in (True, False):
        opt = pickle.loads(pickle.dumps(MyAdam(fused=flag)))
        assert opt.fused is flag


def test_trainer_steps_through_the_kernel_in_one_list(taken):
    params = []
    for i, shape in enumerate(SHAPES):
        p = mx.gluon.Parameter(f'p{i}', shape=shape)
        p.initialize()
        p.grad()[:] = 1.0
        p.data()._fresh_grad = True  # as backward() would mark it
        params.append(p)
    trainer = mx.gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})
    trainer.step(1)
    assert taken == dict(kernel=len(SHAPES), operator=0, textbook=0)
