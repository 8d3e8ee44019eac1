"""One rank of a Horovod job training with 'myadam', started by ``horovodrun --gloo``.

Usage: ``horovodrun --gloo -np 2 -H localhost:2 python hvd_worker.py DIR TASK ...``.
Each rank trains a small Gluon network on its half of every global batch with
``hvd.DistributedTrainer`` and ``trainer.step(local batch size)``, after
``hvd.broadcast_parameters`` (the ranks initialise differently, so that matters),
and writes ``DIR/rank<R>.json``: ``{run: {"params": [hex, ...], "num_skipped": n}}``,
the parameters as exact float32 bit patterns so that ranks compare bitwise.

The tasks run in the order given, the file is rewritten after each:
- ``train``: every row of :data:`ROWS` for ``STEPS`` steps; ``skip``: the defaults
  with a NaN in rank 1's half of batch ``NAN_STEP``; ``uninterrupted``: the
  ``CHECKPOINTED`` row, rank 0 saving the network and the Trainer's states to
  ``DIR`` after ``CUT`` steps (:mod:`adam_plugin.checkpoint`);
- ``resume``: a network with other initial weights on every rank, which loads
  that checkpoint and trains the remaining steps (``resumed``);
- ``raise``: the defaults with ``nonfinite='raise'`` and the NaN of ``skip``: the
  rank ends with ``FloatingPointError``.

:func:`train` with ``hvd=None`` is the same training in one process with a plain
``gluon.Trainer`` fed the global batches: the test's reference.
"""
import json
import os
import sys

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd
from mxnet.gluon import nn

from adam_plugin import checkpoint
from configs import CONFIGS, optimizer_kwargs

STEPS, CUT, NAN_STEP = 60, 30, 7
BATCH = 16  # global; every rank of two gets 8 rows
#: name -> MyAdam options: every row of the option table (the compiled kernel's
#: route for these dense float32 CPU parameters), and two on the NDArray-op route.
ROWS = dict(CONFIGS, **{'defaults, fused=False': dict(fused=False),
                        'everything, fused=False': dict(CONFIGS['everything'], fused=False)})
CHECKPOINTED = 'everything'


def batches(poison=False):
    """``STEPS`` global batches ``(X, y)`` of a noisy linear task, as NumPy arrays."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(STEPS, BATCH, 4)).astype(np.float32)
    y = (X @ np.float32([[2.0], [-3.4], [1.0], [0.5]]) + 4.2
         + 0.1 * rng.normal(size=(STEPS, BATCH, 1))).astype(np.float32)
    if poison:
        X[NAN_STEP, -1, 0] = np.nan  # the last row: in the second rank's half
    return list(zip(X, y, strict=True))


def make_net(seed):
    """A two-layer perceptron, initialised from ``seed``."""
    mx.random.seed(seed)
    net = nn.HybridSequential()
    net.add(nn.Dense(8, activation='tanh', in_units=4), nn.Dense(1, in_units=8))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    return net


def train(config, steps, hvd=None, net=None, poison=False, states=None, save=None):
    """Train as ``config`` says on ``batches(poison)[steps]``; return ``(net, trainer)``.

    With ``hvd`` this process is rank ``hvd.rank()`` of two: a network initialised
    from its rank and broadcast from rank 0 (unless ``net`` is given), a
    ``DistributedTrainer`` and its half of every batch. ``states`` is a checkpoint
    to load first; ``save = (k, dir)`` makes rank 0 save one after step ``k``.
    """
    rank, parts = (hvd.rank(), hvd.size()) if hvd else (0, 1)
    if net is None:
        net = make_net(seed=rank)
        if hvd:
            hvd.broadcast_parameters(net.collect_params(), root_rank=0)
    make_trainer = hvd.DistributedTrainer if hvd else gluon.Trainer
    trainer = make_trainer(net.collect_params(), 'myadam', optimizer_kwargs(config))
    if states:
        checkpoint.load_states(trainer, states)
    loss_fn = gluon.loss.L2Loss()
    half = slice(rank * BATCH // parts, (rank + 1) * BATCH // parts)
    for step, (X, y) in enumerate(batches(poison)[steps], start=steps.start or 0):
        X, y = nd.array(X[half]), nd.array(y[half])
        with autograd.record():
            loss = loss_fn(net(X), y)
        loss.backward()
        trainer.step(X.shape[0])
        if save and step + 1 == save[0] and rank == 0:
            net.save_parameters(os.path.join(save[1], 'net.params'))
            checkpoint.save_states(trainer, os.path.join(save[1], 'trainer.states'))
    return net, trainer


def flat_params(net):
    """Every parameter of ``net``, flattened into one float32 array."""
    return np.concatenate([p.data().asnumpy().ravel() for p in net.collect_params().values()])


def report(net, trainer):
    return {'params': [x.hex() for x in flat_params(net).astype(float).tolist()],
            'num_skipped': trainer.optimizer.num_skipped}


def main(out, *tasks):
    import horovod.mxnet as hvd
    hvd.init()
    everything, results = slice(0, STEPS), {}
    for task in tasks:
        if task == 'train':
            for name, config in ROWS.items():
                results[name] = report(*train(config, everything, hvd))
            results['skip'] = report(*train({}, everything, hvd, poison=True))
            results['uninterrupted'] = report(*train(ROWS[CHECKPOINTED], everything, hvd,
                                                     save=(CUT, out)))
        elif task == 'resume':
            net = make_net(seed=10 + hvd.rank())
            net.load_parameters(os.path.join(out, 'net.params'))
            results['resumed'] = report(*train(ROWS[CHECKPOINTED], slice(CUT, STEPS), hvd,
                                               net=net,
                                               states=os.path.join(out, 'trainer.states')))
        elif task == 'raise':
            train({'nonfinite': 'raise'}, everything, hvd, poison=True)
        else:
            raise ValueError(f'Invalid task: {task!r}')
        with open(os.path.join(out, f'rank{hvd.rank()}.json'), 'w') as f:
            json.dump(results, f)  # after every task: a later one may raise


if __name__ == '__main__':
    main(*sys.argv[1:])
