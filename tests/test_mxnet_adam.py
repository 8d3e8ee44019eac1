"""MXNet 1.9.1's own Adam test, run against ``MyAdam(epsilon_mode='hat')``.

Ported from apache/mxnet, tag 1.9.1, ``tests/python/unittest/test_optimizer.py``:
the reference ``PyAdam`` (below, unchanged but for style) and the loops of
``test_adam`` (its option lists, dtypes, the five storage cases, shape (3, 4, 5),
rtol 1e-4 / atol 2e-5), written as the table ``CASES``. The harness
``compare_optimizer``, ``rand_ndarray`` and ``assert_almost_equal`` are imported
from the installed wheel's ``mxnet.test_utils``, byte-identical to the tag's.

Every case runs twice: against ``PyAdam`` exactly as MXNet runs it against its own
Adam (``compare_optimizer`` hands the reference dense copies), and against
``mx.optimizer.Adam`` given arrays of the same storage types as ``MyAdam``.
MXNet seeds ``test_adam`` at random; each case here has its own fixed seed.

``test_lr_wd_mult`` (same file) runs with ``'myadam'`` too: MXNet's assertions on a
Module whose symbol sets ``lr_mult`` and ``wd_mult``, and the weights compared with
MXNet's Adam's.
"""
import itertools
import math
import zlib

import mxnet as mx
import numpy as np
import pytest
from mxnet.test_utils import (
    assert_almost_equal,
    compare_ndarray_tuple,
    compare_optimizer,
    default_context,
    rand_ndarray,
)

from adam_plugin import MyAdam
from configs import ATOL, RTOL

SHAPE = (3, 4, 5)

CG_OPTIONS = [{}, {'clip_gradient': 0.4}, {'clip_gradient': 0.5}]
RG_OPTIONS = [{}, {'rescale_grad': 0.14}, {'rescale_grad': 0.8}]
WD_OPTIONS = [{}, {'wd': 0.03}, {'wd': 0.05}, {'wd': 0.07}]
MP_OPTIONS = [{}, {'multi_precision': False}, {'multi_precision': True}]

# name -> (weight stype, gradient stype, PyAdam's lazy_update, the optimizers' lazy_update),
# the five compare_optimizer calls of test_adam in its order.
STORAGES = {
    'dense': ('default', 'default', False, True),
    'rsp_weight_rsp_grad_lazy': ('row_sparse', 'row_sparse', True, True),
    'rsp_weight_rsp_grad_std': ('row_sparse', 'row_sparse', False, False),
    'dense_weight_rsp_grad_lazy': ('default', 'row_sparse', True, True),
    'dense_weight_rsp_grad_std': ('default', 'row_sparse', False, False),
}

# 2520 items, about a minute: the slow tier (make test runs them; make quick does not).
pytestmark = pytest.mark.slow


def _cases():
    """(id, dtype, options, storage) for each case of test_adam; float16 only multi_precision."""
    for dtype in (np.float16, np.float32, np.float64):
        for options in itertools.product(CG_OPTIONS, RG_OPTIONS, WD_OPTIONS, MP_OPTIONS):
            kwargs = {k: v for option in options for k, v in option.items()}
            if dtype == np.float16 and not kwargs.get('multi_precision'):
                continue
            for storage in STORAGES:
                name = ','.join(f'{k}={v}' for k, v in kwargs.items()) or 'defaults'
                yield f'{np.dtype(dtype).name}-{name}-{storage}', dtype, kwargs, storage


CASES = list(_cases())
assert len(CASES) == 1260  # (36 float16 + 108 float32 + 108 float64 options) x 5 storages


class PyAdam(mx.optimizer.Optimizer):
    """MXNet 1.9.1's Python reference Adam (test_optimizer.py), row by row.

    With ``lazy_update`` a row whose gradient is all zeros is skipped; the step size
    folds in both bias corrections, which is the epsilon-hat form.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 lazy_update=True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lazy_update = lazy_update

    def create_state(self, index, weight):
        return (mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype),  # mean
                mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype))  # variance

    def update(self, index, weight, grad, state):
        lr = self._get_lr(index)
        self._update_count(index)
        t = self._index_update_count[index]
        mean, variance = state
        wd = self._get_wd(index)
        coef1 = 1. - self.beta1**t
        coef2 = 1. - self.beta2**t
        lr *= math.sqrt(coef2) / coef1
        for row in range(weight.shape[0]):
            all_zeros = mx.test_utils.almost_equal(grad[row].asnumpy(),
                                                   np.zeros_like(grad[row].asnumpy()))
            if all_zeros and self.lazy_update:  # skip zero rows during a lazy update
                continue
            grad[row] = grad[row] * self.rescale_grad + wd * weight[row]
            if self.clip_gradient is not None:
                mx.nd.clip(grad[row], -self.clip_gradient, self.clip_gradient, out=grad[row])
            mean[row] *= self.beta1
            mean[row] += grad[row] * (1. - self.beta1)
            variance[row] *= self.beta2
            variance[row] += (1 - self.beta2) * mx.nd.square(grad[row], out=grad[row])
            weight[row] -= lr * mean[row] / (mx.nd.sqrt(variance[row]) + self.epsilon)


def compare_same_storage(opt1, opt2, shape, dtype, w_stype, g_stype, rtol, atol):
    """As ``mxnet.test_utils.compare_optimizer``, but both optimizers get the same storage.

    ``compare_optimizer`` hands ``opt1`` dense copies, which is right for the dense
    ``PyAdam`` but would run ``mx.optimizer.Adam``'s dense update where ``MyAdam``
    runs a row_sparse one. The arrays are drawn as ``compare_optimizer`` draws them.
    """
    ctx = default_context()
    if w_stype == 'default':
        weight = mx.random.uniform(shape=shape, ctx=ctx, dtype=dtype)
    else:
        weight = rand_ndarray(shape, w_stype, density=1, dtype=dtype)
    if g_stype == 'default':
        grad = mx.random.uniform(shape=shape, ctx=ctx, dtype=dtype)
    else:
        grad = rand_ndarray(shape, g_stype, dtype=dtype)
    w1, w2 = weight.copyto(ctx), weight.copyto(ctx)
    state1 = opt1.create_state_multi_precision(0, w1)
    state2 = opt2.create_state_multi_precision(0, w2)
    compare_ndarray_tuple(state1, state2)
    opt1.update_multi_precision(0, w1, grad.copyto(ctx), state1)
    opt2.update_multi_precision(0, w2, grad.copyto(ctx), state2)
    compare_ndarray_tuple(state1, state2, rtol=rtol, atol=atol)  # zip: (m, v) of (m, v, [t])
    inner = state2[-1] if isinstance(state2[-1], tuple) else state2  # (master, (m, v, [t]))
    assert inner[-1] == [opt1._index_update_count[0]] == [1]  # the step count ``[t]``
    assert_almost_equal(w1, w2, rtol=rtol, atol=atol)


def _seed(case_id):
    """test_adam's with_seed, fixed per case: numpy's and MXNet's generators."""
    seed = zlib.crc32(case_id.encode())
    np.random.seed(seed)
    mx.random.seed(seed)


@pytest.mark.parametrize('case_id, dtype, options, storage', CASES, ids=[c[0] for c in CASES])
def test_against_pyadam(case_id, dtype, options, storage):
    w_stype, g_stype, py_lazy, lazy = STORAGES[storage]
    _seed(case_id)
    compare_optimizer(PyAdam(lazy_update=py_lazy, **options),
                      MyAdam(epsilon_mode='hat', lazy_update=lazy, **options),
                      SHAPE, dtype, w_stype=w_stype, g_stype=g_stype, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('case_id, dtype, options, storage', CASES, ids=[c[0] for c in CASES])
def test_against_mxnet_adam(case_id, dtype, options, storage):
    w_stype, g_stype, _, lazy = STORAGES[storage]
    _seed(case_id)
    compare_same_storage(mx.optimizer.Adam(lazy_update=lazy, **options),
                         MyAdam(epsilon_mode='hat', lazy_update=lazy, **options),
                         SHAPE, dtype, w_stype, g_stype, RTOL, ATOL)


def lr_wd_mult_module(optimizer, options):
    """test_lr_wd_mult's Module after one update: its parameters before and after, and it.

    MXNet's test uses SGD with ``wd=0``; ``wd=0.1`` here makes ``wd_mult`` change weights.
    """
    mx.random.seed(3)
    data = mx.sym.Variable('data')
    bias = mx.sym.Variable('fc1_bias', lr_mult=1.0)
    fc1 = mx.sym.FullyConnected(data=data, bias=bias, name='fc1', num_hidden=10, lr_mult=0)
    fc2 = mx.sym.FullyConnected(data=fc1, name='fc2', num_hidden=10, wd_mult=0.5)

    mod = mx.mod.Module(symbol=fc2, label_names=None, context=default_context())
    mod.bind(data_shapes=[('data', (5, 10))])
    mod.init_params(initializer=mx.init.Uniform(1.0))
    mod.init_optimizer(optimizer=optimizer,
                       optimizer_params=dict(options, learning_rate=1.0, wd=0.1))
    args1, _ = mod.get_params()
    args1 = {k: v.asnumpy() for k, v in args1.items()}
    mod.forward(mx.io.DataBatch(data=[mx.random.uniform(low=-1.0, high=1.0, shape=(5, 10))],
                                label=None), is_train=True)
    mod.backward(mod.get_outputs())
    mod.update()
    args2, _ = mod.get_params()
    args2 = {k: v.asnumpy() for k, v in args2.items()}
    return args1, args2, mod


def test_lr_wd_mult():
    args1, args2, mod = lr_wd_mult_module('myadam', {'epsilon_mode': 'hat'})
    assert type(mod._optimizer) is MyAdam
    assert mod._optimizer.lr_mult == {'fc1_bias': 1.0, 'fc1_weight': 0.0}
    assert mod._optimizer.wd_mult == {'fc2_bias': 0.5, 'fc2_weight': 0.5, 'fc1_bias': 0.0}
    assert mx.test_utils.almost_equal(args1['fc1_weight'], args2['fc1_weight'], 1e-10)
    assert not mx.test_utils.almost_equal(args1['fc1_bias'], args2['fc1_bias'], 1e-1)
    assert not mx.test_utils.almost_equal(args1['fc2_weight'], args2['fc2_weight'], 1e-1)

    adam_before, adam_after, _ = lr_wd_mult_module('adam', {})
    assert sorted(adam_after) == sorted(args2)
    for name in args2:
        np.testing.assert_array_equal(args1[name], adam_before[name])
        assert_almost_equal(args2[name], adam_after[name], rtol=RTOL, atol=ATOL, names=(name, name))
