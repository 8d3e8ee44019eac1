"""A checkpoint resumes bitwise into any device layout, and through the Module API.

Trainer: every pair of layouts (one device; two with the Trainer updating, one Updater
per device; two with the KVStore updating, one Updater) for saving and for loading,
with both loaders. Every device gets the whole batch and ``Trainer.step`` the batch
size times the number of devices, so every device's gradient is the same and every
layout trains bitwise the same weights: a resume into a layout must end bitwise where
a run in that layout trained straight through ends, on every device, with every
Updater's states and step counts those of the straight run.

Module: ``Module.save_optimizer_states`` / ``load_optimizer_states`` (the Updater's
states only, not the optimizer) with and without a KVStore, and a ``BucketingModule``:
20 steps straight against 10, a save, a fresh module loading it, and 10 more.
"""
import functools
import pickle
import re
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import checkpoint
from adam_plugin.chapter import linreg
from checkpoints import BATCH, LOADERS, PLACEMENTS, SAVE_AFTER, STEPS, Job
from configs import CONFIGS, optimizer_kwargs
from helpers import state_arrays

# name -> (MyAdam options, weight dtype, step whose gradient of w is NaN on every device)
ROWS = {
    'everything': (CONFIGS['everything'], 'float32', 4),
    'multi_precision': ({'multi_precision': True, 'lr_scheduler': 'factor'}, 'float16', 3),
    # With the KVStore updating, the update of w (the Trainer's last parameter) is
    # still queued in MXNet's engine when the file is saved, and then found skipped.
    'nan_at_the_save': ({}, 'float32', SAVE_AFTER),
}


# test_checkpoint's PLACEMENTS, and one device that is not the first: a job resumed on
# another GPU (MXNet keeps step counts per device number)
LAYOUTS = dict(PLACEMENTS, other_device=([mx.cpu(1)], None))


class Run(Job):
    """A Job in a layout of LAYOUTS, the whole batch on every device."""

    rows, placements = ROWS, LAYOUTS

    @property
    def batch_size(self):
        return BATCH * len(self.ctxs)

    def split(self, X, y):
        return [(X.as_in_context(c), y.as_in_context(c)) for c in self.ctxs]

    def snapshot(self):
        """Each device's weights, each Updater's states (arrays and step counts), the
        step counts the optimizer keeps for each device, num_update and the rate."""
        trainer = self.trainer
        updaters = ([trainer._kvstore._updater] if trainer._update_on_kvstore
                    else trainer._updaters)
        opt = trainer.optimizer
        return {
            'weights': [[a.asnumpy() for a in p.list_data()]
                        for p in self.net.collect_params().values()],
            'states': [{i: state_arrays(u.states[i]) for i in u.states} for u in updaters],
            'counts': {d: dict(c) for d, c in opt._all_index_update_counts.items()},
            'num_update': opt.num_update,
            'lr': opt.learning_rate,
        }


def assert_equal(got, want, what):
    assert len(got) == len(want) > 0, what
    for g, w in zip(got, want, strict=True):
        if isinstance(w, np.ndarray):
            assert g.dtype == w.dtype, what
            np.testing.assert_array_equal(g, w, err_msg=what)
        else:
            assert g == w, what


@functools.lru_cache(maxsize=None)
def straight(row, placement):
    return Run(row, placement).train(range(1, STEPS + 1)).snapshot()


def assert_resumed_as_straight(got, want):
    """``got`` ends where the straight run ``want`` (of the same layout) ends, every
    device's weights and every Updater's states alike."""
    for param, devices in enumerate(want['weights']):
        for device, weight in enumerate(got['weights'][param]):  # every device as device 0
            assert_equal([weight], [devices[0]], f'parameter {param} on device {device}')
    for updater in got['states']:  # every Updater as the straight run's first
        assert updater.keys() == want['states'][0].keys()
        for index, state in updater.items():
            assert_equal(state, want['states'][0][index], f'the state of {index}')
    # MXNet's step counts of the devices the straight run updates
    updated = {d: counts for d, counts in want['counts'].items() if counts}
    assert {d: got['counts'].get(d) for d in updated} == updated != {}
    assert (got['num_update'], got['lr']) == (want['num_update'], want['lr'])


def test_every_layout_trains_the_same_weights():
    """What the resume tests rest on: with the same gradient on every device, the three
    layouts train bitwise the same weights."""
    for row in ROWS:
        runs = [straight(row, placement) for placement in PLACEMENTS]
        for run in runs:
            assert_equal([w for devices in run['weights'] for w in devices],
                         [devices[0] for devices in runs[0]['weights']
                          for _ in range(len(run['weights'][0]))], row)
        assert not np.any(runs[0]['weights'][0][0] == np.array(0.3, ROWS[row][1]))


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('loaded_in', PLACEMENTS)
@pytest.mark.parametrize('saved_in', PLACEMENTS)
@pytest.mark.parametrize('row', ROWS)
def test_a_checkpoint_resumes_bitwise_in_any_layout(row, saved_in, loaded_in, loader,
                                                    tmp_path):
    resume(row, saved_in, loaded_in, loader, tmp_path)


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('saved_in', PLACEMENTS)
def test_a_checkpoint_resumes_bitwise_on_another_device(saved_in, loader, tmp_path):
    resume('everything', saved_in, 'other_device', loader, tmp_path)


def resume(row, saved_in, loaded_in, loader, tmp_path):
    """Train ``row`` in layout ``saved_in``, save, load into ``loaded_in`` with ``loader``,
    train on: as the straight run there."""
    first = Run(row, saved_in).train(range(1, SAVE_AFTER + 1))
    first.net.save_parameters(str(tmp_path / 'net.params'))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter('always')
        first.trainer.save_states(str(tmp_path / 'trainer.states'))  # MXNet's own
    queued = row == 'nan_at_the_save' and bool(LAYOUTS[saved_in][1])  # found by the save
    assert [str(w.message)[:47] for w in warned] == \
        ["myadam: skipped the update of parameter 'linreg"] * queued
    resumed = Run(row, loaded_in, init=-1.0)  # other weights, to show the load matters
    resumed.net.load_parameters(str(tmp_path / 'net.params'), ctx=resumed.ctxs)
    LOADERS[loader](resumed.trainer, tmp_path / 'trainer.states')
    got = resumed.train(range(SAVE_AFTER + 1, STEPS + 1)).snapshot()
    assert_resumed_as_straight(got, straight(row, loaded_in))


# Module API ------------------------------------------------------------------------

MODULE_STEPS, MODULE_SAVE_AFTER = 20, 10
# name -> (contexts, kvstore, MXNET_UPDATE_ON_KVSTORE)
MODULE_LAYOUTS = {
    'one_device': ([mx.cpu(0)], None, '1'),
    'two_devices_no_kvstore': ([mx.cpu(0), mx.cpu(1)], None, '1'),  # one Updater, both devices
    'two_devices_kvstore_updates': ([mx.cpu(0), mx.cpu(1)], 'device', '1'),
    'two_devices_kvstore_reduces': ([mx.cpu(0), mx.cpu(1)], 'device', '0'),
}
MODULE_OPTIONS = CONFIGS['everything']  # AMSGrad, a FactorScheduler (reads num_update), ...


def module_batch(t, devices, width=linreg.NUM_INPUTS):
    """Step ``t``'s batch, repeated for every device (the Module splits it): every
    device's gradient is the same, and so are its weights."""
    rng = np.random.default_rng([t, width])
    X = rng.normal(size=(BATCH, width))
    y = X.mean(axis=1) * 2.0 - 1.0 + rng.normal(scale=0.1, size=BATCH)
    return mx.io.DataBatch([nd.array(np.tile(X, (devices, 1)))],
                           [nd.array(np.tile(y, devices))], bucket_key=width,
                           provide_data=[('data', (BATCH * devices, width))],
                           provide_label=[('label', (BATCH * devices,))])


def regression(width=linreg.NUM_INPUTS):
    """``mean(X) -> Dense(1)``: the same parameters for every ``width`` (a bucket key)."""
    data = mx.sym.mean(mx.sym.Variable('data'), axis=1, keepdims=True)
    out = mx.sym.FullyConnected(data, num_hidden=1, name='fc')
    return mx.sym.LinearRegressionOutput(out, mx.sym.Variable('label'), name='out')


def module(layout, params=None):
    """A bound Module of :func:`regression` with a 'myadam' optimizer."""
    ctxs, kvstore, _ = MODULE_LAYOUTS[layout]
    mod = mx.mod.Module(regression(), label_names=('label',), context=ctxs)
    batch = module_batch(1, len(ctxs))
    mod.bind(batch.provide_data, batch.provide_label)
    return _initialized(mod, kvstore, params)


def bucketing_module(params=None):
    """A BucketingModule of :func:`regression`, buckets of widths 2 and 5, one device."""
    mod = mx.mod.BucketingModule(lambda width: (regression(width), ('data',), ('label',)),
                                 default_bucket_key=5)
    batch = module_batch(1, 1, width=5)
    mod.bind(batch.provide_data, batch.provide_label)
    return _initialized(mod, None, params)


def _initialized(mod, kvstore, params):
    mod.init_params(mx.init.Constant(0.3), arg_params=params, allow_missing=params is None,
                    force_init=True)
    mod.init_optimizer(kvstore=kvstore, optimizer='myadam',
                       optimizer_params=optimizer_kwargs(MODULE_OPTIONS))
    return mod


def train_module(mod, steps, devices, widths=(linreg.NUM_INPUTS,)):
    for t in steps:
        mod.forward_backward(module_batch(t, devices, widths[t % len(widths)]))
        mod.update()


def _module(mod):
    """A BucketingModule's current bucket's Module (its buckets share one optimizer and
    Updater; MXNet 1.9.1's BucketingModule has no save_optimizer_states of its own), or
    ``mod``."""
    return mod._curr_module if isinstance(mod, mx.mod.BucketingModule) else mod


def module_weights(mod):
    """Every device's copy of every parameter, by name."""
    group = _module(mod)._exec_group
    return {f'{name}@{device}': array.asnumpy()
            for name, arrays in zip(group.param_names, group.param_arrays, strict=True)
            for device, array in enumerate(arrays)}


def resume_module(make, train, tmp_path):
    """The weights of ``make()`` trained straight, and saved, reloaded and resumed."""
    whole = make()
    train(whole, range(1, MODULE_STEPS + 1))
    first = make()
    train(first, range(1, MODULE_SAVE_AFTER + 1))
    _module(first).save_optimizer_states(str(tmp_path / 'module.states'))
    resumed = make(params=first.get_params()[0])
    _module(resumed).load_optimizer_states(str(tmp_path / 'module.states'))
    train(resumed, range(MODULE_SAVE_AFTER + 1, MODULE_STEPS + 1))
    return module_weights(resumed), module_weights(whole)


@pytest.mark.parametrize('layout', MODULE_LAYOUTS)
def test_module_optimizer_states_resume_bitwise(layout, tmp_path, monkeypatch):
    ctxs, _, update_on_kvstore = MODULE_LAYOUTS[layout]
    monkeypatch.setenv('MXNET_UPDATE_ON_KVSTORE', update_on_kvstore)
    got, want = resume_module(functools.partial(module, layout),
                              functools.partial(train_module, devices=len(ctxs)), tmp_path)
    assert len(want) == 2 * len(ctxs)
    for key, weight in got.items():  # every device as the straight run's device 0
        np.testing.assert_array_equal(weight, want[key.split('@')[0] + '@0'], err_msg=key)
    assert not np.all(want['fc_weight@0'] == np.float32(0.3)), 'nothing trained'


def test_bucketing_module_optimizer_states_resume_bitwise(tmp_path):
    got, want = resume_module(bucketing_module,
                              functools.partial(train_module, devices=1, widths=(2, 5)),
                              tmp_path)
    assert got.keys() == want.keys() == {'fc_weight@0', 'fc_bias@0'}
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert not np.all(want['fc_weight@0'] == np.float32(0.3)), 'nothing trained'


# a step count -> what checkpoint.load_states says of it (W: the parameter's name)
BAD_COUNTS = {-1: "Invalid step count of parameter 'W': -1 (expected an int >= 0)",
              '3': "the state of parameter index 1 holds str, not an MXNet array",
              1e30: "the state of parameter index 1 holds float, not an MXNet array"}


@pytest.mark.parametrize('count', BAD_COUNTS, ids=str)
def test_a_bad_step_count_in_a_file_is_refused_before_anything_changes(count, tmp_path):
    """``checkpoint.load_states`` refuses the file; MXNet's ``Trainer.load_states`` takes
    it, and the first step refuses the state, naming it, before anything changes."""
    first = Run('everything', 'one_device').train(range(1, SAVE_AFTER + 1))
    first.trainer.save_states(str(tmp_path / 'good.states'))
    with open(tmp_path / 'good.states', 'rb') as f:
        states, optimizer = pickle.load(f)
    *moments, _ = states[1]
    with open(tmp_path / 'bad.states', 'wb') as f:
        pickle.dump(({**states, 1: (*moments, [count])}, optimizer), f)
    job = Run('everything', 'one_device').train(range(1, SAVE_AFTER + 1))
    before = job.snapshot()
    name = job.net.w.name
    with pytest.raises(ValueError, match=re.escape(BAD_COUNTS[count].replace('W', name))):
        checkpoint.load_states(job.trainer, tmp_path / 'bad.states')
    job.trainer.load_states(str(tmp_path / 'bad.states'))
    with pytest.raises(ValueError, match=rf"state of parameter '{name}' does not fit .*: "
                                         rf"Invalid step count: {re.escape(repr(count))} "
                                         r"\(expected an int >= 0\); nothing was updated"):
        job.train(range(SAVE_AFTER + 1, SAVE_AFTER + 2))
    assert_equal([w for devices in job.snapshot()['weights'] for w in devices],
                 [w for devices in before['weights'] for w in devices], 'weights')
