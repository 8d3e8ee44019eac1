"""Updates the KVStore runs one parameter at a time, queued in MXNet's engine.

With ``update_on_kvstore=True`` over several devices the KVStore calls the optimizer
once per parameter from its callback; under ``nonfinite='skip'`` MyAdam queues the
kernel's step there as an engine operation and returns, as MXNet's own Adam does
(see :mod:`adam_plugin.engine`). What a queued step finds is taken in at the next
``Trainer.step`` or save, or at the KVStore's next call for the same parameter. These tests hold
that path to the one that runs on the calling thread: the same numbers, skips, counts and
warnings.
"""
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from adam_plugin import MyAdam, checkpoint, kernel, options
from helpers import optimizer_step, register_custom_op, state_arrays

TWO = [mx.cpu(0), mx.cpu(1)]
GOOD = {'first': np.array([0.3, -0.2, 0.1, 0.5]), 'second': np.array([1.0, -1.0, 2.0])}


def trainer_on_two_devices(update_on_kvstore, dtype='float32', **options):
    """Two parameters of ``dtype`` on two CPU contexts; the KVStore calls the optimizer
    for 'first' before 'second' (the Trainer's order)."""
    params = []
    for name, init in (('first', np.linspace(-1, 1, 4)), ('second', np.linspace(0.5, 1.5, 3))):
        p = gluon.Parameter(name, shape=init.shape, dtype=dtype)
        p.initialize(ctx=TWO)
        p.set_data(nd.array(init, dtype=dtype))
        params.append(p)
    trainer = gluon.Trainer(params, 'myadam', dict(learning_rate=0.1, **options),
                            kvstore='device', update_on_kvstore=update_on_kvstore)
    return params, trainer


def step(trainer, params, grads):
    """One Trainer.step with gradient ``grads[name]`` on each device (the KVStore sums
    them: twice the value)."""
    for p in params:
        for g in p.list_grad():
            g[:] = nd.array(grads[p.name], dtype=g.dtype)
        for d in p.list_data():
            d._fresh_grad = True
    trainer.step(1)


def with_bad(**values):
    """GOOD, with ``values[name]`` at position 1 of parameter ``name``'s gradient."""
    grads = dict(GOOD)
    for name, value in values.items():
        grads[name] = grads[name].copy()
        grads[name][1] = value
    return grads


def test_the_kvstore_calls_take_the_queue():
    """The path under test is taken: a plan per parameter at its first call, then a
    queued step per KVStore call, taken in by the next step."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    opt = trainer.optimizer
    assert list(opt._engine.plans) == [0, 1]
    step(trainer, params, GOOD)
    assert list(opt._engine.queued) == [0, 1]  # until the next step takes them in
    step(trainer, params, GOOD)
    assert opt._index_update_count == {0: 3, 1: 3} and list(opt._engine.queued) == [0, 1]


def test_the_first_step_and_one_device_run_on_the_calling_thread():
    """A queued step reads its arrays' data pointers when queued, so only arrays allocated
    before are queued: not at a parameter's first call (the KVStore's merge buffer,
    its weight and the states are new), nor where the KVStore hands the array pushed
    (one device: a gradient Gluon may replace, any array given to kv.push)."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    assert not trainer.optimizer._engine.queued and trainer.optimizer._index_update_count == {0: 1, 1: 1}
    from adam_plugin import MyAdam
    opt = MyAdam(learning_rate=0.1)
    kv = mx.kv.create('local')
    kv.set_optimizer(opt)
    kv.init(0, nd.ones((8,)))
    for _ in range(3):
        kv.push(0, nd.ones((8,)))
        assert not opt._engine.plans and not opt._engine.queued
    one = gluon.Parameter('one', shape=(4,))
    one.initialize(ctx=mx.cpu(0))
    trainer = gluon.Trainer([one], 'myadam', kvstore=mx.kv.create('local'),
                            update_on_kvstore=True)
    for _ in range(3):
        one.grad()[:] = 1.0
        one.data()._fresh_grad = True
        trainer.step(1)
        assert trainer._update_on_kvstore and trainer._kvstore is not None
        assert not trainer.optimizer._engine.plans and not trainer.optimizer._engine.queued
    assert trainer.optimizer._index_update_count == {0: 3}


def test_the_kvstore_updater_hands_one_parameter_the_trainers_all():
    """MXNet's Updater aggregates when the optimizer's aggregate_num says so; the
    KVStore's only ever gets one parameter a call, so the Updater it makes for itself
    (KVStore.set_optimizer) reads 0 and skips its aggregating loop; the Trainer's own
    (update_on_kvstore=False) hand over whole lists."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    assert trainer._kvstore._updater.aggregate_updates is False
    assert trainer.optimizer.aggregate_num == options.AGGREGATE_NUM
    params, trainer = trainer_on_two_devices(False)
    step(trainer, params, GOOD)
    assert [u.aggregate_updates for u in trainer._updaters] == [True, True]
    kv = mx.kv.create('local')
    kv.set_optimizer(trainer.optimizer)
    assert kv._updater.aggregate_updates is False


SEQUENCES = {  # name -> gradients of each step
    'first_bad_once': [GOOD, with_bad(first=np.nan), GOOD, GOOD],
    'second_bad_twice': [GOOD, with_bad(second=np.nan), with_bad(second=np.inf), GOOD],
    'both_bad_first_step': [with_bad(first=-np.inf, second=np.nan), GOOD, GOOD],
    'both_bad_second_step': [GOOD, with_bad(first=np.nan, second=-np.inf), GOOD],
}


# (weight dtype, MyAdam options): every storage of the kernel, and its options
STORAGES = [
    ('float32', {}),
    ('float32', {'amsgrad': True, 'wd': 0.05, 'clip_gradient': 1.0}),
    ('float32', {'yogi': True, 'decoupled_wd': True, 'wd': 0.05, 'epsilon_mode': 'inside'}),
    ('float64', {'epsilon_mode': 'hat', 'rescale_grad': 0.5}),
    ('float16', {'multi_precision': True, 'amsgrad': True}),
    ('float16', {}),
]


@pytest.mark.filterwarnings('ignore:Accumulating with float16:UserWarning')  # MXNet's advice
@pytest.mark.parametrize('dtype, options', STORAGES)
@pytest.mark.parametrize('sequence', sorted(SEQUENCES))
def test_queued_steps_equal_steps_on_the_calling_thread(sequence, dtype, options):
    """The KVStore's queued updates give bitwise the weights, states and step counts of
    the Trainer's own updates (on the calling thread, one device's updater each), NaN
    and Inf gradients skipped alike; each skip counted once (the Trainer's own updates
    count it once per device)."""
    runs = {}
    for update_on_kvstore in (True, False):
        params, trainer = trainer_on_two_devices(update_on_kvstore, dtype, **options)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            for grads in SEQUENCES[sequence]:
                step(trainer, params, grads)
            trainer.optimizer._take_queued()
        updater = (trainer._kvstore._updater if update_on_kvstore else trainer._updaters[0])
        runs[update_on_kvstore] = (
            [d.asnumpy() for p in params for d in p.list_data()],
            [s for i in sorted(updater.states) for s in state_arrays(updater.states[i])],
            dict(trainer.optimizer._index_update_count), trainer.optimizer.num_update,
            trainer.optimizer.num_skipped)
    queued, calling = runs[True], runs[False]
    for a, b in zip(queued[0] + queued[1], calling[0] + calling[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert queued[2:4] == calling[2:4]
    bad_steps = sum(g is not GOOD for g in SEQUENCES[sequence])
    assert queued[4] * 2 == calling[4] >= 2 * bad_steps


def test_under_a_scheduler_a_skip_is_taken_in_before_the_next_parameter_steps():
    """A skipped update gives its step count back, and under an lr_scheduler the next
    parameter's learning rate follows ``num_update``: the KVStore's next call waits for
    the queued step and takes it in first, so the weights are bitwise those of the
    Trainer's own updates, even while the skipped step still waits for its gradient."""
    grads = [GOOD, with_bad(second=np.nan), with_bad(first=np.nan), GOOD]
    slow = nd.random.normal(shape=(700, 700))
    runs = {}
    for update_on_kvstore in (True, False):
        params, trainer = trainer_on_two_devices(
            update_on_kvstore, lr_scheduler=mx.lr_scheduler.PolyScheduler(10, 0.1, pwr=2))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            for g in grads:
                for p in params:
                    for d in p.list_data():
                        d._fresh_grad = True
                    for i, array in enumerate(p.list_grad()):
                        value = nd.array(g[p.name])
                        if i == 0:  # written late: the queued step waits for it a while
                            value = nd.dot(slow, slow)[0, :array.shape[0]] * 0 + value
                        value.copyto(array)
                trainer.step(1)
            trainer.optimizer._take_queued()
        runs[update_on_kvstore] = ([d.asnumpy() for p in params for d in p.list_data()],
                                   trainer.optimizer.num_update)
    for a, b in zip(runs[True][0], runs[False][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[True][1] == runs[False][1] == 3


def test_a_second_push_of_a_key_takes_in_its_first_update_first(monkeypatch):
    """The KVStore's second call for a key whose queued update has not run yet (a key
    pushed twice, its first gradient still being written: every look at the queue
    reads a step as pending) waits for that update and takes it in first: its skip is
    counted and its step count given back."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    step(trainer, params, GOOD)  # queued from here
    opt, kv = trainer.optimizer, trainer._kvstore
    opt._take_queued()
    monkeypatch.setattr(kernel, 'queued_status', lambda queued: 0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        for grad in (with_bad(first=np.nan), GOOD):
            kv.pushpull(0, [nd.array(grad['first'], ctx=c) for c in TWO],
                        out=params[0].list_data())
            assert list(opt._engine.queued) == [0]  # the second's: the first taken in
        assert opt._index_update_count[0] == 3 and opt.num_skipped == 1
        opt._take_queued()
    assert opt._index_update_count[0] == 3 and opt.num_skipped == 1


def test_a_skip_is_warned_by_the_next_step():
    """A skip is warned, and counted, by the next Trainer.step (or save), which sets
    ``rescale_grad`` first; not before."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    with pytest.warns(RuntimeWarning, match="skipped the update of parameter 'first'"):
        step(trainer, params, with_bad(first=np.nan))
        trainer.optimizer.rescale_grad = 1.0  # what the next Trainer.step does first
    assert trainer.optimizer.num_skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # not yet: it ran in the engine, nobody asked
        step(trainer, params, with_bad(second=np.nan))
    assert trainer.optimizer.num_skipped == 1
    with pytest.warns(RuntimeWarning, match="skipped the update of parameter 'second'"):
        step(trainer, params, GOOD)
    assert trainer.optimizer.num_skipped == 2
    assert trainer.optimizer._index_update_count == {0: 3, 1: 3}  # one skip each


def test_max_skips_raises_out_of_a_trainer_step():
    params, trainer = trainer_on_two_devices(True, max_skips=3)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        with pytest.raises(FloatingPointError, match=r"'first' has failed 3 times in a row"):
            for _ in range(4):
                step(trainer, params, with_bad(first=np.nan))
    assert trainer.optimizer.num_skipped == 2  # the third raised instead of counting


def test_a_queued_update_that_went_well_ends_a_run_of_skips():
    """``max_skips`` counts bad updates in a row: a queued update that went well ends its
    parameter's run, also when it is taken in with others that all went well (one call
    into the kernel reads them: each step is waited for, so all have run)."""
    params, trainer = trainer_on_two_devices(True, max_skips=3)
    bad = with_bad(first=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        for grads in (GOOD, bad, bad, GOOD, bad, bad, GOOD):
            step(trainer, params, grads)
            nd.waitall()
        trainer.optimizer._take_queued()
    assert trainer.optimizer.num_skipped == 4 and not trainer.optimizer._bad.in_a_row


def test_a_second_moment_that_overflows_is_reported():
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)  # the first step runs on the calling thread
    huge = dict(GOOD, first=np.full(4, 1.5e38))  # summed, 3e38: finite; v is not
    with pytest.warns(RuntimeWarning, match="second moment of parameter 'first' overflowed"):
        step(trainer, params, huge)
        trainer.optimizer.rescale_grad = 1.0  # what the next Trainer.step does first
    assert trainer.optimizer.num_skipped == 1


def test_a_save_takes_in_what_is_queued(tmp_path):
    """A save waits for the queued steps and counts them before writing."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)
    step(trainer, params, with_bad(second=np.nan))
    with pytest.warns(RuntimeWarning, match="'second'"):
        checkpoint.save_states(trainer, tmp_path / 'states')
    assert trainer.optimizer.num_skipped == 1 and not trainer.optimizer._engine.queued
    params2, trainer2 = trainer_on_two_devices(True)
    step(trainer2, params2, GOOD)  # the KVStore made, then the states loaded into it
    checkpoint.load_states(trainer2, tmp_path / 'states')
    assert trainer2.optimizer._index_update_count == {0: 2, 1: 1}
    assert trainer2.optimizer.num_skipped == 1


def one_parameter_buffers(weight, grad):
    """The kernel's buffers for ``weight``'s first step with ``grad``, as the dispatch
    makes them (zero moments), and that Step."""
    from adam_plugin import MyAdam
    opt = MyAdam(learning_rate=0.1)
    state = opt.create_state(0, weight)
    storage = kernel.storage(np.dtype(weight.dtype), False)
    buffers = kernel.HandleTable(storage, [(weight.shape, weight, grad, state[:-1], None, None)])
    opt._update_count(0)
    return buffers, optimizer_step(opt, 0)


def test_the_kernel_refuses_arrays_a_queued_step_does_not_take():
    """The KVStore's later calls reuse the first call's buffers with their own weight and
    gradient: the kernel checks those and queues nothing for one it does not take."""
    weight = nd.ones((8,))
    buffers, step_ = one_parameter_buffers(weight, nd.ones((8,)))
    others = {
        'fewer elements': nd.ones((4,)),
        'more elements': nd.ones((3, 8)),
        'float64': nd.ones((8,), dtype='float64'),
        'row_sparse': nd.ones((8,)).tostype('row_sparse'),
    }
    for what, array in others.items():
        for as_weight in (True, False):
            arrays = (array, nd.ones((8,))) if as_weight else (weight, array)
            assert buffers.queue(step_, *arrays) is None, (what, as_weight)
    nd.waitall()
    np.testing.assert_array_equal(weight.asnumpy(), 1.0)
    other, other_grad = nd.ones((2, 4)), nd.ones((8,))  # the same elements, dtype, storage
    nd.waitall()  # allocated: a queued step reads its arrays' data pointers when queued
    assert buffers.queue(step_, other, other_grad).result() == (True, 0)
    assert (other.asnumpy() < 1).all()


def test_the_status_of_several_queued_steps_is_their_worst():
    """``kernel.queued_status`` reads several queued steps in one call: 0 while one has
    not run, then 1 when each ran well, else 2 (a gradient that held a NaN), as
    ``Queued.status`` reads each."""
    slow = nd.random.normal(shape=(1500, 1500))
    weights, grads = [nd.ones((8,)) for _ in range(3)], [nd.zeros((8,)) for _ in range(3)]
    tables = [one_parameter_buffers(w, g) for w, g in zip(weights, grads, strict=True)]
    nd.array([0.5, np.nan, 0, 0, 0, 0, 0, 0]).copyto(grads[1])
    nd.waitall()  # allocated: a queued step reads its arrays' data pointers when queued
    (nd.dot(slow, slow)[0, :8] * 0 + 0.5).copyto(grads[2])  # pending while queued
    queued = [buffers.queue(step_, w, g)
              for (buffers, step_), w, g in zip(tables, weights, grads, strict=True)]
    assert kernel.queued_status(queued) == 0 == queued[2].status()
    nd.waitall()
    assert [q.status() for q in queued] == [1, 2, 1]
    assert kernel.queued_status(queued) == 2
    assert kernel.queued_status([queued[0], queued[2]]) == 1


def test_a_table_of_several_parameters_refuses_one_parameters_arrays():
    """``HandleTable.use_arrays`` and ``queue`` put a weight and a gradient in the place of
    a one-parameter table's; a table of two lays its handles out otherwise, and refuses
    them rather than write over the second weight's handle."""
    weights = [nd.ones((8,)), nd.ones((3,))]
    state = [MyAdam(learning_rate=0.1).create_state(0, w) for w in weights]
    table = kernel.HandleTable('float32', [(w.shape, w, nd.zeros(w.shape), s[:2], None, None)
                                           for w, s in zip(weights, state, strict=True)])
    _, step_ = one_parameter_buffers(nd.ones((8,)), nd.zeros((8,)))
    for call in (lambda: table.use_arrays(nd.ones((8,)), nd.ones((8,))),
                 lambda: table.queue(step_, nd.ones((8,)), nd.ones((8,)))):
        with pytest.raises(ValueError, match='table of one parameter; this one holds 2'):
            call()


def test_a_queued_step_runs_after_the_gradient_it_waits_for():
    """Queued behind a pending write to its gradient, the step reads the written
    gradient: it equals the same step on the calling thread, bitwise."""
    a = nd.random.normal(shape=(600, 600))
    weight, grad = nd.ones((64,)), nd.zeros((64,))
    queued_buffers, step_ = one_parameter_buffers(weight, nd.zeros((64,)))
    nd.waitall()  # allocated: a queued step reads its arrays' data pointers when queued
    (nd.dot(a, a)[0, :64] * 1e-3).copyto(grad)  # pending while the step is queued
    queued = queued_buffers.queue(step_, weight, grad)
    assert queued.result() == (True, 0)
    reference = nd.ones((64,))
    buffers, same_step = one_parameter_buffers(reference, grad)
    assert same_step == step_
    assert buffers.adam_steps([same_step]) == [0]
    np.testing.assert_array_equal(weight.asnumpy(), reference.asnumpy())
    assert not np.array_equal(weight.asnumpy(), np.ones(64, np.float32))


class _Failing(mx.operator.CustomOp):
    """An operator that fails: its output holds MXNet's engine error instead of values."""

    def forward(self, is_train, req, in_data, out_data, aux):
        raise ValueError("the operation that writes the gradient failed")


register_custom_op('adam_plugin_failing', _Failing)


def test_an_engine_error_in_the_gradient_comes_out_of_the_next_step():
    """When the operation that writes a gradient failed, MXNet's engine does not run the
    queued step, and the KVStore's later calls do not wait for it: the parameters after
    it are stepped, as MXNet's own adam_update steps them. Taking it in at the next
    Trainer.step raises MXNet's error out of that step before it changes anything; the
    parameter keeps its weight and step count."""
    params, trainer = trainer_on_two_devices(True)
    step(trainer, params, GOOD)  # on the calling thread
    step(trainer, params, GOOD)  # queued
    opt = trainer.optimizer
    opt._take_queued()
    before = [p.data(TWO[0]).asnumpy() for p in params]
    for p in params:
        for g in p.list_grad():
            g[:] = nd.array(GOOD[p.name])
        for d in p.list_data():
            d._fresh_grad = True
    first_grad = params[0].list_grad()[0]
    nd.Custom(nd.ones(first_grad.shape), op_type='adam_plugin_failing', out=first_grad)
    trainer.step(1)  # 'first' queued behind the failed write, then 'second'
    assert list(opt._engine.queued) == [0, 1]
    with pytest.raises(mx.base.MXNetError, match='kCustomOpForward'):
        step(trainer, params, GOOD)
    assert opt._index_update_count == {0: 2, 1: 3} and opt.num_update == 3
    opt._take_queued()
    assert not opt._engine.queued and opt._index_update_count == {0: 2, 1: 3}
    kv = trainer._kvstore
    for key, weight in enumerate(before):
        out = nd.zeros(weight.shape)
        kv.pull(key, out=out)
        assert np.array_equal(out.asnumpy(), weight) == (key == 0)  # 'second' was stepped
