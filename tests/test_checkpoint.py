"""Checkpoints: save_states + save_parameters, then load into a fresh Trainer, resume bitwise.

Every row trains 12 steps without a break, and again with a checkpoint after step
6 loaded into a new network and Trainer; the two must end bitwise equal (weights,
optimizer states, step counts, skip counter, schedule). Damaged files must raise
a clear error from ``adam_plugin.checkpoint.load_states`` and change nothing.
Files that try to run code are in test_checkpoint_attacks.py.
"""
import copyreg
import functools
import io
import json
import pickle
import struct
import subprocess
import sys
import threading

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd, npx

import adam_plugin
from adam_plugin import checkpoint
from adam_plugin.chapter import linreg
from adam_plugin.checkpoint import __main__ as checkpoint_main, rawarray, safe
from checkpoints import (
    BATCH,
    FLOAT64,
    INT64,
    LOADERS,
    NP_SHAPE_MAGIC,
    PLACEMENTS,
    ROWS,
    SAVE_AFTER,
    STEPS,
    Job,
    LinReg,
    array_bytes,
    assert_same,
    batches,
    csr_bytes,
    dense_bytes,
    inspect,
    row_sparse_bytes,
    save,
    values,
)
from configs import CONFIGS, optimizer_kwargs
from helpers import register_custom_op


def save_tampered(job, make, tmp_path, name='bad.states'):
    """The job's states file changed by ``make(its bytes, tmp_path)``, saved as ``name``."""
    _, good = save(job, tmp_path)
    fname = tmp_path / name
    fname.write_bytes(make(good.read_bytes(), tmp_path))
    return fname


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('placement', PLACEMENTS)
@pytest.mark.parametrize('row', ROWS)
def test_resume_is_bitwise_identical(row, placement, loader, tmp_path):
    straight = Job(row, placement).train(range(1, STEPS + 1)).snapshot()

    first = Job(row, placement).train(range(1, SAVE_AFTER + 1))
    params, states = save(first, tmp_path)
    resumed = Job(row, placement, init=-1.0)  # other weights, to show the load matters
    resumed.net.load_parameters(str(params), ctx=resumed.ctxs)
    LOADERS[loader](resumed.trainer, states)
    got = resumed.train(range(SAVE_AFTER + 1, STEPS + 1)).snapshot()

    assert_same(got, straight)
    assert not np.any(straight['weights'][0] == np.array(0.3, first.dtype)), 'nothing trained'
    if ROWS[row][2]:
        assert straight['num_skipped'] > 0
    if ROWS[row][0].get('multi_precision'):
        assert straight['weights'][0].dtype == np.float16
        assert any(s.dtype == np.float32 for s in straight['states'])  # the master copies


def other_states(tmp_path, optimizer, options, in_units=linreg.NUM_INPUTS):
    """A states file from another Trainer: another optimizer or another network."""
    net = LinReg(in_units)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), optimizer, options)
    with autograd.record():
        loss = net(nd.ones((2, in_units))).sum()
    loss.backward()
    trainer.step(2)
    fname = tmp_path / 'other.states'
    trainer.save_states(str(fname))
    return fname.read_bytes()


def resaved(good, change):
    """The good file (our own, so plain pickle may read it) with ``change(states, optimizer)``."""
    states, optimizer = pickle.loads(good)
    return pickle.dumps(change(states, optimizer))


# name -> (how to make the bad file from a good one, what the error must say)
BAD_FILES = {
    'truncated': (lambda good, tmp: good[:len(good) // 2], 'truncated or corrupted'),
    'empty': (lambda good, tmp: b'', 'truncated or corrupted'),
    'garbage': (lambda good, tmp: bytes(range(256)) * 4, 'truncated or corrupted'),
    'one_flipped_byte': (lambda good, tmp: good[:1] + b'\xff' + good[2:],
                         'truncated or corrupted'),
    'not_a_states_pickle': (lambda good, tmp: pickle.dumps({'w': 1.0}),
                            'does not hold (states, optimizer)'),
    'wrong_optimizer': (lambda good, tmp: other_states(tmp, 'sgd', {'momentum': 0.9}),
                        'saved for optimizer SGD, this Trainer uses MyAdam'),
    'wrong_network': (lambda good, tmp: other_states(tmp, 'myadam', {}, in_units=3),
                      "the states were saved for a parameter 1 of shape (3, 1), the Trainer's"),
    'more_parameters': (lambda good, tmp: resaved(good, lambda s, o: ({**s, 2: s[0]}, o)),
                        'holds a state for parameter index 2, this Trainer has 2'),
    'a_parameter_index_too_long_to_print': (
        lambda good, tmp: resaved(good, lambda s, o: ({**s, 10 ** 5000: s[0]}, o)),
        'holds a state for parameter index of 4153 hex digits, this Trainer has 2'),
    'two_states_share_a_step_count': (
        lambda good, tmp: resaved(good, lambda s, o: ({0: s[0], 1: s[1][:-1] + s[0][-1:]}, o)),
        "one step count is held twice, by the states of parameters '"),
    'm_and_v_one_array': (
        lambda good, tmp: resaved(good, lambda s, o: ({0: s[0][:1] * 2 + s[0][2:], 1: s[1]}, o)),
        "one array is held twice, by the states of parameter '"),
    'second_element_not_an_optimizer': (
        lambda good, tmp: resaved(good, lambda s, o: (s, o.__getstate__())),
        'its second element is dict, not an optimizer'),
}


@pytest.mark.parametrize('placement', PLACEMENTS)
@pytest.mark.parametrize('bad', BAD_FILES)
def test_a_damaged_file_raises_and_changes_nothing(bad, placement, tmp_path):
    make, message = BAD_FILES[bad]
    straight = Job('everything', placement).train(range(1, STEPS + 1)).snapshot()

    job = Job('everything', placement).train(range(1, SAVE_AFTER + 1))
    fname = save_tampered(job, make, tmp_path)
    before = job.snapshot()
    optimizer = job.trainer.optimizer
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert str(fname) in str(err.value) and message in str(err.value)
    assert 'The Trainer was not changed' in str(err.value)
    assert job.trainer.optimizer is optimizer
    assert_same(job.snapshot(), before)
    assert_same(job.train(range(SAVE_AFTER + 1, STEPS + 1)).snapshot(), straight)


def test_an_interrupted_save_keeps_the_previous_file(tmp_path):
    job = Job('defaults', 'one_device').train(range(1, 3))
    fname = tmp_path / 'trainer.states'
    checkpoint.save_states(job.trainer, fname)
    previous = fname.read_bytes()

    def dies_mid_write(name):
        with open(name, 'wb') as f:
            f.write(previous[:10])
        raise OSError('simulated: the disk filled up')

    job.trainer.save_states = dies_mid_write
    with pytest.raises(OSError, match='simulated'):
        checkpoint.save_states(job.trainer, fname)
    assert fname.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ['trainer.states']


@pytest.mark.parametrize('placement', PLACEMENTS)
def test_checkpoint_save_states_writes_what_the_trainer_writes(placement, tmp_path):
    job = Job('everything', placement).train(range(1, 4))
    # ours first: it takes in an update still queued in MXNet's engine, whose step count
    # a save before that writes as builtins.int(t) (see adam_plugin.engine.QueuedCount)
    checkpoint.save_states(job.trainer, tmp_path / 'ours.states')
    job.trainer.save_states(str(tmp_path / 'mxnet.states'))
    assert (tmp_path / 'ours.states').read_bytes() == (tmp_path / 'mxnet.states').read_bytes()


def resume(make, train, save_after, steps, tmp_path, loader):
    """Weights after training ``steps`` straight, and resumed from a checkpoint."""
    straight = make(0.5)
    train(*straight, range(1, steps + 1))
    first = make(0.5)
    train(*first, range(1, save_after + 1))
    checkpoint.save_states(first[1], tmp_path / 'trainer.states')
    resumed = make(-1.0)
    for mine, theirs in zip(params(resumed), params(first), strict=True):
        mine.set_data(weight(theirs))
    LOADERS[loader](resumed[1], tmp_path / 'trainer.states')
    train(*resumed, range(save_after + 1, steps + 1))
    return [[weight(p).asnumpy() for p in params(job)] for job in (straight, resumed)]


def params(job):
    return job[0].collect_params().values()


def weight(param):
    """All of a parameter's rows, dense or row_sparse."""
    if param._stype == 'default':
        return param.data()
    return param.row_sparse_data(nd.arange(param.shape[0]))


def sparse_embedding(init):
    """MXNet's own SGD with momentum on a row_sparse weight: its states are row_sparse."""
    emb = gluon.contrib.nn.SparseEmbedding(8, 3)
    emb.initialize(mx.init.Constant(init))
    return emb, gluon.Trainer(emb.collect_params(), 'sgd',
                              {'learning_rate': 0.1, 'momentum': 0.9, 'wd': 0.01})


class _Held(mx.operator.CustomOp):
    """Identity whose forward waits for GATE: everything after it stays pending."""
    def forward(self, is_train, req, in_data, out_data, aux):
        GATE.wait()
        self.assign(out_data[0], req[0], in_data[0])

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        self.assign(in_grad[0], req[0], out_grad[0])


register_custom_op('adam_plugin_tests_held', _Held)


GATE = threading.Event()
HOLD = 1.0  # seconds a held step stays pending, ample for a save to start


def train_embedding(emb, trainer, steps, held_step=None):
    """One step for each t in ``steps``; step ``held_step``'s update is still pending when
    the step returns, until HOLD seconds later."""
    for t in steps:
        if t == held_step:
            GATE.clear()
            threading.Timer(HOLD, GATE.set).start()
        with autograd.record():
            out = emb(nd.array([[t % 8, (3 * t) % 8]]))
            if t == held_step:
                out = nd.Custom(out, op_type='adam_plugin_tests_held')
            loss = (out ** 2).sum()
        loss.backward()
        trainer.step(1)


@pytest.mark.parametrize('loader', LOADERS)
def test_row_sparse_states_resume_bitwise(loader, tmp_path):
    straight, resumed = resume(sparse_embedding, train_embedding, 2, 6, tmp_path, loader)
    fname = tmp_path / 'trainer.states'
    state = json.loads(inspect(fname, '--json').stdout)['states']['0']
    assert (state['shape'], state['stype'], state['class']) == (
        [8, 3], 'row_sparse', 'mxnet.ndarray.sparse.RowSparseNDArray')
    np.testing.assert_array_equal(resumed[0], straight[0])
    assert not np.all(straight[0] == 0.5)


# A row_sparse float32 array of shape (8, 3) whose storage shape says (0, 3).
EMPTY_STORAGE_HEADER = struct.pack('<Iii2qi2q', 0xF993FAC9, 1, 2, 0, 3, 2, 8, 3)


@pytest.mark.parametrize('loader', LOADERS)
def test_a_state_saved_while_its_first_update_runs_resumes_bitwise(loader, tmp_path):
    """MXNet's ``NDArray::Save`` writes a sparse array's storage shape before it waits
    for the array's pending writes. Saved right after the first step, the row_sparse
    state records the empty storage it was made with, then all 8 rows. MXNet's loader
    takes the storage shape from the indices when the saved one is empty; so must ours."""
    straight, resumed = resume(sparse_embedding, functools.partial(train_embedding, held_step=1),
                               1, 4, tmp_path, loader)
    assert EMPTY_STORAGE_HEADER in (tmp_path / 'trainer.states').read_bytes()
    np.testing.assert_array_equal(resumed[0], straight[0])
    assert not np.all(straight[0] == 0.5)


@pytest.fixture
def numpy_interface():
    npx.set_np()
    try:
        yield
    finally:
        npx.reset_np()


def dense_numpy(init):
    """A Dense layer and 'myadam' under the NumPy interface: the states file is saved
    in NumPy shape semantics."""
    net = gluon.nn.Dense(1, in_units=linreg.NUM_INPUTS)
    net.initialize(mx.init.Constant(init))
    return net, gluon.Trainer(net.collect_params(), 'myadam', optimizer_kwargs({'amsgrad': True}))


def train_dense(net, trainer, steps):
    data = batches('float32')
    for t in steps:
        X, y = (mx.np.array(a.asnumpy()) for a in data[t - 1])
        with autograd.record():
            loss = ((net(X).reshape(-1) - y) ** 2).sum()
        loss.backward()
        trainer.step(BATCH)


@pytest.mark.parametrize('loader', LOADERS)
def test_numpy_interface_states_resume_bitwise(loader, numpy_interface, tmp_path):
    straight, resumed = resume(dense_numpy, train_dense, 4, 8, tmp_path, loader)
    for got, want in zip(resumed, straight, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.all(straight[0] == 0.5)


def test_a_numpy_interface_file_is_refused_outside_it(tmp_path):
    npx.set_np()
    try:
        net, trainer = dense_numpy(0.5)
        train_dense(net, trainer, range(1, 3))
        checkpoint.save_states(trainer, tmp_path / 'trainer.states')
    finally:
        npx.reset_np()
    net, trainer = dense_numpy(0.5)  # the same network, outside the NumPy interface
    optimizer = trainer.optimizer
    with pytest.raises(ValueError, match='ndarray was saved in np shape semantics'):
        checkpoint.load_states(trainer, tmp_path / 'trainer.states')
    assert trainer.optimizer is optimizer and trainer._updaters[0].states == {}
    assert np.all(net.weight.data().asnumpy() == 0.5)


def test_every_array_kind_is_rebuilt_exactly():
    """Arrays of every storage type, NumPy-interface arrays and NumPy scalars, pickled by
    pickle itself, come back equal: same class, storage type, dtype, shape and values."""
    optimizer = adam_plugin.MyAdam(learning_rate=np.float32(0.25))
    arrays = (nd.array([[1, 2], [3, 4]], dtype='float16'),
              nd.sparse.row_sparse_array(([[1.0, 2.0], [3, 4]], [1, 3]), shape=(5, 2)),
              nd.sparse.csr_matrix(([1.0, 2, 3], [0, 2, 1], [0, 2, 2, 3]), shape=(3, 4)),
              nd.array([7, 8], dtype='int64'))
    for numpy_interface in (False, True):  # its arrays are saved in NumPy shape semantics
        with mx.util.np_shape(numpy_interface), mx.util.np_array(numpy_interface):
            saved = (mx.np.array([[1.5, 2.5]]), mx.np.array(3.0)) if numpy_interface else arrays
            states, record = safe.read(io.BytesIO(pickle.dumps(({0: saved}, optimizer))),
                                       [adam_plugin.MyAdam], lambda cls: cls())
            got = safe.build(states)[0]
            for g, want in zip(got, saved, strict=True):
                assert type(g) is type(want)
                assert (g.stype, g.dtype, g.shape) == (want.stype, want.dtype, want.shape)
                np.testing.assert_array_equal(g.asnumpy(), want.asnumpy())
    lr = safe.build(record).lr
    assert type(lr) is np.float32 and lr == 0.25


@pytest.mark.parametrize('options', [(), pytest.param(('--json',), marks=pytest.mark.slow)])
def test_inspect_runs_as_a_module(options, tmp_path):
    """The command line a user types prints what :func:`inspect` does in this process."""
    _, fname = save(Job('defaults', 'one_device').train(range(1, 3)), tmp_path)
    done = subprocess.run([sys.executable, '-m', 'adam_plugin.checkpoint', 'inspect',
                           str(fname), *options], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, inspect(fname, *options).stdout, '')


def test_inspect_prints_what_the_file_holds(tmp_path):
    job = Job('everything', 'two_devices_trainer_updates').train(range(1, SAVE_AFTER + 1))
    _, fname = save(job, tmp_path)
    done = inspect(fname, '--json')
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    opt = job.trainer.optimizer
    assert info['optimizer'] == 'adam_plugin.optimizer.MyAdam'
    hyper = info['hyperparameters']
    for name, value in CONFIGS['everything'].items():
        if name not in ('lr_scheduler', 'rescale_grad'):  # Trainer.step sets rescale_grad
            assert hyper[name] == value, name
    assert (hyper['lr'], hyper['rescale_grad']) == (opt.lr, opt.rescale_grad)
    assert set(hyper) == set(vars(opt)) - {'param_dict', '_layouts', '_carrier', '_bad',
                                           '_engine', '_values', '_batches',
                                           '_counts',
                                           'lr_scheduler',
                                           'num_update', 'begin_num_update', 'num_skipped',
                                           '_all_index_update_counts', '_index_update_count'}
    scheduler = info['lr_scheduler']
    assert scheduler['class'] == 'mxnet.lr_scheduler.FactorScheduler'
    assert (scheduler['step'], scheduler['factor']) == (5, 0.5)
    assert info['update_counts'] == {
        'num_update': opt.num_update, 'begin_num_update': 0, 'num_skipped': opt.num_skipped,
        'per_device': {str(d): {str(i): n for i, n in c.items()}
                       for d, c in opt._all_index_update_counts.items()}}
    assert opt.num_skipped > 0 and opt.num_update == SAVE_AFTER
    states = job.trainer._updaters[0].states
    assert info['states'] == {  # (m, v, vmax, [t]); index 1, w, skipped the NaN step
        str(i): [{'shape': list(a.shape), 'dtype': 'float32', 'stype': 'default',
                  'device': str(a.context), 'class': 'mxnet.ndarray.ndarray.NDArray'}
                 for a in states[i][:-1]] + [{'step_count': SAVE_AFTER - i}] for i in states}

    text = inspect(fname)
    assert text.returncode == 0, text.stderr
    assert 'optimizer: adam_plugin.optimizer.MyAdam' in text.stdout
    assert '  beta1 = 0.85' in text.stdout
    assert f'update counts: num_update = {SAVE_AFTER}' in text.stdout
    assert '  parameter 1: (float32[2x1], float32[2x1], float32[2x1], t=5)' in text.stdout


# The damaged files that are refused on their own, without a Trainer to fit.
@pytest.mark.parametrize('bad', ['truncated', 'garbage', 'not_a_states_pickle',
                                 'second_element_not_an_optimizer'])
def test_inspect_refuses_a_damaged_file_as_load_states_does(bad, tmp_path):
    make, message = BAD_FILES[bad]
    job = Job('defaults', 'one_device').train(range(1, 3))
    fname = save_tampered(job, make, tmp_path)
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    done = inspect(fname)
    assert (done.returncode, done.stdout) == (1, '')
    assert message in done.stderr
    assert done.stderr.strip() == str(err.value).replace(' The Trainer was not changed.', '')


def test_array_bytes_are_written_as_mxnet_writes_them():
    written = {
        'default': (nd.array(np.arange(6, dtype='float32').reshape(2, 3)), dense_bytes()),
        'row_sparse': (nd.sparse.row_sparse_array((np.arange(4, dtype='float32').reshape(2, 2), [1, 3]),
                                                  shape=(5, 2)), row_sparse_bytes([1, 3])),
        'no_rows': (nd.sparse.zeros('row_sparse', (5, 2)), row_sparse_bytes([])),
        'csr': (nd.sparse.csr_matrix((np.arange(3, dtype='float32'), [0, 2, 1], [0, 2, 2, 3]), shape=(3, 4)),
                csr_bytes([0, 2, 2, 3], [0, 2, 1])),
    }
    for name, (array, raw) in written.items():
        assert bytes(array.__getstate__()['handle']) == raw, name
    with mx.util.np_shape(True):
        assert bytes(nd.zeros((0, 3)).__getstate__()['handle']) == array_bytes(
            (0, 3), b'', magic=NP_SHAPE_MAGIC)


def mxnet_loads(raw, np_shape):
    """MXNet's own parser (``NDArray.__setstate__``) on ``raw``: the array it makes."""
    with mx.util.np_shape(np_shape):
        array = nd.NDArray(None)
        array.__setstate__({'handle': bytearray(raw)})
        return array


# name -> (raw bytes, the Header parse returns): MXNet loads each as that array.
ACCEPTED_ARRAYS = {
    'dense': (dense_bytes(), ('default', (2, 3), 'float32', 'cpu(0)', False)),
    'cpu_pinned_float64': (array_bytes((2,), values(2, '<f8'), device=(3, 2), dtype=FLOAT64),
                           ('default', (2,), 'float64', 'cpu_pinned(2)', False)),
    '32_dimensions': (dense_bytes((1,) * 32), ('default', (1,) * 32, 'float32', 'cpu(0)', False)),
    'zero_size_in_np_shape': (array_bytes((0, 3), b'', magic=NP_SHAPE_MAGIC),
                              ('default', (0, 3), 'float32', 'cpu(0)', True)),
    'scalar_in_np_shape': (array_bytes((), values(1), magic=NP_SHAPE_MAGIC),
                           ('default', (), 'float32', 'cpu(0)', True)),
    'row_sparse': (row_sparse_bytes([1, 3]), ('row_sparse', (5, 2), 'float32', 'cpu(0)', False)),
    'row_sparse_no_rows': (row_sparse_bytes([]),
                           ('row_sparse', (5, 2), 'float32', 'cpu(0)', False)),
    'row_sparse_one_row': (row_sparse_bytes([2]),
                           ('row_sparse', (5, 2), 'float32', 'cpu(0)', False)),
    'row_sparse_first_and_last_rows': (row_sparse_bytes([0, 4]),
                                       ('row_sparse', (5, 2), 'float32', 'cpu(0)', False)),
    'csr': (csr_bytes([0, 2, 2, 3], [0, 2, 1]), ('csr', (3, 4), 'float32', 'cpu(0)', False)),
    'csr_last_column_empty_rows': (csr_bytes([0, 0, 0, 1], [3]),
                                   ('csr', (3, 4), 'float32', 'cpu(0)', False)),
    # Saved while a write was pending (see test_a_state_saved_while_its_first_update_runs_...):
    # the storage shape is empty, and MXNet takes it from the indices.
    'row_sparse_storage_saved_empty': (
        array_bytes((5, 2), values(4), stype=1, storage_shape=(0, 2),
                    aux=[(INT64, (2,), np.array([1, 3], '<i8').tobytes())]),
        ('row_sparse', (5, 2), 'float32', 'cpu(0)', False)),
    'csr_storage_saved_empty': (
        array_bytes((3, 4), values(3), stype=2, storage_shape=(0,),
                    aux=[(INT64, (4,), np.array([0, 2, 2, 3], '<i8').tobytes()),
                         (INT64, (3,), np.array([0, 2, 1], '<i8').tobytes())]),
        ('csr', (3, 4), 'float32', 'cpu(0)', False)),
}


@pytest.mark.parametrize('row', ACCEPTED_ARRAYS)
def test_array_bytes_mxnet_saves_are_parsed(row):
    raw, header = ACCEPTED_ARRAYS[row]
    got = rawarray.parse(raw)
    assert got == rawarray.Header(*header)
    assert type(got.np_shape) is bool
    array = mxnet_loads(raw, got.np_shape)
    assert (array.stype, array.shape, array.dtype) == (got.stype, got.shape, np.dtype(got.dtype))


def with_field(raw, offset, fmt, value):
    raw = bytearray(raw)
    struct.pack_into(fmt, raw, offset, value)
    return bytes(raw)


# name -> (raw bytes, parse's whole message). Offsets into dense_bytes(): magic 0, storage
# type 4, ndim 8, sizes 12, device 28, device id 32, dtype flag 36, data 40.
REFUSED_ARRAYS = {
    'cut_in_its_data': (dense_bytes()[:-2],
                        'it ends after 62 bytes, in the middle of the array'),
    'cut_in_its_header': (dense_bytes()[:30], 'it ends after 30 bytes, in the middle of the array'),
    'more_elements_than_int64_counts': (array_bytes((2**32, 2**32), b''),
                                        'it ends after 40 bytes, in the middle of the array'),
    'bytes_appended': (dense_bytes() + b'\0' * 4, 'it has 4 bytes after the array'),
    'not_an_array': (with_field(dense_bytes(), 0, '<I', 0x12345678),
                     "it starts with 0x12345678, not an MXNet 1.x array's magic number"),
    'unknown_storage_type': (with_field(dense_bytes(), 4, '<i', 7),
                             'it has an unknown storage type'),
    'sparse_in_np_shape': (with_field(row_sparse_bytes([1, 3]), 0, '<I', NP_SHAPE_MAGIC),
                           'it has an unknown storage type'),  # MXNet cannot save one
    'no_dimensions_outside_np_shape': (array_bytes((), values(1)), 'it has 0 dimensions'),
    '33_dimensions': (dense_bytes((1,) * 33), 'it has 33 dimensions'),
    'negative_size': (with_field(dense_bytes(), 12, '<q', -1), 'it has shape (-1, 3)'),
    'unknown_dtype_flag': (with_field(dense_bytes(), 36, '<i', 99),
                           'it has the unknown dtype flag 99'),
    'dtype_flag_without_a_numpy_dtype': (with_field(dense_bytes(), 36, '<i', -1),
                                         'it has the unknown dtype flag -1'),
    'unknown_device_type': (with_field(dense_bytes(), 28, '<i', 4),
                            'it names the unknown device (4, 0)'),
    'negative_device_id': (with_field(dense_bytes(), 32, '<i', -1),
                           'it names the unknown device (1, -1)'),
    **{f'row_sparse_rows_{name}': (row_sparse_bytes(rows), "its row_sparse rows do not fit its shape")
       for name, rows in [('past_the_end', [1, 5]), ('unsorted', [3, 1]), ('repeated', [1, 1]),
                          ('negative', [-1, 3]), ('last_past_the_end', [0, 1, 7]),
                          ('one_past_the_end', [5])]},
    'row_sparse_rows_of_floats': (row_sparse_bytes([1, 3], row_flag=FLOAT64),
                                  "its row_sparse rows do not fit its shape"),
    'row_sparse_storage_of_other_width': (row_sparse_bytes([1, 3], storage_shape=(2, 3)),
                                          "its row_sparse rows do not fit its shape"),
    # MXNet's parser would read the indices from the values' bytes: only an empty storage shape is derived.
    'row_sparse_storage_of_fewer_rows': (
        array_bytes((5, 2), values(4), stype=1, storage_shape=(1, 2),
                    aux=[(INT64, (2,), np.array([1, 3], '<i8').tobytes())]),
        'it has 8 bytes after the array'),
    'row_sparse_storage_saved_empty_rows_in_two_dimensions': (
        array_bytes((5, 2), values(4), stype=1, storage_shape=(0, 2),
                    aux=[(INT64, (2, 2), np.array([[0, 1], [3, 4]], '<i8').tobytes())]),
        "its row_sparse rows do not fit its shape"),
    **{f'csr_{name}': (csr_bytes(indptr, indices, **kw), "its csr indices do not fit its shape")
       for name, indptr, indices, kw in [
           ('column_past_the_end', [0, 2, 2, 3], [0, 4, 1], {}),
           ('indptr_decreasing', [0, 2, 1, 3], [0, 2, 1], {}),
           ('indptr_not_from_zero', [1, 2, 2, 3], [0, 2, 1], {}),
           ('indptr_short', [0, 2, 3], [0, 2, 1], {}),
           ('float_indices', [0, 2, 2, 3], [0, 2, 1], {'index_flag': FLOAT64})]},
}


@pytest.mark.parametrize('row', REFUSED_ARRAYS)
def test_array_bytes_that_are_not_an_array_are_refused(row):
    raw, message = REFUSED_ARRAYS[row]
    with pytest.raises(ValueError) as err:
        rawarray.parse(raw)
    assert str(err.value) == message


class Reduced:
    """Pickles as ``func(*args)``, then given ``state``. With ``copyreg.__newobj__`` as
    ``func``, as ``args[0].__new__(*args)`` (the NEWOBJ opcode), its ``__init__`` not called."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    @property
    def __class__(self):  # pickle requires NEWOBJ's class to be the object's
        return self.args[0] if self.func is copyreg.__newobj__ else Reduced

    def __reduce__(self):
        return self.func, self.args, self.state


def forged(change):
    """The good file with ``change(states, optimizer)`` (a new pair, or None: changed in place)."""
    def make(good, tmp):
        states, optimizer = pickle.loads(good)
        return pickle.dumps(change(states, optimizer) or (states, optimizer))
    return make


def first_array(states):
    return states[0][0]


def array_handle(states):
    return first_array(states).__getstate__()['handle']


def set_state(states, state):
    states[0] = state


def set_name(optimizer, value):
    optimizer.idx2name = {0: value}


def on_device(raw, device_type):
    """Dense array bytes with another device type (after the int32 ndim and int64 sizes)."""
    ndim, = struct.unpack_from('<i', raw, 8)
    return bytearray(with_field(raw, 12 + 8 * ndim, '<i', device_type))


DTYPE_STATE = np.dtype('float32').__reduce__()[2]  # (3, '<', None, None, None, -1, -1, 0)

# name -> (how to make the file from a good one, the words of the error). Names a
# checkpoint holds, rebuilt as no checkpoint rebuilds them.
FORGED_FILES = {
    'array_made_without_calling_it': (forged(lambda s, o: set_state(s, (Reduced(
        copyreg.__newobj__, (nd.NDArray, None), {'handle': array_handle(s)}),))),
        ': mxnet.ndarray.ndarray.NDArray is rebuilt from arguments (None,), '
        'which no checkpoint does.'),
    'array_state_with_more_keys': (forged(lambda s, o: set_state(s, (Reduced(
        nd.NDArray, (None,), {'handle': array_handle(s), 'extra': 1}),))),
        ": mxnet.ndarray.ndarray.NDArray is rebuilt with state {'extra': 1, 'handle': "),
    'array_of_an_unknown_device': (forged(lambda s, o: set_state(s, (Reduced(
        nd.NDArray, (None,), {'handle': on_device(array_handle(s), 4)}), *s[0][1:]))),
        ": an array's raw bytes are not an MXNet array: it names the unknown device (4, 0)."),
    'dtype_made_without_calling_it': (forged(lambda s, o: set_name(o, Reduced(
        copyreg.__newobj__, (np.dtype, 'f8', False, True), DTYPE_STATE))),
        ": numpy.dtype is rebuilt from ('f8', False, True), state "
        "(3, '<', None, None, None, -1, ...), not a numeric dtype's, which no checkpoint does."),
    'dtype_of_no_numpy_size': (forged(lambda s, o: set_name(o, Reduced(
        np.dtype, ('f3', False, True), DTYPE_STATE))),
        ": numpy.dtype is rebuilt from ('f3', False, True), state "
        "(3, '<', None, None, None, -1, ...), not a numeric dtype's, which no checkpoint does."),
    'dtype_big_endian': (forged(lambda s, o: set_name(o, Reduced(
        np.dtype, ('f4', False, True), (3, '>', None, None, None, -1, -1, 0)))),
        ": numpy.dtype is rebuilt from ('f4', False, True), state "
        "(3, '>', None, None, None, -1, ...), not a numeric dtype's, which no checkpoint does."),
    'scalar_of_three_arguments': (forged(lambda s, o: set_name(o, Reduced(
        np.core.multiarray.scalar, (np.dtype('float32'), np.float32(1).tobytes(), 1)))),
        ': numpy.core.multiarray.scalar is rebuilt from arguments (<'),
    'scalar_of_two_values': (forged(lambda s, o: set_name(o, Reduced(
        np.core.multiarray.scalar, (np.dtype('float32'), np.float32([1, 2]).tobytes())))),
        ": numpy.core.multiarray.scalar is rebuilt from arguments (<"),
    'array_as_optimizer': (forged(lambda s, o: (s, first_array(s))),
                           'its second element is mxnet.ndarray.ndarray.NDArray, not an optimizer'),
    'state_a_dict': (forged(lambda s, o: set_state(s, {})),
                     "_b' has layout 'dict', expected (((1,), 'float32', 'default'), "),
}


@pytest.mark.parametrize('forgery', FORGED_FILES)
def test_a_forged_file_raises_and_changes_nothing(forgery, tmp_path):
    make, message = FORGED_FILES[forgery]
    job = Job('everything', 'one_device').train(range(1, 3))
    fname = save_tampered(job, make, tmp_path, 'forged.states')
    before, optimizer = job.snapshot(), job.trainer.optimizer
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert str(err.value).startswith(f"Invalid states file {str(fname)!r}: ")
    assert message in str(err.value)
    assert str(err.value).endswith('. The Trainer was not changed.')
    assert job.trainer.optimizer is optimizer
    assert_same(job.snapshot(), before)


def test_objects_shared_in_the_file_are_shared_when_rebuilt():
    """As pickle shares them: an array, a scalar (the optimizer's lr is its scheduler's
    base_lr), a tuple as a dict key, a dict value and a list item; and a shared nesting of
    a state is laid out once."""
    optimizer = adam_plugin.MyAdam(learning_rate=np.float32(0.25),
                                   lr_scheduler=mx.lr_scheduler.FactorScheduler(step=1))
    assert optimizer.lr is optimizer.lr_scheduler.base_lr
    key, array = (1, 2), nd.ones(2)
    optimizer.idx2name = {key: 'w', 'value': key, 'items': [key, optimizer.lr]}
    pair = (array, array)
    data = pickle.dumps(({0: (pair, pair), 1: [array]}, optimizer))
    states, record = safe.read(io.BytesIO(data), [adam_plugin.MyAdam],
                               lambda cls: adam_plugin.MyAdam(
                                   lr_scheduler=mx.lr_scheduler.FactorScheduler(step=1)))
    for got_states, got in [pickle.loads(data), safe.build((states, record))]:
        assert got_states[0][0][0] is got_states[0][1][1] is got_states[1][0]
        assert got.lr is got.lr_scheduler.base_lr is got.idx2name['items'][1]
        got_key, = (k for k in got.idx2name if type(k) is tuple)
        assert got_key is got.idx2name['value'] is got.idx2name['items'][0]
    layout = safe.layout(states[0])
    assert layout[0] is layout[1]  # so a nesting of 2**n leaves in n objects takes n steps


def test_states_go_to_each_device_on_its_first_update(tmp_path):
    """As after Trainer.load_states: each device's Updater moves its copy of the states
    (all saved from the first device) to its weights' device."""
    job = Job('everything', 'two_devices_trainer_updates').train(range(1, 3))
    _, fname = save(job, tmp_path)
    for loader in LOADERS.values():
        resumed = Job('everything', 'two_devices_trainer_updates')
        loader(resumed.trainer, fname)
        resumed.train(range(3, 4))
        for updater, ctx in zip(resumed.trainer._updaters, resumed.ctxs, strict=True):  # (m, v, vmax, [t])
            assert {a.context for i in updater.states for a in updater.states[i][:-1]} == {ctx}


def test_distributed_training_is_refused(tmp_path):
    """A dist KVStore updating on its servers has no Updater here (its _updater is None)."""
    job = Job('everything', 'two_devices_kvstore_updates').train(range(1, 3))
    _, fname = save(job, tmp_path)
    job.trainer._kvstore._updater = None
    optimizer = job.trainer.optimizer
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert str(err.value) == ("Cannot load states for distributed training: the KVStore's "
                              "servers hold them. The Trainer was not changed.")
    assert job.trainer.optimizer is optimizer


def test_an_error_rebuilding_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    """If MXNet refuses checked bytes, its message is shown; an exception without one, by name."""
    job = Job('everything', 'one_device').train(range(1, 3))
    _, fname = save(job, tmp_path)

    def fails(records):
        raise MemoryError()

    monkeypatch.setattr(safe, 'build', fails)
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert str(err.value) == (f"Invalid states file {str(fname)!r}: it could not be rebuilt "
                              "(MemoryError). The Trainer was not changed.")


# --- the inspect command line: its help, and how it shows each kind of value ---------------

def test_inspect_help_and_usage(capsys):
    with pytest.raises(SystemExit) as done:
        checkpoint_main.main(['--help'])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert out.startswith('usage: python -m adam_plugin.checkpoint [-h] {inspect} ...\n')
    flat = ' '.join(out.split())  # argparse wraps lines at the terminal's width
    assert ('python -m adam_plugin.checkpoint inspect FILE [--json]: what a states file '
            'holds.') in flat
    assert '`' not in out  # the docstring's RST markup is not for the terminal
    assert 'print what a states file holds, without running code from it' in flat
    with pytest.raises(SystemExit):
        checkpoint_main.main(['inspect', '--help'])
    assert '--json print JSON' in ' '.join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as done:
        checkpoint_main.main([])
    assert done.value.code == 2
    assert 'error: the following arguments are required: command' in capsys.readouterr().err


def test_inspect_json_is_indented_by_one(tmp_path):
    _, fname = save(Job('defaults', 'one_device').train(range(1, 3)), tmp_path)
    out = inspect(fname, '--json').stdout
    assert out == json.dumps(json.loads(out), indent=1) + '\n'


def test_inspect_shows_row_sparse_and_empty_states(tmp_path):
    """MXNet's SGD on a row_sparse weight keeps row_sparse momentum; without momentum it
    keeps no state at all (None)."""
    for momentum, shown in ((0.9, 'float32[8x3] row_sparse'), (0.0, 'None')):
        emb = gluon.contrib.nn.SparseEmbedding(8, 3)
        emb.initialize(mx.init.Constant(0.5))
        trainer = gluon.Trainer(emb.collect_params(), 'sgd',
                                {'learning_rate': 0.1, 'momentum': momentum})
        train_embedding(emb, trainer, range(1, 3))
        trainer.save_states(str(tmp_path / 'sgd.states'))
        assert f'  parameter 0: {shown}\n' in inspect(tmp_path / 'sgd.states').stdout + '\n'


def test_inspect_shows_numpy_scalars_sequences_and_other_numbers_as_values(tmp_path):
    """Hyperparameters a user may have set to a NumPy scalar, a NumPy dtype or bytes, and a
    scheduler's list of steps: shown by value (JSON numbers and lists, a dtype by name,
    bytes by repr), and a 0-d state."""
    optimizer = adam_plugin.MyAdam(
        learning_rate=np.float32(0.25),
        lr_scheduler=mx.lr_scheduler.MultiFactorScheduler(step=[5, 10], factor=0.5))
    optimizer.idx2name = {0: b'ab', 1: np.dtype('float16')}  # unchecked: options are checked
    with mx.util.np_shape(True), mx.util.np_array(True):
        data = pickle.dumps(({0: (mx.np.array(3.0), mx.np.array([1.0, 2.0]))}, optimizer))
    fname = tmp_path / 'hand.states'
    fname.write_bytes(data)
    info = json.loads(inspect(fname, '--json').stdout)
    assert info['hyperparameters']['lr'] == 0.25
    assert info['hyperparameters']['idx2name'] == {'0': "b'ab'", '1': 'float16'}
    assert info['lr_scheduler']['step'] == [5, 10]
    text = inspect(fname).stdout
    assert '  lr = 0.25\n' in text and '  idx2name = {\'0\': "b\'ab\'", \'1\': \'float16\'}\n' in text
    assert '  step = [5, 10]\n' in text
    assert '  parameter 0: (float32[scalar], float32[2])' in text


class NeedsAnArgument(mx.optimizer.SGD):
    """A registered optimizer that cannot be made without an argument."""

    def __init__(self, required, **kwargs):
        super().__init__(**kwargs)
        self.required = required


def test_inspect_names_an_optimizer_it_cannot_make(tmp_path, monkeypatch):
    monkeypatch.setitem(mx.optimizer.Optimizer.opt_registry, 'needsanargument', NeedsAnArgument)
    fname = tmp_path / 'needs.states'
    fname.write_bytes(pickle.dumps(({}, NeedsAnArgument(1))))
    done = inspect(fname)
    assert (done.returncode, done.stdout) == (1, '')
    assert done.stderr == (
        f"Invalid states file {str(fname)!r}: its optimizer NeedsAnArgument cannot be checked: "
        "NeedsAnArgument() raised TypeError: NeedsAnArgument.__init__() missing 1 required "
        "positional argument: 'required'.\n")
