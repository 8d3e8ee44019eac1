"""An exception MyAdam raises under a KVStore reaches the user out of the call that failed.

With ``update_on_kvstore=True`` MXNet calls the optimizer from C through a ctypes
callback that drops exceptions; :mod:`adam_plugin.deferred` keeps them and raises
them as soon as MXNet returns to Python: out of ``Trainer.step``, ``Module.update``
and ``Module.fit``. Real Trainers and Modules over two CPU contexts.
"""
import cProfile
import pstats
import sys
import traceback
import warnings

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from adam_plugin import checkpoint, counts as counts_module, deferred
from configs import TOL
from helpers import raised_from_the_callback

TWO = [mx.cpu(0), mx.cpu(1)]

# (kvstore, update_on_kvstore, in_callback): the Trainer calls the optimizer itself (all
# parameters in one call, checked before any changes), or the KVStore's callback does
# (one call per parameter in the Trainer's order, sorted by name: those before the
# failing one keep their step, and a warning is issued there too). The failing step
# raises either way.
MODES = [('device', False, False), ('local', False, False),
         ('device', True, True), ('local', True, True)]


class EndingSchedule(mx.lr_scheduler.LRScheduler):
    """A user's schedule that raises after the first update."""

    def __call__(self, num_update):
        if num_update > 1:
            raise ValueError(f"schedule ended: no rate for update {num_update}")
        return self.base_lr


# name -> (optimizer params, input of the failing step, exception type, message part,
#          the parameter that fails first). A NaN input gives the weight a NaN
#          gradient; the bias gradient (ones) stays finite.
ERRORS = {
    'nan_gradient': (dict(nonfinite='raise'), np.nan, FloatingPointError,
                     "gradient of parameter 'dense0_weight' holds NaN or Inf", 'dense0_weight'),
    'lr_scheduler': (dict(lr_scheduler=EndingSchedule()), 1.0, ValueError,
                     'schedule ended: no rate for update 2', 'dense0_bias'),
}


def make_trainer(kvstore, update_on_kvstore, params):
    net = gluon.nn.Dense(2, in_units=3, prefix='dense0_')
    net.initialize(mx.init.Uniform(), ctx=TWO)
    trainer = gluon.Trainer(net.collect_params(), 'myadam', dict(params, learning_rate=0.1),
                            kvstore=kvstore, update_on_kvstore=update_on_kvstore)
    return net, trainer


def step(net, trainer, value):
    for ctx in TWO:
        x = nd.full((4, 3), value, ctx=ctx)
        with autograd.record():
            loss = net(x).sum()
        loss.backward()
    trainer.step(8)


def weights(trainer):
    """Parameter name -> its copies on the devices, as NumPy arrays."""
    return {p.name: [d.asnumpy() for d in p.list_data()] for p in trainer._params}


@pytest.mark.parametrize('kvstore, update_on_kvstore, in_callback', MODES)
@pytest.mark.parametrize('error', sorted(ERRORS))
def test_the_error_reaches_the_user(error, kvstore, update_on_kvstore, in_callback):
    params, value, kind, message, failing = ERRORS[error]
    net, trainer = make_trainer(kvstore, update_on_kvstore, params)
    step(net, trainer, 1.0)
    assert trainer._update_on_kvstore is update_on_kvstore
    before = weights(trainer)
    if in_callback:
        with raised_from_the_callback(kind, message) as (caught, warned):
            step(net, trainer, value)
        callback_warnings = [w for w in warned if issubclass(w.category, RuntimeWarning)]
        assert callback_warnings[0].filename == __file__  # the user's trainer.step line
    else:
        with pytest.raises(kind, match=message) as caught:
            step(net, trainer, value)
    # The original traceback: the frame that raised inside MyAdam is in it, and it came
    # out of Trainer.step.
    assert any(entry.frame.code.name in ('refuse_bad_gradients', '__call__') for entry in caught.traceback)
    assert any(entry.frame.code.name == 'step' and entry.path.name == 'trainer.py'
               for entry in caught.traceback)
    names = [p.name for p in trainer._params]
    stepped = names[:names.index(failing)] if in_callback else []
    for name, copies in weights(trainer).items():
        for old, new in zip(before[name], copies, strict=True):
            assert np.array_equal(new, old) is (name not in stepped), name


def raise_line(path, start):
    """``(path, number)`` of the first line of the file at ``path`` that starts, once
    indented, with ``start``: the raise statement of an ERRORS row."""
    with open(path) as f:
        numbers = [n for n, line in enumerate(f, 1) if line.strip().startswith(start)]
    assert len(numbers) == 1, (path, start, numbers)
    return path, numbers[0]


# ERRORS row -> (file, function, start of the line) of the statement that raises it
RAISED_AT = {
    'nan_gradient': (counts_module.__file__, 'refuse_bad_gradients',
                     'raise FloatingPointError(f"myadam: the gradient of'),
    'lr_scheduler': (__file__, '__call__', 'raise ValueError(f"schedule ended'),
}


@pytest.mark.parametrize('error', sorted(ERRORS))
def test_a_deferred_error_names_the_frame_that_raised_it(error):
    """The warning and the re-raised traceback point at the raise statement, not at an
    outer frame between the KVStore's callback and it."""
    params, value, kind, _, _ = ERRORS[error]
    path, function, start = RAISED_AT[error]
    path, line = raise_line(path, start)
    net, trainer = make_trainer('device', True, params)
    step(net, trainer, 1.0)
    with raised_from_the_callback(kind, '') as (caught, warned):
        step(net, trainer, value)
    assert any(f"raised at {path}:{line} in {function} inside" in str(w.message)
               for w in warned)
    innermost = caught.traceback[-1]
    assert (str(innermost.path), innermost.lineno + 1, innermost.name) == (path, line, function)


@pytest.mark.parametrize('kvstore, update_on_kvstore, in_callback', MODES)
def test_once_raised_the_error_is_cleared(kvstore, update_on_kvstore, in_callback):
    net, trainer = make_trainer(kvstore, update_on_kvstore, dict(nonfinite='raise'))
    step(net, trainer, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        with pytest.raises(FloatingPointError):
            step(net, trainer, np.nan)
    step(net, trainer, 1.0)
    before = weights(trainer)
    step(net, trainer, 1.0)
    for name, (first, second) in weights(trainer).items():
        assert not np.array_equal(first, before[name][0])  # training goes on
        np.testing.assert_array_equal(first, second)


@pytest.fixture
def undelivered(monkeypatch):
    """As when the callback ran on a thread that runs no Python after it (one of MXNet's
    own): the error stays kept until the optimizer's next entry point."""
    monkeypatch.setattr(deferred.ErrorCarrier, '_deliver', lambda self: None)


@pytest.mark.parametrize('kvstore', ['device', 'local'])
def test_an_undelivered_error_is_raised_by_the_next_step(undelivered, kvstore):
    net, trainer = make_trainer(kvstore, True, dict(nonfinite='raise'))
    step(net, trainer, 1.0)
    with pytest.warns(RuntimeWarning, match='inside the KVStore'):
        step(net, trainer, np.nan)
    with pytest.raises(FloatingPointError, match='holds NaN or Inf') as caught:
        step(net, trainer, 1.0)
    assert any(entry.frame.code.name == 'refuse_bad_gradients' for entry in caught.traceback)
    step(net, trainer, 1.0)  # raised once, then cleared


@pytest.mark.parametrize('kvstore', ['device', 'local'])
def test_a_save_does_not_go_over_a_pending_error(undelivered, tmp_path, kvstore):
    net, trainer = make_trainer(kvstore, True, dict(nonfinite='raise'))
    step(net, trainer, 1.0)
    fname = tmp_path / 'trainer.states'
    checkpoint.save_states(trainer, fname)
    saved = fname.read_bytes()
    with pytest.warns(RuntimeWarning):
        step(net, trainer, np.nan)
    with pytest.raises(FloatingPointError, match='holds NaN or Inf'):
        checkpoint.save_states(trainer, fname)
    assert fname.read_bytes() == saved  # the previous checkpoint is kept
    checkpoint.save_states(trainer, fname)  # raised once, then cleared


def called_after_the_error():
    """A function the tests below call once the failing step has raised."""
    return 1


def fail_and_go_on(net_and_trainer, raises):
    """A step whose gradient holds NaN under nonfinite='raise' on the KVStore's callback,
    then :func:`called_after_the_error`. ``raises``: out of the failing step, or (False)
    out of the next one, with a warning at once that says which."""
    net, trainer = net_and_trainer
    step(net, trainer, 1.0)
    if raises:
        with raised_from_the_callback(FloatingPointError, 'holds NaN or Inf') as (caught, _):
            step(net, trainer, np.nan)
    else:
        with pytest.warns(RuntimeWarning, match="both of this thread's hooks are taken"):
            step(net, trainer, np.nan)
        with pytest.raises(FloatingPointError, match='holds NaN or Inf') as caught:
            step(net, trainer, 1.0)
    assert any(entry.frame.code.name == 'step' and entry.path.name == 'trainer.py'
               for entry in caught.traceback)
    called_after_the_error()


def test_the_error_comes_out_under_a_profiler_which_goes_on_recording():
    """The error is raised by a hook on the thread; with cProfile running (which takes the
    profile hook), the trace hook is taken instead, and cProfile is left as it was."""
    net_and_trainer = make_trainer('device', True, dict(nonfinite='raise'))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fail_and_go_on(net_and_trainer, raises=True)
        still = sys.getprofile()
    finally:
        profiler.disable()
    assert still is profiler
    recorded = {name for _, _, name in pstats.Stats(profiler).stats}
    assert {'called_after_the_error', 'step', 'refuse_bad_gradients'} <= recorded


def test_the_error_comes_out_under_a_tracer_which_goes_on_tracing():
    """With a tracer running (a debugger, coverage), the profile hook is taken, and the
    tracer is left as it was."""
    calls = []

    def tracer(frame, event, arg):
        if event == 'call':
            calls.append(frame.f_code.co_name)

    net_and_trainer = make_trainer('device', True, dict(nonfinite='raise'))
    sys.settrace(tracer)
    try:
        fail_and_go_on(net_and_trainer, raises=True)
        still = sys.gettrace()
    finally:
        sys.settrace(None)
    assert still is tracer
    assert calls[-1] == 'called_after_the_error' and 'refuse_bad_gradients' in calls


def test_under_a_profiler_and_a_tracer_the_next_step_raises_the_error():
    """With both hooks taken, neither is displaced: the next step raises the error, and the
    warning says so at once."""
    calls = []

    def tracer(frame, event, arg):
        if event == 'call':
            calls.append(frame.f_code.co_name)

    net_and_trainer = make_trainer('device', True, dict(nonfinite='raise'))
    profiler = cProfile.Profile()
    profiler.enable()
    sys.settrace(tracer)
    try:
        fail_and_go_on(net_and_trainer, raises=False)
        still = sys.getprofile(), sys.gettrace()
    finally:
        sys.settrace(None)
        profiler.disable()
    assert still == (profiler, tracer)
    assert calls[-1] == 'called_after_the_error'
    assert 'called_after_the_error' in {name for _, _, name in pstats.Stats(profiler).stats}


def train_sparse_embedding(optimizer, params, steps=5):
    """A ``SparseEmbedding`` on two contexts (update_on_kvstore, as MXNet forces for
    row_sparse weights); returns its weight after ``steps`` steps."""
    mx.random.seed(0)
    net = gluon.contrib.nn.SparseEmbedding(10, 4)
    net.initialize(mx.init.Uniform(), ctx=TWO)
    trainer = gluon.Trainer(net.collect_params(), optimizer, dict(params, learning_rate=0.1),
                            kvstore='device')
    for _ in range(steps):
        for ctx, rows in zip(TWO, ([1, 2, 3], [3, 7]), strict=True):
            with autograd.record():
                loss = (net(nd.array(rows, ctx=ctx)) ** 2).sum()
            loss.backward()
        trainer.step(5)
    return net.weight.row_sparse_data(nd.arange(10, ctx=TWO[0])).asnumpy()


def test_a_sparse_embedding_trains_or_raises():
    """Either ``'myadam'`` trains it as ``'adam'`` does, or ``Trainer.step`` raises the
    error MyAdam met: never a traceback printed each step while nothing moves."""
    adam = train_sparse_embedding('adam', {})
    try:
        mine = train_sparse_embedding('myadam', dict(epsilon_mode='hat'))
    except Exception as error:
        frames = [(f.filename, f.name) for f in traceback.extract_tb(error.__traceback__)]
        assert any('adam_plugin' in file for file, _ in frames), frames  # MyAdam's update
        assert any(file.endswith('gluon/trainer.py') and name == 'step'
                   for file, name in frames), frames  # raised out of Trainer.step
        return
    np.testing.assert_allclose(mine, adam, **TOL['float32'])


def module_and_data(params):
    """A Module over two CPU contexts ('myadam' updated on its KVStore) and 4 batches, the
    third holding NaN."""
    x = np.ones((40, 3), np.float32)
    x[20:30] = np.nan
    data = mx.io.NDArrayIter(x, np.ones((40, 1), np.float32), batch_size=10, label_name='l')
    out = mx.sym.FullyConnected(mx.sym.Variable('data'), num_hidden=1, name='fc')
    out = mx.sym.LinearRegressionOutput(out, mx.sym.Variable('l'))
    module = mx.mod.Module(out, label_names=['l'], context=TWO)
    module.bind(data.provide_data, data.provide_label)
    module.init_params(mx.init.Uniform())
    module.init_optimizer(optimizer='myadam', optimizer_params=dict(params, learning_rate=0.1))
    assert module._update_on_kvstore
    return module, data


# name -> (optimizer params, exception type, message part, the batch that fails (0-based))
MODULE_ERRORS = {
    'nan_gradient': (dict(nonfinite='raise'), FloatingPointError,
                     "gradient of parameter .*fc_weight.* holds NaN", 2),
    'lr_scheduler': (dict(lr_scheduler=EndingSchedule()), ValueError,
                     'schedule ended: no rate for update 2', 1),
}


@pytest.mark.parametrize('error', sorted(MODULE_ERRORS))
def test_module_update_raises_the_error_of_its_batch(error):
    params, kind, message, failing = MODULE_ERRORS[error]
    module, data = module_and_data(params)
    after = []
    with raised_from_the_callback(kind, message) as (caught, _):
        for batch in data:
            module.forward_backward(batch)
            module.update()
            after.append(module.get_params()[0]['fc_bias'].asnumpy())
    assert len(after) == failing  # the failing batch's update raised, no later one ran
    assert any(entry.frame.code.name == 'update' and entry.path.name == 'module.py'
               for entry in caught.traceback)
    if failing > 1:
        assert not np.array_equal(after[1], after[0])  # it trained until then


@pytest.mark.parametrize('error', sorted(MODULE_ERRORS))
def test_module_fit_raises_the_error(error):
    params, kind, message, _ = MODULE_ERRORS[error]
    module, data = module_and_data(params)
    with raised_from_the_callback(kind, message) as (caught, _):
        module.fit(data, num_epoch=2)
    assert any(entry.frame.code.name == 'fit' for entry in caught.traceback)
