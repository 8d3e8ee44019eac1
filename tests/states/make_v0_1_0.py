"""Make the states file of release 0.1.0 that test_checkpoint_upgrade loads with every later release.

Run from a checkout of that release (``PYTHONPATH=<checkout> python tests/states/make_v0_1_0.py``)::

    v0_1_0.states   Trainer.save_states after SAVE_AFTER steps
    v0_1_0.params   the network's parameters at that point
    v0_1_0.npz      the parameters after STEPS steps trained straight through

The job: an Embedding with row_sparse gradients (lazy updates) and a Dense layer on
two CPU devices, the Trainer updating (two Updaters, per-device step counts);
MyAdam with AMSGrad, coupled wd, clipping, epsilon inside the root and a
FactorScheduler; one step's gradients of the Dense weight are NaN (skipped on both
devices: num_skipped is 2, and that weight's count lags the others).
No parameter starts late: with two devices, a scheduler and a parameter whose first
update comes after the others', the two copies of that parameter part at its first
update, with MXNet's built-in 'adam' too (seen on MXNet 1.9.1), so no resumed run
could match.
"""
import os
import sys
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

import adam_plugin

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB, DIM, BATCH = 10, 3, 4
STEPS, SAVE_AFTER, NAN_AT = 10, 6, 2
CTXS = [mx.cpu(0), mx.cpu(1)]
OPTIONS = dict(learning_rate=0.05, beta1=0.8, beta2=0.99, epsilon=1e-6, epsilon_mode='inside',
               amsgrad=True, wd=0.01, clip_gradient=5.0)


def job():
    """A fresh network (constant weights) and its 'myadam' Trainer."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Embedding(VOCAB, DIM, sparse_grad=True), gluon.nn.Dense(1, flatten=True))
    net.initialize(mx.init.Constant(0.1), ctx=CTXS)
    net(nd.zeros((BATCH, 2), ctx=CTXS[0]))  # shapes known before the Trainer
    options = dict(OPTIONS, lr_scheduler=mx.lr_scheduler.FactorScheduler(step=3, factor=0.5))
    trainer = gluon.Trainer(net.collect_params(), 'myadam', options, kvstore='device',
                            update_on_kvstore=False)
    return net, trainer


def batch(t):
    """Step ``t``'s word ids and targets, the same on every run and machine."""
    rng = np.random.default_rng(t)
    ids = rng.integers(0, VOCAB // 2, size=(BATCH, 2)).astype('float32')  # half the rows only
    return nd.array(ids), nd.array(rng.normal(size=(BATCH, 1)))


def train(net, trainer, steps):
    for t in steps:
        X, y = batch(t)
        Xs, ys = gluon.utils.split_and_load(X, CTXS), gluon.utils.split_and_load(y, CTXS)
        with autograd.record():
            losses = [((net(Xi) - yi) ** 2).mean() for Xi, yi in zip(Xs, ys, strict=True)]
        autograd.backward(losses)
        if t == NAN_AT:
            for grad in net[1].weight.list_grad():
                grad[:] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # the skip warns
            trainer.step(BATCH)


def weights(net):
    """Each parameter by its place in the network ('0.weight', ...): names differ by run."""
    return {name: p.data(CTXS[0]).asnumpy()
            for name, p in net._collect_params_with_prefix().items()}


def main():
    print(f"adam_plugin {adam_plugin.__version__} from {adam_plugin.__file__}", file=sys.stderr)
    net, trainer = job()
    train(net, trainer, range(1, SAVE_AFTER + 1))
    trainer.save_states(os.path.join(HERE, 'v0_1_0.states'))
    net.save_parameters(os.path.join(HERE, 'v0_1_0.params'))
    train(net, trainer, range(SAVE_AFTER + 1, STEPS + 1))
    np.savez(os.path.join(HERE, 'v0_1_0.npz'), **weights(net))


if __name__ == '__main__':
    main()
