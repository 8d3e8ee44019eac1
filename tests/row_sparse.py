"""The row_sparse gradients the sparse tests share, and the run that steps a weight through
them."""
from mxnet import nd

from helpers import state_arrays

SHAPE = (10, 4)


# rows present in the gradient, one entry per step; [] is a gradient holding no rows
ROW_SETS = [[1, 4, 7], [0, 4], [], [7, 8, 9], [4], [1, 2, 3, 5]]


def rsp_grads(rng, dtype='float32'):
    out = []
    for rows in ROW_SETS:
        data = rng.normal(size=(len(rows), SHAPE[1])) * 3
        out.append(nd.sparse.row_sparse_array(
            (nd.array(data, dtype=dtype), nd.array(rows, dtype='int64')), shape=SHAPE))
    return out


def run(opt, grads, w0, w_stype='default'):
    """Step ``opt`` through ``grads`` from ``w0``; (weight, state) as NumPy after each step.

    A row_sparse weight stores every row, as ``Trainer`` and MXNet's tests make it.
    """
    w = nd.array(w0, dtype=w0.dtype).tostype(w_stype)
    state = opt.create_state_multi_precision(0, w)
    history = []
    for g in grads:
        opt.update_multi_precision(0, w, g, state)
        history.append((w.asnumpy(), state_arrays(state)))
    return history
