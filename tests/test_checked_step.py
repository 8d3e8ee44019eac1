"""nonfinite='skip' on the kernel: each gradient is checked in the step's own call.

The guarantee, whatever the order of the work inside the call: a parameter whose
gradient holds a NaN or an Inf (anywhere: first, last, in any piece a thread takes) is
left exactly as it was, its step count too, and counted in ``num_skipped``; every other
parameter of the call steps exactly as it does when every gradient is checked first
(the two-pass order that nonfinite='raise' keeps), and float32 ones as the textbook
route. Where skipping one parameter could change another's step (its ``max_skips``-th
bad update raises; under a scheduler, unequal counts), the check comes first.
"""
import functools
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import MyAdam, kernel
from adam_plugin.counts import BadUpdates

CHUNK = 1 << 18  # the kernel's piece of work (CHUNK in _kernel.cpp)
# Sizes of one call: tiny, whole pieces, one piece short, two pieces, four pieces
# (3 * CHUNK + 17): 1.3M elements, over kernel.PARALLEL_MIN, so the call is shared by
# threads and the large parameters are cut into pieces.
SIZES = [3, 1000, CHUNK - 1, CHUNK + 5, 3 * CHUNK + 17]
STORAGES = {  # name -> (dtype, multi_precision)
    'float32': ('float32', False), 'float64': ('float64', False),
    'float16': ('float16', False), 'float16_master': ('float16', True)}


def run(storage, bad, steps=2, two_pass=False, fused=True, sizes=SIZES, monkeypatch=None):
    """``steps`` update calls of one list of parameters of ``sizes``; at the last one,
    ``bad`` (parameter -> [(position, value)]) is written into the gradients. Returns
    the weights and states, as NumPy arrays, the counts and ``num_skipped``."""
    dtype, multi_precision = STORAGES[storage]
    data = _data(tuple(sizes), steps)
    opt = MyAdam(learning_rate=0.01, multi_precision=multi_precision, fused=fused, wd=0.01)
    weights = [nd.array(w, dtype=dtype) for w in data[0]]
    grads = [nd.zeros(n, dtype=dtype) for n in sizes]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # float16 without multi_precision
        states = [opt.create_state_multi_precision(i, w) for i, w in enumerate(weights)]
    if two_pass:
        monkeypatch.setattr(BadUpdates, 'skips_alone', lambda self, indices: False)
    for step in range(steps):
        for i, g in enumerate(grads):
            values = data[1 + step][i]
            if step == steps - 1 and i in bad:
                values = values.copy()
                for position, value in bad[i]:
                    values[position] = value
            g[:] = values
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
            opt.update_multi_precision(list(range(len(sizes))), weights, grads, states)
    arrays = [w.asnumpy() for w in weights] + [
        a.asnumpy() for s in states for a in _flat(s) if isinstance(a, nd.NDArray)]
    return arrays, [list(_flat(s)[-1]) for s in states], opt.num_skipped


@functools.lru_cache(maxsize=4)
def _data(sizes, steps):
    """The weights, then the gradients of each step, for parameters of ``sizes``."""
    rng = np.random.default_rng(11)
    return [[rng.normal(size=n).astype(np.float32) for n in sizes] for _ in range(1 + steps)]


def _flat(state):
    return [b for a in state for b in (a if isinstance(a, tuple) else (a,))]


def assert_same(got, want):
    for a, b in zip(got[0], want[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[1:] == want[1:]


# (parameter, position) of a bad value: first, last and middle elements, the last
# element of each piece of the largest parameter, and two parameters at once.
PLACES = [{0: [(0, np.nan)]}, {1: [(999, np.inf)]}, {2: [(CHUNK // 2, -np.inf)]},
          {3: [(CHUNK + 4, np.nan)]}, {4: [(CHUNK - 1, np.nan)]},
          {4: [(3 * CHUNK + 16, np.inf)]}, {1: [(0, np.nan)], 4: [(2 * CHUNK, -np.inf)]}]


# float16 storages (their loops widen and narrow in blocks) take over 2 s on all places;
# the quick tier runs them on smaller sizes, one thread.
@pytest.mark.parametrize('storage, sizes, places', [
    ('float32', SIZES, PLACES), ('float64', SIZES, PLACES),
    pytest.param('float16', SIZES, PLACES, marks=pytest.mark.slow),
    pytest.param('float16_master', SIZES, PLACES, marks=pytest.mark.slow),
    ('float16', SIZES[:2], PLACES[:2]), ('float16_master', SIZES[:2], PLACES[:2])])
def test_a_bad_gradient_anywhere_skips_its_parameter_only(storage, sizes, places, monkeypatch):
    monkeypatch.setattr(kernel, 'THREADS', 2)
    clean = run(storage, {}, sizes=sizes)
    before = run(storage, {}, steps=1, sizes=sizes)  # the skipped parameters as they were
    n = len(sizes)
    for bad in places:
        checked = run(storage, bad, sizes=sizes)
        assert checked[2] == len(bad)  # num_skipped
        assert checked[1] == [[1] if i in bad else [2] for i in range(n)]  # counts
        for i in bad:
            np.testing.assert_array_equal(checked[0][i], before[0][i])
        for i in set(range(n)) - set(bad):
            np.testing.assert_array_equal(checked[0][i], clean[0][i])
        with monkeypatch.context() as m:
            assert_same(checked, run(storage, bad, two_pass=True, monkeypatch=m, sizes=sizes))


def test_float32_steps_the_others_as_the_textbook_route(monkeypatch):
    monkeypatch.setattr(kernel, 'THREADS', 2)
    sizes = [3, 1000, CHUNK + 5]
    bad = {1: [(999, np.nan)]}
    assert_same(run('float32', bad, sizes=sizes), run('float32', bad, sizes=sizes, fused=False))


def test_no_piece_is_stepped_before_every_piece_of_its_parameter_is_checked(monkeypatch):
    """A parameter in two pieces, 2^22 elements with a NaN at the end, then one element,
    that two threads take: the first thread checks the long piece while the second checks
    the short one and takes its step piece, which waits until the long piece is checked,
    so the parameter is left untouched at every call. (A step piece that did not wait
    would step the short piece while the first thread still checks: a race that any call
    where the second thread starts within the long piece's check shows.)"""
    monkeypatch.setattr(kernel, 'THREADS', 2)
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)
    piece = 1 << 22
    opt = MyAdam(learning_rate=0.1, max_skips=None)
    weight, grad = nd.ones((piece + 1,)), nd.ones((piece + 1,))
    grad[piece - 1] = np.nan
    state = opt.create_state(0, weight)
    previous = kernel.LIBRARY.set_piece_size(piece)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skips warn
            for _ in range(300):
                opt.update([0], [weight], [grad], [state])
    finally:
        kernel.LIBRARY.set_piece_size(previous)
    assert (weight.asnumpy() == 1).all() and (state[0].asnumpy() == 0).all()
    assert state[-1] == [0] and opt.num_skipped == 300


@pytest.mark.parametrize('threads', [1, 2])
def test_a_lazy_row_sparse_gradient_is_checked_in_its_stored_rows(threads, monkeypatch):
    """A sparse gradient with an Inf in one stored row, and a dense one, in one call: the
    sparse one's weight and state stay as they were, the dense one steps."""
    monkeypatch.setattr(kernel, 'THREADS', threads)
    opt = MyAdam(learning_rate=0.1)
    weights = [nd.ones((1000, 8)), nd.ones((5,))]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    values = np.ones((3, 8), np.float32)
    values[2, 7] = np.inf
    grads = [nd.sparse.row_sparse_array((nd.array(values), nd.array([5, 70, 999], dtype='int64')),
                                        shape=(1000, 8)),
             nd.full((5,), 0.5)]
    with pytest.warns(RuntimeWarning, match='skipped the update of parameter index 0'):
        opt.update([0, 1], weights, grads, states)
    assert (weights[0].asnumpy() == 1).all() and (states[0][0].asnumpy() == 0).all()
    assert states[0][-1] == [0] and states[1][-1] == [1] and opt.num_skipped == 1
    np.testing.assert_allclose(weights[1].asnumpy(), 0.9, rtol=1e-6)


def test_the_max_skips_th_bad_update_raises_before_anything_changes():
    """A parameter whose gradient stays NaN: its max_skips-th skip in a row raises, and
    the other parameter of the call is not stepped by that call."""
    opt = MyAdam(learning_rate=0.1, max_skips=2)
    weights = [nd.ones((4,)), nd.ones((3,))]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    grads = [nd.full((4,), 0.5), nd.array([1.0, np.nan, 1.0])]
    with pytest.warns(RuntimeWarning):
        opt.update([0, 1], weights, grads, states)
    before = weights[0].asnumpy()
    with pytest.raises(FloatingPointError, match='parameter index 1 has failed 2 times'):
        opt.update([0, 1], weights, grads, states)
    np.testing.assert_array_equal(weights[0].asnumpy(), before)
    assert states[0][-1] == [1] and opt._index_update_count == {0: 1}


def test_under_a_scheduler_a_skip_does_not_move_anothers_rate():
    """'ahead' (2 updates) has a NaN gradient, 'behind' (1 update) a finite one: 'ahead'
    is skipped, so num_update stays 2 and 'behind' takes the rate at 2 (counting 'ahead'
    before its check would give the rate at 3)."""
    schedule = mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=0.1)
    opt = MyAdam(learning_rate=0.1, lr_scheduler=schedule)
    weights = [nd.ones((3,)), nd.ones((3,))]  # ahead, behind
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    g = nd.full((3,), 0.5)
    opt.update([0, 1], weights, [g, g], states)
    opt.update([0], weights[:1], [g], states[:1])
    assert opt.num_update == 2
    before = weights[1].asnumpy()
    with pytest.warns(RuntimeWarning):
        opt.update([0, 1], weights, [nd.array([np.nan, 0, 0]), g], states)
    assert opt.num_update == 2 and states[1][-1] == [2]
    # Adam's second step with a constant gradient moves by lr * (m_hat / (sqrt(v_hat) +
    # eps)) = lr * 1 / (1 + 2e-8) nearly: the rate at num_update 2 is 0.1 * 0.5 ** 1
    lr = schedule(2)
    assert lr != schedule(3)
    np.testing.assert_allclose(before - weights[1].asnumpy(), lr, rtol=1e-6)
