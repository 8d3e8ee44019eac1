"""Make the states file of main at 1303d99 (each state ``(m, v)``, the step counts in the
optimizer only) that test_checkpoint_upgrade loads with every later release.

Run from a checkout of that commit::

    PYTHONPATH=<checkout> python tests/states/make_main_1303d99.py

It writes::

    main_1303d99.states   Trainer.save_states after SAVE_AFTER steps, in layout SAVED_IN
    main_1303d99.params   the network's parameters at that point
    main_1303d99.npz      the parameters after STEPS steps trained straight through

The job: the chapter's linear regression as an elementwise float16 model (MXNet's CPU
``dot`` has no float16 kernel) stepped on float32 master copies (``multi_precision``),
on two CPU devices with the KVStore updating (one Updater: the step counts of one
device only), ``begin_num_update=2``, a FactorScheduler, and one step whose gradient
of ``w`` is NaN (skipped: ``w``'s count lags ``b``'s). Every device gets the whole
batch, and ``Trainer.step`` the batch size times the number of devices, so every
device's gradient is the same and every layout of :data:`LAYOUTS` trains bitwise the
same weights: the file can be resumed into each and compared with a straight run there.
"""
import os
import sys
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

import adam_plugin

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = 'main_1303d99'
INPUTS, BATCH = 2, 8
STEPS, SAVE_AFTER, NAN_AT = 12, 6, 3
# name -> (contexts, update_on_kvstore)
LAYOUTS = {
    'one_device': ([mx.cpu(0)], None),
    'two_devices_trainer_updates': ([mx.cpu(0), mx.cpu(1)], False),
    'two_devices_kvstore_updates': ([mx.cpu(0), mx.cpu(1)], True),
}
SAVED_IN = 'two_devices_kvstore_updates'
OPTIONS = dict(learning_rate=0.05, beta1=0.85, beta2=0.99, epsilon=1e-5, wd=0.01,
               multi_precision=True, begin_num_update=2)


class LinReg(gluon.Block):
    """``X @ w + b``, written elementwise."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.w = self.params.get('w', shape=(INPUTS, 1))
            self.b = self.params.get('b', shape=(1,))

    def forward(self, X):
        w, b = self.w.data(X.context), self.b.data(X.context)
        return (X * w.reshape((1, -1))).sum(axis=1) + b


def job(layout):
    """A fresh network (constant weights) and its 'myadam' Trainer in ``layout``."""
    ctxs, update_on_kvstore = LAYOUTS[layout]
    net = LinReg()
    net.initialize(mx.init.Constant(0.25), ctx=ctxs)
    net.cast('float16')
    options = dict(OPTIONS, lr_scheduler=mx.lr_scheduler.FactorScheduler(
        step=4, factor=0.5, base_lr=OPTIONS['learning_rate']))
    trainer = gluon.Trainer(net.collect_params(), 'myadam', options, kvstore='device',
                            update_on_kvstore=update_on_kvstore)
    return net, trainer


def batch(t):
    """Step ``t``'s features and targets, the same on every run and machine."""
    rng = np.random.default_rng(t)
    X = rng.normal(size=(BATCH, INPUTS))
    y = X @ np.array([2.0, -3.4]) + 4.2
    return nd.array(X, dtype='float16'), nd.array(y, dtype='float16')


def train(net, trainer, steps):
    ctxs = list(net.w.list_ctx())
    for t in steps:
        X, y = batch(t)
        with autograd.record():  # the whole batch on every device
            losses = [((net(X.as_in_context(c)) - y.as_in_context(c)) ** 2 / 2) for c in ctxs]
        autograd.backward(losses)
        if t == NAN_AT:
            for grad in net.w.list_grad():
                grad[:] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
            trainer.step(BATCH * len(ctxs))


def weights(net):
    """Each parameter by its place in the network ('w', 'b'), on every device."""
    return {f'{name}@{i}': a.asnumpy()
            for name, p in net._collect_params_with_prefix().items()
            for i, a in enumerate(p.list_data())}


def main():
    print(f"adam_plugin {adam_plugin.__version__} from {adam_plugin.__file__}", file=sys.stderr)
    net, trainer = job(SAVED_IN)
    train(net, trainer, range(1, SAVE_AFTER + 1))
    trainer.save_states(os.path.join(HERE, f'{NAME}.states'))
    net.save_parameters(os.path.join(HERE, f'{NAME}.params'))
    train(net, trainer, range(SAVE_AFTER + 1, STEPS + 1))
    np.savez(os.path.join(HERE, f'{NAME}.npz'), **weights(net))


if __name__ == '__main__':
    main()
