"""Checkpoints: save_states + save_parameters, then load into a fresh Trainer, resume bitwise.

Every row trains 12 steps without a break, and again with a checkpoint after step
6 loaded into a new network and Trainer; the two must end bitwise equal (weights,
optimizer states, step counts, skip counter, schedule). Damaged files must raise
a clear error from ``adam_plugin.checkpoint.load_states`` and change nothing.
"""
import pickle
import warnings

import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon, nd

from adam_plugin import checkpoint
from adam_plugin.chapter import linreg
from configs import CONFIGS, optimizer_kwargs

STEPS, SAVE_AFTER, BATCH = 12, 6, 8

# name -> (MyAdam options, weight dtype, step whose gradient is NaN or None)
ROWS = {
    'defaults': ({}, 'float32', None),
    'amsgrad': ({'amsgrad': True}, 'float32', None),
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

    def forward(self, X):  # pylint: disable=arguments-differ
        w, b = self.w.data(X.context), self.b.data(X.context)
        return (X * w.reshape((1, -1))).sum(axis=1) + b


class Job:
    """A LinReg network on the linreg data with a 'myadam' Trainer."""

    def __init__(self, row, placement, init=0.3):
        options, self.dtype, self.nan_at = ROWS[row]
        self.ctxs, update_on_kvstore = PLACEMENTS[placement]
        self.net = LinReg()
        self.net.initialize(mx.init.Constant(init), ctx=self.ctxs)
        self.net.cast(self.dtype)
        self.trainer = gluon.Trainer(self.net.collect_params(), 'myadam',
                                     optimizer_kwargs(options), kvstore='device',
                                     update_on_kvstore=update_on_kvstore)
        self.batches = batches(self.dtype)

    def train(self, steps):
        for t in steps:
            X, y = self.batches[t - 1]
            Xs = gluon.utils.split_and_load(X, self.ctxs)
            ys = gluon.utils.split_and_load(y, self.ctxs)
            with autograd.record():
                losses = [linreg.squared_loss(self.net(Xi), yi) for Xi, yi in zip(Xs, ys)]
            autograd.backward(losses)
            if t == self.nan_at:
                for grad in self.net.w.list_grad():
                    grad[:] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
                self.trainer.step(BATCH)
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
                       for a in _arrays(u.states[i])],
            'counts': {d: dict(c) for d, c in opt._all_index_update_counts.items()},
            'num_update': opt.num_update,
            'num_skipped': opt.num_skipped,
            'lr': opt.learning_rate,
        }


def _arrays(state):
    if isinstance(state, nd.NDArray):
        return [state.asnumpy()]
    return [a for s in state for a in _arrays(s)]


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        if key in ('weights', 'states'):
            assert len(got[key]) == len(want[key]) > 0
            for g, w in zip(got[key], want[key]):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w, err_msg=key)
        else:
            assert got[key] == want[key], key


def save(job, tmp_path):
    job.net.save_parameters(str(tmp_path / 'net.params'))
    checkpoint.save_states(job.trainer, tmp_path / 'trainer.states')
    return tmp_path / 'net.params', tmp_path / 'trainer.states'


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
                      'has layout'),
}


@pytest.mark.parametrize('placement', PLACEMENTS)
@pytest.mark.parametrize('bad', BAD_FILES)
def test_a_damaged_file_raises_and_changes_nothing(bad, placement, tmp_path):
    make, message = BAD_FILES[bad]
    straight = Job('everything', placement).train(range(1, STEPS + 1)).snapshot()

    job = Job('everything', placement).train(range(1, SAVE_AFTER + 1))
    _, good = save(job, tmp_path)
    fname = tmp_path / 'bad.states'
    fname.write_bytes(make(good.read_bytes(), tmp_path))
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
