"""What the checkpoint tests share: the training jobs that save and resume, the files they
write, the inspector run in this process, and the pieces of crafted pickles."""
import contextlib
import io
import struct
import subprocess
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from adam_plugin import checkpoint
from adam_plugin.chapter import linreg
from adam_plugin.checkpoint import __main__ as checkpoint_main
from configs import CONFIGS, optimizer_kwargs
from helpers import state_arrays

STEPS, SAVE_AFTER, BATCH = 12, 6, 8


# name -> (MyAdam options, weight dtype, step whose gradient is NaN or None)
ROWS = {
    'defaults': ({}, 'float32', None),
    'amsgrad': ({'amsgrad': True}, 'float32', None),
    'yogi': (CONFIGS['yogi_options'], 'float32', None),
    'multi_precision': ({'multi_precision': True}, 'float16', None),
    'nan_skip': ({}, 'float32', 3),
    'lr_scheduler': ({'lr_scheduler': 'factor'}, 'float32', None),
    'everything': (CONFIGS['everything'], 'float32', 4),
}


# name -> (contexts, update_on_kvstore). One context has no KVStore at all;
# update_on_kvstore=True needs one, so it runs on two.
PLACEMENTS = {
    'one_device': ([mx.cpu(0)], None),
    'two_devices_trainer_updates': ([mx.cpu(0), mx.cpu(1)], False),
    'two_devices_kvstore_updates': ([mx.cpu(0), mx.cpu(1)], True),
}


LOADERS = {
    'Trainer.load_states': lambda trainer, fname: trainer.load_states(fname),
    'checkpoint.load_states': checkpoint.load_states,
}


def batches(dtype):
    features, labels = linreg.make_dataset(num_examples=STEPS * BATCH, seed=2)
    return [(X.astype(dtype), y.astype(dtype))
            for X, y in linreg.data_iter(BATCH, features, labels, seed=4)]


class LinReg(gluon.Block):
    """The chapter's model ``X @ w + b`` as a Block, written elementwise: MXNet's CPU
    ``dot`` (and so ``Dense``) has no float16 kernel."""

    def __init__(self, in_units=linreg.NUM_INPUTS):
        super().__init__()
        with self.name_scope():
            self.w = self.params.get('w', shape=(in_units, 1))
            self.b = self.params.get('b', shape=(1,))

    def forward(self, X):
        w, b = self.w.data(X.context), self.b.data(X.context)
        return (X * w.reshape((1, -1))).sum(axis=1) + b


class Job:
    """A LinReg network on the linreg data with a 'myadam' Trainer: a row of ``rows`` in a
    placement of ``placements`` (by default ROWS and PLACEMENTS)."""

    rows, placements = ROWS, PLACEMENTS

    def __init__(self, row, placement, init=0.3):
        options, self.dtype, self.nan_at = self.rows[row]
        self.ctxs, update_on_kvstore = self.placements[placement]
        self.net = LinReg()
        self.net.initialize(mx.init.Constant(init), ctx=self.ctxs)
        self.net.cast(self.dtype)
        self.trainer = gluon.Trainer(self.net.collect_params(), 'myadam',
                                     optimizer_kwargs(options), kvstore='device',
                                     update_on_kvstore=update_on_kvstore)
        self.batches = batches(self.dtype)

    batch_size = BATCH  # the examples of one step, over all devices

    def split(self, X, y):
        """The batch's part of each device: ``[(X, y)]``."""
        return zip(gluon.utils.split_and_load(X, self.ctxs),
                   gluon.utils.split_and_load(y, self.ctxs), strict=True)

    def train(self, steps):
        for t in steps:
            X, y = self.batches[t - 1]
            with autograd.record():
                losses = [linreg.squared_loss(self.net(Xi), yi) for Xi, yi in self.split(X, y)]
            autograd.backward(losses)
            if t == self.nan_at:
                for grad in self.net.w.list_grad():
                    grad[:] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
                self.trainer.step(self.batch_size)
        return self

    def snapshot(self):
        """Everything that must resume: weights, states, counters, schedule (NumPy copies)."""
        trainer = self.trainer
        updaters = ([trainer._kvstore._updater] if trainer._update_on_kvstore
                    else trainer._updaters)
        opt = trainer.optimizer
        return {
            'weights': [a.asnumpy() for p in self.net.collect_params().values()
                        for a in p.list_data()],
            'states': [a for u in updaters for i in sorted(u.states)
                       for a in state_arrays(u.states[i])],
            'counts': {d: dict(c) for d, c in opt._all_index_update_counts.items()},
            'num_update': opt.num_update,
            'num_skipped': opt.num_skipped,
            'lr': opt.learning_rate,
        }


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        if key in ('weights', 'states'):
            assert len(got[key]) == len(want[key]) > 0
            for g, w in zip(got[key], want[key], strict=True):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w, err_msg=key)
        else:
            assert got[key] == want[key], key


def save(job, tmp_path):
    job.net.save_parameters(str(tmp_path / 'net.params'))
    checkpoint.save_states(job.trainer, tmp_path / 'trainer.states')
    return tmp_path / 'net.params', tmp_path / 'trainer.states'


def inspect(fname, *options):
    """``python -m adam_plugin.checkpoint inspect fname *options`` run in this process (as
    test_inspect_runs_as_a_module checks): its exit status and what it printed."""
    argv = ['inspect', str(fname), *options]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = checkpoint_main.main(argv)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


# Array bytes written field by field as MXNet 1.9.1's NDArray::Save writes them
# (src/ndarray/ndarray.cc): test_array_bytes_are_written_as_mxnet_writes_them checks
# these against MXNet's own bytes, so a test that changes one field changes it in a real layout.
LEGACY_MAGIC, NP_SHAPE_MAGIC = 0xF993FAC9, 0xF993FACA
FLOAT32, FLOAT64, INT64 = 0, 1, 6  # MXNet's dtype flags


def shape_bytes(shape):
    return struct.pack(f'<i{len(shape)}q', len(shape), *shape)


def array_bytes(shape, data, *, magic=LEGACY_MAGIC, stype=0, storage_shape=None,
                device=(1, 0), dtype=FLOAT32, aux=()):
    """``aux``: (dtype flag, shape, data) of each auxiliary array (sparse only)."""
    raw = struct.pack('<Ii', magic, stype)
    if storage_shape is not None:
        raw += shape_bytes(storage_shape)
    raw += shape_bytes(shape) + struct.pack('<3i', *device, dtype)
    for flag, aux_shape, _ in aux:
        raw += struct.pack('<i', flag) + shape_bytes(aux_shape)
    return raw + data + b''.join(aux_data for _, _, aux_data in aux)


def values(count, dtype='<f4'):
    return np.arange(count, dtype=dtype).tobytes()


def dense_bytes(shape=(2, 3), **fields):
    return array_bytes(shape, values(int(np.prod(shape))), **fields)


def row_sparse_bytes(rows, shape=(5, 2), storage_shape=None, row_flag=INT64):
    storage_shape = storage_shape or (len(rows), shape[1])
    row_dtype = {INT64: '<i8', FLOAT64: '<f8'}[row_flag]
    return array_bytes(shape, values(int(np.prod(storage_shape))), stype=1,
                       storage_shape=storage_shape,
                       aux=[(row_flag, (len(rows),), np.array(rows, row_dtype).tobytes())])


def csr_bytes(indptr, indices, shape=(3, 4), index_flag=INT64):
    index_dtype = {INT64: '<i8', FLOAT64: '<f8'}[index_flag]
    return array_bytes(shape, values(len(indices)), stype=2, storage_shape=(len(indices),),
                       aux=[(INT64, (len(indptr),), np.array(indptr, '<i8').tobytes()),
                            (index_flag, (len(indices),), np.array(indices, index_dtype).tobytes())])


# Pieces of pickles made by hand: what a states file may be made to do.

class Call:
    """Pickles as ``func(*args)``: the ``__reduce__`` gadget."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Rebuilt:
    """Pickles as ``cls(*args)`` given ``state``: an allowed class with made-up contents."""

    def __init__(self, cls, args, state):
        self.cls, self.args, self.state = cls, args, state

    def __reduce__(self):
        return self.cls, self.args, self.state


def setattrs(obj, **attrs):
    obj.__dict__.update(attrs)


def put(states, index, value):
    states[index] = value


def handle(states):
    """The raw bytes of a real state array."""
    return states[0][0].__getstate__()['handle']


def cycle():
    loop = []
    loop.append(loop)
    return loop


def without(obj, name):
    del obj.__dict__[name]
