"""What the speed depends on, observed at the compiled kernel's entry points.

Every call into ``kernel.LIBRARY`` is recorded by a wrapper around its functions, and
the threads the kernel starts are counted in ``/proc/self/task`` of a fresh process.
"""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from adam_plugin import MyAdam, kernel
from helpers import record_calls, spy

# The calls of one step's list of one dtype, per nonfinite mode: under 'skip' the kernel
# checks each gradient in its step; under 'raise' every gradient is checked first.
CALLS = {'skip': ['checked_adam_{}'], 'raise': ['finite_{}', 'adam_{}']}


@pytest.fixture
def calls(monkeypatch):
    """The (function name, arguments) of every call into the kernel library, in order."""
    return record_calls(monkeypatch, kernel.LIBRARY)


def _trainer(shapes_and_dtypes, **optimizer_params):
    params = []
    for i, (shape, dtype) in enumerate(shapes_and_dtypes):
        p = gluon.Parameter(f'p{i}', shape=shape, dtype=dtype)
        p.initialize(init=mx.init.One())
        params.append(p)
    return params, gluon.Trainer(params, 'myadam', dict(learning_rate=0.1, **optimizer_params))


def _step(params, trainer):
    for p in params:
        p.grad()[:] = 0.5
        p.data()._fresh_grad = True  # as backward() would mark it
    trainer.step(1)


@pytest.mark.parametrize('nonfinite', ['skip', 'raise'])
@pytest.mark.parametrize('amsgrad', [False, True])
def test_one_kernel_call_per_dtype_per_step(calls, amsgrad, nonfinite):
    layout = [((3, 4), 'float32'), ((7,), 'float64'), ((5,), 'float32'), ((2, 2), 'float32'),
              ((6,), 'float64')]
    params, trainer = _trainer(layout, amsgrad=amsgrad, nonfinite=nonfinite)
    for step in range(1, 4):
        _step(params, trainer)
        names = sorted(name for name, _ in calls)
        assert names == sorted([name.format(dtype) for dtype in ('float32', 'float64')
                                for name in CALLS[nonfinite]] * step)
    for name, args in calls:  # args[0]: how many parameters the call covers
        assert args[0] == (3 if name.endswith('32') else 2)
    for p in params:  # and the step was taken
        assert (p.data().asnumpy() < 1).all()


SIZES = [  # (parameter sizes in one call, threads the call must ask for)
    ([kernel.PARALLEL_MIN // 2, kernel.PARALLEL_MIN // 2], 'THREADS'),  # the call's total counts
    ([kernel.PARALLEL_MIN], 'THREADS'),
    ([kernel.PARALLEL_MIN - 1], 1),
    ([1000, 20], 1),
]


@pytest.mark.parametrize('nonfinite', ['skip', 'raise'])
@pytest.mark.parametrize('sizes,threads', SIZES, ids=[str(s) for s, _ in SIZES])
def test_threads_asked_for_follow_the_size_of_the_call(calls, monkeypatch, sizes, threads,
                                                       nonfinite):
    monkeypatch.setattr(kernel, 'THREADS', 3)
    expected = 3 if threads == 'THREADS' else threads
    opt = MyAdam(learning_rate=0.1, nonfinite=nonfinite)
    weights = [nd.ones((n,)) for n in sizes]
    grads = [nd.full((n,), 0.5) for n in sizes]
    states = [opt.create_state(i, w) for i, w in enumerate(weights)]
    opt.update(list(range(len(sizes))), weights, grads, states)
    assert [name for name, _ in calls] == [name.format('float32') for name in CALLS[nonfinite]]
    assert [args[-1] for _, args in calls] == [expected] * len(CALLS[nonfinite])
    for w in weights:
        np.testing.assert_allclose(w.asnumpy(), 0.9, rtol=1e-6)


# In a fresh process with OMP_NUM_THREADS set: the threads the process has after a small
# step (no pool needed), after a step over PARALLEL_MIN elements (2^20: four pieces), and
# after another with one thread more (the pool grows by one).
COUNT_THREADS = '''
import os
from mxnet import nd
from adam_plugin import MyAdam, kernel
opt = MyAdam(learning_rate=0.1)
small, big = nd.ones((1000,)), nd.ones((kernel.PARALLEL_MIN,))
states = [opt.create_state(i, w) for i, w in enumerate((small, big))]
grads = [nd.ones(small.shape), nd.ones(big.shape)]
for _ in range(2):
    opt.update(0, small, grads[0], states[0])
nd.waitall()
counts = [kernel.THREADS, len(os.listdir('/proc/self/task'))]
for more in (0, 1):
    kernel.THREADS += more
    opt.update(1, big, grads[1], states[1])
    nd.waitall()
    counts.append(len(os.listdir('/proc/self/task')))
print(*counts)
'''


# Each row starts a Python that imports MXNet (about 2 s): the quick tier runs the one with
# two threads, then three (one helper must start, then one more).
@pytest.mark.parametrize('threads', [pytest.param(1, marks=pytest.mark.slow), 2,
                                     pytest.param(3, marks=pytest.mark.slow)])
def test_a_large_step_starts_the_helper_threads(threads):
    result = subprocess.run([sys.executable, '-c', COUNT_THREADS], capture_output=True,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    kernel_threads, before, after, after_one_more = map(int, result.stdout.split())
    assert kernel_threads == threads
    assert after - before == threads - 1  # the pool's helpers; the caller is the last one
    assert after_one_more - after == 1  # four pieces: up to three helpers


@pytest.mark.parametrize('nonfinite', ['skip', 'raise'])
def test_a_lazy_step_covers_the_rows_present_only(monkeypatch, nonfinite):
    """The kernel is handed the gradient's rows, not the weight: elements stepped (and
    checked) = rows present x row length, here 3 x 8 of a 100000 x 8 weight."""
    import ctypes
    sizes = []

    def record(name, args):  # args[2]: the sizes, in each
        sizes.append((name, np.ctypeslib.as_array(
            ctypes.cast(args[2], ctypes.POINTER(ctypes.c_int64)), (args[0],)).tolist()))
    spy(monkeypatch, kernel.LIBRARY, ('adam_float32', 'finite_float32', 'checked_adam_float32'),
        record)
    opt = MyAdam(learning_rate=0.1, nonfinite=nonfinite)
    weight = nd.ones((100_000, 8))
    grad = nd.sparse.row_sparse_array((nd.ones((3, 8)), nd.array([5, 70, 99_999], dtype='int64')),
                                      shape=(100_000, 8))
    opt.update(0, weight, grad, opt.create_state(0, weight))
    assert sorted(sizes) == sorted((name.format('float32'), [24]) for name in CALLS[nonfinite])
    changed = np.flatnonzero((weight.asnumpy() != 1).any(axis=1))
    assert changed.tolist() == [5, 70, 99_999]


def _described(array):
    """What kernel.describe gives of ``array``, from MXNet's Python properties."""
    from mxnet.ndarray.ndarray import _DTYPE_NP_TO_MX, _STORAGE_TYPE_STR_TO_ID
    return (_DTYPE_NP_TO_MX[np.dtype(array.dtype).type], _STORAGE_TYPE_STR_TO_ID[array.stype],
            array.context.device_typeid, array.context.device_id, len(array.shape),
            *array.shape)


def test_describe_reads_what_mxnets_properties_say():
    """Generated arrays (dtype, storage, context, 1 to 6 dimensions), each
    alone and in pairs: the kernel's one call gives what MXNet's properties say, so arrays
    that describe alike have the same layout."""
    rng = np.random.default_rng(11)
    arrays = []
    for _ in range(40):
        ndim = int(rng.integers(1, 7))
        shape = tuple(int(d) for d in rng.integers(1, 4, size=ndim))
        stype = str(rng.choice(['default', 'row_sparse', 'csr'] if ndim == 2 else
                               ['default', 'row_sparse']))
        dtype = str(rng.choice(['float16', 'float32', 'float64', 'int32', 'uint8']))
        ctx = [mx.cpu(0), mx.cpu(1), mx.cpu_pinned(0)][int(rng.integers(3))]
        arrays.append(nd.zeros(shape, ctx=ctx, dtype=dtype, stype=stype))
    for a, b in zip(arrays, arrays[1:] + arrays[:1], strict=True):
        assert kernel.describe(a) == _described(a)
        assert kernel.describe(a, b) == _described(a) + _described(b)


def test_describe_takes_mxnets_largest_and_smallest_shapes():
    """32 dimensions, next to another array, and 33; under NumPy shape semantics
    no dimension (a scalar), a dimension of size 0, and no shape yet (ndim -1, an array
    made without one): each read whole, in its place."""
    from mxnet.ndarray.ndarray import _new_empty_handle
    biggest, after = nd.zeros((1,) * 32), nd.zeros((2, 3), dtype='float16')
    assert kernel.describe(biggest, after) == _described(biggest) + _described(after)
    assert len(kernel.describe(biggest)) == 5 + 32
    # MXNet makes 33 dimensions (its Python's shape refuses them): not described alone,
    # where the room is 32; beside a smaller array, whole
    too_many = nd.zeros((1,) * 33)
    assert kernel.describe(too_many) is None
    assert kernel.describe(after, too_many) == _described(after) + (0, 0, 1, 0, 33) + (1,) * 33
    with mx.util.np_shape(True):
        scalar, empty = nd.zeros(()), nd.zeros((2, 0, 3))
        unknown = nd.NDArray(_new_empty_handle())
        assert kernel.describe(scalar, empty, unknown, scalar) == (
            _described(scalar) + _described(empty) + kernel.describe(unknown)
            + _described(scalar))
        assert kernel.describe(scalar)[4:] == (0,) and kernel.describe(unknown)[4:] == (-1,)

