"""Row-sparse gradients and weights: lazy updates change only the rows present, else all rows."""
import threading

import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from mxnet import autograd, gluon, nd

from adam_plugin import MyAdam, dispatch, kernel, mxnet_internals
from configs import CONFIGS, FUSED_TOL, OPERATOR_CONFIGS, THOROUGH, TOL, optimizer_kwargs
from helpers import state_arrays
from oracles import NumpyAdam
from row_sparse import ROW_SETS, SHAPE, rsp_grads, run

OPTIONS = [dict(), dict(wd=0.1), dict(clip_gradient=0.5, rescale_grad=0.5)]
W_STYPES = ['default', 'row_sparse']
# weight dtype -> MyAdam/Adam keywords for it, and the tolerance of the weights it ends with
DTYPES = {
    'float32': (dict(), TOL['float32']),
    # a float32 master copy steps; float16 weights may then differ by one rounding (2**-10)
    'float16': (dict(multi_precision=True), dict(rtol=1e-3, atol=1e-3)),
}


# What MXNet prints on stderr when an operator without a sparse form is given a row_sparse
# array and densifies it for the call. It prints each such message once per thread, so the
# test steps in a thread of its own: another test could have used the message up.
FALLBACK = 'Storage type fallback detected'


def step_every_sparse_route():
    rows = nd.array([1, 4], dtype='int64')
    for w_stype in W_STYPES:
        for lazy_update in (True, False):
            for fused in (True, False):
                opt = MyAdam(learning_rate=0.1, lazy_update=lazy_update, fused=fused,
                             amsgrad=True)
                weight = nd.ones(SHAPE).tostype(w_stype)
                state = opt.create_state_multi_precision(0, weight)
                for bad in (False, True):
                    data = np.ones((2, SHAPE[1]), 'float32')
                    data[0, 0] = np.nan if bad else 2.0
                    grad = nd.sparse.row_sparse_array((nd.array(data), rows), shape=SHAPE)
                    opt.update_multi_precision(0, weight, grad, state)
                nd.waitall()
                assert opt.num_skipped == 1, (w_stype, lazy_update, fused)


@pytest.mark.filterwarnings('ignore:myadam. skipped')
def test_no_operator_falls_back_to_dense_storage(capfd):
    """Every route, NaN check included, reads a row_sparse gradient's stored rows or
    densifies it once itself: MXNet never has to (a silent copy per operator)."""
    step_every_sparse_route()  # here too, so that make mutants sees which code it reaches
    capfd.readouterr()
    errors = []
    thread = threading.Thread(target=lambda: errors.extend(_raised(step_every_sparse_route)))
    thread.start()
    thread.join()
    assert errors == []
    assert FALLBACK not in capfd.readouterr().err


def _raised(function):
    try:
        function()
    except Exception as error:  # any error, reported by the test
        return [error]
    return []


@pytest.mark.parametrize('w_stype', W_STYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_lazy_update_touches_only_present_rows(options, w_stype, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    history = run(MyAdam(learning_rate=0.1, **options), rsp_grads(rng), w0, w_stype)
    previous = (w0, [np.zeros(SHAPE, 'float32')] * 2)
    for rows, (w, state) in zip(ROW_SETS, history, strict=True):
        absent = [r for r in range(SHAPE[0]) if r not in rows]
        np.testing.assert_array_equal(w[absent], previous[0][absent])
        for s, p in zip(state[:2], previous[1][:2], strict=True):  # m and v (then the step count)
            np.testing.assert_array_equal(s[absent], p[absent])
        assert np.all(w[rows] != previous[0][rows])
        previous = (w, state)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('lazy_update', [True, False])
@pytest.mark.parametrize('w_stype', W_STYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_hat_mode_matches_mxnet_adam(options, w_stype, lazy_update, dtype, rng):
    """Six steps, one of them a gradient without rows, weights and states compared each step."""
    extra, tol = DTYPES[dtype]
    w0 = rng.normal(size=SHAPE).astype(dtype)
    grads = rsp_grads(rng, dtype)
    kwargs = dict(learning_rate=0.1, epsilon=1e-3, lazy_update=lazy_update, **extra, **options)
    ours = run(MyAdam(epsilon_mode='hat', **kwargs), grads, w0, w_stype)
    builtin = run(mx.optimizer.Adam(**kwargs), grads, w0, w_stype)
    for (w, state), (v, reference) in zip(ours, builtin, strict=True):
        np.testing.assert_allclose(w, v, **tol)
        for a, b in zip(state[:len(reference)], reference, strict=True):  # master copy, moments
            np.testing.assert_allclose(a, b, **TOL['float32'])


@pytest.mark.parametrize('w_stype', W_STYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_without_lazy_update_sparse_equals_dense(options, w_stype, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    sparse = run(MyAdam(learning_rate=0.1, lazy_update=False, **options), grads, w0, w_stype)
    dense = run(MyAdam(learning_rate=0.1, **options), [g.tostype('default') for g in grads], w0)
    lazy = run(MyAdam(learning_rate=0.1, **options), grads, w0, w_stype)
    for (w, s), (v, t) in zip(sparse, dense, strict=True):
        np.testing.assert_array_equal(w, v)
        for a, b in zip(s, t, strict=True):
            np.testing.assert_array_equal(a, b)
    # and it is not the lazy result: momentum moved rows absent from a step
    assert not np.array_equal(sparse[-1][0], lazy[-1][0])


@pytest.mark.parametrize('w_stype', W_STYPES)
def test_lazy_update_with_a_gradient_holding_no_rows_changes_nothing(w_stype, rng):
    w0 = rng.normal(size=SHAPE).astype('float32')
    first, empty = rsp_grads(rng)[1:3]
    opt = MyAdam(learning_rate=0.1, wd=0.1)
    before, after = run(opt, [first, empty], w0, w_stype)
    np.testing.assert_array_equal(after[0], before[0])
    (*moments_after, t_after), (*moments_before, t_before) = after[1], before[1]
    for a, b in zip(moments_after, moments_before, strict=True):
        np.testing.assert_array_equal(a, b)
    # the step counted, as MXNet's Optimizer counts it
    assert (t_before, t_after) == (1, 2) and opt._index_update_count[0] == 2


@pytest.mark.parametrize('w_stype', W_STYPES)
@pytest.mark.parametrize('options', OPTIONS, ids=str)
def test_lazy_amsgrad_matches_the_oracle_in_every_buffer(options, w_stype, rng):
    """Weight, m, v and vmax after each lazy step against the NumPy oracle (float64)."""
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    ours = run(MyAdam(learning_rate=0.1, amsgrad=True, **options), grads, w0, w_stype)
    oracle = NumpyAdam(lr=0.1, amsgrad=True, **options)
    w = w0
    for rows, g, (mine, state) in zip(ROW_SETS, grads, ours, strict=True):
        w = oracle.step(0, w, g.data.asnumpy(), rows=rows)
        expected = oracle.state[0]
        np.testing.assert_allclose(mine, w, **TOL['float32'])
        for name, buf in zip(('m', 'v', 'vmax', 't'), state, strict=True):
            np.testing.assert_allclose(buf, expected[name], **TOL['float32'], err_msg=name)


ROUTES = [  # (MyAdam kwargs, weight stype and dtype, the route of a row_sparse gradient)
    (dict(), 'default', 'float32', 'kernel'),  # lazy: the rows it holds
    (dict(lazy_update=False), 'default', 'float32', 'kernel'),  # densified
    (dict(lazy_update=False), 'default', 'float64', 'kernel'),
    (dict(lazy_update=False, fused=False), 'default', 'float32', 'textbook'),
    (dict(fused=False), 'row_sparse', 'float32', 'textbook'),
    (dict(), 'row_sparse', 'float32', 'kernel'),  # when it stores every row: see Batch
    (dict(lazy_update=False), 'row_sparse', 'float32', 'kernel'),
    (dict(multi_precision=True), 'default', 'float16', 'kernel'),
    (dict(lazy_update=False, multi_precision=True), 'row_sparse', 'float16', 'kernel'),
]


@pytest.mark.parametrize('kwargs, w_stype, dtype, expected', ROUTES)
def test_route_of_a_row_sparse_gradient(kwargs, w_stype, dtype, expected, rng):
    weight = nd.array(rng.normal(size=SHAPE), dtype=dtype).tostype(w_stype)
    grad = rsp_grads(rng, dtype)[0]
    layout = dispatch.CheckedLayouts(str)(0, weight, grad)
    assert dispatch.route(layout, MyAdam(**kwargs)) == expected


def standard(name, **kwargs):
    """MyAdam with ``CONFIGS[name]`` (a scheduler of its own) and ``lazy_update=False``."""
    return MyAdam(lazy_update=False, **optimizer_kwargs(CONFIGS[name]), **kwargs)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('name', CONFIGS)
def test_standard_update_on_the_kernel_matches_textbook(name, dtype, rng):
    w0 = rng.normal(size=SHAPE).astype(dtype)
    grads = rsp_grads(rng, dtype)
    fast = run(standard(name), grads, w0)
    slow = run(standard(name, fused=False), grads, w0)
    for (w, state), (v, reference) in zip(fast, slow, strict=True):
        for a, b in zip([w] + state, [v] + reference, strict=True):
            np.testing.assert_allclose(a, b, **FUSED_TOL[dtype])
    absent = [0, 4, 7, 8, 9]  # from the last gradient, moved by their momentum
    assert not np.any(fast[-1][0][absent] == fast[-2][0][absent])


@pytest.mark.parametrize('name', OPERATOR_CONFIGS)
def test_standard_update_on_the_operator_matches_textbook(name, rng, monkeypatch):
    """MXNet's adam_update, the route without the kernel, given the densified gradient."""
    monkeypatch.setattr(kernel, 'LIBRARY', None)
    w0 = rng.normal(size=SHAPE).astype('float32')
    grads = rsp_grads(rng)
    layout = dispatch.CheckedLayouts(str)(0, nd.array(w0), grads[0])
    assert dispatch.route(layout, standard(name)) == 'operator'
    fast = run(standard(name), grads, w0)
    slow = run(standard(name, fused=False), grads, w0)
    for (w, state), (v, reference) in zip(fast, slow, strict=True):
        for a, b in zip([w] + state, [v] + reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # as test_fused's


# Sparse models through gluon.Trainer on one context. SparseEmbedding's weight is
# row_sparse: Trainer then insists on a KVStore that updates (update_on_kvstore=True),
# and the optimizer sees a row_sparse cpu_pinned weight. Embedding(sparse_grad=True)
# keeps a dense weight, updated by the Trainer (update_on_kvstore=False).
VOCAB, DIM, STEPS, BATCH = 30, 5, 40, 6
MODELS = {
    'SparseEmbedding': lambda: gluon.contrib.nn.SparseEmbedding(VOCAB, DIM),
    'Embedding_sparse_grad': lambda: gluon.nn.Embedding(VOCAB, DIM, sparse_grad=True),
}
TRAINER_OPTIONS = dict(learning_rate=0.05, wd=0.01, epsilon=1e-6)


def train(model, optimizer, options, w0, batches, target):
    """``STEPS`` Trainer steps of a squared loss; the weight after each, as NumPy."""
    net = MODELS[model]()
    net.initialize(mx.init.Constant(nd.array(w0)))
    trainer = gluon.Trainer(net.collect_params(), optimizer, options)
    everything = nd.arange(VOCAB)
    history = []
    for tokens in batches:
        with autograd.record():
            loss = ((net(nd.array(tokens)) - nd.array(target[tokens])) ** 2).sum()
        loss.backward()
        trainer.step(BATCH)
        history.append(net.weight.row_sparse_data(everything).asnumpy()
                       if model == 'SparseEmbedding' else net.weight.data().asnumpy())
    return history, trainer


@pytest.mark.parametrize('lazy_update', [True, False])
@pytest.mark.parametrize('model', MODELS)
def test_sparse_model_through_trainer_matches_adam(model, lazy_update):
    """'myadam' in 'hat' mode equals 'adam' within float32 rounding, 40 steps, every step.

    The two compute one formula in different orders (MXNet folds the bias
    corrections into the learning rate), a few float32 roundings apart per step;
    the differences add up step by step, through the weights and the loss's
    gradient. Allowed after step ``t``: ``4 * t`` units in the last place of the
    largest weight (measured: 2 at step 1, about 36 at step 40).
    """
    rng = np.random.default_rng(7)
    w0 = rng.normal(size=(VOCAB, DIM)).astype('float32')
    target = rng.normal(size=(VOCAB, DIM)).astype('float32')
    batches = [rng.choice(VOCAB // 2, size=BATCH) for _ in range(STEPS)]  # half the rows never seen
    options = dict(TRAINER_OPTIONS, lazy_update=lazy_update)
    ours, trainer = train(model, 'myadam', dict(options, epsilon_mode='hat'), w0, batches, target)
    builtin, _ = train(model, 'adam', options, w0, batches, target)
    assert bool(trainer._update_on_kvstore) == (model == 'SparseEmbedding')
    for t, (mine, reference) in enumerate(zip(ours, builtin, strict=True), start=1):
        ulp = np.spacing(np.abs(reference).max())
        np.testing.assert_allclose(mine, reference, rtol=0, atol=4 * t * ulp, err_msg=f'step {t}')
    unseen = ours[-1][VOCAB // 2:]
    if lazy_update:
        np.testing.assert_array_equal(unseen, w0[VOCAB // 2:])
    else:  # weight decay moves rows no batch holds
        assert np.all(unseen != w0[VOCAB // 2:])
    assert not np.allclose(ours[-1][:VOCAB // 2], w0[:VOCAB // 2], rtol=0, atol=1e-3)


# --- the kernel's row_sparse paths, bitwise against the textbook route ---------------------

# A larger weight, so that a step's rows span several of the kernel's vector lanes and a tail.
BIG = (50, 37)
BIG_ROW_SETS = [[0, 3, 4, 17, 49], [], list(range(0, 50, 2)), [25], list(range(50))]
KERNEL_DTYPES = {  # weight dtype -> MyAdam keywords: float16 steps its float32 master copy
    'float32': dict(), 'float16': dict(multi_precision=True)}


def big_grads(rng, dtype):
    return [nd.sparse.row_sparse_array(
        (nd.array(rng.normal(size=(len(rows), BIG[1])) * 3, dtype=dtype),
         nd.array(rows, dtype='int64')), shape=BIG) for rows in BIG_ROW_SETS]


@pytest.mark.parametrize('dtype', KERNEL_DTYPES)
@pytest.mark.parametrize('lazy_update', [True, False], ids=['lazy', 'standard'])
@pytest.mark.parametrize('w_stype', W_STYPES)
@pytest.mark.parametrize('name', CONFIGS)
def test_row_sparse_on_the_kernel_is_bitwise_the_textbook(name, w_stype, lazy_update, dtype,
                                                          variant, rng):
    """Every option, both weight storages, lazy and standard: the kernel's rows (a lazy
    gradient read in its stored rows) equal the textbook's take/scatter bit for bit;
    the textbook route computes float32 (and float16's master copy) as the kernel does."""
    w0 = rng.normal(size=BIG).astype(dtype)
    grads = big_grads(rng, dtype)
    def kwargs():  # a scheduler of its own for each optimizer: they keep state
        return dict(optimizer_kwargs(CONFIGS[name]), lazy_update=lazy_update,
                    **KERNEL_DTYPES[dtype])
    layout = dispatch.CheckedLayouts(str)(0, nd.array(w0, dtype=dtype).tostype(w_stype), grads[0])
    assert dispatch.route(layout, MyAdam(**kwargs())) == 'kernel'
    fast = run(MyAdam(**kwargs()), grads, w0, w_stype)
    slow = run(MyAdam(fused=False, **kwargs()), grads, w0, w_stype)
    for (w, state), (v, reference) in zip(fast, slow, strict=True):
        for a, b in zip([w] + state, [v] + reference, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(fast[-1][0], w0)


def test_a_row_sparse_weight_is_stepped_in_its_own_storage(rng):
    """The kernel writes the weight's stored values where they are: the same buffer, every
    row still stored (the textbook route writes a new row_sparse array back)."""
    w0 = rng.normal(size=BIG).astype('float32')
    weight = nd.array(w0).tostype('row_sparse')
    opt = MyAdam(learning_rate=0.1)
    state = opt.create_state(0, weight)
    before = _data_pointer(weight)
    for g in big_grads(rng, 'float32'):
        opt.update(0, weight, g, state)
    assert _data_pointer(weight) == before
    assert weight.indices.shape[0] == BIG[0]
    assert not np.array_equal(weight.asnumpy(), w0)


def _data_pointer(array):
    """Where ``array``'s values are, once every write queued to it is done (a row_sparse
    array made by ``tostype`` has no storage until its conversion has run)."""
    import ctypes

    from mxnet.base import _LIB, check_call
    array.wait_to_read()
    pointer = ctypes.c_void_p()
    check_call(_LIB.MXNDArrayGetData(array.handle, ctypes.byref(pointer)))
    assert pointer.value is not None
    return pointer.value


BAD_ROWS = [[-1], [BIG[0]], [3, BIG[0] + 7]]


@pytest.mark.parametrize('rows', BAD_ROWS, ids=str)
def test_a_row_outside_the_weight_is_refused_before_anything_changes(rows):
    """The kernel writes where the rows point: a row_sparse gradient built with a row
    outside its weight is refused, naming the parameter and the row."""
    opt = MyAdam(learning_rate=0.1, param_idx2name={0: 'embed'})
    weight = nd.ones(BIG)
    state = opt.create_state(0, weight)
    grad = nd.sparse.row_sparse_array((nd.ones((len(rows), BIG[1])),
                                       nd.array(rows, dtype='int64')), shape=BIG)
    with pytest.raises(ValueError) as error:
        opt.update(0, weight, grad, state)
    bad = next(r for r in rows if not 0 <= r < BIG[0])
    assert str(error.value) == (f"myadam: the row_sparse gradient of parameter 'embed' holds "
                                f"row {bad}, outside its weight's {BIG[0]} rows; nothing was "
                                "updated")
    np.testing.assert_array_equal(weight.asnumpy(), 1.0)
    m, v, count = state
    assert not m.asnumpy().any() and not v.asnumpy().any() and count == [0]
    assert not opt._index_update_count


# name -> (the rows of a gradient of a SHAPE[0]-row weight, what the refusal says of them)
REFUSED_ROWS = {
    'minus_one': ([-1, 2], f"holds row -1, outside its weight's {SHAPE[0]} rows"),
    'one_past_the_end': ([3, SHAPE[0]], f"holds row {SHAPE[0]}, outside its weight's "
                                        f"{SHAPE[0]} rows"),
    'far_past_the_end': ([100000], f"holds row 100000, outside its weight's {SHAPE[0]} rows"),
    'twice': ([2, 2], "holds row 2 2 times, where a row may be once"),
    'twice_unsorted': ([7, 1, 7, 3], "holds row 7 2 times, where a row may be once"),
}
# (fused, lazy_update, the weight: dense, row_sparse storing every row, or storing some):
# the kernel's lazy rows, its densified gradient, the textbook's of both, and the
# textbook's route for a row_sparse weight that does not store every row
EVERY_ROUTE = [(fused, lazy, weight) for fused in (True, False) for lazy in (True, False)
               for weight in ('dense', 'row_sparse')] + [(True, True, 'some_rows')]


@pytest.mark.parametrize('fused, lazy_update, weight_kind', EVERY_ROUTE,
                         ids=[f"{'kernel' if fused else 'textbook'}-{'lazy' if lazy else 'dense'}-{weight}"
                              for fused, lazy, weight in EVERY_ROUTE])
@pytest.mark.parametrize('case', REFUSED_ROWS)
@pytest.mark.parametrize('same_object', [False, True], ids=['new_gradient', 'rows_copied_in'])
def test_every_route_refuses_a_row_outside_the_weight_or_a_row_twice(case, fused, lazy_update,
                                                                     weight_kind, same_object):
    """The same gradient is refused by every route, before anything changes: no row is
    dropped, nothing is written outside the weight (the textbook route wrote there and
    the process aborted), no route picks a meaning for a row held twice. Also when the
    bad rows come in the gradient object of the good step (copied into it, as a backward
    pass writes a Trainer's gradient), whose update call the optimizer may reuse."""
    rows, what = REFUSED_ROWS[case]
    opt = MyAdam(learning_rate=0.1, fused=fused, lazy_update=lazy_update,
                 param_idx2name={0: 'embed'})
    dense = np.arange(np.prod(SHAPE), dtype='float32').reshape(SHAPE) / 10
    if weight_kind == 'some_rows':
        weight = nd.sparse.row_sparse_array((dense[[0, 4, 9]], [0, 4, 9]), shape=SHAPE)
    else:
        weight = nd.array(dense).tostype('default' if weight_kind == 'dense' else 'row_sparse')
    state = opt.create_state(0, weight)
    good = nd.sparse.row_sparse_array((np.ones((2, SHAPE[1]), 'float32'), [1, 4]), shape=SHAPE)
    opt.update(0, weight, good, state)
    before = [weight.asnumpy()] + state_arrays(state)
    grad = nd.sparse.row_sparse_array((np.full((len(rows), SHAPE[1]), 0.5, 'float32'),
                                       nd.array(rows, dtype='int64')), shape=SHAPE)
    if same_object:
        grad = grad.copyto(good)
    with pytest.raises(ValueError) as error:
        opt.update(0, weight, grad, state)
    assert str(error.value) == (f"myadam: the row_sparse gradient of parameter 'embed' {what}; "
                                "nothing was updated")
    after = [weight.asnumpy()] + state_arrays(state)
    assert len(after) == len(before)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert opt._index_update_count == {0: 1} and opt.num_update == 1


STORED = [  # (rows stored of 7, as row_sparse_array is given them)
    [], [3], [0, 2, 3], [0, 1, 2, 3, 4, 5], list(range(7))]


@pytest.mark.parametrize('rows', STORED, ids=str)
def test_stored_rows_are_read_without_a_copy(rows):
    """mxnet_internals.stored_rows (MXNet's DLPack view) against the copy Python's indices
    makes."""
    array = nd.sparse.row_sparse_array((np.ones((len(rows), 4), np.float32), rows), shape=(7, 4))
    assert mxnet_internals.stored_rows(array) == array.indices.shape[0] == len(rows)


@pytest.mark.parametrize('context', [mx.cpu(0), mx.cpu(1), mx.cpu_pinned(0)], ids=str)
@pytest.mark.parametrize('dtype, row_shape', [('float32', (4,)), ('float16', (2, 3)),
                                              ('float64', ()), ('float32', (1,) * 23),
                                              ('float32', (1,) * 31)],
                         ids=['float32', 'float16', 'float64', 'float32-24-dimensions',
                              'float32-32-dimensions'])
@pytest.mark.parametrize('rows', STORED + [list(range(0, 4000, 3))], ids=lambda r: str(r[:4]))
def test_the_kernel_reads_the_rows_python_copies(rows, dtype, row_shape, context):
    """kernel.sparse_rows (read from MXNet's serialization of the array) against Python's
    indices (a copy by an engine operation), in every storage a gradient comes in, up to
    MXNet's 32 dimensions."""
    count = max([7, *(r + 1 for r in rows)])
    values = np.ones((len(rows), *row_shape), dtype)
    array = nd.sparse.row_sparse_array((values, rows), shape=(count, *row_shape),
                                       ctx=context, dtype=dtype)
    got = kernel.sparse_rows(array, count)
    assert got.dtype == np.int64 and not got.flags.writeable
    np.testing.assert_array_equal(got, array.indices.asnumpy())
    np.testing.assert_array_equal(got, np.array(rows, dtype=np.int64))


@settings(max_examples=200 * (10 if THOROUGH else 1))
@given(rows=st.lists(st.integers(-3, 60), max_size=12), weight_rows=st.integers(0, 64))
def test_the_kernel_reads_rows_only_when_they_are_good(rows, weight_rows):
    """Generated rows, in any order, repeated, negative or past the weight: the kernel
    gives them when each is below the weight's rows and they are strictly increasing (as
    MXNet keeps them), else None, and the caller reads them from ``indices`` (whose
    checks say what is wrong, tested with the routes above)."""
    array = nd.sparse.row_sparse_array(
        (np.ones((len(rows), 2), np.float32), np.array(rows, dtype=np.int64)),
        shape=(max([64, *(r + 1 for r in rows)]), 2))
    stored = array.indices.asnumpy()  # what MXNet keeps of them
    good = bool(np.all(stored >= 0) and np.all(stored < weight_rows)
                and np.all(np.diff(stored) > 0))
    got = kernel.sparse_rows(array, weight_rows)
    if good:
        np.testing.assert_array_equal(got, stored)
    else:
        assert got is None


def test_the_kernel_reads_the_rows_of_a_gradient_being_written():
    """The pending writes to the array are waited for: its rows once they are done."""
    a = nd.random.normal(shape=(400, 400))
    busy = nd.dot(a, a)  # keeps the engine busy while the gradient's write is queued
    grad = nd.sparse.row_sparse_array((np.ones((2, 4), np.float32), [1, 5]), shape=(9, 4))
    nd.sparse.retain(nd.sparse.row_sparse_array(
        (np.ones((3, 4), np.float32), [2, 4, 8]), shape=(9, 4)) + busy[:9, :4].tostype(
        'row_sparse'), nd.array([2, 8], dtype='int64'), out=grad)
    np.testing.assert_array_equal(kernel.sparse_rows(grad, 9), [2, 8])


def test_rows_in_numpy_shape_mode_come_from_the_copy():
    """Under NumPy shape semantics MXNet refuses to serialize a sparse array: the kernel
    says so (None) and the rows come from Python's indices."""
    with mx.util.np_shape(True):
        array = nd.sparse.row_sparse_array((np.ones((2, 3), np.float32), [1, 4]), shape=(6, 3))
        assert kernel.sparse_rows(array, 6) is None
        np.testing.assert_array_equal(dispatch._rows(array, 6, 'p'), [1, 4])


@pytest.mark.parametrize('stype', ['default', 'csr'])
def test_the_kernel_reads_the_rows_of_row_sparse_arrays_only(stype):
    """A dense or csr array's serialization has no rows to read: None."""
    array = nd.array(np.arange(12, dtype=np.float32).reshape(4, 3)).tostype(stype)
    assert kernel.sparse_rows(array, 4) is None


def test_the_kernel_raises_the_error_of_the_gradients_failed_writer():
    """A gradient whose writer failed in MXNet's engine (here a Cholesky factorization of
    a matrix that has none) is MXNet's error out of sparse_rows, not None (which would send
    the caller to ``indices``)."""
    failed = nd.linalg.potrf(nd.array([[-1., 0.], [0., -1.]])).tostype('row_sparse')
    with pytest.raises(mx.base.MXNetError, match='Check failed'):
        kernel.sparse_rows(failed, 2)
    nd.waitall()  # the error is not left behind for later calls


AT_MOST = kernel.SERIALIZED_MAX // 512  # rows of 128 float32 the kernel still reads


@pytest.mark.parametrize('stored, row_shape, dtype', [
    (100, (128,), np.float32), (AT_MOST, (128,), np.float32), (AT_MOST + 1, (128,), np.float32),
    (AT_MOST + 1, (64, 2), np.float32), (AT_MOST, (64,), np.float64),
    (AT_MOST + 1, (64,), np.float64), (2 * AT_MOST, (128,), np.float16),
    (2 * AT_MOST + 1, (128,), np.float16)],
    ids=lambda v: getattr(v, '__name__', str(v)))
def test_the_rows_of_a_gradient_with_many_values_come_from_indices(stored, row_shape, dtype):
    """The kernel reads the rows from a serialization that copies the values too: up to
    kernel.SERIALIZED_MAX bytes of them it does, past it it gives None (each dtype on both
    sides of the bound) and the dispatch reads Python's indices: the same rows either way."""
    ids = np.arange(stored) * 3
    shape = (3 * stored, *row_shape)
    grad = nd.sparse.row_sparse_array((np.ones((stored, *row_shape), dtype), ids), shape=shape)
    got = kernel.sparse_rows(grad, shape[0])
    if stored * int(np.prod(row_shape)) * np.dtype(dtype).itemsize <= kernel.SERIALIZED_MAX:
        np.testing.assert_array_equal(got, ids)
    else:
        assert got is None
    np.testing.assert_array_equal(dispatch._rows(grad, shape[0], 'p'), ids)
