"""A states file is checked like the user's own arguments, by both loaders and by ``inspect``.

Every row takes a file a real ``Trainer.save_states`` wrote and changes one value
the way a hand edit, a bug or another tool might: out of range, NaN, a mode that
does not exist, an update count that is not one, a scheduler that never returns.
``MyAdam.__setstate__`` runs ``MyAdam.__init__``'s checks (adam_plugin.options), so
MXNet's own ``Trainer.load_states`` refuses it as ``adam_plugin.checkpoint.load_states``
and ``python -m adam_plugin.checkpoint inspect`` do, each with the message
``Invalid NAME: VALUE (expected ...)`` that ``MyAdam(NAME=VALUE)`` gives.
"""
import math
import pickle

import mxnet as mx
import pytest
from mxnet import autograd, gluon, nd

from checkpoints import LOADERS, SAVE_AFTER, Job, assert_same, inspect, save, setattrs

NAN = float('nan')


def set_counts(opt, count):
    for device_counts in opt._all_index_update_counts.values():
        device_counts[0] = count


# name -> (change(optimizer) of a genuine file, the start of the message)
CHANGED = {
    'epsilon_zero': (lambda o: setattrs(o, epsilon=0.0), "Invalid epsilon: 0.0 (expected > 0"),
    'epsilon_negative': (lambda o: setattrs(o, epsilon=-1e-8), "Invalid epsilon: -1e-08 ("),
    'lr_nan': (lambda o: setattrs(o, lr=NAN),
               "Invalid learning_rate: nan (expected >= 0, not NaN)"),
    'lr_inf': (lambda o: setattrs(o, lr=math.inf),
               "Invalid learning_rate: inf (expected >= 0, not infinite)"),
    'lr_negative': (lambda o: setattrs(o, lr=-0.1), "Invalid learning_rate: -0.1 (expected"),
    'beta1_one': (lambda o: setattrs(o, beta1=1.0), "Invalid beta1: 1.0 (expected in [0, 1))"),
    'beta2_one': (lambda o: setattrs(o, beta2=1.0), "Invalid beta2: 1.0 (expected in [0, 1))"),
    'clip_gradient_negative': (lambda o: setattrs(o, clip_gradient=-1.0),
                               "Invalid clip_gradient: -1.0 (expected None or > 0)"),
    'wd_negative': (lambda o: setattrs(o, wd=-5.0), "Invalid wd: -5.0 (expected >= 0)"),
    'epsilon_mode_bogus': (lambda o: setattrs(o, epsilon_mode='bogus'),
                           "Invalid epsilon_mode: 'bogus' (expected one of"),
    'nonfinite_ignore': (lambda o: setattrs(o, nonfinite='ignore'),
                         "Invalid nonfinite: 'ignore' (expected one of"),
    'fused_no': (lambda o: setattrs(o, fused='no'), "Invalid fused: 'no' (expected True or False)"),
    'count_zero': (lambda o: set_counts(o, 0),
                   "Invalid _all_index_update_counts[0][0]: 0 (expected an int >= 1)"),
    'count_negative': (lambda o: set_counts(o, -1),
                       "Invalid _all_index_update_counts[0][0]: -1 (expected an int >= 1)"),
    'num_update_negative': (lambda o: setattrs(o, num_update=-1),
                            "Invalid num_update: -1 (expected an int >= 0)"),
    'count_absurd': (lambda o: set_counts(o, 10**400),
                     f"Invalid _all_index_update_counts[0][0]: {10**400} "
                     "(expected an int <= 9007199254740992)"),
    'count_past_2_53': (lambda o: set_counts(o, 2**53 + 1),
                        "Invalid _all_index_update_counts[0][0]: 9007199254740993 "
                        "(expected an int <= 9007199254740992)"),
    'num_update_absurd': (lambda o: setattrs(o, num_update=10**400),
                          f"Invalid num_update: {10**400} (expected an int <= 9007199254740992)"),
    'begin_num_update_absurd': (lambda o: setattrs(o, begin_num_update=10**5000),
                                "Invalid begin_num_update: an int of 16610 bits "
                                "(expected an int <= 9007199254740992)"),
    'num_update_below_a_count': (lambda o: set_counts(o, 50),
                                 "(expected >= every update count, of which the file holds "
                                 "50: lr_scheduler reads it)"),
    'aggregate_num_zero': (lambda o: setattrs(o, aggregate_num=0),
                           "Invalid aggregate_num: 0 (expected an int >= 1)"),
    'num_skipped_negative': (lambda o: setattrs(o, num_skipped=-3),
                             "Invalid num_skipped: -3 (expected an int >= 0)"),
    'scheduler_step_zero': (lambda o: setattrs(o.lr_scheduler, step=0),
                            "Invalid lr_scheduler.step: 0 (expected an int >= 1)"),
    'scheduler_base_lr_nan': (lambda o: setattrs(o.lr_scheduler, base_lr=NAN),
                              "Invalid lr_scheduler.base_lr: nan (expected >= 0, not NaN)"),
    'scheduler_factor_negative': (lambda o: setattrs(o.lr_scheduler, factor=-1),
                                  "Invalid lr_scheduler.factor: -1 (expected in (0, 1])"),
    'scheduler_count_negative': (lambda o: setattrs(o.lr_scheduler, count=-1e15),
                                 "Invalid lr_scheduler.count: -1000000000000000.0 (expected"),
    'no_lr_and_no_scheduler': (lambda o: setattrs(o, lr=None, lr_scheduler=None),
                               "Invalid learning_rate: None (expected a number when there is "
                               "no lr_scheduler)"),
}


def changed_file(job, change, tmp_path):
    """The job's states file, with ``change(optimizer)`` made to its optimizer."""
    _, good = save(job, tmp_path)
    states, optimizer = pickle.loads(good.read_bytes())
    change(optimizer)
    fname = tmp_path / 'changed.states'
    fname.write_bytes(pickle.dumps((states, optimizer)))
    return fname


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('row', CHANGED)
def test_a_value_out_of_range_is_refused_by_both_loaders(row, loader, tmp_path):
    change, message = CHANGED[row]
    job = Job('everything', 'one_device').train(range(1, SAVE_AFTER + 1))
    fname = changed_file(job, change, tmp_path)
    before, optimizer = job.snapshot(), job.trainer.optimizer
    with pytest.raises(ValueError) as err:
        LOADERS[loader](job.trainer, fname)
    assert message in str(err.value)
    assert job.trainer.optimizer is optimizer
    assert_same(job.snapshot(), before)


@pytest.mark.parametrize('loader', LOADERS)
def test_step_counts_up_to_the_bound_load(loader, tmp_path):
    """2**53, named in docs/checkpoints.md: the largest count a file may hold."""
    job = Job('everything', 'one_device').train(range(1, 3))
    fname = changed_file(job, lambda o: (set_counts(o, 2**53), setattrs(o, num_update=2**53)),
                         tmp_path)
    LOADERS[loader](job.trainer, fname)
    opt = job.trainer.optimizer
    assert (opt._all_index_update_counts[0][0], opt.num_update) == (2**53, 2**53)


@pytest.mark.parametrize('row', CHANGED)
def test_inspect_refuses_what_the_loaders_refuse(row, tmp_path):
    job = Job('everything', 'one_device').train(range(1, 3))
    done = inspect(changed_file(job, CHANGED[row][0], tmp_path))
    assert (done.returncode, done.stdout) == (1, '')
    assert CHANGED[row][1] in done.stderr


@pytest.mark.parametrize('placement', ['two_devices_trainer_updates',
                                       'two_devices_kvstore_updates'])
@pytest.mark.parametrize('loader', LOADERS)
def test_mxnet_refuses_with_several_devices_too(loader, placement, tmp_path):
    job = Job('everything', placement).train(range(1, 3))
    with pytest.raises(ValueError, match=r"Invalid beta2: 1\.0 \(expected in \[0, 1\)\)"):
        LOADERS[loader](job.trainer, changed_file(job, CHANGED['beta2_one'][0], tmp_path))


def dense(in_units, use_bias):
    """A Dense layer's 'myadam' Trainer after one step."""
    net = gluon.nn.Dense(2, in_units=in_units, use_bias=use_bias)
    net.initialize(mx.init.Constant(0.1))
    trainer = gluon.Trainer(net.collect_params(), 'myadam', {'learning_rate': 0.1})
    with autograd.record():
        loss = net(nd.ones((4, in_units))).sum()
    loss.backward()
    trainer.step(4)
    return trainer


# name -> (the saving layer, the loading layer, the message): (in_units, use_bias)
MISFITS = {
    'one_parameter_into_two': ((3, False), (3, True), "the states were saved for 1 parameters "
                               "(indices [0]), the Trainer has 2 (indices [0, 1])"),
    'two_parameters_into_one': ((3, True), (3, False), "the states were saved for 2 parameters "
                                "(indices [0, 1]), the Trainer has 1 (indices [0])"),
    'other_shape': ((4, True), (3, True), "the states were saved for a parameter 1 of shape "
                    "(2, 4), the Trainer's, 'dense"),
}


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('row', MISFITS)
def test_a_file_for_other_parameters_is_refused_naming_the_misfit(row, loader, tmp_path):
    saving, loading, message = MISFITS[row]
    dense(*saving).save_states(str(tmp_path / 'dense.states'))
    with pytest.raises(ValueError) as err:
        LOADERS[loader](dense(*loading), tmp_path / 'dense.states')
    assert message in str(err.value)
    assert ('holds them now' in str(err.value)) == (loader == 'Trainer.load_states')



# A states file whose pickle names one array twice: what it changes in the states (index ->
# state), the message of the first step after MXNet's Trainer.load_states.
SHARED = {
    'a_moment_of_another_state': (
        lambda states: {**states, 1: (states[0][0], *states[1][1:])},
        "state of parameter '{b}' does not fit its weight .*: one array of it is also in the "
        "state of parameter '{a}'"),
    'm_as_v': (
        lambda states: {**states, 0: (states[0][0], states[0][0], *states[0][2:])},
        "state of parameter '{a}' does not fit its weight .*: it holds one array twice"),
}


@pytest.mark.parametrize('row', SHARED)
def test_mxnet_loaded_states_that_share_an_array_are_refused_at_the_first_step(row, tmp_path):
    """Where a pickle names an array twice, MXNet's Trainer.load_states gives two
    parameters (or one's m and v) one array, which each would step: the first step refuses
    it, naming the parameters, before anything changes (checkpoint.load_states refuses the
    file). The KVStore's Updater copies loaded states to its weights' context, and the
    Updaters copy each [t]: no sharing survives there."""
    from adam_plugin import checkpoint
    params = []
    for name in ('a', 'b'):
        p = gluon.Parameter(name, shape=(3,))
        p.initialize(mx.init.Constant(1.0))
        params.append(p)
    trainer = gluon.Trainer(params, 'myadam', {'learning_rate': 0.1})

    def step():
        for p in params:
            p.grad()[:] = 0.5
            p.data()._fresh_grad = True
        trainer.step(1)

    step()
    trainer.save_states(str(tmp_path / 'good.states'))
    with open(tmp_path / 'good.states', 'rb') as f:
        states, optimizer = pickle.load(f)
    change, message = SHARED[row]
    with open(tmp_path / 'bad.states', 'wb') as f:
        pickle.dump((change(states), optimizer), f)
    with pytest.raises(ValueError, match='held twice'):
        checkpoint.load_states(trainer, tmp_path / 'bad.states')
    trainer.load_states(str(tmp_path / 'bad.states'))
    before = [p.data().asnumpy() for p in params]
    with pytest.raises(ValueError, match=message.format(a=params[0].name, b=params[1].name)
                       + '; nothing was updated'):
        step()
    for p, weight in zip(params, before, strict=True):
        assert (p.data().asnumpy() == weight).all()
