"""The whole Adam step in one pass over memory: numba kernels on MXNet's own CPU buffers.

Imported lazily by :mod:`adam_plugin.dispatch` on the first fused update, so that
``import adam_plugin`` neither imports numba nor compiles anything. The compiled
kernels are cached on disk (numba ``cache=True``: ``__pycache__`` beside this file,
or numba's per-user cache directory when that is not writable).

How the buffers are reached: every entry point first waits for all pending MXNet
engine work (``MXNDArrayWaitAll``), so no engine operation still reads or writes
any of the arrays; it then takes each array's data pointer (``MXNDArrayGetData``)
and the kernel reads and writes the memory directly. Nothing is copied. MXNet does
not know about these writes, which is safe because they are finished before the
function returns and the engine has nothing in flight on those arrays.

A whole list of parameters is one kernel call: the arrays are passed as tables of
addresses and sizes, cut into chunks of at most ``CHUNK`` elements that numba's
threads share (``numba.get_num_threads()``, set by ``NUMBA_NUM_THREADS``). Calls
over fewer than ``PARALLEL_MIN`` elements run on one thread: waking a second one
costs more than it saves there. On the 2-core development machine, idle, two
threads halved the time on 10M elements; when another process held a core, they
made it up to 3 times slower (the adam pass) and 70 times (the finiteness pass),
since a parallel region waits for its slowest thread. The loops are written with
``prange`` also for another reason: that is the form numba 0.68 vectorised; the
same loops compiled serially ran 6 to 10 times slower.
"""
import ctypes
import math

import numpy as np
from numba import carray, get_num_threads, njit, prange, set_num_threads, types
from numba.extending import intrinsic
from mxnet.base import _LIB, check_call

CHUNK = 1 << 14
PARALLEL_MIN = 1 << 20

# The exponent field of an IEEE float, as an integer of the same width.
_EXPONENT = {np.dtype(np.float32): np.array([0x7F800000], dtype=np.int32),
             np.dtype(np.float64): np.array([0x7FF0000000000000], dtype=np.int64)}

# Columns of the per-step constants table, all in the parameters' dtype.
(_RESCALE, _WD, _CLIP, _BETA1, _ONE_MINUS_BETA1, _BETA2, _ONE_MINUS_BETA2, _BC1, _BC2,
 _EPS_INSIDE, _EPS_OUTSIDE, _DECAY, _LR, _NUM_CONSTANTS) = range(14)


def constants(step, dtype):
    """The scalars of one step, computed in float64 and rounded to ``dtype`` once.

    They are the scalars :func:`adam_plugin.textbook.adam_step` hands MXNet's scalar
    operators, which round them to the array's dtype the same way. The three
    epsilon modes become ``(eps_inside, eps_outside)``: 'outside' ``(0, epsilon)``,
    'inside' ``(epsilon, 0)``, 'hat' ``(0, epsilon / sqrt(1 - beta2**t))``.
    ``decay = 1 - lr * wd`` with decoupled weight decay, else 1; ``wd`` is the
    coupled L2 coefficient (0 when decoupled). A missing ``clip_gradient`` is
    ``inf``: clipping to it changes nothing, NaN included.
    """
    eps_outside = {'outside': step.epsilon, 'inside': 0.0,
                   'hat': step.epsilon / math.sqrt(step.bias_correction2)}[step.epsilon_mode]
    row = [0.0] * _NUM_CONSTANTS
    row[_RESCALE] = step.rescale_grad
    row[_WD] = step.coupled_wd
    row[_CLIP] = math.inf if step.clip_gradient is None else step.clip_gradient
    row[_BETA1], row[_ONE_MINUS_BETA1] = step.beta1, 1.0 - step.beta1
    row[_BETA2], row[_ONE_MINUS_BETA2] = step.beta2, 1.0 - step.beta2
    row[_BC1], row[_BC2] = step.bias_correction1, step.bias_correction2
    row[_EPS_INSIDE] = step.epsilon if step.epsilon_mode == 'inside' else 0.0
    row[_EPS_OUTSIDE] = eps_outside
    row[_DECAY] = 1.0 - step.lr * step.wd if step.decoupled_wd else 1.0
    row[_LR] = step.lr
    return np.array(row, dtype=dtype)


class Buffers:
    """The memory of a list of parameters of one dtype: their addresses and sizes.

    Read once per update call and shared by :meth:`all_finite` and :meth:`adam_steps`.

    Parameters
    ----------
    weights, grads : list of NDArray
        Dense CPU arrays of one dtype, float32 or float64.
    states : list of tuple of NDArray
        ``(m, v)`` or, for all of them, ``(m, v, vmax)``; same shapes and dtype.
    """

    def __init__(self, weights, grads, states):
        if len({len(state) for state in states}) != 1:
            raise ValueError("myadam: states of one call must all be (m, v) or all (m, v, vmax)")
        self.dtype = np.dtype(weights[0].dtype)
        columns = [weights, grads] + [list(bufs) for bufs in zip(*states)]
        wait_all()  # nothing in flight may still allocate or move them
        self.addresses = np.array([[_address(a) for a in column] for column in columns],
                                  dtype=np.int64)
        self.sizes = np.array([w.size for w in weights], dtype=np.int64)

    def all_finite(self):
        """One flag per gradient: does it hold only finite values?

        One pass over all gradients, reading each element's bits.
        """
        wait_all()
        return list(_launch(_finite_kernel, self.sizes, self.addresses[1], self.sizes,
                            _EXPONENT[self.dtype]))

    def adam_steps(self, steps):
        """Apply :func:`adam_plugin.textbook.adam_step` to the parameters in one kernel launch.

        Per element, with the constants of :func:`constants` for that parameter's step,
        each operation rounded to the dtype in the textbook's order (no fused
        multiply-add, no reciprocals), so the results equal the textbook path's::

            g     = g * rescale
            g     = g + wd * w                  (if wd, the coupled L2 term, is not 0)
            g     = clip(g, -clip, clip)
            m     = beta1 * m + (1 - beta1) * g
            v     = beta2 * v + (1 - beta2) * (g * g)
            vmax  = max(vmax, v);  v <- vmax    (step.amsgrad; needs 3 state buffers)
            m_hat = m / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            u     = m_hat / (sqrt(v_hat + eps_inside) + eps_outside)
            w     = w * decay - lr * u

        Parameters
        ----------
        steps : list of Step or None
            One per parameter; None leaves that parameter untouched. Parameters
            sharing a step share one row of constants.
        """
        keep, param_rows, rows = [], [], {}  # rows: Step -> its row in the table
        for i, step in enumerate(steps):
            if step is not None:
                keep.append(i)
                param_rows.append(rows.setdefault(step, len(rows)))
        if not keep:
            return
        amsgrad = any(step.amsgrad for step in rows)
        if amsgrad and len(self.addresses) < 5:
            raise ValueError("myadam: amsgrad needs (m, v, vmax) states")
        table = np.stack([constants(step, self.dtype) for step in rows])
        addresses, sizes = self.addresses[:, keep], self.sizes[keep]
        wait_all()
        _launch(_adam_kernel, sizes, addresses, sizes, np.array(param_rows, dtype=np.int64),
                table, amsgrad)


def wait_all():
    """Block until the MXNet engine has no pending work (no reader or writer of any array)."""
    check_call(_LIB.MXNDArrayWaitAll())


def _launch(kernel, sizes, *args):
    """``kernel(*args)`` on numba's threads, or on one below ``PARALLEL_MIN`` elements."""
    threads = get_num_threads()
    set_num_threads(threads if sizes.sum() >= PARALLEL_MIN else 1)
    try:
        return kernel(*args)
    finally:
        set_num_threads(threads)


def _address(array):
    pointer = ctypes.c_void_p()
    check_call(_LIB.MXNDArrayGetData(array.handle, ctypes.byref(pointer)))
    return pointer.value or 0


@intrinsic
def _pointer(typingctx, address, like):
    """``(address, value of dtype T) -> T*``: reinterpret an integer address as a typed pointer."""
    sig = types.CPointer(like)(address, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return sig, codegen


@njit(cache=True)
def _chunk_table(sizes):
    """Chunks of at most CHUNK elements: ``(parameter, start)`` per chunk, in order."""
    counts = np.maximum((sizes + CHUNK - 1) // CHUNK, 1)
    owner = np.empty(counts.sum(), dtype=np.int64)
    start = np.empty(counts.sum(), dtype=np.int64)
    c = 0
    for p in range(sizes.size):
        for k in range(counts[p]):
            owner[c] = p
            start[c] = k * CHUNK
            c += 1
    return owner, start


@njit(inline='always')
def _chunk(address, size, lo, hi, like):
    """Elements ``[lo, hi)`` of the ``size``-element array at ``address``, typed like ``like``.

    Indexed from 0, so that a loop over ``range(hi - lo)`` is one LLVM can vectorise.
    """
    return carray(_pointer(address, like), size)[lo:hi]


@njit(parallel=True, cache=True)
def _adam_kernel(addresses, sizes, param_rows, table, amsgrad):
    owner, start = _chunk_table(sizes)
    for c in prange(owner.size):
        p = owner[c]
        k = table[param_rows[p]]
        lo, hi = start[c], min(start[c] + CHUNK, sizes[p])
        w = _chunk(addresses[0, p], sizes[p], lo, hi, k[0])
        g = _chunk(addresses[1, p], sizes[p], lo, hi, k[0])
        m = _chunk(addresses[2, p], sizes[p], lo, hi, k[0])
        v = _chunk(addresses[3, p], sizes[p], lo, hi, k[0])
        # Scalars read once, outside the loops, in the arrays' dtype (a float64
        # constant in a float32 loop would promote it and stop vectorisation).
        rescale, wd, clip = k[_RESCALE], k[_WD], k[_CLIP]
        beta1, one_minus_beta1 = k[_BETA1], k[_ONE_MINUS_BETA1]
        beta2, one_minus_beta2 = k[_BETA2], k[_ONE_MINUS_BETA2]
        bc1, bc2, eps_inside, eps_outside = k[_BC1], k[_BC2], k[_EPS_INSIDE], k[_EPS_OUTSIDE]
        decay, lr = k[_DECAY], k[_LR]
        # Two loops rather than a branch per element: the plain one never reads or
        # writes vmax (whose buffer does not exist without AMSGrad) and stays branch-free.
        if amsgrad:
            vmax = _chunk(addresses[4, p], sizes[p], lo, hi, k[0])
            for i in range(hi - lo):
                gi = _gradient(g[i], w[i], rescale, wd, clip)
                mi = beta1 * m[i] + one_minus_beta1 * gi
                vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
                vmi = max(vmax[i], vi)
                m[i], v[i], vmax[i] = mi, vi, vmi
                w[i] = _weight(w[i], mi, vmi, bc1, bc2, eps_inside, eps_outside, decay, lr)
        else:
            for i in range(hi - lo):
                gi = _gradient(g[i], w[i], rescale, wd, clip)
                mi = beta1 * m[i] + one_minus_beta1 * gi
                vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
                m[i], v[i] = mi, vi
                w[i] = _weight(w[i], mi, vi, bc1, bc2, eps_inside, eps_outside, decay, lr)


@njit(inline='always')
def _gradient(g, w, rescale, wd, clip):
    """Rescale, add coupled L2, clip as mshadow does (NaN passes through)."""
    g = g * rescale
    if wd != 0:
        g = g + wd * w
    if g > clip:
        return clip
    if g < -clip:
        return -clip
    return g


@njit(inline='always')
def _weight(w, m, v, bc1, bc2, eps_inside, eps_outside, decay, lr):
    """The bias-corrected step applied to the (decayed) weight."""
    u = (m / bc1) / (np.sqrt(v / bc2 + eps_inside) + eps_outside)
    return w * decay - lr * u


@njit(parallel=True, cache=True)
def _finite_kernel(addresses, sizes, exponent):
    """Per array: is no element's exponent field all ones (the IEEE encoding of Inf and NaN)?

    The floats are read as integers of the same width, so the test is an integer
    max-reduction that vectorises and that no floating-point flag can fold away.
    """
    owner, start = _chunk_table(sizes)
    mask = exponent[0]
    top = np.zeros(owner.size, dtype=exponent.dtype)
    for c in prange(owner.size):
        p = owner[c]
        lo, hi = start[c], min(start[c] + CHUNK, sizes[p])
        bits = _chunk(addresses[p], sizes[p], lo, hi, mask)
        acc = mask & 0
        for i in range(hi - lo):
            acc = max(acc, bits[i] & mask)
        top[c] = acc
    finite = np.ones(sizes.size, dtype=np.bool_)
    for c in range(owner.size):
        if top[c] == mask:
            finite[owner[c]] = False
    return finite
