"""An exception MyAdam raises under a KVStore reaches the user out of Trainer.step.

With ``update_on_kvstore=True`` MXNet calls the optimizer from C through a ctypes
callback that drops exceptions; :mod:`adam_plugin.deferred` keeps them and the next
``Trainer.step`` raises them. Real Trainers over two CPU contexts.
"""
import traceback
from contextlib import nullcontext

import numpy as np
import pytest
import mxnet as mx
from mxnet import autograd, gluon, nd

from adam_plugin import checkpoint
from adam_plugin import optimizer as optimizer_module
from conftest import TOL

TWO = [mx.cpu(0), mx.cpu(1)]

# (kvstore, update_on_kvstore) -> the step that raises: the failing one when the
# Trainer calls the optimizer itself (all parameters in one call, checked before any
# changes), the next one when the KVStore's callback does (one call per parameter in
# the Trainer's order, sorted by name: those before the failing one keep their step).
MODES = [('device', False, 'same'), ('local', False, 'same'),
         ('device', True, 'next'), ('local', True, 'next')]


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


@pytest.mark.parametrize('kvstore, update_on_kvstore, raised_by', MODES)
@pytest.mark.parametrize('error', sorted(ERRORS))
def test_the_error_reaches_the_user(error, kvstore, update_on_kvstore, raised_by):
    params, value, kind, message, failing = ERRORS[error]
    net, trainer = make_trainer(kvstore, update_on_kvstore, params)
    step(net, trainer, 1.0)
    assert trainer._update_on_kvstore is update_on_kvstore
    before = weights(trainer)
    if raised_by == 'same':
        with pytest.raises(kind, match=message):
            step(net, trainer, value)
    else:
        with pytest.warns(RuntimeWarning, match='raised by the next Trainer.step') as warned:
            step(net, trainer, value)
        assert warned[0].filename == __file__  # the user's trainer.step line, in step()
        with pytest.raises(kind, match=message) as caught:
            step(net, trainer, 1.0)
        # The original traceback: the frame that raised inside MyAdam is in it.
        assert any(entry.frame.code.name in ('_finite', '__call__') for entry in caught.traceback)
    names = [p.name for p in trainer._params]
    stepped = names[:names.index(failing)] if raised_by == 'next' else []
    for name, copies in weights(trainer).items():
        for old, new in zip(before[name], copies):
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
    'nan_gradient': (optimizer_module.__file__, '_finite',
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
    with pytest.warns(RuntimeWarning, match='raised by the next Trainer.step') as warned:
        step(net, trainer, value)
    assert f"raised at {path}:{line} in {function} inside" in str(warned[0].message)
    with pytest.raises(kind) as caught:
        step(net, trainer, 1.0)
    innermost = caught.traceback[-1]
    assert (str(innermost.path), innermost.lineno + 1, innermost.name) == (path, line, function)


@pytest.mark.parametrize('kvstore, update_on_kvstore, raised_by', MODES)
def test_once_raised_the_error_is_cleared(kvstore, update_on_kvstore, raised_by):
    net, trainer = make_trainer(kvstore, update_on_kvstore, dict(nonfinite='raise'))
    step(net, trainer, 1.0)
    with pytest.raises(FloatingPointError):
        with pytest.warns(RuntimeWarning) if raised_by == 'next' else nullcontext():
            step(net, trainer, np.nan)
        step(net, trainer, 1.0)
    before = weights(trainer)
    step(net, trainer, 1.0)
    for name, (first, second) in weights(trainer).items():
        assert not np.array_equal(first, before[name][0])  # training goes on
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize('kvstore', ['device', 'local'])
def test_a_save_does_not_go_over_a_pending_error(tmp_path, kvstore):
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


def train_sparse_embedding(optimizer, params, steps=5):
    """A ``SparseEmbedding`` on two contexts (update_on_kvstore, as MXNet forces for
    row_sparse weights); returns its weight after ``steps`` steps."""
    mx.random.seed(0)
    net = gluon.contrib.nn.SparseEmbedding(10, 4)
    net.initialize(mx.init.Uniform(), ctx=TWO)
    trainer = gluon.Trainer(net.collect_params(), optimizer, dict(params, learning_rate=0.1),
                            kvstore='device')
    for _ in range(steps):
        for ctx, rows in zip(TWO, ([1, 2, 3], [3, 7])):
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
    except Exception as error:  # pylint: disable=broad-except
        frames = [(f.filename, f.name) for f in traceback.extract_tb(error.__traceback__)]
        assert any('adam_plugin' in file for file, _ in frames), frames  # MyAdam's update
        assert any(file.endswith('gluon/trainer.py') and name == 'step'
                   for file, name in frames), frames  # raised out of Trainer.step
        return
    np.testing.assert_allclose(mine, adam, **TOL['float32'])


def test_module_over_two_devices_stops_at_the_error():
    """``Module`` gives the optimizer no entry point after the callback: the warning is
    all it can show, and no later update is applied (nothing trains on past it)."""
    x = np.ones((40, 3), np.float32)
    x[20:30] = np.nan  # the third batch
    data = mx.io.NDArrayIter(x, np.ones((40, 1), np.float32), batch_size=10, label_name='l')
    out = mx.sym.FullyConnected(mx.sym.Variable('data'), num_hidden=1, name='fc')
    out = mx.sym.LinearRegressionOutput(out, mx.sym.Variable('l'))
    module = mx.mod.Module(out, label_names=['l'], context=TWO)
    module.bind(data.provide_data, data.provide_label)
    module.init_params(mx.init.Uniform())
    module.init_optimizer(optimizer='myadam', optimizer_params=dict(nonfinite='raise'))
    assert module._update_on_kvstore
    after = []
    with pytest.warns(RuntimeWarning, match="gradient of parameter .*fc_weight.* holds NaN"):
        for batch in data:
            module.forward_backward(batch)
            module.update()
            after.append(module.get_params()[0]['fc_bias'].asnumpy())
    assert not np.array_equal(after[1], after[0])  # it trained ...
    for later in after[2:]:
        np.testing.assert_array_equal(later, after[1])  # ... until the NaN batch
