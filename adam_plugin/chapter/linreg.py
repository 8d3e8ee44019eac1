"""The chapter's experiment: linear regression on a synthetic data set, trained by Adam.

Two training loops feed the identical batch sequence to the same initial
parameters: :func:`train_reference` drives the chapter's hand-rolled
:func:`adam_plugin.chapter.reference.adam`, :func:`train_trainer` drives
``gluon.Trainer(..., 'myadam')`` (or any other registered optimizer).
"""
__all__ = [
    'TRUE_W',
    'TRUE_B',
    'NUM_INPUTS',
    'make_dataset',
    'noise_floor',
    'linreg',
    'squared_loss',
    'data_iter',
    'init_params',
    'Run',
    'num_steps',
    'train_reference',
    'train_trainer',
    'sweep',
]

from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from ..optimizer import MyAdam  # noqa: F401  (registers 'myadam')
from . import reference

#: The chapter's true weights.
TRUE_W = (2.0, -3.4)
#: The chapter's true bias.
TRUE_B = 4.2
#: The number of features.
NUM_INPUTS = 2


def make_dataset(num_examples=1000, seed=0, noise=0.01):
    """The chapter's data: ``y = X @ [2, -3.4] + 4.2 + N(0, noise**2)``, X ~ N(0, 1).

    Returns float32 ``(features, labels)`` NDArrays of shapes ``(n, 2)`` and ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, NUM_INPUTS)).astype(np.float32)
    labels = features @ np.array(TRUE_W, np.float32) + np.float32(TRUE_B)
    labels += rng.normal(scale=noise, size=num_examples).astype(np.float32)
    return nd.array(features), nd.array(labels)


def noise_floor(features, labels):
    """The mean loss of the true parameters: what a perfect fit still pays for the noise."""
    w = nd.array(np.array(TRUE_W, np.float32).reshape(NUM_INPUTS, 1))
    return float(squared_loss(linreg(features, w, TRUE_B), labels).mean().asscalar())


def linreg(X, w, b):
    """The model: ``X @ w + b``."""
    return nd.dot(X, w) + b


def squared_loss(y_hat, y):
    """Half the squared error, per example."""
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def data_iter(batch_size, features, labels, seed=None):
    """Yield ``(X, y)`` minibatches in a shuffled order, reproducible for a given ``seed``."""
    order = np.random.default_rng(seed).permutation(len(features))
    for i in range(0, len(order), batch_size):
        j = nd.array(order[i:i + batch_size], dtype='int64')
        yield features.take(j), labels.take(j)


def init_params(seed=0):
    """The chapter's initial parameters as NumPy arrays: ``w ~ N(0, 0.01**2)``, ``b = 0``."""
    rng = np.random.default_rng([seed, 1])
    w = rng.normal(scale=0.01, size=(NUM_INPUTS, 1)).astype(np.float32)
    return w, np.zeros((1,), np.float32)


@dataclass
class Run:
    """What one training run produced.

    Attributes
    ----------
    w : ndarray of shape (2,)
    b : float
    losses : list of float
        Mean loss over the whole data set, before training and after every
        ``log_interval`` examples (the chapter's curve).
    epochs : ndarray
        The x position of each entry of ``losses``, in epochs.
    trace : ndarray of shape (steps, 3)
        ``[w0, w1, b]`` after every step.
    trainer : gluon.Trainer or None
        The trainer, for runs that used one.
    """
    w: np.ndarray
    b: float
    losses: list
    epochs: np.ndarray = field(repr=False)
    trace: np.ndarray = field(repr=False)
    trainer: object = field(default=None, repr=False)

    @property
    def loss(self):
        """The final mean loss."""
        return self.losses[-1]

    def first_epoch_below(self, level):
        """The first logged epoch at which the loss is below ``level``, or None if never."""
        below = np.flatnonzero(np.asarray(self.losses) < level)
        return float(self.epochs[below[0]]) if below.size else None


class _Recorder:
    """Collects the loss curve and the per-step parameter trace of one run."""

    def __init__(self, features, labels, batch_size, log_interval, on_step):
        self.features, self.labels = features, labels
        self.batch_size, self.log_interval = batch_size, log_interval
        self.on_step = on_step or (lambda: None)
        self.losses, self.trace = [], []

    def log_loss(self, w, b):
        self.losses.append(float(squared_loss(linreg(self.features, w, b), self.labels)
                                 .mean().asscalar()))

    def after_step(self, batch_i, w, b):
        self.trace.append(np.concatenate([w.asnumpy().ravel(), b.asnumpy().ravel()]))
        if batch_i * self.batch_size % self.log_interval == 0:
            self.log_loss(w, b)
        self.on_step()

    def result(self, num_epochs, trainer=None):
        last = self.trace[-1]
        return Run(w=last[:NUM_INPUTS].copy(), b=float(last[NUM_INPUTS]), losses=self.losses,
                   epochs=np.linspace(0, num_epochs, len(self.losses)),
                   trace=np.array(self.trace), trainer=trainer)


def num_steps(features, batch_size, num_epochs):
    """How many optimizer steps a training run takes (the last batch may be short)."""
    return -(-len(features) // batch_size) * num_epochs


def train_reference(features, labels, batch_size=10, lr=0.1, num_epochs=3, seed=0,
                    log_interval=10, on_step=None, update=reference.adam):
    """Train with the chapter's ``adam(params, vs, sqrs, lr, batch_size, t)``; returns a :class:`Run`.

    ``on_step``, if given, is called with no arguments after every step (a
    progress bar's ``update``, say). ``update`` replaces the chapter's ``adam`` by
    another function of the same signature.
    """
    w0, b0 = init_params(seed)
    params = [nd.array(w0), nd.array(b0)]
    vs, sqrs = [], []
    for param in params:
        param.attach_grad()
        vs.append(param.zeros_like())
        sqrs.append(param.zeros_like())
    w, b = params
    rec = _Recorder(features, labels, batch_size, log_interval, on_step)
    rec.log_loss(w, b)
    t = 0
    for epoch in range(num_epochs):
        for batch_i, (X, y) in enumerate(data_iter(batch_size, features, labels, [seed, epoch])):
            with autograd.record():
                loss = squared_loss(linreg(X, w, b), y)
            loss.backward()
            t += 1
            update(params, vs, sqrs, lr, batch_size, t)
            rec.after_step(batch_i, w, b)
    return rec.result(num_epochs)


def train_trainer(features, labels, batch_size=10, lr=0.1, num_epochs=3, seed=0,
                  log_interval=10, optimizer='myadam', optimizer_params=None, ctx=None,
                  kvstore='device', update_on_kvstore=None, on_step=None):
    """Train with ``gluon.Trainer(params, optimizer, ...)``; returns a :class:`Run`.

    Parameters
    ----------
    optimizer : str or mx.optimizer.Optimizer
        Anything ``gluon.Trainer`` accepts; ``'myadam'`` by default.
    optimizer_params : dict, optional
        Extra optimizer arguments; ``learning_rate`` is set from ``lr``.
    ctx : Context or list of Context, optional
        With several contexts each batch is split across them and the gradients
        are summed by the KVStore, as in data-parallel training.
    kvstore : str or mx.kvstore.KVStore
        Passed to ``gluon.Trainer``. A distributed KVStore object (``dist_sync``)
        makes this process one worker: it trains on its share of every batch
        (part ``kvstore.rank`` of ``kvstore.num_workers``), so all the workers
        together see the same global batches as a single process.
    update_on_kvstore : bool, optional
        Passed to ``gluon.Trainer``.
    on_step : callable, optional
        Called with no arguments after every step.
    """
    ctxs = ctx if isinstance(ctx, (list, tuple)) else [ctx or mx.cpu()]
    part, parts = ((kvstore.rank, kvstore.num_workers) if isinstance(kvstore, mx.kvstore.KVStore)
                   else (0, 1))
    w0, b0 = init_params(seed)
    w = gluon.Parameter('w', shape=w0.shape)
    b = gluon.Parameter('b', shape=b0.shape)
    for param, value in ((w, w0), (b, b0)):
        param.initialize(ctx=ctxs)
        param.set_data(nd.array(value))
    params = dict(optimizer_params or {}, learning_rate=lr)
    trainer = gluon.Trainer([w, b], optimizer, params, kvstore=kvstore,
                            update_on_kvstore=update_on_kvstore)
    rec = _Recorder(features, labels, batch_size, log_interval, on_step)
    rec.log_loss(w.data(ctxs[0]), b.data(ctxs[0]))
    for epoch in range(num_epochs):
        for batch_i, (X, y) in enumerate(data_iter(batch_size, features, labels, [seed, epoch])):
            X = gluon.utils.split_data(X, parts, even_split=False)[part]
            y = gluon.utils.split_data(y, parts, even_split=False)[part]
            Xs = gluon.utils.split_and_load(X, ctxs, even_split=False)
            ys = gluon.utils.split_and_load(y, ctxs, even_split=False)
            with autograd.record():
                losses = [squared_loss(linreg(Xi, w.data(c), b.data(c)), yi)
                          for Xi, yi, c in zip(Xs, ys, ctxs, strict=True)]
            autograd.backward(losses)
            trainer.step(batch_size)
            rec.after_step(batch_i, w.data(ctxs[0]), b.data(ctxs[0]))
    return rec.result(num_epochs, trainer)


def sweep(lrs, features, labels, **kwargs):
    """The chapter's exercise: the same run at several learning rates.

    Parameters
    ----------
    lrs : iterable of float
    features, labels : NDArray
        The data set, as :func:`make_dataset` returns it.
    **kwargs
        Passed to :func:`train_trainer` (``batch_size``, ``num_epochs``, ``seed``,
        ``optimizer``, ``on_step``, ...); every run gets the same initial
        parameters and the same batches.

    Returns
    -------
    dict of float to Run
        One run per learning rate, in the order given.
    """
    return {lr: train_trainer(features, labels, lr=lr, **kwargs) for lr in lrs}
