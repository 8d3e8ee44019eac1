"""Classes the user allows in a states file: ``add_safe_globals`` and ``safe_globals``.

A scheduler class of the user's own (from a module this test writes, so nothing
here is known to the package) is refused until allowed, with a message that says
how to allow it; once allowed, for the process or within a ``with`` block, the
file loads and resumes bitwise. An allowed class is still rebuilt as a plain
object, its attributes set without running its ``__setstate__``: one that pickles
itself by a call, holds an array or has no ``__dict__`` is refused.
"""
import importlib
import io
import pickle
import textwrap

import mxnet as mx
import pytest

from adam_plugin import checkpoint
from checkpoints import LOADERS, SAVE_AFTER, STEPS, Job, assert_same, inspect, save

SCHEDULES = '''
from mxnet import lr_scheduler


class Halving:
    """Halve the rate every ``every`` updates (a plain object)."""
    def __init__(self, base_lr, every):
        self.base_lr, self.every = base_lr, every

    def __call__(self, num_update):
        return self.base_lr * 0.5 ** (num_update // self.every)


class Sequence:
    """The first schedule up to ``switch``, then the second (objects inside an object)."""
    def __init__(self, first, second, switch):
        self.schedules, self.switch = [first, second], switch

    def __call__(self, num_update):
        return self.schedules[num_update > self.switch](num_update)


class Reduced(Halving):
    """Pickles itself by a call, as no plain object does."""
    def __reduce__(self):
        return Reduced, (self.base_lr, self.every)


class Restoring(Halving):
    """A ``__setstate__`` that would act on the file's data: it records each call and
    takes the rate it is given times 1000."""
    calls = []

    def __setstate__(self, state):
        Restoring.calls.append(dict(state))
        self.__dict__.update(state, base_lr=state['base_lr'] * 1000)


class Slotted:
    """Objects without a ``__dict__``, pickled through ``__getstate__`` / ``__setstate__``."""
    __slots__ = ('base_lr',)

    def __init__(self, base_lr):
        self.base_lr = base_lr

    def __getstate__(self):
        return {'base_lr': self.base_lr}

    def __setstate__(self, state):
        self.base_lr = state['base_lr']

    def __call__(self, num_update):
        return self.base_lr
'''


@pytest.fixture
def schedules(tmp_path, monkeypatch):
    """The user's module, written and imported here."""
    (tmp_path / 'user_schedules.py').write_text(textwrap.dedent(SCHEDULES))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module('user_schedules')
    yield module
    checkpoint.clear_safe_globals()
    del importlib.sys.modules['user_schedules']


def sequence(schedules):
    return schedules.Sequence(schedules.Halving(0.01, 3),
                              mx.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.004),
                              switch=4)


def job_with(scheduler):
    job = Job('defaults', 'one_device')
    job.trainer.optimizer.lr_scheduler = scheduler
    return job


def test_a_users_class_is_refused_saying_how_to_allow_it(schedules, tmp_path):
    job = job_with(sequence(schedules)).train(range(1, 3))
    _, fname = save(job, tmp_path)
    with pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert 'it names user_schedules.Sequence, which is not allowed' in str(err.value)
    assert 'adam_plugin.checkpoint.add_safe_globals([cls])' in str(err.value)
    assert 'with adam_plugin.checkpoint.safe_globals([cls]):' in str(err.value)


@pytest.mark.parametrize('how', ['with', 'add'])
def test_an_allowed_class_loads_and_resumes_bitwise(how, schedules, tmp_path):
    allowed = [schedules.Sequence, schedules.Halving]
    straight = job_with(sequence(schedules)).train(range(1, STEPS + 1)).snapshot()
    first = job_with(sequence(schedules)).train(range(1, SAVE_AFTER + 1))
    params, fname = save(first, tmp_path)
    resumed = job_with(None)
    resumed.net.load_parameters(str(params))
    if how == 'with':
        with checkpoint.safe_globals(allowed):
            assert checkpoint.get_safe_globals() == allowed
            checkpoint.load_states(resumed.trainer, fname)
        assert checkpoint.get_safe_globals() == []
    else:
        checkpoint.add_safe_globals(allowed)
        checkpoint.load_states(resumed.trainer, fname)
    scheduler = resumed.trainer.optimizer.lr_scheduler
    assert type(scheduler) is schedules.Sequence
    assert type(scheduler.schedules[0]) is schedules.Halving
    assert_same(resumed.train(range(SAVE_AFTER + 1, STEPS + 1)).snapshot(), straight)


def test_an_allowed_class_is_rebuilt_without_its_setstate(schedules, tmp_path):
    straight = job_with(schedules.Restoring(0.01, 3)).train(range(1, STEPS + 1)).snapshot()
    first = job_with(schedules.Restoring(0.01, 3)).train(range(1, SAVE_AFTER + 1))
    params, fname = save(first, tmp_path)
    resumed = job_with(None)
    resumed.net.load_parameters(str(params))
    with checkpoint.safe_globals([schedules.Restoring]):
        checkpoint.load_states(resumed.trainer, fname)
    assert schedules.Restoring.calls == []
    scheduler = resumed.trainer.optimizer.lr_scheduler
    assert type(scheduler) is schedules.Restoring
    assert vars(scheduler) == {'base_lr': 0.01, 'every': 3}
    assert_same(resumed.train(range(SAVE_AFTER + 1, STEPS + 1)).snapshot(), straight)


def test_inspect_shows_an_allowed_object(schedules, tmp_path):
    _, fname = save(job_with(sequence(schedules)).train(range(1, 3)), tmp_path)
    assert inspect(fname).returncode == 1
    with checkpoint.safe_globals([schedules.Sequence, schedules.Halving]):
        done = inspect(fname, '--json')
    assert done.returncode == 0, done.stderr
    assert '"class": "user_schedules.Halving"' in done.stdout


def test_inspect_allows_a_class_named_on_its_command_line(schedules, tmp_path):
    _, fname = save(job_with(sequence(schedules)).train(range(1, 3)), tmp_path)
    done = inspect(fname, '--allow', 'user_schedules.Sequence',
                   '--allow', 'user_schedules.Halving')
    assert done.returncode == 0, done.stderr
    assert 'lr_scheduler: user_schedules.Sequence' in done.stdout
    assert checkpoint.get_safe_globals() == []
    with pytest.raises(SystemExit) as done:  # argparse's usage error
        inspect(fname, '--allow', 'user_schedules.NoSuchClass')
    assert done.value.code == 2


def test_allowing_takes_classes_only():
    with pytest.raises(TypeError, match='takes classes'):
        checkpoint.add_safe_globals(['user_schedules.Halving'])


# name -> (the scheduler, the classes allowed, what the refusal says)
NOT_PLAIN = {
    'pickled_by_a_call': (lambda m: m.Reduced(0.01, 3), lambda m: [m.Reduced],
                          'user_schedules.Reduced is rebuilt by calling it with (0.01, 3)'),
    'holding_an_array': (lambda m: m.Halving(mx.nd.ones(1), 3), lambda m: [m.Halving],
                         "attribute 'base_lr' of user_schedules.Halving holds "
                         "mxnet.ndarray.ndarray.NDArray"),
    'holding_a_class_not_allowed': (lambda m: m.Sequence(m.Halving(0.01, 3), m.Halving(0.1, 2),
                                                         switch=4),
                                    lambda m: [m.Sequence],
                                    'it names user_schedules.Halving, which is not allowed'),
    'without_a_dict': (lambda m: m.Slotted(0.01), lambda m: [m.Slotted],
                       'user_schedules.Slotted cannot be rebuilt from its attributes: its '
                       'objects have no __dict__ (__slots__), and the __setstate__ of a class '
                       'allowed by the user is not called'),
}


@pytest.mark.parametrize('row', NOT_PLAIN)
def test_an_allowed_class_is_rebuilt_from_plain_data_only(row, schedules, tmp_path):
    make, allowed, message = NOT_PLAIN[row]
    job = Job('defaults', 'one_device').train(range(1, 3))
    states, optimizer = pickle.loads(save(job, tmp_path)[1].read_bytes())
    optimizer.lr_scheduler = make(schedules)
    fname = tmp_path / 'user.states'
    fname.write_bytes(pickle.dumps((states, optimizer)))
    with checkpoint.safe_globals(allowed(schedules)), pytest.raises(ValueError) as err:
        checkpoint.load_states(job.trainer, fname)
    assert message in str(err.value)


@pytest.mark.parametrize('loader', LOADERS)
def test_gluoncvs_lr_sequential_loads_once_allowed(loader, tmp_path):
    lr_scheduler = pytest.importorskip(
        'gluoncv.utils.lr_scheduler',
        reason='GluonCV is not installed in this environment (it is not a dependency; '
               'installing it at test time would need the network)')
    scheduler = lr_scheduler.LRSequential([
        lr_scheduler.LRScheduler('linear', base_lr=0, target_lr=0.01, nepochs=1, iters_per_epoch=3),
        lr_scheduler.LRScheduler('cosine', base_lr=0.01, target_lr=0, nepochs=2, iters_per_epoch=3)])
    job = job_with(scheduler).train(range(1, 4))
    _, fname = save(job, tmp_path)
    with checkpoint.safe_globals([lr_scheduler.LRSequential, lr_scheduler.LRScheduler]):
        LOADERS[loader](job_with(None).trainer, fname)


class NamesRecorded(pickle.Unpickler):
    """Unpickles, writing down every name the pickle looks up."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.names = set()

    def find_class(self, module, name):
        self.names.add(f'{module}.{name}')
        return super().find_class(module, name)


def test_the_trainer_loads_it_from_bytes_that_name_only_what_the_file_may(
        schedules, tmp_path, monkeypatch):
    """checkpoint.load_states hands MXNet's own Trainer.load_states the checked objects,
    pickled anew: they name only the classes the file was allowed to, and a function of
    adam_plugin.checkpoint that gives an allowed object its attributes (not its
    __setstate__)."""
    handed = []
    load = mx.gluon.Trainer.load_states

    def recording(trainer, fname):
        with open(fname, 'rb') as f:
            handed.append(f.read())
        return load(trainer, fname)

    monkeypatch.setattr(mx.gluon.Trainer, 'load_states', recording)
    first = job_with(schedules.Restoring(0.01, 3)).train(range(1, 3))
    _, fname = save(first, tmp_path)
    resumed = job_with(None)
    with checkpoint.safe_globals([schedules.Restoring]):
        checkpoint.load_states(resumed.trainer, fname)
    assert len(handed) == 1
    unpickler = NamesRecorded(handed[0])
    states, optimizer = unpickler.load()
    assert unpickler.names == {'mxnet.ndarray.ndarray.NDArray', 'builtins.bytearray',
                               'adam_plugin.optimizer.MyAdam', 'user_schedules.Restoring',
                               'adam_plugin.checkpoint._set_attributes'}
    assert schedules.Restoring.calls == []
    assert vars(optimizer.lr_scheduler) == {'base_lr': 0.01, 'every': 3}
    assert resumed.trainer.optimizer.lr_scheduler.base_lr == 0.01
