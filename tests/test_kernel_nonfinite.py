"""The kernel's check for Inf and NaN, per dtype and per path, at the edges of its loops.

The check reads each element's bits (kernel.HandleTable.all_finite): a wrong mask would miss
an Inf or take a large finite value for one; a loop that stops short would miss the last
element of a vector tail or of a thread's piece. Each test calls the check alone, on
many gradients in one call (one flag per gradient), in every variant this CPU runs.
"""
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import kernel

# the kernel's storages and the dtype of their gradients
STORAGES = {'float16': 'float16', 'float16_master': 'float16', 'float32': 'float32',
            'float64': 'float64'}
BAD = [np.nan, np.inf, -np.inf]
# Up to 2 * 64 + 1 elements: every residue of every vector width and unrolling (64
# float16 lanes in two AVX-512 registers at most), so every tail length ends a gradient.
TAIL_SIZES = range(1, 130)


def finite_flags(storage, grads, rows=None):
    """The kernel's flags for ``grads`` (one call), each gradient its own parameter.

    ``rows``: for row_sparse gradients, their rows (the lazy path: the check reads the
    stored values only).
    """
    params = []
    for i, g in enumerate(grads):
        shape = g.shape
        moments = (nd.zeros(shape, dtype='float32' if storage.endswith('master') else g.dtype),) * 2
        master = nd.zeros(shape, dtype='float32') if storage.endswith('master') else None
        weight = nd.zeros(shape, dtype=g.dtype)
        params.append((shape, weight, g, moments, master, None if rows is None else rows[i]))
    return kernel.HandleTable(storage, params).all_finite()


def extremes(dtype):
    """Finite values the check must pass: the largest, the smallest subnormal, zeros, and
    for float64 values beyond float32's exponent range (2**1017 and up)."""
    info = np.finfo(dtype)
    values = [info.max, -info.max, info.smallest_subnormal, -info.smallest_subnormal,
              info.tiny, 0.0, -0.0, 1.0]
    if dtype == 'float64':
        values += [2.0 ** 1017, -2.0 ** 1020, 2.0 ** 1023, np.nextafter(2.0 ** 1017, 0)]
    return np.array(values, dtype=dtype)


@pytest.mark.parametrize('storage', STORAGES)
def test_largest_and_subnormal_values_are_finite(storage, variant):
    dtype = STORAGES[storage]
    values = extremes(dtype)
    grads = [nd.array(np.resize(values, size), dtype=dtype) for size in TAIL_SIZES]
    assert finite_flags(storage, grads) == [True] * len(grads)


@pytest.mark.parametrize('bad', BAD)
@pytest.mark.parametrize('storage', STORAGES)
def test_a_bad_value_last_in_every_tail_is_found(storage, bad, variant):
    """A gradient of each length in TAIL_SIZES, the last element bad, among clean ones
    full of the extreme finite values: exactly the bad ones are flagged."""
    dtype = STORAGES[storage]
    grads, expected = [], []
    for size in TAIL_SIZES:
        clean = np.resize(extremes(dtype), size)
        spoiled = clean.copy()
        spoiled[-1] = bad
        grads += [nd.array(clean, dtype=dtype), nd.array(spoiled, dtype=dtype)]
        expected += [True, False]
    assert finite_flags(storage, grads) == expected


CHUNK = 1 << 18  # the kernel's piece of work (CHUNK in _kernel.cpp)


@pytest.mark.slow
@pytest.mark.parametrize('storage', STORAGES)
def test_a_bad_value_last_in_every_threads_piece_is_found(storage, variant, monkeypatch):
    """Three threads share one call: a bad value at the last element of each 2^18-element
    piece (and of the gradient), one gradient per spot; the pieces of a call run across
    gradients, so the clean neighbours must stay clean."""
    monkeypatch.setattr(kernel, 'PARALLEL_MIN', 0)
    monkeypatch.setattr(kernel, 'THREADS', 3)
    dtype = STORAGES[storage]
    size = 3 * CHUNK + 5
    spots = [CHUNK - 1, 2 * CHUNK - 1, 3 * CHUNK - 1, size - 1]
    clean = np.resize(extremes(dtype), size)
    grads, expected = [nd.array(clean, dtype=dtype)], [True]
    for spot in spots:
        spoiled = clean.copy()
        spoiled[spot] = np.nan
        grads += [nd.array(spoiled, dtype=dtype), nd.array(clean, dtype=dtype)]
        expected += [False, True]
    assert finite_flags(storage, grads) == expected


@pytest.mark.parametrize('storage', STORAGES)
def test_lazy_row_sparse_gradients_are_checked_in_their_stored_rows(storage, variant):
    """The lazy path reads a row_sparse gradient's stored values: a bad value last in the
    last stored row is found, whatever the row length (every tail); rows not stored hold
    nothing to check."""
    dtype = STORAGES[storage]
    grads, rows, expected = [], [], []
    for length in range(1, 70, 3):
        present = np.array([0, 2, 5], dtype=np.int64)
        values = np.resize(extremes(dtype), (len(present), length))
        for bad in (False, True):
            data = values.copy()
            if bad:
                data[-1, -1] = np.inf
            grads.append(nd.sparse.row_sparse_array(
                (nd.array(data, dtype=dtype), nd.array(present, dtype='int64')),
                shape=(7, length)))
            rows.append(present)
            expected.append(not bad)
    assert finite_flags(storage, grads, rows) == expected
