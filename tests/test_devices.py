"""Several devices: Trainer over [cpu(0), cpu(1)] equals one device fed the same global batches."""
import numpy as np
import pytest
import mxnet as mx

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
@pytest.mark.parametrize('name', ['defaults', 'everything'])
def test_two_devices_equal_one(name, update_on_kvstore):
    one = train(CONFIGS[name], mx.cpu(0))
    two = train(CONFIGS[name], TWO, update_on_kvstore)
    assert two.trainer._update_on_kvstore is update_on_kvstore
    assert len(two.trace) == STEPS
    np.testing.assert_allclose(two.trace, one.trace, rtol=0, atol=1e-5)
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
