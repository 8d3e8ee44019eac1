"""Several devices: Trainer over [cpu(0), cpu(1)] equals one device fed the same global batches.

Under a KVStore the optimizer sees other device types than ``cpu``: the merged
copies are ``cpu_pinned``. All host memory takes the compiled kernel.
"""
import types

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

from adam_plugin import MyAdam, dispatch, kernel
from adam_plugin.chapter import linreg
from configs import CONFIGS, LR, optimizer_kwargs

TWO = [mx.cpu(0), mx.cpu(1)]
# 200 examples in batches of 10 for 3 epochs: every parameter is updated 60 times.
DATA = dict(num_examples=200, seed=0)
TRAIN = dict(batch_size=10, lr=LR, num_epochs=3)
STEPS = 60

# update_on_kvstore -> the device ids whose step counts MXNet keeps: one updater per
# device when the Trainer updates, the KVStore's single updater (on cpu(0)) otherwise.
UPDATING_DEVICES = {False: [0, 1], True: [0]}


def train(config, ctx, update_on_kvstore=None):
    features, labels = linreg.make_dataset(**DATA)
    return linreg.train_trainer(features, labels, ctx=ctx, kvstore='device',
                                update_on_kvstore=update_on_kvstore,
                                optimizer_params=optimizer_kwargs(config), **TRAIN)


@pytest.mark.parametrize('update_on_kvstore', [False, True])
@pytest.mark.parametrize('name', ['defaults', 'wd', 'everything'])
def test_two_devices_equal_one(name, update_on_kvstore):
    one = train(CONFIGS[name], mx.cpu(0))
    two = train(CONFIGS[name], TWO, update_on_kvstore)
    assert two.trainer._update_on_kvstore is update_on_kvstore
    assert len(two.trace) == STEPS
    np.testing.assert_allclose(two.trace, one.trace, rtol=0, atol=1e-6)
    opt = two.trainer.optimizer
    counted = {d: c for d, c in opt._all_index_update_counts.items() if c}
    assert sorted(counted) == UPDATING_DEVICES[update_on_kvstore]
    for device in counted:
        opt._set_current_context(device)
        assert opt._index_update_count == {0: STEPS, 1: STEPS}
    assert opt.num_update == STEPS


def test_every_device_holds_the_same_weights():
    run = train(CONFIGS['defaults'], TWO, update_on_kvstore=False)
    w, b = run.trainer._params
    for param in (w, b):
        first, second = (a.asnumpy() for a in param.list_data())
        np.testing.assert_array_equal(first, second)


# --- the route per device type ---------------------------------------------------------

def options(fused=True, amsgrad=False, decoupled_wd=False, epsilon_mode='outside', yogi=False):
    return types.SimpleNamespace(fused=fused, amsgrad=amsgrad, decoupled_wd=decoupled_wd,
                                 epsilon_mode=epsilon_mode, yogi=yogi)


# (device type, options, expected route). No GPU here: its rows are Layout tuples built directly.
DEVICE_ROUTES = [
    ('cpu', options(), 'kernel'),
    ('cpu_pinned', options(), 'kernel'),
    ('cpu_shared', options(), 'kernel'),
    ('cpu_pinned', options(amsgrad=True, decoupled_wd=True, epsilon_mode='inside'), 'kernel'),
    ('cpu_shared', options(fused=False), 'textbook'),
    ('gpu', options(), 'operator'),
    ('gpu', options(epsilon_mode='hat'), 'operator'),
    ('gpu', options(epsilon_mode='inside'), 'textbook'),
    ('gpu', options(amsgrad=True), 'textbook'),
    ('gpu', options(decoupled_wd=True), 'textbook'),
]


@pytest.mark.parametrize('device_type, opts, expected', DEVICE_ROUTES)
def test_route_per_device_type(device_type, opts, expected):
    layout = dispatch.Layout(dense=True, dtype=np.dtype('float32'), device_type=device_type,
                             shape=(12,))
    assert dispatch.route(layout, opts) == expected


HOST_CONTEXTS = [mx.cpu(0), mx.cpu_pinned(0), mx.Context('cpu_shared', 0)]


@pytest.mark.parametrize('ctx', HOST_CONTEXTS, ids=str)
def test_host_memory_takes_the_kernel_and_equals_the_textbook(ctx):
    """Real arrays in each kind of host memory: read as that device type, updated by
    the kernel, equal to the textbook route on the same arrays."""
    rng = np.random.default_rng(0)
    w0, grads = rng.standard_normal((4, 3)), rng.standard_normal((5, 4, 3))
    results = []
    for fused_route in (True, False):
        opt = MyAdam(learning_rate=0.1, wd=0.05, fused=fused_route)
        weight = nd.array(w0, ctx=ctx)
        layout = opt._layouts(0, weight, weight)
        assert layout.device_type == ctx.device_type
        assert dispatch.route(layout, opt) == ('kernel' if fused_route else 'textbook')
        state = opt.create_state(0, weight)
        for g in grads:
            opt.update(0, weight, nd.array(g, ctx=ctx), state)
        results.append(weight.asnumpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('kvstore', ['device', 'local'])
def test_update_on_kvstore_takes_the_kernel(kvstore, monkeypatch):
    """The KVStore hands the optimizer its merged copies in ``cpu_pinned`` memory over
    CPU contexts, one parameter a call; they take the kernel: the dispatch decides at a
    parameter's first call, which runs on the calling thread (the arrays' memory is
    allocated by then: see MyAdam._queue), and its later calls are queued in MXNet's
    engine."""
    seen, queued, on_the_calling_thread = [], [], []
    original_route, original_queue = dispatch.route, kernel.HandleTable.queue
    original_steps = kernel.HandleTable.adam_steps
    original_checked = kernel.HandleTable.checked_steps

    def recording_route(layout, options):
        way = original_route(layout, options)
        seen.append((layout.device_type, way))
        return way

    def recording_queue(buffers, steps, weights, grads):
        result = original_queue(buffers, steps, weights, grads)
        queued.append(result is not None)
        return result

    def recording_steps(buffers, steps, original=original_steps):
        on_the_calling_thread.append(len(steps))
        return original(buffers, steps)

    monkeypatch.setattr(dispatch, 'route', recording_route)
    monkeypatch.setattr(kernel.HandleTable, 'queue', recording_queue)
    monkeypatch.setattr(kernel.HandleTable, 'adam_steps', recording_steps)
    monkeypatch.setattr(kernel.HandleTable, 'checked_steps',
                        lambda buffers, steps: recording_steps(buffers, steps, original_checked))
    features, labels = linreg.make_dataset(**DATA)
    trained = linreg.train_trainer(features, labels, ctx=TWO, kvstore=kvstore,
                                   update_on_kvstore=True, **TRAIN)
    assert seen == [('cpu_pinned', 'kernel')] * 2  # w and b, at their first call
    assert on_the_calling_thread == [1, 1]  # w and b, at their first call
    assert queued == [True] * (2 * (STEPS - 1))  # one call per parameter and later step
    assert trained.trainer.optimizer._index_update_count == {0: STEPS, 1: STEPS}
