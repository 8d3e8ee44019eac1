"""MyAdam's bookkeeping, each class alone: StepCounts and BadUpdates (adam_plugin.counts),
StepValues (adam_plugin.step_values) and EngineQueue (adam_plugin.engine), on stand-ins
for the optimizer and for what they are handed.

The whole optimizer's behaviour is tested elsewhere (test_step_counts.py, test_nonfinite.py,
test_step_values.py, test_queued.py); these pin each class's own contract.
"""
import math
import types
import warnings

import numpy as np
import pytest

from adam_plugin import MyAdam, engine, step_values
from adam_plugin.counts import WARN_EVERY, BadUpdates, StepCounts
from adam_plugin.kernel import V_OVERFLOW, W_OVERFLOW
from adam_plugin.step_values import StepValues

FLOAT32 = np.dtype(np.float32)
FLOAT16 = np.dtype(np.float16)


def counting_optimizer(**counts):
    """What StepCounts reads and writes of an optimizer: MXNet's counts of the device."""
    return types.SimpleNamespace(_index_update_count=dict(counts.get('mxnet', {})),
                                 num_update=counts.get('num_update', 0),
                                 begin_num_update=counts.get('begin', 0))


def name(index):
    return f"parameter p{index}"


# --- StepCounts --------------------------------------------------------------------------

def test_advance_counts_in_the_state_and_mxnet_follows():
    opt = counting_optimizer(num_update=7)
    counts = StepCounts(opt)
    t = [3]  # a state's step count
    assert counts.advance(0, t) == 4 and t == [4]
    assert opt._index_update_count == {0: 4} and opt.num_update == 7  # the largest
    assert counts.advance(1, [9]) == 10 and opt.num_update == 10


def test_a_state_without_its_count_counts_from_mxnet_the_file_or_the_beginning():
    opt = counting_optimizer(mxnet={0: 5}, begin=2)
    counts = StepCounts(opt)
    counts.load({1: {1: 30}, 0: {1: 20, 2: 40}})  # the lowest device's count of an index
    assert [counts.advance(i, None) for i in (0, 1, 2, 3)] == [6, 21, 41, 3]
    assert opt._index_update_count == {0: 6, 1: 21, 2: 41, 3: 3} and opt.num_update == 41


def test_restore_puts_back_what_snapshot_saw():
    opt = counting_optimizer(mxnet={0: 4}, num_update=4)
    counts = StepCounts(opt)
    t0, t1 = [4], [0]
    before = counts.snapshot((0, 1), (t0, t1))
    counts.advance(0, t0)
    counts.advance(1, t1)
    counts.restore(before)
    assert (t0, t1, opt._index_update_count, opt.num_update) == ([4], [0], {0: 4}, 4)


def test_counted_counts_the_finite_and_gives_every_count_back_if_the_steps_raise():
    opt = counting_optimizer()
    counts = StepCounts(opt)
    states = [[0], [0], [0]]
    assert counts.counted((0, 1, 2), states, (True, False, True),
                          lambda ts, num_update: (ts, num_update)) == ([1, None, 1], 0)
    assert states == [[1], [0], [1]] and opt._index_update_count == {0: 1, 2: 1}

    def refusing(ts, num_update):
        raise ValueError('a learning rate that is not finite')

    with pytest.raises(ValueError, match='not finite'):
        counts.counted((0, 1, 2), states, (True, True, True), refusing)
    assert states == [[1], [0], [1]] and opt._index_update_count == {0: 1, 2: 1}
    assert opt.num_update == 1


def test_counted_first_gives_back_the_counts_of_the_parameters_left_untouched():
    opt = counting_optimizer()
    counts = StepCounts(opt)
    states = [[0], [3], [0]]
    applied = []

    def apply(steps):
        applied.append(steps)
        return [True, False, True], [0, 0, 0]

    steps, finite, _ = counts.counted_first((0, 1, 2), states, lambda ts, n: ts, apply)
    assert applied == [[1, 4, 1]]  # every update counted before the step
    assert steps == [1, None, 1] and finite == [True, False, True]
    assert states == [[1], [3], [1]] and opt._index_update_count == {0: 1, 2: 1}
    assert opt.num_update == 1

    def failing(steps):
        raise RuntimeError('MXNet refused a data pointer')

    with pytest.raises(RuntimeError, match='refused'):
        counts.counted_first((0, 1, 2), states, lambda ts, n: ts, failing)
    assert states == [[1], [3], [1]] and opt._index_update_count == {0: 1, 2: 1}
    assert opt.num_update == 1


# --- BadUpdates --------------------------------------------------------------------------

def bad_updates(nonfinite='skip', max_skips=3):
    opt = types.SimpleNamespace(nonfinite=nonfinite, max_skips=max_skips, num_skipped=0)
    return opt, BadUpdates(opt, name)


def test_under_raise_a_bad_gradient_is_refused_by_name():
    _, bad = bad_updates('raise')
    bad.refuse_bad_gradients((0, 1, 2), (True, True, True))
    with pytest.raises(FloatingPointError, match='gradient of parameter p1, parameter p2 holds'):
        bad.refuse_bad_gradients((0, 1, 2), (True, False, False))


def test_skips_are_counted_and_warned_about_until_max_skips_in_a_row():
    opt, bad = bad_updates(max_skips=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            bad.refuse_bad_gradients((0,), (False,))
            bad.count_skips((0,), (False,))
    assert opt.num_skipped == 2 and bad.in_a_row == {0: 2}
    assert [str(w.message) for w in caught] == [
        "myadam: skipped the update of parameter p0: its gradient holds NaN or Inf (1 in a "
        "row for this parameter, 1 in all; at max_skips=3 in a row, FloatingPointError)"]
    with pytest.raises(FloatingPointError, match='p0 has failed 3 times in a row'):
        bad.refuse_bad_gradients((0,), (False,))
    bad.good((0,))
    bad.refuse_bad_gradients((0,), (False,))  # a new run


def test_a_long_run_is_warned_about_every_warn_every_th():
    opt, bad = bad_updates(max_skips=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2 * WARN_EVERY):
            bad.count_skips((0,), (False,))
    assert [str(w.message).split('(')[1].split(' in a row')[0] for w in caught] == [
        '1', str(WARN_EVERY), str(2 * WARN_EVERY)]


def test_overflows_raise_under_raise_and_count_under_skip():
    _, bad = bad_updates('raise')
    with pytest.raises(FloatingPointError) as err:
        bad.check_overflows((0, 1), ('step', 'step'), (V_OVERFLOW, V_OVERFLOW | W_OVERFLOW))
    assert str(err.value).startswith(
        "myadam: the second moment of parameter p0, parameter p1 overflowed to Inf")
    assert 'the weight of parameter p1 holds Inf or NaN' in str(err.value)
    opt, bad = bad_updates('skip')
    bad.in_a_row = {0: 1, 2: 1}
    with pytest.warns(RuntimeWarning, match='the weight of parameter p1 holds Inf'):
        bad.check_overflows((0, 1, 2), ('step', 'step', None), (0, W_OVERFLOW, 0))
    assert opt.num_skipped == 1
    assert bad.in_a_row == {1: 1, 2: 1}  # p0 stepped well, p2 was not stepped


# --- StepValues --------------------------------------------------------------------------

def batch_of(dtypes):
    """What StepValues.rule reads of a dispatch.Batch."""
    return types.SimpleNamespace(dtypes=dtypes, distinct_dtypes=frozenset(dtypes),
                                 name=lambda i: name(i))


def test_the_rule_is_read_from_the_optimizer_and_checked_where_it_is_read():
    opt = MyAdam(learning_rate=0.1, beta1=0.8, wd=0.01)
    values = StepValues(opt, name)
    batch = batch_of([(FLOAT32, FLOAT32)])
    rest, wd = values.rule(batch)
    assert wd == 0.01 and rest[:3] == (0.8, 0.999, 1e-8)  # beta1, beta2, epsilon
    opt.beta1 = math.nan  # set after the constructor
    with pytest.raises(ValueError, match=r"Invalid beta1: nan at update 1 \(the optimizer's "
                                         r"attribute beta1; expected"):
        values.rule(batch)
    opt.beta1, opt.rescale_grad = 0.8, 1e5
    with pytest.raises(ValueError, match="rescale_grad: 100000.0 at update 1 for parameter p0 .*"
                                         "finite in float16"):
        values.rule(batch_of([(FLOAT32, FLOAT16)]))


def test_a_step_takes_the_schedule_and_the_parameters_multipliers():
    opt = MyAdam(learning_rate=0.5, wd=0.1)
    opt.param_dict = {0: types.SimpleNamespace(name='w', lr_mult=0.5, wd_mult=2.0)}
    values = StepValues(opt, name)
    batch = batch_of([(FLOAT32, FLOAT32)])
    rule = values.rule(batch)
    step = values.step(0, 3, values.base_lr(2), rule, (FLOAT32, FLOAT32), 2)
    assert (step.t, step.lr, step.wd) == (3, 0.25, 0.2)
    assert values.steps((0, 1), (None, 2), rule, [(FLOAT32, FLOAT32)] * 2, 1)[0] is None
    opt.lr_scheduler = lambda num_update: math.inf
    with pytest.raises(ValueError, match=r"learning rate: inf at update 4 \(lr_scheduler\(4\)"):
        values.base_lr(4)


def test_each_parameter_takes_the_rate_at_the_num_update_its_count_left():
    """Counted in order from num_update 3: p0 (t 2) and p1 (t 4) see 3 and 4, p2 (t 4) and
    p3 (t 1) still 4, p4 (t 6) 6; the scheduler is asked once per run (3, 4, 6), and
    parameters stepped alike share one Step."""
    opt = MyAdam(learning_rate=0.5)
    asked = []
    opt.lr_scheduler = lambda num_update: asked.append(num_update) or 1.0 / num_update
    values = StepValues(opt, name)
    rule = values.rule(batch_of([(FLOAT32, FLOAT32)]))
    steps = values.steps(range(6), (2, 4, 4, None, 1, 6), rule, [(FLOAT32, FLOAT32)] * 6, 3)
    assert asked == [3, 4, 6]
    assert [s and (s.t, s.lr) for s in steps] == [(2, 1 / 3), (4, 1 / 4), (4, 1 / 4), None,
                                                   (1, 1 / 4), (6, 1 / 6)]
    assert steps[1] is steps[2]


def test_what_was_found_good_is_not_checked_again(monkeypatch):
    opt = MyAdam(learning_rate=0.1)
    values = StepValues(opt, name)
    batch = batch_of([(FLOAT32, FLOAT32)])
    checked = []
    check = step_values.options.step_value
    monkeypatch.setattr(step_values.options, 'step_value',
                        lambda *args: checked.append(args[0]) or check(*args))
    first = values.rule(batch), values.base_lr(0)
    assert 'beta1' in checked and 'lr' in checked
    checked.clear()
    assert (values.rule(batch), values.base_lr(0)) == first and checked == []
    opt.beta1 = 0.5  # a new value is checked
    values.rule(batch)
    assert 'beta1' in checked


# --- EngineQueue -------------------------------------------------------------------------

class Queued:
    """What kernel.HandleTable.queue returns, its step run: the gradient finite or not."""

    def __init__(self, finite):
        self.finite = finite

    def status(self):
        return 1 if self.finite else 2

    def result(self):
        return self.finite, 0


class Batch:
    """What EngineQueue reads of a queueable dispatch.Batch of one parameter."""
    queueable, dtypes = True, [(FLOAT32, FLOAT32)]

    def __init__(self, finite):
        self.step_counts, self.finite, self.queued = [[0]], finite, []

    def queue(self, step, weight, grad):
        self.queued.append((step, weight, grad))
        return Queued(self.finite)


class Values:
    """StepValues' part in queueing: a rule, a base rate, a step."""

    def rule(self, batch):
        return 'rule'

    def base_lr(self, num_update):
        return 0.1

    def step(self, index, t, base, rule, dtypes, num_update):
        return types.SimpleNamespace(t=t, lr=base)


def engine_queue(monkeypatch, in_callback=True, nonfinite='skip', contexts=2):
    opt = types.SimpleNamespace(
        nonfinite=nonfinite, max_skips=None, num_skipped=0, begin_num_update=0,
        _index_update_count={}, num_update=0, lr_scheduler=None,
        param_dict={0: types.SimpleNamespace(list_ctx=lambda: [None] * contexts)})
    monkeypatch.setattr(engine.mxnet_internals, 'in_kvstore_callback',
                        lambda frame=None: in_callback)
    monkeypatch.setattr(engine.kernel, 'queued_status',  # of the Queued below, as the kernel's
                        lambda queued: max(q.status() for q in queued))
    return opt, engine.EngineQueue(opt, StepCounts(opt), Values(), BadUpdates(opt, name))


def test_a_planned_update_is_queued_and_its_count_waits_for_it(monkeypatch):
    opt, queue = engine_queue(monkeypatch)
    batch = Batch(finite=True)
    state = object()
    assert not queue.queue(0, 'w', 'g', state, False)  # no plan yet
    queue.plan(0, state, False, batch)
    assert queue.queue(0, 'w1', 'g1', state, False)
    assert batch.queued[0][1:] == ('w1', 'g1')  # the call's own weight and gradient
    count = batch.step_counts[0]
    assert type(count[0]) is engine.QueuedCount and count[0] == 1
    assert opt._index_update_count == {0: 1} and list(queue.queued) == [0]
    queue.take_all()
    assert type(count[0]) is int and count == [1] and not queue.queued


def test_a_queued_update_that_was_skipped_gives_its_count_back(monkeypatch):
    opt, queue = engine_queue(monkeypatch)
    batch = Batch(finite=False)
    queue.plan(0, 'state', False, batch)
    assert queue.queue(0, 'w', 'g', 'state', False)
    with pytest.warns(RuntimeWarning, match='skipped the update of parameter p0'):
        queue.take_all()
    assert batch.step_counts[0] == [0] and opt._index_update_count == {}
    assert opt.num_skipped == 1 and opt.num_update == 0


@pytest.mark.parametrize('in_callback, nonfinite, contexts', [
    (False, 'skip', 2),  # the Trainer's own call: it waits for its update
    (True, 'raise', 2),  # the error comes out of the call that failed
    (True, 'skip', 1),  # the gradient is the array pushed, which Gluon may replace
])
def test_nothing_is_planned_where_updates_are_not_queued(monkeypatch, in_callback, nonfinite,
                                                          contexts):
    _, queue = engine_queue(monkeypatch, in_callback, nonfinite, contexts)
    queue.plan(0, 'state', False, Batch(finite=True))
    assert not queue.plans and not queue.queue(0, 'w', 'g', 'state', False)
